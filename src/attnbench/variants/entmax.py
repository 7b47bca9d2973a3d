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
closed form derived there (as in the ``entmax`` package's ``entmax_bisect``).
a_h starts at the value giving ``alpha`` (1.5), plus N(0, ``alpha_init_std``²) noise
if asked (Correia et al. initialise at random; the default here starts every head
at 1.5). The sigmoid is squeezed into (1 + ``min_alpha_gap``, 2): near
α = 1 the map x^{1/(α−1)} loses all float32 precision and the α-gradient has a
1/(α−1)² factor, so α is kept ≥ 1.01 smoothly (a clamp would zero the gradient and
trap a head below the bound).

Masks: masked keys get the score −∞ (an additive mask), so they get exactly zero
weight; a query with no allowed key gets zeros (and zero gradients). The mapping runs
in float32 under bf16/fp16 autocast, like softmax does.

Implementation. The forward and backward passes are those of the ``entmax`` package
(Peters et al.'s sort-based exact algorithms for α = 1.5 and 2, Correia et al.'s
bisection and α-gradient for any α, step for step), re-written to cost less on
attention scores:

* **Partial sort.** The exact algorithms need the scores in descending order only up
  to the support (the keys with non-zero weight), and attention rows are sparse. Each
  module keeps the 99th percentile of its rows' support sizes at its last call and
  sorts only the top k = 1.25 × that + 2 (at least 8; ``torch.topk``; a full sort when
  k > 3n/4, where topk costs as much). A row whose support reaches k is recomputed with
  a full sort, so the weights never depend on k (the same numbers as the package's).
* **Bisection on candidates.** The bisection's bracket starts at τ_lo = (α − 1)·max − 1,
  so a key scoring at most τ_lo/(α − 1) never has weight. The bisection runs on each
  row's top k + 1 scores (when k + 1 ≤ 0.9 n); a row is solved when its lowest
  candidate has zero weight at the final τ_lo, for then every key left out has zero
  weight at every midpoint that decides a step, and the steps are the full
  bisection's; the other rows are bisected in full. A step costs O(k) per row instead
  of O(n); sums over fewer terms round differently, so weights agree with the package
  to the bisection's tolerance.

Cost, one CPU thread, batch 16, length 100 (``scripts/bench_backbone.py``): at
initialisation, where rows are dense (1.5-entmax keeps about 2/3 of the keys), a
training step of ``entmax15``, ``sparsemax`` and ``entmax-alpha`` costs about 3×, 2×
and 6× vanilla's (the package's full sort and full bisection took 1.3×, 1.6× and 1.2×
longer than this); the partial sort gains more as training makes rows sparse. 20
bisection steps shrink the τ bracket to 2⁻²⁰ of its width: weights within ~2·10⁻⁶
of the exact ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
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


# ---------------------------------------------------------------------------------------
# The mappings (rows on the last axis; −∞ = masked; a row of −∞ gives zeros)
# ---------------------------------------------------------------------------------------
MIN_K = 8  # smallest partial sort
SORT_ALL = 0.75  # sort whole rows when k is above this share of n (topk costs as much)
BISECT_ALL = 0.9  # bisect whole rows when k + 1 is above this share of n


def partial_sort_size(support_seen: float | None) -> int | None:
    """How many of a row's scores to sort: 1.25 × the support size seen, plus 2, at least
    MIN_K (``None``: nothing seen yet, sort all)."""
    if support_seen is None:
        return None
    return max(MIN_K, math.ceil(1.25 * support_seen) + 2)


def support_quantile(support: Tensor, q: float = 0.99) -> float:
    """The ``q`` quantile of the rows' support sizes (one host sync).

    Computed on the CPU copy: CUDA's kthvalue has no deterministic kernel.
    """
    flat = support.reshape(-1).cpu()
    if flat.numel() == 0:
        return 0.0
    rank = max(1, math.ceil(q * flat.numel()))
    return float(flat.kthvalue(rank).values)


def _shift(x: Tensor) -> Tensor:
    """x − max per row (the maximum becomes 0); rows without a finite score stay −∞."""
    top = x.amax(dim=-1, keepdim=True)
    return x - torch.where(top > float("-inf"), top, torch.zeros_like(top))


def _sorted_top(x: Tensor, k: int) -> Tensor:
    """The k largest entries of each row in descending order (all of them if k = n)."""
    if k >= x.shape[-1]:
        return torch.sort(x, dim=-1, descending=True).values
    return torch.topk(x, k, dim=-1).values


def _sort_size(k: int, n: int) -> int:
    return n if k > SORT_ALL * n else k


def _ranks(x: Tensor) -> Tensor:
    return torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)  # ρ = 1 … k


def _redo_long_rows(
    x: Tensor, k: int, results: tuple[Tensor, Tensor], solve: Any
) -> tuple[Tensor, Tensor]:
    """Rows whose support filled all k sorted entries, solved again with a full sort."""
    tau, support = results
    if k < x.shape[-1]:
        unsolved = (support == k).squeeze(-1)
        if bool(unsolved.any()):
            tau_u, support_u = solve(x[unsolved], x.shape[-1])
            tau[unsolved], support[unsolved] = tau_u, support_u
    return tau, support


def _entmax15_threshold(z: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """τ and support size of 1.5-entmax, p = [z − τ]²₊ (z = (x − max) / 2), from the top
    k of each row: Peters et al. 2019, Algorithm 2 (the ``entmax`` package's steps)."""
    k = _sort_size(k, z.shape[-1])
    zs = _sorted_top(z, k)
    rho = _ranks(zs)
    mean = zs.cumsum(-1) / rho
    mean_sq = (zs**2).cumsum(-1) / rho
    ss = rho * (mean_sq - mean**2)
    delta = (1 - ss) / rho
    tau = mean - torch.sqrt(torch.clamp(delta, 0))  # −∞ entries give NaN: never in support
    support = (tau <= zs).sum(dim=-1, keepdim=True)
    tau_star = tau.gather(-1, (support - 1).clamp_min(0))
    tau_star = torch.where(support > 0, tau_star, torch.zeros_like(tau_star))  # empty rows
    return _redo_long_rows(z, k, (tau_star, support), _entmax15_threshold)


def _sparsemax_threshold(z: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """τ and support size of sparsemax, p = [z − τ]₊, from the top k of each row
    (Martins & Astudillo 2016, as in the ``entmax`` package)."""
    k = _sort_size(k, z.shape[-1])
    zs = _sorted_top(z, k)
    cumsum = zs.cumsum(-1) - 1
    support = (_ranks(zs) * zs > cumsum).sum(dim=-1, keepdim=True)
    tau = cumsum.gather(-1, (support - 1).clamp_min(0)) / support.clamp_min(1).to(z.dtype)
    tau = torch.where(support > 0, tau, torch.zeros_like(tau))  # empty rows
    return _redo_long_rows(z, k, (tau, support), _sparsemax_threshold)


class _Entmax15(torch.autograd.Function):
    """1.5-entmax over the last axis, partial-sorting k entries; returns (p, support)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        z = _shift(x) / 2
        tau, support = _entmax15_threshold(z, k)
        p = torch.clamp(z - tau, min=0) ** 2
        ctx.save_for_backward(p)
        ctx.mark_non_differentiable(support)
        return p, support

    @staticmethod
    def backward(ctx: Any, dp: Tensor, _: Any) -> tuple[Tensor, None]:
        (p,) = ctx.saved_tensors
        gppr = p.sqrt()  # 1 / g''(p)
        dx = dp * gppr
        # a row without support has gppr = 0 and gets a zero gradient
        q = dx.sum(-1, keepdim=True) / gppr.sum(-1, keepdim=True).clamp_min(_TINY[p.dtype])
        dx -= q * gppr
        return dx, None


class _Sparsemax(torch.autograd.Function):
    """sparsemax over the last axis, partial-sorting k entries; returns (p, support)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        z = _shift(x)
        tau, support = _sparsemax_threshold(z, k)
        p = torch.clamp(z - tau, min=0)
        ctx.save_for_backward(support, p)
        ctx.mark_non_differentiable(support)
        return p, support

    @staticmethod
    def backward(ctx: Any, dp: Tensor, _: Any) -> tuple[Tensor, None]:
        support, p = ctx.saved_tensors
        on = p != 0
        g = torch.where(on, dp, torch.zeros_like(dp))
        v_hat = g.sum(-1, keepdim=True) / support.clamp_min(1).to(dp.dtype)
        return torch.where(on, g - v_hat, g), None


def _bisect(x: Tensor, alpha: Tensor, n_iter: int, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Correia et al.'s bisection for τ on the scores ``x`` (…, c) — a row's top
    candidates, or all of it — of rows of n keys; as in ``entmax.entmax_bisect``.

    Returns the last midpoint τ_m (the weights are taken there), the final lower end
    τ_lo and the exponent 1/(α − 1).
    """
    top = x.amax(dim=-1, keepdim=True)
    top = torch.where(top > float("-inf"), top, torch.zeros_like(top))  # rows of −∞
    xs = x * (alpha - 1)
    top = top * (alpha - 1)
    power = 1 / (alpha - 1)
    tau_lo = top - 1  # f(τ_lo) ≥ 0: the largest weight would be 1
    dm = (top - (1 / n) ** (alpha - 1)) - tau_lo  # f(τ_hi) ≤ 0: all n weights 1/n
    tau_m = tau_lo
    for _ in range(n_iter):
        dm = dm / 2
        tau_m = tau_lo + dm
        f_m = (xs - tau_m).clamp_(min=0).pow_(power).sum(-1, keepdim=True) - 1
        tau_lo = torch.where(f_m >= 0, tau_m, tau_lo)
    return tau_m, tau_lo, power


class _EntmaxBisect(torch.autograd.Function):
    """α-entmax by bisection over the last axis (α differentiable, broadcast over the
    rows), the bisection run on each row's top k + 1 scores where that decides it."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: Tensor, n_iter: int, k: int) -> tuple[Tensor, Tensor]:
        n = x.shape[-1]
        if k + 1 <= BISECT_ALL * n:
            cand = torch.topk(x, k + 1, dim=-1, sorted=False).values
            tau_m, tau_lo, _ = _bisect(cand, alpha, n_iter, n)
            # solved: every key left out scores at most the lowest candidate, which has
            # zero weight at every midpoint that matters (those at or above τ_lo)
            unsolved = (cand.amin(dim=-1, keepdim=True) * (alpha - 1) > tau_lo).squeeze(-1)
            if bool(unsolved.any()):
                rows_alpha = alpha.expand(*x.shape[:-1], 1)[unsolved]
                tau_m[unsolved] = _bisect(x[unsolved], rows_alpha, n_iter, n)[0]
        else:
            tau_m = _bisect(x, alpha, n_iter, n)[0]
        # α stays unexpanded (one per head): pow with a broadcast exponent is the fast one
        p = (x * (alpha - 1)).sub_(tau_m).clamp_(min=0).pow_(1 / (alpha - 1))
        p = p / p.sum(-1, keepdim=True).clamp_min(_TINY[p.dtype])  # Σ p = 1 (rows of −∞: 0)
        ctx.save_for_backward(p, alpha)
        support = (p > 0).sum(dim=-1, keepdim=True)
        ctx.mark_non_differentiable(support)
        return p, support

    @staticmethod
    def backward(ctx: Any, dp: Tensor, _: Any) -> tuple[Tensor, Tensor | None, None, None]:
        p, alpha = ctx.saved_tensors
        zero = p.new_zeros(1)
        on = p > 0
        gppr = torch.where(on, p ** (2 - alpha), zero)
        gppr_sum = gppr.sum(-1, keepdim=True).clamp_min(_TINY[p.dtype])
        dx = dp * gppr
        dx -= (dx.sum(-1, keepdim=True) / gppr_sum) * gppr
        d_alpha = None
        if ctx.needs_input_grad[1]:  # Correia et al. 2019, as in the entmax package
            s = torch.where(on, p * torch.log(p), zero)  # Shannon terms
            ent = s.sum(-1, keepdim=True)
            skewed = gppr / gppr_sum
            d_alpha = dp * (p - skewed) / ((alpha - 1) ** 2)
            d_alpha -= dp * (s - skewed * ent) / (alpha - 1)
            d_alpha = d_alpha.sum(-1, keepdim=True).sum_to_size(alpha.shape)
        return dx, d_alpha, None, None


_TINY = {
    dt: torch.finfo(dt).tiny for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
}


def entmax_scores(
    x: Tensor, alpha: float | Tensor, n_iter: int = 20, k: int | None = None
) -> tuple[Tensor, Tensor]:
    """α-entmax over the last axis of ``x``, where −∞ marks masked keys.

    Returns the weights (a row of −∞ gets zeros) and each row's support size (…, 1).
    ``alpha``: a float or a tensor broadcastable to ``x`` with size 1 on the last axis;
    ``k``: how many entries to partial-sort (None: all). Runs in float32 for half
    precision inputs and returns the input dtype.
    """
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    n = x.shape[-1]
    k = n if k is None else max(1, min(k, n))
    if isinstance(alpha, Tensor):
        probs, support = _EntmaxBisect.apply(x, alpha.to(x.dtype), n_iter, k)
    elif alpha == 1.0:
        empty = ~torch.isfinite(x.amax(dim=-1, keepdim=True))
        probs = F.softmax(x.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
        support = (probs > 0).sum(dim=-1, keepdim=True)
    elif alpha == 1.5:
        probs, support = _Entmax15.apply(x, k)
    elif alpha == 2.0:
        probs, support = _Sparsemax.apply(x, k)
    else:
        fixed = torch.tensor(alpha, dtype=x.dtype, device=x.device)
        probs, support = _EntmaxBisect.apply(x, fixed, n_iter, k)
    return probs.to(dtype), support


def entmax_masked(
    scores: Tensor,
    allowed: Tensor | None,
    alpha: float | Tensor,
    n_iter: int = 20,
    k: int | None = None,
) -> Tensor:
    """α-entmax over the last axis restricted to ``allowed`` keys (zeros where none is).

    ``alpha`` is a float or a tensor broadcastable to ``scores`` with size 1 on the
    last axis (e.g. (1, H, 1, 1) for one α per head); ``k`` as in :func:`entmax_scores`.
    """
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return entmax_scores(scores, alpha, n_iter, k)[0]


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
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope", "alibi"}),
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
        # 99th percentile of the rows' support sizes at the last call: how much of each
        # row to sort next time (speed only: the weights do not depend on it)
        self.support_seen: float | None = None

    def alpha(self) -> Tensor | float:
        """α per head, shape (H,) when learned; the fixed float otherwise."""
        if self.alpha_logit is None:
            return self.options.alpha
        gap = self.options.min_alpha_gap
        return 1.0 + gap + (1.0 - gap) * torch.sigmoid(self.alpha_logit)  # (H,) in (1+gap, 2)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        t, s = q.shape[-2], k.shape[-2]
        scores = (q * default_scale(q.shape[-1])) @ k.transpose(-2, -1)  # (B, H, T, S)
        bias = ctx.mask.bias(t, s, q.device, scores.dtype)  # 0 or −∞ (masked keys)
        if bias is not None:
            scores = scores + bias
        alpha = self.alpha()
        if isinstance(alpha, Tensor):
            alpha = alpha[None, :, None, None]  # (1, H, 1, 1)
        probs, support = entmax_scores(
            scores, alpha, self.options.n_iter, partial_sort_size(self.support_seen)
        )  # (B, H, T, S), (B, H, T, 1)
        self.support_seen = support_quantile(support)
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
