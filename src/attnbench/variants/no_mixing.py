"""No mixing: an attention-free control that keeps every position to itself.

The attention sublayer is replaced by its value and output projections applied to each
position alone::

    out_i = W_O (W_V x_i + b_V) + b_O          (heads split and merged as usual)

which is attention whose weight matrix is the identity, A = I: no query ever sees another
token. The rest of the model — embeddings with positions, residual paths, layer norms,
feed-forward blocks, pooling, heads — is unchanged, and so is the parameter count of the
value and output projections (there are no W_Q, W_K). Every model built on it is then a
per-token network followed by the task's pooling: a bag of position-tagged tokens for
a mean-pooled classifier, a (position-aware) bigram model for a language model.

Why: it answers "does this task need attention at all?". A variant that does not beat
this control has shown nothing about its attention, and a task on which the control
matches vanilla attention does not test token mixing at the benchmark's budget (a
bag-of-tokens model already reaches that score). This is the role of the no-attention /
MLP-only ablations that analyses of attention compare with.

Capabilities, declared honestly: ``mixes_tokens=False`` — the leaderboard identifies the
control from this, never from the name. Causal: trivially (position i reads position i
only). Padding: nothing is read from padded keys, so any padding mask is honoured.
Cross-attention: not offered (``cross_attention=False``) — with ``source`` given there is
nothing it could do without mixing, and ignoring ``source`` would silently cut the decoder
off from the encoder. An encoder–decoder model therefore uses standard attention for its
cross-attention (the task records which), so in translation the control removes only
self-attention mixing. Any length works; cost is linear in it.

Padding follows the masked softmax's rule for a query with no allowed key: a padded
position's own key is masked, so its weight is 0 and its output is b_O alone; real
positions never depend on padded ones. Attention dropout, applied to the weights as in
every variant, drops a position's value in a head with probability p and rescales the
rest by 1/(1 − p). ``need_weights`` returns A = I with padded rows zeroed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnbench.attention import (
    Attention,
    AttentionContext,
    AttentionDims,
    AttentionOutput,
    Capabilities,
    NoOptions,
    project_heads,
    register_variant,
)


@register_variant(
    "no-mixing",
    paper="attention-free control (no token mixing): out_i = W_O W_V x_i",
    summary="control: no token mixing, out_i = W_O W_V x_i (attention weights A = I)",
)
class NoMixing(Attention):
    """Attention-free control: each position's output is a function of its own input only."""

    Options = NoOptions
    capabilities = Capabilities(
        causal=True,  # position i reads only position i
        cross_attention=False,  # nothing to do with another sequence without mixing
        padding_mask=True,  # padded positions are never read by another position
        mixes_tokens=False,
        time_complexity="O(n·d)",
        memory_complexity="O(n·d)",
    )

    def __init__(self, dims: AttentionDims, options: NoOptions | None = None) -> None:
        super().__init__(dims, options)
        inner = dims.n_heads * dims.head_dim
        self.v_proj = nn.Linear(dims.d_model, inner)
        self.out_proj = nn.Linear(inner, dims.d_model)
        self.attn_dropout = nn.Dropout(dims.dropout)

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        if source is not None:
            raise ValueError("no-mixing has no cross-attention (cross_attention=False)")
        b, t, _ = x.shape
        h, dh = self.dims.n_heads, self.dims.head_dim
        v = self.v_proj(x).view(b, t, h, dh).transpose(1, 2)  # (B, H, T, dh)
        # the weight A_ii = 1, or 0 where key i is padded (a query with no allowed key
        # gets zeros, as under masked_softmax)
        weight = torch.ones(b, 1, t, 1, dtype=v.dtype, device=v.device)  # (B, 1, T, 1)
        if ctx.mask.key_padding is not None:
            pad = ctx.mask.key_padding.to(device=x.device, dtype=v.dtype)  # (B, T)
            weight = weight * pad[:, None, :, None]
        weights = None
        if ctx.need_weights:  # A = diag(weight): (B, H, T, T)
            eye = torch.eye(t, dtype=v.dtype, device=v.device)
            weights = (weight * eye).expand(b, h, t, t)
        if self.training and self.attn_dropout.p > 0:  # dropout on the weight A_ii
            weight = self.attn_dropout(weight.expand(b, h, t, 1))
        v = v * weight
        return AttentionOutput(out=project_heads(v, self.out_proj, ctx.head_mask), weights=weights)
