"""Is a variant's difference from the reference real? Seed-level tests, and paired bootstraps.

**Seed-level tests (these set the leaderboard's ▲/▼).** A claim compares a variant
with the profile's reference variant (``record["reference_variant"]``, default
:data:`attnbench.records.DEFAULT_REFERENCE`) on one task, using the per-seed test
values of the primary metric:

* with ≥ 2 seeds on each side, Welch's t-test (unequal variances, Welch–Satterthwaite
  degrees of freedom);
* with 1 seed of the variant and ≥ 3 of the reference, a prediction-interval t-test
  against the reference's seed distribution: t = (x − mean_ref) / (s_ref·√(1 + 1/n_ref)),
  df = n_ref − 1. It assumes the variant's seed noise equals the reference's (a single
  seed cannot estimate its own);
* any other pair is not testable (:class:`NotComparable`).

p-values are two-sided, from the Student-t distribution computed here (a regularised
incomplete beta function by continued fraction; scipy is not a run-time dependency).
:func:`holm` is the Holm–Bonferroni step-down correction for a family of tests.

**Paired bootstraps over test examples (extra information).** Every ok run saves its
per-example test predictions beside its record (``<stem>.predictions.jsonl``), in
test-set order. Two runs of the same task and seed on the same test set are paired
example by example, and the test resamples examples with replacement (Koehn 2004,
"Statistical Significance Tests for Machine Translation Evaluation"; Berg-Kirkpatrick
et al. 2012, "An Empirical Investigation of Statistical Significance in NLP"). This
measures test-set sampling noise for one pair of trained models, not the seed-to-seed
noise of training, so it does not decide the leaderboard's marks:

* δ = metric(B) − metric(A) on the whole test set;
* for each of ``n_samples`` resamples, δ*ᵢ = metric(B*) − metric(A*) on the same
  resampled indices (the metric is recomputed, so F1, MCC and correlations are
  handled exactly, not as per-example averages);
* p = (1 + #{|δ*ᵢ − mean δ*| ≥ |δ|}) / (1 + n_samples), two-sided, under the null
  hypothesis obtained by centring the bootstrap distribution; 95% CI of δ from the
  2.5/97.5 percentiles. Significant at 95% when p < 0.05.

BLEU is resampled the way sacrebleu's own paired test does it: from sacrebleu's
per-sentence sufficient statistics of the saved detokenized hypotheses and
references, so each resample's score is exactly sacrebleu's corpus BLEU.
Perplexity is resampled over contiguous blocks of tokens (a block bootstrap),
since neighbouring tokens are not independent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnbench import metrics as M
from attnbench.records import DEFAULT_REFERENCE

ALPHA = 0.05
N_SAMPLES = 1000
SEED = 12345  # sacrebleu's default bootstrap seed, used for every test here
NLL_BLOCK = 128  # tokens per block in the perplexity block bootstrap


@dataclass(frozen=True)
class TestResult:
    """Outcome of one paired test of system B against system A (the baseline)."""

    metric: str
    delta: float  # metric(B) - metric(A), in the metric's own units
    p_value: float
    ci_low: float  # 95% bootstrap interval of delta
    ci_high: float
    n: int  # paired examples (or token blocks)
    method: str

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


class NotComparable(ValueError):
    """The two runs cannot be paired (different test sets, missing predictions ...)."""


# ---------------------------------------------------------------------------------------
# The Student-t distribution (no scipy at run time)
# ---------------------------------------------------------------------------------------
_CF_EPS = 1e-16
_CF_TINY = 1e-300
_CF_MAX_ITERATIONS = 10_000


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
    h = d
    for m in range(1, _CF_MAX_ITERATIONS + 1):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _CF_TINY else _CF_TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _CF_TINY else _CF_TINY
            step = d * c
            h *= step
        if abs(step - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def regularized_incomplete_beta(a: float, b: float, x: float, y: float | None = None) -> float:
    """I_x(a, b), the regularised incomplete beta function, for a, b > 0 and 0 ≤ x ≤ 1.

    ``y`` is 1 − x when the caller knows it more precisely than ``1 - x`` (small tails).
    """
    if a <= 0 or b <= 0:
        raise ValueError("a and b must be positive")
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, y) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for T ~ Student-t with ``df`` > 0 degrees of freedom."""
    if not df > 0:
        raise ValueError("degrees of freedom must be positive")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    t2 = t * t
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for T ~ Student-t with ``df`` > 0 degrees of freedom."""
    half_tail = t_two_sided_p(t, df) / 2.0
    return 1.0 - half_tail if t > 0 else half_tail


# ---------------------------------------------------------------------------------------
# Seed-level tests: a variant's seeds against the reference's seeds
# ---------------------------------------------------------------------------------------
WELCH = "Welch t-test"
PREDICTION = "prediction-interval t-test"


@dataclass(frozen=True)
class SeedTest:
    """A seed-level test of a variant against the reference on one task.

    ``delta`` = mean(variant) − mean(reference) in the metric's own units (not oriented
    by the metric's direction); ``p_value`` is two-sided.
    """

    delta: float
    t: float
    df: float
    p_value: float
    n_variant: int
    n_reference: int
    method: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample variance (ddof = 1; 0 for a single value)."""
    n = len(values)
    if min(values) == max(values):  # exactly: no rounding noise from the mean
        return float(values[0]), 0.0
    mean = math.fsum(values) / n
    return mean, math.fsum((v - mean) ** 2 for v in values) / (n - 1)


def welch_test(variant: Sequence[float], reference: Sequence[float]) -> SeedTest:
    """Welch's unequal-variance t-test of two samples of ≥ 2 seeds each (two-sided)."""
    nv, nr = len(variant), len(reference)
    if nv < 2 or nr < 2:
        raise NotComparable("Welch's test needs at least 2 seeds on each side")
    mv, vv = _mean_var(variant)
    mr, vr = _mean_var(reference)
    av, ar = vv / nv, vr / nr
    if av + ar == 0.0:
        raise NotComparable("every seed gave the same value on both sides: no noise estimate")
    t = (mv - mr) / math.sqrt(av + ar)
    df = (av + ar) ** 2 / (av**2 / (nv - 1) + ar**2 / (nr - 1))
    return SeedTest(mv - mr, t, df, t_two_sided_p(t, df), nv, nr, WELCH)


def prediction_test(value: float, reference: Sequence[float]) -> SeedTest:
    """One seed of a variant against the reference's seed distribution (≥ 3 seeds).

    t = (x − mean_ref) / (s_ref·√(1 + 1/n_ref)) with n_ref − 1 degrees of freedom: exact
    when seed values are normal and the variant's seed noise equals the reference's.
    """
    nr = len(reference)
    if nr < 3:
        raise NotComparable("a single seed is tested only against ≥ 3 seeds of the reference")
    mr, vr = _mean_var(reference)
    if vr == 0.0:
        raise NotComparable("every seed of the reference gave the same value: no noise estimate")
    t = (value - mr) / (math.sqrt(vr) * math.sqrt(1.0 + 1.0 / nr))
    df = float(nr - 1)
    return SeedTest(value - mr, t, df, t_two_sided_p(t, df), 1, nr, PREDICTION)


def seed_test(variant: Sequence[float], reference: Sequence[float]) -> SeedTest:
    """The seed-level test that applies to these seed counts (raises :class:`NotComparable`).

    ≥ 2 seeds each: :func:`welch_test`; 1 seed against ≥ 3: :func:`prediction_test`.
    """
    variant, reference = [float(v) for v in variant], [float(v) for v in reference]
    if not all(math.isfinite(v) for v in [*variant, *reference]):
        raise NotComparable("non-finite seed values")
    nv, nr = len(variant), len(reference)
    if nv >= 2 and nr >= 2:
        return welch_test(variant, reference)
    if nv == 1 and nr >= 3:
        return prediction_test(variant[0], reference)
    raise NotComparable(
        f"{nv} seed(s) against {nr} of the reference: not testable "
        "(needs ≥ 2 on each side, or 1 against ≥ 3)"
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order.

    With the p-values sorted ascending, p̃₍ᵢ₎ = max_{j ≤ i} min(1, (m − j + 1)·p₍ⱼ₎); a test
    is rejected at family-wise level α when its adjusted p-value is ≤ α (the step-down
    rule of Holm 1979, "A Simple Sequentially Rejective Multiple Test Procedure").
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (p_values[i], i))
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def reference_variant(records: Sequence[dict[str, Any]]) -> str:
    """The reference variant named by these records (``reference_variant``).

    Records that name none count for :data:`attnbench.records.DEFAULT_REFERENCE`, and so
    does an empty list.

    Records of one profile should agree; if they do not, the most frequent name wins
    (ties by name), so the choice is deterministic.
    """
    counts: dict[str, int] = {}
    for record in records:
        name = record.get("reference_variant")
        name = str(name) if name else DEFAULT_REFERENCE
        counts[name] = counts.get(name, 0) + 1
    if not counts:
        return DEFAULT_REFERENCE
    return min(counts, key=lambda name: (-counts[name], name))


# ---------------------------------------------------------------------------------------
# The bootstrap engine
# ---------------------------------------------------------------------------------------
def paired_bootstrap(
    metric: Callable[[np.ndarray], tuple[float, float]],
    n: int,
    *,
    name: str,
    n_samples: int = N_SAMPLES,
    seed: int = SEED,
    method: str = "paired bootstrap",
) -> TestResult:
    """Paired bootstrap of ``metric(indices) -> (score_a, score_b)`` over ``n`` paired items."""
    if n == 0:
        raise NotComparable("no paired examples")
    a, b = metric(np.arange(n))
    delta = b - a
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_samples)
    for i in range(n_samples):
        sa, sb = metric(rng.integers(0, n, size=n))
        deltas[i] = sb - sa
    centred = np.abs(deltas - deltas.mean())
    extreme = int(np.sum(centred >= abs(delta) - 1e-12)) if delta != 0 else n_samples
    p = (1 + extreme) / (1 + n_samples)
    low, high = np.percentile(deltas, [2.5, 97.5])
    return TestResult(name, float(delta), float(p), float(low), float(high), n, method)


# ---------------------------------------------------------------------------------------
# Metrics recomputed on resampled examples
# ---------------------------------------------------------------------------------------
#: Metrics computable from per-example (prediction, target) pairs, by metric name.
EXAMPLE_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": M.accuracy,
    "accuracy_matched": M.accuracy,
    "accuracy_mismatched": M.accuracy,
    "f1": M.f1_binary,
    "macro_f1": M.macro_f1,
    "matthews": M.matthews_corrcoef,
    "mcc": M.matthews_corrcoef,
    "pearson": M.pearson,
    "spearman": M.spearman,
    "pearson_spearman": lambda p, g: (M.pearson(p, g) + M.spearman(p, g)) / 2,
    "f1_accuracy": lambda p, g: (M.f1_binary(p, g) + M.accuracy(p, g)) / 2,
}


# ---------------------------------------------------------------------------------------
# Reading runs
# ---------------------------------------------------------------------------------------
def artifact_path(record: dict[str, Any], kind: str) -> Path | None:
    """Path of a record's artifact (``predictions``, ``nll`` ...), or None if it has none."""
    name = (record.get("artifacts") or {}).get(kind)
    where = record.get("_path")
    if not name or not where:
        return None
    path = Path(str(where)).parent / str(name)
    return path if path.exists() else None


def load_predictions(record: dict[str, Any]) -> list[dict[str, Any]]:
    path = artifact_path(record, "predictions")
    if path is None:
        raise NotComparable(f"no saved predictions for {record.get('_path')}")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return sorted(rows, key=lambda r: r.get("index", 0))


def _paired_rows(
    a: list[dict[str, Any]], b: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if [r.get("index") for r in a] != [r.get("index") for r in b]:
        raise NotComparable("the runs' test predictions cover different examples")
    if "target" in a[0] and [r.get("target") for r in a] != [r.get("target") for r in b]:
        raise NotComparable("the runs' test targets differ (different test sets)")
    if "reference" in a[0] and [r.get("reference") for r in a] != [r.get("reference") for r in b]:
        raise NotComparable("the runs' references differ (different test sets)")
    return a, b


def compare_runs(
    baseline: dict[str, Any],
    other: dict[str, Any],
    *,
    n_samples: int = N_SAMPLES,
    seed: int = SEED,
) -> TestResult:
    """Paired test of ``other`` against ``baseline`` (two ok records of one task and seed)."""
    metric = str((baseline.get("metric") or {}).get("name") or "")
    if metric == "bleu":
        return _compare_bleu(baseline, other, n_samples=n_samples, seed=seed)
    if metric in ("perplexity", "word_perplexity", "bpc", "nll"):
        return _compare_nll(baseline, other, metric, n_samples=n_samples, seed=seed)
    fn = EXAMPLE_METRICS.get(metric)
    if fn is None:
        raise NotComparable(f"no paired test for metric {metric!r}")
    rows_a, rows_b = _paired_rows(load_predictions(baseline), load_predictions(other))
    pred_a = np.asarray([r["prediction"] for r in rows_a])
    pred_b = np.asarray([r["prediction"] for r in rows_b])
    gold = np.asarray([r["target"] for r in rows_a])

    def scores(idx: np.ndarray) -> tuple[float, float]:
        return fn(pred_a[idx], gold[idx]), fn(pred_b[idx], gold[idx])

    return paired_bootstrap(scores, len(gold), name=metric, n_samples=n_samples, seed=seed)


def _compare_bleu(
    baseline: dict[str, Any], other: dict[str, Any], *, n_samples: int, seed: int
) -> TestResult:
    from sacrebleu.metrics import BLEU

    rows_a, rows_b = _paired_rows(load_predictions(baseline), load_predictions(other))
    refs = [[r["reference"] for r in rows_a]]
    bleu = BLEU()
    # sacrebleu's per-sentence sufficient statistics (n-gram matches/totals, lengths): a
    # resample's corpus BLEU is computed from their sum, exactly as sacrebleu's PairedTest.
    stats_a = np.asarray(bleu._extract_corpus_statistics([r["hypothesis"] for r in rows_a], refs))
    stats_b = np.asarray(bleu._extract_corpus_statistics([r["hypothesis"] for r in rows_b], refs))

    def scores(idx: np.ndarray) -> tuple[float, float]:
        return (
            bleu._compute_score_from_stats(stats_a[idx].sum(0).tolist()).score,
            bleu._compute_score_from_stats(stats_b[idx].sum(0).tolist()).score,
        )

    return paired_bootstrap(
        scores,
        len(rows_a),
        name="bleu",
        n_samples=n_samples,
        seed=seed,
        method="paired bootstrap of sacrebleu BLEU (sufficient statistics)",
    )


def _load_nll(record: dict[str, Any]) -> np.ndarray:
    path = artifact_path(record, "nll")
    if path is None:
        raise NotComparable(f"no saved token NLLs for {record.get('_path')}")
    if path.suffix == ".npy":
        return np.load(path).astype(float)
    values: list[float] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line:
            item = json.loads(line)
            values.extend(item["nll"] if isinstance(item, dict) else [item])
    return np.asarray(values, dtype=float)


def _compare_nll(
    baseline: dict[str, Any], other: dict[str, Any], metric: str, *, n_samples: int, seed: int
) -> TestResult:
    a, b = _load_nll(baseline), _load_nll(other)
    if len(a) != len(b):
        raise NotComparable("the runs scored different numbers of test tokens")
    blocks = max(len(a) // NLL_BLOCK, 1)
    edges = np.linspace(0, len(a), blocks + 1).astype(int)
    sums_a = np.add.reduceat(a, edges[:-1])
    sums_b = np.add.reduceat(b, edges[:-1])
    sizes = np.diff(edges).astype(float)
    # per word: a resample's NLL per token, times the test text's tokens per word
    tokens_per_word = 1.0
    if metric == "word_perplexity":
        test = baseline["metrics"]["test"]
        tokens_per_word = float(test["tokens"]) / float(test["n_words"])

    def scores(idx: np.ndarray) -> tuple[float, float]:
        tokens = sizes[idx].sum()
        na, nb = sums_a[idx].sum() / tokens, sums_b[idx].sum() / tokens
        if metric == "word_perplexity":
            return math.exp(na * tokens_per_word), math.exp(nb * tokens_per_word)
        if metric == "perplexity":
            return math.exp(na), math.exp(nb)
        return na, nb  # nll; bpc compares the same way up to a constant factor

    return paired_bootstrap(
        scores, blocks, name=metric, n_samples=n_samples, seed=seed, method="block bootstrap"
    )


def versus_baseline(
    records: Sequence[dict[str, Any]], baseline_variant: str | None = None
) -> dict[tuple[str, str, str, Any], dict[str, Any]]:
    """Paired bootstrap of every ok run against the reference's ok run of the same seed.

    ``baseline_variant``: the variant to test against; ``None`` = each profile's
    reference (:func:`reference_variant` of its records). Pairs are matched by
    (profile, task, seed). Returns {(profile, task, variant, seed):
    TestResult.as_dict() or {"error": reason}}.
    """
    by_profile: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_profile.setdefault(str(r.get("profile")), []).append(r)
    reference = {
        profile: baseline_variant or reference_variant(mine) for profile, mine in by_profile.items()
    }
    base: dict[tuple[str, str, Any], dict[str, Any]] = {}
    for r in records:
        profile = str(r.get("profile"))
        if r.get("status") == "ok" and r.get("variant") == reference[profile]:
            base[(profile, str(r.get("task")), r.get("seed"))] = r
    out: dict[tuple[str, str, str, Any], dict[str, Any]] = {}
    for r in records:
        key = (str(r.get("profile")), str(r.get("task")), r.get("seed"))
        if r.get("status") != "ok" or r.get("variant") == reference[key[0]] or key not in base:
            continue
        full_key = (key[0], key[1], str(r.get("variant")), key[2])
        try:
            out[full_key] = compare_runs(base[key], r).as_dict()
        except (NotComparable, OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            out[full_key] = {"error": str(exc) or type(exc).__name__}
    return out
