"""What the leaderboard may claim: a signal check per task, and corrected seed-level verdicts.

Computed from run records alone (no predictions files), so it is fast and can be
re-run on any results folder; the leaderboard (:mod:`attnbench.leaderboard`), the
HTML report (:mod:`attnbench.report`) and the tests all use :func:`analyse`.

**Signal check, per (profile, task).** From the per-seed test values of the primary
metric:

* the reference variant's mean ± seed std (n seeds); the reference is the profile's
  ``record["reference_variant"]`` (default :data:`attnbench.records.DEFAULT_REFERENCE`);
* the strongest trivial baseline (``record["metrics"]["baselines"]``, best by the
  metric's direction);
* σ, the seed noise: the reference's seed std when it has ≥ 2 seeds, else the
  within-variant seed std pooled over the variants with ≥ 2 seeds;
* the margins of the reference and of the best variant over the strongest baseline,
  in units of σ, signed so that positive = better than the baseline;
* SNR = standard deviation across the variant means ÷ pooled within-variant seed
  standard deviation (after Heineman et al. 2025, "Signal and Noise: A Framework for
  Reducing Uncertainty in Language Model Evaluation"), over the ok variants that mix
  tokens and whose pattern is not dense attention at this length; the pooled std is
  √(Σ (nᵢ − 1)·sᵢ² / Σ (nᵢ − 1)) over those with nᵢ ≥ 2 seeds. Note: with one seed per
  variant and no real differences, SNR is about 1 (each mean carries one seed's noise);
* the verdict: ``none`` when the reference does not beat the strongest baseline by
  ≥ :data:`MARGIN_SIGMAS` σ (or σ cannot be estimated, or nothing to compare with);
  ``weak`` when it does but SNR < :data:`SNR_THRESHOLD`; ``signal`` otherwise.

**Claims.** On every task whose verdict is not ``none``, every variant except the
reference and the cells whose pattern is dense at this length (``dense_at_length``)
is compared with the reference by :func:`attnbench.significance.seed_test`; the
p-values of all the comparisons of one profile form one family, corrected by
Holm–Bonferroni at α = :data:`attnbench.significance.ALPHA`. A comparison is
significant when its Holm-adjusted p-value is ≤ α.

Typical use::

    from attnbench.verdicts import analyse

    analysis = analyse(records)
    analysis.signals[("default", "listops")].verdict      # 'none' | 'weak' | 'signal'
    analysis.mark("default", "listops", "performer")     # '▲', '▼' or ''
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .significance import (
    ALPHA,
    NotComparable,
    SeedTest,
    holm,
    reference_variant,
    seed_test,
)

__all__ = [
    "MARGIN_SIGMAS",
    "NONE",
    "SIGNAL",
    "SNR_THRESHOLD",
    "WEAK",
    "Analysis",
    "Comparison",
    "TaskSignal",
    "analyse",
    "is_control",
]

#: The reference must beat the strongest trivial baseline by this many seed std.
MARGIN_SIGMAS = 2.0
#: Below this SNR a task with a margin is only ``weak``.
SNR_THRESHOLD = 1.0
NONE, WEAK, SIGNAL = "none", "weak", "signal"


@dataclass(frozen=True)
class TaskSignal:
    """The signal check of one task of one profile (values in the metric's raw units)."""

    profile: str
    task: str
    metric: str
    higher_is_better: bool | None
    reference: str
    reference_mean: float | None
    reference_std: float | None  # sample std of the reference's seeds; None with < 2 seeds
    reference_n: int
    noise_std: float | None  # σ: the seed std the margins are measured in
    noise_source: str  # "reference seeds", "pooled over variants" or ""
    baseline_name: str | None  # the strongest trivial baseline
    baseline_value: float | None
    baselines: dict[str, float]  # every trivial baseline recorded for the task
    reference_margin: float | None  # (reference − baseline) / σ, positive = better
    best_variant: str | None
    best_mean: float | None
    best_margin: float | None  # (best variant − baseline) / σ, positive = better
    snr: float | None
    snr_variants: int  # variants whose means enter the SNR
    pooled_std: float | None  # pooled within-variant seed std
    controls: tuple[tuple[str, float | None], ...]  # (control variant, its mean)
    verdict: str  # NONE, WEAK or SIGNAL
    reason: str  # why this verdict, in words

    @property
    def counts(self) -> bool:
        """Whether this task enters ranks, averages and significance marks."""
        return self.verdict != NONE

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["controls"] = [list(item) for item in self.controls]
        return out


@dataclass(frozen=True)
class Comparison:
    """One claim: a variant against the reference on one task of one profile."""

    profile: str
    task: str
    variant: str
    reference: str
    higher_is_better: bool | None
    test: SeedTest | None  # None when not testable
    reason: str | None  # why not testable
    p_holm: float | None = None  # Holm-adjusted p-value within the profile's family
    significant: bool = False

    @property
    def better(self) -> bool | None:
        """True/False when the variant's mean is better/worse than the reference's."""
        if self.test is None or self.higher_is_better is None or self.test.delta == 0:
            return None
        return (self.test.delta > 0) == self.higher_is_better

    @property
    def mark(self) -> str:
        """▲ (significantly better), ▼ (significantly worse) or an empty string."""
        if not self.significant or self.better is None:
            return ""
        return "▲" if self.better else "▼"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "profile": self.profile,
            "task": self.task,
            "variant": self.variant,
            "reference": self.reference,
            "tested": self.test is not None,
            "reason": self.reason,
            "p_holm": self.p_holm,
            "significant": self.significant,
            "mark": self.mark,
        }
        if self.test is not None:
            out.update(self.test.as_dict())
        return out


@dataclass
class Analysis:
    """Signal checks and corrected claims of every profile in a set of records."""

    alpha: float
    references: dict[str, str]  # profile -> reference variant
    signals: dict[tuple[str, str], TaskSignal]  # (profile, task)
    comparisons: dict[tuple[str, str, str], Comparison]  # (profile, task, variant)
    degenerate: dict[tuple[str, str, str], str]  # (profile, task, variant) -> reason
    controls: dict[str, list[str]]  # profile -> variants that do not mix tokens
    seeds: dict[tuple[str, str, str], list[tuple[Any, float]]] = field(default_factory=dict)

    def reference(self, profile: str) -> str:
        """The profile's reference variant."""
        return self.references.get(profile, reference_variant([]))

    def counts(self, profile: str, task: str) -> bool:
        """Whether the task has a verdict other than ``none`` (False if unknown)."""
        signal = self.signals.get((profile, task))
        return signal is not None and signal.counts

    def mark(self, profile: str, task: str, variant: str) -> str:
        """▲ / ▼ / '' for one cell."""
        comparison = self.comparisons.get((profile, task, variant))
        return comparison.mark if comparison else ""

    def family(self, profile: str) -> list[Comparison]:
        """The tested comparisons of a profile (the Holm family), in key order."""
        return [
            c
            for key, c in sorted(self.comparisons.items())
            if key[0] == profile and c.test is not None
        ]

    def untested(self, profile: str) -> list[Comparison]:
        """Comparisons of a profile on tasks with signal that no test applies to."""
        return [
            c for key, c in sorted(self.comparisons.items()) if key[0] == profile and c.test is None
        ]


# --------------------------------------------------------------------------- helpers


def _key(value: Any) -> str:
    """A profile, task or variant name as the leaderboard shows it (null → ``(none)``)."""
    return "(none)" if value is None else str(value)


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, else None (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std (None for a single value; exactly 0 for equal values)."""
    if len(values) < 2:
        return values[0], None
    if min(values) == max(values):
        return values[0], 0.0
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def is_control(record: dict[str, Any]) -> bool:
    """True for a record of a variant that mixes no tokens (``capabilities.mixes_tokens``)."""
    return _dict(record.get("capabilities")).get("mixes_tokens", True) is False


def _dense_reason(record: dict[str, Any]) -> str | None:
    """The ``dense_at_length`` reason of a record, None when its pattern is not dense."""
    reason = record.get("dense_at_length")
    if reason is None or reason is False:
        return None
    return str(reason) if str(reason).strip() else "dense attention at this length"


def _seed_key(seed: Any) -> tuple[int, Any]:
    """Sort seeds numerically, anything else after them as text."""
    if isinstance(seed, int) and not isinstance(seed, bool):
        return (0, seed)
    return (1, str(seed))


def _fmt(value: float) -> str:
    """A short number for the verdict reasons (unit-free quantities)."""
    if not math.isfinite(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.2f}".replace("-", "−")


# --------------------------------------------------------------------------- signal check


def _task_signal(
    profile: str,
    task: str,
    metric: str,
    hib: bool | None,
    reference: str,
    values: dict[str, list[float]],
    controls: set[str],
    degenerate: set[str],
    baselines: dict[str, float],
) -> TaskSignal:
    """The signal check of one task from its per-variant seed values."""
    ref_values = values.get(reference, [])
    ref_mean, ref_std = _mean_std(ref_values) if ref_values else (None, None)
    pool = {
        v: vals
        for v, vals in sorted(values.items())
        if vals and v not in controls and v not in degenerate
    }
    if ref_values:
        pool.setdefault(reference, ref_values)
    means = {v: _mean_std(vals)[0] for v, vals in pool.items()}
    dof = sum(len(vals) - 1 for vals in pool.values() if len(vals) >= 2)
    pooled = None
    if dof:
        squares = math.fsum(
            (len(vals) - 1) * (_mean_std(vals)[1] or 0.0) ** 2
            for vals in pool.values()
            if len(vals) >= 2
        )
        pooled = math.sqrt(squares / dof)
    snr = None
    if len(means) >= 2 and pooled:
        snr = _mean_std(list(means.values()))[1] / pooled  # type: ignore[operator]

    if ref_std is not None:
        sigma, source = ref_std, "reference seeds"
    elif pooled is not None:
        sigma, source = pooled, "pooled over variants"
    else:
        sigma, source = None, ""

    sign = 1.0 if hib else -1.0
    base_name = base_value = None
    if baselines and hib is not None:
        base_name = (max if hib else min)(sorted(baselines), key=lambda name: baselines[name])
        base_value = baselines[base_name]
    best = None
    if means and hib is not None:
        best = (max if hib else min)(sorted(means), key=lambda v: means[v])

    def margin(value: float | None) -> float | None:
        if value is None or base_value is None or not sigma:
            return None
        return sign * (value - base_value) / sigma

    ref_margin = margin(ref_mean)
    best_mean = means[best] if best is not None else None
    best_margin = margin(best_mean)

    if not ref_values:
        verdict, reason = NONE, f"no ok run of the reference `{reference}`"
    elif hib is None:
        verdict, reason = NONE, "the metric's direction (higher or lower is better) is unknown"
    elif base_value is None:
        verdict, reason = NONE, "no trivial baseline recorded for this task"
    elif sigma is None:
        verdict, reason = (
            NONE,
            "no seed replicates (the reference has 1 seed and no variant has 2): "
            "seed noise cannot be estimated",
        )
    elif sigma == 0:
        verdict, reason = (
            NONE,
            f"every seed gave the same value ({source}: seed std 0): "
            "seed noise cannot be estimated",
        )
    elif ref_margin is None or ref_margin < MARGIN_SIGMAS:
        margin_text = _fmt(ref_margin or 0.0)
        if ref_margin is not None and ref_margin > 0:
            what = f"beats the strongest trivial baseline ({base_name}) by only {margin_text}"
        else:
            what = f"does not beat the strongest trivial baseline ({base_name}): {margin_text}"
        verdict, reason = (
            NONE,
            f"`{reference}` {what} seed std (needs ≥ {MARGIN_SIGMAS:g})",
        )
    elif snr is None:
        verdict, reason = WEAK, "SNR not computable (fewer than 2 variants to compare)"
    elif snr < SNR_THRESHOLD:
        verdict, reason = (
            WEAK,
            f"SNR {_fmt(snr)} < {SNR_THRESHOLD:g}: variant means differ by less than seed noise",
        )
    else:
        verdict, reason = SIGNAL, f"margin {_fmt(ref_margin)} σ, SNR {_fmt(snr)}"

    control_means = tuple(
        (v, _mean_std(values[v])[0] if values.get(v) else None) for v in sorted(controls)
    )
    return TaskSignal(
        profile=profile,
        task=task,
        metric=metric,
        higher_is_better=hib,
        reference=reference,
        reference_mean=ref_mean,
        reference_std=ref_std,
        reference_n=len(ref_values),
        noise_std=sigma,
        noise_source=source,
        baseline_name=base_name,
        baseline_value=base_value,
        baselines=dict(sorted(baselines.items())),
        reference_margin=ref_margin,
        best_variant=best,
        best_mean=best_mean,
        best_margin=best_margin,
        snr=snr,
        snr_variants=len(means),
        pooled_std=pooled,
        controls=control_means,
        verdict=verdict,
        reason=reason,
    )


# --------------------------------------------------------------------------- analysis


def _task_metric(records: list[dict[str, Any]], reference: str) -> tuple[str, bool | None]:
    """The (metric, higher_is_better) of a task: the reference's, else the most common."""
    counts: dict[tuple[str, bool | None], tuple[int, int]] = {}
    for record in records:
        metric = _dict(record.get("metric"))
        hib = metric.get("higher_is_better")
        key = (str(metric.get("name") or ""), hib if isinstance(hib, bool) else None)
        is_ref, n = counts.get(key, (0, 0))
        counts[key] = (max(is_ref, int(record.get("variant") == reference)), n + 1)
    return min(counts, key=lambda k: (-counts[k][0], -counts[k][1], k[0], str(k[1])))


def _baselines(records: list[dict[str, Any]], reference: str) -> dict[str, float]:
    """The task's trivial baselines: from the reference's first ok record that has any."""
    ordered = sorted(
        records,
        key=lambda r: (
            r.get("variant") != reference,
            str(r.get("variant")),
            _seed_key(r.get("seed")),
        ),
    )
    for record in ordered:
        if record.get("status") != "ok":
            continue
        raw = _dict(_dict(record.get("metrics")).get("baselines"))
        found = {str(k): v for k, v in raw.items() if _finite(v) is not None}
        if found:
            return {k: float(v) for k, v in found.items()}
    return {}


def analyse(records: Iterable[dict[str, Any]], *, alpha: float = ALPHA) -> Analysis:
    """Signal checks and Holm-corrected seed-level claims for every profile in ``records``.

    Only ``status == "ok"`` records with a finite test value of the task's primary metric
    enter the numbers; ``capabilities.mixes_tokens`` and ``dense_at_length`` are read
    from every record. Deterministic in the records (their order does not matter).
    """
    by_profile: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        profile = _key(record.get("profile"))
        by_profile.setdefault(profile, []).append(record)

    analysis = Analysis(alpha, {}, {}, {}, {}, {})
    for profile in sorted(by_profile):
        mine = by_profile[profile]
        reference = reference_variant(mine)
        analysis.references[profile] = reference
        controls = sorted({_key(r.get("variant")) for r in mine if is_control(r)} - {reference})
        analysis.controls[profile] = controls
        by_task: dict[str, list[dict[str, Any]]] = {}
        for record in mine:
            task = _key(record.get("task"))
            by_task.setdefault(task, []).append(record)
            variant = _key(record.get("variant"))
            dense = _dense_reason(record)
            if dense is not None and variant != reference:
                analysis.degenerate.setdefault((profile, task, variant), dense)

        family: list[Comparison] = []
        for task in sorted(by_task):
            task_records = by_task[task]
            metric, hib = _task_metric(task_records, reference)
            values: dict[str, list[tuple[Any, float]]] = {}
            for record in task_records:
                meta = _dict(record.get("metric"))
                if record.get("status") != "ok" or str(meta.get("name") or "") != metric:
                    continue
                value = _finite(_dict(_dict(record.get("metrics")).get("test")).get(metric))
                if value is not None:
                    values.setdefault(_key(record.get("variant")), []).append(
                        (record.get("seed"), value)
                    )
            for variant, pairs in values.items():
                pairs.sort(key=lambda pair: _seed_key(pair[0]))
                analysis.seeds[(profile, task, variant)] = pairs
            plain = {v: [x for _, x in pairs] for v, pairs in values.items()}
            degenerate = {v for (p, t, v) in analysis.degenerate if p == profile and t == task}
            signal = _task_signal(
                profile,
                task,
                metric,
                hib,
                reference,
                plain,
                set(controls),
                degenerate,
                _baselines(task_records, reference),
            )
            analysis.signals[(profile, task)] = signal
            if not signal.counts:
                continue
            for variant in sorted(plain):
                if variant == reference or variant in degenerate:
                    continue
                try:
                    test, reason = seed_test(plain[variant], plain[reference]), None
                except NotComparable as exc:
                    test, reason = None, str(exc)
                comparison = Comparison(profile, task, variant, reference, hib, test, reason)
                analysis.comparisons[(profile, task, variant)] = comparison
                if test is not None:
                    family.append(comparison)

        adjusted = holm([c.test.p_value for c in family if c.test is not None])
        for comparison, p_holm in zip(family, adjusted, strict=True):
            key = (comparison.profile, comparison.task, comparison.variant)
            analysis.comparisons[key] = replace(
                comparison, p_holm=p_holm, significant=p_holm <= alpha
            )
    return analysis
