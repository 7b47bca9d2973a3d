"""Signal checks, seed-level tests and Holm correction (attnbench.verdicts, .significance).

The Student-t distribution, Welch's test and the prediction-interval test are checked
against scipy.stats; Holm against a hand-worked example; the signal check against
numbers computed here with numpy; and the whole procedure by simulation: tables drawn
with no real differences must show a false ▲/▼ in at most α of them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from attnbench import significance as sig
from attnbench.verdicts import NONE, SIGNAL, WEAK, analyse


def record(
    task: str,
    variant: str,
    seed: int,
    value: float | None,
    *,
    baselines: dict[str, float] | None = None,
    metric: str = "accuracy",
    higher: bool = True,
    status: str = "ok",
    profile: str = "p",
    **extra: Any,
) -> dict[str, Any]:
    """A run record with only what :func:`analyse` reads (no files needed)."""
    rec: dict[str, Any] = {
        "profile": profile,
        "task": task,
        "variant": variant,
        "seed": seed,
        "status": status,
        "metric": {"name": metric, "higher_is_better": higher},
        "metrics": {"test": {metric: value}, "baselines": dict(baselines or {})},
    }
    rec.update(extra)
    return rec


# --------------------------------------------------------------------------- distributions


@pytest.mark.parametrize("df", [0.6, 1.0, 1.37, 2.0, 3.0, 4.5, 10.0, 29.0, 200.0])
def test_t_distribution_matches_scipy(df: float) -> None:
    for t in (0.0, 0.05, 0.5, 1.0, 1.96, 2.5, 4.0, 9.0, 31.0, 250.0, 1e4):
        expected = 2 * sps.t.sf(t, df)
        assert sig.t_two_sided_p(t, df) == pytest.approx(expected, rel=1e-9, abs=1e-15)
        assert sig.t_two_sided_p(-t, df) == sig.t_two_sided_p(t, df)
        assert sig.t_cdf(t, df) == pytest.approx(sps.t.cdf(t, df), rel=1e-9, abs=1e-15)
        assert sig.t_cdf(-t, df) == pytest.approx(sps.t.cdf(-t, df), rel=1e-9, abs=1e-300)
    assert sig.t_two_sided_p(math.inf, df) == 0.0


def test_incomplete_beta_matches_scipy() -> None:
    from scipy.special import betainc

    for a, b in ((0.5, 0.5), (1.0, 3.0), (2.5, 0.5), (7.0, 11.0), (40.0, 0.5)):
        for x in (1e-6, 0.01, 0.3, 0.5, 0.77, 0.999):
            assert sig.regularized_incomplete_beta(a, b, x) == pytest.approx(
                betainc(a, b, x), rel=1e-10, abs=1e-15
            )


@pytest.mark.parametrize(("nv", "nr"), [(2, 2), (2, 3), (3, 5), (6, 4)])
def test_welch_matches_scipy(nv: int, nr: int) -> None:
    rng = np.random.default_rng(nv * 10 + nr)
    for _ in range(20):
        a = rng.normal(0.3, rng.uniform(0.01, 0.2), nv)
        b = rng.normal(0.35, rng.uniform(0.01, 0.2), nr)
        ours = sig.welch_test(a.tolist(), b.tolist())
        theirs = sps.ttest_ind(a, b, equal_var=False)
        assert ours.t == pytest.approx(theirs.statistic, rel=1e-10)
        assert ours.df == pytest.approx(theirs.df, rel=1e-10)
        assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-8)
        assert ours.delta == pytest.approx(a.mean() - b.mean())
        assert sig.seed_test(a.tolist(), b.tolist()).method == sig.WELCH


@pytest.mark.parametrize("nr", [3, 4, 8])
def test_prediction_interval_test_matches_scipy(nr: int) -> None:
    rng = np.random.default_rng(nr)
    for _ in range(20):
        reference = rng.normal(0.5, 0.03, nr)
        x = float(rng.normal(0.5, 0.1))
        ours = sig.prediction_test(x, reference.tolist())
        scale = reference.std(ddof=1) * math.sqrt(1 + 1 / nr)
        t = (x - reference.mean()) / scale
        assert ours.t == pytest.approx(t, rel=1e-10)
        assert ours.df == nr - 1
        assert ours.p_value == pytest.approx(2 * sps.t.sf(abs(t), nr - 1), rel=1e-8)
        # the same number as scipy's prediction interval: x lies outside the 95% interval
        # of a new draw exactly when p < 0.05
        low, high = sps.t.interval(0.95, nr - 1, loc=reference.mean(), scale=scale)
        assert (ours.p_value < 0.05) == (not low <= x <= high)
        assert sig.seed_test([x], reference.tolist()).method == sig.PREDICTION


def test_prediction_interval_test_has_its_nominal_size() -> None:
    """Under its assumptions (normal, equal noise) the test rejects α of the time."""
    rng = np.random.default_rng(11)
    draws = rng.normal(0.0, 1.0, (4000, 4))
    rejected = sum(sig.prediction_test(row[0], row[1:].tolist()).p_value < 0.05 for row in draws)
    assert abs(rejected / 4000 - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 4000)


def test_untestable_seed_counts_raise() -> None:
    for variant, reference in (([0.5], [0.4, 0.45]), ([0.5, 0.6], [0.4]), ([0.5], [0.4])):
        with pytest.raises(sig.NotComparable, match="not testable"):
            sig.seed_test(variant, reference)
    with pytest.raises(sig.NotComparable, match="no noise estimate"):
        sig.seed_test([0.5, 0.5], [0.4, 0.4])
    with pytest.raises(sig.NotComparable, match="no noise estimate"):
        sig.seed_test([0.5], [0.4, 0.4, 0.4])


def test_holm_hand_worked_example() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, max(0.04·1, 0.06) = 0.06
    p = [0.01, 0.04, 0.03, 0.005]
    assert sig.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # the step-down rule: 0.005 ≤ 0.05/4 and 0.01 ≤ 0.05/3 are rejected, 0.03 > 0.05/2
    # stops it, so 0.04 is kept although 0.04 ≤ 0.05/1
    assert [q <= 0.05 for q in sig.holm(p)] == [True, False, False, True]
    assert sig.holm([0.9, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert sig.holm([]) == []


# --------------------------------------------------------------------------- signal check


def test_signal_check_numbers() -> None:
    base = {"majority_class": 0.20, "bag_of_tokens": 0.30}
    values = {"vanilla": [0.50, 0.52, 0.54], "a": [0.40, 0.44], "b": [0.60], "ctrl": [0.31, 0.33]}
    records = [
        record("t", v, s, x, baselines=base, capabilities={"mixes_tokens": v != "ctrl"})
        for v, xs in values.items()
        for s, x in enumerate(xs)
    ]
    records.append(record("t", "dense", 0, 0.99, baselines=base, dense_at_length="w ≥ n"))
    signal = analyse(records).signals[("p", "t")]
    sigma = np.std(values["vanilla"], ddof=1)
    assert signal.reference == "vanilla" and signal.reference_n == 3
    assert signal.reference_mean == pytest.approx(0.52)
    assert signal.reference_std == pytest.approx(sigma)
    assert (signal.baseline_name, signal.baseline_value) == ("bag_of_tokens", 0.30)
    assert signal.reference_margin == pytest.approx((0.52 - 0.30) / sigma)
    # best variant: among mixing, non-dense variants (not the control, not the dense cell)
    assert signal.best_variant == "b"
    assert signal.best_margin == pytest.approx((0.60 - 0.30) / sigma)
    means = [0.52, 0.42, 0.60]
    pooled = math.sqrt((2 * sigma**2 + np.var(values["a"], ddof=1)) / 3)
    assert signal.pooled_std == pytest.approx(pooled)
    assert signal.snr == pytest.approx(np.std(means, ddof=1) / pooled)
    assert signal.controls == (("ctrl", pytest.approx(0.32)),)
    assert signal.verdict == SIGNAL


def test_lower_is_better_orients_margins() -> None:
    base = {"unigram": 21.1, "kn_bigram": 11.1}
    records = [
        record("lm", "vanilla", s, x, baselines=base, metric="perplexity", higher=False)
        for s, x in enumerate([9.0, 9.2, 9.4])
    ]
    records.append(record("lm", "x", 0, 12.0, baselines=base, metric="perplexity", higher=False))
    signal = analyse(records).signals[("p", "lm")]
    assert signal.baseline_name == "kn_bigram"  # the strongest: the lowest perplexity
    assert signal.reference_margin == pytest.approx((11.1 - 9.2) / 0.2)
    assert signal.best_variant == "vanilla"


def test_verdict_none_weak_and_reasons() -> None:
    base = {"majority_class": 0.5}
    noise = [record("t", "vanilla", s, 0.5 + 0.01 * (s - 1), baselines=base) for s in range(3)]
    assert analyse(noise).signals[("p", "t")].verdict == NONE
    assert "does not beat" in analyse(noise).signals[("p", "t")].reason

    one_seed = [record("t", "vanilla", 0, 0.9, baselines=base), record("t", "a", 0, 0.8)]
    signal = analyse(one_seed).signals[("p", "t")]
    assert signal.verdict == NONE and "no seed replicates" in signal.reason
    # replicates of another variant give σ (pooled) when the reference has one seed
    pooled = [*one_seed, record("t", "a", 1, 0.82)]
    signal = analyse(pooled).signals[("p", "t")]
    assert signal.noise_source == "pooled over variants"
    assert signal.noise_std == pytest.approx(np.std([0.8, 0.82], ddof=1))

    no_baseline = [record("t", "vanilla", s, 0.9 + 0.01 * s) for s in range(3)]
    signal = analyse(no_baseline).signals[("p", "t")]
    assert signal.verdict == NONE and "no trivial baseline" in signal.reason

    # a clear margin over the baseline, but variants within seed noise: weak
    weak = [record("t", "vanilla", s, 0.80 + 0.02 * s, baselines=base) for s in range(3)]
    weak += [record("t", "a", 0, 0.821, baselines=base), record("t", "b", 0, 0.819)]
    signal = analyse(weak).signals[("p", "t")]
    assert signal.snr is not None and signal.snr < 1
    assert signal.verdict == WEAK


def test_no_comparisons_on_tasks_without_signal_nor_for_dense_cells() -> None:
    base = {"majority_class": 0.5}
    records = [
        record(t, "vanilla", s, x + 0.01 * s, baselines=base)
        for t, x in (("noise", 0.5), ("clear", 0.8))
        for s in range(3)
    ]
    records += [record(t, "big", 0, 0.99, baselines=base) for t in ("noise", "clear")]
    records += [record("clear", "dense", 0, 0.1, dense_at_length="window 32 ≥ n = 25")]
    analysis = analyse(records)
    assert analysis.signals[("p", "noise")].verdict == NONE
    assert set(analysis.comparisons) == {("p", "clear", "big")}
    assert analysis.degenerate == {("p", "clear", "dense"): "window 32 ≥ n = 25"}
    assert analysis.mark("p", "clear", "big") == "▲"
    assert analysis.mark("p", "noise", "big") == ""


def test_reference_variant_comes_from_the_records() -> None:
    base = {"majority_class": 0.5}
    records = [
        record("t", "softmax", s, 0.8 + 0.01 * s, baselines=base, reference_variant="softmax")
        for s in range(3)
    ]
    records += [record("t", "vanilla", 0, 0.2, reference_variant="softmax")]
    analysis = analyse(records)
    assert analysis.reference("p") == "softmax"
    assert analysis.signals[("p", "t")].reference == "softmax"
    assert analysis.mark("p", "t", "vanilla") == "▼"
    assert sig.reference_variant([{"profile": "p"}]) == "vanilla"  # default


# --------------------------------------------------------------------------- simulation


def _null_table(rng: np.random.Generator) -> list[dict[str, Any]]:
    """20 variants × 8 tasks, no real differences.

    Reference: 3 seeds; the others 1 or 2. Seed values are normal with a per-task
    mean and noise; the trivial baselines sit far below, so every task passes the
    signal check's margin and is tested.
    """
    records = []
    for t in range(8):
        mean, noise = 0.4 + 0.05 * t, 0.005 + 0.002 * t
        base = {"majority_class": mean - 30 * noise, "bag": mean - 20 * noise}
        for v in range(20):
            variant = "vanilla" if v == 0 else f"v{v:02d}"
            n = 3 if v == 0 else int(rng.integers(1, 3))
            for s in range(n):
                value = float(rng.normal(mean, noise))
                records.append(record(f"t{t}", variant, s, value, baselines=base))
    return records


def test_family_wise_error_rate_is_controlled() -> None:
    rng = np.random.default_rng(2025)
    n_tables, alpha = 300, sig.ALPHA
    false_tables, tested = 0, 0
    for _ in range(n_tables):
        analysis = analyse(_null_table(rng))
        assert all(s.verdict != NONE for s in analysis.signals.values())
        tested += len(analysis.family("p"))
        false_tables += any(c.significant for c in analysis.comparisons.values())
    assert tested / n_tables > 100  # ~150 comparisons per table were tested
    tolerance = 3 * math.sqrt(alpha * (1 - alpha) / n_tables)
    assert false_tables / n_tables <= alpha + tolerance
    # and the uncorrected tests would have been wrong almost every time
    uncorrected = analyse(_null_table(rng)).family("p")
    assert any(c.test is not None and c.test.p_value < alpha for c in uncorrected)


def test_planted_large_difference_is_detected() -> None:
    rng = np.random.default_rng(7)
    found = 0
    for _ in range(20):
        records = _null_table(rng)
        # v01 is 40 seed std better on t0, with 3 seeds (Welch's test gets a few degrees
        # of freedom; with 1-2 seeds the correction over ~150 tests needs far more)
        records = [r for r in records if not (r["task"] == "t0" and r["variant"] == "v01")]
        noise = 0.005
        for s in range(3):
            value = float(rng.normal(0.4 + 40 * noise, noise))
            records.append(record("t0", "v01", s, value))
        analysis = analyse(records)
        found += analysis.mark("p", "t0", "v01") == "▲"
        others = [c for k, c in analysis.comparisons.items() if k != ("p", "t0", "v01")]
        assert sum(c.significant for c in others) <= 1
    assert found >= 19
