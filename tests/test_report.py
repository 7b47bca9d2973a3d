"""The HTML leaderboard and its figures: well-formed, self-contained, images that exist."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from attnbench.records import iter_record_files, record_path, write_record
from attnbench.report import build_report

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}


class _Checker(HTMLParser):
    """Tag balance, image sources, links and ids of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.add(str(attributes["id"]))
        if tag == "img":
            self.images.append(str(attributes.get("src")))
        if tag == "a" and attributes.get("href"):
            self.links.append(str(attributes["href"]))
        if tag in ("script", "link"):
            self.external.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()


#: (variant, seed) -> test accuracy (None: n/a). vanilla, the reference, has 3 seeds.
RUNS = {
    ("vanilla", 0): 0.60,
    ("vanilla", 1): 0.61,
    ("vanilla", 2): 0.62,
    ("linear", 0): 0.90,
    ("no-mixing", 0): 0.50,
    ("no-mixing", 1): 0.52,
    ("reformer", 0): None,
}
#: listops has signal; on text the reference does not beat its strongest baseline.
BASELINES = {"listops": {"majority_class": 0.5}, "text": {"majority_class": 0.62}}


def _records(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 100)
    for task in ("listops", "text"):
        for (variant, seed), accuracy in RUNS.items():
            path = record_path(root, "default", task, variant, seed)
            record = {
                "schema_version": 1,
                "status": "ok" if accuracy else "n/a",
                "reason": None if accuracy else "it is not causal",
                "task": task,
                "task_family": "lra",
                "dataset": {"name": f"{task}-gen", "source": "generated", "stand_in": False},
                "variant": variant,
                "capabilities": {"mixes_tokens": variant != "no-mixing"},
                "reference_variant": "vanilla",
                "dense_at_length": None,
                "seed": seed,
                "profile": "default",
                "metric": {"name": "accuracy", "higher_is_better": True},
                "metrics": {},
                "n_params": 1000,
                "wall_time_s": 1.0,
                "train_time_s": 1.0,
                "tokens_per_s": 1000.0 if variant == "vanilla" else 3000.0,
                "peak_memory_bytes": 2**20,
                "device": {"name": "cpu", "type": "cpu"},
                "git_commit": "abc",
                "config_hash": f"{task}{variant}",
                "versions": {"torch": "2.13.0"},
                "finished_at": "2026-11-21T10:00:00+00:00",
            }
            if accuracy:
                right = round(accuracy * len(gold))  # the first `right` examples are right
                pred = np.where(np.arange(len(gold)) < right, gold, 1 - gold)
                record["metrics"] = {
                    "test": {"accuracy": float(np.mean(pred == gold))},
                    "val": {"accuracy": 0.5},
                    "best_step": 10,
                    "baselines": BASELINES[task],
                }
                record["history"] = [
                    {"step": s, "val": {"accuracy": 0.5 + 0.01 * s}} for s in (10, 20)
                ]
                weights = rng.dirichlet(np.ones(6), size=(2, 2, 6))  # (H, ..) per layer
                record["attention"] = {
                    "available": True,
                    "layers": [
                        {"entropy": 1.2, "sparsity": 0.0, "head_diversity": 0.3},
                        {"entropy": 0.8, "sparsity": 0.1, "head_diversity": None},
                    ],
                }
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path.with_name(f"seed{seed}.attention.npz"), weights=weights.astype("f2"))
                lines = [
                    json.dumps({"index": i, "prediction": int(p), "target": int(g)})
                    for i, (p, g) in enumerate(zip(pred, gold, strict=True))
                ]
                path.with_name(f"seed{seed}.predictions.jsonl").write_text("\n".join(lines) + "\n")
                record["artifacts"] = {
                    "predictions": f"seed{seed}.predictions.jsonl",
                    "attention_maps": f"seed{seed}.attention.npz",
                }
            write_record(path, record)
    return list(iter_record_files(root))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("report")
    files = _records(tmp / "runs")
    (tmp / "runs" / "broken.json").write_text("{not json")
    files.append(tmp / "runs" / "broken.json")
    ablation = tmp / "ablation.json"
    ablation.write_text(
        json.dumps(
            {
                "task": "listops",
                "variant": "vanilla",
                "seed": 0,
                "profile": "default",
                "metric": {"name": "accuracy"},
                "delta_per_head": [[-0.1, 0.0], [0.02, -0.01]],
            }
        )
    )
    out = tmp / "out"
    result = build_report(
        files,
        out / "leaderboard.md",
        out / "leaderboard.csv",
        out_html=out / "leaderboard.html",
        plots_dir=out / "plots",
        manifest_json=out / "manifest.json",
        analysis_files=[ablation],
    )
    return out, result


def test_html_is_well_formed_and_self_contained(built) -> None:
    out, _ = built
    checker = _Checker()
    checker.feed((out / "leaderboard.html").read_text(encoding="utf-8"))
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    assert checker.external == []  # no script, no external stylesheet


def test_html_images_and_links_exist(built) -> None:
    out, _ = built
    checker = _Checker()
    checker.feed((out / "leaderboard.html").read_text(encoding="utf-8"))
    assert len(checker.images) >= 6
    for src in checker.images:
        assert (out / src).is_file(), src
    for href in checker.links:
        if href.startswith("#"):
            assert href[1:] in checker.ids, href  # every cell links to its runs
        else:
            assert (out / href).is_file(), href


def test_figures_cover_every_section(built) -> None:
    out, _ = built
    names = {p.name for p in (out / "plots").iterdir()}
    for stem in (
        "quality_cost_default",
        "task_default_listops",
        "seeds_default_listops",
        "seeds_default_text",
        "curves_default_text",
        "attention_default_listops",
        "attention_maps_default_listops",
        "head_ablation_default_listops-vanilla-seed0",
    ):
        assert {f"{stem}.png", f"{stem}.svg"} <= names, stem


def test_seed_figures_show_seeds_error_bars_and_baseline(built) -> None:
    """The seed-spread figure has one point per seed and the baseline line; bars, error bars."""
    out, _ = built
    spread = (out / "plots" / "seeds_default_listops.svg").read_text(encoding="utf-8")
    assert "strongest baseline: majority_class" in spread
    assert "vanilla (reference) seeds" in spread
    bars = (out / "plots" / "task_default_listops.svg").read_text(encoding="utf-8")
    assert "vanilla (n=3)" in bars and "linear (n=1)" in bars
    assert "mean ± seed std" in bars


def test_seed_spread_points_match_the_records(tmp_path: Path) -> None:
    """Every ok seed is one point at its value (scaled), in variant order."""
    from matplotlib.collections import PathCollection

    from attnbench import figures

    records = []
    for (variant, seed), accuracy in RUNS.items():
        if accuracy is not None:
            records.append(
                {
                    "profile": "p",
                    "task": "t",
                    "variant": variant,
                    "seed": seed,
                    "status": "ok",
                    "metric": {"name": "accuracy", "higher_is_better": True},
                    "metrics": {"test": {"accuracy": accuracy}, "baselines": {"maj": 0.5}},
                    "capabilities": {"mixes_tokens": variant != "no-mixing"},
                }
            )
    drawn = []
    original = figures._save

    def keep(fig, out_dir, stem):
        drawn.append(fig)
        return original(fig, out_dir, stem)

    figures._save = keep
    try:
        figures.plot_seed_spread(records, "p", tmp_path)
    finally:
        figures._save = original
    (ax,) = drawn[0].axes
    points = [c.get_offsets().tolist() for c in ax.collections if isinstance(c, PathCollection)]
    assert points == [
        [[0, 60.0], [0, 61.0], [0, 62.0]],  # the reference first
        [[1, 90.0]],
        [[2, 50.0], [2, 52.0]],  # the control last
    ]
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [50.0]  # the baseline


def test_html_shows_na_significance_signal_and_skipped(built) -> None:
    out, result = built
    page = (out / "leaderboard.html").read_text(encoding="utf-8")
    assert "n/a" in page and "it is not causal" in page
    # linear is 29 points above vanilla's three seeds (std 1 point): ▲ in its listops cell
    assert '90.00 (n=1) <span class="up">▲</span>' in page
    assert page.count('<span class="up">▲</span>') == 1  # not on text: no signal there
    assert "Signal check" in page and "Heineman et al. 2025" in page
    assert '<th class="nosignal">text accuracy (%) ↑ ⚠ no signal<sup>' in page
    assert '<tr class="baseline"><td><em>strongest trivial baseline</em></td>' in page
    assert "no-mixing</code> (control: no token mixing)" in page
    assert "Holm–Bonferroni" in page
    assert "broken.json" in page and "Skipped records" in page
    assert result.n_skipped == 1
