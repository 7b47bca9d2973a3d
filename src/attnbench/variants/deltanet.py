"""DeltaNet: linear attention whose state is updated by the delta rule, trained chunkwise.

Yang, Wang, Zhang, Shen & Kim 2024, "Parallelizing Linear Transformers with the Delta
Rule over Sequence Length" (NeurIPS 2024).

The recurrence
--------------
Per head, a fast-weight matrix S ∈ R^{d_v × d_k} maps keys to values. At every position
the value S currently returns for the key, S_{t−1} k_t, is moved a step β_t towards v_t
(one step of SGD on ½‖S k_t − v_t‖²):

    S_t = S_{t−1} − β_t (S_{t−1} k_t − v_t) k_tᵀ  =  S_{t−1} (I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ
    o_t = S_t q_t

(S_0 = 0, or the previous segment's state). The code stores the transpose M = Sᵀ
(d_k × d_v, keys first), so that o_tᵀ = q_tᵀ M_t and M_t = M_{t−1} + k_t u_tᵀ with the
"pseudo-value" u_t = β_t (v_t − M_{t−1}ᵀ k_t). :func:`recurrent_delta_rule` is this loop,
the definition (and the tests' oracle).

The chunkwise form (training)
-----------------------------
The paper parallelises the loop over chunks of c positions. Inside a chunk
starting from state M_0, unrolling gives M_r = M_0 + Σ_{i≤r} k_i u_iᵀ, and substituting
into u_r = β_r (v_r − M_{r−1}ᵀ k_r) gives a lower unitriangular system for all u_r:

    (I + A) U = diag(β) V − diag(β) K M_0,      A_ri = β_r k_rᵀ k_i   (i < r)

so U = Ũ − W M_0 with Ũ = T diag(β) V and W = T diag(β) K, T = (I + A)⁻¹: the WY
representation of the product of the chunk's Householder-like factors (I − β_i k_i k_iᵀ),
with T computed by one triangular solve (the paper's "UT transform"). Then

    O = Q M_0 + (Q Kᵀ ⊙ L) U           (L: lower-triangular mask, diagonal included)
    M_c = M_0 + Kᵀ U

Only the last two lines run sequentially over chunks (a few (c × d) products per chunk);
A, T, W, Ũ and Q Kᵀ are computed for all chunks at once. A length that the chunk size does
not divide is padded at the end with β = 0, which leaves the state unchanged.

:func:`chunk_delta_rule` also takes per-position log-decays log α_t ≤ 0 for the gated
recurrence of Gated DeltaNet (:mod:`attnbench.variants.gated_deltanet`),
S_t = α_t S_{t−1} (I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ. With the in-chunk cumulative
log-decays G_r = Σ_{i≤r} log α_i and γ_r = exp(G_r):

    A_ri = β_r exp(G_r − G_i) k_rᵀ k_i (i < r),   W = T diag(β γ) K,   Ũ = T diag(β) V
    O = diag(γ) Q M_0 + (Q Kᵀ ⊙ Γ) U,             Γ_ri = exp(G_r − G_i) (i ≤ r, else 0)
    M_c = γ_c M_0 + Kᵀ diag(exp(G_c − G)) U

Every exponent is ≤ 0 (differences are masked before the exponential), so nothing
overflows however strong the decay. DeltaNet is the case log α ≡ 0. (The Gated DeltaNet
paper prints the causal mask M where the intra-chunk term needs the decay-aware Γ, as
its authors' issue tracker notes; Γ is what the recurrence gives and what the tests check.)

The layer
---------
What is included, following the paper's architecture and its released layer (the
"modernised" DeltaNet of the paper, not Schlag et al.'s original):

* q, k, v = the usual linear projections (with bias, like every variant here), each
  followed by a short causal depthwise convolution (kernel ``conv_size`` = 4, no bias;
  option ``short_conv``, on by default as in the paper) and SiLU;
* q and k L2-normalised per head (the SiLU feature map followed by L2 normalisation, which
  keeps the transition I − β k kᵀ's eigenvalues in [0, 1]);
* β_t = σ(x_t W_β + b_β), one scalar per head and position;
* o_t = S_t q_t with no 1/√d_k factor (the paper's equation; q has unit norm and the
  output is normalised next);
* the output normalisation: RMSNorm over each head's d_v outputs (weight shared by heads,
  ε = 1e-5) before the output projection; option ``output_gate`` multiplies it by
  SiLU(x W_g), the gate of the released layer's ``use_gate`` (off for DeltaNet, on for
  Gated DeltaNet as in that paper).

Left out: the hybrid models (sliding-window or global attention layers interleaved — a
model choice, not the layer); the SwiGLU channel mixer (the shared Transformer block's
feed-forward is used); L1/sum normalisation and the elu + 1 feature map (the paper's
ablations, superseded by SiLU + L2); the 1/√d_k query scale of the released kernels
(immaterial before RMSNorm).

Masks, state and precision
--------------------------
The mechanism is causal, with no bidirectional form in the paper: the capabilities say
``bidirectional=False``, so a task whose model has an encoder is ``n/a``. Called in a
non-causal stack anyway, the layer reads left to right. A key
padding mask sets β = 0 at padded positions (and α = 1 in the gated form), so they leave
the state unchanged, and their projections are zeroed before the short convolution, so a
row padded at the end (or the start) gives the real positions exactly the outputs of the
sequence alone; padding between real tokens is skipped by the state but seen as zeros by
the convolution. ``ctx.state`` / ``AttentionOutput.state`` carry a :class:`DeltaState`
across segments: M (B, H, d_k, d_v) and the convolution's last ``conv_size − 1`` inputs
(of the last real positions of each row), detached (truncated back-propagation, as
Transformer-XL's memory). There is no attention matrix: ``need_weights`` gives ``None``.
The recurrence runs in float32 (also under autocast), float64 when the inputs are.
"""

from __future__ import annotations

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

NORM_EPS = 1e-5  # the output RMSNorm's ε (the released layer's norm_eps)
L2_EPS = 1e-6  # ε in the L2 normalisation of q and k (as in the released kernels)


# ---------------------------------------------------------------------------------------
# The delta rule: recurrent (definition) and chunkwise (WY representation) forms
# ---------------------------------------------------------------------------------------
def recurrent_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_alpha: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The (gated) delta rule one position at a time.

    q, k: (B, H, T, d_k); v: (B, H, T, d_v); beta, log_alpha: (B, H, T); initial_state:
    M_0 = S_0ᵀ (B, H, d_k, d_v). Returns the outputs (B, H, T, d_v) and M_T.

        M ← α_t M;   u_t = β_t (v_t − Mᵀ k_t);   M ← M + k_t u_tᵀ;   o_t = Mᵀ q_t
    """
    b, h, t, dk = k.shape
    m = (
        initial_state
        if initial_state is not None
        else k.new_zeros(b, h, dk, v.shape[-1], dtype=v.dtype)
    )
    outs = []
    for i in range(t):
        if log_alpha is not None:
            m = m * log_alpha[..., i, None, None].exp()
        k_i = k[:, :, i]  # (B, H, d_k)
        error = v[:, :, i] - (k_i[..., None, :] @ m).squeeze(-2)  # v_t − S k_t  (B, H, d_v)
        m = m + beta[..., i, None, None] * k_i[..., :, None] * error[..., None, :]
        outs.append((q[:, :, i, None, :] @ m).squeeze(-2))  # o_t = S_t q_t
    out = torch.stack(outs, dim=2) if outs else v.new_zeros(b, h, 0, v.shape[-1])
    return out, m


def chunk_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_alpha: Tensor | None = None,
    initial_state: Tensor | None = None,
    chunk_size: int = 64,  # the released kernels' chunk size
) -> tuple[Tensor, Tensor]:
    """:func:`recurrent_delta_rule`, computed chunk by chunk (see the module docstring).

    Same arguments and results; ``chunk_size`` positions per chunk (any value ≥ 1: the
    length is padded to a multiple of it with β = 0, log α = 0, which change nothing).
    """
    b, h, t, dk = k.shape
    dv = v.shape[-1]
    m = initial_state if initial_state is not None else k.new_zeros(b, h, dk, dv, dtype=v.dtype)
    if t == 0:
        return v.new_zeros(b, h, 0, dv), m
    c = max(1, min(chunk_size, t))
    n = -(-t // c)
    extra = n * c - t
    if extra:  # β = 0 (and log α = 0) at the padding: the state passes through unchanged
        q, k, v = (F.pad(x, (0, 0, 0, extra)) for x in (q, k, v))
        beta = F.pad(beta, (0, extra))
        log_alpha = None if log_alpha is None else F.pad(log_alpha, (0, extra))
    q, k, v = (x.reshape(b, h, n, c, x.shape[-1]) for x in (q, k, v))  # (B, H, N, c, ·)
    beta = beta.reshape(b, h, n, c)

    # solve_triangular reads only the strict lower triangle of A (lower, unit diagonal), and
    # its gradient is zero elsewhere, so A needs no mask; Q Kᵀ does (diagonal included).
    causal = torch.ones(c, c, dtype=torch.bool, device=k.device).tril()  # i ≤ r
    kt = k.transpose(-2, -1)
    scores = q @ kt  # q_rᵀ k_i  (B, H, N, c, c)
    gram = k @ kt  # k_rᵀ k_i
    if log_alpha is None:
        a = beta[..., :, None] * gram  # A_ri = β_r k_rᵀ k_i (i < r)
        k_beta = beta[..., None] * k  # diag(β) K
        q_decayed, k_to_end, chunk_decay = q, k, None
        scores = scores * causal.to(scores.dtype)
    else:
        g = log_alpha.reshape(b, h, n, c).cumsum(-1)  # G_r, within each chunk
        # Γ_ri = exp(G_r − G_i) for i ≤ r (≤ 1), 0 above the diagonal (masked before exp)
        ratio = (g[..., :, None] - g[..., None, :]).masked_fill(~causal, -torch.inf).exp()
        a = beta[..., :, None] * gram * ratio  # A_ri = β_r exp(G_r − G_i) k_rᵀ k_i (i < r)
        gamma = g.exp()  # γ_r (B, H, N, c)
        k_beta = (beta * gamma)[..., None] * k  # diag(β γ) K
        q_decayed = q * gamma[..., None]  # diag(γ) Q
        k_to_end = k * (g[..., -1:] - g).exp()[..., None]  # diag(exp(G_c − G)) K
        chunk_decay = gamma[..., -1, None, None]  # γ_c (B, H, N, 1, 1)
        scores = scores * ratio
    # T = (I + A)⁻¹ applied to [diag(β) V, diag(β γ) K]: one unit-lower-triangular solve
    rhs = torch.cat([beta[..., None] * v, k_beta], dim=-1)
    solved = torch.linalg.solve_triangular(a, rhs, upper=False, unitriangular=True)
    u_tilde, w = solved[..., :dv], solved[..., dv:]  # Ũ (.., c, d_v), W (.., c, d_k)

    # across chunks, in order: U_n = Ũ_n − W_n M_n;  M_{n+1} = γ_c M_n + K̃_nᵀ U_n
    # (unbind, not indexing: one backward op instead of a zero-filled gradient per chunk)
    decays = [None] * n if chunk_decay is None else chunk_decay.unbind(2)
    starts, pseudo = [], []
    for u_n, w_n, k_n, decay in zip(
        u_tilde.unbind(2), w.unbind(2), k_to_end.transpose(-2, -1).unbind(2), decays, strict=True
    ):
        starts.append(m)
        u = u_n - w_n @ m
        pseudo.append(u)
        m = (m if decay is None else m * decay) + k_n @ u
    m0, u_all = torch.stack(starts, dim=2), torch.stack(pseudo, dim=2)
    out = q_decayed @ m0 + scores @ u_all  # (B, H, N, c, d_v)
    return out.reshape(b, h, n * c, dv)[:, :, :t], m


# ---------------------------------------------------------------------------------------
# The short causal convolution
# ---------------------------------------------------------------------------------------
class _DepthwiseCausalConv(torch.autograd.Function):
    """y[b, c, t] = Σ_j w[c, j] · x[b, c, t + j] for x already left-padded by K − 1.

    The same as ``F.conv1d(x, w[:, None], groups=C)``, written as K shifted multiply-adds
    with a hand-written backward (K more each way): about twice as fast as the generic
    depthwise convolution's backward on CPU at the sizes used here.
    """

    @staticmethod
    def forward(ctx, full: Tensor, weight: Tensor) -> Tensor:  # (B, C, K − 1 + T), (C, K)
        k = weight.shape[-1]
        t = full.shape[-1] - k + 1
        y = full[..., :t] * weight[:, 0, None]
        for j in range(1, k):
            y.addcmul_(full[..., j : j + t], weight[:, j, None])
        ctx.save_for_backward(full, weight)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        full, weight = ctx.saved_tensors
        k, t = weight.shape[-1], grad.shape[-1]
        grad_full = torch.zeros_like(full)
        for j in range(k):
            grad_full[..., j : j + t].addcmul_(grad, weight[:, j, None])
        grad_weight = torch.stack(
            [(grad * full[..., j : j + t]).sum(dim=(0, 2)) for j in range(k)], dim=-1
        )
        return grad_full, grad_weight


def short_causal_conv(
    x: Tensor, weight: Tensor, cache: Tensor | None = None, ends: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Depthwise causal convolution along time: y_t = Σ_{j<K} w_j ⊙ x_{t−K+1+j}.

    Channels first: x (B, C, T); weight (C, K); cache: the K − 1 inputs before x
    (B, C, K − 1), zeros if None. ``ends``: (B,) per row, one past the last position whose
    input the next segment should see (default T). Returns y (B, C, T) and the next
    segment's cache (B, C, K − 1). Computed in float32 at least.
    """
    b, ch, t = x.shape
    width = weight.shape[-1] - 1
    x = x.to(torch.promote_types(x.dtype, weight.dtype))
    # (B, C, K − 1 + T): the inputs before x, then x
    full = F.pad(x, (width, 0)) if cache is None else torch.cat([cache.to(x.dtype), x], dim=-1)
    y = _DepthwiseCausalConv.apply(full, weight.to(x.dtype))
    if ends is None:
        new_cache = full[..., t:]
    else:  # columns ends, …, ends + K − 2 of full are x's ends − K + 1, …, ends − 1
        index = ends[:, None] + torch.arange(width, device=x.device)[None, :]
        new_cache = full.gather(-1, index[:, None, :].expand(b, ch, width))
    return y, new_cache


def l2_normalize(x: Tensor, dim: int, eps: float = L2_EPS) -> Tensor:
    """x / ‖x‖ along ``dim``, as x · (Σ x² + ε)^(−1/2) (0 for x = 0, finite gradient)."""
    return x * torch.rsqrt(x.square().sum(dim, keepdim=True) + eps)


class DeltaState(NamedTuple):
    """A layer's state between segments."""

    memory: Tensor  # M = Sᵀ: (B, H, d_k, d_v)
    conv: Tensor | None  # the short convolution's last K − 1 inputs (B, 3·H·d_h, K − 1)


# ---------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------
@dataclass
class DeltaNetOptions:
    chunk_size: int = 16  # positions per chunk of the chunkwise form (exact for any value)
    mode: str = "chunk"  # "chunk" (WY / UT transform) | "recurrent" (the loop; reference)
    short_conv: bool = True  # causal depthwise convolution on q, k, v (the paper's default)
    conv_size: int = 4  # its kernel size
    output_gate: bool = False  # RMSNorm(o) ⊙ SiLU(x W_g) instead of RMSNorm(o)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
        if self.mode not in ("chunk", "recurrent"):
            raise ValueError(f"mode must be 'chunk' or 'recurrent', got {self.mode!r}")
        if self.conv_size < 1:
            raise ValueError(f"conv_size must be positive, got {self.conv_size}")


@register_variant(
    "deltanet",
    paper=(
        'Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over '
        'Sequence Length"'
    ),
    summary="linear attention with a delta-rule state update, chunkwise via the WY form",
)
class DeltaNet(MultiHeadAttention):
    """S_t = S_{t−1}(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ, o_t = S_t q_t; chunkwise (WY form)."""

    Options = DeltaNetOptions
    capabilities = Capabilities(
        causal=True,
        bidirectional=False,  # a left-to-right recurrence: encoder tasks are n/a
        cross_attention=False,
        padding_mask=True,
        positions="own",  # the recurrence is order-aware; the papers' models add no positions
        # it replaces the absolute schemes, and needs nothing under NoPE
        position_schemes=frozenset({"learned", "sinusoidal", "none"}),
        recurrent=True,
        variable_length=True,
        time_complexity="O(n·c·d + n·d²)",
        memory_complexity="O(n·c + n·d²/c)",
    )

    @classmethod
    def state_size(cls, options: DeltaNetOptions, dims: AttentionDims) -> int:
        """S per head (H · d_k · d_v), plus the short convolution's memory: its last K − 1
        inputs of q, k and v (3 · H · d_h each), which the next segment needs too."""
        inner = dims.n_heads * dims.head_dim
        conv = 3 * inner * (options.conv_size - 1) if options.short_conv else 0
        return inner * dims.head_dim + conv

    def __init__(self, dims: AttentionDims, options: DeltaNetOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: DeltaNetOptions
        h, dh = dims.n_heads, dims.head_dim
        inner = h * dh
        self.b_proj = nn.Linear(dims.d_model, h)  # β_t = σ(x_t W_β + b_β)
        # depthwise kernels over the 3·inner channels of q, k, v (PyTorch's Conv1d init)
        self.conv_weight: nn.Parameter | None = None
        if self.options.short_conv:
            bound = self.options.conv_size**-0.5
            weight = torch.empty(3 * inner, self.options.conv_size).uniform_(-bound, bound)
            self.conv_weight = nn.Parameter(weight)
        self.norm_weight = nn.Parameter(torch.ones(dh))  # output RMSNorm, shared by heads
        self.g_proj = nn.Linear(dims.d_model, inner) if self.options.output_gate else None

    # -- hooks for the gated variant ----------------------------------------------------
    def input_maps(self) -> list[tuple[Tensor, Tensor]]:
        """(weight, bias) of the maps of x computed in one product: q, k, v, β, the output
        gate's W_g (if any), then those :meth:`log_decay` reads."""
        layers = [self.q_proj, self.k_proj, self.v_proj, self.b_proj]
        if self.g_proj is not None:
            layers.append(self.g_proj)
        return [(layer.weight, layer.bias) for layer in layers]

    def log_decay(self, maps: list[Tensor]) -> Tensor | None:
        """log α_t per head (B, T, H) from the last maps of :meth:`input_maps`, or None for
        no decay (DeltaNet)."""
        return None

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        if source is not None:
            raise ValueError(f"{type(self).__name__} is self-attention only (no cross-attention)")
        if ctx.mask.memory_len:
            raise ValueError(f"{type(self).__name__} carries its past in ctx.state, not as keys")
        b, t, _ = x.shape
        h, dh = self.dims.n_heads, self.dims.head_dim
        inner = h * dh
        real = ctx.mask.key_padding  # (B, T) True = real token
        if real is not None:
            real = real.to(device=x.device, dtype=torch.bool)
        state: DeltaState | None = ctx.state

        # every map of x in one product: q, k, v | β logits | gate | decay logits
        maps = self.input_maps()
        weight = torch.cat([w for w, _ in maps])
        bias = torch.cat([bias for _, bias in maps])
        sizes = [3 * inner] + [w.shape[0] for w, _ in maps[3:]]
        qkv, beta, *rest = F.linear(x, weight, bias).split(sizes, dim=-1)
        gate = rest.pop(0) if self.g_proj is not None else None

        qkv = qkv.transpose(1, 2)  # (B, 3·inner, T): channels first for the convolution
        if real is not None:  # padded positions add nothing to the convolution
            qkv = qkv * real[:, None, :].to(qkv.dtype)
        conv_cache = None
        if self.conv_weight is not None:
            ends = None
            if real is not None:  # one past each row's last real position (0: none)
                ends = (torch.arange(1, t + 1, device=x.device) * real).amax(dim=1)
            qkv, conv_cache = short_causal_conv(
                qkv, self.conv_weight, None if state is None else state.conv, ends
            )
        work = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            qkv = F.silu(qkv.to(work)).view(b, 3, h, dh, t)
            # L2 normalisation of q and k over d_h (dim −2 while channels first)
            q, k = l2_normalize(qkv[:, :2], dim=-2).transpose(-2, -1).unbind(1)  # (B,H,T,d)
            v = qkv[:, 2].transpose(-2, -1)
            beta = torch.sigmoid(beta.to(work))  # β_t = σ(x_t W_β + b_β)  (B, T, H)
            log_alpha = self.log_decay(rest)  # (B, T, H) | None
            if real is not None:  # β = 0, α = 1 at padding: the state passes unchanged
                beta = beta * real[..., None].to(work)
                if log_alpha is not None:
                    log_alpha = log_alpha * real[..., None].to(work)
            args = (
                q,
                k,
                v,
                beta.transpose(1, 2),
                None if log_alpha is None else log_alpha.to(work).transpose(1, 2),
                None if state is None else state.memory.to(work),
            )
            if self.options.mode == "recurrent":
                out, memory = recurrent_delta_rule(*args)
            else:
                out, memory = chunk_delta_rule(*args, chunk_size=self.options.chunk_size)
            out = F.rms_norm(out, (dh,), self.norm_weight.to(work), eps=NORM_EPS)  # (B,H,T,d)
            if gate is not None:  # RMSNorm(o) ⊙ SiLU(x W_g)
                out = out * F.silu(gate.to(work)).view(b, t, h, dh).transpose(1, 2)
        new_state = DeltaState(memory.detach(), None if conv_cache is None else conv_cache.detach())
        out = self.project_out(out.to(x.dtype), ctx.head_mask)
        return AttentionOutput(out=out, state=new_state)
