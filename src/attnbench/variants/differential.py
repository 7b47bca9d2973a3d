"""Differential attention: the difference of two softmax maps cancels common-mode noise.

Ye, Dong, Xia, Sun, Zhu, Huang & Wei, "Differential Transformer", 2024
(arXiv:2410.05258; ICLR 2025). Per head, with queries and keys split in two halves of
width d and values of width 2d::

    [Q1; Q2] = X W_Q,  [K1; K2] = S W_K,  V = S W_V          Qi, Ki: n × d, V: n × 2d
    DiffAttn(X) = (softmax(Q1 K1ᵀ / √d + M) − λ · softmax(Q2 K2ᵀ / √d + M)) V
    λ = exp(λ_q1 · λ_k1) − exp(λ_q2 · λ_k2) + λ_init
    λ_init = 0.8 − 0.6 · exp(−0.3 · (l − 1))                 l = 1 … L, the layer
    head_i = (1 − λ_init) · RMSNorm(DiffAttn_i(X))            per head, over its 2d channels
    MultiHead(X) = Concat(head_1, …, head_h) W_O

with M = −∞ on masked keys. λ_q1, λ_k1, λ_q2, λ_k2 ∈ ℝᵈ are learned vectors drawn from
N(0, 0.1²) (as in the authors' code), one set per layer shared by its heads; they are
1-D, so weight decay leaves them alone. λ_init is fixed per layer:
``dims.layer_index`` is 0-based, so l = layer_index + 1 (λ_init = 0.2 in the first
layer, → 0.8 with depth). The per-head normalisation is RMSNorm (ε = 1e-5) with a learned
gain of 2d entries shared by the heads, as in the authors' code (the paper's pseudocode
calls it GroupNorm: each head is normalised on its own); the fixed factor (1 − λ_init)
aligns the gradient flow with that of softmax attention.

Head count and parameters (option ``heads``). The paper keeps the Transformer's head
width d = d_h and halves the number of heads, h = H / 2, so that W_Q, W_K, W_V, W_O keep
their sizes: ``heads="half"`` (default) does exactly that with the model's H and d_h —
the same projections as ``vanilla``, plus 4d (λ) + 2d (gain) parameters per layer;
H must be even. ``heads="all"`` keeps all H heads and halves their width instead
(d = d_h / 2, value width d_h; the same projections again; d_h must be even).

Head gates (``ctx.head_mask``, one per model head slot, H entries): with ``"half"``
differential head i occupies the channels of slots 2i and 2i + 1, and it is kept only
when both are (its gate is their product) — a head ablation then reports the same
change for both slots of a pair. With ``"all"`` slot i is head i.

The returned weights are the map applied to V, A1 − λ·A2 (B, h, T, S): it has negative
entries and rows summing to 1 − λ. Masked keys get exactly 0 in both maps. Time
O(n²·d) and memory O(n²), as vanilla: with ``"half"`` the 2h = H maps of width d = d_h
are vanilla's H maps in number and width; ``"all"`` has 2H maps of width d_h / 2, the
same QKᵀ FLOPs but twice the n² entries to normalise and hold.

Positions: the paper's models use RoPE. Under ``rope`` every sub-head (Q1, K1 and Q2, K2
of each head, width d) is rotated on its own, θ_i = 10000^(−2i/d), as in the authors'
code; d must be even. ALiBi is not offered (the 2h maps would need their own slopes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionOutput,
    Capabilities,
    MultiHeadAttention,
    project_heads,
    register_variant,
    rope_frequencies,
    scaled_masked_softmax,
)

HEADS = ("half", "all")
NORM_EPS = 1e-5


@dataclass
class DifferentialOptions:
    # "half": n_heads/2 differential heads of query/key width head_dim (the paper);
    # "all": n_heads differential heads of query/key width head_dim/2
    heads: str = "half"

    def __post_init__(self) -> None:
        if self.heads not in HEADS:
            raise ValueError(f"heads must be one of {', '.join(HEADS)}, got {self.heads!r}")


def lambda_init(layer: int) -> float:
    """λ_init = 0.8 − 0.6 · exp(−0.3 · (l − 1)) for the 1-based layer number l."""
    return 0.8 - 0.6 * math.exp(-0.3 * (layer - 1))


@register_variant(
    "differential",
    paper='Ye et al. 2024, "Differential Transformer"',
    summary="(softmax(Q1K1ᵀ/√d) − λ softmax(Q2K2ᵀ/√d))V per head, RMSNorm, × (1 − λ_init)",
)
class DifferentialAttention(MultiHeadAttention):
    """Two softmax maps per head, subtracted with a learned λ, then per-head RMSNorm."""

    Options = DifferentialOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope"}),
        time_complexity="O(n²·d)",
        memory_complexity="O(n²)",
    )

    @classmethod
    def unsupported_dims(cls, options: Any, dims: AttentionDims) -> str | None:
        if options.heads == "half" and dims.n_heads % 2:
            return f"needs an even n_heads (heads='half' pairs them); the model has {dims.n_heads}"
        half = dims.head_dim if options.heads == "half" else dims.head_dim // 2
        if dims.position_scheme == "rope" and half % 2:
            return f"rotates sub-heads of width {half} under RoPE, which needs an even width"
        return None

    def __init__(self, dims: AttentionDims, options: DifferentialOptions | None = None) -> None:
        super().__init__(dims, options)  # W_Q, W_K, W_V, W_O: the sizes of vanilla's
        self.options: DifferentialOptions
        if self.options.heads == "half":
            if dims.n_heads % 2:
                raise ValueError(
                    f"differential heads='half' needs an even n_heads, got {dims.n_heads}; "
                    "use heads='all'"
                )
            self.n_diff_heads, self.half_dim = dims.n_heads // 2, dims.head_dim
        else:
            if dims.head_dim % 2:
                raise ValueError(
                    f"differential heads='all' needs an even head_dim, got {dims.head_dim}; "
                    "use heads='half'"
                )
            self.n_diff_heads, self.half_dim = dims.n_heads, dims.head_dim // 2
        d = self.half_dim
        self.lambda_init = lambda_init(dims.layer_index + 1)
        self.lambda_q1 = nn.Parameter(torch.randn(d) * 0.1)
        self.lambda_k1 = nn.Parameter(torch.randn(d) * 0.1)
        self.lambda_q2 = nn.Parameter(torch.randn(d) * 0.1)
        self.lambda_k2 = nn.Parameter(torch.randn(d) * 0.1)
        self.norm_weight = nn.Parameter(torch.ones(2 * d))  # RMSNorm gain, shared by heads
        if self.rope_freqs is not None:  # RoPE on the sub-heads of width d
            if d % 2:
                raise ValueError(f"differential under RoPE needs an even sub-head width, got {d}")
            self.rope_freqs = rope_frequencies(d)

    def lambda_(self) -> Tensor:
        """λ = exp(λ_q1 · λ_k1) − exp(λ_q2 · λ_k2) + λ_init, a 0-dim tensor."""
        return (
            torch.exp(self.lambda_q1 @ self.lambda_k1)
            - torch.exp(self.lambda_q2 @ self.lambda_k2)
            + self.lambda_init
        )

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        kv = x if source is None else source
        b, t, _ = x.shape
        s = kv.shape[1]
        h, d = self.n_diff_heads, self.half_dim
        # sub-head 2i + j is half j of head i: [Q1; Q2] per head, as the channels lie
        q = self.q_proj(x).view(b, t, 2 * h, d).transpose(1, 2)  # (B, 2h, T, d)
        k = self.k_proj(kv).view(b, s, 2 * h, d).transpose(1, 2)  # (B, 2h, S, d)
        v = self.v_proj(kv).view(b, s, h, 2 * d).transpose(1, 2)  # (B, h, S, 2d)
        q, k = self.rotate(q, k, ctx)  # RoPE on each sub-head, when the scheme is rope
        out, weights = self.attend(q, k, v, ctx)  # (B, h, T, 2d), (B, h, T, S)
        return AttentionOutput(
            out=project_heads(out, self.out_proj, self.head_gates(ctx.head_mask)),
            weights=weights if ctx.need_weights else None,
        )

    def head_gates(self, head_mask: Tensor | None) -> Tensor | None:
        """The model's H head-slot gates → one gate per differential head (their product)."""
        if head_mask is None:
            return None
        return head_mask.view(self.n_diff_heads, -1).prod(dim=-1)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        """``q``: (B, 2h, T, d), ``k``: (B, 2h, S, d), ``v``: (B, h, S, 2d) → (B, h, T, 2d)."""
        b, two_h, t, d = q.shape
        s = k.shape[-2]
        scores = (q * (1.0 / math.sqrt(d))) @ k.transpose(-2, -1)  # (B, 2h, T, S)
        maps = scaled_masked_softmax(scores, ctx.mask).view(b, two_h // 2, 2, t, s)
        lam = self.lambda_().to(maps.dtype)
        weights = maps[:, :, 0] - lam * maps[:, :, 1]  # A1 − λ·A2 (B, h, T, S)
        out = self.attn_dropout(weights) @ v  # DiffAttn (B, h, T, 2d)
        # RMSNorm over each head's 2d channels, in at least float32 (bf16 under autocast)
        wide = out.to(torch.promote_types(out.dtype, torch.float32))
        rms_inv = torch.rsqrt(wide.pow(2).mean(dim=-1, keepdim=True) + NORM_EPS)
        normed = (wide * rms_inv).to(out.dtype)
        out = normed * self.norm_weight.to(out.dtype) * (1.0 - self.lambda_init)
        return out, weights
