"""Transformer-XL: relative positional attention with segment-level recurrence.

Dai, Yang, Yang, Carbonell, Le & Salakhutdinov 2019, "Transformer-XL: Attentive
Language Models Beyond a Fixed-Length Context" (ACL).

For a segment of T queries whose layer input is x, and a memory m of the previous
segment's layer input (M positions, no gradient), the keys and values come from
h̃ = [SG(m); x] (S = M + T positions) and, with query i at absolute offset M + i,

    A_ij = q_iᵀ k_j  +  q_iᵀ W_R R_{i−j}  +  uᵀ k_j  +  vᵀ W_R R_{i−j}
         = (q_i + u)ᵀ k_j  +  (q_i + v)ᵀ W_R R_{i−j}

where R is the sinusoid encoding of the relative distance (M + i) − j and u, v are
learned per-head biases. The second term is computed for every distance once,
(T, T + S − 1), and moved into place by the *relative shift* (here an exact gather).
The layer returns the last ``mem_len`` positions of h̃, detached, as the next
segment's memory (``AttentionOutput.state``). Without memory (``ctx.state`` None,
e.g. classification) it is plain relative-position attention, causal or not.
The memory holds the layer's (pre-LN normalised) input, the pre-LN analogue of the
paper's h^{n−1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    AttentionOutput,
    Capabilities,
    MultiHeadAttention,
    masked_softmax,
    register_variant,
)


@dataclass
class TransformerXLOptions:
    mem_len: int = 64  # positions of the previous segment kept as memory (0: no recurrence)


def relative_shift(scores: Tensor, memory_len: int) -> Tensor:
    """Move per-distance scores into per-key columns.

    ``scores[..., i, r]`` holds the score of query i with distance d_r = S − 1 − r, for
    r in [0, T + S − 1); returns ``out[..., i, j]`` = score of query i with key j, whose
    distance is (memory_len + i) − j, i.e. column r = T − 1 − i + j.
    """
    t, width = scores.shape[-2], scores.shape[-1]
    s = width - t + 1
    assert s == memory_len + t, "keys must be the memory followed by the segment"
    i = torch.arange(t, device=scores.device)[:, None]
    j = torch.arange(s, device=scores.device)[None, :]
    index = (t - 1 - i + j).expand(*scores.shape[:-2], t, s)  # (..., T, S)
    return scores.gather(-1, index)


@register_variant(
    "transformer-xl",
    paper='Dai et al. 2019, "Transformer-XL: Attentive Language Models Beyond a Fixed-Length '
    'Context"',
)
class TransformerXL(MultiHeadAttention):
    """Relative positional attention (u, v biases, sinusoid R) with a segment memory."""

    decay_exempt = ("u", "v")  # the global content and position biases u, v

    Options = TransformerXLOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=False,
        padding_mask=True,
        positions="own",
        recurrent=True,
        time_complexity="O(n·(n+m)·d)",
        memory_complexity="O(n·(n+m))",
    )

    @classmethod
    def state_size(cls, options: TransformerXLOptions, dims: AttentionDims) -> int:
        """The memory: the last ``mem_len`` hidden vectors (d_model each) of the layer."""
        return options.mem_len * dims.d_model

    @classmethod
    def memory_len(cls, options: TransformerXLOptions) -> int:
        return options.mem_len

    def __init__(self, dims: AttentionDims, options: TransformerXLOptions | None = None) -> None:
        super().__init__(dims, options)
        h, dh = dims.n_heads, dims.head_dim
        self.r_proj = nn.Linear(dims.d_model, h * dh, bias=False)  # W_R
        self.u = nn.Parameter(torch.zeros(h, 1, dh))  # content bias
        self.v = nn.Parameter(torch.zeros(h, 1, dh))  # position bias

    def relative_encoding(self, t: int, s: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """W_R R_d for distances d = S − 1, …, −(T − 1): (H, T + S − 1, dh)."""
        distances = torch.arange(s - 1, -t, -1, device=device, dtype=torch.float32)
        d = self.dims.d_model
        inv_freq = 10000.0 ** (-torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
        angles = distances[:, None] * inv_freq[None, :]  # (T+S−1, ⌈d/2⌉)
        r = torch.cat([angles.sin(), angles.cos()], dim=-1)[:, : self.dims.d_model]  # (T+S−1, d)
        r = self.r_proj(r.to(dtype))
        return r.view(-1, self.dims.n_heads, self.dims.head_dim).transpose(0, 1)

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        memory: Tensor | None = ctx.state  # (B, M, d) from the previous segment, or None
        h = x if memory is None else torch.cat([memory.to(x.dtype), x], dim=1)  # (B, S, d)
        m = 0 if memory is None else memory.shape[1]
        q = self.split_heads(self.q_proj(x))  # (B, H, T, dh)
        k = self.split_heads(self.k_proj(h))  # (B, H, S, dh)
        v = self.split_heads(self.v_proj(h))  # (B, H, S, dh)
        t, s = q.shape[-2], k.shape[-2]

        r = self.relative_encoding(t, s, x.device, q.dtype)  # (H, T+S−1, dh)
        content = (q + self.u) @ k.transpose(-2, -1)  # (B, H, T, S)
        position = relative_shift((q + self.v) @ r.transpose(-2, -1), m)  # (B, H, T, S)
        scores = (content + position) / math.sqrt(q.shape[-1])

        key_padding = ctx.mask.key_padding
        if key_padding is not None and m:
            key_padding = torch.cat([key_padding.new_ones(key_padding.shape[0], m), key_padding], 1)
        mask = AttentionMask(causal=ctx.mask.causal, key_padding=key_padding, memory_len=m)
        probs = masked_softmax(scores, mask.allowed(t, s, x.device))  # (B, H, T, S)
        out = self.attn_dropout(probs) @ v  # (B, H, T, dh)

        mem_len = self.options.mem_len
        new_memory = h[:, -mem_len:].detach() if mem_len > 0 else None  # stop-gradient
        return AttentionOutput(
            out=self.project_out(out, ctx.head_mask),
            weights=probs if ctx.need_weights else None,
            state=new_memory,
        )
