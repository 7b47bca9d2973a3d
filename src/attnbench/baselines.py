"""Trivial baselines: the simple predictors a model must beat to show it learnt anything.

Each task's :meth:`attnbench.tasks.base.Task.baselines` computes its own baselines on its
test split with the functions here and scores their predictions with its own metric, so a
baseline is in the units of the task's primary metric. Everything is deterministic (no
random draws; full-batch optimisation in float64) and uses numpy and torch only.

Classification
    :func:`majority_class` (and :func:`majority_label`): always the most frequent training
    label, ties to the smallest. :func:`grouped_majority`: the most frequent training
    label per value of one feature (e.g. ListOps' root operator).

Linear models on bags of tokens
    :func:`bag_features` turns token sequences into sparse ``log(1 + count)`` features;
    :func:`pair_bag_features` turns two sequences into ``[a + b, |a − b|, a ⊙ b]`` of their
    bags ``a`` and ``b`` (what both contain, where they differ, what they share).
    :func:`select_linear` fits an L2-regularised multinomial logistic regression (or, for a
    regression target, ridge regression) on the training split for each strength of a small
    grid, by full-batch L-BFGS in float64, and keeps the one that scores best on the
    validation split; :func:`bag_of_tokens` does all of it and predicts the test split.

Language models
    :func:`attnbench.ngram.kneser_ney_nll`: per-token NLL of an interpolated Kneser–Ney
    n-gram model (Kneser & Ney 1995; Chen & Goodman 1999) fit on a training token stream.

Translation
    :class:`LexicalTranslator`: word-by-word translation, each source word replaced by the
    target word with the highest Dice coefficient of sentence co-occurrence in the training
    pairs (Dice 1945; Smadja, McKeown & Hatzivassiloglou 1996).

Images
    :func:`blob_centroids`: centres of the two blobs of one gray value (Pathfinder's
    endpoint markers); :func:`select_knn`: k-nearest-neighbour classification with k chosen
    on the validation split.

Cost
    Fitting takes seconds on the larger splits, and a task's baselines are the same for
    every run on its data, so :func:`save_baselines` computes them once when the data are
    prepared (``baselines.json`` in the data directory, with a fingerprint of the code that
    computed them) and :func:`task_baselines` reads them back in each run, recomputing
    only if the code changed since.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

Score = Callable[[np.ndarray, np.ndarray], float]  # (predictions, targets) -> higher is better

#: L2 strengths tried by :func:`select_linear`, strongest first (ties keep the stronger one).
L2_GRID: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
#: neighbour counts tried by :func:`select_knn` (ties keep the smaller k).
K_GRID: tuple[int, ...] = (1, 3, 5, 9, 15, 25, 41)


def accuracy(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Share of exact matches (the default selection score)."""
    return float(np.mean(np.asarray(predictions) == np.asarray(targets)))


# ---------------------------------------------------------------------------------------
# Majority rules
# ---------------------------------------------------------------------------------------
def majority_label(labels: Sequence[int] | np.ndarray) -> int:
    """The most frequent label; ties go to the smallest. Raises ValueError if empty."""
    values, counts = np.unique(np.asarray(labels, dtype=np.int64), return_counts=True)
    if len(values) == 0:
        raise ValueError("majority_label needs at least one label")
    return int(values[np.argmax(counts)])  # argmax: the first (smallest) of the tied


def majority_class(
    train_labels: Sequence[int] | np.ndarray, test_labels: Sequence[int] | np.ndarray
) -> float:
    """Accuracy on the test labels of always predicting the majority training label."""
    test = np.asarray(test_labels, dtype=np.int64)
    if len(test) == 0:
        raise ValueError("majority_class needs at least one test label")
    return accuracy(np.full(len(test), majority_label(train_labels)), test)


def grouped_majority(
    train_keys: Sequence[Any], train_labels: Sequence[int], test_keys: Sequence[Any]
) -> np.ndarray:
    """Per test key, the majority training label among training examples with that key.

    Ties go to the smallest label; a key unseen in training gets the overall majority.
    """
    by_key: dict[Any, list[int]] = {}
    for key, label in zip(train_keys, train_labels, strict=True):
        by_key.setdefault(key, []).append(int(label))
    fallback = majority_label(train_labels)
    rule = {key: majority_label(labels) for key, labels in by_key.items()}
    return np.array([rule.get(key, fallback) for key in test_keys], dtype=np.int64)


# ---------------------------------------------------------------------------------------
# Bag-of-tokens features
# ---------------------------------------------------------------------------------------
def _count_table(docs: Sequence[Sequence[int]], vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys ``doc * vocab_size + token`` of the nonzero counts, and the counts."""
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    tokens = np.concatenate([np.asarray(d, dtype=np.int64) for d in docs if len(d)])
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}), got {tokens.min()}..{tokens.max()}"
        )
    rows = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)
    return np.unique(rows * vocab_size + tokens, return_counts=True)


def _sparse(keys: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int) -> Tensor:
    """A coalesced float64 COO matrix (n_rows, n_cols) from keys ``row * n_cols + col``."""
    index = torch.from_numpy(np.stack([keys // n_cols, keys % n_cols]))
    data = torch.from_numpy(values.astype(np.float64))
    x = torch.sparse_coo_tensor(index, data, (n_rows, n_cols), check_invariants=False)
    return x.coalesce()


def bag_features(docs: Sequence[Sequence[int]], vocab_size: int) -> Tensor:
    """Sparse (len(docs), vocab_size) float64 features ``log(1 + count of token in doc)``."""
    keys, counts = _count_table(docs, vocab_size)
    return _sparse(keys, np.log1p(counts), len(docs), vocab_size)


def pair_bag_features(
    docs_a: Sequence[Sequence[int]], docs_b: Sequence[Sequence[int]], vocab_size: int
) -> Tensor:
    """Sparse (n, 3·vocab_size) features ``[a + b, |a − b|, a ⊙ b]`` of two bags per example.

    ``a`` and ``b`` are the ``log(1 + count)`` bags of the two sequences (as
    :func:`bag_features`): the sum says what the pair contains, the absolute difference
    where the two differ, the product what they share. All three are symmetric in the two
    sequences.
    """
    if len(docs_a) != len(docs_b):
        raise ValueError(f"pair_bag_features: {len(docs_a)} first and {len(docs_b)} second docs")
    keys_a, counts_a = _count_table(docs_a, vocab_size)
    keys_b, counts_b = _count_table(docs_b, vocab_size)
    keys = np.union1d(keys_a, keys_b)
    a = np.zeros(len(keys))
    b = np.zeros(len(keys))
    a[np.searchsorted(keys, keys_a)] = np.log1p(counts_a)
    b[np.searchsorted(keys, keys_b)] = np.log1p(counts_b)
    rows, cols = keys // vocab_size, keys % vocab_size
    parts = []
    for block, values in enumerate((a + b, np.abs(a - b), a * b)):
        keep = values != 0
        parts.append((rows[keep] * 3 * vocab_size + block * vocab_size + cols[keep], values[keep]))
    all_keys = np.concatenate([k for k, _ in parts])
    all_values = np.concatenate([v for _, v in parts])
    return _sparse(all_keys, all_values, len(docs_a), 3 * vocab_size)


# ---------------------------------------------------------------------------------------
# Linear models (full-batch L-BFGS in float64)
# ---------------------------------------------------------------------------------------
@dataclass
class LinearModel:
    """A fitted linear model: ``scores = X @ weight + bias``.

    ``n_classes`` > 1: multinomial logistic regression, predictions are the argmax class;
    ``n_classes`` == 1: ridge regression, predictions are the scores.
    """

    weight: Tensor  # (features, max(n_classes, 1)) float64
    bias: Tensor  # (max(n_classes, 1),) float64
    n_classes: int
    l2: float

    def scores(self, x: Tensor | np.ndarray) -> Tensor:
        return _as_features(x) @ self.weight + self.bias

    def predict(self, x: Tensor | np.ndarray) -> np.ndarray:
        s = self.scores(x)
        if self.n_classes == 1:
            return s[:, 0].numpy()
        return s.argmax(dim=1).numpy()


#: a sparse feature matrix with at least this share of nonzero entries is used densely
DENSE_FROM = 0.5


def _as_features(x: Tensor | np.ndarray) -> Tensor:
    """float64 features: dense when dense enough (:data:`DENSE_FROM`), else sparse CSR."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    x = x.to(torch.float64)
    if x.layout == torch.sparse_coo:
        x = x.coalesce()
        if x.values().numel() >= DENSE_FROM * x.shape[0] * x.shape[1]:
            return x.to_dense()
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return x.to_sparse_csr()
    return x


def _transpose(x: Tensor) -> Tensor:
    if x.layout == torch.sparse_csr:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return x.to_sparse_coo().t().coalesce().to_sparse_csr()
    return x.t().contiguous()


def fit_linear(
    x: Tensor | np.ndarray,
    y: Sequence[float] | np.ndarray,
    n_classes: int,
    l2: float,
    *,
    init: LinearModel | None = None,
    max_iter: int = 100,
    tolerance: float = 1e-7,
) -> LinearModel:
    """Minimise mean loss + (l2 / 2)·‖weight‖² (the bias is not penalised) by L-BFGS.

    ``n_classes`` ≥ 2: softmax cross-entropy on integer labels ``y`` in ``[0, n_classes)``
    (scikit-learn's multinomial ``LogisticRegression(C)`` with ``C = 1 / (l2 · n)``);
    ``n_classes`` == 1: half the squared error on real targets (ridge regression). ``x``
    may be dense or sparse (COO or CSR). ``init`` warm-starts from another fit.

    The optimisation runs on centred features (``x − mean`` with the bias absorbing
    ``mean @ weight``): with an unpenalised bias this is the same objective and the same
    optimum, but far better conditioned when a token occurs in nearly every example. It
    stops after ``max_iter`` iterations or when no gradient entry exceeds ``tolerance``;
    nothing is random (full batch, float64), so the same inputs give the same model.
    """
    if l2 <= 0:
        raise ValueError(f"fit_linear needs l2 > 0, got {l2}")
    x = _as_features(x)
    n, d = x.shape
    if n == 0:
        raise ValueError("fit_linear needs at least one example")
    k = max(n_classes, 1)
    xt = _transpose(x)
    mean = (xt @ torch.ones(n, 1, dtype=torch.float64))[:, 0] / n  # (d,)
    if n_classes >= 2:
        labels = torch.as_tensor(np.asarray(y, dtype=np.int64))
        if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
            raise ValueError(f"labels must lie in [0, {n_classes})")
        target = torch.nn.functional.one_hot(labels, n_classes).to(torch.float64)
    else:
        target = torch.as_tensor(np.asarray(y, dtype=np.float64))[:, None]
    weight = torch.zeros(d, k, dtype=torch.float64)
    bias = torch.zeros(k, dtype=torch.float64)  # the bias of the centred features
    if init is not None:
        weight.copy_(init.weight)
        bias.copy_(init.bias + mean @ init.weight)
    elif n_classes == 1:
        bias.fill_(float(target.mean()))
    weight.requires_grad_(True)
    bias.requires_grad_(True)

    def closure() -> Tensor:
        # loss and gradient in closed form (a sparse x needs no autograd through the product)
        with torch.no_grad():
            s = x @ weight + (bias - mean @ weight)
            if n_classes >= 2:
                logp = torch.log_softmax(s, dim=1)
                data = -(target * logp).sum() / n
                residual = (logp.exp() - target) / n
            else:
                diff = s - target
                data = 0.5 * (diff * diff).sum() / n
                residual = diff / n
            loss = data + 0.5 * l2 * (weight * weight).sum()
            column = residual.sum(dim=0)
            weight.grad = xt @ residual - mean[:, None] * column + l2 * weight
            bias.grad = column
        return loss

    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=tolerance,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    optimizer.step(closure)
    w = weight.detach()
    return LinearModel(w, bias.detach() - mean @ w, n_classes, l2)


def select_linear(
    x_train: Tensor | np.ndarray,
    y_train: Sequence[float] | np.ndarray,
    x_val: Tensor | np.ndarray,
    y_val: Sequence[float] | np.ndarray,
    n_classes: int,
    *,
    score: Score | None = None,
    grid: Sequence[float] = L2_GRID,
) -> LinearModel:
    """The :func:`fit_linear` model of the ``grid`` strength that scores best on validation.

    Strengths are fitted strongest first, each warm-started from the previous fit; ties keep
    the stronger one. ``score(predictions, targets)``, higher is better, defaults to
    accuracy (classification) and negative mean squared error (``n_classes`` == 1).
    """
    if not grid:
        raise ValueError("select_linear needs a non-empty grid")
    if score is None:
        score = accuracy if n_classes >= 2 else _neg_mse
    x_train, x_val = _as_features(x_train), _as_features(x_val)
    y_val_array = np.asarray(y_val)
    best: tuple[float, LinearModel] | None = None
    previous: LinearModel | None = None
    for l2 in sorted(grid, reverse=True):
        previous = fit_linear(x_train, y_train, n_classes, l2, init=previous)
        value = score(previous.predict(x_val), y_val_array)
        if best is None or value > best[0]:
            best = (value, previous)
    assert best is not None
    return best[1]


def _neg_mse(predictions: np.ndarray, targets: np.ndarray) -> float:
    return -float(np.mean((np.asarray(predictions) - np.asarray(targets)) ** 2))


def bag_of_tokens(
    features: Callable[[str], Tensor],
    labels: dict[str, Sequence[float]],
    n_classes: int,
    *,
    score: Score | None = None,
) -> np.ndarray:
    """Test-split predictions of a linear model on bag-of-tokens features.

    ``features(split)`` gives the feature matrix of ``train``, ``val`` and ``test`` (e.g.
    :func:`bag_features` or :func:`pair_bag_features` of the split's token sequences);
    ``labels[split]`` the targets of ``train`` and ``val``. The strength is chosen on
    ``val`` by ``score`` (:func:`select_linear`).
    """
    model = select_linear(
        features("train"),
        labels["train"],
        features("val"),
        labels["val"],
        n_classes,
        score=score,
    )
    return model.predict(_as_features(features("test")))


# ---------------------------------------------------------------------------------------
# k nearest neighbours
# ---------------------------------------------------------------------------------------
def _nearest(x_train: np.ndarray, x_query: np.ndarray, k: int) -> np.ndarray:
    """(len(x_query), k) indices of the nearest training points, nearest first.

    Squared Euclidean distances ``‖q‖² − 2·q·t + ‖t‖²`` in float64, queries in chunks;
    equal distances go to the earlier training point (only the candidates up to the k-th
    distance are sorted, so a large training split costs one partition per query).
    """
    k = min(k, len(x_train))
    train_sq = (x_train * x_train).sum(axis=1)
    chunk = max(1, 2_000_000 // max(1, len(x_train)))
    out = np.empty((len(x_query), k), dtype=np.int64)
    for start in range(0, len(x_query), chunk):
        q = x_query[start : start + chunk]
        d2 = (q * q).sum(axis=1)[:, None] - 2.0 * (q @ x_train.T) + train_sq[None, :]
        kth = np.partition(d2, k - 1, axis=1)[:, k - 1]
        for row, (distances, limit) in enumerate(zip(d2, kth, strict=True)):
            candidates = np.flatnonzero(distances <= limit)  # ascending index
            best = np.argsort(distances[candidates], kind="stable")[:k]
            out[start + row] = candidates[best]
    return out


def _vote(y_train: np.ndarray, nearest: np.ndarray, k: int) -> np.ndarray:
    """Majority label among the first k neighbours (ties: the smallest label)."""
    votes = np.zeros((len(nearest), int(y_train.max()) + 1), dtype=np.int64)
    np.add.at(votes, (np.arange(len(nearest))[:, None], y_train[nearest[:, :k]]), 1)
    return votes.argmax(axis=1)


def knn_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, k: int) -> np.ndarray:
    """Majority label of the k nearest training points (Euclidean distance).

    Distance ties go to the earlier training point, vote ties to the smallest label.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    y_train = np.asarray(y_train, dtype=np.int64)
    nearest = _nearest(x_train, np.asarray(x_test, dtype=np.float64), k)
    return _vote(y_train, nearest, k)


def select_knn(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    *,
    grid: Sequence[int] = K_GRID,
) -> tuple[np.ndarray, int]:
    """k-NN test predictions with the k of ``grid`` most accurate on validation, and that k.

    Features are standardised with the training mean and standard deviation; ties between
    values of k keep the smallest.
    """
    if not grid:
        raise ValueError("select_knn needs a non-empty grid")
    x_train = np.asarray(x_train, dtype=np.float64)
    y_train = np.asarray(y_train, dtype=np.int64)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0

    def scale(x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - mean) / std

    train = scale(x_train)
    nearest_val = _nearest(train, scale(x_val), max(grid))
    y_val = np.asarray(y_val)
    best_k = max(
        sorted(grid),  # max keeps the first of the tied: the smallest k
        key=lambda k: accuracy(_vote(y_train, nearest_val, k), y_val),
    )
    return knn_predict(train, y_train, scale(x_test), best_k), best_k


def blob_centroids(images: np.ndarray, value: int) -> np.ndarray:
    """Centres (y, x) of the two 8-connected blobs of pixels equal to ``value``, per image.

    ``images``: (N, H, W). Returns (N, 4) float64 ``[y1, x1, y2, x2]``, the two blobs
    ordered by their centre (row, then column). An image without exactly two such blobs
    (touching markers, say) gets the centre of all its ``value`` pixels twice, or the image
    centre twice if it has none.
    """
    images = np.asarray(images)
    out = np.empty((len(images), 4))
    for i, image in enumerate(images):
        ys, xs = np.nonzero(image == value)
        blobs = _components(ys, xs)
        if len(blobs) == 2:
            centres = sorted((float(ys[b].mean()), float(xs[b].mean())) for b in blobs)
            out[i] = [*centres[0], *centres[1]]
        elif len(ys):
            out[i] = [ys.mean(), xs.mean()] * 2
        else:
            out[i] = [(image.shape[0] - 1) / 2, (image.shape[1] - 1) / 2] * 2
    return out


def _components(ys: np.ndarray, xs: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a few pixels (union–find on their pairwise distances)."""
    n = len(ys)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    near = np.maximum(np.abs(ys[:, None] - ys[None, :]), np.abs(xs[:, None] - xs[None, :])) <= 1
    for i, j in zip(*np.nonzero(np.triu(near, 1)), strict=True):
        parent[root(int(i))] = root(int(j))
    roots = np.array([root(i) for i in range(n)], dtype=np.int64)
    return [np.flatnonzero(roots == r) for r in np.unique(roots)]


# ---------------------------------------------------------------------------------------
# Word-by-word lexical translation
# ---------------------------------------------------------------------------------------
_WORD = re.compile(r"\w+|[^\w\s]")
_NO_SPACE_BEFORE = re.compile(r" ([.,;:!?)\]}»])")
_NO_SPACE_AFTER = re.compile(r"([(\[{«¿¡]) ")


def words(sentence: str) -> list[str]:
    """Words and punctuation marks (``\\w+`` runs and single other characters), as written."""
    return _WORD.findall(sentence)


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens joined by spaces, with no space before closing or after opening punctuation,
    and the first letter upper-cased (sentences start with a capital)."""
    text = _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", " ".join(tokens)))
    return text[:1].upper() + text[1:]


class LexicalTranslator:
    """Word-by-word translation by the Dice coefficient of sentence co-occurrence.

    Fit on sentence pairs, each side split by :func:`words`. For a source word s and a
    target word t, with ``c(s)``, ``c(t)`` the numbers of training pairs whose source holds
    s / whose target holds t and ``c(s, t)`` the number holding both,
    ``Dice(s, t) = 2·c(s, t) / (c(s) + c(t))``. A source word becomes the target word of
    highest Dice (ties: the more frequent target word, then the first in sorted order),
    words only to words and punctuation marks only to marks (else every frequent word
    would become a comma); a source token without a candidate, e.g. never seen in
    training, is copied (names, numbers). Words are matched in
    lower case and written in their most frequent training spelling (ties: the first in
    sorted order), so "God" → "dios" → "Dios". Output keeps the source's word order and is
    detokenized by :func:`detokenize`.
    """

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table  # lower-cased source word -> target word as written

    @classmethod
    def fit(cls, sources: Sequence[str], targets: Sequence[str]) -> LexicalTranslator:
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        src_vocab: dict[str, int] = {}
        tgt_vocab: dict[str, int] = {}
        src_ids: list[np.ndarray] = []
        tgt_ids: list[np.ndarray] = []
        spellings: dict[str, Counter[str]] = {}
        for sentence, vocab, out in (
            *((s, src_vocab, src_ids) for s in sources),
            *((t, tgt_vocab, tgt_ids) for t in targets),
        ):
            tokens = words(sentence)
            if vocab is tgt_vocab:
                for w in tokens:
                    spellings.setdefault(w.lower(), Counter())[w] += 1
            ids = {vocab.setdefault(w.lower(), len(vocab)) for w in tokens}
            out.append(np.array(sorted(ids), dtype=np.int64))
        n_s, n_t = len(src_vocab), len(tgt_vocab)
        if not n_s or not n_t:
            return cls({})
        len_s = np.array([len(a) for a in src_ids], dtype=np.int64)
        len_t = np.array([len(a) for a in tgt_ids], dtype=np.int64)
        flat_s = np.concatenate(src_ids)
        flat_t = np.concatenate(tgt_ids)
        count_s = np.bincount(flat_s, minlength=n_s)
        count_t = np.bincount(flat_t, minlength=n_t)
        # every (source word, target word) pair of each sentence pair, without a Python loop
        per = len_s * len_t
        sentence = np.repeat(np.arange(len(per)), per)
        local = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
        start_s = np.cumsum(len_s) - len_s
        start_t = np.cumsum(len_t) - len_t
        safe_t = np.maximum(len_t[sentence], 1)
        s_word = flat_s[start_s[sentence] + local // safe_t]
        t_word = flat_t[start_t[sentence] + local % safe_t]
        keys, joint = np.unique(s_word * n_t + t_word, return_counts=True)
        s_of, t_of = keys // n_t, keys % n_t
        s_names = sorted(src_vocab, key=src_vocab.__getitem__)
        t_names = np.array(sorted(tgt_vocab, key=tgt_vocab.__getitem__), dtype=object)
        s_is_word = np.array([w[0].isalnum() or w[0] == "_" for w in s_names])
        t_is_word = np.array([w[0].isalnum() or w[0] == "_" for w in t_names])
        same_kind = s_is_word[s_of] == t_is_word[t_of]  # words to words, marks to marks
        keys, joint, s_of, t_of = (
            keys[same_kind],
            joint[same_kind],
            s_of[same_kind],
            t_of[same_kind],
        )
        dice = 2.0 * joint / (count_s[s_of] + count_t[t_of])
        # best target per source word: sort by (source, -dice, -count(t), target string)
        t_rank = np.empty(n_t, dtype=np.int64)
        t_rank[np.argsort(t_names.astype(str), kind="stable")] = np.arange(n_t)
        order = np.lexsort((t_rank[t_of], -count_t[t_of], -dice, s_of))
        first = order[np.r_[True, s_of[order][1:] != s_of[order][:-1]]] if len(order) else order
        written = {w: min(forms, key=lambda f: (-forms[f], f)) for w, forms in spellings.items()}
        return cls({s_names[s_of[i]]: written[str(t_names[t_of[i]])] for i in first})

    def translate(self, sentence: str) -> str:
        return detokenize([self.table.get(w.lower(), w) for w in words(sentence)])


# ---------------------------------------------------------------------------------------
# Computed once per prepared data set
# ---------------------------------------------------------------------------------------
BASELINES_FILE = "baselines.json"


def code_fingerprint(task: Any) -> str:
    """SHA-256 of the source of every attnbench module a task's baselines may depend on.

    Those are the modules defining the task's classes (its whole hierarchy), the
    attnbench modules they import (e.g. :mod:`attnbench.data.listops`), this module and
    :mod:`attnbench.metrics`. Any edit there changes the fingerprint, so baselines saved
    with the data are never served stale (they are recomputed instead).
    """
    names = {__name__, "attnbench.metrics"}
    for cls in type(task).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is None or not cls.__module__.startswith("attnbench."):
            continue
        names.add(cls.__module__)
        names.update(
            value.__name__
            for value in vars(module).values()
            if inspect.ismodule(value) and value.__name__.startswith("attnbench.")
        )
    digest = hashlib.sha256()
    for name in sorted(names):
        module = importlib.import_module(name)
        try:
            source = inspect.getsource(module)
        except (OSError, TypeError):  # no source (e.g. compiled): never match a saved file
            source = f"<no source: {name} {id(module)}>"
        digest.update(name.encode() + b"\0" + source.encode() + b"\0")
    return digest.hexdigest()


def save_baselines(task: Any, data_dir: Path) -> dict[str, float]:
    """Compute ``task.baselines()`` (the task's data loaded) and save them in ``data_dir``.

    Called when the data are prepared, so that the models need not be refit by every
    training run of the task (:func:`task_baselines` reads them back).
    """
    values = {str(k): float(v) for k, v in task.baselines().items()}
    payload = {"task": task.name, "fingerprint": code_fingerprint(task), "baselines": values}
    (Path(data_dir) / BASELINES_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    return values


def task_baselines(task: Any, data_dir: Path) -> dict[str, float]:
    """The task's baselines: saved with its data if they match the code, else computed."""
    try:
        saved = json.loads((Path(data_dir) / BASELINES_FILE).read_text())
        if saved["task"] == task.name and saved["fingerprint"] == code_fingerprint(task):
            values = saved["baselines"]
            if isinstance(values, dict) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()
            ):
                return {str(k): float(v) for k, v in values.items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return task.baselines()
