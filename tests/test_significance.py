"""Paired bootstrap tests against the reference: constructed cases with known answers.

The seed-level tests (Welch, prediction interval, Holm) are in tests/test_verdicts.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm

from attnbench import significance as sig


def _run(tmp: Path, name: str, metric: str, rows: list[dict], **extra) -> dict:
    """A minimal ok record with its predictions file, as the runner writes them."""
    folder = tmp / name
    folder.mkdir(parents=True)
    (folder / "seed0.predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    artifacts = {"predictions": "seed0.predictions.jsonl"}
    for kind, (file, data) in extra.items():
        np.save(folder / file, np.asarray(data))
        artifacts[kind] = file
    return {
        "status": "ok",
        "profile": "p",
        "task": "t",
        "variant": name,
        "seed": 0,
        "metric": {"name": metric, "higher_is_better": metric != "perplexity"},
        "artifacts": artifacts,
        "_path": str(folder / "seed0.json"),
    }


def _classification(predictions: np.ndarray, targets: np.ndarray) -> list[dict]:
    return [
        {"index": i, "prediction": int(p), "target": int(t)}
        for i, (p, t) in enumerate(zip(predictions, targets, strict=True))
    ]


def test_identical_systems_are_not_significant(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.6, gold, rng.integers(0, 3, 300))
    a = _run(tmp_path, "vanilla", "accuracy", _classification(pred, gold))
    b = _run(tmp_path, "other", "accuracy", _classification(pred, gold))
    result = sig.compare_runs(a, b)
    assert result.delta == 0 and result.p_value == 1.0 and not result.significant


def test_clearly_better_system_is_significant(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 400)
    weak = np.where(rng.random(400) < 0.55, gold, 1 - gold)
    strong = np.where(rng.random(400) < 0.9, gold, 1 - gold)
    a = _run(tmp_path, "vanilla", "accuracy", _classification(weak, gold))
    b = _run(tmp_path, "other", "accuracy", _classification(strong, gold))
    result = sig.compare_runs(a, b)
    assert result.delta == pytest.approx(np.mean(strong == gold) - np.mean(weak == gold))
    assert result.significant and result.p_value < 0.01
    assert result.ci_low > 0 < result.ci_high


def test_small_noisy_difference_is_not_significant(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 2, 60)
    a_pred = np.where(rng.random(60) < 0.7, gold, 1 - gold)
    b_pred = a_pred.copy()
    b_pred[0] = gold[0] if a_pred[0] != gold[0] else 1 - gold[0]  # one example differs
    a = _run(tmp_path, "vanilla", "accuracy", _classification(a_pred, gold))
    b = _run(tmp_path, "other", "accuracy", _classification(b_pred, gold))
    assert not sig.compare_runs(a, b).significant


@pytest.mark.parametrize(
    ("metric", "oracle"),
    [
        ("f1", lambda p, g: skm.f1_score(g, p)),
        ("matthews", lambda p, g: skm.matthews_corrcoef(g, p)),
        ("accuracy", lambda p, g: skm.accuracy_score(g, p)),
    ],
)
def test_resampled_metrics_match_sklearn(metric: str, oracle) -> None:
    rng = np.random.default_rng(3)
    gold, pred = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert sig.EXAMPLE_METRICS[metric](pred, gold) == pytest.approx(oracle(pred, gold))


def test_correlations_match_scipy() -> None:
    rng = np.random.default_rng(4)
    gold = rng.integers(0, 6, 100).astype(float)  # many ties
    pred = gold + rng.normal(0, 2, 100)
    assert sig.EXAMPLE_METRICS["pearson"](pred, gold) == pytest.approx(sps.pearsonr(pred, gold)[0])
    assert sig.EXAMPLE_METRICS["spearman"](pred, gold) == pytest.approx(
        sps.spearmanr(pred, gold)[0]
    )


def test_bleu_test_uses_sacrebleu_scores(tmp_path: Path) -> None:
    from sacrebleu.metrics import BLEU

    refs = [f"the cat number {i} sat on the mat today" for i in range(80)]
    good = list(refs)
    bad = [f"a dog {i} stood" for i in range(80)]

    def rows(hyps: list[str]) -> list[dict]:
        return [
            {"index": i, "hypothesis": h, "reference": r}
            for i, (h, r) in enumerate(zip(hyps, refs, strict=True))
        ]

    a = _run(tmp_path, "vanilla", "bleu", rows(bad))
    b = _run(tmp_path, "other", "bleu", rows(good))
    result = sig.compare_runs(a, b, n_samples=200)
    expected = BLEU().corpus_score(good, [refs]).score - BLEU().corpus_score(bad, [refs]).score
    assert result.delta == pytest.approx(expected)
    assert result.significant
    same = sig.compare_runs(a, _run(tmp_path, "same", "bleu", rows(bad)), n_samples=200)
    assert same.delta == 0 and not same.significant


def test_perplexity_block_bootstrap(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    nll_a = rng.gamma(2.0, 1.0, 4096)
    nll_b = nll_a - 0.5  # uniformly better by half a nat per token
    a = _run(tmp_path, "vanilla", "perplexity", [], nll=("seed0.nll.npy", nll_a))
    b = _run(tmp_path, "other", "perplexity", [], nll=("seed0.nll.npy", nll_b))
    result = sig.compare_runs(a, b, n_samples=300)
    assert result.delta == pytest.approx(np.exp(nll_b.mean()) - np.exp(nll_a.mean()))
    assert result.significant and result.method == "block bootstrap"


def test_word_perplexity_scales_the_token_nll_by_tokens_per_word(tmp_path: Path) -> None:
    """Per word: exp(total NLL / words) = exp(mean token NLL x tokens / words)."""
    rng = np.random.default_rng(6)
    nll_a = rng.gamma(2.0, 0.5, 3000)
    nll_b = nll_a * 0.9
    test = {"tokens": 3000.0, "n_words": 1200.0}
    a = _run(tmp_path, "vanilla", "word_perplexity", [], nll=("seed0.nll.npy", nll_a))
    b = _run(tmp_path, "other", "word_perplexity", [], nll=("seed0.nll.npy", nll_b))
    a["metrics"] = b["metrics"] = {"test": test}
    result = sig.compare_runs(a, b, n_samples=200)
    per_word = np.exp(nll_b.sum() / 1200) - np.exp(nll_a.sum() / 1200)
    assert result.delta == pytest.approx(per_word)
    assert result.significant


def test_unpairable_runs_are_reported_not_compared(tmp_path: Path) -> None:
    gold = np.array([0, 1, 1, 0])
    a = _run(tmp_path, "vanilla", "accuracy", _classification(gold, gold))
    other_gold = np.array([1, 1, 1, 0])
    b = _run(tmp_path, "other", "accuracy", _classification(other_gold, other_gold))
    with pytest.raises(sig.NotComparable, match="targets differ"):
        sig.compare_runs(a, b)
    missing = dict(b, artifacts={}, variant="missing")
    table = sig.versus_baseline([a, b, missing])
    assert "targets differ" in table[("p", "t", "other", 0)]["error"]
    assert "no saved predictions" in table[("p", "t", "missing", 0)]["error"]


def test_versus_baseline_pairs_with_the_records_reference(tmp_path: Path) -> None:
    """The bootstrap's baseline is the profile's ``reference_variant``, not a fixed name."""
    rng = np.random.default_rng(6)
    gold = rng.integers(0, 2, 120)
    weak = np.where(rng.random(120) < 0.5, gold, 1 - gold)
    ref = dict(_run(tmp_path, "softmax", "accuracy", _classification(weak, gold)))
    other = dict(_run(tmp_path, "vanilla", "accuracy", _classification(gold, gold)))
    for record in (ref, other):
        record["reference_variant"] = "softmax"
    table = sig.versus_baseline([ref, other])
    assert set(table) == {("p", "t", "vanilla", 0)}
    assert table[("p", "t", "vanilla", 0)]["significant"]
    assert table[("p", "t", "vanilla", 0)]["delta"] == pytest.approx(1 - np.mean(weak == gold))
    # an explicit baseline still wins over the records
    assert set(sig.versus_baseline([ref, other], "vanilla")) == {("p", "t", "softmax", 0)}


def test_reference_variant_default_and_majority() -> None:
    assert sig.reference_variant([]) == "vanilla"
    assert sig.reference_variant([{"reference_variant": None}]) == "vanilla"
    records = [{"reference_variant": "b"}, {"reference_variant": "a"}, {"reference_variant": "b"}]
    assert sig.reference_variant(records) == "b"
    assert sig.reference_variant(records[:2]) == "a"  # a tie: by name
