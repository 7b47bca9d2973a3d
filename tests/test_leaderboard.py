"""Tests for the leaderboard built from run records (attnbench.leaderboard).

Bold, ranks, family averages and ▲/▼ appear only on tasks with signal (the reference
beats the strongest trivial baseline by ≥ 2 seed std), so fixtures that test them give
the reference at least two seeds; the statistics themselves are tested in
tests/test_verdicts.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from attnbench import cli
from attnbench.leaderboard import (
    CSV_COLUMNS,
    build_leaderboard,
    format_metric,
    metric_scale,
    records_frame,
    render_markdown,
)
from attnbench.records import (
    DEFAULT_REFERENCE,
    REQUIRED_KEYS,
    iter_record_files,
    load_records,
    record_path,
    write_record,
)

TASK_METRICS = {
    "listops": ("accuracy", True),
    "lm": ("perplexity", False),
}


def make_record(
    task: str = "listops",
    variant: str = "vanilla",
    seed: int = 0,
    value: float | None = 0.5,
    *,
    status: str = "ok",
    reason: str | None = None,
    profile: str = "default",
    **extra: Any,
) -> dict[str, Any]:
    """A complete record; ``value`` is the test value of the task's primary metric."""
    metric, higher = TASK_METRICS.get(task, ("accuracy", True))
    metrics: dict[str, Any] = {"best_step": 40}
    if status == "ok":
        metrics["test"] = {metric: value}
        metrics["val"] = {metric: None if value is None else value + 0.01}
        metrics["baselines"] = (
            {"majority_class": 0.18} if metric == "accuracy" else {"unigram": 50.0, "kn": 40.0}
        )
    record: dict[str, Any] = {
        "schema_version": 1,
        "status": status,
        "reason": reason,
        "task": task,
        "task_family": "lra" if task == "listops" else "lm",
        "dataset": {
            "name": f"{task}-data",
            "source": "generated" if task == "listops" else "bundled",
            "stand_in": task != "listops",
            "description": f"{task} | test data",
        },
        "variant": variant,
        "variant_options": {},
        "capabilities": {},
        "seed": seed,
        "profile": profile,
        "metric": {"name": metric, "higher_is_better": higher},
        "metrics": metrics,
        "n_params": 1234567,
        "wall_time_s": 12.5,
        "train_time_s": 10.0 + seed,
        "tokens_per_s": 5000.0,
        "peak_memory_bytes": 2 * 2**20,
        "peak_memory_kind": "cpu_max_rss",
        "device": {"name": "cpu (2 threads)", "type": "cpu"},
        "git_commit": "abc123",
        "config_hash": "cfg1",
    }
    record.update(extra)
    return record


def write_all(root: Path, records: list[dict[str, Any]]) -> list[Path]:
    """Write records under ``root`` in the standard layout; return the record files."""
    for rec in records:
        path = record_path(root, rec["profile"], rec["task"], rec["variant"], rec["seed"])
        write_record(path, rec)
    return list(iter_record_files(root))


def build(tmp_path: Path, records: list[dict[str, Any]], extra_files: list[Path] = ()):
    """Write ``records`` and build the leaderboard; return (result, markdown, csv path)."""
    files = [*write_all(tmp_path / "runs", records), *extra_files]
    md, csv = tmp_path / "out" / "leaderboard.md", tmp_path / "out" / "leaderboard.csv"
    result = build_leaderboard(files, md, csv)
    return result, md.read_text(encoding="utf-8"), csv


NO_SIGNAL = re.compile(r" ⚠ no signal\[\^\d+\]$")


def main_table(markdown: str, *, raw: bool = False) -> dict[str, dict[str, str]]:
    """Parse the first main table into {variant: {header: cell}}.

    Headers lose their `` ⚠ no signal[^k]`` flag unless ``raw``.
    """
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    header = split_row(table[0])
    if not raw:
        header = [NO_SIGNAL.sub("", h) for h in header]
    rows = {}
    for line in table[2:]:
        cells = split_row(line)
        rows[cells[0].strip("`")] = dict(zip(header, cells, strict=True))
    return rows


def split_row(line: str) -> list[str]:
    """Cells of a GFM table row (``\\|`` is an escaped pipe, not a separator)."""
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [cell.strip() for cell in cells]


def footnotes(markdown: str) -> dict[str, str]:
    """{label: text} of the footnote definitions."""
    return dict(re.findall(r"^\[\^(\d+)\]: (.*)$", markdown, flags=re.MULTILINE))


ACC = "listops accuracy (%) ↑"
PPL = "lm perplexity ↓"


def test_fixture_records_are_complete() -> None:
    assert set(REQUIRED_KEYS) <= set(make_record())


def test_metric_scaling() -> None:
    assert metric_scale("accuracy") == 100.0
    assert metric_scale("macro_f1") == 100.0
    assert metric_scale("perplexity") == 1.0
    assert metric_scale("bleu") == 1.0
    assert metric_scale("something_else") == 1.0
    assert format_metric("accuracy", 0.4567) == "45.67"
    assert format_metric("perplexity", 12.345678) == "12.35"


def test_mean_std_n(tmp_path: Path) -> None:
    records = [
        make_record(seed=0, value=0.40),
        make_record(seed=1, value=0.50),
        make_record(variant="linear", seed=0, value=0.30),
        make_record("lm", seed=0, value=10.0),
        make_record("lm", seed=1, value=12.0),
        make_record("lm", seed=2, value=14.0),
    ]
    result, md, _ = build(tmp_path, records)
    table = main_table(md)
    assert table["vanilla"][ACC] == "**45.00 ± 7.07 (n=2)**"
    assert table["linear"][ACC] == "30.00 (n=1)"
    assert table["vanilla"][PPL] == "**12.00 ± 2.00 (n=3)**"
    # every cell is mean ± seed std (n), the std from the ok seeds only
    assert result.analysis is not None
    assert result.analysis.seeds[("default", "lm", "vanilla")] == [(0, 10.0), (1, 12.0), (2, 14.0)]
    assert result.n_records == 6
    assert result.n_skipped == 0
    assert result.tasks == ["listops", "lm"]
    assert result.variants == ["vanilla", "linear"]


def test_rows_vanilla_first_then_sorted_columns_sorted(tmp_path: Path) -> None:
    records = [make_record("lm", variant=v, value=10.0) for v in ("zeta", "alpha", "vanilla")] + [
        make_record(variant="alpha")
    ]
    _, md, _ = build(tmp_path, records)
    assert list(main_table(md)) == ["vanilla", "alpha", "zeta", "*strongest trivial baseline*"]
    assert list(main_table(md)["vanilla"]) == ["variant", ACC, PPL, "mean rank ↓"]


def test_best_in_bold_respects_direction(tmp_path: Path) -> None:
    records = [
        make_record(variant="vanilla", value=0.60),
        make_record(variant="vanilla", seed=1, value=0.62),
        make_record(variant="linear", value=0.70),
        make_record("lm", variant="vanilla", value=20.0),
        make_record("lm", variant="vanilla", seed=1, value=21.0),
        make_record("lm", variant="linear", value=30.0),
    ]
    _, md, _ = build(tmp_path, records)
    table = main_table(md)
    assert table["linear"][ACC] == "**70.00 (n=1)**"
    assert table["vanilla"][ACC] == "61.00 ± 1.41 (n=2)"
    # perplexity: lower is better
    assert table["vanilla"][PPL] == "**20.50 ± 0.71 (n=2)**"
    assert table["linear"][PPL] == "30.00 (n=1)"


def test_no_bold_without_signal(tmp_path: Path) -> None:
    """One seed each: no noise estimate, so no task has signal and nothing is 'best'."""
    records = [make_record(value=0.60), make_record(variant="linear", value=0.70)]
    _, md, _ = build(tmp_path, records)
    table = main_table(md)
    assert table["linear"][ACC] == "70.00 (n=1)"
    assert "**" not in table["vanilla"][ACC]


def test_na_cell_with_footnote(tmp_path: Path) -> None:
    reason = "needs causal masking | not supported"
    records = [
        make_record(value=0.5),
        make_record(variant="bigbird", status="n/a", reason=reason),
        make_record("lm", variant="bigbird", status="n/a", reason=reason),
        make_record("lm", value=10.0),
    ]
    _, md, _ = build(tmp_path, records)
    table = main_table(md)
    acc_cell, ppl_cell = table["bigbird"][ACC], table["bigbird"][PPL]
    assert re.fullmatch(r"n/a\[\^\d+\]", acc_cell)
    # identical reasons share one footnote number
    assert acc_cell == ppl_cell
    label = acc_cell[len("n/a[^") : -1]
    notes = footnotes(md)
    assert notes[label] == r"needs causal masking \| not supported"
    assert list(notes.values()).count(notes[label]) == 1


def test_failed_and_diverged_never_averaged(tmp_path: Path) -> None:
    records = [
        make_record(seed=0, value=0.40),
        make_record(seed=1, status="failed", reason="CUDA out of memory"),
        make_record(variant="linear", seed=0, status="diverged", reason="loss became NaN"),
        make_record(variant="linear", seed=1, status="diverged", reason="loss became NaN"),
        make_record(variant="mixed", seed=0, status="diverged", reason="loss became NaN"),
        make_record(variant="mixed", seed=1, status="failed", reason="OOM"),
    ]
    _, md, csv = build(tmp_path, records)
    table, notes = main_table(md), footnotes(md)
    cell = table["vanilla"][ACC]
    match = re.fullmatch(r"40\.00 \(n=1\), 1 failed\[\^(\d+)\]", cell)
    assert match, cell
    assert notes[match.group(1)] == "CUDA out of memory"
    match = re.fullmatch(r"diverged\[\^(\d+)\]", table["linear"][ACC])
    assert match, table["linear"][ACC]
    assert notes[match.group(1)] == "loss became NaN"
    assert re.fullmatch(r"1 diverged\[\^\d+\], 1 failed\[\^\d+\]", table["mixed"][ACC])
    # the failed seed shows up in the details and in the CSV, without a value
    assert "| listops | vanilla | 0, 1 | 1 ok, 1 failed |" in md
    frame = pd.read_csv(csv)
    failed = frame[(frame["variant"] == "vanilla") & (frame["seed"] == 1)].iloc[0]
    assert failed["status"] == "failed"
    assert pd.isna(failed["value"])


def test_ok_record_without_metric_value_is_flagged(tmp_path: Path) -> None:
    records = [make_record(seed=0, value=0.4), make_record(seed=1, value=None)]
    _, md, _ = build(tmp_path, records)
    assert re.fullmatch(r"40\.00 \(n=1\), 1 no value\[\^\d+\]", main_table(md)["vanilla"][ACC])


def test_missing_pair_is_a_dash_distinct_from_na(tmp_path: Path) -> None:
    records = [
        make_record(value=0.5),
        make_record("lm", value=10.0),
        make_record(variant="linear", value=0.6),
    ]
    _, md, _ = build(tmp_path, records)
    table = main_table(md)
    assert table["linear"][PPL] == "—"
    assert "n/a" not in table["linear"][PPL]
    # no details row for the missing pair
    assert "| lm | linear |" not in md


def test_corrupt_and_incomplete_records_are_listed_as_skipped(tmp_path: Path) -> None:
    corrupt = tmp_path / "runs" / "default" / "listops" / "broken" / "seed0.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text('{"status": "ok", ', encoding="utf-8")
    incomplete = tmp_path / "runs" / "default" / "listops" / "partial" / "seed0.json"
    incomplete.parent.mkdir(parents=True)
    incomplete.write_text('{"schema_version": 1, "status": "ok"}', encoding="utf-8")
    result, md, csv = build(tmp_path, [make_record(value=0.5)])
    assert result.n_records == 1
    assert result.n_skipped == 2
    assert "## Skipped records" in md
    section = md.split("## Skipped records", 1)[1]
    assert f"`{corrupt}`" in section
    assert f"`{incomplete}`" in section
    assert "unreadable record (JSONDecodeError" in section
    assert "incomplete record (missing keys: task" in section
    assert "(2 skipped)" in md
    assert len(pd.read_csv(csv)) == 1


def test_no_skipped_section_when_all_records_are_good(tmp_path: Path) -> None:
    _, md, _ = build(tmp_path, [make_record()])
    assert "Skipped records" not in md


def test_duplicate_run_is_skipped_not_double_counted(tmp_path: Path) -> None:
    files = write_all(tmp_path / "a", [make_record(value=0.4)])
    files += write_all(tmp_path / "b", [make_record(value=0.9)])
    result = build_leaderboard(files, tmp_path / "lb.md", tmp_path / "lb.csv")
    assert result.n_records == 1
    assert result.skipped[0][0] == files[1]
    assert "duplicate run" in result.skipped[0][1]
    assert main_table(result.markdown)["vanilla"][ACC] == "40.00 (n=1)"


def test_csv_one_row_per_record_round_trips(tmp_path: Path) -> None:
    records = [
        make_record(seed=0, value=0.40),
        make_record(seed=1, value=0.55),
        make_record(variant="bigbird", status="n/a", reason="no causal mask"),
        make_record("lm", seed=0, value=11.25),
    ]
    result, _, csv = build(tmp_path, records)
    frame = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert len(frame) == len(records) == result.n_records
    expected = {
        "profile", "task", "task_family", "dataset", "dataset_source", "stand_in", "variant",
        "seed", "status", "reason", "metric", "higher_is_better", "value", "val_value",
        "best_step", "n_params", "train_time_s", "wall_time_s", "tokens_per_s",
        "peak_memory_bytes", "device", "git_commit", "config_hash", "record_path",
    }  # fmt: skip
    assert expected <= set(frame.columns)
    assert list(frame.columns) == list(CSV_COLUMNS)
    row = frame[(frame["task"] == "listops") & (frame["seed"] == 1)].iloc[0]
    assert row["value"] == 0.55
    assert row["val_value"] == pytest.approx(0.56)
    assert row["metric"] == "accuracy"
    assert bool(row["higher_is_better"]) is True
    assert row["n_params"] == 1234567
    assert row["peak_memory_bytes"] == 2 * 2**20
    assert row["device"] == "cpu (2 threads)"
    assert row["dataset_source"] == "generated"
    assert Path(row["record_path"]) == record_path(
        tmp_path / "runs", "default", "listops", "vanilla", 1
    )
    na_row = frame[frame["variant"] == "bigbird"].iloc[0]
    assert na_row["status"] == "n/a"
    assert na_row["reason"] == "no causal mask"
    assert pd.isna(na_row["value"])
    lm_row = frame[frame["task"] == "lm"].iloc[0]
    assert lm_row["value"] == 11.25
    assert bool(lm_row["higher_is_better"]) is False
    # integers stay integers in the file
    assert ",1234567," in csv.read_text(encoding="utf-8")
    pd.testing.assert_frame_equal(
        frame[["task", "variant", "seed", "value"]].reset_index(drop=True),
        result.frame[["task", "variant", "seed", "value"]]
        .astype({"seed": "int64"})
        .reset_index(drop=True),
        check_dtype=False,
    )


def test_records_frame_tolerates_sparse_records() -> None:
    rec = make_record()
    for key in ("dataset", "device", "tokens_per_s", "git_commit", "task_family"):
        rec.pop(key)
    rec["_path"] = "x.json"
    frame = records_frame([rec])
    assert len(frame) == 1
    assert pd.isna(frame.loc[0, "device"])
    assert frame.loc[0, "record_path"] == "x.json"


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    records = [
        make_record(seed=0, value=0.40),
        make_record(seed=1, status="failed", reason="boom"),
        make_record(variant="bigbird", status="n/a", reason="no causal mask"),
        make_record("lm", seed=0, value=11.25),
    ]
    files = write_all(tmp_path / "runs", records)
    bad = tmp_path / "runs" / "bad.json"
    bad.write_text("not json", encoding="utf-8")
    files.append(bad)
    first_md, first_csv = tmp_path / "1.md", tmp_path / "1.csv"
    second_md, second_csv = tmp_path / "2.md", tmp_path / "2.csv"
    build_leaderboard(files, first_md, first_csv)
    build_leaderboard(list(reversed(files)), second_md, second_csv)
    assert first_md.read_bytes() == second_md.read_bytes()
    assert first_csv.read_bytes() == second_csv.read_bytes()
    build_leaderboard(files, first_md, first_csv)  # overwrite in place
    assert first_md.read_bytes() == second_md.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
    # no generation date or time anywhere
    assert not re.search(r"\d{4}-\d{2}-\d{2}|\d{2}:\d{2}:\d{2}", first_md.read_text("utf-8"))


def test_sections_datasets_details_baselines_footer(tmp_path: Path) -> None:
    records = [
        make_record(seed=0, value=0.4),
        make_record(seed=1, value=0.5, git_commit="def456"),
        make_record("lm", seed=0, value=10.0, dataset={"name": "tiny"}),
    ]
    result, md, _ = build(tmp_path, records)
    assert md.startswith("# attnbench leaderboard\n")
    assert "3 run record(s)" in md and "profile(s): `default`" in md
    datasets = md.split("## Datasets", 1)[1].split("##", 1)[0]
    assert (
        r"- **listops**: `listops-data` (source: generated) — generated. listops \| test data"
        in datasets
    )
    assert "- **lm**: `tiny` — unknown provenance." in datasets
    # details: thousands separators, mean train time, MiB, device
    assert (
        "| listops | vanilla | 0, 1 | 2 ok | 1,234,567 | 10.5 | 5,000 | 2.0 | cpu (2 threads) |"
        in md
    )
    # baselines scaled like the metric, the strongest marked
    assert "- **listops** (accuracy (%)): majority_class 18.00 (strongest)" in md
    assert "- **lm** (perplexity): kn 40.00 (strongest), unigram 50.00" in md
    # mixed commits visible in the footer
    footer = md.split("## Reproducibility", 1)[1]
    assert "git commit(s) ⚠ mixed commits: `abc123`, `def456`" in footer
    assert result.profiles == ["default"]


def test_stand_in_dataset_is_labelled(tmp_path: Path) -> None:
    _, md, _ = build(tmp_path, [make_record("lm", value=10.0)])
    assert "`lm-data` (source: bundled) — offline stand-in." in md


def test_profiles_are_not_mixed(tmp_path: Path) -> None:
    records = [
        make_record(value=0.4, profile="default"),
        make_record(value=0.8, profile="full"),
    ]
    result, md, _ = build(tmp_path, records)
    assert result.profiles == ["default", "full"]
    assert "profile(s): `default`, `full`" in md
    # one signal check per profile at the top, then one results section per profile
    checks, results = md.split("## Datasets")
    check_default, check_full = checks.split("## Signal check: profile `full`")
    assert "## Signal check: profile `default`" in check_default
    assert "| 40.00 (n=1) |" in check_default and "80.00" not in check_default
    assert "| 80.00 (n=1) |" in check_full
    default, full = results.split("## Results: profile `full`")
    assert "40.00 (n=1)" in default and "80.00" not in default
    assert "80.00 (n=1)" in full


def test_gfm_tables_have_consistent_columns(tmp_path: Path) -> None:
    records = [
        make_record(value=0.5),
        make_record(variant="x|y", status="failed", reason="a | b\nc"),
        make_record("lm", value=10.0),
    ]
    _, md, _ = build(tmp_path, records)
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            width = len(split_row(line))
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                assert len(split_row(lines[j])) == width, lines[j]
                j += 1
    assert r"a \| b c" in footnotes(md).values()


def test_empty_input_still_builds(tmp_path: Path) -> None:
    result = build_leaderboard([], tmp_path / "lb.md", tmp_path / "lb.csv")
    assert result.n_records == 0
    assert (tmp_path / "lb.md").read_text(encoding="utf-8").startswith("# attnbench leaderboard")
    assert list(pd.read_csv(tmp_path / "lb.csv").columns) == list(CSV_COLUMNS)


def test_load_records_is_the_reader(tmp_path: Path) -> None:
    """The CSV ``record_path`` is what ``load_records`` reports as ``_path``."""
    files = write_all(tmp_path / "runs", [make_record()])
    records, _ = load_records(files)
    assert records_frame(records).loc[0, "record_path"] == str(files[0])


def test_ranks_and_family_average(tmp_path: Path) -> None:
    records = []
    for task, scores in {"listops": (0.5, 0.7, 0.6), "text": (0.8, 0.6, 0.6)}.items():
        for variant, value in zip(("vanilla", "linear", "local"), scores, strict=True):
            seeds = (value - 0.01, value + 0.01) if variant == "vanilla" else (value,)
            for seed, x in enumerate(seeds):
                records.append(
                    make_record(task, variant=variant, seed=seed, value=x, task_family="lra")
                )
    # lower-is-better: ranked, not averaged in
    records += [make_record("lm", value=12.0), make_record("lm", seed=1, value=12.2)]
    _, md, _ = build(tmp_path, records)
    table = main_table(md)
    # family average = mean of the task columns (in %); lm stays out of it
    assert [table[v]["lra stand-ins avg (2) ↑"] for v in ("vanilla", "linear", "local")] == [
        "65.00",
        "65.00",
        "60.00",
    ]
    # ranks: listops linear 1, local 2, vanilla 3; text vanilla 1, linear = local = 2.5
    assert table["linear"]["mean rank ↓"] == "1.8"  # (1 + 2.5) / 2
    ranks = md.split("### Ranks", 1)[1]
    assert "| linear | 1 | — | 2.5 | 1.8 |" in ranks
    assert "| `vanilla` | 3 | 1 | 1 | 1.7 |" in ranks


def test_family_average_needs_every_task(tmp_path: Path) -> None:
    records = [
        make_record("listops", variant="vanilla", value=0.49),
        make_record("listops", variant="vanilla", seed=1, value=0.51),
        make_record("text", variant="vanilla", value=0.59, task_family="lra"),
        make_record("text", variant="vanilla", seed=1, value=0.61, task_family="lra"),
        make_record("listops", variant="linear", value=0.5),
        make_record("text", variant="linear", status="n/a", reason="r", task_family="lra"),
    ]
    table = main_table(build(tmp_path, records)[1])
    assert table["vanilla"]["lra stand-ins avg (2) ↑"] == "55.00"
    assert table["linear"]["lra stand-ins avg (2) ↑"] == "—"


def _seeded(task: str, variant: str, values: list[float], **extra: Any) -> list[dict[str, Any]]:
    """Records of one (task, variant), one per seed value."""
    return [
        make_record(task, variant=variant, seed=seed, value=value, **extra)
        for seed, value in enumerate(values)
    ]


def test_noise_task_is_marked_and_left_out_planted_difference_is_marked(tmp_path: Path) -> None:
    records = [
        *_seeded("listops", "vanilla", [0.50, 0.51, 0.52]),
        *_seeded("listops", "linear", [0.90]),  # planted: 39 points better
        *_seeded("listops", "local", [0.505]),
        *_seeded("text", "vanilla", [0.50, 0.51, 0.49], task_family="lra"),
        *_seeded("text", "linear", [0.95], task_family="lra"),  # on a task without signal
        *_seeded("text", "local", [0.20], task_family="lra"),
    ]
    for rec in records:
        if rec["task"] == "text":
            rec["metrics"]["baselines"] = {"majority_class": 0.5}
    result, md, _ = build(tmp_path, records)
    raw = main_table(md, raw=True)
    text_header = next(h for h in raw["vanilla"] if h.startswith("text "))
    label = re.fullmatch(r"text accuracy \(%\) ↑ ⚠ no signal\[\^(\d+)\]", text_header)
    assert label, text_header
    note = footnotes(md)[label.group(1)]
    assert "does not beat the strongest trivial baseline (majority_class)" in note
    table = main_table(md)
    text = "text accuracy (%) ↑"
    # the planted difference: signal, ▲ on the right variant only
    signal = md.split("## Signal check", 1)[1].split("##", 1)[0]
    assert re.search(r"^\| listops \|.*\| \*\*signal\*\* \|$", signal, re.MULTILINE)
    assert re.search(r"^\| text \|.*\| ⚠ no signal: .*does not beat", signal, re.MULTILINE)
    assert table["linear"][ACC] == "**90.00 (n=1)** ▲"
    assert table["local"][ACC] == "50.50 (n=1)"
    # the noise task: shown, never marked, bolded, ranked or averaged
    assert table["linear"][text] == "95.00 (n=1)"
    assert table["local"][text] == "20.00 (n=1)"
    assert all("▲" not in row[text] and "▼" not in row[text] for row in table.values())
    ranks = md.split("### Ranks", 1)[1].split("###", 1)[0]
    assert "| variant | listops | mean rank |" in ranks
    assert "| linear | 1 | 1.0 |" in ranks
    family = "lra stand-ins avg (1 of 2 with signal) ↑"
    assert [table[v][family] for v in ("vanilla", "linear", "local")] == ["51.00", "90.00", "50.50"]
    assert result.analysis is not None
    assert set(result.analysis.comparisons) == {
        ("default", "listops", "linear"),
        ("default", "listops", "local"),
    }
    assert "Holm–Bonferroni correction over all 2 comparison(s)" in md


def test_dense_cell_is_shown_unranked_untested(tmp_path: Path) -> None:
    reason = "window 32 ≥ n = 25"
    records = [
        *_seeded("listops", "vanilla", [0.50, 0.51, 0.52]),
        *_seeded("listops", "local-32", [0.99], dense_at_length=reason),
        *_seeded("listops", "linear", [0.40]),
        *_seeded("text", "vanilla", [0.70, 0.71, 0.72], task_family="lra"),
        *_seeded("text", "local-32", [0.70], task_family="lra"),
        *_seeded("text", "linear", [0.71], task_family="lra"),
    ]
    result, md, _ = build(tmp_path, records)
    table = main_table(md)
    cell = re.fullmatch(r"99\.00 \(n=1\) \(dense\)\[\^(\d+)\]", table["local-32"][ACC])
    assert cell, table["local-32"][ACC]
    assert reason in footnotes(md)[cell.group(1)]
    assert table["vanilla"][ACC] == "**51.00 ± 1.00 (n=3)**"  # best among ranked cells
    ranks = md.split("### Ranks", 1)[1].split("###", 1)[0]
    assert "| local-32 | — | 3 | 3.0 |" in ranks  # text: vanilla = linear = 1.5
    assert table["local-32"]["lra stand-ins avg (2) ↑"] == "—"
    assert result.analysis is not None
    assert ("default", "listops", "local-32") not in result.analysis.comparisons
    assert ("default", "text", "local-32") in result.analysis.comparisons


def test_control_row_and_baseline_row(tmp_path: Path) -> None:
    records = [
        *_seeded("listops", "vanilla", [0.50, 0.51, 0.52]),
        *_seeded("listops", "a-none", [0.18], capabilities={"mixes_tokens": False}),
        *_seeded("listops", "linear", [0.49]),
        *_seeded("lm", "vanilla", [10.0, 10.2]),
    ]
    result, md, _ = build(tmp_path, records)
    table = main_table(md)
    control = "a-none (control: no token mixing)"
    assert list(table) == ["vanilla", "linear", control, "*strongest trivial baseline*"]
    assert result.variants == ["vanilla", "linear", "a-none"]
    assert table["*strongest trivial baseline*"][ACC] == "18.00"
    assert table["*strongest trivial baseline*"][PPL] == "40.00"  # kn beats unigram
    assert table[control][ACC] == "18.00 (n=1) ▼"
    signal = md.split("## Signal check", 1)[1].split("##", 1)[0]
    assert "| a-none 18.00 |" in signal  # the control's mean in the signal check
    assert "| majority_class 18.00 |" in signal


def test_reference_variant_from_records(tmp_path: Path) -> None:
    ref = {"reference_variant": "softmax"}
    records = [
        *_seeded("listops", "softmax", [0.50, 0.51, 0.52], **ref),
        *_seeded("listops", "vanilla", [0.10], **ref),
        *_seeded("listops", "zeta", [0.505], **ref),
    ]
    _, md, _ = build(tmp_path, records)
    assert list(main_table(md))[:3] == ["softmax", "vanilla", "zeta"]
    assert "| `softmax` |" in md
    assert main_table(md)["vanilla"][ACC] == "10.00 (n=1) ▼"
    assert "than the reference `softmax`" in md
    assert "| reference `softmax`: mean ± std (n) |" in md


def test_significance_marks_and_manifest(tmp_path: Path) -> None:
    """▲/▼ come from the seed-level test; the paired bootstrap stays in the manifest."""
    import json

    gold = [i % 2 for i in range(200)]
    weak = [g if i % 2 else 1 - g for i, g in enumerate(gold)]  # 50% right

    def improved(k: int) -> list[int]:
        return [g if i < 2 * k else p for i, (p, g) in enumerate(zip(weak, gold, strict=True))]

    runs = {("vanilla", s): improved(s) for s in range(3)}  # 50.0, 50.5, 51.0 %
    runs[("strong", 0)] = gold
    runs[("same", 0)] = weak
    records = []
    for (variant, seed), predictions in runs.items():
        correct = sum(p == g for p, g in zip(predictions, gold, strict=True))
        rec = make_record(variant=variant, seed=seed, value=correct / 200)
        rec["artifacts"] = {"predictions": f"seed{seed}.predictions.jsonl"}
        records.append(rec)
    files = write_all(tmp_path / "runs", records)
    for file in files:
        variant, seed = file.parent.name, int(file.stem[len("seed") :])
        lines = [
            json.dumps({"index": i, "prediction": p, "target": g})
            for i, (p, g) in enumerate(zip(runs[(variant, seed)], gold, strict=True))
        ]
        (file.parent / f"seed{seed}.predictions.jsonl").write_text("\n".join(lines) + "\n")
    md_path, manifest_path = tmp_path / "lb.md", tmp_path / "manifest.json"
    result = build_leaderboard(files, md_path, tmp_path / "lb.csv", manifest_json=manifest_path)
    table = main_table(result.markdown)
    assert table["strong"][ACC].endswith("▲")
    assert "▲" not in table["same"][ACC] and "▼" not in table["same"][ACC]
    manifest = json.loads(manifest_path.read_text())
    info = manifest["profiles"]["default"]
    assert info["seeds"] == [0, 1, 2] and info["command"] == "snakemake --cores all"
    assert {r["variant"] for r in info["runs"]} == {v for v, _ in runs}
    tested = {t["variant"]: t for t in manifest["significance"]}
    assert tested["strong"]["significant"] and not tested["same"]["significant"]
    assert tested["strong"]["method"] == "prediction-interval t-test"
    assert tested["strong"]["mark"] == "▲" and tested["strong"]["p_holm"] <= 0.05
    assert manifest["alpha"] == 0.05
    assert manifest["reference_variants"] == {"default": "vanilla"}
    assert [s["verdict"] for s in manifest["signal"]] == ["signal"]
    # the paired bootstrap (extra information) pairs each seed with vanilla's same seed
    boot = {(t["variant"], t["seed"]): t for t in manifest["paired_bootstrap"]}
    assert set(boot) == {("strong", 0), ("same", 0)}
    assert boot[("strong", 0)]["significant"] and not boot[("same", 0)]["significant"]
    assert "Paired bootstrap tests over the test examples" in result.markdown


# --------------------------------------------------------------------------- averages

LRA_FIVE = ("listops", "text", "retrieval", "image", "pathfinder")
LRA_AVERAGES = [["LRA", 5], ["LRA with Path-X", 6]]


def _family(tasks: dict[str, list[list[Any]] | None], family: str = "lra") -> list[dict[str, Any]]:
    """Per task: the reference at 3 seeds (signal against the 18% baseline), linear at 1
    seed (60%, 61%, ... by task order). ``tasks``: name -> its ``task_averages`` (None:
    the key is left out, as in older records)."""
    records = []
    for i, (task, averages) in enumerate(tasks.items()):
        extra: dict[str, Any] = {
            "task_family": family,
            "dataset": {"name": task, "source": "lra-release", "stand_in": False},
        }
        if averages is not None:
            extra["task_averages"] = averages
        records += _seeded(task, "vanilla", [0.50, 0.51, 0.52], **extra)
        records += _seeded(task, "linear", [0.60 + 0.01 * i], **extra)
    return records


def _averages(table: dict[str, dict[str, str]]) -> list[str]:
    """The average columns of a main table, in order."""
    return [h for h in table["vanilla"] if " avg " in h]


def test_published_average_needs_all_of_its_tasks(tmp_path: Path) -> None:
    table = main_table(build(tmp_path / "all", _family(dict.fromkeys(LRA_FIVE, LRA_AVERAGES)))[1])
    # the five LRA tasks: LRA's average; not the one with Path-X (pathx is missing); the
    # family average over the same tasks is not repeated
    assert _averages(table) == ["LRA avg (5) ↑"]
    assert table["vanilla"]["LRA avg (5) ↑"] == "51.00"
    assert table["linear"]["LRA avg (5) ↑"] == "62.00"  # mean of 60 ... 64

    four = dict.fromkeys(LRA_FIVE[:4], LRA_AVERAGES)
    table = main_table(build(tmp_path / "four", _family(four))[1])
    assert _averages(table) == ["lra avg (4) ↑"]  # only the family average

    six = {**dict.fromkeys(LRA_FIVE, LRA_AVERAGES), "pathx": [["LRA with Path-X", 6]]}
    table = main_table(build(tmp_path / "six", _family(six))[1])
    assert _averages(table) == ["LRA avg (5) ↑", "LRA with Path-X avg (6) ↑"]
    assert table["linear"]["LRA with Path-X avg (6) ↑"] == "62.50"


def test_published_average_comes_from_metadata_not_task_names(tmp_path: Path) -> None:
    # LRA's task names without task_averages (older records): no LRA average
    table = main_table(build(tmp_path / "old", _family(dict.fromkeys(LRA_FIVE)))[1])
    assert _averages(table) == ["lra avg (5) ↑"]
    # a single task called listops is no LRA either
    table = main_table(build(tmp_path / "one", _family({"listops": None}))[1])
    assert _averages(table) == []
    # any names, any label: the records say what they average
    pair = _family({"alpha": [["Pair", 2]], "beta": [["Pair", 2]]}, family="custom")
    table = main_table(build(tmp_path / "pair", pair)[1])
    assert _averages(table) == ["Pair avg (2) ↑"]  # the family average is the same tasks


def test_published_average_uses_the_tasks_with_signal(tmp_path: Path) -> None:
    records = _family(dict.fromkeys(LRA_FIVE, LRA_AVERAGES))
    for record in records:
        if record["task"] == "image":
            record["metrics"]["baselines"] = {"majority_class": 0.9}  # no signal on image
    table = main_table(build(tmp_path, records)[1])
    assert _averages(table) == ["LRA avg (4 of 5 with signal) ↑"]
    assert table["linear"]["LRA avg (4 of 5 with signal) ↑"] == "61.75"  # 60, 61, 62, 64 %


def test_reproducibility_lists_every_recorded_library_in_record_order() -> None:
    records = [
        make_record(seed=0, versions={"torch": "2.4", "python": "3.11", "zlib": "1.3"}),
        make_record(seed=1, versions={"torch": "2.5", "newlib": "0.1"}),
    ]
    for i, record in enumerate(records):
        record["_path"] = f"seed{i}.json"
    markdown = render_markdown(records_frame(records), records, [])
    assert "  - versions: torch 2.4/2.5, python 3.11, zlib 1.3, newlib 0.1\n" in markdown


def test_reference_default_comes_from_the_record_format() -> None:
    """The default reference is defined once, in attnbench.records; no name in this code."""
    import importlib

    from attnbench import significance

    package = Path(str(importlib.import_module("attnbench.leaderboard").__file__)).parent
    modules = ["figures", "report", "significance", "verdicts"]
    sources = [*package.glob("*.py")] + [
        Path(str(importlib.import_module(f"attnbench.{name}").__file__)) for name in modules
    ]
    assert len(sources) >= 9
    for source in sources:
        assert DEFAULT_REFERENCE not in source.read_text(encoding="utf-8"), source
    assert significance.reference_variant([{"profile": "p"}]) == DEFAULT_REFERENCE


# --------------------------------------------------------------------------- command line


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_only_the_outputs_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_all(tmp_path / "runs", [make_record(value=0.5)])
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    old = ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "manifest.json")
    for name in old:
        (results / name).write_text("old\n")
    code, out, err = run_cli(["leaderboard", "--runs", "runs", "--md", "out/lb.md"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "lb.md").read_text().startswith("# attnbench leaderboard")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".lb.md.lock", "lb.md"]
    assert sorted(p.name for p in results.iterdir()) == sorted(old)  # no plots either
    assert all((results / name).read_text() == "old\n" for name in old)
    assert out == "leaderboard: 1 record(s), 0 skipped → out/lb.md\n"


def test_cli_without_outputs_writes_the_default_markdown_and_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_all(tmp_path / "runs", [make_record(value=0.5)])
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["leaderboard", "--runs", "runs"], capsys)
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert written == [".leaderboard.md.lock", "leaderboard.csv", "leaderboard.md"]


def test_cli_writes_every_output_the_workflow_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The leaderboard rule's command line (workflow/rules/leaderboard.smk) gets all five."""
    records = [*_seeded("listops", "vanilla", [0.50, 0.51, 0.52]), make_record(variant="linear")]
    files = write_all(tmp_path / "runs", records)
    out = tmp_path / "results"
    argv = ["leaderboard", "--records", *map(str, files), "--md", str(out / "leaderboard.md")]
    argv += ["--csv", str(out / "leaderboard.csv"), "--html", str(out / "leaderboard.html")]
    argv += ["--manifest", str(out / "manifest.json"), "--plots", str(out / "plots")]
    argv += ["--analysis", str(tmp_path / "analysis"), "--bench", str(tmp_path / "bench")]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "manifest.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "plots" / "task_default_listops.png").is_file()


@pytest.mark.parametrize("exists", [True, False])
def test_cli_refuses_an_empty_record_set(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exists: bool,
) -> None:
    runs = tmp_path / "runs"
    if exists:
        runs.mkdir()
    monkeypatch.chdir(tmp_path)
    for outputs in ([], ["--md", "out/lb.md", "--csv", "out/lb.csv", "--plots", "out/plots"]):
        code, out, err = run_cli(["leaderboard", "--runs", str(runs), *outputs], capsys)
        assert code == 2
        assert out == "" and len(err.strip().splitlines()) == 1
        assert f"no run records under {runs}" in err
        assert ("no such directory" in err) is not exists
        assert list(tmp_path.iterdir()) == ([runs] if exists else [])  # nothing written
    code, _, err = run_cli(["leaderboard", "--records", "--md", "lb.md"], capsys)
    assert code == 2 and "--records names no record files" in err
    assert list(tmp_path.iterdir()) == ([runs] if exists else [])
