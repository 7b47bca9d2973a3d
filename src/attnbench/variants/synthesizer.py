"""Synthesizer: attention weights synthesized without token–token dot products.

Tay, Bahri, Metzler, Juan, Zhao & Zheng, "Synthesizer: Rethinking Self-Attention
for Transformer Models", ICML 2021.

Both kinds replace softmax(Q Kᵀ/√d) by logits that never compare two tokens, and
keep the value path Y = softmax(B) G(X) with G(X) = X W_V (per head, then W_O).

Dense Synthesizer (per head h, per token i, ℓ = ``dims.max_len``)::

    B_i = W₂ σ(W₁ x_i + b₁) + b₂          W₁ ∈ R^{d×d'}, W₂ ∈ R^{d'×ℓ}, σ = ReLU
    Y   = softmax(B[:, :n]) X W_V          (the row of ℓ logits truncated to the n keys)

so row i of the attention weights depends on x_i alone.

Random Synthesizer (per head)::

    Y = softmax(R[:n, :n]) X W_V           R ∈ R^{ℓ×ℓ}, trainable or fixed
    R = R₁ R₂ᵀ                             factorized: R₁, R₂ ∈ R^{ℓ×k} (the paper uses k = 8)

so the weights do not depend on the input at all (a learned global alignment).

Masks act on the synthetic logits: future keys (causal) and padded keys get −∞
before the softmax; a row with no allowed key is all zeros. Only self-attention is
defined (the logits index the positions of the one sequence): ``cross_attention``
is declared False. Time O(n²·d) (the weighted sum of values; the dense logits cost
O(n·d·d' + n·d'·ℓ)), memory O(n²) for the weights — quadratic, but with no QKᵀ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnbench.attention import (
    Attention,
    AttentionContext,
    AttentionDims,
    AttentionOutput,
    Capabilities,
    masked_softmax,
    project_heads,
    register_preset,
    register_variant,
)

PAPER = (
    "Tay, Bahri, Metzler, Juan, Zhao & Zheng 2021, "
    '"Synthesizer: Rethinking Self-Attention for Transformer Models"'
)

CAPABILITIES = Capabilities(
    causal=True,  # mask the synthetic logits of future keys
    cross_attention=False,  # logits index positions of the attending sequence itself
    padding_mask=True,  # mask the synthetic logits of padded keys
    variable_length=True,  # any length ≤ max_len: the ℓ-wide logits are truncated
    time_complexity="O(n²·d), no QKᵀ",
    memory_complexity="O(n²)",
)


class SynthesizerBase(Attention):
    """Shared value path and masking; subclasses define ``logits(x) -> (B | 1, H, n, n)``."""

    capabilities = CAPABILITIES

    def __init__(self, dims: AttentionDims, options: object = None) -> None:
        super().__init__(dims, options)
        inner = dims.n_heads * dims.head_dim
        self.v_proj = nn.Linear(dims.d_model, inner)  # G(X) = X W_V
        self.out_proj = nn.Linear(inner, dims.d_model)
        self.attn_dropout = nn.Dropout(dims.dropout)

    def logits(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        if source is not None:
            raise ValueError(
                f"{type(self).__name__} synthesizes self-attention only (cross_attention=False)"
            )
        b, n, _ = x.shape
        if n > self.dims.max_len:
            raise ValueError(
                f"{type(self).__name__}: length {n} exceeds max_len {self.dims.max_len} "
                "(the synthetic logits have max_len columns)"
            )
        h, dh = self.dims.n_heads, self.dims.head_dim
        v = self.v_proj(x).view(b, n, h, dh).transpose(1, 2)  # (B, H, n, dh)
        scores = self.logits(x)  # (B | 1, H, n, n)
        allowed = ctx.mask.allowed(n, n, x.device)
        probs = masked_softmax(scores, allowed)  # (B | 1, H, n, n)
        out = self.attn_dropout(probs).to(v.dtype) @ v  # (B, H, n, dh)
        weights = probs.expand(b, -1, -1, -1) if ctx.need_weights else None  # (B, H, n, n)
        return AttentionOutput(
            out=project_heads(out, self.out_proj, ctx.head_mask), weights=weights
        )


def _uniform_(t: Tensor, fan_in: int) -> Tensor:
    """nn.Linear's default init: U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(t, -bound, bound)


@dataclass
class DenseOptions:
    hidden: int | None = None  # width d' of W₁ per head; None = d_model (the paper's W₁ ∈ R^{d×d})


@register_variant(
    "synthesizer-dense",
    paper=PAPER,
    summary="softmax(W₂σ(W₁xᵢ+b₁)+b₂)V: each token predicts its own row of weights",
)
class DenseSynthesizer(SynthesizerBase):
    """Dense Synthesizer: a per-head two-layer MLP maps x_i to its ℓ attention logits."""

    Options = DenseOptions

    def __init__(self, dims: AttentionDims, options: DenseOptions | None = None) -> None:
        super().__init__(dims, options)
        d, h, ell = dims.d_model, dims.n_heads, dims.max_len
        hidden = self.options.hidden or d
        if hidden <= 0:
            raise ValueError(f"synthesizer-dense: hidden must be positive, got {hidden}")
        self.w1 = nn.Parameter(_uniform_(torch.empty(h, d, hidden), d))
        self.b1 = nn.Parameter(_uniform_(torch.empty(h, hidden), d))
        self.w2 = nn.Parameter(_uniform_(torch.empty(h, hidden, ell), hidden))
        self.b2 = nn.Parameter(_uniform_(torch.empty(h, ell), hidden))

    def logits(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        hid = torch.relu(torch.einsum("bnd,hde->bhne", x, self.w1) + self.b1[None, :, None])
        # only the first n of the ℓ output columns are needed: slice W₂ before the product
        w2, b2 = self.w2[..., :n], self.b2[:, :n]  # (H, d', n), (H, n)
        return torch.einsum("bhne,hem->bhnm", hid, w2) + b2[None, :, None]  # (B, H, n, n)


@dataclass
class RandomOptions:
    trainable: bool = True  # learn R (Random) or keep it at its random init (Fixed Random)
    rank: int | None = None  # None: full R ∈ R^{ℓ×ℓ}; k: R = R₁R₂ᵀ with R₁, R₂ ∈ R^{ℓ×k}
    init_std: float = 1.0  # std of the entries of R at init (of R₁R₂ᵀ when factorized)


@register_variant(
    "synthesizer-random",
    paper=PAPER,
    summary="softmax(R)V with a learned (or fixed) input-independent R per head",
)
class RandomSynthesizer(SynthesizerBase):
    """Random Synthesizer: one ℓ×ℓ logit matrix per head, shared by all inputs."""

    Options = RandomOptions

    def __init__(self, dims: AttentionDims, options: RandomOptions | None = None) -> None:
        super().__init__(dims, options)
        h, ell = dims.n_heads, dims.max_len
        rank, std = self.options.rank, self.options.init_std
        if rank is not None and rank <= 0:
            raise ValueError(f"synthesizer-random: rank must be positive, got {rank}")
        if rank is None:
            factors = {"r": torch.randn(h, ell, ell) * std}  # R
        else:
            # entries of R₁R₂ᵀ are sums of k products: std of each factor (std²/k)^¼
            s = (std**2 / rank) ** 0.25
            factors = {"r1": torch.randn(h, ell, rank) * s, "r2": torch.randn(h, ell, rank) * s}
        # R (or its factors) is the attention itself: decay would pull it toward uniform
        self.decay_exempt = tuple(factors) if self.options.trainable else ()
        for name, value in factors.items():
            if self.options.trainable:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)  # saved with the model, never updated

    def synthetic_logits(self, n: int) -> Tensor:
        """R[:n, :n] per head, (H, n, n)."""
        if self.options.rank is None:
            return self.r[:, :n, :n]
        return self.r1[:, :n] @ self.r2[:, :n].transpose(-2, -1)  # (H, n, n)

    def logits(self, x: Tensor) -> Tensor:
        return self.synthetic_logits(x.shape[1])[None].to(x.dtype)  # (1, H, n, n)


register_preset(
    "synthesizer-random-fixed",
    "synthesizer-random",
    trainable=False,
    summary="Fixed Random Synthesizer: softmax(R)V with R frozen at its random init",
)
register_preset(
    "synthesizer-random-k8",
    "synthesizer-random",
    rank=8,
    summary="Factorized Random Synthesizer: softmax(R₁R₂ᵀ)V with rank k = 8 (the paper's k)",
)
