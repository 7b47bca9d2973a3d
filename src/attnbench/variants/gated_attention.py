"""Gated attention: softmax attention whose per-head output is gated by a sigmoid of the input.

Qiu, Wang, Zheng, Huang, Wen, Yang, Men, Yu, Huang, Huang, Liu, Zhou & Lin 2025, "Gated
Attention for Large Language Models: Non-linearity, Sparsity, and Attention-Sink-Free"
(arXiv:2505.06708; NeurIPS 2025). Of the gate positions the paper compares, the best
(G1) sits after scaled dot-product attention and before the output projection::

    Y   = softmax(Q Kᵀ / √d_k + M) V                 per head, (T, d_h)
    Y'  = Y ⊙ σ(X W_θ + b_θ)                          the gate, head-specific
    out = Concat_h(Y'_h) W_O

X is the layer's query input, what Q is computed from (the hidden states after the
block's norm in a pre-norm stack, as in the paper), so the gate of query i depends on
token i only: it is query-dependent, and it puts a non-linearity between the value and
output projections, whose product is otherwise one low-rank linear map. Trained, its
scores are sparse, and the paper finds that it mitigates the attention sink and massive
activations.

Choices (options):

``gate``
    ``"elementwise"`` (default; the paper's best): one gate per head and channel,
    W_θ ∈ ℝ^{d_model × H·d_h}. ``"headwise"``: one scalar per head, W_θ ∈ ℝ^{d_model × H},
    broadcast over the head's d_h channels (close to elementwise in the paper, with d_h
    times fewer gate parameters).
``gate_bias_init``
    the initial bias b_θ (default 0.0). The authors' code (a Qwen3 model) computes the
    gate scores as extra output columns of W_Q, without bias (Qwen3 has none) and with
    the model's weight initialisation, so its gates start around σ(0) = 1/2. Here W_θ is
    a separate ``nn.Linear`` (the authors' widened W_Q, split in two, computes the same
    function) with PyTorch's default weight initialisation, like W_Q here, and a bias
    set to ``gate_bias_init``; W_θ's matrix takes weight decay like W_Q's.

The sigmoid is multiplicative, head-specific and computed from X (not from Y), the
setting of the paper's headline model; its other ablations (additive or SiLU gates,
head-shared gates, gates on Q, K or V) are not implemented. The attention itself is
:class:`~attnbench.variants.vanilla.Vanilla`'s, so masks, padding, cross-attention (the
gate then reads the decoder's queries) and RoPE are the shared path's. ALiBi reaches the
scores the same way (:func:`attnbench.attention.scaled_masked_softmax`), but is not
declared yet: the shared positions test checks a declared ALiBi by comparing the output
under a steep slope with W_O of each query's own value, an ungated output. Time O(n²·d)
and memory O(n²), as softmax attention, plus O(n·d_model·H·d_h) for the gate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionOutput,
    Capabilities,
    register_variant,
)
from attnbench.variants.vanilla import Vanilla

GATES = ("elementwise", "headwise")


@dataclass
class GatedAttentionOptions:
    # "elementwise": one sigmoid gate per head and channel (H·d_h); "headwise": one per head
    gate: str = "elementwise"
    gate_bias_init: float = 0.0  # b_θ at initialisation: gates start around σ(b_θ)

    def __post_init__(self) -> None:
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {', '.join(GATES)}, got {self.gate!r}")


@register_variant(
    "gated-attention",
    paper=(
        'Qiu et al. 2025, "Gated Attention for Large Language Models: Non-linearity, '
        'Sparsity, and Attention-Sink-Free"'
    ),
    summary="softmax attention, per-head output ⊙ σ(X W_θ) before W_O",
)
class GatedAttention(Vanilla):
    """Softmax attention with a query-dependent sigmoid gate on each head's output (G1)."""

    Options = GatedAttentionOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=True,
        padding_mask=True,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope", "alibi"}),
        time_complexity="O(n²·d)",
        memory_complexity="O(n²)",
    )

    def __init__(self, dims: AttentionDims, options: GatedAttentionOptions | None = None) -> None:
        super().__init__(dims, options)
        opts: GatedAttentionOptions = self.options
        per_head = dims.head_dim if opts.gate == "elementwise" else 1
        self.gate_proj = nn.Linear(dims.d_model, dims.n_heads * per_head)  # W_θ, b_θ
        nn.init.constant_(self.gate_proj.bias, opts.gate_bias_init)

    def gate(self, x: Tensor) -> Tensor:
        """σ(X W_θ + b_θ) per head: (B, H, T, d_h) elementwise, (B, H, T, 1) headwise."""
        b, t, _ = x.shape
        scores = self.gate_proj(x).view(b, t, self.dims.n_heads, -1)  # (B, T, H, d_h | 1)
        return torch.sigmoid(scores).transpose(1, 2)

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        kv = x if source is None else source
        q = self.split_heads(self.q_proj(x))  # (B, H, T, dh)
        k = self.split_heads(self.k_proj(kv))  # (B, H, S, dh)
        v = self.split_heads(self.v_proj(kv))  # (B, H, S, dh)
        q, k = self.rotate(q, k, ctx)  # RoPE, when the model's scheme is rope
        out, weights = self.attend(q, k, v, ctx)  # Y: (B, H, T, dh), (B, H, T, S)
        gated = out * self.gate(x)  # Y' = Y ⊙ σ(X W_θ)
        return AttentionOutput(
            out=self.project_out(gated, ctx.head_mask),
            weights=weights if ctx.need_weights else None,
        )
