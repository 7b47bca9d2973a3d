"""SparseBERT: attention with the diagonal removed, and a Differentiable Attention Mask (DAM).

Shi, Gao, Ren, Xu, Liang, Li and Kwok, "SparseBERT: Rethinking the Importance
Analysis in Self-attention", ICML 2021.

Attention restricted by a mask M ∈ {0, 1}^{n×n} (the paper's masked softmax, after
Yun et al. 2020) multiplies the unnormalised weights by M and renormalises:

    σ_M(S)_ij = M_ij exp(S_ij) / Σ_k M_ik exp(S_ik),      S = Q Kᵀ / √d_k

(the paper writes the transposed layout). A query with no allowed key gets zeros.

``sparsebert-diag``: M = 1 − I. The paper's finding is that the diagonal (a token
attending to itself) is the least important part of the attention map and that
removing it does not hurt the expressive power of the model (the residual path
carries the token itself).

``sparsebert-dam`` (the paper's Algorithm 1): M is learned. Each layer owns mask
logits α ∈ R^{n×n} up to ``dims.max_len`` (``per_head`` gives one per head
instead); in training the mask is relaxed with a Gumbel-sigmoid,

    M_ij = sigmoid((α_ij + G'_ij − G''_ij) / τ),      G', G'' ~ Gumbel(0, 1),

so the gate enters as softmax(S + log M) (= σ_M with a soft M), and the model and α
are trained together with the L1 sparsity penalty of the paper on the expected mask,

    L = L_task + λ · Σ_ij sigmoid(α_ij),

summed over the (T × S) block in use (and the heads, with ``per_head``) and returned
as ``AttentionOutput.aux_loss``; sigmoid(α_ij) is the probability that the binarised
mask keeps (i, j). At evaluation the mask is binarised, M_ij = [α_ij > 0]
(deterministic). The diagonal is learned like every other entry (the released code's
mask has a logit for offset 0 too); ``drop_diagonal`` forces M_ii = 0 on top.

Notes on the reference. The released code (github.com/han-shi/SparseBERT,
modeling.py) searches a structured, Toeplitz mask (one logit per offset |i − j|),
one per head shared by all layers, relaxes it with a straight-through two-class
Gumbel-softmax, adds it to the scores as −10000·(1 − M) and penalises λ‖M‖₁ of the
sampled mask with λ = 10⁻⁴ (the default here). Here the mask is unstructured (one
logit per (i, j), the paper's general form) and one per layer (the interface builds
layers independently); the penalty is a sum, as in the paper, so each logit feels
the same pull whatever the length (with a mean it would shrink as 1/n²). Query i
sits at position ``memory_len + i``. Positions index the mask, so the variant is for
self-attention only (``cross_attention=False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionOutput,
    Capabilities,
    MultiHeadAttention,
    default_scale,
    masked_softmax,
    register_preset,
    register_variant,
)


@dataclass
class SparseBertOptions:
    learn_mask: bool = True  # DAM: learnable mask logits α (False: no learned mask)
    drop_diagonal: bool = False  # M_ii = 0: a token never attends to itself
    sparsity_weight: float = 1e-4  # λ of the penalty λ·Σ sigmoid(α) (released code: 10⁻⁴)
    temperature: float = 1.0  # τ of the Gumbel-sigmoid (the released code uses 1)
    per_head: bool = False  # one mask per head instead of one per layer
    init_logit: float = 0.0  # α starts at this value plus N(0, 10⁻³) noise (released code: 0)

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.sparsity_weight < 0:
            raise ValueError(f"sparsity_weight must be >= 0, got {self.sparsity_weight}")


@register_variant(
    "sparsebert-dam",
    paper=('Shi et al. 2021, "SparseBERT: Rethinking the Importance Analysis in Self-attention"'),
    summary="softmax attention under a learned (DAM) or diagonal-free mask",
)
class SparseBert(MultiHeadAttention):
    """Softmax attention gated by a mask M: learned (DAM) and/or without the diagonal."""

    decay_exempt = ("mask_logits",)  # the learned attention mask α

    Options = SparseBertOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=False,
        padding_mask=True,
        time_complexity="O(n²·d)",
        memory_complexity="O(n²)",
    )

    def __init__(self, dims: AttentionDims, options: SparseBertOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: SparseBertOptions
        self.mask_logits: nn.Parameter | None = None
        self._penalty: Tensor | None = None  # set by attend, handed out by forward
        if self.options.learn_mask:
            heads = dims.n_heads if self.options.per_head else 1
            alpha = self.options.init_logit + 1e-3 * torch.randn(heads, dims.max_len, dims.max_len)
            self.mask_logits = nn.Parameter(alpha)  # (H or 1, max_len, max_len)

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        out = super().forward(x, source, ctx)
        out.aux_loss = self._penalty
        self._penalty = None
        return out

    def _logits(self, q_len: int, k_len: int, memory_len: int) -> Tensor:
        """α for query positions memory_len … memory_len + T − 1 and keys 0 … S − 1."""
        assert self.mask_logits is not None
        if memory_len + q_len > self.dims.max_len or k_len > self.dims.max_len:
            raise ValueError(
                f"sparsebert: positions up to {max(memory_len + q_len, k_len)} exceed the "
                f"mask's max_len {self.dims.max_len}"
            )
        return self.mask_logits[:, memory_len : memory_len + q_len, :k_len]  # (H|1, T, S)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        t, s = q.shape[-2], k.shape[-2]
        scores = (q @ k.transpose(-2, -1)) * default_scale(q.shape[-1])  # (B, H, T, S)
        allowed = ctx.mask.allowed(t, s, q.device)
        if self.options.drop_diagonal:
            q_pos = torch.arange(t, device=q.device)[:, None] + ctx.mask.memory_len
            off_diagonal = (torch.arange(s, device=q.device)[None, :] != q_pos)[None, None]
            allowed = off_diagonal if allowed is None else allowed & off_diagonal
        self._penalty = None
        if self.mask_logits is not None:
            alpha = self._logits(t, s, ctx.mask.memory_len)  # (H|1, T, S)
            self._penalty = self.options.sparsity_weight * torch.sigmoid(alpha).sum()  # λ Σ σ(α)
            if self.training:  # relaxed mask: M = sigmoid((α + G' − G'') / τ)
                u = torch.rand(2, *alpha.shape, device=alpha.device, dtype=alpha.dtype)
                gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))  # G', G''
                relaxed = (alpha + gumbel[0] - gumbel[1]) / self.options.temperature
                scores = scores + F.logsigmoid(relaxed).to(scores.dtype)  # M·exp(S)
            else:  # binarised mask: M = [α > 0]
                kept = (alpha > 0)[None]  # (1, H|1, T, S)
                allowed = kept if allowed is None else allowed & kept
        probs = masked_softmax(scores, allowed)  # (B, H, T, S)
        out = self.attn_dropout(probs) @ v  # (B, H, T, dh)
        return out, probs


register_preset(
    "sparsebert-diag",
    "sparsebert-dam",
    learn_mask=False,
    drop_diagonal=True,
    summary="softmax attention with the diagonal removed (M = 1 − I)",
)
