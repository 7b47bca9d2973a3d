"""Evaluation metrics shared by the tasks, and which task reports which.

The GLUE benchmark (Wang et al. 2019, "GLUE: A Multi-Task Benchmark and Analysis
Platform for Natural Language Understanding") scores each task with its own
official metric: Matthews correlation for CoLA, F1 and accuracy for MRPC and QQP,
Pearson and Spearman correlation for STS-B, accuracy for the rest. Where a task has
two metrics, GLUE's task score is their unweighted mean; this module reports both
and the mean (``f1_accuracy``, ``pearson_spearman``).

Everything is computed here with numpy in float64 so that a run needs neither
scikit-learn nor scipy (the tests check every function against both). Degenerate
inputs have defined values instead of NaN, so that a trivial model gets a finite
number on the leaderboard:

- Matthews correlation is 0.0 when its denominator is 0 (a constant prediction or
  a single-class target), as in scikit-learn.
- Pearson and Spearman correlation are 0.0 when either input is constant (no
  linear / monotone association can be measured); scipy returns NaN there.
- F1 is 0.0 when there are no true positives (scikit-learn's ``zero_division=0``).
- Non-finite inputs to the correlations give NaN (a broken model stays visible).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Values = Sequence[float] | Sequence[int] | np.ndarray | Any  # also torch tensors


def _pair(predictions: Values, targets: Values) -> tuple[np.ndarray, np.ndarray]:
    p, t = _array(predictions), _array(targets)
    if p.ndim != 1 or t.ndim != 1:
        raise ValueError(f"metrics need 1-D inputs, got shapes {p.shape} and {t.shape}")
    if len(p) != len(t):
        raise ValueError(f"metrics need inputs of equal length, got {len(p)} and {len(t)}")
    if len(p) == 0:
        raise ValueError("metrics need at least one example, got none")
    return p, t


def _array(x: Values) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# ---------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------
def accuracy(predictions: Values, targets: Values) -> float:
    """Share of exact matches."""
    p, t = _pair(predictions, targets)
    return float(np.mean(p == t))


def _f1(p: np.ndarray, t: np.ndarray, positive: Any) -> float:
    tp = np.sum((p == positive) & (t == positive))
    fp = np.sum((p == positive) & (t != positive))
    fn = np.sum((p != positive) & (t == positive))
    # F1 = 2PR / (P + R) = 2tp / (2tp + fp + fn); 0.0 when tp = 0 (zero_division=0)
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def f1_binary(predictions: Values, targets: Values, positive: int = 1) -> float:
    """F1 of the positive class (GLUE MRPC/QQP: class 1, "paraphrase"/"duplicate")."""
    return _f1(*_pair(predictions, targets), positive)


def macro_f1(predictions: Values, targets: Values) -> float:
    """Unweighted mean of per-class F1 over every class seen in targets or predictions."""
    p, t = _pair(predictions, targets)
    classes = np.unique(np.concatenate([p, t]))
    return float(np.mean([_f1(p, t, c) for c in classes]))


def matthews_corrcoef(predictions: Values, targets: Values) -> float:
    """Matthews correlation (Matthews 1975), multi-class form of Gorodkin 2004.

    With the confusion matrix C, c = trace(C), s = number of examples, t_k / p_k the
    true / predicted counts of class k:
    MCC = (c·s − Σ p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²)); 0.0 if the
    denominator is 0. For two classes this is the usual
    (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).
    """
    p, t = _pair(predictions, targets)
    classes, codes = np.unique(np.concatenate([p, t]), return_inverse=True)
    k, n = len(classes), len(p)
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (codes[n:], codes[:n]), 1.0)  # rows: truth, columns: prediction
    true_k, pred_k = confusion.sum(axis=1), confusion.sum(axis=0)
    s, c = float(n), float(np.trace(confusion))
    numerator = c * s - float(pred_k @ true_k)
    denominator = (s * s - float(pred_k @ pred_k)) * (s * s - float(true_k @ true_k))
    return float(numerator / np.sqrt(denominator)) if denominator > 0 else 0.0


# ---------------------------------------------------------------------------------------
# Regression (correlations)
# ---------------------------------------------------------------------------------------
def pearson(x: Values, y: Values) -> float:
    """Pearson's r; 0.0 if either input is constant, NaN if any value is not finite."""
    a, b = (v.astype(np.float64) for v in _pair(x, y))
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    if np.ptp(a) == 0.0 or np.ptp(b) == 0.0:  # a constant (centring it leaves rounding noise)
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a @ a) * (b @ b))
    if norm == 0.0:
        return 0.0
    return float(np.clip((a @ b) / norm, -1.0, 1.0))


def average_ranks(x: Values) -> np.ndarray:
    """Ranks 1..n; tied values share the mean of the ranks they span (scipy's "average")."""
    v = _array(x)
    order = np.argsort(v, kind="mergesort")
    ordered = v[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1  # group id of each sorted position
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], len(v)]  # exclusive
    mean_rank = (starts + ends - 1) / 2.0 + 1.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(x: Values, y: Values) -> float:
    """Spearman's ρ: Pearson's r of the average ranks; 0.0 / NaN as in :func:`pearson`."""
    a, b = (v.astype(np.float64) for v in _pair(x, y))
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    return pearson(average_ranks(a), average_ranks(b))


# ---------------------------------------------------------------------------------------
# Metric sets and which task uses which
# ---------------------------------------------------------------------------------------
def _mean_of(first: str, second: str, f: Callable, g: Callable) -> Callable:
    def compute(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
        a, b = f(p, t), g(p, t)
        return {first: a, second: b, f"{first}_{second}": (a + b) / 2.0}

    return compute


#: metric set → function of (predictions, targets) returning every metric of the set.
METRIC_SETS: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {
    "accuracy": lambda p, t: {"accuracy": accuracy(p, t)},
    "accuracy_macro_f1": lambda p, t: {"accuracy": accuracy(p, t), "macro_f1": macro_f1(p, t)},
    "mcc": lambda p, t: {"mcc": matthews_corrcoef(p, t), "accuracy": accuracy(p, t)},
    "f1_accuracy": _mean_of("f1", "accuracy", f1_binary, accuracy),
    "pearson_spearman": _mean_of("pearson", "spearman", pearson, spearman),
}

#: task → metric set (GLUE's official metrics; the stand-ins follow the task they stand in for).
TASK_METRICS: dict[str, str] = {
    "cola": "mcc",
    "sst2": "accuracy",
    "mrpc": "f1_accuracy",
    "stsb": "pearson_spearman",
    "qqp": "f1_accuracy",
    "mnli": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
    "wordnet-lex": "accuracy_macro_f1",
    "bible-paraphrase": "f1_accuracy",
}


def compute_metrics(metric_set: str, predictions: Values, targets: Values) -> dict[str, float]:
    """Every metric of ``metric_set`` (a key of :data:`METRIC_SETS`) as floats."""
    if metric_set not in METRIC_SETS:
        raise ValueError(f"unknown metric set {metric_set!r}; valid: {', '.join(METRIC_SETS)}")
    return METRIC_SETS[metric_set](*_pair(predictions, targets))


def task_metrics(task: str, predictions: Values, targets: Values) -> dict[str, float]:
    """The official metrics of ``task`` (a key of :data:`TASK_METRICS`)."""
    if task not in TASK_METRICS:
        raise ValueError(f"no metrics defined for task {task!r}; valid: {', '.join(TASK_METRICS)}")
    return compute_metrics(TASK_METRICS[task], predictions, targets)


# ---------------------------------------------------------------------------------------
# Translation: sacrebleu corpus scores with bootstrap intervals
# ---------------------------------------------------------------------------------------
def bootstrap_interval(
    metric: Any, hypotheses: Sequence[str], references: Sequence[str], n: int, seed: int
) -> tuple[float, float]:
    """95 % percentile bootstrap interval of a sacrebleu corpus metric.

    Resamples sentences with replacement (``default_rng(seed).choice``, as sacrebleu) and
    scores each resample from the sum of sacrebleu's sentence-level sufficient statistics,
    so every resample's score is exactly sacrebleu's corpus score of that resample.
    """
    stats = np.asarray(metric._extract_corpus_statistics(list(hypotheses), [list(references)]))
    stats = stats.astype("float32")  # integer counts: exact; sacrebleu's own dtype
    rng = np.random.default_rng(seed)
    draws = rng.choice(len(stats), size=(n, len(stats)), replace=True)
    scores = sorted(metric._compute_score_from_stats(stats[d].sum(0)).score for d in draws)
    cut = n // 40  # 2.5 % in each tail, sacrebleu's convention
    return float(scores[cut]), float(scores[n - cut - 1])


def score_translations(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    bootstrap: int = 1000,
    seed: int = 12345,
) -> dict[str, Any]:
    """sacrebleu corpus BLEU and chrF on detokenized text, signatures and bootstrap CIs."""
    from sacrebleu.metrics import BLEU, CHRF

    out: dict[str, Any] = {}
    for key, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        out[key] = float(metric.corpus_score(list(hypotheses), [list(references)]).score)
        out[f"{key}_signature"] = str(metric.get_signature())
        if bootstrap > 0 and hypotheses:
            low, high = bootstrap_interval(metric, hypotheses, references, bootstrap, seed)
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = low, high
    return out
