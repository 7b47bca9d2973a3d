"""Bench records: one JSON file per variant, its point layout, validation, reading, writing.

Record layout (``kind: attnbench-bench``, ``schema_version`` 1), one file per
variant at ``<output_dir>/bench/<profile>/records/<variant>.json``
(:func:`bench_record_path`)::

    {"kind": "attnbench-bench", "schema_version": 1, "profile": ..., "variant": ...,
     "variant_paper": ..., "variant_options": {...}, "capabilities": {...},
     "device": provenance.device_info(...), "host": CPU facts, "grid": "cpu" | "cuda",
     "memory_kind": "cpu_live_tensor_peak" | "cuda_max_memory_allocated",
     "git_commit": ..., "versions": {...}, "config_hash": ..., "config": {...},
     "started_at": ..., "finished_at": ..., "wall_time_s": ...,
     "points": [{"mode", "length", "batch", "heads", "head_dim", "causal", "dtype",
                 "status", "reason", "times_ms", "warmup_ms", "median_ms", "q1_ms",
                 "q3_ms", "iqr_ms", "steps_per_s", "tokens_per_s",
                 "peak_memory_bytes", "flops", "tflops", "flops_kind"}, ...]}

``config`` is :func:`attnbench.config.bench_job_config` (its ``exact_flops`` says
whether the TFLOP/s figures are FLOP rates); ``config_hash`` its hash.
A *point* = variant × mode × length × batch × heads × head dim × causal × dtype
(:class:`Setting`); its ``status`` is one of :data:`STATUSES`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench.config_bench import MODES
from attnbench.records import atomic_write_text, read_checked_json

STATUSES = ("ok", "OOM", "n/a", "error", "skipped")
SCHEMA_VERSION = 1
RECORD_KIND = "attnbench-bench"
MEMORY_DEFINITIONS = {
    "cpu_live_tensor_peak": (
        "peak bytes of tensor storages created during one step and alive at the same time "
        "(attnbench.bench.LiveTensorTracker on the last warm-up step; parameters, inputs and "
        "optimiser state that exist before the step are not counted)"
    ),
    "cuda_max_memory_allocated": (
        "torch.cuda.max_memory_allocated() over the timed steps, after "
        "reset_peak_memory_stats(), minus memory_allocated() before them"
    ),
}


@dataclass(frozen=True)
class Setting:
    """The coordinates of one point."""

    mode: str
    length: int
    batch: int
    heads: int
    head_dim: int
    causal: bool
    dtype: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def empty_point(s: Setting, status: str = "ok", reason: str | None = None) -> dict[str, Any]:
    """A point at ``s`` with every measured field empty (a failed point stays so)."""
    return {
        **s.as_dict(),
        "status": status,
        "reason": reason,
        "times_ms": [],
        "warmup_ms": [],
        "median_ms": None,
        "q1_ms": None,
        "q3_ms": None,
        "iqr_ms": None,
        "steps_per_s": None,
        "tokens_per_s": None,
        "peak_memory_bytes": None,
        "flops": None,
        "tflops": None,
        "flops_kind": None,
    }


def bench_record_path(output_dir: str | Path, profile: str, variant: str) -> Path:
    return Path(output_dir) / "bench" / profile / "records" / f"{variant}.json"


RECORD_KEYS = (
    "kind",
    "schema_version",
    "profile",
    "variant",
    "device",
    "grid",
    "memory_kind",
    "git_commit",
    "versions",
    "config_hash",
    "config",
    "points",
)
POINT_KEYS = tuple(empty_point(Setting("fwd", 1, 1, 1, 1, False, "fp32")))


def validate_bench_record(record: Any) -> str | None:
    """Why ``record`` is not a valid bench record, or ``None`` if it is."""
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        return "missing keys: " + ", ".join(missing)
    if record["kind"] != RECORD_KIND:
        return f"kind {record['kind']!r}, expected {RECORD_KIND!r}"
    if record["schema_version"] != SCHEMA_VERSION:
        return f"schema_version {record['schema_version']!r}, expected {SCHEMA_VERSION}"
    if record["memory_kind"] not in MEMORY_DEFINITIONS:
        return f"memory_kind {record['memory_kind']!r}; valid: {', '.join(MEMORY_DEFINITIONS)}"
    if not isinstance(record["points"], list):
        return "points is not a list"
    for i, p in enumerate(record["points"]):
        problem = _point_problem(p)
        if problem:
            return f"point {i}: {problem}"
    return None


def _point_problem(p: Any) -> str | None:
    if not isinstance(p, dict):
        return "not a JSON object"
    missing = [key for key in POINT_KEYS if key not in p]
    if missing:
        return "missing keys: " + ", ".join(missing)
    if p["mode"] not in MODES:
        return f"mode {p['mode']!r}; valid: {', '.join(MODES)}"
    if p["status"] not in STATUSES:
        return f"status {p['status']!r}; valid: {', '.join(STATUSES)}"
    if p["status"] != "ok":
        return None if p["reason"] else f"status {p['status']!r} without a reason"
    if not p["times_ms"] or not isinstance(p["median_ms"], int | float) or p["median_ms"] <= 0:
        return "status 'ok' without timed steps and a positive median"
    if not isinstance(p["peak_memory_bytes"], int) or p["peak_memory_bytes"] < 0:
        return "status 'ok' without peak_memory_bytes"
    return None


def write_bench_record(path: str | Path, record: dict[str, Any]) -> None:
    """Validate and atomically write one bench record."""
    problem = validate_bench_record(record)
    if problem:
        raise ValueError(f"refusing to write an invalid bench record to {path}: {problem}")
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_bench_record(path: str | Path) -> dict[str, Any]:
    """Read one bench record; ``ValueError`` naming the file if unreadable or invalid."""
    return read_checked_json(path, validate_bench_record, kind="bench record", flaw="invalid")
