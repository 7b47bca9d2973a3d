"""Run records → the tidy frame: one row per record, the leaderboard's only input table.

Reading (:func:`read_records`: load, drop duplicate runs), the tidy frame
(:func:`records_frame`, columns :data:`CSV_COLUMNS`), how metrics are displayed
(:func:`metric_scale`, :func:`format_metric`) and the small helpers that read records
defensively and make text safe for the tables. Everything here is public: the table
model (:mod:`attnbench.leaderboard.table`) and the writers build on these names.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.records import load_records

__all__ = [
    "CSV_COLUMNS",
    "METRIC_SCALES",
    "MISSING",
    "as_dict",
    "direction",
    "fold_row",
    "format_metric",
    "is_missing",
    "key_text",
    "md_escape",
    "metric_scale",
    "number",
    "one_line",
    "read_records",
    "records_frame",
    "variant_order",
]

#: Columns of the tidy CSV, in order (one row per record).
CSV_COLUMNS: tuple[str, ...] = (
    "profile",
    "task",
    "task_family",
    "dataset",
    "dataset_source",
    "stand_in",
    "variant",
    "seed",
    "status",
    "reason",
    "metric",
    "higher_is_better",
    "value",
    "val_value",
    "best_step",
    "n_params",
    "train_time_s",
    "wall_time_s",
    "tokens_per_s",
    "peak_memory_bytes",
    "peak_memory_kind",
    "device",
    "git_commit",
    "config_hash",
    "dataset_description",
    "record_path",
)

_INT_COLUMNS = ("seed", "best_step", "n_params", "peak_memory_bytes")
_FLOAT_COLUMNS = ("value", "val_value", "train_time_s", "wall_time_s", "tokens_per_s")

#: How a metric is displayed: values are multiplied by the scale. Fractions in
#: [0, 1] (accuracy, F1, MCC, ...) are shown as percentages; perplexity, BLEU,
#: losses and anything not listed are shown raw. Looked up by the lower-cased
#: metric name, then by its ``_``/``-``/``.``-separated parts (``macro_f1`` -> ``f1``).
METRIC_SCALES: dict[str, float] = {
    "accuracy": 100.0,
    "acc": 100.0,
    "top1": 100.0,
    "top5": 100.0,
    "f1": 100.0,
    "mcc": 100.0,
    "matthews": 100.0,
    "pearson": 100.0,
    "spearman": 100.0,
    "precision": 100.0,
    "recall": 100.0,
    "auc": 100.0,
    "auroc": 100.0,
    "exact_match": 100.0,
    "em": 100.0,
    "perplexity": 1.0,
    "ppl": 1.0,
    "bleu": 1.0,
    "chrf": 1.0,
    "loss": 1.0,
    "bpc": 1.0,
    "bpd": 1.0,
}

#: A cell, value or list with nothing in it (distinct from ``n/a``).
MISSING = "—"


# --------------------------------------------------------------------------- helpers


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty dict (records are read defensively)."""
    return value if isinstance(value, dict) else {}


def number(value: Any) -> float | None:
    """``value`` as a float, or ``None`` if it is missing or not a number (bools excluded)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def _text(value: Any) -> str | None:
    """``value`` as a string, ``None`` staying ``None``."""
    return None if value is None else str(value)


def key_text(value: Any) -> str:
    """Text of a grouping key (profile, task, variant); a null becomes ``"(none)"``."""
    return "(none)" if value is None else str(value)


def _device_name(device: Any) -> str | None:
    """A short device description: ``device["name"]`` if present, else built from the dict."""
    if device is None:
        return None
    if isinstance(device, str):
        return device
    device = as_dict(device)
    if device.get("name"):
        return str(device["name"])
    kind = device.get("type") or device.get("kind")
    threads = device.get("threads") or device.get("num_threads")
    if kind and threads:
        return f"{kind} ({threads} threads)"
    return str(kind) if kind else None


def metric_scale(name: str) -> float:
    """Display multiplier for a metric (100 for fractions shown as percentages, else 1)."""
    key = name.strip().lower()
    if key in METRIC_SCALES:
        return METRIC_SCALES[key]
    for part in re.split(r"[_\-.@/ ]+", key):
        if part in METRIC_SCALES:
            return METRIC_SCALES[part]
    return 1.0


def format_metric(name: str, value: float) -> str:
    """One metric value as displayed in the tables (scaled, two decimals)."""
    return f"{value * metric_scale(name):.2f}"


def one_line(text: Any) -> str:
    """Collapse whitespace so that a multi-line reason cannot break a table or footnote."""
    return " ".join(str(text).split())


def md_escape(text: Any) -> str:
    """Text made safe for a GFM table cell or list item: one line, ``|`` escaped."""
    return one_line(text).replace("|", "\\|")


def variant_order(
    variants: Iterable[str], reference: str, controls: Iterable[str] = ()
) -> list[str]:
    """Variants sorted by name with the reference first and the controls last."""
    last = set(controls)
    return sorted(set(variants), key=lambda name: (name != reference, name in last, name))


def is_missing(value: Any) -> bool:
    """True for ``None`` / ``NaN`` / ``pd.NA`` cells."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def direction(value: Any) -> bool | None:
    """``True``/``False`` for a known metric direction, ``None`` when unknown."""
    return None if is_missing(value) else bool(value)


# --------------------------------------------------------------------------- reading


def _run_key(record: dict[str, Any]) -> tuple[str, str, str, str]:
    """The identity of one run: (profile, task, variant, seed)."""
    return (
        str(record.get("profile")),
        str(record.get("task")),
        str(record.get("variant")),
        str(record.get("seed")),
    )


def _dedupe(
    records: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Keep one record per run (first by path); report the others as skipped duplicates."""
    kept: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    duplicates: list[tuple[Path, str]] = []
    for record in sorted(records, key=lambda r: str(r.get("_path"))):
        key = _run_key(record)
        if key in kept:
            reason = (
                f"duplicate run (same profile, task, variant and seed) of {kept[key].get('_path')}"
            )
            duplicates.append((Path(str(record.get("_path"))), reason))
        else:
            kept[key] = record
    return list(kept.values()), duplicates


def _folded_variant(variant: Any, setting: dict[str, Any]) -> str:
    """``<variant> · <setting>``: a variant under a setting the profile varies."""
    return " · ".join([key_text(variant), *(key_text(v) for v in setting.values())])


def fold_row(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the leaderboard shows it.

    A record with a ``row`` (:func:`attnbench.config.row_setting`: its profile runs one
    task under several settings of a row axis, e.g. positions) goes into the column
    ``row.column`` as the row ``<variant> · <setting>``, compared with the reference
    variant under the reference setting; ``task_entry`` and ``variant_name`` keep the
    record's own names. Any other record is returned as it is.
    """
    row = as_dict(record.get("row"))
    setting, reference = as_dict(row.get("setting")), as_dict(row.get("reference_setting"))
    if not _text(row.get("column")) or not setting or not reference:
        return record
    compared_with = _text(record.get("reference_variant"))  # the runner always writes it
    return {
        **record,
        "task": row["column"],
        "task_entry": record.get("task"),
        "variant": _folded_variant(record.get("variant"), setting),
        "variant_name": record.get("variant"),
        "reference_variant": compared_with and _folded_variant(compared_with, reference),
    }


def read_records(
    record_files: Sequence[str | Path],
) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """The usable records of ``record_files`` and ``(path, reason)`` for every file not used.

    Records of a varied row axis are shown folded (:func:`fold_row`). Unreadable or
    incomplete files, and second records of the same (profile, task,
    variant, seed), are skipped (sorted by path); the same file passed twice is read once.
    """
    paths: list[Path] = []
    seen: set[str] = set()
    for path in record_files:
        norm = os.path.normpath(os.fspath(path))
        if norm not in seen:
            seen.add(norm)
            paths.append(Path(path))
    records, skipped = load_records(paths)
    records, duplicates = _dedupe([fold_row(record) for record in records])
    skipped = sorted([*skipped, *duplicates], key=lambda item: (str(item[0]), item[1]))
    return records, skipped


# --------------------------------------------------------------------------- tidy frame


def _record_row(record: dict[str, Any]) -> dict[str, Any]:
    """The CSV row of one record."""
    metric = as_dict(record.get("metric"))
    metric_name = _text(metric.get("name")) or ""
    hib = metric.get("higher_is_better")
    metrics = as_dict(record.get("metrics"))
    status = _text(record.get("status"))
    value = None
    if status == "ok":
        value = number(as_dict(metrics.get("test")).get(metric_name))
    raw_dataset = record.get("dataset")
    dataset = {"name": raw_dataset} if isinstance(raw_dataset, str) else as_dict(raw_dataset)
    stand_in = dataset.get("stand_in")
    return {
        "profile": key_text(record.get("profile")),
        "task": key_text(record.get("task")),
        "task_family": _text(record.get("task_family")),
        "dataset": _text(dataset.get("name")),
        "dataset_source": _text(dataset.get("source")),
        "stand_in": stand_in if isinstance(stand_in, bool) else None,
        "variant": key_text(record.get("variant")),
        "seed": record.get("seed"),
        "status": status,
        "reason": _text(record.get("reason")),
        "metric": metric_name,
        "higher_is_better": hib if isinstance(hib, bool) else None,
        "value": value,
        "val_value": number(as_dict(metrics.get("val")).get(metric_name)),
        "best_step": metrics.get("best_step"),
        "n_params": record.get("n_params"),
        "train_time_s": number(record.get("train_time_s")),
        "wall_time_s": number(record.get("wall_time_s")),
        "tokens_per_s": number(record.get("tokens_per_s")),
        "peak_memory_bytes": record.get("peak_memory_bytes"),
        "peak_memory_kind": _text(record.get("peak_memory_kind")),
        "device": _device_name(record.get("device")),
        "git_commit": _text(record.get("git_commit")),
        "config_hash": _text(record.get("config_hash")),
        "dataset_description": _text(dataset.get("description")),
        "record_path": _text(record.get("_path")),
    }


def _int_column(series: pd.Series) -> pd.Series:
    """Nullable integers (so the CSV shows ``12345``, not ``12345.0``) where possible."""
    numeric = pd.to_numeric(series, errors="coerce")
    finite = numeric.dropna()
    if finite.empty or ((finite % 1 == 0).all() and finite.abs().max() < 2**63):
        return numeric.astype("Int64")
    return numeric


def _sort_key(column: pd.Series) -> pd.Series:
    """Sort text columns as strings (robust to mixed types); leave numbers alone."""
    if column.dtype == object:
        return column.map(lambda v: "" if is_missing(v) else str(v))
    return column


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The tidy table: one row per record, columns :data:`CSV_COLUMNS`.

    ``value`` is the test value of the primary metric (``record["metric"]["name"]``)
    and is empty unless the status is ``ok``; ``val_value`` is its validation value
    when recorded. Rows are sorted by profile, task, variant, seed and record path.
    """
    frame = pd.DataFrame([_record_row(r) for r in records], columns=list(CSV_COLUMNS))
    for column in _INT_COLUMNS:
        frame[column] = _int_column(frame[column])
    for column in _FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["higher_is_better"] = frame["higher_is_better"].astype("boolean")
    frame["stand_in"] = frame["stand_in"].astype("boolean")
    keys = ["profile", "task", "variant", "seed", "record_path"]
    frame = frame.sort_values(keys, na_position="last", kind="mergesort", key=_sort_key)
    return frame.reset_index(drop=True)
