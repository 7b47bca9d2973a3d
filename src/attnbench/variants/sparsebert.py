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

``sparsebert-dam`` (the paper's Algorithm 1, structured form DAM_s): M is learned, in
two phases.

The mask is Toeplitz: one logit α_r per relative position r of key j and query i,
shared by every layer of the stack (kept in ``dims.shared``) and, with ``per_head``,
one per head,

    M_ij = m_{r(i, j)},      r(i, j) = |j − i|  (``symmetric``)  or  j − i,

so α has ``max_len`` entries per head (2·max_len − 1 when not ``symmetric``), not n².

1. Mask search, the first ``search_steps`` training forward calls of the layer. The
   mask is relaxed with a Gumbel-sigmoid,

       m_r = sigmoid((α_r + G'_r − G''_r) / τ),      G', G'' ~ Gumbel(0, 1),

   drawn once per call of the stack (every layer sees the same sample, as it applies
   the same mask; G' − G'' is drawn as a Logistic(0, 1), its distribution), and enters
   the scores as softmax(S + log M) (= σ_M with a soft M). The model and α train
   together under the L1 sparsity penalty on the expected mask,

       L = L_task + λ · Σ_{(i, j)} sigmoid(α_{r(i, j)}),

   summed over the (T × S) block in use (and the heads) — ‖E[M]‖₁, the paper's λ‖M‖₁
   — and returned as ``AttentionOutput.aux_loss``; each of the L layers of the stack
   returns 1/L of it, so the stack adds the penalty once for its one mask. sigmoid(α_r)
   is the probability that the sampled gate keeps offset r.
2. Then the mask is binarised once, M = [α > 0] (the mode of the relaxed gate:
   sigmoid(α) > ½; the released code's argmax of its two class logits), and stored in
   the buffer ``binary_mask``; from then on training and evaluation both use that
   fixed hard mask (σ_M with a binary M), α is no longer used (no gradient, no
   penalty, ``aux_loss`` is None).

The phase is counted on the layer's training-mode forward calls (buffer ``calls``,
like Performer's ``redraw_every``): calls 1 … ``search_steps`` search, call
``search_steps`` + 1 binarises and uses the hard mask, and so do all later ones. A
model whose training step runs the encoder twice (the two-tower pair classifier)
counts two calls per step. ``calls`` and ``binary_mask`` are buffers, so a resumed run
and a reloaded checkpoint evaluate with the same mask. In evaluation before the switch
(a model evaluated mid-search) the mask is the current binarisation [α > 0] of α (the
mask the switch would fix if the search ended there), deterministic, without penalty.
``search_steps`` = 0 fixes [α > 0] of the initial α (a random mask) on the first call.
``drop_diagonal`` forces M_ii = 0 on top of the learned mask in both phases.

Notes on the reference. The released code (github.com/han-shi/SparseBERT,
``modeling.py``, ``BertModel``) keeps ``init_alphas`` of shape (heads, 128, 2): per head,
two class logits per distance |i − j| < 128 (a symmetric Toeplitz mask, 1e-3·N(0, 1)
at start), samples it once per forward for all layers with a straight-through
two-class Gumbel-softmax (τ = 1; hard in the forward pass), adds −10000·(1 − M) to the
scores of every layer and penalises λ‖M‖₁ of the sampled (heads × 128 × 128) mask
(λ = 10⁻⁴ in ``BertForPreTraining``, 5·10⁻⁵ in ``run_pretraining.py``); α is exempt
from weight decay there too. A two-class softmax with logits (a₀, a₁) is the sigmoid
of α = a₀ − a₁, and the difference of their Gumbel noises is the logistic noise above,
so the parametrisation here is the same, with one logit per distance instead of two.
Differences: the gate stays soft in the forward pass here (no straight-through), the
penalty is on the expected mask σ(α) rather than on the sampled one, and a query
whose every key is dropped gets zeros (σ_M), where the released additive −10000
shifts the whole row alike and so attends to every key. The released repository stops
at the search (it saves the mask with its checkpoints); the binarise-then-train phase
is the paper's (Algorithm 1: update w and α under M ~ gumbel-sigmoid(α) until
convergence, return M). Query i sits at position ``memory_len + i``. Positions index
the mask, so the variant is for self-attention only (``cross_attention=False``).
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
    # λ of the penalty λ·Σ sigmoid(α) (released code: 10⁻⁴). Fraction of offsets kept at
    # the end of a 300-call search at the default profile's sizes (ListOps, bible-shuffle):
    # λ = 10⁻⁴: 0-0.5 % (an empty mask); 10⁻⁶: 3-23 %; 10⁻⁷: 34-75 %; 0: 58-81 %
    sparsity_weight: float = 1e-4
    temperature: float = 1.0  # τ of the Gumbel-sigmoid (the released code uses 1)
    per_head: bool = True  # one mask per head (released code) instead of one per layer stack
    symmetric: bool = True  # one logit per |j − i| (released code); False: per signed j − i
    # Training forward calls of mask search before M = [α > 0] is fixed: ~20–40 % of the
    # default profile's 800–1500 steps, past the 30–100 warm-up steps, leaving >= 500 steps
    # to train under the fixed mask. Longer profiles scale it through variant options.
    search_steps: int = 300
    init_logit: float = 0.0  # α starts at this value plus N(0, 10⁻³) noise (released code: 0)

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.sparsity_weight < 0:
            raise ValueError(f"sparsity_weight must be >= 0, got {self.sparsity_weight}")
        if self.search_steps < 0:
            raise ValueError(f"search_steps must be >= 0, got {self.search_steps}")


@register_variant(
    "sparsebert-dam",
    paper=('Shi et al. 2021, "SparseBERT: Rethinking the Importance Analysis in Self-attention"'),
    summary="softmax attention under a learned (DAM) or diagonal-free mask",
)
class SparseBert(MultiHeadAttention):
    """Softmax attention gated by a mask M: learned (DAM) and/or without the diagonal."""

    decay_exempt = ("mask_logits",)  # the learned attention mask α (shared by the layers)

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
        self.calls: Tensor | None
        self.binary_mask: Tensor | None
        self.register_buffer("calls", None)  # training calls (DAM only)
        self.register_buffer("binary_mask", None)  # the fixed mask of phase 2 (DAM only)
        if self.options.learn_mask:
            heads = dims.n_heads if self.options.per_head else 1
            offsets = dims.max_len if self.options.symmetric else 2 * dims.max_len - 1
            self._key = f"sparsebert-dam-{heads}x{offsets}"
            if self._key not in dims.shared:  # the first layer builds α, the others share it
                alpha = self.options.init_logit + 1e-3 * torch.randn(heads, offsets)
                dims.shared[self._key] = nn.Parameter(alpha)  # (H or 1, offsets)
            self.mask_logits = dims.shared[self._key]
            self.calls = torch.zeros((), dtype=torch.long)
            self.binary_mask = torch.zeros(heads, offsets, dtype=torch.bool)

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        out = super().forward(x, source, ctx)
        out.aux_loss = self._penalty
        self._penalty = None
        return out

    # -- the mask ---------------------------------------------------------------------------
    @property
    def searching(self) -> bool:
        """Whether the next training call is still in the mask search (relaxed mask)."""
        return self.calls is not None and int(self.calls) < self.options.search_steps

    def current_mask(self) -> Tensor:
        """(H|1, offsets) bool: the hard mask m_r an evaluation call uses now.

        The fixed ``binary_mask`` once the search has ended and the switch has happened;
        before that, the current binarisation [α > 0]."""
        assert self.mask_logits is not None and self.calls is not None
        if int(self.calls) > self.options.search_steps:
            return self.binary_mask
        return self.mask_logits.detach() > 0

    def offsets(self, q_len: int, k_len: int, memory_len: int, device: torch.device) -> Tensor:
        """(T, S) index of r(i, j) into α for queries memory_len … memory_len + T − 1."""
        if memory_len + q_len > self.dims.max_len or k_len > self.dims.max_len:
            raise ValueError(
                f"sparsebert: positions up to {max(memory_len + q_len, k_len)} exceed the "
                f"mask's max_len {self.dims.max_len}"
            )
        q_pos = torch.arange(q_len, device=device)[:, None] + memory_len
        rel = torch.arange(k_len, device=device)[None, :] - q_pos  # j − i
        return rel.abs() if self.options.symmetric else rel + (self.dims.max_len - 1)

    def _noise(self, like: Tensor, call: int) -> Tensor:
        """G' − G'' ~ Logistic(0, 1) per offset, one draw per training call of the stack:
        the first layer to reach call ``call`` draws it, the others reuse it."""
        key = f"{self._key}-noise"
        hit = self.dims.shared.get(key)
        if hit is not None and hit[0] == call and hit[1].device == like.device:
            return hit[1].to(like.dtype)
        tiny = torch.finfo(like.dtype).tiny
        u = torch.rand(like.shape, device=like.device, dtype=like.dtype).clamp(tiny, 1 - 1e-7)
        noise = torch.log(u) - torch.log1p(-u)  # logistic = difference of two Gumbels
        self.dims.shared[key] = (call, noise)
        return noise

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
            assert self.calls is not None and self.binary_mask is not None
            idx = self.offsets(t, s, ctx.mask.memory_len, q.device)  # (T, S)
            alpha = self.mask_logits
            hard: Tensor | None = None
            if self.training:
                call = int(self.calls)
                self.calls += 1
                if call < self.options.search_steps:  # search: m = sigmoid((α + G' − G'')/τ)
                    relaxed = (alpha + self._noise(alpha.detach(), call)) / self.options.temperature
                    scores = scores + F.logsigmoid(relaxed)[:, idx].to(scores.dtype)  # M·exp(S)
                    weight = self.options.sparsity_weight / self.dims.n_layers
                    self._penalty = weight * torch.sigmoid(alpha)[:, idx].sum()  # λ Σ σ(α)
                else:
                    if call == self.options.search_steps:  # the switch: M = [α > 0], once
                        with torch.no_grad():
                            self.binary_mask.copy_(alpha > 0)
                    hard = self.binary_mask
            else:
                hard = self.current_mask()
            if hard is not None:
                kept = hard[:, idx][None]  # (1, H|1, T, S)
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
