"""The leaderboard: a Markdown table, a tidy CSV and a manifest built from run records alone.

The inputs are the JSON run records described in :mod:`attnbench.records`; nothing
else (no logs, no live models) is consulted, so the leaderboard can be rebuilt
from a results folder at any time. Both outputs are deterministic: rebuilding
from the same records gives byte-identical files (no dates, stable ordering), so
they can be committed and diffed.

Nothing is silently dropped:

* unreadable or incomplete record files are listed under *Skipped records*;
* ``n/a``, ``diverged`` and ``failed`` runs appear in their cells with a
  footnote giving the recorded reason, and are never averaged in;
* a (task, variant) pair without any record shows ``—``, distinct from ``n/a``.

It claims only what the data support (:mod:`attnbench.verdicts`): a signal check per
task comes first (the reference variant against the strongest trivial baseline, in
seed standard deviations, and the signal-to-noise ratio across variants); tasks whose
verdict is ``none`` stay in the table, marked, but enter no rank, average or mark;
▲/▼ come from seed-level tests against the reference, Holm–Bonferroni-corrected over
every comparison of the table; cells whose pattern is dense attention at the task's
length are shown but neither ranked nor tested.

Typical use::

    from attnbench.leaderboard import build_leaderboard
    from attnbench.records import iter_record_files

    build_leaderboard(list(iter_record_files("results/runs")),
                      "results/leaderboard.md", "results/leaderboard.csv")
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .records import STATUSES, atomic_write_text, load_records
from .significance import DEFAULT_REFERENCE, PREDICTION, WELCH, versus_baseline
from .verdicts import MARGIN_SIGMAS, NONE, SNR_THRESHOLD, Analysis, TaskSignal, analyse

__all__ = [
    "CSV_COLUMNS",
    "METRIC_SCALES",
    "LeaderboardResult",
    "build_leaderboard",
    "format_metric",
    "metric_scale",
    "records_frame",
    "render_markdown",
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

_MISSING = "—"
_NO_SIGNAL = "⚠ no signal"
_CONTROL = "(control: no token mixing)"
_BASELINE_ROW = "strongest trivial baseline"
_NOT_OK = tuple(status for status in STATUSES if status != "ok")
_NO_VALUE = "no value"  # an 'ok' record whose primary test metric is absent or not finite


@dataclass
class LeaderboardResult:
    """What :func:`build_leaderboard` read and wrote.

    ``tasks`` is sorted by name; ``variants`` is in table order (the reference first,
    then by name, the controls last). ``skipped`` holds ``(path, reason)`` for every
    record file that was not used; ``frame`` is the tidy table written to the CSV.
    ``analysis`` holds the signal checks and the seed-level claims behind the marks;
    ``tests`` the optional paired bootstraps (extra information, no marks).
    """

    n_records: int
    n_skipped: int
    tasks: list[str]
    variants: list[str]
    frame: pd.DataFrame
    profiles: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    markdown: str = ""
    tests: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)  # the records used
    analysis: Analysis | None = None


# --------------------------------------------------------------------------- helpers


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty dict (records are read defensively)."""
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    """``value`` as a float, or ``None`` if it is missing or not a number (bools excluded)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def _text(value: Any) -> str | None:
    """``value`` as a string, ``None`` staying ``None``."""
    return None if value is None else str(value)


def _key_text(value: Any) -> str:
    """Text of a grouping key (profile, task, variant); a null becomes ``"(none)"``."""
    return "(none)" if value is None else str(value)


def _device_name(device: Any) -> str | None:
    """A short device description: ``device["name"]`` if present, else built from the dict."""
    if device is None:
        return None
    if isinstance(device, str):
        return device
    device = _dict(device)
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


def _one_line(text: Any) -> str:
    """Collapse whitespace so that a multi-line reason cannot break a table or footnote."""
    return " ".join(str(text).split())


def _md(text: Any) -> str:
    """Text made safe for a GFM table cell or list item: one line, ``|`` escaped."""
    return _one_line(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: Sequence[str]) -> list[str]:
    """GFM table lines; ``align`` holds ``"l"`` or ``"r"`` per column."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _variant_order(
    variants: Iterable[str], reference: str = DEFAULT_REFERENCE, controls: Iterable[str] = ()
) -> list[str]:
    """Variants sorted by name with the reference first and the controls last."""
    last = set(controls)
    return sorted(set(variants), key=lambda name: (name != reference, name in last, name))


def _is_missing(value: Any) -> bool:
    """True for ``None`` / ``NaN`` / ``pd.NA`` cells."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _direction(value: Any) -> bool | None:
    """``True``/``False`` for a known metric direction, ``None`` when unknown."""
    return None if _is_missing(value) else bool(value)


def _arrow(higher_is_better: Any) -> str:
    """↑ / ↓ for a known direction, empty otherwise."""
    if higher_is_better is True:
        return " ↑"
    if higher_is_better is False:
        return " ↓"
    return ""


# --------------------------------------------------------------------------- tidy frame


def _record_row(record: dict[str, Any]) -> dict[str, Any]:
    """The CSV row of one record."""
    metric = _dict(record.get("metric"))
    metric_name = _text(metric.get("name")) or ""
    hib = metric.get("higher_is_better")
    metrics = _dict(record.get("metrics"))
    status = _text(record.get("status"))
    value = None
    if status == "ok":
        value = _number(_dict(metrics.get("test")).get(metric_name))
    raw_dataset = record.get("dataset")
    dataset = {"name": raw_dataset} if isinstance(raw_dataset, str) else _dict(raw_dataset)
    stand_in = dataset.get("stand_in")
    return {
        "profile": _key_text(record.get("profile")),
        "task": _key_text(record.get("task")),
        "task_family": _text(record.get("task_family")),
        "dataset": _text(dataset.get("name")),
        "dataset_source": _text(dataset.get("source")),
        "stand_in": stand_in if isinstance(stand_in, bool) else None,
        "variant": _key_text(record.get("variant")),
        "seed": record.get("seed"),
        "status": status,
        "reason": _text(record.get("reason")),
        "metric": metric_name,
        "higher_is_better": hib if isinstance(hib, bool) else None,
        "value": value,
        "val_value": _number(_dict(metrics.get("val")).get(metric_name)),
        "best_step": metrics.get("best_step"),
        "n_params": record.get("n_params"),
        "train_time_s": _number(record.get("train_time_s")),
        "wall_time_s": _number(record.get("wall_time_s")),
        "tokens_per_s": _number(record.get("tokens_per_s")),
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


def _sort_key(column: pd.Series) -> pd.Series:
    """Sort text columns as strings (robust to mixed types); leave numbers alone."""
    if column.dtype == object:
        return column.map(lambda v: "" if _is_missing(v) else str(v))
    return column


# --------------------------------------------------------------------------- markdown


class _Footnotes:
    """Footnote numbers by reason text: identical reasons share one number."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self._flushed = 0

    def ref(self, reason: str) -> str:
        """The ``[^k]`` reference for ``reason``, numbering it on first use."""
        reason = _md(reason) or "no reason recorded"
        if reason not in self.numbers:
            self.numbers[reason] = len(self.numbers) + 1
        return f"[^{self.numbers[reason]}]"

    def new_definitions(self) -> list[str]:
        """Definitions of the footnotes numbered since the last call (each defined once)."""
        items = list(self.numbers.items())[self._flushed :]
        self._flushed = len(self.numbers)
        return [f"[^{number}]: {reason}" for reason, number in items]


@dataclass
class _Cell:
    """Aggregate of one (task, metric, variant) cell."""

    mean: float | None = None
    text: str = _MISSING
    bold_part: str = ""
    suffix: str = ""


def _aggregate_cell(rows: list[dict[str, Any]], metric: str, notes: _Footnotes) -> _Cell:
    """Mean ± std over ok seeds, with every non-ok seed shown (never averaged in)."""
    if not rows:
        return _Cell()
    values = [r["value"] for r in rows if r["status"] == "ok" and not _is_missing(r["value"])]
    values = [v for v in values if math.isfinite(v)]
    problems: dict[str, list[str]] = {}
    for row in rows:
        status = row["status"]
        if status == "ok":
            if _is_missing(row["value"]) or not math.isfinite(row["value"]):
                reason = (
                    f"status ok but no finite test {metric!r} recorded"
                    if metric
                    else "status ok but the record names no primary metric"
                )
                problems.setdefault(_NO_VALUE, []).append(reason)
            continue
        reason = row["reason"] if not _is_missing(row["reason"]) else "no reason recorded"
        problems.setdefault(str(status), []).append(str(reason))

    order = [*_NOT_OK, _NO_VALUE]
    statuses = sorted(problems, key=lambda s: (order.index(s) if s in order else len(order), s))

    def refs(reasons: list[str]) -> str:
        return "".join(dict.fromkeys(notes.ref(reason) for reason in reasons))

    if not values:
        if len(statuses) == 1:
            status = statuses[0]
            return _Cell(text=_md(status) + refs(problems[status]))
        parts = [f"{len(problems[s])} {_md(s)}{refs(problems[s])}" for s in statuses]
        return _Cell(text=", ".join(parts))

    scaled = pd.Series(values, dtype="float64") * metric_scale(metric)
    mean = float(scaled.mean())
    if len(values) >= 2:
        body = f"{mean:.2f} ± {float(scaled.std(ddof=1)):.2f} (n={len(values)})"
    else:
        body = f"{mean:.2f} (n=1)"
    suffix = "".join(f", {len(problems[s])} {_md(s)}{refs(problems[s])}" for s in statuses)
    return _Cell(mean=mean, text=body + suffix, bold_part=body, suffix=suffix)


def _dataset_kind(source: Any, stand_in: Any) -> str:
    """Real benchmark, offline stand-in or generated data (from the record's dataset block)."""
    if stand_in is True:
        return "offline stand-in"
    if source == "generated":
        return "generated"
    if stand_in is False or (not _is_missing(source) and source):
        return "real benchmark"
    return "unknown provenance"


def _datasets_section(frame: pd.DataFrame) -> list[str]:
    """One line per task (more if the task's dataset differs between records)."""
    columns = ("dataset", "dataset_source", "stand_in", "dataset_description")
    lines = ["## Datasets", ""]
    for task in sorted(frame["task"].unique()):
        seen: dict[tuple[Any, ...], list[str]] = {}
        for row in frame[frame["task"] == task].to_dict("records"):
            key = tuple(None if _is_missing(row[c]) else row[c] for c in columns)
            profiles = seen.setdefault(key, [])
            if row["profile"] not in profiles:
                profiles.append(row["profile"])
        for (name, source, stand_in, description), profiles in seen.items():
            line = f"- **{_md(task)}**: "
            line += f"`{_md(name)}`" if name else "unnamed dataset"
            if source:
                line += f" (source: {_md(source)})"
            line += f" — {_dataset_kind(source, None if stand_in is None else bool(stand_in))}."
            if description:
                line += f" {_md(description)}"
            if len(seen) > 1:
                line += " (profile " + ", ".join(f"`{_md(p)}`" for p in profiles) + ")"
            lines.append(line)
    return lines


def _column_keys(frame: pd.DataFrame) -> list[tuple[str, str, bool | None]]:
    """(task, metric, higher_is_better) columns of the main table, sorted by task name."""
    keys = {
        (row["task"], row["metric"], _direction(row["higher_is_better"]))
        for row in frame[["task", "metric", "higher_is_better"]].to_dict("records")
    }
    return sorted(keys, key=lambda k: (k[0], k[1], {True: 0, False: 1, None: 2}[k[2]]))


#: Family averages shown beside the per-task columns: (label, family, tasks or None = all
#: of the family's tasks present). LRA's paper averages five tasks (Path-X failed for all
#: models) and, where Path-X is present, six.
LRA_FIVE = ("listops", "text", "retrieval", "image", "pathfinder")
GLUE_NINE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def _family_columns(frame: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """(name, tasks) of each family average that applies to this profile's tasks.

    Only families whose tasks all have higher-is-better metrics are averaged (a mean of
    accuracies and perplexities means nothing). A family whose datasets are offline
    stand-ins is labelled so. The name carries no task count: the table adds it once it
    knows which tasks have signal.
    """
    out: list[tuple[str, list[str]]] = []
    rows = frame.dropna(subset=["task_family"]).drop_duplicates("task")
    for family in sorted(rows["task_family"].unique()):
        sub = rows[rows["task_family"] == family]
        if not all(_direction(v) is True for v in sub["higher_is_better"].tolist()):
            continue
        tasks = sorted(sub["task"])
        stand_in = " stand-ins" if bool(sub["stand_in"].fillna(False).any()) else ""
        if family == "lra":
            five = [t for t in tasks if t in LRA_FIVE]
            if len(five) >= 2:
                out.append((f"LRA{stand_in} avg", five))
            if "pathx" in tasks and len(tasks) >= 2:
                out.append((f"LRA{stand_in} avg", tasks))
        elif family == "glue" and set(GLUE_NINE) <= set(tasks):
            out.append(("GLUE avg", list(GLUE_NINE)))
        elif len(tasks) >= 2:
            name = family.upper() if family in ("lra", "glue") else family
            out.append((f"{name}{stand_in} avg", tasks))
    return out


def _ranks(means: dict[str, float], higher_is_better: bool) -> dict[str, float]:
    """Rank of each variant's mean (1 = best; ties share the average rank)."""
    ordered = sorted(means.values(), reverse=higher_is_better)
    ranks: dict[str, float] = {}
    for variant, value in means.items():
        positions = [i + 1 for i, v in enumerate(ordered) if v == value]
        ranks[variant] = sum(positions) / len(positions)
    return ranks


Column = tuple[str, str, bool | None]  # (task, metric, higher_is_better)


@dataclass
class _Table:
    """The main table's content, shared by the Markdown and HTML renderers."""

    profile: str
    reference: str
    columns: list[Column]
    variants: list[str]
    controls: set[str]
    cells: dict[tuple[str, Column], _Cell]
    best: dict[Column, float]
    marks: dict[tuple[str, str], str]  # (variant, task) -> ▲/▼
    families: list[tuple[str, list[str]]]  # (label, counted tasks)
    family_values: dict[tuple[str, str], float | None]  # (variant, label)
    ranks: dict[tuple[str, str], float]  # (variant, task)
    mean_rank: dict[str, float | None]
    counted: dict[str, bool]  # task -> has a verdict other than none
    header_notes: dict[Column, str]  # footnote reference of a no-signal column
    dense_notes: dict[tuple[str, str], str]  # (variant, task) -> footnote reference
    baseline_cells: dict[Column, str]  # the strongest trivial baseline per column
    n_tested: int = 0
    n_untestable: int = 0


def _build_table(frame: pd.DataFrame, notes: _Footnotes, analysis: Analysis) -> _Table:
    """The main table of one profile (``frame`` holds that profile's rows only).

    Footnotes are numbered here, in a fixed order (no-signal columns, then cells, then
    dense cells), so the Markdown and HTML renderers number them alike.
    """
    profile = str(frame["profile"].iloc[0]) if len(frame) else ""
    reference = analysis.reference(profile)
    controls = set(analysis.controls.get(profile, []))
    columns = _column_keys(frame)
    variants = _variant_order(frame["variant"], reference, controls)
    counted = {task: analysis.counts(profile, task) for task, _, _ in columns}

    header_notes: dict[Column, str] = {}
    for column in columns:
        signal = analysis.signals.get((profile, column[0]))
        if not counted[column[0]]:
            why = signal.reason if signal else "no ok run of any variant"
            header_notes[column] = notes.ref(
                f"no signal on {column[0]}: {why}. Shown, but not ranked, averaged or tested."
            )

    rows_by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in frame.to_dict("records"):
        key = (row["task"], row["metric"], _direction(row["higher_is_better"]), row["variant"])
        rows_by_key.setdefault(key, []).append(row)
    cells = {
        (variant, column): _aggregate_cell(
            rows_by_key.get((*column, variant), []), column[1], notes
        )
        for variant in variants
        for column in columns
    }
    dense_notes: dict[tuple[str, str], str] = {}
    for variant in variants:
        for column in columns:
            reason = analysis.degenerate.get((profile, column[0], variant))
            if reason is not None and (variant, column[0]) not in dense_notes:
                dense_notes[(variant, column[0])] = notes.ref(
                    f"dense attention at this task's length ({reason}): the variant computes "
                    "the reference's full attention here, so the cell is neither ranked nor "
                    f"tested, and family averages over it are {_MISSING}."
                )

    def ranked(variant: str, column: Column) -> bool:
        return (
            counted[column[0]]
            and column[2] is not None
            and cells[(variant, column)].mean is not None
            and (variant, column[0]) not in dense_notes
        )

    best: dict[Column, float] = {}
    ranks: dict[tuple[str, str], float] = {}
    for column in columns:
        present = {v: cells[(v, column)].mean for v in variants if ranked(v, column)}
        if present and column[2] is not None:
            values = [m for m in present.values() if m is not None]
            best[column] = max(values) if column[2] else min(values)
            for v, r in _ranks(present, column[2]).items():  # type: ignore[arg-type]
                ranks[(v, column[0])] = r
    marks = {
        (variant, task): analysis.mark(profile, task, variant)
        for variant in variants
        for task, _, _ in columns
    }

    by_task = {c[0]: c for c in columns}
    families: list[tuple[str, list[str]]] = []
    seen: set[tuple[str, ...]] = set()
    for name, tasks in _family_columns(frame):
        kept = [t for t in tasks if counted.get(t)]
        if tuple(kept) in seen and kept:
            continue  # the same tasks as a family already shown
        seen.add(tuple(kept))
        if len(kept) == len(tasks):
            families.append((f"{name} ({len(tasks)})", kept))
        else:
            families.append((f"{name} ({len(kept)} of {len(tasks)} with signal)", kept))
    family_values: dict[tuple[str, str], float | None] = {}
    for variant in variants:
        for label, tasks in families:
            values = [
                cells[(variant, by_task[t])].mean
                for t in tasks
                if t in by_task and (variant, t) not in dense_notes
            ]
            complete = bool(tasks) and len(values) == len(tasks)
            complete = complete and all(v is not None for v in values)
            family_values[(variant, label)] = (
                sum(v for v in values if v is not None) / len(values) if complete else None
            )
    mean_rank: dict[str, float | None] = {}
    ranked_tasks = sorted({t for (_, t) in ranks})
    for variant in variants:
        mine = [ranks[(variant, t)] for t in ranked_tasks if (variant, t) in ranks]
        mean_rank[variant] = sum(mine) / len(mine) if mine else None

    baseline_cells: dict[Column, str] = {}
    for column in columns:
        signal = analysis.signals.get((profile, column[0]))
        value = signal.baseline_value if signal and signal.metric == column[1] else None
        baseline_cells[column] = _MISSING if value is None else format_metric(column[1], value)
    return _Table(
        profile=profile,
        reference=reference,
        columns=columns,
        variants=variants,
        controls=controls,
        cells=cells,
        best=best,
        marks=marks,
        families=families,
        family_values=family_values,
        ranks=ranks,
        mean_rank=mean_rank,
        counted=counted,
        header_notes=header_notes,
        dense_notes=dense_notes,
        baseline_cells=baseline_cells,
        n_tested=len(analysis.family(profile)),
        n_untestable=len(analysis.untested(profile)),
    )


def _is_best(table: _Table, variant: str, column: Column) -> bool:
    """Whether the cell holds the best ranked mean of its column."""
    cell = table.cells[(variant, column)]
    return (
        cell.mean is not None
        and column in table.best
        and (variant, column[0]) in table.ranks
        and math.isclose(cell.mean, table.best[column], rel_tol=1e-12, abs_tol=1e-12)
    )


def _column_header(column: Column) -> str:
    """``task metric (%) ↑`` for a column."""
    task, metric, hib = column
    percent = " (%)" if metric_scale(metric) == 100.0 else ""
    return f"{_md(task)} {_md(metric) or '?'}{percent}{_arrow(hib)}"


def _header_text(table: _Table, column: Column) -> str:
    """The column header, with ``⚠ no signal`` and its footnote on a no-signal task."""
    note = table.header_notes.get(column)
    return _column_header(column) + (f" {_NO_SIGNAL}{note}" if note else "")


def _row_label(table: _Table, variant: str) -> str:
    """The variant's name; the reference in code style, a control labelled as such."""
    name = f"`{_md(variant)}`" if variant == table.reference else _md(variant)
    return f"{name} {_CONTROL}" if variant in table.controls else name


def _cell_parts(table: _Table, variant: str, column: Column) -> tuple[str, str, str, bool]:
    """(value text, mark, suffix, best) of one cell: the renderers add their own markup.

    The value text is ``mean ± std (n=k)`` (or the cell's status text when it has no
    mean); the mark is `` ▲``/`` ▼`` or empty; the suffix holds non-ok seed counts and
    the dense-attention note.
    """
    cell = table.cells[(variant, column)]
    dense = table.dense_notes.get((variant, column[0]))
    dense_text = f" (dense){dense}" if dense else ""
    if cell.mean is None:
        return cell.text, "", dense_text if cell.text != _MISSING else "", False
    mark = table.marks.get((variant, column[0]), "")
    return (
        cell.bold_part,
        f" {mark}" if mark else "",
        cell.suffix + dense_text,
        _is_best(table, variant, column),
    )


def _main_table(table: _Table) -> list[str]:
    """Variants × tasks, mean ± std of the primary test metric, best per task in bold.

    Below the variants, the strongest trivial baseline of every task.
    """
    header = ["variant", *(_header_text(table, c) for c in table.columns)]
    header += [f"{_md(label)} ↑" for label, _ in table.families]
    header.append("mean rank ↓")
    body = []
    for variant in table.variants:
        row = [_row_label(table, variant)]
        for column in table.columns:
            text, mark, suffix, best = _cell_parts(table, variant, column)
            row.append(f"**{text}**{mark}{suffix}" if best else f"{text}{mark}{suffix}")
        for label, _ in table.families:
            value = table.family_values[(variant, label)]
            row.append(_MISSING if value is None else f"{value:.2f}")
        rank = table.mean_rank[variant]
        row.append(_MISSING if rank is None else f"{rank:.1f}")
        body.append(row)
    baseline = [f"*{_BASELINE_ROW}*", *(table.baseline_cells[c] for c in table.columns)]
    body.append(baseline + [""] * (len(table.families) + 1))
    n = len(table.columns) + len(table.families) + 1
    return _table(header, body, ["l"] + ["r"] * n)


def _legend(table: _Table, analysis: Analysis, bootstrap: bool) -> list[str]:
    """What the marks, ranks and averages mean: the test, α and the correction."""
    reference = f"`{_md(table.reference)}`"
    lines = [
        f"▲/▼: significantly better/worse than the reference {reference} on that task. "
        f"Seed-level test on the per-seed test values: {WELCH} when both sides have ≥ 2 "
        f"seeds; a {PREDICTION} when the variant has 1 seed and the reference ≥ 3 "
        "(t = (x − mean_ref) / (s_ref·√(1 + 1/n_ref)), df = n_ref − 1, which assumes the "
        "variant's seed noise equals the reference's). Two-sided, α = "
        f"{analysis.alpha:g}, Holm–Bonferroni correction over all {table.n_tested} "
        "comparison(s) of this table (every variant × task with signal, except the "
        "reference and dense-at-length cells), controlling the family-wise error rate.",
        "",
        f"Not testable, so never marked: {table.n_untestable} pair(s) with other seed counts "
        "(e.g. 1 seed against fewer than 3 of the reference), as well as every task "
        f"marked {_NO_SIGNAL} and every dense cell. No mark means no claim, not "
        "'equal': with few seeds only large differences can be shown.",
        "",
        f"Ranks, mean rank, best-in-**bold** and family averages use only tasks with signal "
        f"(the signal check above); a task marked {_NO_SIGNAL} is shown but left out, with "
        "its reason in a footnote. '(dense)' marks a cell whose pattern is dense attention "
        f"at the task's length: not ranked, not tested, family averages over it are {_MISSING}. "
        f"The *{_BASELINE_ROW}* row is the best of the task's trivial baselines (all are "
        "listed under Baselines).",
    ]
    if bootstrap:
        lines += [
            "",
            "Paired bootstrap tests over the test examples (per seed, against the reference) "
            "are in the manifest as extra information; they measure test-set sampling, not "
            "seed noise, and set no mark.",
        ]
    return lines


def _ranks_table(table: _Table) -> list[str]:
    """Rank of every variant on every task with signal (1 = best), sorted by mean rank."""
    tasks = [c[0] for c in table.columns if c[2] is not None and table.counted[c[0]]]
    order = sorted(
        table.variants,
        key=lambda v: (table.mean_rank[v] is None, table.mean_rank[v] or 0.0, v),
    )
    body = []
    for variant in order:
        row = [_row_label(table, variant)]
        for task in tasks:
            r = table.ranks.get((variant, task))
            row.append(_MISSING if r is None else (f"{r:.0f}" if r == int(r) else f"{r:.1f}"))
        rank = table.mean_rank[variant]
        row.append(_MISSING if rank is None else f"{rank:.1f}")
        body.append(row)
    return _table(
        ["variant", *(_md(t) for t in tasks), "mean rank"], body, ["l"] + ["r"] * (len(tasks) + 1)
    )


def _signed(value: float | None) -> str:
    """A margin in σ with its sign (``+5.3``), ``∞`` kept, ``—`` for none."""
    if value is None:
        return _MISSING
    if math.isinf(value):
        return "+∞" if value > 0 else "−∞"
    return f"{value:+.1f}".replace("-", "−")


def _signal_row(signal: TaskSignal) -> list[str]:
    """One row of the signal-check table."""
    metric = signal.metric
    percent = " (%)" if metric_scale(metric) == 100.0 else ""
    ref = _MISSING
    if signal.reference_mean is not None:
        ref = format_metric(metric, signal.reference_mean)
        if signal.reference_std is not None:
            ref += f" ± {format_metric(metric, signal.reference_std)}"
        ref += f" (n={signal.reference_n})"
    baseline = _MISSING
    if signal.baseline_name is not None and signal.baseline_value is not None:
        baseline = f"{_md(signal.baseline_name)} {format_metric(metric, signal.baseline_value)}"
    best = _MISSING
    if signal.best_variant is not None:
        best = f"{_md(signal.best_variant)} {_signed(signal.best_margin)}"
    snr = _MISSING if signal.snr is None else f"{signal.snr:.2f}"
    controls = (
        "; ".join(
            f"{_md(name)} {_MISSING if mean is None else format_metric(metric, mean)}"
            for name, mean in signal.controls
        )
        or _MISSING
    )
    if signal.verdict == NONE:
        verdict = f"{_NO_SIGNAL}: {_md(signal.reason)}"
    elif signal.verdict == "weak":
        verdict = f"weak: {_md(signal.reason)}"
    else:
        verdict = f"**{signal.verdict}**"
    return [
        _md(signal.task),
        f"{_md(metric) or '?'}{percent}{_arrow(signal.higher_is_better)}",
        ref,
        baseline,
        _signed(signal.reference_margin),
        best,
        snr,
        controls,
        verdict,
    ]


def _signal_section(analysis: Analysis, profile: str) -> list[str]:
    """The signal check of a profile: a table, then how to read it."""
    signals = [s for (p, _), s in sorted(analysis.signals.items()) if p == profile]
    if not signals:
        return []
    reference = f"`{_md(analysis.reference(profile))}`"
    header = [
        "task",
        "metric",
        f"reference {reference}: mean ± std (n)",
        "strongest trivial baseline",
        "reference margin (σ)",
        "best variant (margin σ)",
        "SNR",
        "control (no token mixing)",
        "verdict",
    ]
    rows = [_signal_row(s) for s in signals]
    lines = [f"## Signal check: profile `{_md(profile)}`", ""]
    lines.append(
        "Does each task separate the variants at all? Computed from the run records before "
        "any ranking; only tasks whose verdict is not 'none' count below."
    )
    lines.append("")
    lines += _table(header, rows, ["l", "l", "r", "l", "r", "l", "r", "l", "l"])
    lines += [
        "",
        "σ = the reference's seed standard deviation (the within-variant seed std pooled "
        "over the variants with ≥ 2 seeds where the reference has 1 seed). Margins = "
        "(mean − strongest trivial baseline) / σ, signed so that positive = better than the "
        "baseline. SNR = standard deviation across the variant means ÷ pooled within-variant "
        "seed standard deviation, over the ok variants that mix tokens and are not dense at "
        "the task's length (signal-to-noise ratio after Heineman et al. 2025, \"Signal and "
        'Noise: A Framework for Reducing Uncertainty in Language Model Evaluation"); with '
        "one seed per variant, pure noise gives an SNR near 1.",
        "",
        f"Verdict: **none** ({_NO_SIGNAL}) when the reference does not beat the strongest "
        f"trivial baseline by ≥ {MARGIN_SIGMAS:g} σ, or when σ cannot be estimated (no seed "
        f"replicates); **weak** when it does but SNR < {SNR_THRESHOLD:g}; **signal** when "
        f"the margin is ≥ {MARGIN_SIGMAS:g} σ and SNR ≥ {SNR_THRESHOLD:g}. Tasks with "
        "verdict none stay in the results table, marked, but are not ranked, averaged or "
        "tested.",
    ]
    return lines


def _mean(values: Iterable[Any]) -> float | None:
    """Mean of the non-missing values, ``None`` if there are none."""
    series = pd.to_numeric(pd.Series(list(values), dtype="object"), errors="coerce").dropna()
    return None if series.empty else float(series.mean())


def _details_table(frame: pd.DataFrame, reference: str = DEFAULT_REFERENCE) -> list[str]:
    """One row per (task, variant): seeds, statuses, size, cost and device."""
    header = [
        "task",
        "variant",
        "seeds",
        "status",
        "params",
        "train time (s)",
        "tokens/s",
        "peak memory (MiB)",
        "device",
    ]
    body = []
    variants = _variant_order(frame["variant"], reference)
    for task in sorted(frame["task"].unique()):
        for variant in variants:
            sub = frame[(frame["task"] == task) & (frame["variant"] == variant)]
            if sub.empty:
                continue
            seeds = ", ".join(str(s) for s in sorted(sub["seed"].dropna().unique()))
            counts = sub["status"].value_counts()
            known = [s for s in STATUSES if s in counts]
            others = sorted(str(s) for s in counts.index if s not in STATUSES)
            status = ", ".join(f"{int(counts[s])} {_md(s)}" for s in [*known, *others])
            params = sorted({int(p) for p in sub["n_params"].dropna()})
            if not params:
                n_params = _MISSING
            elif len(params) == 1:
                n_params = f"{params[0]:,}"
            else:
                n_params = f"{params[0]:,}–{params[-1]:,}"
            ok = sub[sub["status"] == "ok"]
            train = _mean(ok["train_time_s"])
            tokens = _mean(ok["tokens_per_s"])
            memory = _mean(ok["peak_memory_bytes"])
            devices = "; ".join(sorted(_md(d) for d in sub["device"].dropna().unique()))
            body.append(
                [
                    _md(task),
                    _md(variant),
                    seeds or _MISSING,
                    status,
                    n_params,
                    _MISSING if train is None else f"{train:,.1f}",
                    _MISSING if tokens is None else f"{tokens:,.0f}",
                    _MISSING if memory is None else f"{memory / 2**20:,.1f}",
                    devices or _MISSING,
                ]
            )
    return _table(header, body, ["l", "l", "l", "l", "r", "r", "r", "r", "l"])


def _format_baseline(metric: str, value: Any) -> str:
    """A baseline value in the units of the task's metric."""
    number = _number(value)
    if number is None:
        return _md(value)
    return format_metric(metric, number)


def _baselines(analysis: Analysis, profile: str) -> list[str]:
    """Per task, every trivial baseline recorded (the strongest marked); [] if none are."""
    lines = []
    for (p, task), signal in sorted(analysis.signals.items()):
        if p != profile or not signal.baselines:
            continue
        metric = signal.metric
        percent = " (%)" if metric_scale(metric) == 100.0 else ""
        items = ", ".join(
            f"{_md(name)} {_format_baseline(metric, value)}"
            + (" (strongest)" if name == signal.baseline_name else "")
            for name, value in sorted(signal.baselines.items())
        )
        lines.append(f"- **{_md(task)}** ({_md(metric)}{percent}): {items}")
    return lines


def manifest(frame: pd.DataFrame, records: list[dict[str, Any]]) -> dict[str, Any]:
    """What reproduces the leaderboard, per profile: commits, configs, seeds, versions, hardware.

    Deterministic in the records (dates are the records' own ``finished_at``).
    """
    out: dict[str, Any] = {"profiles": {}}
    for profile in sorted(frame["profile"].dropna().unique()):
        mine = [r for r in records if _key_text(r.get("profile")) == profile]
        sub = frame[frame["profile"] == profile]
        versions: dict[str, list[str]] = {}
        for r in mine:
            for lib, version in sorted(_dict(r.get("versions")).items()):
                seen = versions.setdefault(str(lib), [])
                if str(version) not in seen:
                    seen.append(str(version))
        dates = sorted(str(r["finished_at"]) for r in mine if r.get("finished_at"))
        command = "snakemake --cores all"
        if profile != "default":
            command += f" --configfile config/{profile}.yaml"
        out["profiles"][profile] = {
            "records": len(sub),
            "git_commits": sorted(sub["git_commit"].fillna("unknown").unique().tolist()),
            "config_hashes": int(sub["config_hash"].fillna("unknown").nunique()),
            "seeds": sorted(int(s) for s in sub["seed"].dropna().unique()),
            "versions": {lib: sorted(v) for lib, v in versions.items()},
            "hardware": sorted(sub["device"].dropna().unique().tolist()),
            "date": {"first": dates[0], "last": dates[-1]} if dates else None,
            "command": command,
            "runs": [
                {
                    "task": row["task"],
                    "variant": row["variant"],
                    "seed": None if _is_missing(row["seed"]) else int(row["seed"]),
                    "status": row["status"],
                    "git_commit": row["git_commit"],
                    "config_hash": row["config_hash"],
                    "record": row["record_path"],
                }
                for row in sub.to_dict("records")
            ],
        }
    return out


def _reproducibility(frame: pd.DataFrame, records: list[dict[str, Any]]) -> list[str]:
    """Per profile, the manifest in short: commits, configs, seeds, versions, hardware, command."""
    lines = ["## Reproducibility", ""]
    lines.append(
        "Every cell comes from run records; `manifest.json` beside this file lists each run's "
        "record, git commit and config hash (the CSV has them too)."
    )
    lines.append("")
    info = manifest(frame, records)["profiles"]
    libs = ("python", "torch", "datasets", "sacrebleu", "entmax", "snakemake", "attnbench")
    for profile, m in info.items():
        warn = " ⚠ mixed commits" if len(m["git_commits"]) > 1 else ""
        versions = ", ".join(
            f"{lib} {'/'.join(m['versions'][lib])}" for lib in libs if lib in m["versions"]
        )
        date = m["date"]
        lines += [
            f"- profile `{_md(profile)}`: {m['records']} record(s), seeds "
            f"{', '.join(map(str, m['seeds'])) or _MISSING}, {m['config_hashes']} distinct "
            "job config(s)",
            f"  - git commit(s){warn}: " + ", ".join(f"`{_md(c)}`" for c in m["git_commits"]),
            f"  - versions: {_md(versions) or _MISSING}",
            f"  - hardware: {_md('; '.join(m['hardware'])) or _MISSING}",
            f"  - runs finished: {date['first']} – {date['last']}" if date else "  - runs: —",
            f"  - reproduce: `{m['command']}`",
        ]
    return lines


def _signatures(records: list[dict[str, Any]], profile: str) -> list[str]:
    """Per task: sacrebleu signatures of the test metrics, and which cross-attention ran."""
    found: dict[str, list[str]] = {}
    for record in records:
        if _key_text(record.get("profile")) != profile or record.get("status") != "ok":
            continue
        task = _key_text(record.get("task"))
        test = _dict(_dict(record.get("metrics")).get("test"))
        for key, value in sorted(test.items()):
            if "signature" in str(key) and isinstance(value, str):
                item = f"{_md(key)}: `{_one_line(value)}`"  # a list item: `|` stays as is
                if item not in found.setdefault(task, []):
                    found[task].append(item)
    # cross-attention (translation): which variants fell back to standard attention
    fallback: dict[str, list[str]] = {}
    for record in records:
        if _key_text(record.get("profile")) != profile or record.get("status") != "ok":
            continue
        cross = _dict(record.get("task_info")).get("cross_attention")
        if cross and cross != record.get("variant"):
            variants = fallback.setdefault(_key_text(record.get("task")), [])
            if str(record.get("variant")) not in variants:
                variants.append(str(record.get("variant")))
    for task, variants in fallback.items():
        found.setdefault(task, []).append(
            "cross-attention is standard attention (the variant declares none) for "
            + ", ".join(_md(v) for v in sorted(variants))
            + "; the others use their own"
        )
    return [f"- **{_md(task)}**: " + "; ".join(items) for task, items in sorted(found.items())]


def render_markdown(
    frame: pd.DataFrame,
    records: list[dict[str, Any]],
    skipped: Sequence[tuple[Path, str]],
    *,
    title: str = "attnbench leaderboard",
    tests: dict[tuple[Any, ...], dict[str, Any]] | None = None,
    analysis: Analysis | None = None,
) -> str:
    """The leaderboard Markdown (GFM) for a tidy ``frame`` and its ``records``.

    ``tests``: paired bootstraps from :func:`attnbench.significance.versus_baseline`
    (extra information: only mentioned). ``analysis``: :func:`attnbench.verdicts.analyse`
    of ``records`` (computed when not given); it decides signal, ranks and marks.

    Deterministic: the same inputs always give the same text (no dates).
    """
    analysis = analyse(records) if analysis is None else analysis
    notes = _Footnotes()
    profiles = sorted(frame["profile"].dropna().unique())
    n_files = len(frame) + len(skipped)
    lines = [f"# {_one_line(title)}", ""]
    profile_text = ", ".join(f"`{_md(p)}`" for p in profiles) or "none"
    lines.append(
        f"Built from {len(frame)} run record(s) out of {n_files} record file(s) "
        f"({len(skipped)} skipped); profile(s): {profile_text}."
    )
    lines.append("")

    for profile in profiles:
        signal = _signal_section(analysis, profile)
        if signal:
            lines += [*signal, ""]

    if len(frame):
        lines += _datasets_section(frame)
        lines.append("")

    for profile in profiles:
        sub = frame[frame["profile"] == profile]
        table = _build_table(sub, notes, analysis)
        lines += [f"## Results: profile `{_md(profile)}`", ""]
        lines.append(
            "Test value of each task's primary metric over the seeds with status ok: "
            "mean ± sample std (n=seeds). ↑/↓: higher/lower is better; best per task in "
            "**bold**. Non-ok seeds are counted beside the mean, never averaged in; "
            f"n/a = not applicable, {_MISSING} = no record. Family averages are means of the "
            "task columns (all of them needed); mean rank is over the tasks the variant ran."
        )
        lines.append("")
        lines += _main_table(table)
        lines += ["", *_legend(table, analysis, bool(tests))]
        definitions = notes.new_definitions()
        if definitions:
            lines += ["", *definitions]
        signatures = _signatures(records, profile)
        if signatures:
            lines += ["", f"### Task notes: profile `{_md(profile)}`", "", *signatures]
        lines += ["", f"### Ranks: profile `{_md(profile)}`", ""]
        lines.append(f"Tasks with signal only; dense cells are not ranked ({_MISSING}).")
        lines.append("")
        lines += _ranks_table(table)
        lines += ["", f"### Details: profile `{_md(profile)}`", ""]
        lines.append("Train time, tokens/s and peak memory are means over the ok seeds.")
        lines.append("")
        lines += _details_table(sub, table.reference)
        baselines = _baselines(analysis, profile)
        if baselines:
            lines += ["", f"### Baselines: profile `{_md(profile)}`", "", *baselines]
        lines.append("")

    if skipped:
        lines += ["## Skipped records", ""]
        lines.append("These record files were not used:")
        lines.append("")
        rows = [[f"`{_md(path)}`", _md(reason)] for path, reason in skipped]
        lines += _table(["file", "reason"], rows, ["l", "l"])
        lines.append("")

    if len(frame):
        lines += _reproducibility(frame, records)
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- build


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


def build_leaderboard(
    record_files: Sequence[str | Path],
    out_md: str | Path,
    out_csv: str | Path,
    *,
    title: str = "attnbench leaderboard",
    significance: bool = True,
    manifest_json: str | Path | None = None,
) -> LeaderboardResult:
    """Read run records and write the Markdown leaderboard and the tidy CSV (both atomically).

    The signal checks and the seed-level, Holm-corrected claims behind ▲/▼ are always
    computed (:func:`attnbench.verdicts.analyse`; records only). ``significance``: also
    run the paired bootstrap of every ok run against the reference's run of the same task
    and seed (:func:`attnbench.significance.versus_baseline`; needs the saved
    predictions; extra information in the manifest, no marks). ``manifest_json``: also
    write the reproducibility manifest there, with the signal checks (``signal``), the
    seed-level comparisons (``significance``) and the bootstraps (``paired_bootstrap``).

    Unreadable or incomplete record files, and second records of the same
    (profile, task, variant, seed), are not used but listed under *Skipped
    records*; the build never fails because of a bad record. The same file
    passed twice is read once.
    """
    paths: list[Path] = []
    seen_paths: set[str] = set()
    for path in record_files:
        norm = os.path.normpath(os.fspath(path))
        if norm not in seen_paths:
            seen_paths.add(norm)
            paths.append(Path(path))
    records, skipped = load_records(paths)
    records, duplicates = _dedupe(records)
    skipped = sorted([*skipped, *duplicates], key=lambda item: (str(item[0]), item[1]))

    frame = records_frame(records)
    order = {path: i for i, path in enumerate(frame["record_path"])}
    records = sorted(records, key=lambda r: order.get(str(r.get("_path")), len(order)))
    analysis = analyse(records)
    tests = versus_baseline(records) if significance else {}
    markdown = render_markdown(frame, records, skipped, title=title, tests=tests, analysis=analysis)

    atomic_write_text(out_md, markdown)
    atomic_write_text(out_csv, frame.to_csv(index=False, lineterminator="\n"))
    if manifest_json is not None:
        info = manifest(frame, records)
        info["alpha"] = analysis.alpha
        info["reference_variants"] = dict(sorted(analysis.references.items()))
        info["signal"] = [s.as_dict() for _, s in sorted(analysis.signals.items())]
        info["significance"] = [c.as_dict() for _, c in sorted(analysis.comparisons.items())]
        info["paired_bootstrap"] = [
            {"profile": k[0], "task": k[1], "variant": k[2], "seed": k[3], **v}
            for k, v in sorted(tests.items(), key=lambda kv: tuple(map(str, kv[0])))
        ]
        atomic_write_text(manifest_json, json.dumps(info, indent=1, default=str) + "\n")
    profiles = sorted(frame["profile"].dropna().unique().tolist())
    reference = analysis.reference(profiles[0]) if profiles else DEFAULT_REFERENCE
    controls = {v for p in profiles for v in analysis.controls.get(p, [])}
    return LeaderboardResult(
        n_records=len(frame),
        n_skipped=len(skipped),
        tasks=sorted(frame["task"].dropna().unique().tolist()),
        variants=_variant_order(frame["variant"].dropna(), reference, controls),
        frame=frame,
        profiles=sorted(frame["profile"].dropna().unique().tolist()),
        skipped=skipped,
        markdown=markdown,
        tests=tests,
        records=records,
        analysis=analysis,
    )
