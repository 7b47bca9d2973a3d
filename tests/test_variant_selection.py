"""Canonical registrations vs presets: the spec fields, `attnbench variants`, and
``variants.include: canonical`` in a profile (drop-in variants included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from attn_cases import tiny_profile

from attnbench.attention import (
    VARIANTS,
    VariantSpec,
    get_variant,
    register_preset,
    register_variant,
    variant_names,
)
from attnbench.cli import main
from attnbench.config import (
    ConfigError,
    job_config,
    load_profile,
    selected_variants,
    validate_profile,
)
from attnbench.registry import RegistryError
from attnbench.variants.vanilla import Vanilla

PROFILE = """\
profile: tiny
train: {steps: 5}
tasks:
  listops:
    data: {n_train: 10, n_val: 5, n_test: 5, min_length: 5, max_length: 30}
"""


@pytest.fixture
def cleanup_variants() -> Iterator[None]:
    """Names registered into the global VARIANTS during a test are removed afterwards."""
    variant_names()
    before = set(VARIANTS._entries)
    try:
        yield
    finally:
        for name in set(VARIANTS._entries) - before:
            VARIANTS._entries.pop(name, None)
            VARIANTS._origins.pop(name, None)


# ---------------------------------------------------------------------------------------
# The spec fields
# ---------------------------------------------------------------------------------------
def test_every_preset_names_a_canonical_registration_of_its_class() -> None:
    canonical_classes: dict[type, str] = {}
    for name in variant_names():
        spec = get_variant(name)
        if spec.canonical:
            assert spec.preset_of is None
            assert spec.cls not in canonical_classes, (name, canonical_classes.get(spec.cls))
            canonical_classes[spec.cls] = name
        else:
            base = get_variant(spec.preset_of)
            assert base.canonical and base.cls is spec.cls
    assert {"vanilla", "local", "topk-8", "no-mixing"} <= set(canonical_classes.values())
    for preset, base in [("local-32", "local"), ("topk-16", "topk-8"), ("sparsemax", "entmax15")]:
        spec = get_variant(preset)
        assert (spec.canonical, spec.preset_of) == (False, base)


def test_preset_of_a_preset_names_the_canonical_root(cleanup_variants: None) -> None:
    register_variant("sel-test", paper="test")(type("SelTest", (Vanilla,), {}))
    first = register_preset("sel-test-a", "sel-test")
    second = register_preset("sel-test-b", "sel-test-a")
    assert get_variant("sel-test").canonical
    assert (first.canonical, first.preset_of) == (False, "sel-test")
    assert (second.canonical, second.preset_of) == (False, "sel-test")


def test_spec_fields_must_agree() -> None:
    with pytest.raises(RegistryError, match="canonical"):
        VariantSpec("x", Vanilla, "p", "s", {}, canonical=True, preset_of="vanilla")
    with pytest.raises(RegistryError, match="canonical"):
        VariantSpec("x", Vanilla, "p", "s", {}, canonical=False)


# ---------------------------------------------------------------------------------------
# attnbench variants
# ---------------------------------------------------------------------------------------
def test_cli_json_text_and_markdown_show_the_preset_base(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["variants", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert (rows["local"]["canonical"], rows["local"]["preset_of"]) == (True, None)
    assert (rows["local-32"]["canonical"], rows["local-32"]["preset_of"]) == (False, "local")
    assert rows["no-mixing"]["capabilities"]["mixes_tokens"] is False

    assert main(["variants"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["variant", "preset", "of"]
    cells = {line.split()[0]: line.split()[1] for line in lines[2:]}
    assert cells["local"] == "canonical" and cells["local-32"] == "local"
    assert cells["sparse-fixed"] == "sparse-strided"

    assert main(["variants", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| variant | preset of | paper |")
    cells = {r.split(" | ")[0]: r.split(" | ")[1] for r in lines[2:]}
    assert cells["| `topk-8`"] == "canonical" and cells["| `topk-32`"] == "`topk-8`"
    assert len(lines) == 2 + len(variant_names())


# ---------------------------------------------------------------------------------------
# variants.include: canonical
# ---------------------------------------------------------------------------------------
def test_include_canonical_selects_canonical_registrations(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE + "variants: {include: canonical, exclude: [linear]}\n")
    profile = load_profile(path)
    chosen = selected_variants(profile)
    expected = [n for n in variant_names() if get_variant(n).canonical and n != "linear"]
    assert chosen == expected
    assert {"vanilla", "no-mixing", "local", "topk-8"} <= set(chosen)
    assert not {"local-32", "topk-16", "sparsebert-diag", "linear"} & set(chosen)
    assert len(chosen) < len(variant_names()) - 1  # presets dropped, not just `linear`


def test_include_all_still_takes_presets(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE + "variants: {include: all}\n")
    assert selected_variants(load_profile(path)) == variant_names()


def test_include_other_strings_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE + "variants: {include: presets}\n")
    with pytest.raises(ConfigError, match=r"variants\.include"):
        load_profile(path)


def test_canonical_selection_includes_a_registered_class(cleanup_variants: None) -> None:
    register_variant("sel-dropin", paper="test")(type("SelDropin", (Vanilla,), {}))
    register_preset("sel-dropin-2", "sel-dropin")
    chosen = selected_variants({"variants": {"include": "canonical"}})
    assert "sel-dropin" in chosen and "sel-dropin-2" not in chosen


DROP_IN = '''
from attnbench.attention import register_preset, register_variant
from attnbench.variants.vanilla import Vanilla


@register_variant("dropin-canon", paper="test")
class DropIn(Vanilla):
    """A copy of vanilla dropped in through ATTNBENCH_VARIANT_PATH."""


register_preset("dropin-canon-preset", "dropin-canon")
'''


def test_drop_in_through_variant_path_is_canonical(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "dropin_canon.py").write_text(DROP_IN)
    script = textwrap.dedent(
        """
        import json
        from attnbench.config import selected_variants
        print(json.dumps(selected_variants({"variants": {"include": "canonical"}})))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "ATTNBENCH_VARIANT_PATH"}
    env["ATTNBENCH_VARIANT_PATH"] = str(plugins)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    chosen = json.loads(proc.stdout)
    assert "dropin-canon" in chosen and "vanilla" in chosen
    assert "dropin-canon-preset" not in chosen and "local-32" not in chosen


@pytest.mark.parametrize(
    ("variant", "options"),
    [("differential", {}), ("sparse-strided", {}), ("talking-heads", {})],
)
def test_a_model_with_too_few_heads_is_not_applicable_with_the_reason(
    variant: str, options: dict
) -> None:
    """Variants that pair, split or mix heads declare it (``unsupported_dims``): a job with
    one head is n/a with the reason, not a run that fails."""
    from attnbench.job import build_job

    raw = tiny_profile(Path("/tmp/unused"))
    raw["model"]["n_heads"] = 1
    profile = validate_profile(raw)
    job = build_job(job_config(profile, "listops", variant), None, profile=profile)
    assert job.na_reason is not None and "the model has 1" in job.na_reason
    raw["model"]["n_heads"] = 2
    profile = validate_profile(raw)
    assert (
        build_job(job_config(profile, "listops", variant), None, profile=profile).na_reason is None
    )
