"""The leaderboard's figures, built from run records alone (PNG and SVG, deterministic SVG).

* ``quality_cost_<profile>``: LRA's figure 3 — x = training throughput relative to the
  reference variant, y = mean score over the accuracy-type tasks, bubble area = peak memory;
* ``task_<profile>_<task>``: per-task bars, mean ± seed std (error bars) with the seed
  count, the reference highlighted and the strongest trivial baseline as a line;
* ``seeds_<profile>_<task>``: seed spread, every seed's test value per variant, the
  reference's seeds highlighted, the strongest trivial baseline as a horizontal line;
* ``curves_<profile>_<task>``: validation metric against training step;
* ``attention_<profile>_<task>``: per variant and layer, attention entropy, sparsity
  (share of exact zeros) and head diversity (mean pairwise Jensen–Shannon distance);
* ``attention_maps_<profile>_<task>``: attention maps of every variant for one fixed
  input, where the runs saved them;
* ``head_ablation_<...>``: the head-ablation heat map (Michel et al. 2019) when present.

:func:`make_plots` draws them all; the HTML page (:mod:`attnbench.report`) shows them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .capacity import axis_curves, capacity_points
from .leaderboard.frame import metric_scale, variant_order
from .records import atomic_write_bytes
from .significance import reference_variant
from .verdicts import NONE, Analysis, analyse

__all__ = [
    "FORMATS",
    "make_plots",
    "plot_attention_analysis",
    "plot_attention_maps",
    "plot_capacity",
    "plot_head_ablation",
    "plot_quality_cost",
    "plot_seed_spread",
    "plot_task_bars",
    "plot_training_curves",
    "slug",
]

FORMATS = ("png", "svg")


def slug(text: str) -> str:
    """``text`` as a file-name and anchor part: runs of other characters become ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "attnbench", "font.size": 8})
    return plt


def _save(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    """Save a figure as PNG and SVG atomically (deterministic SVG: no date metadata)."""
    import io

    paths = []
    for fmt in FORMATS:
        buffer = io.BytesIO()
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buffer, format=fmt, dpi=110, bbox_inches="tight", metadata=metadata)
        path = out_dir / f"{stem}.{fmt}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    _pyplot().close(fig)
    return paths


def _ok(records: Iterable[dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok" and str(r.get("profile")) == profile]


def _reference(records: Iterable[dict[str, Any]], profile: str) -> str:
    """The profile's reference variant (``reference_variant`` of its records)."""
    return reference_variant([r for r in records if str(r.get("profile")) == profile])


def _test_value(record: dict[str, Any]) -> float | None:
    name = str((record.get("metric") or {}).get("name") or "")
    value = ((record.get("metrics") or {}).get("test") or {}).get(name)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value) * metric_scale(name)
    return None


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------
def plot_quality_cost(records: list[dict[str, Any]], profile: str, out_dir: Path) -> Path | None:
    """LRA figure 3: speed (x) against average score (y); bubble area = peak memory."""
    ok = _ok(records, profile)
    reference = _reference(records, profile)
    tasks = sorted(
        {str(r["task"]) for r in ok if (r.get("metric") or {}).get("higher_is_better") is True}
    )
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in ok:
        by.setdefault((str(r["variant"]), str(r["task"])), []).append(r)
    if not tasks or not any(v == reference for v, _ in by):
        return None
    points = []
    for variant in variant_order((v for v, _ in by), reference):
        scores, speed, memory = [], [], []
        for task in tasks:
            mine, base = by.get((variant, task)), by.get((reference, task))
            if not mine or not base:
                break
            values = [v for v in map(_test_value, mine) if v is not None]
            if not values:
                break
            scores.append(float(np.mean(values)))
            speed.append(
                np.mean([r.get("tokens_per_s") or np.nan for r in mine])
                / np.mean([r.get("tokens_per_s") or np.nan for r in base])
            )
            memory.append(np.mean([r.get("peak_memory_bytes") or np.nan for r in mine]))
        else:
            if all(math.isfinite(s) for s in speed):
                points.append(
                    (variant, float(np.exp(np.mean(np.log(speed)))), np.mean(scores), memory)
                )
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    mem = np.array([np.nanmean(p[3]) for p in points], dtype=float)
    area = 600 * mem / np.nanmax(mem) if np.isfinite(mem).any() else np.full(len(points), 60.0)
    for (variant, x, y, _), a in zip(points, area, strict=True):
        color = "black" if variant == reference else None
        ax.scatter([x], [y], s=float(a), alpha=0.45, color=color, edgecolors="k", linewidths=0.5)
        ax.annotate(variant, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", lw=0.5, ls=":")
    ax.set_xlabel(
        f"training throughput relative to {reference} (tokens/s, geometric mean over tasks)"
    )
    ax.set_ylabel(f"mean test score over {len(tasks)} task(s) ({', '.join(tasks)})")
    ax.set_title(f"Quality vs speed vs memory (bubble area = peak memory), profile {profile}")
    return _save(fig, out_dir, f"quality_cost_{slug(profile)}")[0]


def _task_panels(
    analysis: Analysis, profile: str
) -> Iterator[tuple[str, dict[str, list[float]], list[str], str, float | None, str | None]]:
    """Per task of ``profile`` with seed values: (task, scaled per-seed values by variant,
    variants in plotting order, metric, strongest baseline scaled, its name)."""
    reference = analysis.reference(profile)
    controls = set(analysis.controls.get(profile, []))
    for task in sorted(t for p, t in analysis.signals if p == profile):
        signal = analysis.signals[(profile, task)]
        scale = metric_scale(signal.metric)
        values = {
            variant: [value * scale for _, value in pairs]
            for (p, t, variant), pairs in sorted(analysis.seeds.items())
            if p == profile and t == task and pairs
        }
        if not values:
            continue
        baseline = None if signal.baseline_value is None else signal.baseline_value * scale
        variants = variant_order(values, reference, controls)
        yield task, values, variants, signal.metric, baseline, signal.baseline_name


def _variant_label(analysis: Analysis, profile: str, task: str, variant: str) -> str:
    """A variant's axis label: ``(dense)`` where its pattern is dense at the task's length."""
    dense = (profile, task, variant) in analysis.degenerate
    control = variant in analysis.controls.get(profile, [])
    return variant + (" (dense)" if dense else "") + (" (control)" if control else "")


def _task_title(analysis: Analysis, profile: str, task: str) -> str:
    """Figure title: task, profile, and the signal verdict."""
    signal = analysis.signals.get((profile, task))
    verdict = ""
    if signal is not None:
        verdict = " — ⚠ no signal" if signal.verdict == NONE else f" — {signal.verdict}"
    return f"{task} — profile {profile}{verdict}"


def plot_task_bars(
    records: list[dict[str, Any]],
    profile: str,
    out_dir: Path,
    analysis: Analysis | None = None,
) -> list[Path]:
    """One bar chart per task: mean with seed-std error bars (n per bar), reference in black.

    The strongest trivial baseline is a dashed vertical line; controls are hatched.
    """
    plt = _pyplot()
    analysis = analyse(records) if analysis is None else analysis
    reference = analysis.reference(profile)
    controls = set(analysis.controls.get(profile, []))
    out = []
    for task, values, variants, metric, baseline, baseline_name in _task_panels(analysis, profile):
        means = [float(np.mean(values[v])) for v in variants]
        stds = [float(np.std(values[v], ddof=1)) if len(values[v]) > 1 else 0.0 for v in variants]
        fig, ax = plt.subplots(figsize=(6.5, 0.7 + 0.16 * len(variants)))
        colors = ["black" if v == reference else "tab:blue" for v in variants]
        bars = ax.barh(range(len(variants)), means, xerr=stds, color=colors, alpha=0.8, capsize=2)
        for bar, variant in zip(bars, variants, strict=True):
            if variant in controls:
                bar.set_hatch("//")
                bar.set_color("0.7")
        labels = [
            f"{_variant_label(analysis, profile, task, v)} (n={len(values[v])})" for v in variants
        ]
        ax.set_yticks(range(len(variants)), labels, fontsize=6)
        ax.invert_yaxis()
        low = [m - s for m, s in zip(means, stds, strict=True)]
        high = [m + s for m, s in zip(means, stds, strict=True)]
        if baseline is not None:
            ax.axvline(
                baseline,
                color="tab:red",
                ls="--",
                lw=0.8,
                label=f"strongest baseline: {baseline_name}",
            )
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
            low.append(baseline)
            high.append(baseline)
        lo, hi = min(low), max(high)
        pad = 0.1 * (hi - lo + 1e-9)
        ax.set_xlim(max(0.0, lo - pad) if lo > 0 else lo, hi + pad)
        ax.set_xlabel(f"{metric} (test; mean ± seed std, n seeds)")
        ax.set_title(_task_title(analysis, profile, task))
        out.append(_save(fig, out_dir, f"task_{slug(profile)}_{slug(task)}")[0])
    return out


def plot_seed_spread(
    records: list[dict[str, Any]],
    profile: str,
    out_dir: Path,
    analysis: Analysis | None = None,
) -> list[Path]:
    """One figure per task: every seed's test value per variant (seeds as an axis).

    Variants along x, values on y; the reference's seeds are large black points, the
    others small; each variant's mean is a short bar; the strongest trivial baseline is
    a dashed horizontal line.
    """
    plt = _pyplot()
    analysis = analyse(records) if analysis is None else analysis
    reference = analysis.reference(profile)
    controls = set(analysis.controls.get(profile, []))
    out = []
    for task, values, variants, metric, baseline, baseline_name in _task_panels(analysis, profile):
        fig, ax = plt.subplots(figsize=(1.5 + 0.22 * len(variants), 3.6))
        for x, variant in enumerate(variants):
            ys = values[variant]
            is_ref = variant == reference
            ax.scatter(
                [x] * len(ys),
                ys,
                s=22 if is_ref else 9,
                color="black" if is_ref else ("0.55" if variant in controls else "tab:blue"),
                zorder=3,
                label=f"{reference} (reference) seeds" if is_ref else None,
            )
            ax.hlines(float(np.mean(ys)), x - 0.3, x + 0.3, color="0.3", lw=0.8, zorder=2)
        if baseline is not None:
            ax.axhline(
                baseline,
                color="tab:red",
                ls="--",
                lw=0.8,
                label=f"strongest baseline: {baseline_name}",
            )
        labels = [_variant_label(analysis, profile, task, v) for v in variants]
        ax.set_xticks(range(len(variants)), labels, rotation=90, fontsize=6)
        ax.set_xlim(-0.7, len(variants) - 0.3)
        ax.set_ylabel(f"{metric} (test), one point per seed")
        ax.set_title(f"Seed spread: {_task_title(analysis, profile, task)}", fontsize=7)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(True, axis="y", lw=0.3)
        out.append(_save(fig, out_dir, f"seeds_{slug(profile)}_{slug(task)}")[0])
    return out


def plot_training_curves(records: list[dict[str, Any]], profile: str, out_dir: Path) -> list[Path]:
    """Validation metric against step for every variant (seed 0 or the first seed)."""
    plt = _pyplot()
    out = []
    ok = _ok(records, profile)
    for task in sorted({str(r["task"]) for r in ok}):
        runs = sorted(
            (r for r in ok if str(r["task"]) == task and r.get("history")),
            key=lambda r: (str(r["variant"]), r.get("seed") or 0),
        )
        if not runs:
            continue
        metric = str(runs[0]["metric"]["name"])
        reference = _reference(records, profile)
        fig, ax = plt.subplots(figsize=(6.5, 4.0))
        seen = set()
        for r in runs:
            if r["variant"] in seen:
                continue
            seen.add(r["variant"])
            steps = [h["step"] for h in r["history"] if metric in (h.get("val") or {})]
            vals = [
                h["val"][metric] * metric_scale(metric)
                for h in r["history"]
                if metric in h.get("val", {})
            ]
            is_ref = r["variant"] == reference
            ax.plot(
                steps,
                vals,
                color="black" if is_ref else None,
                lw=2.0 if is_ref else 0.7,
                alpha=1.0 if is_ref else 0.6,
                label=str(r["variant"]),
                marker="o" if len(steps) < 6 else None,
                ms=2,
            )
        ax.set_xlabel("training step")
        ax.set_ylabel(f"validation {metric}")
        ax.set_title(f"Training curves: {task} — profile {profile}")
        ax.legend(fontsize=5, ncol=3, loc="best", frameon=False)
        out.append(_save(fig, out_dir, f"curves_{slug(profile)}_{slug(task)}")[0])
    return out


def plot_attention_analysis(
    records: list[dict[str, Any]], profile: str, out_dir: Path
) -> list[Path]:
    """Heat maps variant × layer of entropy, sparsity and head diversity, one figure per task."""
    plt = _pyplot()
    out = []
    ok = _ok(records, profile)
    for task in sorted({str(r["task"]) for r in ok}):
        stats: dict[str, list[dict[str, Any]]] = {}
        for r in sorted(ok, key=lambda r: r.get("seed") or 0):
            attention = r.get("attention") or {}
            if str(r["task"]) == task and attention.get("available") and r["variant"] not in stats:
                stats[str(r["variant"])] = attention["layers"]
        if not stats:
            continue
        variants = variant_order(stats, _reference(records, profile))
        n_layers = max(len(v) for v in stats.values())
        fig, axes = plt.subplots(1, 3, figsize=(8.5, 0.6 + 0.16 * len(variants)), sharey=True)
        for ax, key, label in zip(
            axes,
            ("entropy", "sparsity", "head_diversity"),
            ("entropy (nats)", "sparsity (share of exact zeros)", "head diversity (JS distance)"),
            strict=True,
        ):
            grid = np.full((len(variants), n_layers), np.nan)
            for i, v in enumerate(variants):
                for j, layer in enumerate(stats[v]):
                    value = layer.get(key)
                    grid[i, j] = np.nan if value is None else float(value)
            image = ax.imshow(grid, aspect="auto", cmap="viridis")
            ax.set_xticks(range(n_layers), [f"L{j}" for j in range(n_layers)])
            ax.set_title(label, fontsize=7)
            fig.colorbar(image, ax=ax, fraction=0.05)
        axes[0].set_yticks(range(len(variants)), variants, fontsize=6)
        fig.suptitle(f"Attention analysis on a fixed validation batch: {task} — {profile}")
        out.append(_save(fig, out_dir, f"attention_{slug(profile)}_{slug(task)}")[0])
    return out


def plot_attention_maps(records: list[dict[str, Any]], profile: str, out_dir: Path) -> list[Path]:
    """Gallery: layer-0 head-0 (and last layer) attention maps of each variant, one fixed input."""
    plt = _pyplot()
    out = []
    ok = _ok(records, profile)
    for task in sorted({str(r["task"]) for r in ok}):
        maps: dict[str, np.ndarray] = {}
        for r in sorted(ok, key=lambda r: r.get("seed") or 0):
            name = (r.get("artifacts") or {}).get("attention_maps")
            if str(r["task"]) != task or not name or r["variant"] in maps or not r.get("_path"):
                continue
            path = Path(str(r["_path"])).parent / str(name)
            if path.exists():
                with np.load(path) as data:
                    maps[str(r["variant"])] = data["weights"].astype(np.float32)
        if not maps:
            continue
        variants = variant_order(maps, _reference(records, profile))
        cols = 6
        rows = math.ceil(len(variants) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.6 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, v in zip(axes.flat, variants, strict=False):
            weights = maps[v]  # (L, H, T, S)
            ax.imshow(weights[-1].mean(0), cmap="magma", interpolation="nearest")
            ax.set_title(v, fontsize=6)
        fig.suptitle(f"Last-layer attention (mean over heads), one fixed input: {task}")
        out.append(_save(fig, out_dir, f"attention_maps_{slug(profile)}_{slug(task)}")[0])
    return out


def plot_head_ablation(analysis_files: Iterable[Path], out_dir: Path) -> list[Path]:
    """Heat map layer × head of the metric change when that head is disabled."""
    plt = _pyplot()
    out = []
    for path in sorted(analysis_files):
        try:
            data = json.loads(Path(path).read_text())
            delta = np.asarray(data["delta_per_head"], dtype=float)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        metric = str((data.get("metric") or {}).get("name", "metric"))
        scale = metric_scale(metric)
        fig, ax = plt.subplots(figsize=(1.2 + 0.5 * delta.shape[1], 1.0 + 0.4 * delta.shape[0]))
        limit = float(np.abs(delta).max() * scale) or 1.0
        image = ax.imshow(delta * scale, cmap="RdBu", vmin=-limit, vmax=limit)
        for (i, j), value in np.ndenumerate(delta * scale):
            ax.text(j, i, f"{value:+.1f}", ha="center", va="center", fontsize=6)
        ax.set_xticks(range(delta.shape[1]), [f"H{h}" for h in range(delta.shape[1])])
        ax.set_yticks(range(delta.shape[0]), [f"L{layer}" for layer in range(delta.shape[0])])
        fig.colorbar(image, ax=ax, fraction=0.05, label=f"Δ {metric}")
        name = f"{data.get('task')}/{data.get('variant')}/seed{data.get('seed')}"
        ax.set_title(f"Head ablation: {name}", fontsize=7)
        stem = f"head_ablation_{slug(str(data.get('profile')))}_{slug(name)}"
        out.append(_save(fig, out_dir, stem)[0])
    return out


def plot_capacity(records: list[dict[str, Any]], profile: str, out_dir: Path) -> list[Path]:
    """Per diagnostics task (kind): accuracy along each capacity axis it varies, one line
    per variant (:func:`attnbench.capacity.axis_curves`), and accuracy against state bytes,
    one point per run and setting (Zoology's figure 2 reads accuracy against width)."""
    plt = _pyplot()
    points = capacity_points(records, profile)
    reference = _reference(records, profile)
    controls = {p["variant"] for p in points if not p["mixes_tokens"]}
    out: list[Path] = []
    for kind in sorted({p["kind"] for p in points}):
        mine = [p for p in points if p["kind"] == kind]
        for axis, curves in axis_curves(mine).items():
            fig, ax = plt.subplots(figsize=(6.0, 3.8))
            for series, rows in curves.items():
                variant = next(p["variant"] for p in mine if p["series"] == series)
                is_ref, control = variant == reference, variant in controls
                ax.plot(
                    [x for x, _, _ in rows],
                    [100 * y for _, y, _ in rows],
                    color="black" if is_ref else ("grey" if control else None),
                    ls="--" if control else "-",
                    lw=2.0 if is_ref else 0.9,
                    marker="o",
                    ms=3,
                    label=series,
                )
            ax.set_xscale("log", base=2)
            ax.set_xlabel(axis)
            ax.set_ylabel("test accuracy (%)")
            ax.set_ylim(-2, 102)
            ax.set_title(f"Capacity: {kind}, accuracy against {axis} (profile {profile})")
            ax.legend(fontsize=5, ncol=3, loc="best", frameon=False)
            ax.grid(True, lw=0.3)
            stem = f"capacity_{slug(profile)}_{slug(kind)}_{slug(axis)}"
            out.append(_save(fig, out_dir, stem)[0])
        with_state = [p for p in mine if p["state_bytes"]]
        if with_state:
            fig, ax = plt.subplots(figsize=(6.0, 3.8))
            for variant in sorted({p["variant"] for p in with_state}):
                rows = [p for p in with_state if p["variant"] == variant]
                ax.scatter(
                    [p["state_bytes"] for p in rows],
                    [100 * p["accuracy"] for p in rows],
                    s=10,
                    marker="x" if variant in controls else "o",
                    color="black" if variant == reference else None,
                    label=variant,
                )
            ax.set_xscale("log", base=2)
            ax.set_xlabel("state at the setting's length (bytes; attention: its KV cache)")
            ax.set_ylabel("test accuracy (%)")
            ax.set_ylim(-2, 102)
            ax.set_title(f"Capacity: {kind}, accuracy against state size (profile {profile})")
            ax.legend(fontsize=5, ncol=3, loc="best", frameon=False)
            ax.grid(True, lw=0.3)
            out.append(_save(fig, out_dir, f"capacity_{slug(profile)}_{slug(kind)}_state")[0])
    return out


def make_plots(
    records: list[dict[str, Any]],
    profiles: list[str],
    out_dir: Path,
    analysis_files: Iterable[Path] = (),
) -> dict[str, list[Path]]:
    """Every figure for every profile; returns {section: [png paths]}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[Path]] = {}
    analysis = analyse(records)
    for profile in profiles:
        bubble = plot_quality_cost(records, profile, out_dir)
        figures.setdefault("Quality against cost", []).extend([bubble] if bubble else [])
        figures.setdefault("Per-task results", []).extend(
            plot_task_bars(records, profile, out_dir, analysis)
        )
        figures.setdefault("Seed spread", []).extend(
            plot_seed_spread(records, profile, out_dir, analysis)
        )
        figures.setdefault("Training curves", []).extend(
            plot_training_curves(records, profile, out_dir)
        )
        figures.setdefault("Attention analysis", []).extend(
            plot_attention_analysis(records, profile, out_dir)
        )
        figures.setdefault("Attention maps", []).extend(
            plot_attention_maps(records, profile, out_dir)
        )
        figures.setdefault("Capacity (diagnostics)", []).extend(
            plot_capacity(records, profile, out_dir)
        )
    figures["Head ablation"] = plot_head_ablation(analysis_files, out_dir)
    return {k: v for k, v in figures.items() if v}
