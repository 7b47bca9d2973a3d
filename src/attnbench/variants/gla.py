"""Gated linear attention (GLA): linear attention with a data-dependent diagonal forget gate.

Yang, Wang, Shen, Panda & Kim 2024, "Gated Linear Attention Transformers with
Hardware-Efficient Training" (ICML 2024).

Per head, with a matrix-valued state S_t ∈ R^{d_k × d_v} (row vectors q_t, k_t ∈ R^{d_k},
v_t ∈ R^{d_v}):

    S_t = Diag(α_t) S_{t−1} + k_tᵀ v_t,        o_t = q_t S_t                       (1)

    α_t = σ(x_t W_α1 W_α2 + b_α)^{1/τ} ∈ (0, 1)^{d_k},   W_α1: d × 16,  W_α2: 16 × H·d_k

a low-rank, data-dependent gate with temperature τ = 16 (the paper's choice: it keeps α
close to 1, a slow forgetting rate). The gate is carried as log α_t = log σ(·) / τ ≤ 0.
Unrolled, (1) is a causally masked, decay-weighted linear attention

    o_t = Σ_{s ≤ t} (q_t ⊙ exp(b_t − b_s)) k_sᵀ v_s,        b_t = Σ_{r ≤ t} log α_r     (2)

**Chunkwise form** (paper §4.2, one level of chunking). The sequence is cut into chunks
of c positions (the last one zero-padded: a padded step has k = 0 and log α = 0, so it
changes nothing). With b the cumulative log gate *inside* the chunk, S the state at the
chunk's start and C its last position:

    O     = (Q ⊙ exp(b)) S  +  P V,    P_ts = Σ_d Q_td K_sd exp(b_td − b_sd)  (s ≤ t)
    S'    = Diag(exp(b_C)) S + (K ⊙ exp(b_C − b))ᵀ V

The inter-chunk factors exp(b) and exp(b_C − b) are decays (exponents ≤ 0), never their
inverses, so they cannot overflow. The within-chunk term P is where the paper (§4.1–4.2)
warns that the factored product (Q ⊙ exp(b))(K ⊙ exp(−b))ᵀ is unstable: exp(−b) grows
without bound as the gates close. P is therefore computed in one of two exact ways:

* in log space, from the pairwise differences b_t − b_s ≤ 0 (the paper's Eq. for P,
  which its secondary-level chunking applies to the diagonal sub-blocks; here at the
  chunk level, without secondary chunks): a (c × c × d_k) tensor per chunk;
* as the factored product, one matmul, when every |b| in the batch is at most
  ``FACTORED_MAX_LOG_DECAY`` = 30 nats: every factor then lies in [e^-30, e^30], far
  inside float32's range, and each term q_td k_sd e^{b_td − b_sd} is rounded as in the
  log-space form (products keep relative precision). With τ = 16 a chunk of 16 only
  decays that much when its gate logits average about −30, so this is the usual case;
  it is chosen per call (one reduction; a host sync on a GPU) and is 2–3× faster on CPU.

The states of the chunks follow by the recurrence over chunks (N = ⌈n/c⌉ steps of a
d_k × d_v update); with c ≥ n there is one chunk and the computation is the parallel
(quadratic) form (2). :func:`gla_recurrent` is (1) step by step, the definition.

**Layer** (paper §4.4), per head h with d_k = ``expand_k`` · head_dim (the paper: d_k =
d/2, d_v = d, so that q, k, v, the output gate and W_O hold 4d² weights like softmax
attention) and d_v = head_dim:

    q = x W_Q / √d_k,  k = x W_K,  v = x W_V,  α as above
    r = Swish(x W_r + b_r)                           (output gate)
    y = Σ_h ξ_h · (LayerNorm(o^h) ⊙ r^h) W_O^h       (per-head normalisation, head mask ξ)

Included: the low-rank data-dependent gate with τ = 16, the Swish output gate and the
per-head LayerNorm (over each head's d_v features, one affine shared by the heads, as in
the reference implementation fla-org/flash-linear-attention); the 1/√d_k query scale
of that implementation. ``output_gate`` and ``normalize`` switch the last two off (for
ablations and the tests; with both off and α ≡ 1 the layer is unnormalised linear
attention with the identity feature map).

Left out, and why:

* The GLA Transformer *block* around the layer (SwiGLU feed-forward, RMSNorm, no position
  embeddings): the benchmark's shared blocks are the same for every variant, so only the
  token mixer differs. Position embeddings are added as for every variant.
* Secondary-level chunking and the hardware-specific kernels (§4.3, materialisation
  choices): they change speed and stability on GPUs (half-precision tensor cores), not
  the function computed; here everything runs in float32 or wider.
* Bias-free projections: the projections keep biases, like every other variant's here
  (W_O's bias is also what the head mask drops when every head is off).
* Bidirectional use: GLA is causal by construction (a recurrence), so its capabilities
  declare ``bidirectional=False`` and a task whose model has an encoder (classification,
  translation) gets ``n/a`` with that reason. Cross-attention is not supported (the gate
  and state are those of one sequence read in order).
* Attention weights: the implied matrix of (2) is signed and unnormalised, not a
  distribution, so ``need_weights`` returns none.

Padding: a padded position has k = 0 and α = 1 (log α = 0), so it neither writes to the
state nor decays it; a padded row equals the same sequence alone. Recurrence across
segments: ``ctx.state`` (B, H, d_k, d_v) is the initial state; the final state (after
the last real token of each row, detached as a segment memory is) is returned in
``AttentionOutput.state``. The computation runs in float32 or wider (also under autocast).
Attention dropout does not apply: there is no attention matrix to drop from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.attention import (
    Attention,
    AttentionContext,
    AttentionDims,
    AttentionOutput,
    Capabilities,
    project_heads,
    register_variant,
)


@dataclass
class GLAOptions:
    chunk_size: int = 16  # positions per chunk of the chunkwise form (exact for any value)
    expand_k: float = 0.5  # d_k = expand_k · head_dim per head (paper: d_k = d/2, d_v = d)
    gate_rank: int = 16  # rank of the gate projection W_α1 W_α2
    gate_temperature: float = 16.0  # τ in α = σ(·)^{1/τ}
    output_gate: bool = True  # r = Swish(x W_r + b_r) multiplies the normalised output
    normalize: bool = True  # per-head LayerNorm of the GLA output

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
        if not self.expand_k > 0:
            raise ValueError(f"expand_k must be positive, got {self.expand_k}")
        if self.gate_rank < 1:
            raise ValueError(f"gate_rank must be positive, got {self.gate_rank}")
        if not self.gate_temperature > 0:
            raise ValueError(f"gate_temperature must be positive, got {self.gate_temperature}")


# Largest |b_t| (nats of decay inside one chunk) for which the within-chunk term is formed
# as the product of (q ⊙ exp(b)) and (k ⊙ exp(−b)): e^30 ≈ 1e13 is far from float32's range.
FACTORED_MAX_LOG_DECAY = 30.0


def key_dim(options: GLAOptions, head_dim: int) -> int:
    """d_k per head: ``expand_k`` · head_dim, at least 1."""
    return max(1, round(options.expand_k * head_dim))


def gla_recurrent(
    q: Tensor, k: Tensor, v: Tensor, log_alpha: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Equation (1) step by step: S_t = Diag(α_t) S_{t−1} + k_tᵀ v_t, o_t = q_t S_t.

    q, k, log_alpha: (B, H, T, d_k); v: (B, H, T, d_v); state: (B, H, d_k, d_v) or None
    (zeros). Returns o (B, H, T, d_v) and S_T.
    """
    b, h, t, dk = q.shape
    s = q.new_zeros(b, h, dk, v.shape[-1]) if state is None else state
    outs = []
    for i in range(t):
        s = log_alpha[:, :, i, :, None].exp() * s + k[:, :, i, :, None] * v[:, :, i, None, :]
        outs.append((q[:, :, i, None, :] @ s).squeeze(-2))
    out = torch.stack(outs, dim=2) if outs else v.new_zeros(b, h, 0, v.shape[-1])
    return out, s


def gla_chunkwise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_alpha: Tensor,
    chunk_size: int,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Equation (1) in chunks of ``chunk_size`` positions (the module docstring's form).

    The same arguments and results as :func:`gla_recurrent`, for any chunk size.
    """
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    c = max(1, min(chunk_size, t))
    n_chunks = -(-t // c)
    total = n_chunks * c

    def chunks(x: Tensor) -> Tensor:  # (B, H, T, e) → (B, H, N, c, e), zero-padded
        x = F.pad(x, (0, 0, 0, total - t))  # k = 0, log α = 0: a padded step changes nothing
        return x.view(b, h, n_chunks, c, x.shape[-1])

    q_c, k_c, v_c = chunks(q), chunks(k), chunks(v)
    g = chunks(log_alpha).cumsum(dim=-2)  # b_t inside each chunk, (B, H, N, c, d_k), ≤ 0
    g_last = g[..., -1:, :]  # b_C, (B, H, N, 1, d_k)
    q_in = q_c * g.exp()  # q_t ⊙ exp(b_t): decay from the chunk's start to t

    # within a chunk: P_ts = Σ_d q_td k_sd exp(b_td − b_sd) for s ≤ t
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    if bool(g.detach().abs().amax() <= FACTORED_MAX_LOG_DECAY):
        # (q_t ⊙ exp(b_t)) · (k_s ⊙ exp(−b_s)): every factor within e^{±30}, so each term
        # has the rounding of the log-space form, and the product is one matmul
        scores = (q_in @ (k_c * (-g).exp()).transpose(-2, -1)).masked_fill(~causal, 0.0)
    else:  # in log space: exp(b_t − b_s) ≤ 1 for s ≤ t, from the pairwise differences
        log_decay = (g[..., :, None, :] - g[..., None, :, :]).masked_fill(
            ~causal[:, :, None], float("-inf")
        )  # (B, H, N, c, c, d_k)
        scores = ((q_c[..., :, None, :] * log_decay.exp()) * k_c[..., None, :, :]).sum(-1)
    out = scores @ v_c  # (B, H, N, c, d_v)

    # across chunks: the state entering each chunk
    k_out = k_c * (g_last - g).exp()  # k_s ⊙ exp(b_C − b_s): decay from s to the chunk's end
    writes = k_out.transpose(-2, -1) @ v_c  # (B, H, N, d_k, d_v)
    decays = g_last.squeeze(-2).exp()[..., None]  # Diag(exp(b_C)), (B, H, N, d_k, 1)
    s = q.new_zeros(b, h, dk, dv) if state is None else state
    inter = []
    for i in range(n_chunks):
        inter.append(q_in[:, :, i] @ s)
        s = decays[:, :, i] * s + writes[:, :, i]
    out = out + torch.stack(inter, dim=2)
    return out.reshape(b, h, total, dv)[:, :, :t], s


@register_variant(
    "gla",
    paper=(
        'Yang, Wang, Shen, Panda & Kim 2024, "Gated Linear Attention Transformers with '
        'Hardware-Efficient Training"'
    ),
    summary="linear attention with a data-dependent diagonal forget gate; chunkwise, causal",
)
class GatedLinearAttention(Attention):
    """Gated linear attention: S_t = Diag(α_t) S_{t−1} + k_tᵀv_t, o_t = q_t S_t, chunkwise."""

    Options = GLAOptions
    capabilities = Capabilities(
        causal=True,
        bidirectional=False,
        cross_attention=False,
        padding_mask=True,
        recurrent=True,
        variable_length=True,
        time_complexity="O(n·c·(d_k + d_v) + n·d_k·d_v)",
        memory_complexity="O(n·c·d_k + (n/c)·d_k·d_v)",
    )
    # W_α1, W_α2 (the low-rank gate) are ordinary weight matrices and are decayed like
    # any projection (toward α = σ(b_α)^{1/τ}); the remaining parameters are biases and
    # the LayerNorm affine, never decayed. Nothing structural to exempt.
    decay_exempt = ()

    @classmethod
    def state_size(cls, options: GLAOptions, dims: AttentionDims) -> int:
        """Per head the d_k × d_v state S (no normaliser z: GLA has none)."""
        return dims.n_heads * key_dim(options, dims.head_dim) * dims.head_dim

    def __init__(self, dims: AttentionDims, options: GLAOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: GLAOptions
        o = self.options
        h, dv = dims.n_heads, dims.head_dim
        self.d_k = key_dim(o, dv)
        self.q_proj = nn.Linear(dims.d_model, h * self.d_k)  # W_Q
        self.k_proj = nn.Linear(dims.d_model, h * self.d_k)  # W_K
        self.v_proj = nn.Linear(dims.d_model, h * dv)  # W_V
        self.gate_down = nn.Linear(dims.d_model, o.gate_rank, bias=False)  # W_α1
        self.gate_up = nn.Linear(o.gate_rank, h * self.d_k)  # W_α2, b_α
        self.r_proj = nn.Linear(dims.d_model, h * dv) if o.output_gate else None  # W_r, b_r
        self.norm = nn.LayerNorm(dv) if o.normalize else None
        self.out_proj = nn.Linear(h * dv, dims.d_model)  # W_O

    def split_heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.dims.n_heads, -1).transpose(1, 2)  # (B, H, n, e)

    def log_gate(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """log α_t = log σ(x_t W_α1 W_α2 + b_α) / τ, (B, H, T, d_k), ≤ 0.

        The logits are converted to ``dtype`` (default: theirs) before the log-sigmoid.
        """
        logits = self.split_heads(self.gate_up(self.gate_down(x)))
        logits = logits if dtype is None else logits.to(dtype)
        return F.logsigmoid(logits) / self.options.gate_temperature

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        if source is not None:
            raise ValueError("gla does not support cross-attention (capabilities say so)")
        dtype = x.dtype
        work = torch.promote_types(dtype, torch.float32)
        q = self.split_heads(self.q_proj(x)).to(work) / math.sqrt(self.d_k)
        k = self.split_heads(self.k_proj(x)).to(work)
        v = self.split_heads(self.v_proj(x)).to(work)
        r = None if self.r_proj is None else F.silu(self.split_heads(self.r_proj(x)).to(work))
        log_alpha = self.log_gate(x, work)
        with torch.autocast(device_type=x.device.type, enabled=False):
            pad = ctx.mask.key_padding
            if pad is not None:  # a padded step neither writes (k = 0) nor forgets (α = 1)
                keep = pad[:, None, :, None].to(x.device)
                k = k.masked_fill(~keep, 0.0)
                log_alpha = log_alpha.masked_fill(~keep, 0.0)
            state = None if ctx.state is None else ctx.state.to(work)
            out, final = gla_chunkwise(q, k, v, log_alpha, self.options.chunk_size, state)
            if self.norm is not None:
                out = self.norm(out)
            if r is not None:
                out = out * r
        return AttentionOutput(
            out=project_heads(out.to(dtype), self.out_proj, ctx.head_mask),
            state=final.detach(),
        )
