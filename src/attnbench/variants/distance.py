"""Distance-based self-attention: scores penalised in proportion to token distance.

Im & Cho, "Distance-based Self-Attention Network for Natural Language Inference",
2017 (arXiv:1712.02047). Their distance mask M_ij = −|i − j| is added, scaled by
α, to the attention logits, so nearby words are preferred (local dependency)
while every word stays reachable (global dependency)::

    s_ij = q_i · k_j / √d − α_h |p_i − p_j|
    out  = softmax(s + M) V                 M = −∞ on masked keys

α is fixed (``learned=False``) or learned per head (``learned=True``, initialised to
``alpha``; unconstrained, so training may also drive it to 0 or below). The
directional (forward/backward) masks Im & Cho inherit from DiSAN are not
reproduced; causal masking gives the forward one. Presets: ``distance`` (learned
per head, α₀ = 0.1) and ``distance-fixed`` (α = 0.1 for every head).

Positions p: query i sits at key position ``memory_len + i`` (as in
:meth:`AttentionMask.allowed`) and key j at j. When ``ctx.positions`` gives the
queries' absolute positions (and S = memory_len + T, i.e. the keys are memory
followed by the queries' own tokens), those are used: keys of the current segment
share the queries' positions and memory keys continue contiguously before the
first one. Contiguous positions (what the shared model passes) give the same
distances as indices; non-contiguous ones are honoured.

Only self-attention is supported (``cross_attention=False``): |i − j| between a
target token and a source token compares positions on two unrelated axes, so the
penalty has no meaning there. Time O(n²·d), memory O(n²) (plus a (T, S) distance
table shared by the heads).
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
    masked_softmax,
    register_preset,
    register_variant,
)


@dataclass
class DistanceOptions:
    alpha: float = 0.1  # penalty per token of distance (the initial value when learned)
    learned: bool = True  # learn α per head (else one fixed α for every head)


def token_distance(q_len: int, k_len: int, ctx: AttentionContext, device: torch.device) -> Tensor:
    """|p_i − p_j| as a (T, S) float table, from ``ctx.positions`` or from indices."""
    memory = ctx.mask.memory_len
    positions = ctx.positions
    if positions is not None and positions.numel() == q_len and k_len == memory + q_len:
        q_pos = positions.reshape(q_len).to(device)
        before = q_pos[:1] - memory + torch.arange(memory, device=device, dtype=q_pos.dtype)
        k_pos = torch.cat([before, q_pos])  # (S,)
    else:
        q_pos = torch.arange(q_len, device=device) + memory  # (T,)
        k_pos = torch.arange(k_len, device=device)  # (S,)
    return (q_pos[:, None] - k_pos[None, :]).abs().float()  # (T, S)


@register_variant(
    "distance",
    paper=('Im & Cho 2017, "Distance-based Self-Attention Network for Natural Language Inference"'),
    summary="softmax(QKᵀ/√d − α_h|i − j|)V, α learned per head",
)
class DistanceAttention(MultiHeadAttention):
    """Softmax attention with a penalty of α per token of distance between query and key."""

    Options = DistanceOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=False,  # no distance between tokens of two different sequences
        padding_mask=True,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope"}),
        time_complexity="O(n²·d)",
        memory_complexity="O(n²)",
    )

    def __init__(self, dims: AttentionDims, options: DistanceOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: DistanceOptions
        alpha = torch.full((dims.n_heads,), float(self.options.alpha))  # (H,)
        if self.options.learned:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        t, s = q.shape[-2], k.shape[-2]
        scores = (q @ k.transpose(-2, -1)) * default_scale(q.shape[-1])  # (B, H, T, S)
        distance = token_distance(t, s, ctx, q.device)  # (T, S)
        penalty = self.alpha[:, None, None] * distance  # (H, T, S)
        scores = scores - penalty.to(scores.dtype)
        probs = masked_softmax(scores, ctx.mask.allowed(t, s, q.device))  # (B, H, T, S)
        out = self.attn_dropout(probs) @ v  # (B, H, T, dh)
        return out, probs


register_preset(
    "distance-fixed",
    "distance",
    learned=False,
    summary="softmax(QKᵀ/√d − α|i − j|)V, α = 0.1 fixed",
)
