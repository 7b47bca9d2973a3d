"""Top-k attention: each query keeps only its k highest-scoring keys.

Zhao, Lin, Chen, Su, Ren & Sun, "Explicit Sparse Transformer: Concentrated Attention
Through Explicit Selection", 2019 (arXiv:1912.11637).

For the scores P = Q Kᵀ / √d and t_i the k-th largest score of query i::

    M(P, k)_ij = P_ij   if P_ij ≥ t_i,   −∞ otherwise
    out        = softmax(M(P, k)) V

The selection is taken among the keys the query may see (future and padded keys
are never selected); a query with fewer than k allowed keys keeps them all (e.g.
the first rows under causal masking), and one with none gets zeros. Gradients
flow through the softmax over the kept keys; the selection itself is piecewise
constant, as in the paper.

Ties at the k-th score: the paper's rule P_ij ≥ t_i would keep every tied key (so
more than k). Here exactly k keys are kept: every key strictly above t_i, then the
tied keys in order of position (the earliest first) until k are selected. This is
deterministic on every device — it does not depend on the order in which
``torch.topk`` happens to return equal values.

Registered as ``topk-8`` (k = 8, the class defaults) with presets ``topk-16`` and
``topk-32`` — no bare ``topk`` that would duplicate one of them. k ≥ the number of
keys is vanilla attention. The full score matrix is still built (this is a sparsity prior, not an
efficiency method): time O(n²·d), memory O(n²).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    Capabilities,
    MultiHeadAttention,
    default_scale,
    masked_softmax,
    register_preset,
    register_variant,
)


@dataclass
class TopKOptions:
    k: int = 8  # keys kept per query

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be positive, got {self.k}")


def topk_keep(scores: Tensor, allowed: Tensor | None, k: int) -> Tensor | None:
    """Boolean mask (broadcast to ``scores``' shape) of the k best allowed keys per row.

    Ties at the k-th value go to the earliest positions, so a row keeps exactly
    min(k, number of allowed keys) keys. ``None`` means every key is kept.
    """
    n_keys = scores.shape[-1]
    if k >= n_keys:
        return allowed
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    kth = scores.topk(k, dim=-1).values[..., -1:]  # (B, H, T, 1): t_i
    above = scores > kth  # (B, H, T, S)
    tied = scores == kth
    room = k - above.sum(dim=-1, keepdim=True)  # tied keys still to take (≥ 1)
    keep = above | (tied & (tied.cumsum(dim=-1) <= room))  # earliest tied keys first
    return keep if allowed is None else keep & allowed


@register_variant(
    "topk-8",
    paper=(
        'Zhao et al. 2019, "Explicit Sparse Transformer: Concentrated Attention '
        'Through Explicit Selection"'
    ),
    summary="top-k attention, k = 8: softmax over each query's 8 best keys",
)
class TopK(MultiHeadAttention):
    """Softmax attention restricted to each query's k highest-scoring allowed keys."""

    Options = TopKOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope"}),
        time_complexity="O(n²·d)",  # plus O(n² log k) for the selection
        memory_complexity="O(n²)",
    )

    def __init__(self, dims: AttentionDims, options: TopKOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: TopKOptions

    @classmethod
    def dense_reason(cls, options: TopKOptions, n: int) -> str | None:
        """k ≥ n: every key is kept — vanilla attention."""
        if options.k >= n:
            return f"k = {options.k} ≥ n = {n}: every key is kept"
        return None

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        scores = (q @ k.transpose(-2, -1)) * default_scale(q.shape[-1])  # (B, H, T, S)
        allowed = ctx.mask.allowed(q.shape[-2], k.shape[-2], q.device)
        with torch.no_grad():  # the selection is piecewise constant
            keep = topk_keep(scores, allowed, self.options.k)  # (B, H, T, S) bool
        probs = masked_softmax(scores, keep)  # (B, H, T, S), k non-zeros per row
        out = self.attn_dropout(probs) @ v  # (B, H, T, dh)
        return out, probs


register_preset("topk-16", "topk-8", k=16, summary="top-k attention, k = 16")
register_preset("topk-32", "topk-8", k=32, summary="top-k attention, k = 32")
