"""Capacity views of the diagnostics family: accuracy as the task gets harder, and
accuracy against the state a model keeps (Zoology's figure 2, Arora et al. 2023).

A diagnostics run records its task's *capacity axes* (``task_info.capacity``: pairs,
length, vocabulary ...) and, when its test split mixes several settings, the accuracy of
each (``task_info.evaluation.by_setting``). :func:`capacity_points` turns records into
one point per (run, setting); the figures (:func:`attnbench.figures.plot_capacity`) and
the Markdown table (:func:`capacity_markdown`) read only those points,
so any task of the family that records them gets the views, and a profile that trains
several widths or settings as separate runs gets one point per run.

The *state* of a point is what the model keeps to read the next token at the setting's
length: the recurrent state (``state_bytes``) of a variant that declares one, else the
key–value cache of all layers (``kv_cache_bytes_per_token`` × length); None when the
record has neither.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

FAMILY = "diagnostics"


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def state_bytes(record: dict[str, Any], length: float | None) -> float | None:
    """Bytes of state at ``length`` tokens (module docstring), or None."""
    state = _number(record.get("state_bytes"))
    if state is not None:
        return state
    per_token = _number(record.get("kv_cache_bytes_per_token"))
    if per_token is not None and length is not None:
        return per_token * length
    return None


def capacity_points(records: Iterable[dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    """One point per (ok run of a diagnostics task, evaluated setting) of ``profile``:
    ``kind`` (the registered task: runs of several settings of one task group together),
    ``task``, ``variant``, ``series`` (the variant, with its width when a kind has runs of
    several widths), ``seed``, ``d_model``, ``accuracy``, ``state_bytes``,
    ``mixes_tokens`` and the setting's axis values under ``axes``."""
    points = []
    for r in records:
        if r.get("status") != "ok" or str(r.get("profile")) != profile:
            continue
        if r.get("task_family") != FAMILY:
            continue
        info = r.get("task_info") or {}
        settings = (info.get("evaluation") or {}).get("by_setting")
        if not settings:  # one setting: the task's own coordinates and the test accuracy
            capacity = info.get("capacity") or {}
            accuracy = ((r.get("metrics") or {}).get("test") or {}).get("accuracy")
            settings = [{**capacity, "accuracy": accuracy}]
        for setting in settings:
            accuracy = _number(setting.get("accuracy"))
            if accuracy is None:
                continue
            axes = {
                k: float(v)
                for k, v in setting.items()
                if k not in ("accuracy", "n_scored") and _number(v) is not None
            }
            points.append(
                {
                    "kind": str(r.get("task_kind") or r.get("task")),
                    "task": str(r.get("task")),
                    "variant": str(r.get("variant")),
                    "seed": r.get("seed"),
                    "d_model": ((r.get("config") or {}).get("model") or {}).get("d_model"),
                    "accuracy": accuracy,
                    "state_bytes": state_bytes(r, axes.get("length")),
                    "mixes_tokens": (r.get("capabilities") or {}).get("mixes_tokens") is not False,
                    "axes": axes,
                }
            )
    widths: dict[str, set[Any]] = {}
    for p in points:
        widths.setdefault(p["kind"], set()).add(p["d_model"])
    for p in points:
        several = len(widths[p["kind"]]) > 1
        p["series"] = f"{p['variant']} (d {p['d_model']})" if several else p["variant"]
    return points


def _mode(values: list[float]) -> float:
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return min(counts, key=lambda v: (-counts[v], v))


def axis_curves(
    points: list[dict[str, Any]],
) -> dict[str, dict[str, list[tuple[float, float, int]]]]:
    """For each axis along which the points vary: {series: [(value, mean accuracy, runs)]}
    over the points whose *other* axes sit at their most common values (a one-factor
    sweep around the baseline setting, as MAD's; a single multi-setting run's curve).
    Axes whose curve would have fewer than two values are left out."""
    axes = sorted({a for p in points for a in p["axes"]})
    out: dict[str, dict[str, list[tuple[float, float, int]]]] = {}
    for axis in axes:
        others = [a for a in axes if a != axis]
        base = {a: _mode([p["axes"][a] for p in points if a in p["axes"]]) for a in others}
        chosen = [
            p
            for p in points
            if axis in p["axes"] and all(p["axes"].get(a) == base[a] for a in others)
        ]
        sums: dict[tuple[str, float], list[float]] = {}
        for p in chosen:
            sums.setdefault((p["series"], p["axes"][axis]), []).append(p["accuracy"])
        if len({x for _, x in sums}) < 2:
            continue
        curves: dict[str, list[tuple[float, float, int]]] = {}
        for (series, x), values in sorted(sums.items()):
            curves.setdefault(series, []).append((x, sum(values) / len(values), len(values)))
        out[axis] = curves
    return out


def settings_table(
    points: list[dict[str, Any]],
) -> tuple[list[str], dict[str, dict[str, float]], dict[str, float]]:
    """Setting labels (the axes that vary, e.g. ``pairs 8, length 128``), {series: {label:
    mean accuracy}} and {series: largest state in bytes}."""
    varying = sorted(
        a
        for a in {a for p in points for a in p["axes"]}
        if len({p["axes"].get(a) for p in points}) > 1
    )

    def label(p: dict[str, Any]) -> tuple[tuple[float, ...], str]:
        key = tuple(p["axes"].get(a, math.nan) for a in varying)
        text = ", ".join(f"{a} {p['axes'][a]:g}" for a in varying if a in p["axes"]) or "—"
        return key, text

    labels = sorted({label(p) for p in points})
    sums: dict[tuple[str, str], list[float]] = {}
    state: dict[str, float] = {}
    for p in points:
        sums.setdefault((p["series"], label(p)[1]), []).append(p["accuracy"])
        if p["state_bytes"]:
            state[p["series"]] = max(state.get(p["series"], 0.0), p["state_bytes"])
    cells: dict[str, dict[str, float]] = {}
    for (series, text), values in sums.items():
        cells.setdefault(series, {})[text] = sum(values) / len(values)
    return [text for _, text in labels], cells, state


def capacity_markdown(records: list[dict[str, Any]], profile: str) -> str:
    """A Markdown section per diagnostics task of ``profile``: test accuracy (%) of every
    variant at each setting (mean over runs), their mean (MAD's task score: the mean over
    its settings) and the largest state; empty if the profile has no such task."""
    points = capacity_points(records, profile)
    if not points:
        return ""
    lines = ["## Diagnostics: capacity", ""]
    lines.append(
        "Test accuracy (%) at each setting, mean over runs; *mean* is the mean over the "
        "settings (MAD's task score), shown when a row has them all (figures: "
        "`capacity_*`). *state* is what the model keeps at the longest setting: the "
        "recurrent state, or the key–value cache of all layers."
    )
    lines.append("")
    for kind in sorted({p["kind"] for p in points}):
        labels, cells, state = settings_table([p for p in points if p["kind"] == kind])
        lines.append(f"**{kind}**")
        lines.append("")
        header = ["variant", *labels, "mean", "state (KiB)"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for series in sorted(cells):
            row = cells[series]
            values = [f"{100 * row[t]:.1f}" if t in row else "–" for t in labels]
            full = all(t in row for t in labels)
            mean = f"{100 * sum(row.values()) / len(row):.1f}" if full and len(labels) > 1 else "–"
            size = state.get(series)
            lines.append(
                f"| {series} | "
                + " | ".join([*values, mean, f"{size / 1024:.1f}" if size else "–"])
                + " |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
