"""Talking-heads attention: learned mixing across heads before and after the softmax.

Shazeer, Lan, Cheng, Ding & Hou, "Talking-Heads Attention", 2020 (arXiv:2003.02436).

With per-head logits J_h = Q_h K_hᵀ / √d and two learned h×h matrices::

    L_g = Σ_h J_h P_l[h, g]                  mix the logits across heads
    W_g = softmax(L_g + M)                   M = −∞ on masked keys
    U_f = Σ_g W_g P_w[g, f]                  mix the weights across heads
    O_f = U_f V_f                            then concat heads and W_O as usual

The paper allows different head counts on the three sides (h_k logit heads, h
softmax heads, h_v value heads); here h_k = h = h_v = ``n_heads``, so P_l and P_w
are square and the query/key/value projections are the standard ones. With
``init="identity"`` (the default) both mixes start as the identity and the layer
starts as vanilla attention exactly; ``init="random"`` draws them from
N(0, 1/h), which keeps the variance of a mixed logit that of one head's.

Masking is applied after the logit mix and before the softmax. It cannot leak
through either mix: the mixes combine heads at the same (query, key) position,
and the mask is the same in every head (causal and padding masks do not depend on
the head), so a masked position of L_g is masked whatever it mixed, and W_g is
exactly 0 there in every head — a mix of zeros, U_f, stays exactly 0 whatever
P_w holds. Rows of U need not sum to 1 (P_w is unconstrained, as in the paper);
the returned weights are U, the ones applied to V. Time O(n²·d + n²·h²) (the two
mixes), memory O(n²) per head, as vanilla.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    Capabilities,
    MultiHeadAttention,
    default_scale,
    masked_softmax,
    register_variant,
)


@dataclass
class TalkingHeadsOptions:
    init: str = "identity"  # "identity" (starts as vanilla) | "random" (N(0, 1/h) entries)

    def __post_init__(self) -> None:
        if self.init not in ("identity", "random"):
            raise ValueError(f"init must be 'identity' or 'random', got {self.init!r}")


@register_variant(
    "talking-heads",
    paper='Shazeer, Lan, Cheng, Ding & Hou 2020, "Talking-Heads Attention"',
    summary="softmax attention with learned h×h head mixing of logits and of weights",
)
class TalkingHeads(MultiHeadAttention):
    """Softmax attention whose heads exchange logits (P_l) and weights (P_w)."""

    # the head-mixing matrices start at the identity; decay would pull them toward 0
    decay_exempt = ("logits_mix", "weights_mix")

    Options = TalkingHeadsOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope"}),
        time_complexity="O(n²·(d + h²))",  # QKᵀ and AV, plus the two h×h mixes
        memory_complexity="O(n²)",
    )

    @classmethod
    def unsupported_dims(cls, options: Any, dims: AttentionDims) -> str | None:
        if dims.n_heads < 2:
            return f"mixes attention across heads: needs 2 or more; the model has {dims.n_heads}"
        return None

    def __init__(self, dims: AttentionDims, options: TalkingHeadsOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: TalkingHeadsOptions
        h = dims.n_heads
        if self.options.init == "identity":
            logits_mix, weights_mix = torch.eye(h), torch.eye(h)
        else:
            logits_mix, weights_mix = torch.randn(h, h) / h**0.5, torch.randn(h, h) / h**0.5
        self.logits_mix = nn.Parameter(logits_mix)  # P_l (h, h): [source head, target head]
        self.weights_mix = nn.Parameter(weights_mix)  # P_w (h, h)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        logits = (q @ k.transpose(-2, -1)) * default_scale(q.shape[-1])  # (B, H, T, S)
        mixed = torch.einsum("bhts,hg->bgts", logits, self.logits_mix.to(logits.dtype))
        allowed = ctx.mask.allowed(q.shape[-2], k.shape[-2], q.device)
        probs = masked_softmax(mixed, allowed)  # (B, H, T, S)
        weights = torch.einsum("bgts,gf->bfts", probs, self.weights_mix.to(probs.dtype))
        out = self.attn_dropout(weights) @ v  # (B, H, T, dh)
        return out, weights
