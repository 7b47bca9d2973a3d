"""Run records: one JSON file per (task, variant, seed) run, written atomically.

The leaderboard is built from these files alone. A record is complete when it
carries every key in :data:`REQUIRED_KEYS`; anything else is reported as
skipped by the readers, never silently used.

Record layout (``schema_version`` 1)::

    {
      "schema_version": 1,
      "status": "ok" | "n/a" | "diverged" | "failed",
      "reason": null | "why it is n/a / failed / diverged",
      "task": "listops", "task_family": "lra",
      "dataset": {"name": ..., "source": "generated|bundled|huggingface|lra-release",
                  "stand_in": false, "description": ...},
      "variant": "vanilla", "variant_options": {...}, "capabilities": {...},
      "seed": 0, "profile": "default",
      "metric": {"name": "accuracy", "higher_is_better": true},
      "metrics": {"val": {...}, "test": {...}, "best_step": 400, "baselines": {...}},
      "n_params": 12345, "wall_time_s": 12.3, "train_time_s": 10.1,
      "tokens_per_s": 5000.0, "peak_memory_bytes": 123, "peak_memory_kind": "cpu_max_rss",
      "device": {...}, "git_commit": "...", "config_hash": "...", "config": {...},
      "versions": {...}, "started_at": "...", "finished_at": "...",
      "history": [...]
    }
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "n/a", "diverged", "failed")
REQUIRED_KEYS = (
    "schema_version",
    "status",
    "task",
    "variant",
    "seed",
    "profile",
    "metric",
    "metrics",
    "n_params",
    "wall_time_s",
    "config_hash",
)


def record_path(output_dir: str | Path, profile: str, task: str, variant: str, seed: int) -> Path:
    """Where the record of one run lives (the Snakemake workflow uses the same layout)."""
    return Path(output_dir) / "runs" / profile / task / variant / f"seed{seed}.json"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The bytes go to a temporary file in the same directory, are flushed and
    fsync'ed, and the file is renamed over the target (atomic on POSIX).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_record(path: str | Path, record: dict[str, Any]) -> None:
    """Validate and atomically write one run record as pretty JSON."""
    problems = validate_record(record)
    if problems:
        raise ValueError(f"refusing to write an incomplete record to {path}: {problems}")
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, allow_nan=True) + "\n")


def validate_record(record: Any) -> str | None:
    """Return why ``record`` is not a complete record, or ``None`` if it is."""
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        return "missing keys: " + ", ".join(missing)
    if record["schema_version"] != SCHEMA_VERSION:
        return f"schema_version {record['schema_version']!r}, expected {SCHEMA_VERSION}"
    if record["status"] not in STATUSES:
        return f"status {record['status']!r} is not one of {', '.join(STATUSES)}"
    if record["status"] != "ok" and not record.get("reason"):
        return f"status {record['status']!r} without a reason"
    if record["status"] == "ok" and "test" not in record["metrics"]:
        return "status 'ok' without test metrics"
    return None


def read_record(path: str | Path) -> dict[str, Any]:
    """Read one record; raise ``ValueError`` naming the file if it is unreadable or incomplete."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable record ({exc.__class__.__name__}: {exc})") from exc
    problem = validate_record(record)
    if problem:
        raise ValueError(f"{path}: incomplete record ({problem})")
    return record


def iter_record_files(root: str | Path) -> Iterator[Path]:
    """Every ``*.json`` record file under ``root`` (sorted, hidden temporaries excluded)."""
    for path in sorted(Path(root).rglob("*.json")):
        if not path.name.startswith("."):
            yield path


def load_records(paths: list[Path]) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Read records; return ``(records, skipped)`` where skipped holds ``(path, reason)``."""
    records: list[dict[str, Any]] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        try:
            record = read_record(path)
        except ValueError as exc:
            skipped.append((Path(path), str(exc).split(": ", 1)[-1]))
            continue
        record["_path"] = str(path)
        records.append(record)
    return records, skipped
