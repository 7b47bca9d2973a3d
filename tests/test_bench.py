"""attnbench.bench: FLOP convention, memory tracker, OOM path, slope fit, records, summary.

The profile's ``bench:`` section (attnbench.config.resolve_bench_config) is tested in
test_config.py.

Timings are never asserted: only what a run must record and how the tables are derived.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from attn_cases import tiny_profile
from torch.utils.flop_counter import FlopCounterMode

from attnbench import bench
from attnbench.attention import AttentionContext, AttentionDims, get_variant
from attnbench.config import (
    BenchConfig,
    GridConfig,
    config_hash,
    resolve_bench_config,
    validate_profile,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_attention.py"


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()  # bench main sets threads: do not leak into other tests
    yield
    torch.set_num_threads(threads)


def tiny_grid(**overrides: Any) -> dict[str, Any]:
    grid = {
        "modes": ["fwd", "fwd_bwd", "train_step"],
        "lengths": [16, 32],
        "long_lengths": [],
        "train_step_lengths": [32],
        "batch": [1],
        "heads": [2],
        "head_dim": [8],
        "causal": [False],
        "warmup": 1,
        "repeats": 2,
        "point_budget_s": 10.0,
        "time_cap_s": None,
        "memory_cap_mib": None,
    }
    return grid | overrides


def setup(tmp_path: Path, **grid: Any) -> tuple[dict[str, Any], BenchConfig]:
    profile = validate_profile(tiny_profile(tmp_path / "results"))
    return profile, resolve_bench_config(profile, {"cpu": tiny_grid(**grid)})


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="attnbench")
    bench.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


# ---------------------------------------------------------------------------------------
# FLOP count
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("b", "t", "h", "d"), [(1, 16, 2, 8), (3, 10, 4, 5)])
def test_forward_flops_equal_the_counted_matmuls_of_exact_attention(b, t, h, d) -> None:
    q, k, v = (torch.randn(b, h, t, d) for _ in range(3))
    with FlopCounterMode(display=False) as counter:
        torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1) @ v
    counted = counter.get_total_flops()  # QKᵀ and PV: 2·B·H·T²·d each
    assert bench.attention_flops(b, t, h, d, causal=False, mode="fwd") == counted
    # causal: half the (query, key) pairs by the FlashAttention convention
    assert bench.attention_flops(b, t, h, d, causal=True, mode="fwd") == counted / 2
    # backward 2.5×, forward + backward 3.5× the forward
    assert bench.attention_flops(b, t, h, d, causal=False, mode="bwd") == 2.5 * counted
    assert bench.attention_flops(b, t, h, d, causal=True, mode="fwd_bwd") == 3.5 * counted / 2


def test_flops_of_an_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="valid: fwd, bwd, fwd_bwd"):
        bench.attention_flops(1, 8, 1, 8, causal=False, mode="train_step")


# ---------------------------------------------------------------------------------------
# Memory: the live-tensor tracker
# ---------------------------------------------------------------------------------------
def test_tracker_counts_live_storages_created_inside() -> None:
    before = torch.empty(10_000, dtype=torch.uint8)  # exists before: never counted
    with bench.LiveTensorTracker() as tracker:
        a = torch.empty(1000, dtype=torch.uint8)
        b = torch.empty(2000, dtype=torch.uint8)  # 3000 alive
        del a
        c = torch.empty(500, dtype=torch.uint8)  # 2500 alive
        b.view(2, 1000).add_(1)  # a view and an in-place op allocate nothing
        before.view(100, 100).t()  # nor does a view of a tensor from outside
    assert tracker.peak == 3000
    assert tracker.current == 2500
    del b, c


def test_tracker_sees_backward_and_quadratic_score_memory() -> None:
    """Vanilla keeps B·H·T² scores alive through backward; SDPA's fused kernel does not."""
    b, h, t, d = 1, 2, 256, 16
    x = torch.randn(b, t, h * d, requires_grad=True)
    dims = AttentionDims(d_model=h * d, n_heads=h, head_dim=d, max_len=t)
    score_bytes = b * h * t * t * 4
    peaks = {}
    for name in ("vanilla", "fused"):
        layer = get_variant(name).build(dims)
        with bench.LiveTensorTracker() as tracker:
            layer(x, None, AttentionContext()).out.sum().backward()
        peaks[name] = tracker.peak
        assert x.grad is not None
        x.grad = None
    assert peaks["vanilla"] >= 2 * score_bytes  # the scores and their softmax
    assert peaks["fused"] < score_bytes


def test_tracker_cap_raises_an_out_of_memory_error() -> None:
    with pytest.raises(bench.MemoryCapExceeded, match="out of memory"):  # noqa: SIM117
        with bench.LiveTensorTracker(cap_bytes=1000):
            torch.empty(2000, dtype=torch.uint8)


def test_out_of_memory_is_told_from_other_failures() -> None:
    assert bench.classify_failure(torch.OutOfMemoryError("CUDA out of memory")) == "OOM"
    assert bench.classify_failure(RuntimeError("CUDA error: out of memory")) == "OOM"
    cpu = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
    assert bench.classify_failure(cpu) == "OOM"
    assert bench.classify_failure(MemoryError()) == "OOM"
    assert bench.classify_failure(bench.MemoryCapExceeded("cap")) == "OOM"
    assert bench.classify_failure(RuntimeError("shape mismatch")) == "error"
    assert bench.classify_failure(ValueError("out of memory")) == "error"  # not a RuntimeError


# ---------------------------------------------------------------------------------------
# Slope fit
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("exponent", [0.5, 1.0, 1.5, 2.0, 2.7])
def test_fit_recovers_the_exponent_of_an_exact_power_law(exponent: float) -> None:
    lengths = [256, 512, 1024, 3000, 4096]
    values = [3.7 * n**exponent for n in lengths]
    assert bench.fit_exponent(lengths, values) == pytest.approx(exponent, abs=1e-9)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_time_summary_quartiles_match_numpy(n: int) -> None:
    np = pytest.importorskip("numpy")
    times = [float(v) for v in torch.rand(n, generator=torch.Generator().manual_seed(n)) * 100]
    summary = bench.time_summary(times)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    assert summary["median_ms"] == pytest.approx(median)
    assert summary["q1_ms"] == pytest.approx(q1) and summary["q3_ms"] == pytest.approx(q3)
    assert summary["iqr_ms"] == pytest.approx(q3 - q1)


def test_fit_leaves_out_missing_points_and_needs_two_lengths() -> None:
    assert bench.fit_exponent([1, 2, 4, 8], [1.0, None, 16.0, 0.0]) == pytest.approx(2.0)
    assert bench.fit_exponent([4, 4], [1.0, 2.0]) is None
    assert bench.fit_exponent([4, 8], [1.0, None]) is None


# ---------------------------------------------------------------------------------------
# Series rules (fake measurements: no model runs)
# ---------------------------------------------------------------------------------------
def fake_series(
    statuses: dict[int, str] | None = None,
    *,
    ms: float = 1.0,
    time_exp: float = 2.0,
    mem_exp: float = 2.0,
    lengths=(256, 512, 1024, 2048),
    long_lengths=(),
    **grid: Any,
) -> tuple[list[dict[str, Any]], list[int]]:
    measured: list[int] = []
    template = bench.Setting("fwd", 0, 1, 1, 1, False, "fp32")

    def measure_at(n: int) -> dict[str, Any]:
        measured.append(n)
        status = (statuses or {}).get(n, "ok")
        point = bench.empty_point(template, status, None if status == "ok" else "why")
        if status == "ok":
            point |= {"median_ms": ms * (n / 256) ** time_exp, "times_ms": [1.0]}
            point["peak_memory_bytes"] = int(1000 * (n / 256) ** mem_exp)
        return point | {"length": n}

    def skipped_at(n: int, reason: str) -> dict[str, Any]:
        return bench.empty_point(template, "skipped", reason) | {"length": n}

    cfg = GridConfig(**tiny_grid(**grid))
    points = bench.run_series(measure_at, skipped_at, list(lengths), list(long_lengths), cfg, 1.5)
    return points, measured


def test_after_an_oom_longer_lengths_are_skipped() -> None:
    points, measured = fake_series({512: "OOM"})
    assert measured == [256, 512]
    assert [p["status"] for p in points] == ["ok", "OOM", "skipped", "skipped"]
    assert points[2]["reason"] == "out of memory at length 512"


def test_a_length_projected_over_the_time_cap_is_skipped() -> None:
    # 1 ms at 256, quadratic: 16 ms at 1024, projected 64 ms at 2048 > 50 ms
    points, measured = fake_series(time_cap_s=0.05)
    assert measured == [256, 512, 1024]
    assert points[-1]["status"] == "skipped" and "time_cap_s" in points[-1]["reason"]
    _, measured = fake_series(time_cap_s=0.05, time_exp=1.0)  # linear: 8 ms at 2048
    assert measured == [256, 512, 1024, 2048]


def test_long_lengths_run_only_for_subquadratic_memory() -> None:
    points, measured = fake_series(long_lengths=[32768], mem_exp=1.0)
    assert measured[-1] == 32768 and points[-1]["status"] == "ok"
    points, measured = fake_series(long_lengths=[32768], mem_exp=2.0)
    assert 32768 not in measured
    assert points[-1]["status"] == "skipped" and "length^2.00" in points[-1]["reason"]
    points, measured = fake_series(dict.fromkeys((256, 512, 1024, 2048, 32768), "n/a"),
                                   long_lengths=[32768])  # fmt: skip
    assert [p["status"] for p in points] == ["n/a"] * 5


# ---------------------------------------------------------------------------------------
# Real runs on CPU: OOM continues, n/a settings, record schema
# ---------------------------------------------------------------------------------------
def test_raised_oom_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile, cfg = setup(tmp_path, modes=["fwd_bwd"], lengths=[8, 16, 32], repeats=1)
    cls = get_variant("vanilla").cls
    original = cls.attend

    def attend(self, q, k, v, ctx):
        if q.shape[-2] >= 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, q, k, v, ctx)

    monkeypatch.setattr(cls, "attend", attend)
    record = bench.run_variant(profile, "vanilla", torch.device("cpu"), cfg)
    assert [(p["length"], p["status"]) for p in record["points"]] == [
        (8, "ok"),
        (16, "OOM"),
        (32, "skipped"),
    ]
    assert "OutOfMemoryError" in record["points"][1]["reason"]
    assert bench.validate_bench_record(record) is None
    other = bench.run_variant(profile, "fused", torch.device("cpu"), cfg)  # unaffected
    assert [p["status"] for p in other["points"]] == ["ok"] * 3


def test_memory_cap_turns_a_large_step_into_oom(tmp_path: Path) -> None:
    # 2 heads × 128² fp32 scores = 128 KiB, kept twice through backward: over a 0.2 MiB cap
    profile, cfg = setup(
        tmp_path, modes=["fwd_bwd"], lengths=[8, 128, 256], repeats=1, memory_cap_mib=0.2
    )
    record = bench.run_variant(profile, "vanilla", torch.device("cpu"), cfg)
    statuses = [p["status"] for p in record["points"]]
    assert statuses == ["ok", "OOM", "skipped"]
    assert "memory_cap_mib" in record["points"][1]["reason"]


def test_record_of_a_small_sweep(tmp_path: Path) -> None:
    profile, cfg = setup(tmp_path, causal=[False, True])
    record = bench.run_variant(profile, "linformer", torch.device("cpu"), cfg)
    assert bench.validate_bench_record(record) is None
    assert record["device"]["type"] == "cpu" and record["device"]["torch"] == torch.__version__
    assert record["memory_kind"] == "cpu_live_tensor_peak" and record["grid"] == "cpu"
    assert record["versions"]["torch"] == torch.__version__ and record["git_commit"]
    by = {(p["mode"], p["causal"], p["length"]): p for p in record["points"]}
    # fwd and fwd_bwd × non-causal/causal × 2 lengths, train_step × 1 length
    assert len(by) == 2 * 2 * 2 + 1
    for (mode, causal, length), p in by.items():
        if causal:  # Linformer cannot mask the future
            assert p["status"] == "n/a" and "causal" in p["reason"]
            continue
        assert p["status"] == "ok", p["reason"]
        assert p["peak_memory_bytes"] > 0 and 1 <= len(p["times_ms"]) <= 2
        assert p["tokens_per_s"] == pytest.approx(p["batch"] * length / (p["median_ms"] / 1e3))
        assert p["q1_ms"] <= p["median_ms"] <= p["q3_ms"]
        if mode == "train_step":  # the task model's heads, no FLOP figure
            assert (p["heads"], p["head_dim"]) == (2, 8) and p["tflops"] is None
        else:
            flops = bench.attention_flops(1, length, 2, 8, causal=False, mode=mode)
            assert p["flops"] == flops and p["flops_kind"] == "equivalent"


def valid_record() -> dict[str, Any]:
    point = bench.empty_point(bench.Setting("fwd", 64, 1, 2, 8, False, "fp32"))
    point |= {"times_ms": [2.0], "median_ms": 2.0, "peak_memory_bytes": 100}
    return {
        "kind": "attnbench-bench",
        "schema_version": 1,
        "profile": "p",
        "variant": "vanilla",
        "device": {"type": "cpu"},
        "grid": "cpu",
        "memory_kind": "cpu_live_tensor_peak",
        "git_commit": "abc",
        "versions": {},
        "config_hash": "0",
        "config": {},
        "points": [point],
    }


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda r: r.pop("device"), "missing keys: device"),
        (lambda r: r.update(kind="run"), "kind"),
        (lambda r: r.update(schema_version=2), "schema_version"),
        (lambda r: r.update(memory_kind="rss"), "memory_kind"),
        (lambda r: r["points"][0].update(status="crashed"), "status 'crashed'"),
        (lambda r: r["points"][0].update(status="OOM"), "without a reason"),
        (lambda r: r["points"][0].update(times_ms=[]), "without timed steps"),
        (lambda r: r["points"][0].update(peak_memory_bytes=None), "peak_memory_bytes"),
        (lambda r: r["points"][0].pop("tflops"), "missing keys: tflops"),
        (lambda r: r["points"][0].update(mode="bwd"), "mode 'bwd'"),
    ],
)
def test_record_schema_rejects_invalid_records(change, problem: str, tmp_path: Path) -> None:
    record = valid_record()
    assert bench.validate_bench_record(record) is None
    change(record)
    assert problem in (bench.validate_bench_record(record) or "")
    with pytest.raises(ValueError, match="refusing"):
        bench.write_bench_record(tmp_path / "r.json", record)
    assert not (tmp_path / "r.json").exists()


def test_record_round_trip_and_unreadable_files(tmp_path: Path) -> None:
    record = valid_record()
    record["points"].append(
        bench.empty_point(bench.Setting("fwd", 128, 1, 2, 8, False, "fp32"), "OOM", "too big")
    )
    bench.write_bench_record(tmp_path / "ok.json", record)
    assert bench.read_bench_record(tmp_path / "ok.json") == record
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: unreadable"):
        bench.read_bench_record(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------
# Relative table on constructed records
# ---------------------------------------------------------------------------------------
def constructed(variant: str, points: dict[int, tuple[float, int] | str]) -> dict[str, Any]:
    record = valid_record() | {"variant": variant}
    record["points"] = []
    for length, value in points.items():
        s = bench.Setting("fwd_bwd", length, 1, 4, 64, False, "fp32")
        if isinstance(value, str):
            record["points"].append(bench.empty_point(s, value, "reason"))
            continue
        ms, mem = value
        record["points"].append(
            bench.empty_point(s)
            | {"times_ms": [ms], "median_ms": ms, "steps_per_s": 1000.0 / ms}
            | {"peak_memory_bytes": mem}
        )
    return record


def test_relative_table_divides_by_the_reference() -> None:
    records = [
        constructed("vanilla", {1024: (100.0, 4000), 2048: (400.0, 16000), 4096: "OOM"}),
        constructed("linear", {1024: (50.0, 1000), 2048: (100.0, 2000), 4096: (200.0, 4000)}),
        constructed("slow", {1024: (200.0, 8000), 2048: "skipped"}),
    ]
    groups = bench.group_series(bench.point_rows(records))
    rows = bench.relative_rows(groups, "vanilla", [1024, 2048, 3072, 4096])
    cell = {(r["variant"], r["length"]): r for r in rows}
    assert {n for _, n in cell} == {1024, 2048, 4096}  # 3K was never measured: no column
    assert cell["linear", 1024]["relative_speed"] == pytest.approx(2.0)
    assert cell["linear", 2048]["relative_speed"] == pytest.approx(4.0)
    assert cell["linear", 2048]["relative_memory"] == pytest.approx(0.125)
    assert cell["slow", 1024]["relative_speed"] == pytest.approx(0.5)
    assert cell["slow", 1024]["relative_memory"] == pytest.approx(2.0)
    assert cell["vanilla", 1024]["relative_speed"] == pytest.approx(1.0)
    assert cell["linear", 4096]["relative_speed"] is None  # the reference ran out of memory
    assert cell["slow", 2048]["status"] == "skipped" and cell["slow", 4096]["status"] == "missing"
    md = bench.relative_markdown(rows, "vanilla")
    assert "| `linear` | 2.00× | 4.00× | — |" in md
    assert "| `vanilla` | 10.00 steps/s | 2.50 steps/s | OOM |" in md
    assert "| `slow` | 2.00× | skipped | — |" in md  # memory table
    assert "| 1K | 2K | 4K |" in md


def test_summary_takes_the_reference_from_the_records(tmp_path: Path) -> None:
    bench_cfg = {"reference": "linear", "relative_lengths": [1024], "exact_variants": None}
    files = []
    for variant in ("vanilla", "linear"):
        record = constructed(variant, {1024: (100.0, 4000), 2048: (400.0, 16000)})
        record["config"] = {"bench": bench_cfg, "exact_flops": variant == "vanilla"}
        files.append(tmp_path / f"{variant}.json")
        bench.write_bench_record(files[-1], record)
    bench.build_summary(files, tmp_path / "out", plots=False)
    assert (
        (tmp_path / "out" / "relative.md")
        .read_text()
        .startswith("# Relative efficiency (× `linear`)")
    )
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## Relative to `linear`" in summary and "exact for `vanilla`, the" in summary
    bench.build_summary([], tmp_path / "none", plots=False)  # no records: no reference to name
    assert "No readable bench records" in (tmp_path / "none" / "relative.md").read_text()


def test_scaling_rows_fit_time_and_memory() -> None:
    records = [constructed("linear", {1024: (50.0, 1000), 2048: (100.0, 2000), 4096: "OOM"})]
    (row,) = bench.scaling_rows(bench.group_series(bench.point_rows(records)))
    assert row["time_exponent"] == pytest.approx(1.0) and row["memory_exponent"] == pytest.approx(1)
    assert (row["n_lengths"], row["min_length"], row["max_length"]) == (2, 1024, 2048)


# ---------------------------------------------------------------------------------------
# CPU smoke run through the command line: records, tables, plots
# ---------------------------------------------------------------------------------------
def test_cli_smoke_run_writes_records_tables_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile_file = tmp_path / "tiny.json"
    profile_file.write_text(json.dumps(tiny_profile(tmp_path / "results")))
    args = ["--profile", str(profile_file), "--threads", "1", "--quiet", "--device", "cpu"]
    grid = ["--lengths", "16", "32", "--train-step-lengths", "32", "--modes", "fwd_bwd"]
    grid += ["train_step", "--heads", "2", "--head-dim", "8", "--repeats", "1"]
    assert run_cli("bench", *args, "--variant", "vanilla", "linear", *grid) == 0
    records_dir = tmp_path / "results" / "bench" / "tiny" / "records"
    assert sorted(p.name for p in records_dir.iterdir()) == ["linear.json", "vanilla.json"]
    record = bench.read_bench_record(records_dir / "vanilla.json")
    assert record["config"]["bench"]["cpu"]["lengths"] == [16, 32]
    assert record["config_hash"] == config_hash(record["config"])
    assert "bench vanilla: 3 ok" in capsys.readouterr().out

    assert run_cli("bench-summary", "--profile", str(profile_file)) == 0
    out = tmp_path / "results" / "bench" / "tiny"
    summary = (out / "summary.md").read_text()
    assert "## Scaling exponents" in summary and "`linear`" in summary
    assert "live_tensor" in summary or "tensor storages" in summary
    with (out / "points.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["variant"], r["mode"], r["length"]) for r in rows} == {
        (v, m, n)
        for v in ("vanilla", "linear")
        for m, n in (("fwd_bwd", "16"), ("fwd_bwd", "32"), ("train_step", "32"))
    }
    assert (out / "relative.md").exists() and (out / "scaling.csv").exists()
    slug = "fwd_bwd-b1-h2-d8-noncausal-fp32"
    for what in ("time", "memory"):
        for ext in ("png", "svg"):
            assert (out / "plots" / f"{what}-{slug}.{ext}").stat().st_size > 0
    assert not list((out / "plots").glob("*train_step*"))  # one length: no line to draw


def test_cli_rejects_bad_input(tmp_path: Path) -> None:
    profile_file = tmp_path / "tiny.json"
    profile_file.write_text(json.dumps(tiny_profile(tmp_path / "results")))
    base = ("bench", "--profile", str(profile_file), "--device", "cpu")
    with pytest.raises(ValueError, match="valid choices"):
        run_cli(*base, "--variant", "no-such-variant")
    with pytest.raises(ValueError, match="--out takes one variant"):
        run_cli(*base, "--variant", "vanilla", "linear", "--out", str(tmp_path / "x.json"))
    with pytest.raises(ValueError, match=r"bench\.cpu\.lengths must hold positive integers"):
        run_cli(*base, "--variant", "vanilla", "--lengths", "0")
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------------
# Synthetic batches of the train_step mode
# ---------------------------------------------------------------------------------------
def test_synthetic_batch_of_a_classification_task() -> None:
    from attnbench.tasks.base import CLS_ID, get_task, make_data_config

    task_cls = get_task("listops")
    task = task_cls(make_data_config(task_cls, {}))
    batch = bench.synthetic_batch(task, 3, 40, torch.Generator().manual_seed(0))
    ids = batch.inputs["ids"]
    assert ids.shape == (3, 40) and (ids[:, 0] == CLS_ID).all() and (ids[:, 1:] > CLS_ID).all()
    assert int(ids.max()) < task.vocab_size() and batch.inputs["key_padding"].all()
    assert batch.n_tokens == 120 and ((batch.targets >= 0) & (batch.targets < 10)).all()

    class NotClassification:
        name = "other"

    assert bench.synthetic_batch_reason(task) is None
    assert "synthetic_batch" in (bench.synthetic_batch_reason(NotClassification()) or "")
    with pytest.raises(ValueError, match="synthetic_batch"):
        bench.synthetic_batch(NotClassification(), 1, 8, torch.Generator())


def test_bench_script_is_a_thin_wrapper(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_attention", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit) as info:
        script.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--variant" in text and "--lengths" in text
    assert script.main(["--variant", "no-such-variant"]) == 2
    assert "bench_attention.py: error: unknown variant" in capsys.readouterr().err


def test_importing_the_module_leaves_torch_unloaded() -> None:
    """``attnbench --help`` builds the bench parsers: importing them must stay cheap."""
    code = "import sys, attnbench.bench; print('torch' in sys.modules, 'numpy' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["False", "False"]


def _series(times: dict[int, float]) -> list[dict[str, Any]]:
    return [{"length": n, "status": "ok", "median_ms": t} for n, t in sorted(times.items())]


def test_crossover_is_the_length_from_which_a_variant_stays_faster() -> None:
    from attnbench.bench.summary import crossover_rows

    key = ("fwd", 1, 4, 64, False, "fp32")
    lengths = [64, 128, 256, 512]
    groups = {
        key: {
            "exact": _series({n: n * n / 1000 for n in lengths}),  # quadratic
            "slower": _series({n: n * n / 100 for n in lengths}),  # quadratic, 10x slower
            "linear": _series({n: n / 10 for n in lengths}),  # faster from L > 100 on
            "late": _series({n: n / 4 for n in lengths}),  # faster from L > 250 on
        }
    }
    rows = {r["variant"]: r for r in crossover_rows(groups, {"exact"})}
    assert set(rows) == {"slower", "linear", "late"}  # the exact variant is the yardstick
    assert rows["linear"]["crossover_length"] == 128
    assert rows["late"]["crossover_length"] == 256
    assert rows["slower"]["crossover_length"] is None
    assert rows["slower"]["projected_length"] is None  # same exponent: never crosses
    # not faster anywhere measured, but linear: both power laws meet at 2000 tokens
    short = {key: {"exact": _series({50: 2.5, 100: 10.0}), "lin": _series({50: 100.0, 100: 200.0})}}
    (row,) = crossover_rows(short, {"exact"})
    assert row["crossover_length"] is None and row["projected_length"] == 2000
    assert row["speed_at_longest"] == pytest.approx(10.0 / 200.0)
