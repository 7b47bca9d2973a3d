"""Interpolated Kneser–Ney n-gram language model: the language-modelling task's baselines.

Kneser & Ney 1995, "Improved backing-off for M-gram language modeling", in the
interpolated form of Chen & Goodman 1999, "An empirical study of smoothing techniques
for language modeling", with one absolute discount per order, D = n₁ / (n₁ + 2 n₂)
(n_k: n-grams seen exactly k times). Counts are ``numpy.unique`` counts of integer keys
of the token stream (one key per n-gram), with no Python loop over tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ngram_keys(stream: np.ndarray, n: int, vocab_size: int, first: int) -> np.ndarray:
    """Keys ``Σ_j token_j · V^(n-1-j)`` of the n-grams ending at positions ≥ ``first``."""
    keys = np.zeros(len(stream) - first, dtype=np.int64)
    for j in range(n):  # token at offset j of the n-gram ending at position i: i - (n-1) + j
        keys = keys * vocab_size + stream[first - (n - 1) + j : len(stream) - (n - 1) + j]
    return keys


def _discount(counts: np.ndarray) -> float:
    """Ney's absolute discount n1 / (n1 + 2·n2) of one order's counts (0.5 if undefined)."""
    n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5


def kneser_ney_nll(
    train: Sequence[int] | np.ndarray,
    test: Sequence[int] | np.ndarray,
    order: int,
    vocab_size: int,
) -> np.ndarray:
    """Per-token NLL (nats, float64) of ``test[1:]`` under interpolated Kneser–Ney.

    Each stream's first token (e.g. [BOS]) is context only; both streams are padded on the
    left with ``order - 2`` more copies of their first token, so every scored token has a
    full history (as n-gram toolkits pad sentences with ``<s>``). The model of order n
    (Chen & Goodman 1999, "An Empirical Study of Smoothing Techniques for Language
    Modeling", interpolated Kneser–Ney with one discount per order)::

        P_k(w | h) = max(c_k(h w) − D_k, 0) / c_k(h ·)
                     + D_k · N_k(h ·) / c_k(h ·) · P_{k−1}(w | h'),     P_0(w) = 1 / V

    where h' drops the first token of h; c_n are the raw counts of the training n-grams
    (those ending at scored positions), c_k for k < n the continuation counts (the number
    of distinct tokens seen before h w in those n-grams' (k+1)-gram windows); c_k(h ·) and
    N_k(h ·) are the sum and the number of nonzero c_k(h w) over w. A history h never seen
    (c_k(h ·) = 0) passes P_{k−1}(w | h') through. D_k is :func:`_discount` of c_k.
    """
    if order < 1:
        raise ValueError(f"kneser_ney_nll needs order >= 1, got {order}")
    if vocab_size ** max(order, 2) >= 2**62:
        raise ValueError(f"vocabulary of {vocab_size} is too large for {order}-gram keys")
    pad = max(order - 2, 0)

    def padded(s: Sequence[int] | np.ndarray) -> np.ndarray:
        a = np.asarray(s, dtype=np.int64)
        if len(a) < 2:
            raise ValueError("kneser_ney_nll needs streams of at least 2 tokens")
        if a.min() < 0 or a.max() >= vocab_size:
            raise ValueError(f"token ids must lie in [0, {vocab_size})")
        return np.concatenate([np.full(pad, a[0]), a])

    tr, te = padded(train), padded(test)
    first = pad + 1  # the first scored position of a padded stream
    prob = np.full(len(te) - first, 1.0 / vocab_size)  # P_0
    for k in range(1, order + 1):
        if k == order:  # raw counts
            types, counts = np.unique(_ngram_keys(tr, k, vocab_size, first), return_counts=True)
        else:  # continuation counts: distinct left neighbours in the (k+1)-gram windows
            wider = np.unique(_ngram_keys(tr, k + 1, vocab_size, first))
            types, counts = np.unique(wider % vocab_size**k, return_counts=True)
        discount = _discount(counts)
        contexts, where = np.unique(types // vocab_size, return_inverse=True)
        context_total = np.bincount(where, weights=counts)
        context_types = np.bincount(where)
        query = _ngram_keys(te, k, vocab_size, first)
        # c_k(h w) of the test n-grams (0 if unseen)
        pos = np.minimum(np.searchsorted(types, query), len(types) - 1)
        c_hw = np.where(types[pos] == query, counts[pos], 0)
        # c_k(h ·), N_k(h ·) of the test histories (0 if unseen)
        history = query // vocab_size
        cpos = np.minimum(np.searchsorted(contexts, history), len(contexts) - 1)
        seen = contexts[cpos] == history
        total = np.where(seen, context_total[cpos], 0.0)
        n_types = np.where(seen, context_types[cpos], 0)
        safe = np.where(seen, total, 1.0)
        interpolated = np.maximum(c_hw - discount, 0.0) / safe + discount * n_types / safe * prob
        prob = np.where(seen, interpolated, prob)
    return -np.log(prob)
