"""The README, the CI script and the two environment files stay true to each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

from attnbench.attention import VARIANTS, AttentionContext, AttentionDims, AttentionMask
from attnbench.registry import _import_file

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
CONDA_NAMES = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_mirrors_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"]}
    pip_names |= {_name(r) for r in project["optional-dependencies"]["test"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = {
        CONDA_NAMES.get(_name(d), _name(d))
        for d in env["dependencies"]
        if isinstance(d, str) and _name(d) not in ("python", "pip")
    }
    assert conda == pip_names


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    readme_cmd = re.search(r"pip install -e \"\.\[test\]\" && (pytest[^\n`]*)", README)
    assert readme_cmd, "README quickstart lost its test command"
    assert readme_cmd.group(1).strip() in ci
    assert "torch==2.13.0" in ci


def test_readme_variant_example_works(tmp_path: Path) -> None:
    block = re.search(r"```python\n(# src/attnbench/variants/temperature.py.*?)```", README, re.S)
    assert block, "README lost its example variant"
    module = tmp_path / "temperature_example.py"
    module.write_text(block.group(1))
    try:
        _import_file(module, "_readme_example_variant")
        spec = VARIANTS.get("temperature")
        dims = AttentionDims(d_model=16, n_heads=2, head_dim=8, max_len=10)
        attn = spec.build(dims).eval()
        x = torch.randn(2, 5, 16)
        out = attn(x, None, AttentionContext(mask=AttentionMask(causal=True), need_weights=True))
        assert out.out.shape == (2, 5, 16)
        assert torch.allclose(out.weights.sum(-1), torch.ones(2, 2, 5))
        assert torch.all(out.weights.triu(1) == 0)
        with pytest.raises(ValueError, match="valid options: init"):
            spec.options({"tau": 2.0})
    finally:
        VARIANTS._entries.pop("temperature", None)
        VARIANTS._origins.pop("temperature", None)
