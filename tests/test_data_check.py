"""``attnbench data check --profile P``: per task, are the data here or reachable, and of
the published size? Run on profiles that point at the hub-layout copies in
``tests/fixtures/`` (offline, with an empty HF cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from attnbench import datacheck as check
from attnbench.config import data_config_hash, validate_profile
from attnbench.job import PREPARED_MARKER
from attnbench.tasks.translation import Translation

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hf"
WMT14 = FIXTURES / "wmt" / "wmt14"
GLUE = FIXTURES / "nyu-mll" / "glue"
TRANSLATION = {"hf_name": "de-en", "src_lang": "en", "tgt_lang": "de", "vocab_size": 300}


def raw_profile(out: Path, tasks: dict[str, Any], offline: bool = True) -> dict[str, Any]:
    return {
        "profile": "fixtures",
        "output_dir": str(out),
        "offline": offline,
        "model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32},
        "train": {"steps": 2, "batch_size": 4, "eval_every": 1},
        "variants": {"include": ["vanilla"]},
        "tasks": tasks,
    }


FIXTURE_TASKS = {
    "listops": {"data": {"n_train": 8, "n_val": 4, "n_test": 4}},  # generated
    "lm": {"data": {"source": "novels", "tokenizer": "char", "window": 16, "stride": 8}},
    "translation": {"data": {"hf_path": str(WMT14)} | TRANSLATION},  # a tiny copy: 40/6/8
    "cola": {"data": {"hf_path": str(GLUE), "vocab_size": 300}},
    "text": {"data": {"hf_path": "/nonexistent/imdb"}},  # local files that are not there
    "image": {"data": {"hf_path": "cifar10"}},  # a hub id, not in the (empty) HF cache
}


@pytest.fixture
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An empty HF cache and no network for the HF libraries (in-process and children)."""
    import datasets
    import huggingface_hub

    cache = str(tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return {"HF_DATASETS_CACHE": cache, "HF_HUB_OFFLINE": "1"}


def verdicts(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        task, rest = line.split(": ", 1)
        found[task] = next(v for v in sorted(check.VERDICTS, key=len, reverse=True)
                           if rest.startswith(v + " — "))  # fmt: skip
    return found


def test_cli_reports_one_verdict_per_task(tmp_path: Path, hf_env: dict[str, str]) -> None:
    path = tmp_path / "fixtures.yaml"
    path.write_text(yaml.safe_dump(raw_profile(tmp_path, FIXTURE_TASKS)))
    env = {k: v for k, v in os.environ.items() if k != "HF_DATASETS_OFFLINE"} | hf_env
    proc = subprocess.run(
        [sys.executable, "-m", "attnbench.cli", "data", "check", "--profile", str(path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr  # findings, not errors
    lines = proc.stdout.splitlines()
    assert verdicts(lines) == {
        "listops": "ok",
        "lm": "ok",
        "translation": "size mismatch",
        "cola": "size mismatch",
        "text": "missing",
        "image": "missing",
    }
    text = dict(line.split(": ", 1) for line in lines)
    # the copy's rows per split against the published ones, named
    assert "train 40 ≠ 4,508,785, validation 6 ≠ 3,000, test 8 ≠ 3,003" in text["translation"]
    assert "(published wmt14/de-en)" in text["translation"]
    assert "train 40 ≠ 8,551" in text["cola"] and "(published glue/cola)" in text["cola"]
    assert "/nonexistent/imdb does not exist" in text["text"]
    assert "not in the HF cache, and the profile is offline" in text["image"]
    assert proc.stderr == ""


def test_bad_profile_is_the_only_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"profile": "bad", "tasks": {"nope": {}}}))
    proc = subprocess.run(
        [sys.executable, "-m", "attnbench.cli", "data", "check", "--profile", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("attnbench: error: ") and "unknown task 'nope'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def one(profile: dict[str, Any], task: str, prepared: Path | None = None) -> check.DataCheck:
    return check.check_task(validate_profile(profile), task, prepared)


def test_published_counts_that_match_are_ok(
    tmp_path: Path, hf_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = raw_profile(tmp_path, {"translation": FIXTURE_TASKS["translation"]})
    sizes = {"wmt14/de-en": {"train": 40, "validation": 6, "test": 8}}
    monkeypatch.setattr(Translation, "published_sizes", sizes)
    result = one(profile, "translation")
    assert result.verdict == "ok"
    assert "local copy: train 40, validation 6, test 8 (published wmt14/de-en)" in result.detail
    # bare files name no data set: their rows are listed, nothing to compare them with
    files = {s: str(next((WMT14 / "de-en").glob(f"{s}-*"))) for s in ("validation", "test")}
    files["train"] = [str(f) for f in sorted((WMT14 / "de-en").glob("train-*"))]
    bare = {"hf_path": "parquet", "data_files": files} | TRANSLATION
    result = one(raw_profile(tmp_path, {"translation": {"data": bare}}), "translation")
    assert result.verdict == "ok" and "no published counts for these files" in result.detail


def test_hub_datasets_not_downloaded(
    tmp_path: Path, hf_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = {"translation": {"data": {"hf_path": "wmt14"} | TRANSLATION}}
    online = raw_profile(tmp_path, hub, offline=False)
    # the hub cannot be asked (HF_HUB_OFFLINE): not checkable
    result = one(online, "translation")
    assert result.verdict == "not checkable offline"
    assert "wmt14/de-en: not in the HF cache; HF_HUB_OFFLINE is set" in result.detail
    # reachable, or unknown to the hub (the metadata call, faked)
    monkeypatch.setattr(check, "hub_reachable", lambda source: (True, "on the hub"))
    result = one(online, "translation")
    assert result.verdict == "ok" and "on the hub, not downloaded yet" in result.detail
    monkeypatch.setattr(check, "hub_reachable", lambda source: (False, "RepositoryNotFound"))
    assert one(online, "translation").verdict == "missing"
    # an offline profile cannot download it: missing, unless it is prepared already
    offline = raw_profile(tmp_path, hub)
    assert one(offline, "translation").verdict == "missing"
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    marker = {"data_hash": data_config_hash(validate_profile(offline), "translation")}
    (prepared / PREPARED_MARKER).write_text(json.dumps(marker))
    result = one(offline, "translation", prepared)
    assert result.verdict == "ok" and f"the data are prepared in {prepared}" in result.detail


def test_a_cached_copy_is_counted_and_the_iwslt_default_is_its_parquet_conversion(
    tmp_path: Path, hf_env: dict[str, str]
) -> None:
    """What the HF cache holds under a hub name is read offline and counted. (Loading a
    local folder caches it under the folder's name: a tiny copy named wmt14 then stands
    in the cache for the hub's wmt14, which the check reports as a size mismatch.)"""
    from attnbench.data.hf import load_hf_dataset

    with check.forced_offline():
        load_hf_dataset(str(WMT14), "de-en")
    hub = {"translation": {"data": {"hf_path": "wmt14"} | TRANSLATION}}
    result = one(raw_profile(tmp_path, hub), "translation")
    assert result.verdict == "size mismatch" and "wmt14/de-en HF cache: train 40" in result.detail
    default = one(raw_profile(tmp_path, {"translation": {}}, offline=False), "translation")
    assert "IWSLT/iwslt2017 [iwslt2017-de-en]@refs/convert/parquet" in default.detail
    assert check.dataset_key(check.resolve_source("iwslt2017", "iwslt2017-de-en")) == (
        "iwslt2017/iwslt2017-de-en"
    )
