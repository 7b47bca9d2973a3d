"""Tables and plots of the efficiency sweep, built from bench records alone.

Outputs (``<output_dir>/bench/<profile>/``, :func:`build_summary`): ``summary.md``
(device, definitions, fitted scaling exponents, LRA-style relative tables),
``points.csv`` (one row per point), ``scaling.csv``, ``relative.md`` /
``relative.csv``, and ``plots/{time,memory}-<series>.{png,svg}`` (log–log, one
line per variant; :mod:`attnbench.bench.plots`).

The relative tables follow Long Range Arena's Table 3 (Tay et al. 2021): steps/s
and peak memory of each variant divided by the reference variant's, the reference
being the one the records name (``config.bench.reference``) unless one is given.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench.bench.measure import MIB, fit_exponent
from attnbench.bench.plots import plot_series
from attnbench.bench.records import MEMORY_DEFINITIONS, read_bench_record
from attnbench.config_bench import MODES
from attnbench.records import atomic_write_text

SERIES_KEYS = ("mode", "batch", "heads", "head_dim", "causal", "dtype")
POINT_COLUMNS = (
    "variant",
    *SERIES_KEYS,
    "length",
    "status",
    "reason",
    "median_ms",
    "q1_ms",
    "q3_ms",
    "iqr_ms",
    "n_timed",
    "steps_per_s",
    "tokens_per_s",
    "peak_memory_bytes",
    "memory_kind",
    "tflops",
    "flops_kind",
    "device",
    "git_commit",
)


def series_label(key: tuple) -> str:
    """A readable name of a series, e.g. ``fwd_bwd B=1 H=4 d=64 non-causal fp32``."""
    mode, batch, heads, head_dim, causal, dtype = key
    return f"{mode} B={batch} H={heads} d={head_dim} {'causal' if causal else 'non-causal'} {dtype}"


def series_slug(key: tuple) -> str:
    mode, batch, heads, head_dim, causal, dtype = key
    return f"{mode}-b{batch}-h{heads}-d{head_dim}-{'causal' if causal else 'noncausal'}-{dtype}"


def point_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per point, in record order (the tidy ``points.csv``)."""
    rows = []
    for r in records:
        device = r["device"].get("name", r["device"].get("type"))
        for p in r["points"]:
            row = {k: p.get(k) for k in POINT_COLUMNS if k in p}
            row |= {
                "variant": r["variant"],
                "n_timed": len(p["times_ms"]),
                "memory_kind": r["memory_kind"],
                "device": device,
                "git_commit": r["git_commit"],
            }
            rows.append(row)
    return rows


def group_series(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, list[dict[str, Any]]]]:
    """{series key: {variant: [rows sorted by length]}}, keys in a stable order."""
    groups: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        key = tuple(row[k] for k in SERIES_KEYS)
        groups.setdefault(key, {}).setdefault(row["variant"], []).append(row)
    for by_variant in groups.values():
        for series in by_variant.values():
            series.sort(key=lambda r: r["length"])
    order = {m: i for i, m in enumerate(MODES)}
    return dict(sorted(groups.items(), key=lambda kv: (order[kv[0][0]], *map(str, kv[0][1:]))))


def scaling_rows(groups: dict[tuple, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Fitted time and memory exponents per (series, variant) over its ``ok`` points."""
    rows = []
    for key, by_variant in groups.items():
        for variant in sorted(by_variant):
            ok = [r for r in by_variant[variant] if r["status"] == "ok"]
            lengths = [r["length"] for r in ok]
            rows.append(
                {
                    "variant": variant,
                    **dict(zip(SERIES_KEYS, key, strict=True)),
                    "n_lengths": len(set(lengths)),
                    "min_length": min(lengths) if lengths else None,
                    "max_length": max(lengths) if lengths else None,
                    "time_exponent": fit_exponent(lengths, [r["median_ms"] for r in ok]),
                    "memory_exponent": fit_exponent(lengths, [r["peak_memory_bytes"] for r in ok]),
                }
            )
    return rows


def relative_rows(
    groups: dict[tuple, dict[str, list[dict[str, Any]]]], reference: str, lengths: list[int]
) -> list[dict[str, Any]]:
    """LRA-style comparison: steps/s and peak memory of each variant ÷ the reference's.

    One row per (series, variant, length) for the lengths in ``lengths`` that the
    series measured; the ratio is ``None`` where either point is not ``ok``.
    """
    rows = []
    for key, by_variant in groups.items():
        measured = {r["length"] for series in by_variant.values() for r in series}
        ref = {r["length"]: r for r in by_variant.get(reference, [])}
        for variant in sorted(by_variant):
            mine = {r["length"]: r for r in by_variant[variant]}
            for length in [n for n in lengths if n in measured]:
                p, q = mine.get(length), ref.get(length)
                both = p is not None and q is not None and p["status"] == q["status"] == "ok"
                rows.append(
                    {
                        "variant": variant,
                        **dict(zip(SERIES_KEYS, key, strict=True)),
                        "length": length,
                        "status": p["status"] if p is not None else "missing",
                        "steps_per_s": p["steps_per_s"] if p is not None else None,
                        "peak_memory_bytes": p["peak_memory_bytes"] if p is not None else None,
                        "relative_speed": p["steps_per_s"] / q["steps_per_s"] if both else None,
                        "relative_memory": (
                            p["peak_memory_bytes"] / q["peak_memory_bytes"]
                            if both and q["peak_memory_bytes"]
                            else None
                        ),
                    }
                )
    return rows


def crossover_rows(
    groups: dict[tuple, dict[str, list[dict[str, Any]]]], exact: set[str]
) -> list[dict[str, Any]]:
    """Per (series, variant that is not exact softmax attention): from which length on it
    is faster than the fastest exact-softmax variant (``exact``) at the same length.

    ``crossover_length``: the shortest measured length from which the variant's median
    time stays below the exact one's at every longer measured length (None if it is not
    faster at the longest). When it is not faster anywhere measured but scales with a
    lower exponent, ``projected_length`` extends both power laws from their longest
    points (t(L) = t_last · (L / L_last)^k, k the fitted exponent): a projection, labelled so.
    """
    rows = []
    for key, by_variant in groups.items():
        exact_times: dict[int, float] = {}
        for variant in exact & set(by_variant):
            for r in by_variant[variant]:
                if r["status"] == "ok":
                    t = exact_times.get(r["length"])
                    exact_times[r["length"]] = min(t, r["median_ms"]) if t else r["median_ms"]
        if not exact_times:
            continue
        for variant in sorted(set(by_variant) - exact):
            mine = {r["length"]: r["median_ms"] for r in by_variant[variant] if r["status"] == "ok"}
            common = sorted(set(mine) & set(exact_times))
            if not common:
                continue
            crossover = None
            for n in reversed(common):
                if mine[n] >= exact_times[n]:
                    break
                crossover = n
            projected = None
            if crossover is None and len(mine) >= 2 and len(exact_times) >= 2:
                k_mine = fit_exponent(list(mine), list(mine.values()))
                k_exact = fit_exponent(list(exact_times), list(exact_times.values()))
                last = common[-1]
                if k_mine is not None and k_exact is not None and k_mine < k_exact:
                    ratio = exact_times[last] / mine[last]  # < 1: the variant is slower
                    projected = round(last * ratio ** (1.0 / (k_mine - k_exact)))
            rows.append(
                {
                    "variant": variant,
                    **dict(zip(SERIES_KEYS, key, strict=True)),
                    "lengths": f"{common[0]}-{common[-1]}",
                    "crossover_length": crossover,
                    "projected_length": projected,
                    "speed_at_longest": exact_times[common[-1]] / mine[common[-1]],
                }
            )
    return rows


def crossover_markdown(rows: list[dict[str, Any]], exact: list[str]) -> str:
    if not rows:
        return "No series measured an exact-softmax variant and another one.\n"
    names = ", ".join(f"`{v}`" for v in exact)
    out = [
        f"Length from which each variant is faster than the fastest of {names} (exact "
        "softmax attention) at every longer measured length; where it is not faster at the "
        "longest measured length, the projection of both fitted power laws (≈, not measured).",
        "",
        "| series | variant | lengths | crossover | speed at longest (× exact) |",
        "|---|---|---|---:|---:|",
    ]
    for r in rows:
        key = tuple(r[k] for k in SERIES_KEYS)
        if r["crossover_length"] is not None:
            cross = str(r["crossover_length"])
        elif r["projected_length"] is not None:
            cross = f"≈ {r['projected_length']} (projected)"
        else:
            cross = "none"
        out.append(
            f"| {series_label(key)} | `{r['variant']}` | {r['lengths']} | {cross} | "
            f"{r['speed_at_longest']:.2f}× |"
        )
    return "\n".join(out) + "\n"


def _fmt(value: Any, spec: str = ".2f", none: str = "—") -> str:
    return none if value is None else format(value, spec)


def _length_label(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def relative_markdown(rows: list[dict[str, Any]], reference: str) -> str:
    """Per series, two tables like LRA's Table 3: steps/s and memory relative to the reference."""
    out: list[str] = []
    by_series: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        by_series.setdefault(tuple(row[k] for k in SERIES_KEYS), []).append(row)
    for key, series in by_series.items():
        lengths = sorted({r["length"] for r in series})
        cells: dict[str, dict[int, dict[str, Any]]] = {}
        for r in series:
            cells.setdefault(r["variant"], {})[r["length"]] = r
        heads = " | ".join(_length_label(n) for n in lengths)
        rule = "|---|" + "---:|" * len(lengths)
        for what, field_, absolute in (
            ("steps/s", "relative_speed", lambda r: f"{_fmt(r['steps_per_s'])} steps/s"),
            (
                "peak memory",
                "relative_memory",
                lambda r: f"{_fmt(_mib(r['peak_memory_bytes']), '.1f')} MiB",
            ),
        ):
            out += [f"#### {series_label(key)}: {what} relative to `{reference}`", ""]
            out += [f"| variant | {heads} |", rule]
            for variant, by_length in cells.items():
                row = []
                for n in lengths:
                    r = by_length.get(n)
                    if r is None or r["status"] == "missing":
                        row.append("—")
                    elif r["status"] != "ok":
                        row.append(r["status"])
                    elif variant == reference:
                        row.append(absolute(r))
                    else:  # "—" where the reference has no ok point to divide by
                        row.append("—" if r[field_] is None else f"{r[field_]:.2f}×")
                out.append(f"| `{variant}` | " + " | ".join(row) + " |")
            out.append("")
    return "\n".join(out)


def _mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / MIB


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] | list[str]):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    atomic_write_text(path, buffer.getvalue())


@dataclass
class SummaryResult:
    n_records: int
    skipped: list[tuple[Path, str]]
    files: list[Path]


def build_summary(
    record_files: Iterable[str | Path],
    out_dir: str | Path,
    *,
    reference: str | None = None,
    relative_lengths: list[int] | None = None,
    plots: bool = True,
) -> SummaryResult:
    """Tables and plots from bench records alone (unreadable records are listed, not used).

    ``reference`` and ``relative_lengths`` default to the records' own (their
    ``config.bench``, the first record's by variant name).
    """
    out_dir = Path(out_dir)
    records, skipped = [], []
    for path in record_files:
        try:
            records.append(read_bench_record(path))
        except ValueError as exc:
            skipped.append((Path(path), str(exc).split(": ", 1)[-1]))
    records.sort(key=lambda r: r["variant"])
    first = records[0]["config"]["bench"] if records else {}
    reference = reference or first.get("reference")  # None: no records to compare
    relative_lengths = relative_lengths or first.get("relative_lengths") or []
    rows = point_rows(records)
    groups = group_series(rows)
    scaling = scaling_rows(groups)
    relative = relative_rows(groups, reference, relative_lengths) if reference else []
    exact = sorted(r["variant"] for r in records if _exact_softmax(r))
    crossover = crossover_rows(groups, set(exact))
    files = [out_dir / "points.csv", out_dir / "scaling.csv", out_dir / "relative.csv"]
    _write_csv(files[0], rows, POINT_COLUMNS)
    _write_csv(files[1], scaling, list(scaling[0]) if scaling else ["variant"])
    _write_csv(files[2], relative, list(relative[0]) if relative else ["variant"])
    files.append(out_dir / "crossover.csv")
    _write_csv(files[-1], crossover, list(crossover[0]) if crossover else ["variant"])
    relative_md = relative_markdown(relative, reference) if reference else ""
    files.append(out_dir / "relative.md")
    atomic_write_text(files[-1], _relative_header(reference, relative_lengths) + relative_md)
    plot_files: list[Path] = []
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)  # the workflow's output directory
    if plots:
        for key, by_variant in groups.items():
            plot_files += plot_series(by_variant, series_label(key), series_slug(key), out_dir)
    files.append(out_dir / "summary.md")
    text = summary_markdown(
        records,
        skipped,
        scaling,
        relative_md,
        plot_files,
        out_dir,
        reference,
        crossover_markdown(crossover, exact),
    )
    atomic_write_text(files[-1], text)
    return SummaryResult(len(records), skipped, files + plot_files)


def _relative_header(reference: str | None, lengths: list[int]) -> str:
    if reference is None:
        return "# Relative efficiency\n\nNo readable bench records.\n\n"
    return (
        f"# Relative efficiency (× `{reference}`)\n\n"
        "After Long Range Arena's Table 3 (Tay et al. 2021): steps/s (higher is faster) and "
        f"peak memory (lower is smaller) of each variant divided by `{reference}`'s at the same "
        f"setting and length; `{reference}`'s own row gives its absolute values. Asked-for "
        f"lengths: {', '.join(_length_label(n) for n in lengths)}; columns appear where the "
        "sweep measured that length.\n\n"
    )


def summary_markdown(
    records: list[dict[str, Any]],
    skipped: list[tuple[Path, str]],
    scaling: list[dict[str, Any]],
    relative_md: str,
    plot_files: list[Path],
    out_dir: Path,
    reference: str | None,
    crossover_md: str = "",
) -> str:
    """The human-readable report: device, definitions, exponents, relative tables,
    crossover with exact attention, decoding memory, plots."""
    lines = ["# Efficiency sweep", ""]
    if not records:
        lines += ["No readable bench records.", ""]
    devices = sorted({json.dumps(r["device"], sort_keys=True) for r in records})
    for text in devices:
        d = json.loads(text)
        lines.append(f"- device: {_device_line(d)}")
    if len(devices) > 1:
        lines.append("- **records come from more than one device: compare within a device**")
    if records:
        r0 = records[0]
        host = r0.get("host", {})
        lines += [
            f"- host CPU: {host.get('name')} ({host.get('cpu_count')} CPUs)",
            f"- memory: {MEMORY_DEFINITIONS[r0['memory_kind']]}",
            "- TFLOP/s: FlashAttention convention (4·B·T²·H·d forward, ½ causal, 3.5× fwd+bwd); "
            + _exact_line([r["variant"] for r in records if _exact_flops(r)]),
            f"- git commits: {', '.join(sorted({r['git_commit'] for r in records}))}",
            f"- records: {len(records)} (skipped {len(skipped)})",
            "",
        ]
    for path, why in skipped:
        lines.append(f"- skipped record `{path}`: {why}")
    lines += [
        "## Scaling exponents",
        "",
        "Least-squares slope of log(median time) and log(peak memory) on log(length) over "
        "each series' `ok` points (2 = quadratic, 1 = linear).",
        "",
        "| series | variant | lengths | time exponent | memory exponent |",
        "|---|---|---|---:|---:|",
    ]
    for row in scaling:
        key = tuple(row[k] for k in SERIES_KEYS)
        span = (
            f"{row['min_length']}–{row['max_length']} ({row['n_lengths']})"
            if row["n_lengths"]
            else "—"
        )
        lines.append(
            f"| {series_label(key)} | `{row['variant']}` | {span} | "
            f"{_fmt(row['time_exponent'])} | {_fmt(row['memory_exponent'])} |"
        )
    relative_title = f"Relative to `{reference}`" if reference else "Relative efficiency"
    lines += ["", f"## {relative_title}", "", relative_md]
    lines += ["## Crossover with exact softmax attention", "", crossover_md]
    lines += _decoding_memory_lines(records)
    lines += ["## Not measured", ""]
    for r in records:
        for p in r["points"]:
            if p["status"] != "ok":
                key = tuple(p[k] for k in SERIES_KEYS)
                lines.append(
                    f"- `{r['variant']}` {series_label(key)} L={p['length']}: "
                    f"{p['status']} — {p['reason']}"
                )
    lines += ["", "## Plots", ""]
    lines += [f"- [{p.name}]({p.relative_to(out_dir)})" for p in plot_files if p.suffix == ".png"]
    return "\n".join(lines) + "\n"


def _exact_softmax(record: dict[str, Any]) -> bool:
    """Whether the variant computes exact softmax attention (its declared capability;
    older records: whether its FLOP figures were exact)."""
    caps = record.get("capabilities", {})
    return bool(caps["exact_softmax"]) if "exact_softmax" in caps else _exact_flops(record)


def _decoding_memory_lines(records: list[dict[str, Any]]) -> list[str]:
    """Per variant, what decoding keeps in memory in the task model of the train_step mode."""
    rows = [r for r in records if "kv_cache_bytes_per_token" in r]
    if not rows:
        return []
    lines = [
        "## Decoding memory (the task model)",
        "",
        "Bytes a decoder keeps, in float32 over all layers of the train_step task's model: "
        "the key–value cache grows by its per-token figure with every token; a recurrent "
        "variant keeps a fixed-size state instead.",
        "",
        "| variant | KV cache per token | recurrent state per sequence |",
        "|---|---:|---:|",
    ]
    for r in rows:
        kv, state = r["kv_cache_bytes_per_token"], r.get("state_bytes")
        lines.append(
            f"| `{r['variant']}` | {'—' if kv is None else f'{kv:,} B'} | "
            f"{'—' if state is None else f'{state:,} B'} |"
        )
    return [*lines, ""]


def _exact_flops(record: dict[str, Any]) -> bool:
    """Whether ``record``'s TFLOP/s figures are FLOP rates (exact softmax attention)."""
    config = record["config"]
    if "exact_flops" in config:
        return bool(config["exact_flops"])
    # records written before the per-variant flag: the profile's list of exact variants
    return record["variant"] in (config.get("bench", {}).get("exact_variants") or [])


def _exact_line(exact: list[str]) -> str:
    if not exact:
        return "the equivalent rate of exact attention for every variant here"
    names = ", ".join(f"`{v}`" for v in exact)
    return f"exact for {names}, the equivalent rate of exact attention for the others"


def _device_line(d: dict[str, Any]) -> str:
    if d.get("type") == "cuda":
        return (
            f"{d.get('name')} (CUDA {d.get('cuda')}, driver {d.get('driver')}, "
            f"torch {d.get('torch')})"
        )
    return f"CPU {d.get('name')}, {d.get('threads')} thread(s), torch {d.get('torch')}"
