"""The leaderboard: a Markdown table, a tidy CSV and a manifest built from run records alone.

The inputs are the JSON run records described in :mod:`attnbench.records`; nothing
else (no logs, no live models) is consulted, so the leaderboard can be rebuilt
from a results folder at any time. The outputs are deterministic: rebuilding
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

The modules:

* :mod:`.frame`: reading records, the tidy frame (the CSV's rows), metric display;
* :mod:`.table`: the table model (cells, ranks, marks, averages) every writer renders;
* :mod:`.markdown_page`: the Markdown page; :mod:`.reproducibility`: the manifest and the
  reproducibility section; :mod:`.build`: :func:`build_leaderboard`, which writes them.
  The HTML page and the figures are :mod:`attnbench.report` and :mod:`attnbench.figures`.

Typical use::

    from attnbench.leaderboard import build_leaderboard
    from attnbench.records import iter_record_files

    build_leaderboard(list(iter_record_files("results/runs")),
                      "results/leaderboard.md", "results/leaderboard.csv")
"""

from __future__ import annotations

from .build import LeaderboardResult, build_leaderboard, csv_text
from .frame import (
    CSV_COLUMNS,
    METRIC_SCALES,
    format_metric,
    metric_scale,
    read_records,
    records_frame,
)
from .markdown_page import render_markdown
from .reproducibility import manifest, reproducibility_section
from .table import Table, build_table, task_averages

__all__ = [
    "CSV_COLUMNS",
    "METRIC_SCALES",
    "LeaderboardResult",
    "Table",
    "build_leaderboard",
    "build_table",
    "csv_text",
    "format_metric",
    "manifest",
    "metric_scale",
    "read_records",
    "records_frame",
    "render_markdown",
    "reproducibility_section",
    "task_averages",
]
