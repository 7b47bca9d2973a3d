"""The diagnostics family's capacity views: points from records, one-factor curves,
the settings table with MAD's mean, the state axis, and the figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnbench.capacity import axis_curves, capacity_markdown, capacity_points, settings_table
from attnbench.figures import plot_capacity


def _record(variant: str, settings: list[dict], **extra) -> dict:
    return {
        "status": "ok",
        "profile": "p",
        "task": extra.pop("task", "mqar"),
        "task_kind": extra.pop("task_kind", "mqar"),
        "task_family": "diagnostics",
        "variant": variant,
        "seed": extra.pop("seed", 0),
        "reference_variant": "vanilla",
        "capabilities": {"mixes_tokens": variant != "no-mixing"},
        "config": {"model": {"d_model": extra.pop("d_model", 64)}},
        "metric": {"name": "accuracy", "higher_is_better": True},
        "task_info": {"evaluation": {"by_setting": settings}, "capacity": {}},
        **extra,
    }


def _mqar(variant: str, accuracies: list[float], **extra) -> dict:
    settings = [
        {"pairs": k, "length": 64, "vocab_size": 256, "accuracy": a, "n_scored": 10}
        for k, a in zip([4, 8, 16], accuracies, strict=True)
    ]
    return _record(variant, settings, **extra)


def test_points_carry_the_state_a_variant_keeps_at_the_setting_length() -> None:
    records = [
        _mqar("vanilla", [1.0, 1.0, 0.9], kv_cache_bytes_per_token=1024, state_bytes=None),
        _mqar("linear", [0.9, 0.5, 0.2], kv_cache_bytes_per_token=None, state_bytes=32768),
        {**_mqar("gone", [0, 0, 0]), "status": "failed"},
        {**_mqar("lm", [0, 0, 0]), "task_family": "lm"},
    ]
    points = capacity_points(records, "p")
    assert {p["variant"] for p in points} == {"vanilla", "linear"}
    vanilla = [p for p in points if p["variant"] == "vanilla"]
    assert [p["state_bytes"] for p in vanilla] == [1024 * 64] * 3  # KV cache x length
    assert {p["state_bytes"] for p in points if p["variant"] == "linear"} == {32768}


def test_a_multi_setting_run_gives_one_curve_per_variant_and_seeds_average() -> None:
    records = [
        _mqar("vanilla", [1.0, 1.0, 0.8], seed=0),
        _mqar("vanilla", [1.0, 0.8, 0.6], seed=1),
        _mqar("linear", [0.9, 0.5, 0.2]),
    ]
    curves = axis_curves(capacity_points(records, "p"))
    assert list(curves) == ["pairs"]  # length and vocabulary do not vary
    assert curves["pairs"]["vanilla"] == [(4.0, 1.0, 2), (8.0, 0.9, 2), (16.0, 0.7, 2)]
    assert curves["pairs"]["linear"][-1] == (16.0, 0.2, 1)


def _mad(variant: str, vocab: int, n_train: int, accuracy: float) -> dict:
    setting = {"vocab_size": vocab, "seq_len": 128, "n_train": n_train, "accuracy": accuracy}
    name = f"mad-in-context-recall-v{vocab}-n{n_train}"
    return _record(variant, [setting], task=name, task_kind="mad-in-context-recall")


def test_one_factor_sweeps_are_read_around_the_baseline_setting() -> None:
    # MAD's protocol: a baseline (vocab 16, 12800 examples) and sweeps of one knob at a time
    runs = [(16, 12800, 0.9), (32, 12800, 0.7), (64, 12800, 0.5), (16, 6400, 0.8), (16, 3200, 0.6)]
    records = [_mad("vanilla", v, n, a) for v, n, a in runs]
    points = capacity_points(records, "p")
    assert {p["kind"] for p in points} == {"mad-in-context-recall"}
    curves = axis_curves(points)
    assert curves["vocab_size"]["vanilla"] == [(16.0, 0.9, 1), (32.0, 0.7, 1), (64.0, 0.5, 1)]
    # the vocabulary sweep's points (n_train at baseline) do not leak into the n_train curve
    assert curves["n_train"]["vanilla"] == [(3200.0, 0.6, 1), (6400.0, 0.8, 1), (12800.0, 0.9, 1)]
    labels, cells, _ = settings_table(points)
    assert len(labels) == 5
    assert sum(cells["vanilla"].values()) / 5 == pytest.approx((0.9 + 0.7 + 0.5 + 0.8 + 0.6) / 5)


def test_runs_of_several_widths_are_series_of_their_own() -> None:
    records = [
        _mqar("linear", [0.9, 0.5, 0.2], d_model=64, state_bytes=1000),
        _mqar("linear", [1.0, 0.9, 0.7], d_model=256, state_bytes=16000),
    ]
    points = capacity_points(records, "p")
    assert {p["series"] for p in points} == {"linear (d 64)", "linear (d 256)"}
    text = capacity_markdown(records, "p")
    assert "| linear (d 256) | 100.0 | 90.0 | 70.0 | 86.7 | 15.6 |" in text
    assert "| linear (d 64) | 90.0 | 50.0 | 20.0 | 53.3 | 1.0 |" in text


def test_the_figures_are_written(tmp_path: Path) -> None:
    records = [
        _mqar("vanilla", [1.0, 1.0, 0.9], kv_cache_bytes_per_token=512),
        _mqar("no-mixing", [0.2, 0.1, 0.05], kv_cache_bytes_per_token=None, state_bytes=None),
    ]
    paths = plot_capacity(records, "p", tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["capacity_p_mqar_pairs.png", "capacity_p_mqar_state.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert capacity_markdown([], "p") == ""
