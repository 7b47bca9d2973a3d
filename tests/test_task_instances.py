"""A registered task under several settings in one profile (``tasks.<name>.task``): each
entry is a task of its own for the workflow, the records and the leaderboard, and its
record names the registered task behind it (``task_kind``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnbench.config import ConfigError, job_config, profile_task, validate_profile
from attnbench.leaderboard import build_leaderboard
from attnbench.runner import prepare_data, run_job
from attnbench.tasks.diagnostics import MQAR


def _profile(out: Path) -> dict:
    data = {"vocab_size": 32, "n_train": 16, "n_val": 4, "n_test": 4}
    return {
        "profile": "instances",
        "output_dir": str(out),
        "model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32},
        "train": {"steps": 4, "batch_size": 4, "eval_every": 2, "warmup_steps": 1},
        "tasks": {
            "mqar": {"data": {**data, "train_settings": [[16, 2]]}},
            "mqar-K4": {
                "task": "mqar",
                "data": {**data, "train_settings": [[16, 4]]},
                "model": {"d_model": 32},
            },
        },
    }


def test_an_entry_may_name_the_registered_task_it_runs(tmp_path: Path) -> None:
    profile = validate_profile(_profile(tmp_path))
    assert profile_task(profile, "mqar-K4") is MQAR and profile_task(profile, "mqar") is MQAR
    cfg = job_config(profile, "mqar-K4", "vanilla")
    assert cfg["task"] == "mqar-K4" and cfg["task_kind"] == "mqar"
    assert cfg["model"]["d_model"] == 32 and cfg["data"]["train_settings"] == [[16, 4]]
    assert "task_kind" not in job_config(profile, "mqar", "vanilla")  # hash unchanged


def test_an_unknown_registered_task_is_one_line_naming_the_entry(tmp_path: Path) -> None:
    raw = _profile(tmp_path)
    raw["tasks"]["mqar-K4"]["task"] = "mqr"
    with pytest.raises(ConfigError, match=r"unknown task 'mqr' under tasks\.mqar-K4\.task; valid"):
        validate_profile(raw)
    raw["tasks"]["bogus"] = {"data": {}}
    del raw["tasks"]["mqar-K4"]
    with pytest.raises(ConfigError, match=r"unknown task 'bogus' under tasks; valid"):
        validate_profile(raw)


def test_each_entry_runs_and_reports_as_a_task_of_its_own(tmp_path: Path) -> None:
    profile = validate_profile(_profile(tmp_path / "out"))
    files = []
    for name in ("mqar", "mqar-K4"):
        data = tmp_path / "data" / name
        prepare_data(profile, name, data)
        record_file = tmp_path / "runs" / name / "seed0.json"
        record = run_job(
            profile, name, "vanilla", 0, data_dir=data, record_file=record_file, progress=False
        )
        assert record["task"] == name and record["task_kind"] == "mqar"
        assert record["task_info"]["capacity"]["pairs"] == int(name == "mqar-K4") * 2 + 2
        files.append(record_file)
    md = tmp_path / "leaderboard.md"
    result = build_leaderboard(files, md, None, significance=False)
    assert result.tasks == ["mqar", "mqar-K4"]
    text = md.read_text()
    assert "### Diagnostics: capacity" in text
    # both entries are one kind: one table, one series per width
    capacity = text[text.index("### Diagnostics: capacity") :]
    assert capacity.count("**mqar**") == 1
    assert "| vanilla (d 16) |" in text and "| vanilla (d 32) |" in text
