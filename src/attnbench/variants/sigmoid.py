"""Sigmoid attention: an elementwise sigmoid in place of the row softmax.

Ramapuram, Danieli, Dhekane, Weers, Busbridge, Ablin, Likhomanenko, Digani, Gu, Shidani &
Webb, "Theory, Analysis, and Best Practices for Sigmoid Self-Attention", 2024
(arXiv:2409.04431; ICLR 2025)::

    SigmoidAttn(Q, K, V) = σ(Q Kᵀ / √d + b) V,     σ(z) = 1 / (1 + e^{−z}) elementwise,
    b = −log n

Each weight is set on its own: rows are not normalised and need not sum to 1. The bias
b = −log n keeps the weights summed over n keys O(1) early in training (for small
logits σ(s − log n) ≈ eˢ / n, softmax's weights at initialisation), the paper's remedy
for the large initial attention norms that made earlier sigmoid attention unstable.

Masked (query, key) pairs contribute exactly 0: M = −∞ is added to their logits and
σ(−∞) = 0 (its gradient, σ(1 − σ), is 0 there too).

Which n (option ``bias_n``). The paper defines n as the sequence length, the number of
keys. With masks, the keys a query may see differ, so:

``"allowed"`` (default)
    n_i = the number of keys query i may attend to: S for an unmasked query, the real
    source length with key padding, and i + 1 (plus any memory) under a causal mask.
    Padding then changes nothing (a padded batch computes what its sequences compute
    alone), and under a causal mask b_i depends only on what query i sees, so position
    i's output is the same whatever the length of the sequence after it — training on
    whole windows and decoding a prefix token by token compute the same thing. A
    constant n = T would make position i depend on how many tokens follow it.
``"max_len"``
    n = the model's ``max_len`` for every query, the constant of the paper's own code
    (b = −log of the configured maximum sequence length, causal models included).

A query with no allowed key (a fully padded row) gets n = 1 (b = 0) and all-zero weights.

Positions: the paper pairs sigmoid attention with relative schemes (ALiBi, RoPE). Under
``rope`` q and k are rotated before the scores; under ``alibi`` the head's distance bias
joins b inside the sigmoid: σ(q_i·k_j/√d − log n_i − m_h·|i − j|).
The paper's stabilisers outside the attention (hybrid-norm, LayerScale) are not part of
this module. Time O(n²·d), memory O(n²), as softmax attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    Capabilities,
    MultiHeadAttention,
    default_scale,
    register_variant,
)

BIAS_N = ("allowed", "max_len")


@dataclass
class SigmoidOptions:
    # n in b = −log n: "allowed" = keys each query may attend to (per query and row),
    # "max_len" = the model's max_len for every query (the paper's code)
    bias_n: str = "allowed"

    def __post_init__(self) -> None:
        if self.bias_n not in BIAS_N:
            raise ValueError(f"bias_n must be one of {', '.join(BIAS_N)}, got {self.bias_n!r}")


@register_variant(
    "sigmoid",
    paper=(
        'Ramapuram et al. 2024, "Theory, Analysis, and Best Practices for Sigmoid Self-Attention"'
    ),
    summary="σ(QKᵀ/√d − log n)V elementwise, rows not normalised",
)
class SigmoidAttention(MultiHeadAttention):
    """Attention weights σ(QKᵀ/√d − log n), one sigmoid per (query, key), unnormalised."""

    Options = SigmoidOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        # RoPE through MultiHeadAttention.rotate; ALiBi in the additive mask M (attend)
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope", "alibi"}),
        time_complexity="O(n²·d)",
        memory_complexity="O(n²)",
    )

    def log_n(
        self, t: int, s: int, ctx: AttentionContext, device: torch.device, dtype: torch.dtype
    ) -> Tensor | float:
        """log n, a float or (B|1, 1, T, 1) of ``dtype``: b = −log n (see the module docstring)."""
        self.options: SigmoidOptions
        if self.options.bias_n == "max_len":
            return math.log(self.dims.max_len)
        allowed = ctx.mask.allowed(t, s, device)
        if allowed is None:
            return math.log(s)
        n = allowed.sum(dim=-1, keepdim=True).clamp_min(1)  # keys query i may see
        return n.to(torch.promote_types(dtype, torch.float32)).log().to(dtype)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        t, s = q.shape[-2], k.shape[-2]
        scores = (q * default_scale(q.shape[-1])) @ k.transpose(-2, -1)  # QKᵀ/√d (B, H, T, S)
        b = -self.log_n(t, s, ctx, q.device, scores.dtype)  # b = −log n
        # M: 0 allowed, −∞ masked, plus ALiBi's −m_h·|i − j| under the alibi scheme
        mask = ctx.mask.bias(t, s, q.device, scores.dtype)
        offset = b if mask is None else mask + b  # (B|1, 1, T, S): one pass over the scores
        weights = torch.sigmoid(scores + offset)  # exactly 0 where M = −∞
        out = self.attn_dropout(weights) @ v  # (B, H, T, dh)
        return out, weights
