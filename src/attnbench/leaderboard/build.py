"""Build the leaderboard: read records, analyse them, write the outputs that were asked for."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.records import atomic_write_text
from attnbench.significance import versus_baseline
from attnbench.verdicts import Analysis, analyse

from .frame import read_records, records_frame, variant_order
from .markdown_page import render_markdown
from .reproducibility import manifest

__all__ = ["LeaderboardResult", "build_leaderboard", "csv_text"]


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


def csv_text(frame: pd.DataFrame) -> str:
    """The tidy CSV: one row per record, columns :data:`~.frame.CSV_COLUMNS`."""
    return frame.to_csv(index=False, lineterminator="\n")


def _manifest_json(
    frame: pd.DataFrame,
    records: list[dict[str, Any]],
    analysis: Analysis,
    tests: dict[tuple[Any, ...], dict[str, Any]],
) -> str:
    """The manifest with the signal checks, the seed-level claims and the bootstraps."""
    info = manifest(frame, records)
    info["alpha"] = analysis.alpha
    info["reference_variants"] = dict(sorted(analysis.references.items()))
    info["signal"] = [s.as_dict() for _, s in sorted(analysis.signals.items())]
    info["significance"] = [c.as_dict() for _, c in sorted(analysis.comparisons.items())]
    info["paired_bootstrap"] = [
        {"profile": k[0], "task": k[1], "variant": k[2], "seed": k[3], **v}
        for k, v in sorted(tests.items(), key=lambda kv: tuple(map(str, kv[0])))
    ]
    return json.dumps(info, indent=1, default=str) + "\n"


def build_leaderboard(
    record_files: Sequence[str | Path],
    out_md: str | Path | None = None,
    out_csv: str | Path | None = None,
    *,
    title: str = "attnbench leaderboard",
    significance: bool = True,
    manifest_json: str | Path | None = None,
) -> LeaderboardResult:
    """Read run records; write the Markdown leaderboard, the tidy CSV and the manifest.

    Each output is written (atomically) only when its path is given; the Markdown text
    is computed either way (:attr:`LeaderboardResult.markdown`). The signal checks and
    the seed-level, Holm-corrected claims behind ▲/▼ are always computed
    (:func:`attnbench.verdicts.analyse`; records only). ``significance``: also run the
    paired bootstrap of every ok run against the reference's run of the same task and
    seed (:func:`attnbench.significance.versus_baseline`; needs the saved predictions;
    extra information in the manifest, no marks). ``manifest_json``: the reproducibility
    manifest, with the signal checks (``signal``), the seed-level comparisons
    (``significance``) and the bootstraps (``paired_bootstrap``).

    Unreadable or incomplete record files, and second records of the same
    (profile, task, variant, seed), are not used but listed under *Skipped
    records*; the build never fails because of a bad record. The same file
    passed twice is read once.
    """
    records, skipped = read_records(record_files)
    frame = records_frame(records)
    order = {path: i for i, path in enumerate(frame["record_path"])}
    records = sorted(records, key=lambda r: order.get(str(r.get("_path")), len(order)))
    analysis = analyse(records)
    tests = versus_baseline(records) if significance else {}
    markdown = render_markdown(frame, records, skipped, title=title, tests=tests, analysis=analysis)

    if out_md is not None:
        atomic_write_text(out_md, markdown)
    if out_csv is not None:
        atomic_write_text(out_csv, csv_text(frame))
    if manifest_json is not None:
        atomic_write_text(manifest_json, _manifest_json(frame, records, analysis, tests))
    profiles = sorted(frame["profile"].dropna().unique().tolist())
    reference = analysis.reference(profiles[0] if profiles else "")
    controls = {v for p in profiles for v in analysis.controls.get(p, [])}
    return LeaderboardResult(
        n_records=len(frame),
        n_skipped=len(skipped),
        tasks=sorted(frame["task"].dropna().unique().tolist()),
        variants=variant_order(frame["variant"].dropna(), reference, controls),
        frame=frame,
        profiles=profiles,
        skipped=skipped,
        markdown=markdown,
        tests=tests,
        records=records,
        analysis=analysis,
    )
