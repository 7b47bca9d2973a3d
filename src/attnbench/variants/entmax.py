"""α-entmax attention: softmax replaced by a sparse probability mapping.

Peters, Niculae & Martins, "Sparse Sequence-to-Sequence Models", ACL 2019 (α-entmax,
exact sort-based algorithms for α = 1.5 and α = 2, bisection for any α), and Correia,
Niculae & Martins, "Adaptively Sparse Transformers", EMNLP 2019 (entmax in every head
of a Transformer, α learned per head).

For scores z = q Kᵀ / √d of one query over its allowed keys::

    α-entmax(z) = argmax_{p ∈ Δ} pᵀz + H_α(p)          (H_α: Tsallis α-entropy)
                = [(α − 1) z − τ 1]_+^{1/(α−1)}          (τ such that Σ p = 1)
    out         = α-entmax(z) V

α → 1 gives softmax, α = 2 sparsemax; every α > 1 can give keys *exactly* zero
weight. Presets: ``entmax15`` (α = 1.5, the exact sort-based algorithm),
``sparsemax`` (α = 2, exact), ``entmax-alpha`` (α learned per head, bisection).

Learned α (Correia et al. 2019): α_h = 1 + sigmoid(a_h) ∈ (1, 2) with a free
parameter a_h per head, trained with the rest of the model; the α-gradient is the
closed form derived there and implemented by the package's ``entmax_bisect``.
a_h starts at the value giving ``alpha`` (1.5), plus N(0, ``alpha_init_std``²) noise
if asked (Correia et al. initialise at random; the default here starts every head
at 1.5). The sigmoid is squeezed into (1 + ``min_alpha_gap``, 2): near
α = 1 the map x^{1/(α−1)} loses all float32 precision and the α-gradient has a
1/(α−1)² factor, so α is kept ≥ 1.01 smoothly (a clamp would zero the gradient and
trap a head below the bound).

Masks: masked keys are set to a score 10⁴ below the row's best allowed score before
the mapping (entmax is shift-invariant, so this changes nothing else). A key scored
more than 1/(α−1) below the maximum is outside the support, so it gets exactly zero
weight; the weights of masked keys are also zeroed after the mapping for good
measure. Plain −∞ is avoided because the package's sort-based algorithm indexes out
of range on a row that is entirely −∞; a query with no allowed key gets zeros.
The mapping runs in float32 under bf16/fp16 autocast, like softmax does.

Cost: 1.5-entmax and sparsemax sort every row of scores (O(n² log n)); the
bisection (learned α) evaluates x^{1/(α−1)} over the whole score matrix at each of
its ``n_iter`` steps. 20 steps shrink the τ bracket to 2⁻²⁰ of its width: weights
within ~2·10⁻⁶ of the exact ones (the package's default of 50 buys nothing in
float32). On one CPU thread at the default profile sizes (batch 32, length 100,
4 heads) a training step costs about 2.5× vanilla's for ``entmax15``, 2× for
``sparsemax`` and 8× for ``entmax-alpha`` (the bisection); on a GPU these
elementwise passes are cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from entmax import entmax15, entmax_bisect, sparsemax
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

MASK_GAP = 1e4  # masked keys sit this far below the row's best allowed score


@dataclass
class EntmaxOptions:
    alpha: float = 1.5  # α ∈ [1, 2]; with learn_alpha, the initial α of every head
    learn_alpha: bool = False  # learn α per head: α_h = 1 + gap + (1 − gap)·sigmoid(a_h)
    alpha_init_std: float = 0.0  # learned α only: std of Gaussian noise added to a_h at init
    min_alpha_gap: float = 0.01  # learned α only: α_h ∈ (1 + gap, 2)
    n_iter: int = 20  # bisection steps (learned α or α ∉ {1, 1.5, 2}): weights within ~2e-6

    def __post_init__(self) -> None:
        if not 1.0 <= self.alpha <= 2.0:
            raise ValueError(f"alpha must be in [1, 2], got {self.alpha}")
        if not 0.0 < self.min_alpha_gap < 1.0:
            raise ValueError(f"min_alpha_gap must be in (0, 1), got {self.min_alpha_gap}")
        if self.learn_alpha and not 1.0 + self.min_alpha_gap < self.alpha < 2.0:
            raise ValueError(
                f"a learned alpha starts strictly inside (1 + min_alpha_gap, 2), got {self.alpha}"
            )
        if self.alpha_init_std < 0:
            raise ValueError(f"alpha_init_std must be ≥ 0, got {self.alpha_init_std}")
        if self.n_iter < 1:
            raise ValueError(f"n_iter must be positive, got {self.n_iter}")


def entmax_masked(
    scores: Tensor, allowed: Tensor | None, alpha: float | Tensor, n_iter: int = 20
) -> Tensor:
    """α-entmax over the last axis restricted to ``allowed`` keys (zeros where none is).

    ``alpha`` is a float or a tensor broadcastable to ``scores`` with size 1 on the
    last axis (e.g. (1, H, 1, 1) for one α per head).
    """
    dtype = scores.dtype
    if dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    if isinstance(alpha, Tensor):
        alpha = alpha.to(scores.dtype)
    any_allowed: Tensor | None = None
    if allowed is not None:
        top = scores.masked_fill(~allowed, float("-inf")).amax(dim=-1, keepdim=True)  # (B,H,T,1)
        any_allowed = allowed.any(dim=-1, keepdim=True)
        top = torch.where(any_allowed, top, torch.zeros_like(top)).detach()
        scores = (scores - top).masked_fill(~allowed, -MASK_GAP)  # best allowed score = 0
    if isinstance(alpha, Tensor):
        probs = entmax_bisect(scores, alpha, dim=-1, n_iter=n_iter)
    elif alpha == 1.0:
        probs = F.softmax(scores, dim=-1)
    elif alpha == 1.5:
        probs = entmax15(scores, dim=-1)
    elif alpha == 2.0:
        probs = sparsemax(scores, dim=-1)
    else:
        probs = entmax_bisect(scores, alpha, dim=-1, n_iter=n_iter)
    if allowed is not None and any_allowed is not None:
        probs = probs.masked_fill(~(allowed & any_allowed), 0.0)
    return probs.to(dtype)


@register_variant(
    "entmax15",
    paper='Peters, Niculae & Martins 2019, "Sparse Sequence-to-Sequence Models"',
    summary="1.5-entmax(QKᵀ/√d)V: sparse attention weights",
)
class Entmax(MultiHeadAttention):
    """Attention weights from α-entmax instead of softmax (fixed or learned α)."""

    Options = EntmaxOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        time_complexity="O(n²·(d + log n))",  # sort-based; bisection: O(n²·(d + n_iter))
        memory_complexity="O(n²)",
    )

    def __init__(self, dims: AttentionDims, options: EntmaxOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: EntmaxOptions
        self.alpha_logit: nn.Parameter | None = None
        if self.options.learn_alpha:
            o = self.options
            s = (o.alpha - 1.0 - o.min_alpha_gap) / (1.0 - o.min_alpha_gap)  # sigmoid(a) at init
            a = torch.full((dims.n_heads,), math.log(s / (1.0 - s)))
            a = a + o.alpha_init_std * torch.randn(dims.n_heads)
            self.alpha_logit = nn.Parameter(a)  # a_h, one per head

    def alpha(self) -> Tensor | float:
        """α per head, shape (H,) when learned; the fixed float otherwise."""
        if self.alpha_logit is None:
            return self.options.alpha
        gap = self.options.min_alpha_gap
        return 1.0 + gap + (1.0 - gap) * torch.sigmoid(self.alpha_logit)  # (H,) in (1+gap, 2)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        scores = (q @ k.transpose(-2, -1)) * default_scale(q.shape[-1])  # (B, H, T, S)
        allowed = ctx.mask.allowed(q.shape[-2], k.shape[-2], q.device)
        alpha = self.alpha()
        if isinstance(alpha, Tensor):
            alpha = alpha[None, :, None, None]  # (1, H, 1, 1)
        probs = entmax_masked(scores, allowed, alpha, self.options.n_iter)  # (B, H, T, S)
        out = self.attn_dropout(probs) @ v  # (B, H, T, dh)
        return out, probs


register_preset(
    "sparsemax",
    "entmax15",
    alpha=2.0,
    summary="sparsemax(QKᵀ/√d)V (α = 2): Euclidean projection onto the simplex",
)
register_preset(
    "entmax-alpha",
    "entmax15",
    alpha=1.5,
    learn_alpha=True,
    summary="α-entmax attention with α learned per head (Correia et al. 2019)",
    paper='Correia, Niculae & Martins 2019, "Adaptively Sparse Transformers"',
)
