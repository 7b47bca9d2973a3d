"""Performer: softmax attention approximated with positive orthogonal random features (FAVOR+).

Choromanski, Likhosherstov, Dohan, Song, Gane, Sarlos, Hawkins, Davis, Mohiuddin,
Kaiser, Belanger, Colwell and Weller, "Rethinking Attention with Performers", ICLR 2021.

The softmax kernel exp(qᵀk/√d) is the expectation of a product of positive random
features. With the data scaled by d^{-1/4} (x̂ = x/d^{1/4}) and w_1, …, w_m drawn
as below,

    φ(x) = exp(W x̂ − ‖x̂‖²/2) / √m ∈ R^m_+,      E[φ(q)ᵀφ(k)] = exp(qᵀk/√d),

so the attention matrix is replaced by a low-rank one and the products are
re-associated; the (T × S) matrix never exists:

    non-causal:  V' = D⁻¹ (φ(Q) (φ(K)ᵀ V)),      D = diag(φ(Q) (φ(K)ᵀ 1_S))
    causal:      V'_i = φ(Q_i)ᵀ Σ_{j≤i} φ(K_j) V_jᵀ / φ(Q_i)ᵀ Σ_{j≤i} φ(K_j)   (prefix sums)

Orthogonal random features (the "O" of FAVOR+): the rows of W come in blocks of d
that are exactly orthogonal — each block is Qᵀ from the QR decomposition of a d × d
Gaussian matrix (the last block keeps only the rows it needs) — and row r is
rescaled to the norm of an independent Gaussian d-vector, i.e. a χ(d) length, so
each w_r is still marginally N(0, I_d) (the official code's ``scaling=0``). The
columns of Q are sign-corrected with diag(R) so that Q is Haar-distributed; without
that, LAPACK's sign convention would bias the directions. W is shared by the heads
of a layer (as in the official code) and kept in a buffer, so it is saved with the
model. ``redraw_every`` > 0 draws a fresh W every
that many training forward calls (the paper finds periodic redrawing helps
training; the official code redraws at every call); 0 keeps the first draw.

Numerical stabiliser. As in the official FAVOR+ code (google-research,
performer/fast_attention/jax/fast_attention.py,
``nonnegative_softmax_kernel_feature_creator``), the exponent of the query features
is shifted by its maximum over the m features of that query (one shift per row) and
the exponent of the key features by one maximum over all keys and features; each
shift multiplies the numerator and the denominator of D⁻¹ alike, so it cancels.
Differences from that code, each keeping the result exactly the estimator above:
(i) the shift is the maximum of the whole exponent Wx̂ − ‖x̂‖²/2 (the official code
takes the maximum of Wx̂ only), so the largest feature is exactly 1 and a long
vector cannot underflow a whole row; (ii) no ε is added to the features, since it
would not cancel and would make the outputs depend on the shift; (iii) the key
maximum runs over real keys only (padded keys are zeroed, φ(K) = 0, and leave every
sum), and (iv) in the causal form a global maximum would let a future key change the
past (it can underflow every earlier feature), so the shift there is the running
maximum M_i over the keys query i can see, applied chunk-wise: inside a chunk of c
queries the (c × c) kernel block is built with the relative factors exp(M_j − M_i)
≤ 1, and the prefix state entering a chunk is carried across chunks rescaled by
exp(M_prev − M_next) ≤ 1. The result is exact — the same as a quadratic computation
of the same random-feature kernel under a causal mask — and leak-free.

With ``memory_len`` the first ``memory_len`` keys are visible to every query and
form the initial state. A query that sees no key gets zeros. Everything is computed
in float32 (also under autocast). Attention dropout does not apply: there is no
attention matrix to drop from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    Capabilities,
    MultiHeadAttention,
    register_preset,
    register_variant,
)

_FLOOR = -1e30  # stands in for "no key seen yet" in the running maximum (exp(·) → 0)


def gaussian_orthogonal_features(m: int, d: int) -> Tensor:
    """(m, d) random features: orthogonal d-row blocks, rows with χ(d)-distributed norms.

    Uses the global torch RNG (CPU), so a seeded run draws the same features.
    """
    n_blocks = -(-m // d)
    gauss = torch.randn(n_blocks, d, d)
    q, r = torch.linalg.qr(gauss)  # (N, d, d) orthonormal columns
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # Haar: fix signs
    directions = q.transpose(-2, -1).reshape(n_blocks * d, d)[:m]  # orthonormal rows per block
    lengths = torch.randn(m, d).norm(dim=-1)  # χ(d), as the norm of a Gaussian row
    return directions * lengths[:, None]  # (m, d)


def log_features(x: Tensor, w: Tensor) -> Tensor:
    """log(√m · φ(x)) = W x̂ − ‖x̂‖²/2 with x̂ = x / d^{1/4}.   x: (…, n, d) → (…, n, m)."""
    x = x * x.shape[-1] ** -0.25
    return x @ w.transpose(0, 1) - 0.5 * (x * x).sum(dim=-1, keepdim=True)


def _safe_divide(num: Tensor, den: Tensor) -> Tensor:
    """num / den, with 0 where den = 0 (a query that sees no key; num is 0 there too)."""
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


@dataclass
class PerformerOptions:
    n_features: int = 64  # m per head; ≈ d·ln d for head_dim 16 (LRA used 256: performer-256)
    redraw_every: int = 1000  # draw new features every N training forward calls; 0 = never
    chunk_size: int = 64  # queries per chunk in the causal form (exact for any value)

    def __post_init__(self) -> None:
        if self.n_features < 1:
            raise ValueError(f"n_features must be positive, got {self.n_features}")
        if self.redraw_every < 0:
            raise ValueError(f"redraw_every must be >= 0, got {self.redraw_every}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")


@register_variant(
    "performer",
    paper='Choromanski et al. 2021, "Rethinking Attention with Performers"',
    summary="FAVOR+: D⁻¹φ(Q)(φ(K)ᵀV), positive orthogonal random features",
)
class Performer(MultiHeadAttention):
    """Softmax attention approximated by m positive orthogonal random features."""

    Options = PerformerOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        time_complexity="O(n·m·d)",
        memory_complexity="O(n·m + n·c + n·m·d/c)",
    )

    @classmethod
    def state_size(cls, options: PerformerOptions, dims: AttentionDims) -> int:
        """Per head, the running Σ φ(k)vᵀ (m × d_v) and Σ φ(k) (m), m random features."""
        m = options.n_features
        return dims.n_heads * (m * dims.head_dim + m)

    def __init__(self, dims: AttentionDims, options: PerformerOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: PerformerOptions
        w = gaussian_orthogonal_features(self.options.n_features, dims.head_dim)
        self.register_buffer("features", w)  # (m, dh), saved with the model
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))  # training calls

    @torch.no_grad()
    def redraw_features(self) -> None:
        w = gaussian_orthogonal_features(self.options.n_features, self.dims.head_dim)
        self.features.copy_(w.to(self.features))

    def _maybe_redraw(self) -> None:
        every = self.options.redraw_every
        if every and int(self.calls) > 0 and int(self.calls) % every == 0:
            self.redraw_features()
        self.calls += 1

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        if self.training:
            self._maybe_redraw()
        dtype = q.dtype
        work = torch.promote_types(dtype, torch.float32)
        with torch.autocast(device_type=q.device.type, enabled=False):
            w = self.features.to(work)
            lq = log_features(q.to(work), w)  # (B, H, T, m)
            lk = log_features(k.to(work), w)  # (B, H, S, m)
            v = v.to(work)
            pad = ctx.mask.key_padding
            if pad is not None:  # padded keys: φ(K) = 0, they leave every sum
                lk = lk.masked_fill(~pad[:, None, :, None].to(lk.device), float("-inf"))
            # per-query shift: cancels in D⁻¹ row by row; the 1/√m cancels too but is kept
            shift_q = lq.detach().amax(dim=-1, keepdim=True)  # shifts are constants: detached
            phi_q = torch.exp(lq - shift_q) / math.sqrt(lq.shape[-1])  # (B, H, T, m)
            if ctx.mask.causal:
                out = self._causal(phi_q, lk, v, ctx.mask.memory_len)
            else:
                top = lk.detach().amax(dim=(-2, -1), keepdim=True).clamp_min(_FLOOR)  # real keys
                phi_k = torch.exp(lk - top) / math.sqrt(lk.shape[-1])  # (B, H, S, m)
                kv = phi_k.transpose(-2, -1) @ v  # φ(K)ᵀV  (B, H, m, dv)
                z = phi_k.sum(dim=-2)  # φ(K)ᵀ1  (B, H, m)
                out = _safe_divide(phi_q @ kv, phi_q @ z[..., None])  # (B, H, T, dv)
            weights = self._dense_weights(phi_q, lk, ctx) if ctx.need_weights else None
        return out.to(dtype), None if weights is None else weights.to(dtype)

    def _causal(self, phi_q: Tensor, lk: Tensor, v: Tensor, memory_len: int) -> Tensor:
        """Exact causal FAVOR+ by chunked prefix sums with a running-maximum shift.

        Query i sees keys 0 … memory_len + i. The key features are exp(lk_j − M_j)
        with M_j the running maximum of the exponents up to key j; products with
        query i are rescaled by exp(M_j − M_i) ≤ 1, so nothing overflows and no shift
        depends on a key that query i cannot see.
        """
        b, h, t, m = phi_q.shape
        dv = v.shape[-1]
        root_m = math.sqrt(m)
        # keys before the segment (memory): visible to all, the initial state
        lk_mem, v_mem = lk[..., :memory_len, :], v[..., :memory_len, :]
        p0 = lk.new_full((b, h), _FLOOR)  # (B, H)
        if memory_len:
            p0 = lk_mem.detach().amax(dim=(-2, -1)).clamp_min(_FLOOR)
        phi_mem = torch.exp(lk_mem - p0[..., None, None]) / root_m
        state = phi_mem.transpose(-2, -1) @ v_mem  # (B, H, m, dv), relative to exp(p0)
        norm = phi_mem.sum(dim=-2)  # (B, H, m)
        # the rest are aligned with the queries: key memory_len + i ↔ query i
        lk, v = lk[..., memory_len : memory_len + t, :], v[..., memory_len : memory_len + t, :]
        missing = t - lk.shape[-2]  # fewer keys than queries: the last queries see no more
        lk = F.pad(lk, (0, 0, 0, missing), value=float("-inf"))
        v = F.pad(v, (0, 0, 0, missing))
        c = min(self.options.chunk_size, t)
        n_chunks = -(-t // c)
        extra = n_chunks * c - t
        # running maximum of the key exponents (≥ p0), per key position
        run_max = torch.maximum(lk.detach().amax(dim=-1), p0[..., None]).cummax(dim=-1).values
        phi_k = torch.exp(lk - run_max[..., None]) / root_m  # (B, H, T, m), ≤ 1/√m

        def chunks(x: Tensor) -> Tensor:  # (B, H, T, e) → (B, H, N, c, e), zero-padded
            return F.pad(x, (0, 0, 0, extra)).view(b, h, n_chunks, c, x.shape[-1])

        q_c, k_c, v_c = chunks(phi_q), chunks(phi_k), chunks(v)  # (B, H, N, c, ·)
        mx = F.pad(run_max, (0, extra), mode="replicate").view(b, h, n_chunks, c)  # (B,H,N,c)
        end = mx[..., -1]  # shift of each chunk's own state (B, H, N)
        # per-chunk states relative to the chunk's end shift, then a recurrence over chunks
        to_end = torch.exp(mx - end[..., None])[..., None]  # (B, H, N, c, 1), ≤ 1
        kv_chunk = (k_c * to_end).transpose(-2, -1) @ v_c  # (B, H, N, m, dv)
        z_chunk = (k_c * to_end).sum(dim=-2)  # (B, H, N, m)
        states, norms, shifts = [], [], []
        prev = p0
        for i in range(n_chunks):  # a handful of chunks; the state is (m × dv)
            states.append(state)
            norms.append(norm)
            shifts.append(prev)
            decay = torch.exp(prev - end[..., i])  # ≤ 1
            state = state * decay[..., None, None] + kv_chunk[:, :, i]
            norm = norm * decay[..., None] + z_chunk[:, :, i]
            prev = end[..., i]
        s_in = torch.stack(states, dim=2)  # (B, H, N, m, dv), relative to exp(shift_in)
        z_in = torch.stack(norms, dim=2)  # (B, H, N, m)
        shift_in = torch.stack(shifts, dim=2)  # (B, H, N)
        from_in = torch.exp(shift_in[..., None] - mx)[..., None]  # (B, H, N, c, 1), ≤ 1
        # inside a chunk: the (c × c) kernel block with relative shifts, causally masked
        tril = torch.ones(c, c, dtype=torch.bool, device=phi_q.device).tril()
        rel = (mx[..., None, :] - mx[..., :, None]).masked_fill(~tril, float("-inf"))
        block = (q_c @ k_c.transpose(-2, -1)) * torch.exp(rel)  # (B, H, N, c, c), 0 above
        num = (q_c @ s_in) * from_in + block @ v_c  # (B, H, N, c, dv)
        den = (q_c @ z_in[..., None]) * from_in + block.sum(dim=-1, keepdim=True)
        out = _safe_divide(num, den)
        return out.reshape(b, h, n_chunks * c, dv)[:, :, :t]  # (B, H, T, dv)

    @staticmethod
    def _dense_weights(phi_q: Tensor, lk: Tensor, ctx: AttentionContext) -> Tensor:
        """The implied (T × S) weights, for analysis only (need_weights=True)."""
        top = lk.amax(dim=(-2, -1), keepdim=True).clamp_min(_FLOOR)
        kernel = phi_q @ torch.exp(lk - top).transpose(-2, -1)  # (B, H, T, S)
        allowed = ctx.mask.allowed(phi_q.shape[-2], lk.shape[-2], phi_q.device)
        if allowed is not None:
            kernel = kernel.masked_fill(~allowed, 0.0)
        return _safe_divide(kernel, kernel.sum(dim=-1, keepdim=True))


register_preset("performer-256", "performer", n_features=256, summary="FAVOR+, m = 256 features")
