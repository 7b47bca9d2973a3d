"""Plots of the efficiency sweep: time and memory versus length, log–log, one line per variant.

Called by :func:`attnbench.bench.summary.build_summary` with rows read from bench records.
On log–log axes a power law is a straight line whose slope is its exponent, so
quadratic attention and its linear-time rivals separate at a glance (the same
view as Long Range Arena's Figure 3 and the FlashAttention benchmarks). Points
that are not ``ok`` (OOM, n/a, skipped) are left out: a line simply ends.
The Agg backend is used (no display), and SVGs carry no date, so rebuilding from
the same records gives the same files.
"""

from __future__ import annotations

from itertools import cycle
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MIB = 2**20
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")


def plot_series(
    by_variant: dict[str, list[dict[str, Any]]], title: str, slug: str, out_dir: Path
) -> list[Path]:
    """Write ``plots/time-<slug>`` and ``plots/memory-<slug>`` (PNG and SVG); return the paths.

    ``by_variant``: {variant: point rows sorted by length}. Nothing is written when
    no variant has two ``ok`` lengths (a single length is no line).
    """
    ok = {
        v: [r for r in rows if r["status"] == "ok"]
        for v, rows in sorted(by_variant.items())
        if len({r["length"] for r in rows if r["status"] == "ok"}) >= 2
    }
    if not ok:
        return []
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for what, ylabel, value in (
        ("time", "median time per step (ms)", lambda r: r["median_ms"]),
        ("memory", "peak memory (MiB)", lambda r: r["peak_memory_bytes"] / MIB),
    ):
        files += _one_plot(ok, what, ylabel, value, f"{what} vs length — {title}", plot_dir, slug)
    return files


def _one_plot(ok, what, ylabel, value, title, plot_dir: Path, slug: str) -> list[Path]:
    plt.rcParams["svg.hashsalt"] = "attnbench"  # stable SVG ids
    fig, ax = plt.subplots(figsize=(10, 6.5))
    colors = cycle(plt.get_cmap("tab20").colors + plt.get_cmap("tab20b").colors)
    styles = cycle(LINESTYLES)
    markers = cycle(MARKERS)
    for variant, rows in ok.items():
        xs = [r["length"] for r in rows]
        ys = [value(r) for r in rows]
        ax.plot(
            xs,
            ys,
            label=variant,
            color=next(colors),
            linestyle=next(styles),
            marker=next(markers),
            markersize=3,
            linewidth=1.2,
        )
        if what == "time":  # the inter-quartile range of the timed steps
            ax.vlines(xs, [r["q1_ms"] for r in rows], [r["q3_ms"] for r in rows], colors="0.6")
    ax.set_xscale("log", base=2)
    ticks = sorted({r["length"] for rows in ok.values() for r in rows})
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_yscale("log")
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    paths = [plot_dir / f"{what}-{slug}.png", plot_dir / f"{what}-{slug}.svg"]
    fig.savefig(paths[0], dpi=120)
    fig.savefig(paths[1], metadata={"Date": None})
    plt.close(fig)
    return paths
