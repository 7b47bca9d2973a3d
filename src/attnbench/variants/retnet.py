"""Retention: multi-scale exponentially decaying linear attention (RetNet).

Sun, Dong, Huang, Ma, Xia, Xue, Wang & Wei 2023, "Retentive Network: A Successor to
Transformer for Large Language Models" (arXiv:2307.08621).

Retention of one head with decay γ, for queries q_n, keys k_m (rows, d_k) and values
v_m (rows, d_v), is defined by the recurrence (Sec. 2.1, recurrent representation)

    S_n = γ S_{n−1} + k_nᵀ v_n,        o_n = q_n S_n                    (recurrent)

which unrolls to o_n = Σ_{m≤n} γ^{n−m} (q_n·k_m) v_m, i.e. (parallel representation)

    Retention(X) = (Q Kᵀ ⊙ D) V,       D_nm = γ^{n−m} (n ≥ m), 0 (n < m)   (parallel)

and, for chunks of c tokens, with S_[j] the state entering chunk j (chunkwise recurrent
representation)

    o_n = (Q_[j] K_[j]ᵀ ⊙ D) V_[j]  +  γ^{n−jc} q_n S_[j]
    S_[j+1] = γ^c S_[j] + Σ_{m∈[j]} γ^{(j+1)c−1−m} k_mᵀ v_m                 (chunkwise)

All three are implemented (:func:`retention_recurrent`, :func:`retention_parallel`,
:func:`retention_chunkwise`) and agree to rounding; the recurrent form is the definition
(the tests' oracle, usable for decoding), the chunkwise form is what the layer trains
with (chunk size an option; a final partial chunk is fine). Chunks enter the state by a
small (chunks × chunks) decay matrix, not a Python loop.

**Multi-scale decay** (Sec. 2.2): head h = 0 … H−1 uses γ_h = 1 − 2^{−5−h}
(:func:`decay_rates`; H = 4: 0.96875, 0.984375, 0.9921875, 0.99609375). The option
``gamma`` overrides it with one value for every head or a list of one per head
(0 < γ ≤ 1; γ = 1 with the other options off is plain linear attention with the
identity feature map).

**What of the paper's layer is included** (each a switch, the paper's choice by default):

* ``rotate`` — the relative position rotation Θ of Sec. 2.1 (xPos without its scale
  factor, which the decay replaces): Q ← Q ⊙ Θ, K ← K ⊙ Θ̄, Θ_n = e^{inθ}, with
  θ_i = 10000^{−2i/d_k} on coordinate pairs (2i, 2i + 1) (an odd last coordinate is
  left as it is). Retention then encodes token order itself, so the variant declares
  ``positions="own"`` and the model adds no absolute position embeddings (RetNet uses
  none). With ``rotate=False`` order comes from the decay alone.
* ``normalize`` — the three scale factors of Sec. 2.2 ("Retention Score
  Normalization"): QKᵀ/√d_k; D̃_nm = D_nm / √(Σ_i D_ni); R̃_nm = R_nm / max(|Σ_i R_ni|, 1)
  with R = QKᵀ ⊙ D̃. Together they divide o_n by max(|q_n·z_n|, √c_n), where
  z_n = Σ_m D_nm k_m and c_n = Σ_m D_nm. Both are defined by recurrences
  (z_n = γ z_{n−1} + k_n is retention with a column of ones appended to V; c_n is a
  geometric sum of the tokens seen), so the factor is the same in all three forms and
  across segments, and is applied after the form-dependent part.
* ``group_norm`` — GroupNorm with one group per head (normalising each head's d_v
  outputs at each position; affine weight and bias per channel, eps 1e-5), Sec. 2.2.
* ``gate`` — the swish gate: MSR(X) = (swish(X W_G) ⊙ Y) W_O (Sec. 2.2), W_G without
  bias.

**Left out**: the value width d_v = 2·d_k and the FFN width the paper changes to match
parameter counts (here every variant has the same H·head_dim attention width); the
paper's layer/model recipe around retention (the benchmark's shared blocks are used,
including their pre-LN and FFN); attention dropout (there is no attention matrix to drop
from in the chunkwise form; ``dims.dropout`` is not used).

**Beyond the paper**:

* Padding (``key_padding``): a padded position is skipped entirely — its key and value
  add nothing *and* it is not a decay step (nor a rotation step), so D_nm = γ^{P_n − P_m}
  with P the count of real tokens. A padded row equals the same sequence alone, for left
  or right padding, and the final state is that of the real tokens. Padded queries get
  a zero retention output (before GroupNorm and the gate; unused by the model).
* Non-causal use (encoders, classification), which the paper does not define: the
  symmetric decay D_nm = γ^{|n−m|} (the rotation keeps the two directions apart), in
  the same three forms: a forward and a backward scan minus the diagonal (recurrent),
  (QKᵀ ⊙ D)V (parallel), and full (c × c) blocks with states carried from the chunks
  before and after (chunkwise); normalisation uses c_n = Σ_m γ^{|n−m|}.
  There is no state then (a state input raises).
* State across segments (causal): ``ctx.state`` continues the recurrence and
  ``AttentionOutput.state`` is the state after the segment, a :class:`RetentionState`:
  the per-head d_k × d_v matrix S (with the z column when ``normalize``) expressed in the
  frame of the next segment's first position (the rotation of all earlier keys is
  re-based, so positions restart at 0 each segment), and, with ``normalize``, the number
  of real tokens seen (for c_n). It is not detached: the caller detaches it for
  truncated back-propagation.
* ``need_weights``: the (B, H, T, T) retention matrix of the segment — the rotated,
  decay-masked and (with ``normalize``) rescaled QKᵀ, so weights @ V is the retention
  output before GroupNorm and the gate, less the carried state's part. These weights are
  signed and their rows do not sum to 1 (they are not attention probabilities).
* Computation is in float32 at least (also under autocast), like linear attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionOutput,
    Capabilities,
    MultiHeadAttention,
    register_variant,
)

FORMS = ("chunkwise", "parallel", "recurrent")


# ---------------------------------------------------------------------------------------
# Decay rates and the three forms (per head, padding-aware)
# ---------------------------------------------------------------------------------------
def decay_rates(n_heads: int, gamma: float | list[float] | None = None) -> Tensor:
    """γ_h per head (float64, shape (H,)): 1 − 2^{−5−h} (the paper), or ``gamma``."""
    if gamma is None:
        return 1.0 - 2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float64))
    if isinstance(gamma, int | float):
        return torch.full((n_heads,), float(gamma), dtype=torch.float64)
    if len(gamma) != n_heads:
        raise ValueError(f"gamma has {len(gamma)} values for {n_heads} heads")
    return torch.tensor([float(g) for g in gamma], dtype=torch.float64)


def _steps(real: Tensor | None, length: int, like: Tensor) -> Tensor:
    """(B|1, T) 1.0 where a position is a real token (a decay step), 0.0 where padded."""
    if real is None:
        return like.new_ones(1, length)
    return real.to(device=like.device, dtype=like.dtype)


def _decay(log_gamma: Tensor, exponent: Tensor) -> Tensor:
    """γ_h^{exponent}: (H,) × (B|1, …) → (B|1, H, …)."""
    lg = log_gamma.view(1, -1, *([1] * (exponent.dim() - 1)))
    return torch.exp(lg * exponent[:, None])


def _masked_decay(log_gamma: Tensor, exponent: Tensor, keep: Tensor) -> Tensor:
    """γ^{exponent} where ``keep``, exactly 0 elsewhere (masked before exp: no overflow)."""
    lg = log_gamma.view(1, -1, *([1] * (exponent.dim() - 1)))
    return torch.exp((lg * exponent[:, None]).masked_fill(~keep, float("-inf")))


def retention_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_gamma: Tensor,
    real: Tensor | None = None,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The definition: S_n = γ^{[n real]} S_{n−1} + k_nᵀ v_n, o_n = q_n S_n, one step at a time.

    q, k: (B, H, T, d_k); v: (B, H, T, d_v); log_gamma: (H,); real: (B, T) bool or None;
    state: (B, H, d_k, d_v) or None. Keys of padded positions must be zero (the layer
    zeroes them). Returns o (B, H, T, d_v) and the final state.
    """
    b, h, t, dk = q.shape
    s = q.new_zeros(b, h, dk, v.shape[-1]) if state is None else state
    steps = _steps(real, t, q)  # (B|1, T)
    outs = []
    for n in range(t):
        g = torch.exp(log_gamma[None, :] * steps[:, n, None])  # (B|1, H): γ, or 1 if padded
        s = g[..., None, None] * s + k[:, :, n, :, None] * v[:, :, n, None, :]
        outs.append((q[:, :, n, None, :] @ s).squeeze(-2))
    out = torch.stack(outs, dim=2) if outs else v.new_zeros(b, h, 0, v.shape[-1])
    return out, s


def retention_matrix(
    q: Tensor, k: Tensor, log_gamma: Tensor, real: Tensor | None = None, causal: bool = True
) -> Tensor:
    """Q Kᵀ ⊙ D, (B, H, T, T): D_nm = γ^{P_n − P_m} for m ≤ n (causal) or γ^{|P_n − P_m|},

    with P the running count of real tokens (P_n = n + 1 without padding). Entries of
    padded keys are 0.
    """
    t = q.shape[-2]
    steps = _steps(real, t, q)
    count = steps.cumsum(-1)  # P (B|1, T)
    diff = count[:, :, None] - count[:, None, :]  # (B|1, T, T)
    keep = steps[:, None, :].bool().expand_as(diff)  # real keys only
    if causal:
        keep = keep & torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    else:
        diff = diff.abs()
    return (q @ k.transpose(-2, -1)) * _masked_decay(log_gamma, diff, keep[:, None])


def retention_parallel(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_gamma: Tensor,
    real: Tensor | None = None,
    state: Tensor | None = None,
    causal: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """(Q Kᵀ ⊙ D) V in one (T × T) product, plus γ^{P_n} q_n S_0 for a carried state.

    Non-causal: D_nm = γ^{|n−m|}, no state (returns None for it).
    """
    scores = retention_matrix(q, k, log_gamma, real, causal)
    out = scores @ v
    if not causal:
        if state is not None:
            raise ValueError("non-causal retention has no state")
        return out, None
    t = q.shape[-2]
    count = _steps(real, t, q).cumsum(-1)  # (B|1, T)
    total = count[:, -1:]  # (B|1, 1) real tokens in the segment
    if state is not None:
        out = out + _decay(log_gamma, count)[..., None] * (q @ state)
    k_end = k * _decay(log_gamma, total - count)[..., None]  # γ^{P_T − P_m} k_m
    final = k_end.transpose(-2, -1) @ v
    if state is not None:
        final = final + _decay(log_gamma, total)[..., None] * state
    return out, final


class _Chunks(NamedTuple):
    """q, k, v cut into N chunks of c tokens (the last zero-padded), with real counts."""

    q: Tensor  # (B, H, N, c, d_k)
    k: Tensor
    v: Tensor  # (B, H, N, c, d_v)
    count: Tensor  # P within each chunk, inclusive: (B|1, N|1, c)
    real: Tensor  # (B|1, N|1, 1, c) bool, real keys
    ends: Tensor  # C_j, real tokens up to the end of chunk j: (B|1, N)


def _chunk(q: Tensor, k: Tensor, v: Tensor, real: Tensor | None, chunk_size: int) -> _Chunks:
    b, h, t, _ = q.shape
    c = max(1, min(chunk_size, t))
    n = -(-t // c)
    pad = n * c - t
    steps = _steps(real, t, q)  # (B|1, T)
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        steps = F.pad(steps, (0, pad))  # zero-padded tail: no keys, no decay steps
    shared = real is None and not pad  # the same local counts in every chunk and row
    steps = steps[:, None, :c] if shared else steps.view(-1, n, c)  # (B|1, N|1, c)
    count = steps.cumsum(-1)
    ends = count[..., -1].expand(count.shape[0], n).cumsum(-1)
    q, k, v = (x.reshape(b, h, n, c, x.shape[-1]) for x in (q, k, v))
    return _Chunks(q, k, v, count, steps[..., None, :].bool(), ends)


def _across(log_gamma: Tensor, to: Tensor, frm: Tensor, keep: Tensor, u: Tensor) -> Tensor:
    """Σ_i γ^{to_j − frm_i} u_i over the pairs (j, i) ``keep`` allows: (B, H, J, d_k, d_v)."""
    b, h, n, dk, dv = u.shape
    weights = _masked_decay(log_gamma, to[:, :, None] - frm[:, None, :], keep[None, None])
    return (weights @ u.reshape(b, h, n, dk * dv)).view(b, h, -1, dk, dv)


def retention_chunkwise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_gamma: Tensor,
    real: Tensor | None = None,
    state: Tensor | None = None,
    chunk_size: int = 64,
    need_state: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Causal retention by chunks of c tokens: (c × c) blocks inside, states across.

    Inside chunk j, (Q K ᵀ ⊙ D) V with the local decay; across chunks, the state entering
    chunk j is S_[j] = Σ_{i<j} γ^{C_{j−1} − C_i} U_i + γ^{C_{j−1}} S_0, where U_i is chunk
    i's Σ_m γ^{L_i − P_m} k_mᵀ v_m and C the running count of real tokens at chunk ends —
    one (chunks + 1) × chunks decay matrix. The last chunk is zero-padded with positions
    that are not decay steps, so any length works. Returns o and the final state
    (None when ``need_state`` is False and nothing else needs it).
    """
    b, h, t, _ = q.shape
    ch = _chunk(q, k, v, real, chunk_size)
    n, c = ch.q.shape[2], ch.q.shape[3]
    diff = ch.count[..., :, None] - ch.count[..., None, :]  # (B|1, N|1, c, c)
    keep = torch.ones(c, c, dtype=torch.bool, device=q.device).tril() & ch.real
    decay = _masked_decay(log_gamma, diff, keep[:, None])
    out = ((ch.q @ ch.k.transpose(-2, -1)) * decay) @ ch.v  # inside chunks (B, H, N, c, d_v)
    final = None
    if n > 1 or state is not None or need_state:
        last = ch.count[..., -1:]  # L_j (B|1, N|1, 1)
        u = (ch.k * _decay(log_gamma, last - ch.count)[..., None]).transpose(-2, -1) @ ch.v
        if n == 1 and state is None:  # one chunk, nothing before it: the parallel form
            return out.reshape(b, h, c, -1)[:, :, :t], u[:, :, 0]
        before = F.pad(ch.ends, (1, 0))  # C_{j−1} for j = 0 … N (B|1, N + 1)
        strict = torch.ones(n + 1, n, dtype=torch.bool, device=q.device).tril(-1)  # i < j
        entering = _across(log_gamma, before, ch.ends, strict, u)  # (B, H, N + 1, d_k, d_v)
        if state is not None:
            entering = entering + _decay(log_gamma, before)[..., None, None] * state[:, :, None]
        within = _decay(log_gamma, ch.count)[..., None]  # γ^{P_n} (B|1, H, N|1, c, 1)
        out = out + (ch.q @ entering[:, :, :n]) * within
        final = entering[:, :, n]
    return out.reshape(b, h, n * c, -1)[:, :, :t], final


def retention_chunkwise_bidirectional(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_gamma: Tensor,
    real: Tensor | None = None,
    chunk_size: int = 64,
) -> Tensor:
    """Σ_m γ^{|P_n − P_m|} (q_n·k_m) v_m by chunks: a full (c × c) block inside, and
    states from the chunks before (as in the causal form) and after.

    From chunk i > j, key m reaches query n with exponent (L_j − P_n) + (C_{i−1} − C_j)
    + P_m: chunk i's keys are summed as U'_i = Σ_m γ^{P_m} k_mᵀ v_m and carried back.
    """
    b, h, t, _ = q.shape
    ch = _chunk(q, k, v, real, chunk_size)
    n = ch.q.shape[2]
    diff = (ch.count[..., :, None] - ch.count[..., None, :]).abs()
    decay = _masked_decay(log_gamma, diff, ch.real[:, None])
    out = ((ch.q @ ch.k.transpose(-2, -1)) * decay) @ ch.v  # inside chunks
    if n > 1:
        last = ch.count[..., -1:]
        before = F.pad(ch.ends[:, :-1], (1, 0))  # C_{j−1} (B|1, N)
        lower = torch.ones(n, n, dtype=torch.bool, device=q.device).tril(-1)  # i < j
        to_end = _decay(log_gamma, last - ch.count)[..., None]  # γ^{L − P}
        from_start = _decay(log_gamma, ch.count)[..., None]  # γ^{P}
        kt = ch.k.transpose(-2, -1)
        u_fwd = (kt * to_end.transpose(-2, -1)) @ ch.v  # Σ γ^{L_i − P_m} k_mᵀ v_m
        u_bwd = (kt * from_start.transpose(-2, -1)) @ ch.v  # Σ γ^{P_m} k_mᵀ v_m
        fwd = _across(log_gamma, before, ch.ends, lower, u_fwd)  # from chunks i < j
        bwd = _across(log_gamma, -ch.ends, -before, lower.T, u_bwd)  # γ^{C_{i−1} − C_j}, i > j
        out = out + (ch.q @ fwd) * from_start + (ch.q @ bwd) * to_end
    return out.reshape(b, h, -1, v.shape[-1])[:, :, :t]


def retention_bidirectional(
    form: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_gamma: Tensor,
    real: Tensor | None = None,
    chunk_size: int = 64,
) -> Tensor:
    """Σ_m γ^{|n−m|} (q_n·k_m) v_m in the given form.

    Recurrent: a forward and a backward scan (the recurrence on the reversed sequence)
    minus the m = n term counted twice; for real n and m the count of real tokens
    between them is the same both ways. Parallel: (QKᵀ ⊙ D)V with D = γ^{|P_n − P_m|}.
    Chunkwise: :func:`retention_chunkwise_bidirectional`.
    """
    if form == "parallel":
        return retention_parallel(q, k, v, log_gamma, real, causal=False)[0]
    if form == "chunkwise":
        return retention_chunkwise_bidirectional(q, k, v, log_gamma, real, chunk_size)

    def flip(x: Tensor | None, dim: int = -2) -> Tensor | None:
        return None if x is None else x.flip(dim)

    forward = retention_recurrent(q, k, v, log_gamma, real)[0]
    backward = retention_recurrent(flip(q), flip(k), flip(v), log_gamma, flip(real, -1))[0]
    return forward + backward.flip(-2) - (q * k).sum(-1, keepdim=True) * v


def geometric_sum(log_gamma: Tensor, count: Tensor) -> Tensor:
    """Σ_{i<p} γ^i = (1 − γ^p)/(1 − γ) (p for γ = 1), for counts (B|1, T) → (B|1, H, T)."""
    lg = log_gamma.view(1, -1, 1)
    p = count[:, None]
    unit = lg == 0
    safe = torch.where(unit, torch.ones_like(lg), lg)
    return torch.where(unit, p, torch.expm1(p * safe) / torch.expm1(safe))


def rotate(x: Tensor, positions: Tensor) -> Tensor:
    """x ⊙ Θ_n, Θ_n = e^{inθ}: coordinate pairs (2i, 2i + 1) as complex numbers, turned by n·θ_i.

    x: (..., T, d), float32 or wider; positions broadcastable to x's (..., T).
    θ_i = 10000^{−2i/d}. An odd last coordinate is unchanged. rotate(q, n)·rotate(k, m)
    depends on n − m only.
    """
    d = x.shape[-1]
    half = d // 2
    if half == 0:
        return x
    theta = 10000.0 ** (-2.0 * torch.arange(half, device=x.device, dtype=x.dtype) / d)
    angle = positions.to(x.dtype)[..., None] * theta  # (..., T, d/2)
    turn = torch.polar(torch.ones_like(angle), angle)  # e^{i n θ}
    body = x[..., : 2 * half].unflatten(-1, (half, 2))
    if body.stride(-1) != 1 or any(st % 2 for st in body.stride()[:-1]):
        body = body.contiguous()  # view_as_complex needs (re, im) adjacent and aligned
    out = torch.view_as_real(torch.view_as_complex(body) * turn).flatten(-2)
    return out if d == 2 * half else torch.cat([out, x[..., 2 * half :]], dim=-1)


# ---------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------
class RetentionState(NamedTuple):
    """What one layer carries to the next segment (per sequence)."""

    kv: Tensor  # (B, H, d_k, d_v [+1 for z with normalize]), rebased to the next position 0
    seen: Tensor | None  # (B,) int64 real tokens read so far (for c_n); None without normalize


@dataclass
class RetNetOptions:
    # None: γ_h = 1 − 2^(−5−h); a number: that γ for every head; a list: one per head
    gamma: float | list[float] | None = None
    chunk_size: int = 32  # tokens per chunk of the chunkwise form (exact for any value)
    form: str = "chunkwise"  # "chunkwise" | "parallel" | "recurrent" (the same numbers)
    rotate: bool = True  # the paper's relative rotation Θ (xPos without scaling)
    normalize: bool = True  # QKᵀ/√d, D row sums, max(|R row sum|, 1) (Sec. 2.2)
    group_norm: bool = True  # GroupNorm, one group per head, after retention
    gate: bool = True  # swish gate: (swish(X W_G) ⊙ Y) W_O

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")
        values = [] if self.gamma is None else self.gamma
        values = [values] if isinstance(values, int | float) else values
        if not isinstance(values, list | tuple) or not all(
            isinstance(g, int | float) and not isinstance(g, bool) and 0 < g <= 1 for g in values
        ):
            raise ValueError(f"gamma must be None, or numbers in (0, 1], got {self.gamma!r}")


@register_variant(
    "retnet",
    paper=(
        'Sun et al. 2023, "Retentive Network: A Successor to Transformer for Large Language Models"'
    ),
    summary="retention (QKᵀ ⊙ D)V, D = γ^(n−m) per head; chunkwise, recurrent state",
)
class RetNet(MultiHeadAttention):
    """Multi-scale retention: decaying linear attention with rotation, GroupNorm, swish gate."""

    Options = RetNetOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=False,  # retention over another sequence is not in the paper
        padding_mask=True,
        positions="own",  # the rotation Θ and the decay; no absolute embeddings
        recurrent=True,
        variable_length=True,
        time_complexity="O(n·c·d + n·d²)",
        memory_complexity="O(n·c + n·d²/c)",
    )

    @classmethod
    def state_size(cls, options: RetNetOptions, dims: AttentionDims) -> int:
        """Per head S (d_k × d_v); with ``normalize`` also z (d_k) per head and a count."""
        d = dims.head_dim
        if options.normalize:
            return dims.n_heads * d * (d + 1) + 1
        return dims.n_heads * d * d

    def __init__(self, dims: AttentionDims, options: RetNetOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: RetNetOptions
        h, dh = dims.n_heads, dims.head_dim
        gamma = decay_rates(h, self.options.gamma)
        self.register_buffer("log_gamma", torch.log(gamma), persistent=False)  # (H,)
        self.g_proj = nn.Linear(dims.d_model, h * dh, bias=False) if self.options.gate else None
        self.norm_weight: nn.Parameter | None = None
        self.norm_bias: nn.Parameter | None = None
        if self.options.group_norm:
            self.norm_weight = nn.Parameter(torch.ones(h * dh))
            self.norm_bias = nn.Parameter(torch.zeros(h * dh))

    # -- retention of one segment --------------------------------------------------------
    def retain(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None, RetentionState | None]:
        """Per-head retention (normalised when asked), its weights and the next state."""
        mask = ctx.mask
        if mask.memory_len:
            raise ValueError("retnet carries earlier segments in ctx.state, not as memory keys")
        if q.shape[-2] != k.shape[-2]:
            raise ValueError("retnet is self-retention only (cross_attention=False)")
        causal = mask.causal
        previous: RetentionState | None = ctx.state
        if previous is not None and not causal:
            raise ValueError("non-causal retention has no state to continue from")
        o = self.options
        dtype = q.dtype
        work = torch.promote_types(dtype, torch.float32)
        b, h, t, dk = q.shape
        with torch.autocast(device_type=q.device.type, enabled=False):
            q, k, v = q.to(work), k.to(work), v.to(work)
            log_gamma = self.log_gamma.to(work)
            real = mask.key_padding
            real = None if real is None else real.to(device=q.device, dtype=torch.bool)
            steps = _steps(real, t, q)  # (B|1, T)
            count = steps.cumsum(-1)  # P_n, real tokens up to and including n
            if o.normalize:
                q = q * (1.0 / math.sqrt(dk))
            if o.rotate:  # position = real tokens before n in this segment
                positions = (count - steps)[:, None]  # (B|1, 1, T)
                q, k = rotate(q, positions), rotate(k, positions)
            if real is not None:
                k = k * steps[:, None, :, None]  # padded keys add nothing
            values = torch.cat([v, v.new_ones(b, h, t, 1)], -1) if o.normalize else v
            kv0 = None if previous is None else previous.kv.to(work)

            final: Tensor | None = None
            if not causal:
                out = retention_bidirectional(o.form, q, k, values, log_gamma, real, o.chunk_size)
            elif o.form == "recurrent":
                out, final = retention_recurrent(q, k, values, log_gamma, real, kv0)
            elif o.form == "parallel":
                out, final = retention_parallel(q, k, values, log_gamma, real, kv0)
            else:
                out, final = retention_chunkwise(q, k, values, log_gamma, real, kv0, o.chunk_size)

            seen = None
            scale: Tensor | None = None
            if o.normalize:
                out, den = out[..., :-1], out[..., -1]  # Σ_m D_nm (q_n·k_m) v_m, q_n·z_n
                if causal:
                    before = 0.0 if previous is None else previous.seen.to(work)[:, None]
                    c = geometric_sum(log_gamma, count + before)  # Σ_m D_nm (B|1, H, T)
                    seen = count[:, -1].long()
                    seen = seen if previous is None else seen + previous.seen.to(seen.device)
                else:
                    after = steps.flip(-1).cumsum(-1).flip(-1)  # real tokens from n on
                    c = geometric_sum(log_gamma, count) + geometric_sum(log_gamma, after)
                    c = (c - steps[:, None]).clamp_min(0.0)  # n itself counted once
                scale = torch.maximum(den.abs(), c.sqrt()).clamp_min(1.0)  # (B|1→B, H, T)
                out = out / scale[..., None]
            if real is not None:  # padded queries: 0, the same in every form
                out = out * steps[:, None, :, None]

            state = None
            if causal and final is not None:
                if o.rotate:  # rebase the keys' rotation: the next segment starts at 0
                    total = count[:, -1].view(-1, 1, 1).expand(b, 1, 1)
                    final = rotate(final.transpose(-2, -1), -total).transpose(-2, -1)
                if seen is not None:
                    seen = seen.expand(b)
                state = RetentionState(final, seen)

            weights = None
            if ctx.need_weights:
                weights = retention_matrix(q, k, log_gamma, real, causal)
                if scale is not None:
                    weights = weights / scale[..., None]
                if real is not None:
                    weights = weights * steps[:, None, :, None]
        return out.to(dtype), None if weights is None else weights.to(dtype), state

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        out, weights, _ = self.retain(q, k, v, ctx)
        return out, weights

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        if source is not None:
            raise ValueError("retnet is self-retention only (cross_attention=False)")
        q = self.split_heads(self.q_proj(x))  # (B, H, T, dh)
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(self.v_proj(x))
        out, weights, state = self.retain(q, k, v, ctx)  # (B, H, T, dh)
        if self.norm_weight is not None or self.g_proj is not None:
            b, h, t, dh = out.shape
            y = out.transpose(1, 2).reshape(b * t, h * dh)  # the layout W_O reads anyway
            if self.norm_weight is not None:  # GroupNorm, one group per head (and position)
                y = F.layer_norm(y.view(b * t, h, dh), (dh,), eps=1e-5).view(b * t, h * dh)
                y = torch.addcmul(self.norm_bias, y, self.norm_weight)
            y = y.view(b, t, h * dh)
            if self.g_proj is not None:
                y = F.silu(self.g_proj(x)) * y  # swish gate
            out = y.view(b, t, h, dh).transpose(1, 2)
        return AttentionOutput(
            out=self.project_out(out, ctx.head_mask),
            weights=weights if ctx.need_weights else None,
            state=state,
        )
