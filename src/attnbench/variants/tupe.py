"""TUPE: Transformer with Untied Positional Encoding.

Ke, He & Liu 2021, "Rethinking Positional Encoding in Language Pre-training" (ICLR).

Positions are not added to the word embeddings. Word and position correlations are
computed with separate projections and added, each scaled by 1/√(2d):

    α_ij = (x_i W_Q)(x_j W_K)ᵀ / √(2d) + reset_θ(P)_ij [+ b_{bucket(j − i)}]
    P_ij = (p_i U_Q)(p_j U_K)ᵀ / √(2d),      p_i = LayerNorm(position embedding i)

The positional term does not depend on the content, so it is computed by one module
shared by every layer of the stack (the paper shares it across layers); heads have
their own U_Q, U_K slices. TUPE-R adds T5's bucketed relative bias b (one learned
value per head and bucket; bidirectional buckets in encoders, causal ones in causal
stacks).

Untying [CLS] (``untie_cls``) applies only where position 0 is a [CLS] token
(``dims.first_token_cls``: the classification heads' encoders). There the paper's
reset replaces the positional correlations of [CLS] by learned values per head,

    reset_θ(P)_ij = θ₁ if i = 0 ([CLS] → everything, [CLS] → [CLS] included),
                    θ₂ if i ≠ 0, j = 0 (others → [CLS]),
                    P_ij otherwise,

(θ₁, θ₂ are free parameters as in the paper; the official code computes them as the
positional correlation of two extra position embeddings), and in TUPE-R [CLS] takes
no relative bias either: as in the official code
(github.com/guolinke/TUPE, ``transformer_sentence_encoder.py``: ``rp_bucket[:, 0] =
rel_pos_bins``; ``rp_bucket[0, :] = rel_pos_bins // 2``, a bucket T5's bidirectional
bucketing never produces) its row and column get buckets of their own,

    b_ij = b_{→CLS} if i ≠ 0, j = 0;    b_{CLS→} if i = 0;    b_{bucket(j − i)} otherwise,

so the bias table has ``num_buckets`` + 1 rows (+ 2 in a causal stack, whose buckets
are all in use). Elsewhere (language models, decoders, translation encoders) position
0 is an ordinary token: reset_θ(P) = P and b = b_{bucket(j − i)} everywhere, and no θ
exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    Capabilities,
    MultiHeadAttention,
    masked_softmax,
    register_preset,
    register_variant,
)


@dataclass
class TupeOptions:
    # where inputs start with [CLS] (dims.first_token_cls): its row/column take learned θ₁, θ₂
    # (and, in TUPE-R, buckets of their own); elsewhere position 0 is an ordinary position
    untie_cls: bool = True
    relative: bool = False  # TUPE-R: add T5's bucketed relative position bias b_{j−i}
    num_buckets: int = 32  # TUPE-R: relative position buckets
    max_distance: int = 128  # TUPE-R: distances beyond this share the last bucket


def relative_bucket(
    rel: Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> Tensor:
    """T5's bucketing of relative positions ``rel = j − i``: exact for small distances,
    logarithmic up to ``max_distance``; with ``bidirectional`` half the buckets are for j > i."""
    bucket = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (rel > 0).long() * num_buckets
        distance = rel.abs()
    else:
        distance = (-rel).clamp_min(0)  # only j ≤ i can be attended
    exact = num_buckets // 2
    log_ratio = torch.log(distance.float().clamp_min(1) / exact) / math.log(max_distance / exact)
    large = exact + (log_ratio * (num_buckets - exact)).long()
    large = large.clamp_max(num_buckets - 1)
    return bucket + torch.where(distance < exact, distance, large)


class UntiedPositionalCorrelation(nn.Module):
    """(p_i U_Q)(p_j U_K)ᵀ / √(2d) per head, with [CLS] untying and the TUPE-R bias."""

    # [CLS] untying θ and the TUPE-R bucket biases are structural: no weight decay
    decay_exempt = ("theta", "rel_bias")

    def __init__(self, dims: AttentionDims, options: TupeOptions) -> None:
        super().__init__()
        self.n_heads, self.head_dim = dims.n_heads, dims.head_dim
        self.options = options
        self.bidirectional = not dims.is_causal
        self.p = nn.Embedding(dims.max_len, dims.d_model)
        self.norm = nn.LayerNorm(dims.d_model)
        self.u_q = nn.Linear(dims.d_model, dims.n_heads * dims.head_dim)
        self.u_k = nn.Linear(dims.d_model, dims.n_heads * dims.head_dim)
        self.untied = options.untie_cls and dims.first_token_cls  # position 0 is [CLS]
        self.theta = nn.Parameter(torch.zeros(2, dims.n_heads)) if self.untied else None
        self.rel_bias: nn.Embedding | None = None
        if options.relative:
            n = options.num_buckets
            # [CLS]'s own buckets: others → [CLS] gets bucket n; [CLS] → others the bucket
            # n // 2 that bidirectional bucketing leaves unused (official code), or n + 1
            self.to_cls_bucket = n
            self.from_cls_bucket = n // 2 if self.bidirectional else n + 1
            extra = (1 if self.bidirectional else 2) if self.untied else 0
            self.rel_bias = nn.Embedding(n + extra, dims.n_heads)

    def forward(self, pos_q: Tensor, pos_k: Tensor) -> Tensor:
        """(H, T, S) positional scores for query positions ``pos_q`` and key positions ``pos_k``."""
        h, dh = self.n_heads, self.head_dim
        pq = self.u_q(self.norm(self.p(pos_q))).view(-1, h, dh).transpose(0, 1)  # (H, T, dh)
        pk = self.u_k(self.norm(self.p(pos_k))).view(-1, h, dh).transpose(0, 1)  # (H, S, dh)
        scores = pq @ pk.transpose(-2, -1) / math.sqrt(2 * dh)  # (H, T, S)
        if self.theta is not None:
            q_cls = (pos_q == 0)[None, :, None]  # (1, T, 1)
            k_cls = (pos_k == 0)[None, None, :]  # (1, 1, S)
            theta1 = self.theta[0][:, None, None]  # (H, 1, 1): [CLS] → everything
            theta2 = self.theta[1][:, None, None]  # (H, 1, 1): others → [CLS]
            scores = torch.where(q_cls, theta1, torch.where(k_cls, theta2, scores))
        if self.rel_bias is not None:
            rel = pos_k[None, :] - pos_q[:, None]  # (T, S): j − i
            buckets = relative_bucket(
                rel, self.bidirectional, self.options.num_buckets, self.options.max_distance
            )
            if self.untied:  # [CLS] row and column: their own buckets, not b_{j − i}
                buckets = buckets.masked_fill((pos_k == 0)[None, :], self.to_cls_bucket)
                buckets = buckets.masked_fill((pos_q == 0)[:, None], self.from_cls_bucket)
            scores = scores + self.rel_bias(buckets).permute(2, 0, 1)  # (H, T, S)
        return scores


@register_variant(
    "tupe", paper='Ke, He & Liu 2021, "Rethinking Positional Encoding in Language Pre-training"'
)
class Tupe(MultiHeadAttention):
    """Untied word and position correlations; positions never added to the input."""

    Options = TupeOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=False,  # positions of two different sequences are not comparable
        padding_mask=True,
        positions="own",
        time_complexity="O(n²·d)",
        memory_complexity="O(n²)",
    )

    def __init__(self, dims: AttentionDims, options: TupeOptions | None = None) -> None:
        super().__init__(dims, options)
        # one per stack (whose layers share dims); keyed by what shapes the module too
        key = f"tupe-positions-{self.options}-cls{dims.first_token_cls}-causal{dims.is_causal}"
        if key not in dims.shared:  # the first layer builds it, the others reuse it
            dims.shared[key] = UntiedPositionalCorrelation(dims, self.options)
        self.positional = dims.shared[key]

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        t, s = q.shape[-2], k.shape[-2]
        pos_q = ctx.positions if ctx.positions is not None else torch.arange(t, device=q.device)
        pos_k = torch.arange(s, device=q.device) + (pos_q[0] if s == t else 0)
        content = q @ k.transpose(-2, -1) / math.sqrt(2 * q.shape[-1])  # (B, H, T, S)
        scores = content + self.positional(pos_q, pos_k).to(content.dtype)[None]
        probs = masked_softmax(scores, ctx.mask.allowed(t, s, q.device))
        return self.attn_dropout(probs) @ v, probs


register_preset("tupe-r", "tupe", relative=True, summary="TUPE with T5 relative position bias")
