"""The self-contained HTML leaderboard, and :func:`build_report`: every output in one call.

The page is the Markdown leaderboard rendered to HTML, its main tables rebuilt natively
from the same table model (:func:`attnbench.leaderboard.table.build_table`) so that every
cell links to the runs behind it, then the figures (:mod:`attnbench.figures`) and the
efficiency sweep's scaling plots. It embeds no script and no external resource: CSS
inline, images by relative path, one file a reader can open from disk.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .figures import make_plots, slug
from .leaderboard import LeaderboardResult, build_leaderboard
from .leaderboard.table import (
    BASELINE_ROW,
    CONTROL,
    Footnotes,
    build_table,
    cell_parts,
    header_text,
    task_averages,
)
from .records import atomic_write_text
from .verdicts import analyse

__all__ = ["CSS", "build_report", "make_plots", "render_html"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1400px;padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.7em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:12px;margin:.6em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:3px 6px;white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0}td{text-align:right}
td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafa}
td.best{background:#e3f3e3!important;font-weight:600}td.na{color:#888}
td.bad{color:#b00020}a.cell{color:inherit;text-decoration:none}
a.cell:hover{text-decoration:underline}.up{color:#0a7a0a}.down{color:#b00020}
code{background:#f4f4f4;padding:0 3px;border-radius:3px;font-size:90%}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:48%}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:12px;color:#555}
.note{color:#555;font-size:13px}th.nosignal{background:#fdf3dc;color:#7a5a00}
td.dense{color:#777;font-style:italic}tr.baseline td{color:#b00020;border-top:2px solid #bbb}
"""


def _cell_class(text: str) -> str:
    if text.startswith("n/a"):
        return "na"
    if text.startswith(("diverged", "failed")) or "diverged" in text or "failed" in text:
        return "bad"
    return ""


def _notes_html(text: str) -> str:
    """Escape ``text`` and turn its ``[^k]`` footnote references into links to the notes."""
    return re.sub(r"\[\^(\d+)\]", r'<sup><a href="#fn:\1">\1</a></sup>', html.escape(text))


def _main_table_html(result: LeaderboardResult, profile: str, notes: Footnotes) -> str:
    """The main table with every cell linked to its runs in the manifest section.

    ``notes`` numbers footnotes in the same order as the Markdown (profiles in order).
    """
    frame = result.frame[result.frame["profile"] == profile]
    analysis = result.analysis if result.analysis is not None else analyse(result.records)
    table = build_table(frame, notes, analysis, task_averages(result.records, profile))
    nosignal = ' class="nosignal"'
    head = "".join(
        f"<th{nosignal if c in table.header_notes else ''}>"
        f"{_notes_html(header_text(table, c))}</th>"
        for c in table.columns
    )
    head += "".join(f"<th>{html.escape(label)} ↑</th>" for label, _ in table.families)
    head += "<th>mean rank ↓</th>"
    rows = []
    for variant in table.variants:
        control = f" {CONTROL}" if variant in table.controls else ""
        label_html = f"<code>{html.escape(variant)}</code>{html.escape(control)}"
        cells = [f"<td>{label_html}</td>"]
        for column in table.columns:
            text, mark, suffix, best = cell_parts(table, variant, column)
            body = _notes_html(text + suffix)
            css = "best" if best else _cell_class(text + suffix)
            if (variant, column[0]) in table.dense_notes:
                css = (css + " dense").strip()
            anchor = f"run-{slug(profile)}-{slug(column[0])}-{slug(variant)}"
            sub = frame[(frame["task"] == column[0]) & (frame["variant"] == variant)]
            tip = "; ".join(
                f"seed {row['seed']}: {row['status']}, commit {row['git_commit']}, "
                f"config {row['config_hash']}"
                for row in sub.to_dict("records")
            )
            if mark:
                css_mark = "up" if "▲" in mark else "down"
                body = (
                    _notes_html(text)
                    + f' <span class="{css_mark}">{mark.strip()}</span>'
                    + _notes_html(suffix)
                )
            if len(sub):
                body = f'<a class="cell" href="#{anchor}" title="{html.escape(tip)}">{body}</a>'
            cells.append(f'<td class="{css}">{body}</td>')
        for label, _ in table.families:
            value = table.family_values[(variant, label)]
            cells.append(f"<td>{'—' if value is None else f'{value:.2f}'}</td>")
        rank = table.mean_rank[variant]
        cells.append(f"<td>{'—' if rank is None else f'{rank:.1f}'}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    baseline = [f"<td><em>{html.escape(BASELINE_ROW)}</em></td>"]
    baseline += [f"<td>{html.escape(table.baseline_cells[c])}</td>" for c in table.columns]
    baseline += ["<td></td>"] * (len(table.families) + 1)
    rows.append('<tr class="baseline">' + "".join(baseline) + "</tr>")
    header = f"<thead><tr><th>variant</th>{head}</tr></thead>"
    return f"<table>{header}<tbody>{''.join(rows)}</tbody></table>"


def _runs_html(result: LeaderboardResult, profile: str) -> str:
    """The per-cell manifest: every run with its record, commit, config hash and status."""
    frame = result.frame[result.frame["profile"] == profile]
    items = []
    for (task, variant), sub in frame.groupby(["task", "variant"], sort=True):
        anchor = f"run-{slug(profile)}-{slug(str(task))}-{slug(str(variant))}"
        runs = "; ".join(
            f"seed {row['seed']} {html.escape(str(row['status']))}: "
            f"<code>{html.escape(str(row['record_path']))}</code>, commit "
            f"<code>{html.escape(str(row['git_commit']))}</code>, config "
            f"<code>{html.escape(str(row['config_hash']))}</code>"
            for row in sub.to_dict("records")
        )
        items.append(f'<li id="{anchor}">{html.escape(f"{task} × {variant}")}: {runs}</li>')
    return "<ul class='note'>" + "".join(items) + "</ul>"


def render_html(
    result: LeaderboardResult,
    records: list[dict[str, Any]],
    figures: dict[str, list[Path]],
    out_html: Path,
    extra_html: str = "",
) -> str:
    """The self-contained HTML page (tables from the Markdown, figures by relative path)."""
    import markdown

    md = result.markdown
    # the main tables are rendered natively (linked cells); the rest comes from the Markdown
    body = markdown.markdown(md, extensions=["tables", "footnotes"], output_format="html")
    notes = Footnotes()
    for profile in result.profiles:
        heading = f"Results: profile <code>{html.escape(profile)}</code></h2>"
        native = _main_table_html(result, profile, notes)
        start = body.find(heading)
        if start < 0:
            continue
        table_start = body.find("<table>", start)
        table_end = body.find("</table>", table_start) + len("</table>")
        body = body[:table_start] + native + body[table_end:]
    # the native tables carry plain references: drop the notes' links back to the Markdown ones
    body = re.sub(r'&#160;?<a class="footnote-backref"[^>]*>.*?</a>', "", body)
    body = re.sub(r'<a class="footnote-backref"[^>]*>.*?</a>', "", body)
    for profile in result.profiles:
        runs = (
            f"<h3>Runs behind each cell: profile <code>{html.escape(profile)}</code></h3>"
            + _runs_html(result, profile)
        )
        body += runs
    gallery = []
    for section, paths in figures.items():
        gallery.append(f"<h2>{html.escape(section)}</h2>")
        for png in paths:
            rel = png.relative_to(out_html.parent).as_posix()
            svg = png.with_suffix(".svg").relative_to(out_html.parent).as_posix()
            caption = html.escape(png.stem.replace("_", " "))
            gallery.append(
                f'<figure><a href="{html.escape(svg)}"><img src="{html.escape(rel)}" '
                f'alt="{caption}"></a><figcaption>{caption}</figcaption></figure>'
            )
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>attnbench leaderboard</title>"
        f"<style>{CSS}</style></head><body>\n{body}\n{extra_html}{''.join(gallery)}\n"
        "</body></html>\n"
    )
    atomic_write_text(out_html, page)
    return page


def build_report(
    record_files: list[Path],
    out_md: Path | None = None,
    out_csv: Path | None = None,
    *,
    out_html: Path | None = None,
    plots_dir: Path | None = None,
    manifest_json: Path | None = None,
    analysis_files: Iterable[Path] = (),
    significance: bool = True,
    bench_dir: Path | None = None,
) -> LeaderboardResult:
    """Leaderboard (Markdown, CSV, manifest), then the figures and the HTML page.

    Writes only the outputs whose path is given (``plots_dir``: the figures).
    ``bench_dir``: an efficiency-sweep summary folder (``attnbench bench-summary``); its
    scaling plots and relative table join the HTML page.
    """
    result = build_leaderboard(
        record_files, out_md, out_csv, significance=significance, manifest_json=manifest_json
    )
    figures: dict[str, list[Path]] = {}
    if plots_dir is not None:
        figures = make_plots(result.records, result.profiles, Path(plots_dir), analysis_files)
    extra = ""
    if out_html is not None and bench_dir is not None and Path(bench_dir).is_dir():
        scaling = sorted(Path(bench_dir).glob("plots/*.png"))
        if scaling:
            figures["Scaling: efficiency sweep (time and memory vs length)"] = scaling
        relative = Path(bench_dir) / "relative.md"
        if relative.is_file():
            import markdown

            extra = (
                "<h2>Efficiency relative to the reference variant (LRA-style)</h2>"
                + markdown.markdown(relative.read_text(encoding="utf-8"), extensions=["tables"])
            )
    if out_html is not None:
        render_html(result, result.records, figures, Path(out_html), extra_html=extra)
    return result
