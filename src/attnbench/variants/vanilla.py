"""Vanilla scaled dot-product attention, written out step by step.

Vaswani et al., "Attention Is All You Need", NeurIPS 2017:

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k + M) V

with M = −∞ where a key is masked (future tokens, padding). This is the reference
every other variant is compared with, so it is explicit rather than fused; the
fused kernel is a separate variant.
"""

from __future__ import annotations

from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    Capabilities,
    MultiHeadAttention,
    default_scale,
    register_variant,
    scaled_masked_softmax,
)


@register_variant(
    "vanilla",
    paper='Vaswani et al. 2017, "Attention Is All You Need"',
    summary="softmax(QKᵀ/√d)V, explicit",
)
class Vanilla(MultiHeadAttention):
    """Softmax attention: scores, mask, softmax, weighted sum."""

    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        exact_softmax=True,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope", "alibi"}),
        time_complexity="O(n²·d)",
        memory_complexity="O(n²)",
    )

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        # (Q/√d_k) Kᵀ: scaling Q costs a pass over (B, H, T, dh), not over the (B, H, T, S)
        # scores, and for d_k a power of 4 (scale 2⁻ᵏ) it is exact: the same numbers
        scores = (q * default_scale(q.shape[-1])) @ k.transpose(-2, -1)  # (B, H, T, S)
        probs = scaled_masked_softmax(scores, ctx.mask)  # + M as an additive mask
        out = self.attn_dropout(probs) @ v  # (B, H, T, dh)
        return out, probs
