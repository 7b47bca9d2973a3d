"""Linformer: keys and values projected along the length axis to k rows.

Wang, Li, Khabsa, Fang and Ma, "Linformer: Self-Attention with Linear Complexity", 2020:

    head_i = softmax( Q_i (E K_i)ᵀ / √d_k ) · (F V_i),      E, F ∈ R^{k×n}

with n = ``dims.max_len``. The scores are (T × k) instead of (T × n), so time is
O(n·k·d) and memory O(n·k). E and F are learned, one pair per layer shared by the
heads (the paper's headwise sharing); ``share_kv`` ties them (E = F, the paper's
key-value sharing).

Padding: padded rows of K and V are zeroed before the projection, so they add
nothing to E K or F V and the outputs at real positions do not depend on them. A
sequence shorter than n uses the first columns of E and F, which is the same as
padding it to n and masking the padding. The projection mixes every key into every
projected row, so Linformer cannot mask the future (``causal=False``); the paper
fixes n, so tasks pad every batch to ``max_len`` for it (``variable_length=False``).

With ``need_weights`` the returned (T × S) weights are the effective value weights
softmax(Q (E K)ᵀ/√d) F, built only when asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    Capabilities,
    MultiHeadAttention,
    default_scale,
    register_preset,
    register_variant,
)


@dataclass
class LinformerOptions:
    k: int = 32  # projected length (rows of E and F); 32 suits max_len ≈ 100
    share_kv: bool = False  # one projection for keys and values (E = F)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be positive, got {self.k}")


@register_variant(
    "linformer",
    paper='Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity"',
    summary="softmax(Q(EK)ᵀ/√d)(FV), length projected to k",
)
class Linformer(MultiHeadAttention):
    """Softmax attention over k length-projected keys and values."""

    Options = LinformerOptions
    capabilities = Capabilities(
        causal=False,
        cross_attention=False,
        padding_mask=True,
        variable_length=False,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope"}),
        time_complexity="O(n·k·d)",
        memory_complexity="O(n·k)",
    )

    def __init__(self, dims: AttentionDims, options: LinformerOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: LinformerOptions
        k, n = self.options.k, dims.max_len
        self.proj_e = nn.Parameter(torch.empty(k, n))  # E (k, n)
        self.proj_f = None if self.options.share_kv else nn.Parameter(torch.empty(k, n))  # F
        for proj in self.parameters(recurse=False):  # E and F only
            nn.init.xavier_uniform_(proj)

    @classmethod
    def dense_reason(cls, options: LinformerOptions, n: int) -> str | None:
        """k ≥ n: E, F ∈ ℝ^{k×n} do not shorten the sequence — no low-rank bottleneck, a
        reparametrisation of dense attention (E = F = [I; 0] is vanilla attention)."""
        if options.k >= n:
            return f"k = {options.k} ≥ n = {n}: the length projections E, F do not compress"
        return None

    def projections(self, length: int) -> tuple[Tensor, Tensor]:
        """E and F restricted to the first ``length`` positions: (k, length) each."""
        if length > self.proj_e.shape[1]:
            raise ValueError(
                f"linformer was built for max_len {self.proj_e.shape[1]}, got length {length}"
            )
        e = self.proj_e[:, :length]
        f = e if self.proj_f is None else self.proj_f[:, :length]
        return e, f

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        if ctx.mask.causal:
            raise ValueError("linformer cannot mask the future (capabilities: causal=False)")
        e, f = self.projections(k.shape[-2])
        pad = ctx.mask.key_padding
        if pad is not None:  # zero padded keys/values before they are mixed by E, F
            drop = ~pad[:, None, :, None].to(k.device)  # (B, 1, S, 1)
            k, v = k.masked_fill(drop, 0.0), v.masked_fill(drop, 0.0)
        k_low = e.to(k.dtype) @ k  # E K  (B, H, k, dh)
        v_low = f.to(v.dtype) @ v  # F V  (B, H, k, dh)
        scores = (q @ k_low.transpose(-2, -1)) * default_scale(q.shape[-1])  # (B, H, T, k)
        probs = scores.softmax(dim=-1)  # (B, H, T, k)
        out = self.attn_dropout(probs) @ v_low  # (B, H, T, dh)
        weights = None
        if ctx.need_weights:  # effective weights on the S values: P F  (B, H, T, S)
            weights = probs @ f.to(probs.dtype)
            if pad is not None:
                weights = weights.masked_fill(~pad[:, None, None, :].to(weights.device), 0.0)
        return out, weights


register_preset("linformer-16", "linformer", k=16, summary="Linformer, k = 16")
register_preset("linformer-64", "linformer", k=64, summary="Linformer, k = 64")
