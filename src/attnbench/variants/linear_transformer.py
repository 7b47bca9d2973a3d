"""Linear attention: a positive feature map instead of softmax, causal by prefix sums.

Katharopoulos, Vyas, Pappas and Fleuret, "Transformers are RNNs: Fast Autoregressive
Transformers with Linear Attention", ICML 2020.

The similarity exp(qᵀk/√d) of softmax attention is replaced by a kernel
sim(q, k) = φ(q)ᵀφ(k) with the positive feature map

    φ(x) = elu(x) + 1,

so the matrix product can be re-associated and the (T × S) matrix never exists:

    non-causal:  V'_i = φ(Q_i)ᵀ (Σ_j φ(K_j) V_jᵀ) / φ(Q_i)ᵀ (Σ_j φ(K_j))
    causal:      V'_i = φ(Q_i)ᵀ S_i / φ(Q_i)ᵀ z_i,
                 S_i = Σ_{j≤i} φ(K_j) V_jᵀ,   z_i = Σ_{j≤i} φ(K_j)   (prefix sums)

As in the paper there is no 1/√d scaling. The causal form is computed exactly in
chunks of c queries: inside a chunk the (c × c) kernel block is masked and applied
directly, across chunks the prefix states S, z are cumulative sums of per-chunk sums,
so memory is O(n·d²/c + n·c) rather than O(n·d²) for the per-position states.

Padding: φ(K) is zeroed at padded keys, which removes them from both sums. A query
that sees no key (all keys padded) has z = 0 and gets a zero output. With a
``memory_len`` offset the first ``memory_len`` keys are visible to every query and
form the initial state. The sums are accumulated in float32 (also under autocast),
as the paper's CUDA kernels do. Attention dropout does not apply: there is no
attention matrix to drop from.

RoPE (Su et al. 2021, "RoFormer", §3.3, eq. 19). Rotating q and k before φ would not
give a relative kernel, and rotated features can make the denominator non-positive, so
RoFormer rotates the features in the numerator only:

    V'_i = Σ_j (R_i φ(Q_i))ᵀ (R_j φ(K_j)) V_j  /  Σ_j φ(Q_i)ᵀ φ(K_j)

(the sums over the keys query i sees). The numerator's kernel depends on positions only
through i − j; the weights are no longer positive and need not sum to 1. Both sums keep
the linear-time form: the numerator's state is Σ_j R_j φ(K_j) V_jᵀ and the
denominator's Σ_j φ(K_j), as above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    Capabilities,
    MultiHeadAttention,
    register_variant,
)


def elu_feature_map(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1, written as x + 1 (x > 0) or exp(x) (x ≤ 0).

    The same function, but positive down to exp's underflow (elu(x) + 1 rounds to 0
    in float32 below x ≈ −17); ``clamp`` keeps exp's unused branch finite.
    """
    return torch.where(x > 0, x + 1.0, torch.exp(x.clamp(max=0.0)))


def _safe_divide(num: Tensor, den: Tensor) -> Tensor:
    """num / den, with 0 where den = 0 (a query that sees no key; num is 0 there too)."""
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


@dataclass
class LinearOptions:
    chunk_size: int = 64  # queries per chunk in the causal form (exact for any value)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")


@register_variant(
    "linear",
    paper=(
        'Katharopoulos et al. 2020, "Transformers are RNNs: Fast Autoregressive '
        'Transformers with Linear Attention"'
    ),
    summary="φ(Q)(φ(K)ᵀV) with φ = elu + 1; causal by prefix sums",
)
class LinearAttention(MultiHeadAttention):
    """Kernelised attention with φ(x) = elu(x) + 1, linear in the sequence length."""

    Options = LinearOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope"}),  # RoFormer §3.3
        time_complexity="O(n·d²)",
        memory_complexity="O(n·d²/c + n·c)",
    )

    @classmethod
    def state_size(cls, options: LinearOptions, dims: AttentionDims) -> int:
        """Per head, the running S = Σ φ(k)vᵀ (d_k × d_v) and z = Σ φ(k) (d_k)."""
        d = dims.head_dim
        return dims.n_heads * (d * d + d)

    def __init__(self, dims: AttentionDims, options: LinearOptions | None = None) -> None:
        super().__init__(dims, options)
        self.options: LinearOptions

    def rotate(self, q: Tensor, k: Tensor, ctx: AttentionContext) -> tuple[Tensor, Tensor]:
        """Nothing before φ: under RoPE the features of the numerator are rotated in
        :meth:`attend` (RoFormer §3.3)."""
        return q, k

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        dtype = q.dtype
        work = torch.promote_types(dtype, torch.float32)
        with torch.autocast(device_type=q.device.type, enabled=False):
            phi_q = elu_feature_map(q.to(work))  # (B, H, T, dh)
            phi_k = elu_feature_map(k.to(work))  # (B, H, S, dh)
            v = v.to(work)
            pad = ctx.mask.key_padding
            if pad is not None:  # padded keys leave both sums
                phi_k = phi_k.masked_fill(~pad[:, None, :, None].to(phi_k.device), 0.0)
            # the numerator's features: R_i φ(Q_i), R_j φ(K_j) under RoPE, else φ itself
            num_q, num_k = MultiHeadAttention.rotate(self, phi_q, phi_k, ctx)
            if ctx.mask.causal:
                out = self._causal(num_q, num_k, phi_q, phi_k, v, ctx.mask.memory_len)
            else:
                kv = num_k.transpose(-2, -1) @ v  # Σ_j R_j φ(K_j) V_jᵀ  (B, H, dh, dv)
                z = phi_k.sum(dim=-2)  # Σ_j φ(K_j)  (B, H, dh)
                out = _safe_divide(num_q @ kv, (phi_q @ z[..., None]))  # (B, H, T, dv)
            weights = None
            if ctx.need_weights:
                weights = self._dense_weights(num_q, num_k, phi_q, phi_k, ctx)
        return out.to(dtype), None if weights is None else weights.to(dtype)

    def _causal(
        self,
        num_q: Tensor,
        num_k: Tensor,
        phi_q: Tensor,
        phi_k: Tensor,
        v: Tensor,
        memory_len: int,
    ) -> Tensor:
        """Exact causal linear attention by chunked prefix sums: the numerator's kernel
        from ``num_q``, ``num_k`` (rotated features under RoPE, else φ(Q), φ(K)), the
        denominator's from ``phi_q``, ``phi_k``.

        Query i sees keys j ≤ memory_len + i.
        """
        b, h, t, _ = phi_q.shape
        dv = v.shape[-1]
        rotated = num_q is not phi_q  # else one kernel serves numerator and denominator
        # keys before the segment (memory) are visible to every query: the initial state
        state0 = num_k[..., :memory_len, :].transpose(-2, -1) @ v[..., :memory_len, :]
        z0 = phi_k[..., :memory_len, :].sum(dim=-2)  # (B, H, dh)
        # the rest are aligned with the queries: key memory_len + i ↔ query i
        aligned = slice(memory_len, memory_len + t)
        num_k, phi_k, v = num_k[..., aligned, :], phi_k[..., aligned, :], v[..., aligned, :]
        c = max(1, min(self.options.chunk_size, t))
        n_chunks = -(-t // c)
        total = n_chunks * c

        def chunks(x: Tensor) -> Tensor:  # (B, H, n, e) → (B, H, N, c, e), zero-padded
            x = F.pad(x, (0, 0, 0, total - x.shape[-2]))  # zero φ(K): padding adds nothing
            return x.view(b, h, n_chunks, c, x.shape[-1])

        nq_c, nk_c, q_c, k_c, v_c = (chunks(x) for x in (num_q, num_k, phi_q, phi_k, v))
        # states of whole chunks, then exclusive prefix sums over chunks
        kv_chunk = nk_c.transpose(-2, -1) @ v_c  # (B, H, N, dh, dv)
        z_chunk = k_c.sum(dim=-2)  # (B, H, N, dh)
        kv_prev = F.pad(kv_chunk.cumsum(dim=2), (0, 0, 0, 0, 1, 0))[:, :, :-1]  # (B,H,N,dh,dv)
        z_prev = F.pad(z_chunk.cumsum(dim=2), (0, 0, 1, 0))[:, :, :-1]  # (B, H, N, dh)
        kv_prev = kv_prev + state0[:, :, None]
        z_prev = z_prev + z0[:, :, None]
        # inside a chunk: the masked (c × c) kernel blocks
        tril = torch.ones(c, c, dtype=torch.bool, device=phi_q.device).tril()
        num_block = (nq_c @ nk_c.transpose(-2, -1)).masked_fill(~tril, 0.0)  # (B,H,N,c,c)
        den_block = num_block
        if rotated:
            den_block = (q_c @ k_c.transpose(-2, -1)).masked_fill(~tril, 0.0)
        num = nq_c @ kv_prev + num_block @ v_c  # (B, H, N, c, dv)
        den = (q_c @ z_prev[..., None]).squeeze(-1) + den_block.sum(dim=-1)  # (B, H, N, c)
        out = _safe_divide(num, den[..., None])
        return out.reshape(b, h, total, dv)[:, :, :t]  # (B, H, T, dv)

    @staticmethod
    def _dense_weights(
        num_q: Tensor, num_k: Tensor, phi_q: Tensor, phi_k: Tensor, ctx: AttentionContext
    ) -> Tensor:
        """The implied (T × S) weights, for analysis only (need_weights=True): the
        numerator's kernel over the row sums of the denominator's."""
        allowed = ctx.mask.allowed(phi_q.shape[-2], phi_k.shape[-2], phi_q.device)

        def kernel(a: Tensor, b: Tensor) -> Tensor:
            out = a @ b.transpose(-2, -1)  # (B, H, T, S)
            return out if allowed is None else out.masked_fill(~allowed, 0.0)

        num = kernel(num_q, num_k)
        den = num if num_q is phi_q else kernel(phi_q, phi_k)
        return _safe_divide(num, den.sum(dim=-1, keepdim=True))
