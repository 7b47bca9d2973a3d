"""Sparse Sinkhorn attention: block-local attention plus a learned soft sort of the blocks.

Tay, Bahri, Yang, Metzler & Juan, "Sparse Sinkhorn Attention", ICML 2020.

The sequence is cut into N_B blocks of ``block`` tokens. A sorting network scores
block-to-block moves from sum-pooled block embeddings of the layer input X:

    X'_i = Σ_{t ∈ block i} x_t                       (padded tokens left out)
    R    = ReLU(W₂ ReLU(W₁ X' + b₁) + b₂)            R ∈ ℝ^{N_B × N_B}, one per head

Gumbel-Sinkhorn balancing turns R into a (near) doubly stochastic soft permutation,
in log space, with Gumbel noise ε in training only:

    S⁰ = (R + ε) / τ,   Sᵏ = F_c(F_r(Sᵏ⁻¹)),   S = exp(S^{n_iters})
    F_r(A) = A − logsumexp_rows(A),   F_c(A) = A − logsumexp_cols(A)

The sorted blocks are the soft permutation applied to the key and value blocks,
ψ_S(K)_i = Σ_j S_ij K_j (likewise V). Each query block attends, in one softmax, to its
own block (local attention) and to its sorted block:

    Y_i = softmax(Q_i [K_i ; ψ_S(K)_i]ᵀ / √d_h) [V_i ; ψ_S(V)_i]

Scores are N_B · b · 2b = 2n·b; S is N_B × N_B.

Padding: padded tokens are left out of the pooled block embeddings, their keys and
values are zeroed before sorting, a sorted slot is masked when no block that it mixes
holds a real token there, and blocks without a real token are kept out of the sort
(S restricted to them is the identity). So a sequence gives the same result alone or
padded. The sorting network has ``ceil(max_len / block)`` outputs; a shorter input
uses the first N_B of them, which equals padding it with empty blocks.

Not causal (the paper's causal Sinkhorn balancing is not implemented); self-attention
only.
"""

from __future__ import annotations

import math
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
class SinkhornOptions:
    block: int = 16  # tokens per block
    n_iters: int = 7  # Sinkhorn balancing iterations (row then column normalisation)
    temperature: float = 0.75  # τ in exp((R + ε)/τ)

    def __post_init__(self) -> None:
        if self.block < 1:
            raise ValueError(f"block must be >= 1, got {self.block}")
        if self.n_iters < 0:
            raise ValueError(f"n_iters must be >= 0, got {self.n_iters}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def sinkhorn(log_alpha: Tensor, n_iters: int) -> Tensor:
    """Sinkhorn balancing in log space: (..., N, N) logits → exp of the balanced logits.

    Each iteration normalises the rows, then the columns; ``-inf`` entries stay 0.
    """
    for _ in range(n_iters):
        log_alpha = log_alpha - log_alpha.logsumexp(dim=-1, keepdim=True)  # rows
        log_alpha = log_alpha - log_alpha.logsumexp(dim=-2, keepdim=True)  # columns
    return log_alpha.exp()


@register_variant(
    "sinkhorn",
    paper='Tay, Bahri, Yang, Metzler & Juan 2020, "Sparse Sinkhorn Attention"',
    summary="block-local attention plus a Gumbel-Sinkhorn soft sort of the blocks",
)
class Sinkhorn(MultiHeadAttention):
    """Each query block attends to its own block and to its softly sorted block."""

    Options = SinkhornOptions
    capabilities = Capabilities(
        causal=False,  # causal Sinkhorn balancing not implemented
        cross_attention=False,
        padding_mask=True,
        time_complexity="O(n·b·d + (n/b)²·b·d)",
        memory_complexity="O(n·b + (n/b)²)",
    )

    def __init__(self, dims: AttentionDims, options: SinkhornOptions | None = None) -> None:
        super().__init__(dims, options)
        self.max_blocks = math.ceil(dims.max_len / self.options.block)
        self.sort_net = nn.Sequential(  # pooled block embedding → logits over blocks, per head
            nn.Linear(dims.d_model, dims.d_model),
            nn.ReLU(),
            nn.Linear(dims.d_model, dims.n_heads * self.max_blocks),
            nn.ReLU(),
        )

    @classmethod
    def dense_reason(cls, options: SinkhornOptions, n: int) -> str | None:
        """Dense when one block holds the sequence: it attends to itself, and its sorted
        block is itself again (S = [1]), which duplicates every key without changing the
        softmax."""
        if options.block >= n:
            return f"block {options.block} ≥ n = {n}: one block, attending to itself"
        return None

    def sorting_matrix(self, x: Tensor, token_valid: Tensor) -> Tensor:
        """Soft permutation S (B, H, N, N) of the blocks of x (B, N·b, d); rows: sorted slots."""
        o: SinkhornOptions = self.options
        bsz, n, _ = x.shape
        nb = n // o.block
        if nb > self.max_blocks:
            raise ValueError(f"sinkhorn: {n} tokens exceed max_len {self.dims.max_len}")
        pooled = (x * token_valid[..., None]).view(bsz, nb, o.block, -1).sum(dim=2)  # (B,N,d)
        logits = self.sort_net(pooled).view(bsz, nb, self.dims.n_heads, self.max_blocks)
        logits = logits[..., :nb].transpose(1, 2)  # (B, H, N, N)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if self.training:  # Gumbel noise: ε = −log(−log U)
            u = torch.rand_like(logits).clamp(1e-9, 1 - 1e-9)
            logits = logits - torch.log(-torch.log(u))
        logits = logits / o.temperature
        # blocks holding no real token stay out of the sort: S is the identity on them
        real = token_valid.view(bsz, nb, o.block).any(dim=-1)  # (B, N)
        both_real = real[:, :, None] & real[:, None, :]  # (B, N, N)
        empty_diag = ~real[:, :, None] & torch.eye(nb, dtype=torch.bool, device=x.device)
        logits = logits.masked_fill(~(both_real | empty_diag)[:, None], float("-inf"))
        logits = logits.masked_fill(empty_diag[:, None], 0.0)
        return sinkhorn(logits, o.n_iters)  # (B, H, N, N)

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        if source is not None:
            raise ValueError(
                "sinkhorn: no cross-attention (the block sort is defined for self-attention)"
            )
        o: SinkhornOptions = self.options
        bsz, t, _ = x.shape
        h, dh, bl = self.dims.n_heads, self.dims.head_dim, o.block
        n = t + (-t) % bl  # padded to whole blocks
        nb = n // bl
        valid = torch.ones(bsz, t, dtype=torch.bool, device=x.device)
        if ctx.mask.key_padding is not None:
            valid = ctx.mask.key_padding.to(device=x.device, dtype=torch.bool)
        valid = F.pad(valid, (0, n - t), value=False)  # (B, n)
        x_pad = F.pad(x, (0, 0, 0, n - t))  # (B, n, d)
        keep = valid[:, None, :, None].to(x.dtype)  # (B, 1, n, 1)

        def blocks(y: Tensor) -> Tensor:  # (B, H, n, dh) → (B, H, N, b, dh)
            return y.view(bsz, h, nb, bl, dh)

        q = blocks(self.split_heads(self.q_proj(x_pad)))
        k = blocks(self.split_heads(self.k_proj(x_pad)) * keep)  # padded keys zeroed
        v = blocks(self.split_heads(self.v_proj(x_pad)) * keep)
        s = self.sorting_matrix(x_pad, valid)  # (B, H, N, N)

        s_kv = s.to(k.dtype)
        k_sorted = torch.einsum("bhij,bhjpd->bhipd", s_kv, k)  # (B, H, N, b, dh)
        v_sorted = torch.einsum("bhij,bhjpd->bhipd", s_kv, v)
        valid_b = valid.view(bsz, 1, nb, bl)  # (B, 1, N, b)
        # a sorted slot is real if a block it draws on (S_ij > 0) has a real token there
        slot_real = torch.einsum("bhij,bjp->bhip", (s > 0).float(), valid_b[:, 0].float()) > 0

        keys = torch.cat([k, k_sorted], dim=3)  # (B, H, N, 2b, dh)
        values = torch.cat([v, v_sorted], dim=3)
        allowed = torch.cat([valid_b.expand(-1, h, -1, -1), slot_real], dim=-1)  # (B,H,N,2b)
        scores = (q @ keys.transpose(-2, -1)) * default_scale(dh)  # (B, H, N, b, 2b)
        probs = masked_softmax(scores, allowed[:, :, :, None, :])  # (B, H, N, b, 2b)
        out = self.attn_dropout(probs) @ values  # (B, H, N, b, dh)
        out = out.reshape(bsz, h, n, dh)[:, :, :t]  # (B, H, T, dh)

        weights = self.dense_weights(probs, s, valid_b, t) if ctx.need_weights else None
        return AttentionOutput(out=self.project_out(out, ctx.head_mask), weights=weights)

    @staticmethod
    def dense_weights(probs: Tensor, s: Tensor, valid_b: Tensor, t: int) -> Tensor:
        """(B, H, T, T) weights on the original tokens' values, for analysis only.

        A sorted slot (i, p) carries Σ_j S_ij v_(j,p) over real tokens, so its weight
        spreads over the real tokens (j, p) in proportion to S_ij.
        """
        bsz, h, nb, bl, _ = probs.shape
        local, sorted_ = probs[..., :bl], probs[..., bl:]  # (B, H, N, b, b) each
        eye = torch.eye(nb, dtype=probs.dtype, device=probs.device)
        # dense[b,h,(i,q),(j,p)] = [i=j]·local[i,q,p] + S_ij·sorted[i,q,p]
        dense = torch.einsum("ij,bhiqp->bhiqjp", eye, local) + torch.einsum(
            "bhij,bhiqp->bhiqjp", s.to(probs.dtype), sorted_
        )
        dense = dense * valid_b[:, :, None, None].to(dense.dtype)  # (B, 1, 1, 1, N, b)
        return dense.reshape(bsz, h, nb * bl, nb * bl)[:, :, :t, :t]


register_preset("sinkhorn-32", "sinkhorn", block=32, summary="Sinkhorn attention, blocks of 32")
