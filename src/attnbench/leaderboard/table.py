"""The leaderboard's table model: what every cell of the main table holds, for any writer.

From the tidy frame (:mod:`attnbench.leaderboard.frame`) and the analysis
(:func:`attnbench.verdicts.analyse`), :func:`build_table` computes one profile's main
table: its columns (task, metric, direction), the mean ± std cell of every (variant,
column), best values, ranks, ▲/▼ marks, averages, the strongest trivial baseline and
the footnotes behind them. The Markdown page and the HTML page render the same
:class:`Table`, so they agree cell for cell and number footnotes alike.

Averages come from the records' metadata, never from lists of task names:

* a *published average* (``record["task_averages"]``: ``[label, size]`` pairs, e.g.
  ``["LRA", 5]``) is a column only when all ``size`` tasks that name it are present;
* a *family average* (``record["task_family"]``, labelled with the family's name as
  recorded, e.g. ``lra``) is a column when the family has at least two tasks, all with
  higher-is-better metrics; records without ``task_averages`` get only this one.

Both average only the tasks with signal (their label then says how many of how many).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from attnbench.records import STATUSES
from attnbench.verdicts import Analysis, TaskSignal

from .frame import (
    MISSING,
    direction,
    format_metric,
    is_missing,
    key_text,
    md_escape,
    metric_scale,
    variant_order,
)

__all__ = [
    "BASELINE_ROW",
    "CONTROL",
    "NO_SIGNAL",
    "Cell",
    "Column",
    "Footnotes",
    "Table",
    "aggregate_cell",
    "arrow",
    "average_columns",
    "build_table",
    "cell_parts",
    "column_header",
    "column_keys",
    "header_text",
    "is_best",
    "rank_values",
    "signal_rows",
    "task_averages",
]

NO_SIGNAL = "⚠ no signal"
CONTROL = "(control: no token mixing)"
BASELINE_ROW = "strongest trivial baseline"
_NOT_OK = tuple(status for status in STATUSES if status != "ok")
_NO_VALUE = "no value"  # an 'ok' record whose primary test metric is absent or not finite

Column = tuple[str, str, bool | None]  # (task, metric, higher_is_better)


class Footnotes:
    """Footnote numbers by reason text: identical reasons share one number."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self._flushed = 0

    def ref(self, reason: str) -> str:
        """The ``[^k]`` reference for ``reason``, numbering it on first use."""
        reason = md_escape(reason) or "no reason recorded"
        if reason not in self.numbers:
            self.numbers[reason] = len(self.numbers) + 1
        return f"[^{self.numbers[reason]}]"

    def new_definitions(self) -> list[str]:
        """Definitions of the footnotes numbered since the last call (each defined once)."""
        items = list(self.numbers.items())[self._flushed :]
        self._flushed = len(self.numbers)
        return [f"[^{number}]: {reason}" for reason, number in items]


@dataclass
class Cell:
    """Aggregate of one (task, metric, variant) cell."""

    mean: float | None = None
    text: str = MISSING
    bold_part: str = ""
    suffix: str = ""


def aggregate_cell(rows: list[dict[str, Any]], metric: str, notes: Footnotes) -> Cell:
    """Mean ± std over ok seeds, with every non-ok seed shown (never averaged in)."""
    if not rows:
        return Cell()
    values = [r["value"] for r in rows if r["status"] == "ok" and not is_missing(r["value"])]
    values = [v for v in values if math.isfinite(v)]
    problems: dict[str, list[str]] = {}
    for row in rows:
        status = row["status"]
        if status == "ok":
            if is_missing(row["value"]) or not math.isfinite(row["value"]):
                reason = (
                    f"status ok but no finite test {metric!r} recorded"
                    if metric
                    else "status ok but the record names no primary metric"
                )
                problems.setdefault(_NO_VALUE, []).append(reason)
            continue
        reason = row["reason"] if not is_missing(row["reason"]) else "no reason recorded"
        problems.setdefault(str(status), []).append(str(reason))

    order = [*_NOT_OK, _NO_VALUE]
    statuses = sorted(problems, key=lambda s: (order.index(s) if s in order else len(order), s))

    def refs(reasons: list[str]) -> str:
        return "".join(dict.fromkeys(notes.ref(reason) for reason in reasons))

    if not values:
        if len(statuses) == 1:
            status = statuses[0]
            return Cell(text=md_escape(status) + refs(problems[status]))
        parts = [f"{len(problems[s])} {md_escape(s)}{refs(problems[s])}" for s in statuses]
        return Cell(text=", ".join(parts))

    scaled = pd.Series(values, dtype="float64") * metric_scale(metric)
    mean = float(scaled.mean())
    if len(values) >= 2:
        body = f"{mean:.2f} ± {float(scaled.std(ddof=1)):.2f} (n={len(values)})"
    else:
        body = f"{mean:.2f} (n=1)"
    suffix = "".join(f", {len(problems[s])} {md_escape(s)}{refs(problems[s])}" for s in statuses)
    return Cell(mean=mean, text=body + suffix, bold_part=body, suffix=suffix)


def column_keys(frame: pd.DataFrame) -> list[Column]:
    """(task, metric, higher_is_better) columns of the main table, sorted by task name."""
    keys = {
        (row["task"], row["metric"], direction(row["higher_is_better"]))
        for row in frame[["task", "metric", "higher_is_better"]].to_dict("records")
    }
    return sorted(keys, key=lambda k: (k[0], k[1], {True: 0, False: 1, None: 2}[k[2]]))


def task_averages(
    records: Iterable[dict[str, Any]], profile: str | None = None
) -> dict[str, list[tuple[str, int]]]:
    """Per task, the published averages its records count toward (``task_averages``).

    ``(label, size)`` pairs in the order the records give them; a task whose records
    name none (older records, stand-ins) maps to ``[]``. ``profile``: only its records.
    Malformed entries are ignored.
    """
    out: dict[str, list[tuple[str, int]]] = {}
    for record in records:
        if profile is not None and key_text(record.get("profile")) != profile:
            continue
        mine = out.setdefault(key_text(record.get("task")), [])
        raw = record.get("task_averages")
        for item in raw if isinstance(raw, list | tuple) else ():
            if not isinstance(item, list | tuple) or len(item) != 2:
                continue
            label, size = item
            valid = isinstance(label, str) and label and type(size) is int and size > 0
            if valid and (label, size) not in mine:
                mine.append((label, size))
    return out


def average_columns(
    frame: pd.DataFrame, averages: Mapping[str, Sequence[tuple[str, int]]] | None = None
) -> list[tuple[str, list[str]]]:
    """(name, tasks) of each average that applies to this profile's tasks.

    First the published averages (``averages``: per task, from :func:`task_averages`)
    whose ``size`` tasks are all present, sorted by label; then the family averages
    (``task_family``) over the family's tasks present, for families with ≥ 2 tasks.
    Only tasks with higher-is-better metrics are averaged (a mean of accuracies and
    perplexities means nothing). Averages over offline stand-ins are labelled so. The
    name carries no task count: the table adds it once it knows which tasks have signal.
    """

    def label(name: str, rows: pd.DataFrame) -> str:
        stand_in = bool(rows["stand_in"].fillna(False).any())
        return f"{name}{' stand-ins' if stand_in else ''} avg"

    def higher(rows: pd.DataFrame) -> bool:
        return all(direction(v) is True for v in rows["higher_is_better"].tolist())

    out: list[tuple[str, list[str]]] = []
    first = frame.drop_duplicates("task")
    published: dict[tuple[str, int], list[str]] = {}
    for task in sorted(first["task"]):
        for name, size in (averages or {}).get(task, ()):
            published.setdefault((name, size), []).append(task)
    for (name, size), tasks in sorted(published.items()):
        rows = first[first["task"].isin(tasks)]
        if len(tasks) == size and higher(rows):
            out.append((label(name, rows), tasks))

    with_family = frame.dropna(subset=["task_family"]).drop_duplicates("task")
    for family in sorted(with_family["task_family"].unique()):
        rows = with_family[with_family["task_family"] == family]
        if len(rows) >= 2 and higher(rows):
            out.append((label(str(family), rows), sorted(rows["task"])))
    return out


def rank_values(means: dict[str, float], higher_is_better: bool) -> dict[str, float]:
    """Rank of each variant's mean (1 = best; ties share the average rank)."""
    ordered = sorted(means.values(), reverse=higher_is_better)
    ranks: dict[str, float] = {}
    for variant, value in means.items():
        positions = [i + 1 for i, v in enumerate(ordered) if v == value]
        ranks[variant] = sum(positions) / len(positions)
    return ranks


def signal_rows(analysis: Analysis, profile: str) -> list[TaskSignal]:
    """The signal checks of a profile's tasks, by task name (the signal table's rows)."""
    return [s for (p, _), s in sorted(analysis.signals.items()) if p == profile]


@dataclass
class Table:
    """The main table's content, shared by the Markdown and HTML renderers."""

    profile: str
    reference: str
    columns: list[Column]
    variants: list[str]
    controls: set[str]
    cells: dict[tuple[str, Column], Cell]
    best: dict[Column, float]
    marks: dict[tuple[str, str], str]  # (variant, task) -> ▲/▼
    families: list[tuple[str, list[str]]]  # (label, counted tasks) of every average column
    family_values: dict[tuple[str, str], float | None]  # (variant, label)
    ranks: dict[tuple[str, str], float]  # (variant, task)
    mean_rank: dict[str, float | None]
    counted: dict[str, bool]  # task -> has a verdict other than none
    header_notes: dict[Column, str]  # footnote reference of a no-signal column
    dense_notes: dict[tuple[str, str], str]  # (variant, task) -> footnote reference
    baseline_cells: dict[Column, str]  # the strongest trivial baseline per column
    n_tested: int = 0
    n_untestable: int = 0


def build_table(
    frame: pd.DataFrame,
    notes: Footnotes,
    analysis: Analysis,
    averages: Mapping[str, Sequence[tuple[str, int]]] | None = None,
) -> Table:
    """The main table of one profile (``frame`` holds that profile's rows only).

    ``averages``: the published averages per task (:func:`task_averages` of the
    profile's records); without them only family averages are shown. Footnotes are
    numbered here, in a fixed order (no-signal columns, then cells, then dense cells),
    so the Markdown and HTML renderers number them alike.
    """
    profile = str(frame["profile"].iloc[0]) if len(frame) else ""
    reference = analysis.reference(profile)
    controls = set(analysis.controls.get(profile, []))
    columns = column_keys(frame)
    variants = variant_order(frame["variant"], reference, controls)
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
        key = (row["task"], row["metric"], direction(row["higher_is_better"]), row["variant"])
        rows_by_key.setdefault(key, []).append(row)
    cells = {
        (variant, column): aggregate_cell(rows_by_key.get((*column, variant), []), column[1], notes)
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
                    f"tested, and family averages over it are {MISSING}."
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
            for v, r in rank_values(present, column[2]).items():  # type: ignore[arg-type]
                ranks[(v, column[0])] = r
    marks = {
        (variant, task): analysis.mark(profile, task, variant)
        for variant in variants
        for task, _, _ in columns
    }

    by_task = {c[0]: c for c in columns}
    families: list[tuple[str, list[str]]] = []
    seen: set[tuple[str, ...]] = set()
    for name, tasks in average_columns(frame, averages):
        kept = [t for t in tasks if counted.get(t)]
        if tuple(kept) in seen and kept:
            continue  # the same tasks as an average already shown
        seen.add(tuple(kept))
        if len(kept) == len(tasks):
            families.append((f"{name} ({len(tasks)})", kept))
        else:
            families.append((f"{name} ({len(kept)} of {len(tasks)} with signal)", kept))
    families.sort(key=lambda item: item[0].casefold())  # stable: published first on a tie
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
        baseline_cells[column] = MISSING if value is None else format_metric(column[1], value)
    return Table(
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


def is_best(table: Table, variant: str, column: Column) -> bool:
    """Whether the cell holds the best ranked mean of its column."""
    cell = table.cells[(variant, column)]
    return (
        cell.mean is not None
        and column in table.best
        and (variant, column[0]) in table.ranks
        and math.isclose(cell.mean, table.best[column], rel_tol=1e-12, abs_tol=1e-12)
    )


def arrow(higher_is_better: Any) -> str:
    """↑ / ↓ for a known direction, empty otherwise."""
    if higher_is_better is True:
        return " ↑"
    if higher_is_better is False:
        return " ↓"
    return ""


def column_header(column: Column) -> str:
    """``task metric (%) ↑`` for a column."""
    task, metric, hib = column
    percent = " (%)" if metric_scale(metric) == 100.0 else ""
    return f"{md_escape(task)} {md_escape(metric) or '?'}{percent}{arrow(hib)}"


def header_text(table: Table, column: Column) -> str:
    """The column header, with ``⚠ no signal`` and its footnote on a no-signal task."""
    note = table.header_notes.get(column)
    return column_header(column) + (f" {NO_SIGNAL}{note}" if note else "")


def cell_parts(table: Table, variant: str, column: Column) -> tuple[str, str, str, bool]:
    """(value text, mark, suffix, best) of one cell: the renderers add their own markup.

    The value text is ``mean ± std (n=k)`` (or the cell's status text when it has no
    mean); the mark is `` ▲``/`` ▼`` or empty; the suffix holds non-ok seed counts and
    the dense-attention note.
    """
    cell = table.cells[(variant, column)]
    dense = table.dense_notes.get((variant, column[0]))
    dense_text = f" (dense){dense}" if dense else ""
    if cell.mean is None:
        return cell.text, "", dense_text if cell.text != MISSING else "", False
    mark = table.marks.get((variant, column[0]), "")
    return (
        cell.bold_part,
        f" {mark}" if mark else "",
        cell.suffix + dense_text,
        is_best(table, variant, column),
    )
