"""Longformer: sliding-window attention plus a few global tokens.

Beltagy, Peters & Cohan 2020, "Longformer: The Long-Document Transformer". With
window w on each side (the paper's window size is 2w) and a set G of global positions
(default: the first token, [CLS])::

    A_i = { j : |i − j| ≤ w } ∪ G          for i ∉ G   (local tokens see the window + globals)
    A_i = { all j }                         for i ∈ G   (global tokens see everything)
    o_i = softmax_{j ∈ A_i}(q_i·k_j / √d) V

Global attention is symmetric: every token attends to the global tokens and the global
tokens attend to every token. With ``separate_global`` (the paper's §3.1) the global
rows use their own projections Q_g, K_g, V_g::

    o_i = softmax_j(Q_g x_i · K_g x_j / √d) V_g x      for i ∈ G

initialised as copies of Q, K, V; the window and the columns of global keys seen by
local tokens use Q, K, V. Causal use keeps j ≤ i everywhere (the window looks left).

Dilated sliding window (the paper's §3.1, option ``dilation`` = d, default 1: the plain
window): gaps of d − 1 tokens between attended keys, so w keys on each side reach w·d
tokens away::

    A_i = { j : |i − j| ≤ w·d and (i − j) mod d = 0 } ∪ G      for i ∉ G

``dilation`` is one d for every head, or one per head (``dilation: [1, 1, 2, 3]``), the
paper's multi-head setting: "each head [has a] different dilation configuration", some
heads attending to the local context and others further away; its character LM dilates
2 heads only, the others undilated. Head h then sees

    A_i^h = { j : |i − j| ≤ w·d_h and (i − j) mod d_h = 0 } ∪ G      for i ∉ G

The paper's per-layer schedule (windows and dilations growing with depth) is not here:
a variant's options are the same in every layer.

Cost (:mod:`attnbench.blocksparse`): window as a block part (keys that are global
are left to the global columns, so none is counted twice), global keys as g columns,
global rows as g dense rows: time O(n·(w + g)·d), memory O(n·(w + g)). With dilation d
the positions are regrouped by i mod d (each residue class is contiguous, and the
dilated window is a plain window of w inside it), so the cost stays O(n·(w + g)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionOutput,
    Capabilities,
    MultiHeadAttention,
    register_preset,
    register_variant,
)
from attnbench.blocksparse import (
    BlockPart,
    ColumnPart,
    SparsePattern,
    sparse_attention,
    window_layout,
)


@dataclass
class LongformerOptions:
    window: int = 16  # w: keys attended on each side (causal: to the left)
    global_positions: tuple[int, ...] = field(default=(0,))  # global tokens; (0,) = [CLS]
    separate_global: bool = True  # Q_g, K_g, V_g for the global rows (paper §3.1)
    # d: the window's keys are every d-th token, up to w·d away (1 = plain); or d_h per head
    dilation: int | tuple[int, ...] = 1

    def __post_init__(self) -> None:
        self.global_positions = tuple(sorted({int(p) for p in self.global_positions}))
        if isinstance(self.dilation, list | tuple):
            self.dilation = tuple(self.dilation)
            if not self.dilation:
                raise ValueError("dilation: give one value, or one per head; got an empty list")
        values = self.dilation if isinstance(self.dilation, tuple) else (self.dilation,)
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in values):
            raise ValueError(f"dilation must be ≥ 1 (an integer per head), got {self.dilation}")
        if self.window < 0:
            raise ValueError(f"window must be ≥ 0, got {self.window}")
        if any(p < 0 for p in self.global_positions):
            raise ValueError(f"global_positions must be ≥ 0, got {self.global_positions}")

    def per_head(self) -> tuple[int, ...] | None:
        """d_h of each head when ``dilation`` lists them, ``None`` for one d for all."""
        return self.dilation if isinstance(self.dilation, tuple) else None

    def distinct(self) -> tuple[int, ...]:
        """The dilations the heads use, each once, in increasing order."""
        return tuple(sorted(set(self.per_head() or (self.dilation,))))


def longformer_pattern(
    length: int,
    window: int,
    global_positions: tuple[int, ...],
    device: torch.device | None,
    dilation: int = 1,
) -> SparsePattern:
    """Window block part (global keys excluded) + global key columns + global rows.

    ``dilation`` d > 1: the block part runs over the positions regrouped by residue mod d
    (slot r·m + s holds position s·d + r, m = ⌈⌈n/d⌉ / block⌉·block), where the dilated
    window is a window of w slots inside each residue class.
    """
    glob = torch.tensor([p for p in global_positions if p < length], dtype=torch.long)
    glob = glob.to(device)
    is_global = torch.zeros(length, dtype=torch.bool, device=device)
    is_global[glob] = True
    if dilation == 1:
        block = max(1, min(window, length))
        reach = math.ceil(window / block)
        layout = window_layout(math.ceil(length / block), range(-reach, reach + 1), device)

        def window_of_locals(q: Tensor, k: Tensor) -> Tensor:
            return ((q - k).abs() <= window) & ~is_global[k.clamp(max=length - 1)]

        parts = [BlockPart(block, layout, predicate=window_of_locals), ColumnPart(glob)]
        return SparsePattern(parts, global_queries=glob)

    d = dilation
    per_class = math.ceil(length / d)  # positions in the longest residue class
    block = max(1, min(window, per_class))
    reach = math.ceil(window / block)
    class_blocks = math.ceil(per_class / block)
    m = class_blocks * block  # slots per residue class (positions ≥ length are padding)
    order = torch.arange(m, device=device)[None, :] * d + torch.arange(d, device=device)[:, None]
    inside = window_layout(class_blocks, range(-reach, reach + 1), device)  # (cb, kb)
    first = torch.arange(d, device=device)[:, None, None] * class_blocks  # (d, 1, 1)
    layout = torch.where(inside >= 0, inside + first, -1).flatten(0, 1)  # (d·cb, kb)

    def dilated_window_of_locals(q: Tensor, k: Tensor) -> Tensor:
        near = ((q - k).abs() <= window * d) & ((q - k) % d == 0)
        return near & ~is_global[k.clamp(max=length - 1)]

    part = BlockPart(block, layout, order=order.reshape(-1), predicate=dilated_window_of_locals)
    return SparsePattern([part, ColumnPart(glob)], global_queries=glob)


def _dense_window(w: int, d: int, local: list[int], n: int) -> str | None:
    """Why a window of w keys each side, dilation d, covers every pair of the non-global
    positions ``local`` at length n; ``None`` when it does not."""
    span = local[-1] - local[0] if local else 0
    if d > 1:
        if span > w * d or any((p - local[0]) % d for p in local):
            return None
        return (
            f"dilation {d}: the non-global positions ({len(local)} at n = {n}) are "
            f"multiples of {d} apart and span {span} ≤ w·d = {w * d}"
        )
    if span > w:
        return None
    if span == n - 1:
        return f"window {w} ≥ n − 1 = {n - 1}"
    return (
        f"window {w} ≥ {span}, the distance between the first and last non-global "
        f"positions ({local[0] if local else '–'} and {local[-1] if local else '–'}) "
        f"at n = {n}"
    )


@register_variant(
    "longformer",
    paper='Beltagy, Peters & Cohan 2020, "Longformer: The Long-Document Transformer"',
    summary="sliding window + global tokens",
)
class LongformerAttention(MultiHeadAttention):
    """Sliding-window attention with symmetric global attention on chosen positions."""

    Options = LongformerOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=False,
        padding_mask=True,
        time_complexity="O(n·(w + g)·d)",
        memory_complexity="O(n·(w + g))",
    )

    @classmethod
    def unsupported_dims(cls, options: LongformerOptions, dims: AttentionDims) -> str | None:
        per_head = options.per_head()
        if per_head is not None and len(per_head) != dims.n_heads:
            return (
                f"lists {len(per_head)} dilations (one per head) for a model with "
                f"{dims.n_heads} heads"
            )
        return None

    def __init__(self, dims: AttentionDims, options: LongformerOptions | None = None) -> None:
        super().__init__(dims, options)
        reason = self.unsupported_dims(self.options, dims)
        if reason is not None:
            raise ValueError(f"longformer: {reason}")
        self.global_proj: nn.ModuleDict | None = None
        if self.options.separate_global:
            self.global_proj = nn.ModuleDict(
                {name: nn.Linear(dims.d_model, dims.n_heads * dims.head_dim) for name in "qkv"}
            )
            for name, local in zip("qkv", (self.q_proj, self.k_proj, self.v_proj), strict=True):
                self.global_proj[name].load_state_dict(local.state_dict())

    @classmethod
    def dense_reason(cls, options: LongformerOptions, n: int) -> str | None:
        """Dense once the window spans every pair of non-global positions (a pair with a
        global position is always covered). With dilation d > 1 the window covers a pair
        only at a distance that is a multiple of d, up to w·d: dense once the non-global
        positions all have the same residue mod d (a single one, say, or globals at every
        other position for d = 2) and span at most w·d. With a dilation per head, dense
        when it is for every head's."""
        glob = {p for p in options.global_positions if p < n}
        local = [p for p in range(n) if p not in glob]
        reasons = [_dense_window(options.window, d, local, n) for d in options.distinct()]
        if any(reason is None for reason in reasons):
            return None
        how = "; ".join(str(reason) for reason in reasons)
        if options.separate_global and glob:
            how += " (the global rows with their own Q_g, K_g, V_g)"
        return how

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        if source is not None:
            raise ValueError("longformer is self-attention only (cross_attention=False)")
        opts: LongformerOptions = self.options
        length = x.shape[1]
        q = self.split_heads(self.q_proj(x))  # (B, H, T, dh)
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(self.v_proj(x))
        global_qkv = None
        glob = [p for p in opts.global_positions if p < length]
        if self.global_proj is not None and glob:
            global_qkv = (
                self.split_heads(self.global_proj["q"](x[:, glob])),  # (B, H, g, dh)
                self.split_heads(self.global_proj["k"](x)),  # (B, H, T, dh)
                self.split_heads(self.global_proj["v"](x)),
            )
        dropout_p = self.attn_dropout.p if self.training else 0.0

        def attend(d: int, heads: slice | list[int]) -> tuple[Tensor, Tensor | None]:
            """Attention of ``heads``, all with dilation d: (B, h, T, dh), weights or None."""
            pattern = longformer_pattern(length, opts.window, opts.global_positions, x.device, d)
            return sparse_attention(
                q[:, heads],
                k[:, heads],
                v[:, heads],
                pattern,
                ctx.mask,
                dropout_p=dropout_p,
                need_weights=ctx.need_weights,
                global_qkv=None if global_qkv is None else tuple(t[:, heads] for t in global_qkv),
            )

        dilations = opts.distinct()
        if len(dilations) == 1:
            out, weights = attend(dilations[0], slice(None))
        else:  # a dilation per head: the heads of one dilation share a pattern
            per_head = opts.per_head() or ()
            out = torch.empty_like(q)
            weights = q.new_empty(*q.shape[:3], length) if ctx.need_weights else None
            for d in dilations:
                heads = [h for h, d_h in enumerate(per_head) if d_h == d]
                out[:, heads], part_weights = attend(d, heads)
                if weights is not None and part_weights is not None:
                    weights[:, heads] = part_weights
        return AttentionOutput(
            out=self.project_out(out, ctx.head_mask),
            weights=weights if ctx.need_weights else None,
        )


register_preset("longformer-32", "longformer", window=32)
# Two of four heads dilated (d = 2 and 4, reaching 32 and 64 tokens at w = 16), two local:
# the paper's multi-head setting (its character LM dilates 2 heads). Needs 4 heads.
register_preset("longformer-dilated", "longformer", dilation=(1, 1, 2, 4))
