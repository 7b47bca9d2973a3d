"""The tuning grid: validation of the profile key, the points, the selection, and a run
that trains every point from the same start and reports the best on validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from attn_cases import tiny_profile

from attnbench import records
from attnbench.config import ConfigError, job_config, validate_profile
from attnbench.runner import prepare_data, run_job
from attnbench.tuning import best_point, grid_points, resolve_tune


def test_a_grid_is_validated_with_one_line_naming_the_key() -> None:
    assert resolve_tune(None, "tune") is None and resolve_tune({}, "tune") is None
    grid = resolve_tune({"weight_decay": [0, 0.1], "lr": [1e-3]}, "tune")
    assert grid == {"lr": [1e-3], "weight_decay": [0.0, 0.1]}  # TUNABLE order
    bad = [
        ({"momentum": [0.9]}, "tune: unknown key(s) momentum; valid: lr, weight_decay"),
        ({"lr": []}, "tune.lr must be a non-empty list"),
        ({"lr": [0.0]}, "tune.lr: 0.0 is out of range (must be > 0)"),
        ({"weight_decay": [-1]}, "tune.weight_decay: -1 is out of range (must be >= 0)"),
        ({"lr": [1e-3, 1e-3]}, "tune.lr repeats a value"),
        ({"lr": ["fast"]}, "tune.lr: 'fast' is not a number"),
    ]
    for values, message in bad:
        with pytest.raises(
            ValueError, match="\\A" + message.replace("(", "\\(").replace(")", "\\)")
        ):
            resolve_tune(values, "tune")


def test_points_are_the_cartesian_product_in_a_fixed_order() -> None:
    assert grid_points(None) == [{}]
    points = grid_points({"lr": [1.0, 2.0], "weight_decay": [0.0, 0.5, 1.0]})
    assert len(points) == 6
    assert points[0] == {"lr": 1.0, "weight_decay": 0.0}
    assert points[-1] == {"lr": 2.0, "weight_decay": 1.0}
    assert len({tuple(p.items()) for p in points}) == 6


def test_the_best_point_skips_diverged_ones_and_respects_the_direction() -> None:
    assert best_point([0.2, None, 0.9, 0.9], higher_is_better=True) == 2  # ties: first
    assert best_point([3.0, 1.5, None], higher_is_better=False) == 1
    assert best_point([None, float("nan")], higher_is_better=True) is None


def _profile(out: Path, tune: dict | None, where: str = "task") -> dict:
    raw = tiny_profile(out, steps=8, eval_every=4)
    if tune is not None and where == "task":
        raw["tasks"]["listops"]["tune"] = tune
    elif tune is not None:
        raw["tune"] = tune
    return validate_profile(raw)


def test_task_grids_replace_the_profile_grid_key_by_key(tmp_path: Path) -> None:
    raw = tiny_profile(tmp_path)
    raw["tune"] = {"lr": [1e-3, 1e-2], "weight_decay": [0.0, 0.1]}
    raw["tasks"]["listops"]["tune"] = {"lr": [5e-3]}
    cfg = job_config(validate_profile(raw), "listops", "vanilla")
    assert cfg["tune"] == {"lr": [5e-3], "weight_decay": [0.0, 0.1]}
    # no grid: no key at all, so the config hash of such jobs is what it was
    assert "tune" not in job_config(_profile(tmp_path, None), "listops", "vanilla")
    raw["tasks"]["listops"]["tune"] = {"lr": [-1.0]}
    with pytest.raises(ConfigError):
        validate_profile(raw)


def test_a_grid_run_trains_each_point_from_the_same_start_and_reports_the_best(
    tmp_path: Path,
) -> None:
    lrs = [1e-5, 3e-3]
    profile = _profile(tmp_path / "out", {"lr": lrs})
    data = tmp_path / "data"
    prepare_data(profile, "listops", data)
    record_file = tmp_path / "grid" / "seed0.json"
    record = run_job(
        profile, "listops", "vanilla", 0, data_dir=data, record_file=record_file, progress=False
    )
    tuning = record["tuning"]
    assert tuning["grid"] == {"lr": lrs}
    assert [p["lr"] for p in tuning["points"]] == lrs
    scores = [p["val"]["accuracy"] for p in tuning["points"]]
    chosen = best_point(scores, higher_is_better=True)
    assert chosen is not None and tuning["selected"] == {"lr": lrs[chosen]}
    assert record["metrics"]["val"] == tuning["points"][chosen]["val"]
    assert record["metrics"]["test"] == tuning["points"][chosen]["test"]
    assert record["train_time_s"] == pytest.approx(sum(p["train_time_s"] for p in tuning["points"]))
    # no resume checkpoint of any point is left once the record is written
    for index in range(len(lrs)):
        assert not records.resume_path(record_file, point=index).exists()

    # each point is the run one would get with that learning rate and no grid: same
    # seed, same initial weights, same data order, so the same numbers
    for index, lr in enumerate(lrs):
        single = _profile(tmp_path / f"out{index}", None)
        single["tasks"]["listops"].setdefault("train", {})["lr"] = lr
        alone = run_job(
            single,
            "listops",
            "vanilla",
            0,
            data_dir=data,
            record_file=tmp_path / f"single{index}" / "seed0.json",
            progress=False,
        )
        assert alone["metrics"]["val"] == tuning["points"][index]["val"]
        assert alone["metrics"]["test"] == tuning["points"][index]["test"]
