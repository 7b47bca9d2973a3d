"""The leaderboard page in Markdown (GFM): signal check, results, ranks, details, provenance.

:func:`render_markdown` writes the whole page from the tidy frame, the records and the
analysis; the main table's content comes from :func:`attnbench.leaderboard.table.build_table`
(shared with the HTML page), the reproducibility section from
:mod:`attnbench.leaderboard.reproducibility`. Deterministic: the same inputs give the same text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.capacity import capacity_markdown
from attnbench.records import STATUSES
from attnbench.significance import PREDICTION, WELCH
from attnbench.verdicts import MARGIN_SIGMAS, NONE, SNR_THRESHOLD, Analysis, TaskSignal, analyse

from .frame import (
    MISSING,
    as_dict,
    format_metric,
    is_missing,
    key_text,
    md_escape,
    metric_scale,
    number,
    one_line,
    variant_order,
)
from .reproducibility import reproducibility_section
from .table import (
    BASELINE_ROW,
    CONTROL,
    NO_SIGNAL,
    Footnotes,
    Table,
    arrow,
    build_table,
    cell_parts,
    header_text,
    signal_rows,
    task_averages,
)

__all__ = ["render_markdown"]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: Sequence[str]) -> list[str]:
    """GFM table lines; ``align`` holds ``"l"`` or ``"r"`` per column."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return lines


def _dataset_kind(source: Any, stand_in: Any) -> str:
    """Real benchmark, offline stand-in or generated data (from the record's dataset block)."""
    if stand_in is True:
        return "offline stand-in"
    if source == "generated":
        return "generated"
    if stand_in is False or (not is_missing(source) and source):
        return "real benchmark"
    return "unknown provenance"


def _datasets_section(frame: pd.DataFrame) -> list[str]:
    """One line per task (more if the task's dataset differs between records)."""
    columns = ("dataset", "dataset_source", "stand_in", "dataset_description")
    lines = ["## Datasets", ""]
    for task in sorted(frame["task"].unique()):
        seen: dict[tuple[Any, ...], list[str]] = {}
        for row in frame[frame["task"] == task].to_dict("records"):
            key = tuple(None if is_missing(row[c]) else row[c] for c in columns)
            profiles = seen.setdefault(key, [])
            if row["profile"] not in profiles:
                profiles.append(row["profile"])
        for (name, source, stand_in, description), profiles in seen.items():
            line = f"- **{md_escape(task)}**: "
            line += f"`{md_escape(name)}`" if name else "unnamed dataset"
            if source:
                line += f" (source: {md_escape(source)})"
            line += f" — {_dataset_kind(source, None if stand_in is None else bool(stand_in))}."
            if description:
                line += f" {md_escape(description)}"
            if len(seen) > 1:
                line += " (profile " + ", ".join(f"`{md_escape(p)}`" for p in profiles) + ")"
            lines.append(line)
    return lines


def _row_label(table: Table, variant: str) -> str:
    """The variant's name; the reference in code style, a control labelled as such."""
    name = f"`{md_escape(variant)}`" if variant == table.reference else md_escape(variant)
    return f"{name} {CONTROL}" if variant in table.controls else name


def _main_table(table: Table) -> list[str]:
    """Variants × tasks, mean ± std of the primary test metric, best per task in bold.

    Below the variants, the strongest trivial baseline of every task.
    """
    header = ["variant", *(header_text(table, c) for c in table.columns)]
    header += [f"{md_escape(label)} ↑" for label, _ in table.families]
    header.append("mean rank ↓")
    body = []
    for variant in table.variants:
        row = [_row_label(table, variant)]
        for column in table.columns:
            text, mark, suffix, best = cell_parts(table, variant, column)
            row.append(f"**{text}**{mark}{suffix}" if best else f"{text}{mark}{suffix}")
        for label, _ in table.families:
            value = table.family_values[(variant, label)]
            row.append(MISSING if value is None else f"{value:.2f}")
        rank = table.mean_rank[variant]
        row.append(MISSING if rank is None else f"{rank:.1f}")
        body.append(row)
    baseline = [f"*{BASELINE_ROW}*", *(table.baseline_cells[c] for c in table.columns)]
    body.append(baseline + [""] * (len(table.families) + 1))
    n = len(table.columns) + len(table.families) + 1
    return _table(header, body, ["l"] + ["r"] * n)


def _legend(table: Table, analysis: Analysis, bootstrap: bool) -> list[str]:
    """What the marks, ranks and averages mean: the test, α and the correction."""
    reference = f"`{md_escape(table.reference)}`"
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
        f"marked {NO_SIGNAL} and every dense cell. No mark means no claim, not "
        "'equal': with few seeds only large differences can be shown.",
        "",
        f"Ranks, mean rank, best-in-**bold** and family averages use only tasks with signal "
        f"(the signal check above); a task marked {NO_SIGNAL} is shown but left out, with "
        "its reason in a footnote. '(dense)' marks a cell whose pattern is dense attention "
        f"at the task's length: not ranked, not tested, family averages over it are {MISSING}. "
        f"The *{BASELINE_ROW}* row is the best of the task's trivial baselines (all are "
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


def _ranks_table(table: Table) -> list[str]:
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
            row.append(MISSING if r is None else (f"{r:.0f}" if r == int(r) else f"{r:.1f}"))
        rank = table.mean_rank[variant]
        row.append(MISSING if rank is None else f"{rank:.1f}")
        body.append(row)
    return _table(
        ["variant", *(md_escape(t) for t in tasks), "mean rank"],
        body,
        ["l"] + ["r"] * (len(tasks) + 1),
    )


def _signed(value: float | None) -> str:
    """A margin in σ with its sign (``+5.3``), ``∞`` kept, ``—`` for none."""
    if value is None:
        return MISSING
    if math.isinf(value):
        return "+∞" if value > 0 else "−∞"
    return f"{value:+.1f}".replace("-", "−")


def _signal_row(signal: TaskSignal) -> list[str]:
    """One row of the signal-check table."""
    metric = signal.metric
    percent = " (%)" if metric_scale(metric) == 100.0 else ""
    ref = MISSING
    if signal.reference_mean is not None:
        ref = format_metric(metric, signal.reference_mean)
        if signal.reference_std is not None:
            ref += f" ± {format_metric(metric, signal.reference_std)}"
        ref += f" (n={signal.reference_n})"
    baseline = MISSING
    if signal.baseline_name is not None and signal.baseline_value is not None:
        baseline = (
            f"{md_escape(signal.baseline_name)} {format_metric(metric, signal.baseline_value)}"
        )
    best = MISSING
    if signal.best_variant is not None:
        best = f"{md_escape(signal.best_variant)} {_signed(signal.best_margin)}"
    snr = MISSING if signal.snr is None else f"{signal.snr:.2f}"
    # controls without a result (n/a under a setting, say) only where none has one
    shown = [item for item in signal.controls if item[1] is not None] or signal.controls
    controls = (
        "; ".join(
            f"{md_escape(name)} {MISSING if mean is None else format_metric(metric, mean)}"
            for name, mean in shown
        )
        or MISSING
    )
    if signal.verdict == NONE:
        verdict = f"{NO_SIGNAL}: {md_escape(signal.reason)}"
    elif signal.verdict == "weak":
        verdict = f"weak: {md_escape(signal.reason)}"
    else:
        verdict = f"**{signal.verdict}**"
    return [
        md_escape(signal.task),
        f"{md_escape(metric) or '?'}{percent}{arrow(signal.higher_is_better)}",
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
    signals = signal_rows(analysis, profile)
    if not signals:
        return []
    reference = f"`{md_escape(analysis.reference(profile))}`"
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
    lines = [f"## Signal check: profile `{md_escape(profile)}`", ""]
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
        f"Verdict: **none** ({NO_SIGNAL}) when the reference does not beat the strongest "
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


def _details_table(frame: pd.DataFrame, reference: str) -> list[str]:
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
    variants = variant_order(frame["variant"], reference)
    for task in sorted(frame["task"].unique()):
        for variant in variants:
            sub = frame[(frame["task"] == task) & (frame["variant"] == variant)]
            if sub.empty:
                continue
            seeds = ", ".join(str(s) for s in sorted(sub["seed"].dropna().unique()))
            counts = sub["status"].value_counts()
            known = [s for s in STATUSES if s in counts]
            others = sorted(str(s) for s in counts.index if s not in STATUSES)
            status = ", ".join(f"{int(counts[s])} {md_escape(s)}" for s in [*known, *others])
            params = sorted({int(p) for p in sub["n_params"].dropna()})
            if not params:
                n_params = MISSING
            elif len(params) == 1:
                n_params = f"{params[0]:,}"
            else:
                n_params = f"{params[0]:,}–{params[-1]:,}"
            ok = sub[sub["status"] == "ok"]
            train = _mean(ok["train_time_s"])
            tokens = _mean(ok["tokens_per_s"])
            memory = _mean(ok["peak_memory_bytes"])
            devices = "; ".join(sorted(md_escape(d) for d in sub["device"].dropna().unique()))
            body.append(
                [
                    md_escape(task),
                    md_escape(variant),
                    seeds or MISSING,
                    status,
                    n_params,
                    MISSING if train is None else f"{train:,.1f}",
                    MISSING if tokens is None else f"{tokens:,.0f}",
                    MISSING if memory is None else f"{memory / 2**20:,.1f}",
                    devices or MISSING,
                ]
            )
    return _table(header, body, ["l", "l", "l", "l", "r", "r", "r", "r", "l"])


def _format_baseline(metric: str, value: Any) -> str:
    """A baseline value in the units of the task's metric."""
    figure = number(value)
    if figure is None:
        return md_escape(value)
    return format_metric(metric, figure)


def _baselines(analysis: Analysis, profile: str) -> list[str]:
    """Per task, every trivial baseline recorded (the strongest marked); [] if none are."""
    lines = []
    for (p, task), signal in sorted(analysis.signals.items()):
        if p != profile or not signal.baselines:
            continue
        metric = signal.metric
        percent = " (%)" if metric_scale(metric) == 100.0 else ""
        items = ", ".join(
            f"{md_escape(name)} {_format_baseline(metric, value)}"
            + (" (strongest)" if name == signal.baseline_name else "")
            for name, value in sorted(signal.baselines.items())
        )
        lines.append(f"- **{md_escape(task)}** ({md_escape(metric)}{percent}): {items}")
    return lines


def _signatures(records: list[dict[str, Any]], profile: str) -> list[str]:
    """Per task: sacrebleu signatures of the test metrics, and which cross-attention ran."""
    found: dict[str, list[str]] = {}
    for record in records:
        if key_text(record.get("profile")) != profile or record.get("status") != "ok":
            continue
        task = key_text(record.get("task"))
        test = as_dict(as_dict(record.get("metrics")).get("test"))
        for key, value in sorted(test.items()):
            if "signature" in str(key) and isinstance(value, str):
                item = f"{md_escape(key)}: `{one_line(value)}`"  # a list item: `|` stays as is
                if item not in found.setdefault(task, []):
                    found[task].append(item)
    # cross-attention (translation): which variants fell back to standard attention
    fallback: dict[str, list[str]] = {}
    for record in records:
        if key_text(record.get("profile")) != profile or record.get("status") != "ok":
            continue
        cross = as_dict(record.get("task_info")).get("cross_attention")
        if cross and cross != record.get("variant"):
            variants = fallback.setdefault(key_text(record.get("task")), [])
            if str(record.get("variant")) not in variants:
                variants.append(str(record.get("variant")))
    for task, variants in fallback.items():
        found.setdefault(task, []).append(
            "cross-attention is standard attention (the variant declares none) for "
            + ", ".join(md_escape(v) for v in sorted(variants))
            + "; the others use their own"
        )
    return [
        f"- **{md_escape(task)}**: " + "; ".join(items) for task, items in sorted(found.items())
    ]


def _tuning_lines(records: list[dict[str, Any]], profile: str) -> list[str]:
    """One line per task of ``profile`` whose runs were tuned on a grid
    (:mod:`attnbench.tuning`): the grid, the rule, and how often each point won."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if str(r.get("profile")) == profile and isinstance(r.get("tuning"), dict):
            by_task.setdefault(str(r.get("task")), []).append(r)
    lines = []
    for task, runs in sorted(by_task.items()):
        grid = runs[0]["tuning"].get("grid") or {}
        text = " × ".join(
            f"{key} ∈ {{{', '.join(f'{v:g}' for v in values)}}}" for key, values in grid.items()
        )
        wins: dict[str, int] = {}
        for r in runs:
            selected = r["tuning"].get("selected")
            label = ", ".join(f"{k}={v:g}" for k, v in selected.items()) if selected else "none"
            wins[label] = wins.get(label, 0) + 1
        won = "; ".join(f"{label}: {n}" for label, n in sorted(wins.items()))
        rule = md_escape(str(runs[0]["tuning"].get("selection", "best validation score")))
        lines.append(
            f"- **{md_escape(task)}**: every variant trained at each point of {text}; "
            f"reported: the {rule}. Runs selecting each point: {won}."
        )
    return lines


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
    notes = Footnotes()
    profiles = sorted(frame["profile"].dropna().unique())
    n_files = len(frame) + len(skipped)
    lines = [f"# {one_line(title)}", ""]
    profile_text = ", ".join(f"`{md_escape(p)}`" for p in profiles) or "none"
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
        table = build_table(sub, notes, analysis, task_averages(records, profile))
        lines += [f"## Results: profile `{md_escape(profile)}`", ""]
        lines.append(
            "Test value of each task's primary metric over the seeds with status ok: "
            "mean ± sample std (n=seeds). ↑/↓: higher/lower is better; best per task in "
            "**bold**. Non-ok seeds are counted beside the mean, never averaged in; "
            f"n/a = not applicable, {MISSING} = no record. Family averages are means of the "
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
            lines += ["", f"### Task notes: profile `{md_escape(profile)}`", "", *signatures]
        lines += ["", f"### Ranks: profile `{md_escape(profile)}`", ""]
        lines.append(f"Tasks with signal only; dense cells are not ranked ({MISSING}).")
        lines.append("")
        lines += _ranks_table(table)
        lines += ["", f"### Details: profile `{md_escape(profile)}`", ""]
        lines.append("Train time, tokens/s and peak memory are means over the ok seeds.")
        lines.append("")
        lines += _details_table(sub, table.reference)
        baselines = _baselines(analysis, profile)
        if baselines:
            lines += ["", f"### Baselines: profile `{md_escape(profile)}`", "", *baselines]
        grids = _tuning_lines(records, profile)
        if grids:
            lines += ["", f"### Tuning: profile `{md_escape(profile)}`", "", *grids]
        capacity = capacity_markdown(records, profile)
        if capacity:
            lines += ["", capacity.replace("## Diagnostics", "### Diagnostics").rstrip()]
        lines.append("")

    if skipped:
        lines += ["## Skipped records", ""]
        lines.append("These record files were not used:")
        lines.append("")
        rows = [[f"`{md_escape(path)}`", md_escape(reason)] for path, reason in skipped]
        lines += _table(["file", "reason"], rows, ["l", "l"])
        lines.append("")

    if len(frame):
        lines += reproducibility_section(frame, records)
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
