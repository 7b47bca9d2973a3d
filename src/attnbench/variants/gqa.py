"""Grouped-query attention (GQA) and its extreme, multi-query attention (MQA).

Ainslie, Lee-Thorp, de Jong, Zemlyanskiy, Lebrón & Sanghai, "GQA: Training Generalized
Multi-Query Transformer Models from Multi-Head Checkpoints", EMNLP 2023;
Shazeer, "Fast Transformer Decoding: One Write-Head is All You Need", 2019.

The h query heads are split into G = ``kv_heads`` groups of g = h / G consecutive heads;
every head of group j reads the same key and value head::

    Q_i = X W_Q^i                 i = 1 … h          (h · d_h query outputs, as usual)
    K_j = S W_K^j,  V_j = S W_V^j  j = 1 … G          (G · d_h key and value outputs)
    head_i = softmax(Q_i K_{j(i)}ᵀ / √d_h + M) V_{j(i)},   j(i) = ⌊(i − 1) / g⌋ + 1
    GQA(X, S) = Concat(head_1, …, head_h) W_O

with M = −∞ on masked keys. G = h is standard multi-head attention (with the same
weights it is the ``vanilla`` variant exactly); G = 1 is multi-query attention
(``mqa``). Only the K/V projections shrink, so a decoder caches 2 · G · d_h elements
per token and layer instead of 2 · h · d_h (:meth:`GroupedQueryAttention.kv_cache_size`).

``kv_heads`` must divide ``n_heads``. The default (``None``) is the largest divisor of
``n_heads`` below it, i.e. ``n_heads // p`` with p the smallest prime factor:
``n_heads // 2`` for an even head count (2 K/V heads for 4 query heads), 1 (MQA) for a
prime one, and 1 for a single head (which is then plain attention).

A group's g queries are stacked into one (g · T) × d_h matrix, so each group multiplies
its one K (and V) once and no K/V copy is made; with g = 1 the operations are those of
``vanilla``, in the same order. Time O(n²·d), memory O(n²) (the weights), as vanilla.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionOutput,
    Capabilities,
    MultiHeadAttention,
    default_scale,
    register_preset,
    register_variant,
    scaled_masked_softmax,
)


@dataclass
class GQAOptions:
    # key/value heads; must divide n_heads. None: n_heads // (its smallest prime factor),
    # i.e. n_heads // 2 for an even head count
    kv_heads: int | None = None

    def __post_init__(self) -> None:
        if self.kv_heads is not None and self.kv_heads < 1:
            raise ValueError(f"kv_heads must be a positive divisor of n_heads, got {self.kv_heads}")


def default_kv_heads(n_heads: int) -> int:
    """The largest divisor of ``n_heads`` below ``n_heads`` (1 for one head)."""
    return max((d for d in range(1, n_heads) if n_heads % d == 0), default=1)


def resolve_kv_heads(options: GQAOptions, n_heads: int) -> int:
    """``options.kv_heads`` (or its default) after checking that it divides ``n_heads``."""
    kv = default_kv_heads(n_heads) if options.kv_heads is None else options.kv_heads
    if kv < 1 or n_heads % kv:
        valid = ", ".join(str(d) for d in range(1, n_heads + 1) if n_heads % d == 0)
        raise ValueError(f"kv_heads={kv} must divide n_heads={n_heads}; valid values: {valid}")
    return kv


@register_variant(
    "gqa",
    paper=(
        'Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models '
        'from Multi-Head Checkpoints"'
    ),
    summary="softmax attention whose query heads share kv_heads key/value heads in groups",
)
class GroupedQueryAttention(MultiHeadAttention):
    """Softmax attention with ``kv_heads`` key/value heads, each shared by a group of queries."""

    Options = GQAOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        # RoPE rotates the h query and G key heads alike; ALiBi biases the (B, h, T, S) scores
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope", "alibi"}),
        time_complexity="O(n²·d)",
        memory_complexity="O(n²)",
    )

    def __init__(self, dims: AttentionDims, options: GQAOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: GQAOptions
        self.kv_heads = resolve_kv_heads(self.options, dims.n_heads)
        kv_inner = self.kv_heads * dims.head_dim
        # W_K, W_V: G · d_h outputs instead of h · d_h (the base class built the full ones)
        self.k_proj = nn.Linear(dims.d_model, kv_inner)
        self.v_proj = nn.Linear(dims.d_model, kv_inner)

    @classmethod
    def kv_cache_size(cls, options: GQAOptions, dims: AttentionDims) -> int | None:
        """One key and one value per K/V head: 2 · kv_heads · head_dim elements per token."""
        return 2 * resolve_kv_heads(options, dims.n_heads) * dims.head_dim

    def split_kv_heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.kv_heads, self.dims.head_dim).transpose(1, 2)  # (B, G, n, dh)

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        kv = x if source is None else source
        q = self.split_heads(self.q_proj(x))  # (B, h, T, dh)
        k = self.split_kv_heads(self.k_proj(kv))  # (B, G, S, dh)
        v = self.split_kv_heads(self.v_proj(kv))  # (B, G, S, dh)
        q, k = self.rotate(q, k, ctx)  # RoPE, when the model's scheme is rope
        out, weights = self.attend(q, k, v, ctx)  # (B, h, T, dh), (B, h, T, S)
        return AttentionOutput(
            out=self.project_out(out, ctx.head_mask),
            weights=weights if ctx.need_weights else None,
        )

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        """``q`` (B, h, T, dh), ``k`` and ``v`` (B, G, S, dh) → (B, h, T, dh), (B, h, T, S)."""
        b, h, t, dh = q.shape
        g_kv, s = k.shape[1], k.shape[2]
        # group r = heads r·g … r·g + g − 1 (g = h / G): stack their queries, (B, G, g·T, dh)
        q_grouped = (q * default_scale(dh)).reshape(b, g_kv, (h // g_kv) * t, dh)
        scores = (q_grouped @ k.transpose(-2, -1)).view(b, h, t, s)  # (B, h, T, S)
        probs = scaled_masked_softmax(scores, ctx.mask)  # + M as an additive mask
        weighted = self.attn_dropout(probs).view(b, g_kv, (h // g_kv) * t, s)
        out = (weighted @ v).view(b, h, t, dh)  # (B, h, T, dh)
        return out, probs


register_preset(
    "mqa",
    "gqa",
    kv_heads=1,
    paper='Shazeer 2019, "Fast Transformer Decoding: One Write-Head is All You Need"',
    summary="multi-query attention: every query head shares one key/value head",
)
