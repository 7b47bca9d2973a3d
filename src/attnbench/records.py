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
      "history": [...],
      "resumed_from": [],        # steps at which an interrupted run was resumed
      "diverged_at_step": 3,     # status diverged: 0-based index of the non-finite step
      "traceback": "..."         # status failed: the exception, for debugging
    }

Files beside a record ``seed0.json``: ``seed0.predictions.jsonl``, ``seed0.best.pt``
and, while the run is in progress, ``seed0.resume.pt`` (deleted once the record is
written) and the lock ``.seed0.json.lock`` that keeps two processes off one run.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 1
STATUSES = ("ok", "n/a", "diverged", "failed")
#: The reference variant of records that do not name one (``reference_variant``): the
#: variant every other is compared with on the leaderboard.
DEFAULT_REFERENCE = "vanilla"
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


def resume_path(record_file: str | Path, point: int | None = None) -> Path:
    """The resume checkpoint of a run in progress: ``seed0.json`` → ``seed0.resume.pt``;
    of point ``i`` of its tuning grid (:mod:`attnbench.tuning`): ``seed0.resume-g<i>.pt``."""
    record_file = Path(record_file)
    suffix = ".resume.pt" if point is None else f".resume-g{point}.pt"
    return record_file.with_name(record_file.with_suffix("").name + suffix)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0o600


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The bytes go to a temporary file ``.<name>.<random>.tmp`` in the same directory,
    are flushed and fsync'ed, and the file is renamed over the target (atomic on
    POSIX); the directory is then fsync'ed so that the rename survives a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), _FILE_MODE)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # not every platform can open a directory
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class JobFailed(RuntimeError):
    """A run raised during training (not bad input); one-line message, the cause chained.

    Defined here, not in the runner, so that the command line can catch it without
    importing torch.
    """


class LockedError(RuntimeError):
    """Another process holds a lock that was asked for without waiting."""


@contextlib.contextmanager
def file_lock(path: str | Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``path`` for the ``with`` block.

    The lock dies with its process, so a killed job never leaves a stale lock. With
    ``wait=False`` a lock held elsewhere raises :class:`LockedError` at once. The
    lock file stays in place: deleting it would let a waiting process lock a file
    that no longer has a name while a third one locks a new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if fcntl is not None:
            flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(handle.fileno(), flags)
            except BlockingIOError:
                raise LockedError(f"{path} is locked by another process") from None
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_record(path: str | Path, record: dict[str, Any]) -> None:
    """Validate and atomically write one run record as pretty JSON."""
    problems = validate_record(record)
    if problems:
        raise ValueError(f"refusing to write an incomplete record to {path}: {problems}")
    text = json.dumps(record, indent=2, sort_keys=True, allow_nan=True, default=_plain)
    atomic_write_text(path, text + "\n")


def _plain(value: Any) -> Any:
    """JSON for the array and scalar types metrics tend to arrive as (NumPy, torch)."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"record value of type {type(value).__name__} is not JSON-serialisable")


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


def read_checked_json(
    path: str | Path,
    validate: Callable[[Any], str | None],
    kind: str = "record",
    flaw: str = "incomplete",
) -> dict[str, Any]:
    """Read a JSON record and check it with ``validate`` (a problem string or None);
    ``ValueError`` naming the file (``<path>: unreadable <kind> (...)`` or
    ``<path>: <flaw> <kind> (<problem>)``) if it cannot be read or fails the check."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable {kind} ({exc.__class__.__name__}: {exc})") from exc
    problem = validate(record)
    if problem:
        raise ValueError(f"{path}: {flaw} {kind} ({problem})")
    return record


def read_record(path: str | Path) -> dict[str, Any]:
    """Read one record; raise ``ValueError`` naming the file if it is unreadable or incomplete."""
    return read_checked_json(path, validate_record)


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
