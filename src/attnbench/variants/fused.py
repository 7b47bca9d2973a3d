"""Exact softmax attention through PyTorch's fused kernels (FlashAttention and friends).

Dao, Fu, Ermon, Rudra & Ré, "FlashAttention: Fast and Memory-Efficient Exact
Attention with IO-Awareness", NeurIPS 2022.

The same function as vanilla attention,

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k + M) V,

computed by ``torch.nn.functional.scaled_dot_product_attention`` (SDPA), which on
CUDA dispatches to the FlashAttention kernel (tiles of Q, K, V in on-chip SRAM with
an online softmax; the n × n score matrix is never written to memory) or to the
memory-efficient kernel, and on CPU to a fused (flash-style) or math kernel.

How the mask reaches SDPA (see :func:`sdpa_mask`):

* no key padding and no memory offset → ``is_causal=True`` / no mask, so the flash
  kernel (which accepts no explicit mask) stays eligible;
* otherwise an explicit boolean mask from :meth:`AttentionMask.allowed`, which the
  memory-efficient and math kernels accept.

A query with no allowed key must give zeros. torch 2.13 returns zeros for such rows
on CPU, but earlier kernels (notably on CUDA) returned NaN, so we do not rely on it:
fully masked rows are given a dummy all-allowed row and their output is zeroed
afterwards (gradients stay finite too).

Attention dropout is SDPA's ``dropout_p`` (only in training). SDPA returns no
weights; when ``ctx.need_weights`` is set they are computed separately and
explicitly as masked_softmax(Q Kᵀ/√d_k) for analysis (O(n²) memory, only then).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionMask,
    Capabilities,
    MultiHeadAttention,
    default_scale,
    masked_softmax,
    register_variant,
)


def sdpa_mask(
    mask: AttentionMask, q_len: int, k_len: int, device: torch.device
) -> tuple[Tensor | None, bool, Tensor | None]:
    """How to pass ``mask`` to SDPA: ``(attn_mask, is_causal, empty_rows)``.

    ``attn_mask`` is a boolean mask broadcastable to (B, H, T, S) (True = attend) or
    None; ``empty_rows`` (broadcastable to (B, H, T, 1)) marks queries with no
    allowed key — their row of ``attn_mask`` is opened so the kernel stays finite,
    and the caller zeroes their output — or is None when there are none to handle.
    """
    if mask.key_padding is None and mask.memory_len == 0:
        # is_causal=True is SDPA's top-left-aligned tril: key j ≤ query i, as allowed()
        return None, mask.causal, None
    allowed = mask.allowed(q_len, k_len, device)  # (B | 1, 1, T | 1, S)
    assert allowed is not None
    empty = ~allowed.any(dim=-1, keepdim=True)  # (B | 1, 1, T | 1, 1)
    return allowed | empty, False, empty


@register_variant(
    "fused",
    paper=(
        "Dao, Fu, Ermon, Rudra & Ré 2022, "
        '"FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness"'
    ),
    summary="exact softmax attention via scaled_dot_product_attention (flash/efficient kernels)",
)
class FusedAttention(MultiHeadAttention):
    """Vanilla attention's function, computed by SDPA's fused kernels."""

    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        exact_softmax=True,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope"}),
        time_complexity="O(n²·d)",
        memory_complexity="O(n) with the flash/efficient kernels; O(n²) on the math fallback",
    )

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        t, s = q.shape[-2], k.shape[-2]
        scale = default_scale(q.shape[-1])
        attn_mask, is_causal, empty = sdpa_mask(ctx.mask, t, s, q.device)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dims.dropout if self.training else 0.0,
            is_causal=is_causal,
            scale=scale,
        )  # (B, H, T, dh)
        if empty is not None:
            out = out.masked_fill(empty, 0.0)
        weights = None
        if ctx.need_weights:  # analysis only: SDPA never materialises them
            scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
            weights = masked_softmax(scores, ctx.mask.allowed(t, s, q.device))
        return out, weights
