"""ReLA: rectified linear attention, ReLU in place of softmax plus a normalised output.

Zhang, Titov & Sennrich, "Sparse Attention with Linear Units", EMNLP 2021
(arXiv:2104.07012); the form below follows the authors' implementation
(``modules/rela.py`` of github.com/bzhangGo/zero)::

    A = ReLU(Q Kᵀ / √d)                      (B, H, T, S), no normalisation over keys
    Z = concat_h(A_h V_h)                    (B, T, H·dh)
    RMSNorm(Z) = g ⊙ Z / √(mean(Z²) + ε)     over the H·dh features, gain g (init 1)
    ReLA-g:  out = W_O (σ(w ⊙ Z) ⊙ RMSNorm(Z))     (``gate=True``, preset ``rela``)
    plain:   out = W_O RMSNorm(Z)                  (``gate=False``, preset ``rela-nogate``)

The gate is elementwise, σ(w ⊙ Z) with a learned vector w (one weight per feature,
initialised U(−√(3/D), √(3/D)) like the Glorot default the authors' TensorFlow code
gets), and it gates with the attention output Z itself — not with the query or the
layer input. The RMSNorm spans all heads together, as in the authors' code (their
``gated_rms_norm`` runs after ``combine_heads``). The paper's other stabiliser,
ReLA-i (plain RMSNorm with a specially initialised gain), is not reproduced;
``rela-nogate`` keeps the gain at 1.

Sparsity comes for free: every score ≤ 0 gives an exact zero, and a query whose
scores are all ≤ 0 attends to nothing ("switches off": Z = 0, and then the output
is just W_O's bias since RMSNorm(0) = 0). Masked keys get weight exactly 0 (no
renormalisation is needed — there is none). ``last_sparsity`` reports the share of
exact zeros among the *allowed* (query, key) weights of the last forward, over the
whole batch and all heads, before dropout (a float, ``None`` before the first call).

A head mask multiplies each head's slice of the normalised, gated output (just
before W_O): the norm couples heads, so zeroing a head's Z instead would rescale
the others. Time O(n²·d), memory O(n²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
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
)


@dataclass
class ReLAOptions:
    gate: bool = True  # ReLA-g: multiply RMSNorm(Z) by σ(w ⊙ Z)
    eps: float = 1e-6  # ε in RMSNorm

    def __post_init__(self) -> None:
        if self.eps <= 0:
            raise ValueError(f"eps must be positive, got {self.eps}")


@register_variant(
    "rela",
    paper='Zhang, Titov & Sennrich 2021, "Sparse Attention with Linear Units"',
    summary="ReLU(QKᵀ/√d)V, then gated RMSNorm (ReLA-g)",
)
class ReLA(MultiHeadAttention):
    """Rectified linear attention with an RMS-normalised (optionally gated) output."""

    Options = ReLAOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        time_complexity="O(n²·d)",
        memory_complexity="O(n²)",
    )

    def __init__(self, dims: AttentionDims, options: ReLAOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: ReLAOptions
        inner = dims.n_heads * dims.head_dim
        self.norm_gain = nn.Parameter(torch.ones(inner))  # g
        self.gate_weight: nn.Parameter | None = None
        if self.options.gate:
            bound = math.sqrt(3.0 / inner)
            self.gate_weight = nn.Parameter(torch.empty(inner).uniform_(-bound, bound))  # w
        self._last_sparsity: Tensor | None = None

    @property
    def last_sparsity(self) -> float | None:
        """Share of exact zeros among the allowed attention weights of the last forward."""
        return None if self._last_sparsity is None else float(self._last_sparsity)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        """Per-head Z_h = ReLU(q kᵀ/√d) v, before the norm and the gate."""
        scores = (q @ k.transpose(-2, -1)) * default_scale(q.shape[-1])  # (B, H, T, S)
        allowed = ctx.mask.allowed(q.shape[-2], k.shape[-2], q.device)
        weights = torch.relu(scores)  # (B, H, T, S)
        if allowed is not None:
            weights = weights.masked_fill(~allowed, 0.0)
        self._record_sparsity(weights, allowed)
        out = self.attn_dropout(weights) @ v  # (B, H, T, dh)
        return out, weights

    @torch.no_grad()
    def _record_sparsity(self, weights: Tensor, allowed: Tensor | None) -> None:
        zeros = weights == 0  # (B, H, T, S)
        if allowed is None:
            self._last_sparsity = zeros.float().mean()
            return
        allowed = allowed.expand_as(zeros)
        n_allowed = allowed.sum().clamp_min(1)
        self._last_sparsity = (zeros & allowed).sum() / n_allowed

    def gated_rms_norm(self, z: Tensor) -> Tensor:
        """σ(w ⊙ Z) ⊙ g ⊙ Z / √(mean(Z²) + ε) over the last axis (gate only if enabled)."""
        dtype = z.dtype
        if dtype in (torch.float16, torch.bfloat16):
            z = z.float()
        normed = z * torch.rsqrt(z.pow(2).mean(dim=-1, keepdim=True) + self.options.eps)
        normed = normed * self.norm_gain
        if self.gate_weight is not None:
            normed = normed * torch.sigmoid(self.gate_weight * z)
        return normed.to(dtype)

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        kv = x if source is None else source
        q = self.split_heads(self.q_proj(x))  # (B, H, T, dh)
        k = self.split_heads(self.k_proj(kv))  # (B, H, S, dh)
        v = self.split_heads(self.v_proj(kv))  # (B, H, S, dh)
        z, weights = self.attend(q, k, v, ctx)  # (B, H, T, dh), (B, H, T, S)
        y = self.gated_rms_norm(self.merge_heads(z))  # (B, T, H·dh)
        heads = self.split_heads(y)  # (B, H, T, dh): head gates act after the norm and gate
        return AttentionOutput(
            out=self.project_out(heads, ctx.head_mask),
            weights=weights if ctx.need_weights else None,
        )


register_preset(
    "rela-nogate",
    "rela",
    gate=False,
    summary="ReLU(QKᵀ/√d)V, then RMSNorm without the gate",
)
