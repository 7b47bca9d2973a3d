"""Sparse Transformer: factorized strided and fixed attention patterns.

Child, Gray, Radford & Sutskever 2019, "Generating Long Sequences with Sparse
Transformers". Each pattern has two components A⁽¹⁾, A⁽²⁾ with stride l (≈ √n); in
the paper's (causal) setting, for query i and key j ≤ i::

    strided:  A⁽¹⁾_i = { j : i − l ≤ j ≤ i }          A⁽²⁾_i = { j : (i − j) mod l = 0 }
    fixed:    A⁽¹⁾_i = { j : ⌊j/l⌋ = ⌊i/l⌋ }          A⁽²⁾_i = { j : j mod l ≥ l − c }

(the fixed pattern's A⁽²⁾ are c "summary" positions at the end of every block of l).
Non-causal use drops j ≤ i: A⁽¹⁾ strided becomes |i − j| ≤ l, and the strided and
summary positions are visible in both directions. Two layers compose to full
connectivity: every j ≤ i is reached by a path i → k → j through A⁽¹⁾ and A⁽²⁾.

How the two components share a model (``combine``; the paper's §4.3 lists all three):

- ``"heads"`` (default): even heads attend with A⁽¹⁾, odd heads with A⁽²⁾, every layer;
- ``"merged"``: every head attends to A⁽¹⁾ ∪ A⁽²⁾ (one softmax over the union);
- ``"layers"``: layer r attends with A⁽¹⁾ if r is even, A⁽²⁾ if odd (``dims.layer_index``).

Cost (:mod:`attnbench.blocksparse`): A⁽¹⁾ strided is a band (blocks of l); A⁽²⁾ strided
is a band too once positions are regrouped by i mod l (blocks of ⌈n/l⌉); fixed A⁽¹⁾
is block-diagonal and A⁽²⁾ is c·n/l columns. Time O(n·(l + n/l)·d) — O(n√n·d) at
l = √n — and memory O(n·(l + n/l)) (fixed: O(n·(l + c·n/l))). The paper's further
refinement for fixed heads (different heads using different summary offsets) is not
implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attnbench.attention import AttentionDims, Capabilities, register_preset, register_variant
from attnbench.blocksparse import (
    BlockPart,
    BlockSparseAttention,
    ColumnPart,
    Part,
    SparsePattern,
    window_layout,
)

PATTERNS = ("strided", "fixed")
COMBINES = ("heads", "merged", "layers")


@dataclass
class SparseTransformerOptions:
    pattern: str = "strided"  # "strided" | "fixed"
    stride: int = 16  # l: block length and stride (≈ √n in the paper)
    c: int = 4  # fixed pattern: summary positions at the end of each block, 1 ≤ c ≤ l
    combine: str = "heads"  # "heads" | "merged" | "layers": how A⁽¹⁾ and A⁽²⁾ are used

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern={self.pattern!r}; valid: {', '.join(PATTERNS)}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine={self.combine!r}; valid: {', '.join(COMBINES)}")
        if self.stride < 1:
            raise ValueError(f"stride must be ≥ 1, got {self.stride}")
        if not 1 <= self.c <= self.stride:
            raise ValueError(f"c must be in [1, stride={self.stride}], got {self.c}")


def strided_parts(
    length: int, stride: int, causal: bool, disjoint: bool, device: torch.device | None
) -> tuple[BlockPart, BlockPart]:
    """A⁽¹⁾ (the last l + 1 positions) and A⁽²⁾ (every l-th position) as block parts.

    ``disjoint``: A⁽²⁾ leaves out what A⁽¹⁾ covers (for a merged softmax).
    """
    l = stride  # noqa: E741 - the paper's name
    offsets = range(-1, 1) if causal else range(-1, 2)
    near = BlockPart(
        l,
        window_layout(math.ceil(length / l), offsets, device),
        predicate=lambda q, k: (q - k).abs() <= l,
    )
    # regroup positions by residue: slot r·m + s holds position s·l + r, so each block of
    # m = ⌈n/l⌉ slots is one residue class and A⁽²⁾ is "attend within your block"
    m = math.ceil(length / l)
    order = torch.arange(m, device=device)[None, :] * l + torch.arange(l, device=device)[:, None]
    same_block = torch.arange(l, device=device)[:, None]  # (l, 1): block b attends to b

    def every_lth(q: Tensor, k: Tensor) -> Tensor:
        ok = (q - k) % l == 0
        return ok & ((q - k).abs() > l) if disjoint else ok

    far = BlockPart(m, same_block, order=order.reshape(-1), predicate=every_lth)
    return near, far


def fixed_parts(
    length: int, stride: int, c: int, disjoint: bool, device: torch.device | None
) -> tuple[BlockPart, ColumnPart]:
    """A⁽¹⁾ (own block of l) as a block part, A⁽²⁾ (summary columns) as a column part."""
    l = stride  # noqa: E741 - the paper's name
    own = BlockPart(
        l,
        window_layout(math.ceil(length / l), [0], device),
        predicate=lambda q, k: q // l == k // l,
    )
    positions = torch.arange(length, device=device)
    summary = positions[positions % l >= l - c]
    columns = ColumnPart(summary, predicate=(lambda q, k: q // l != k // l) if disjoint else None)
    return own, columns


def sparse_transformer_pattern(
    length: int,
    opts: SparseTransformerOptions,
    causal: bool,
    n_heads: int,
    layer_index: int = 0,
    device: torch.device | None = None,
) -> SparsePattern:
    merged = opts.combine == "merged"
    if opts.pattern == "strided":
        first, second = strided_parts(length, opts.stride, causal, merged, device)
    else:
        first, second = fixed_parts(length, opts.stride, opts.c, merged, device)
    parts: list[Part]
    if merged:
        parts = [first, second]
    elif opts.combine == "layers":
        parts = [first if layer_index % 2 == 0 else second]
    else:  # heads
        first.heads = tuple(range(0, n_heads, 2))
        second.heads = tuple(range(1, n_heads, 2))
        parts = [first, second]
    return SparsePattern(parts)


@register_variant(
    "sparse-strided",
    paper='Child et al. 2019, "Generating Long Sequences with Sparse Transformers"',
    summary="factorized strided / fixed sparse attention",
)
class SparseTransformerAttention(BlockSparseAttention):
    """Strided or fixed factorized attention (components on alternate heads by default)."""

    Options = SparseTransformerOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=False,
        padding_mask=True,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope"}),
        time_complexity="O(n·(l + n/l)·d)",
        memory_complexity="O(n·(l + n/l))",
    )

    @classmethod
    def unsupported_dims(cls, options: Any, dims: AttentionDims) -> str | None:
        if options.combine == "heads" and dims.n_heads < 2:
            return (
                f"needs 2 or more heads (combine='heads' splits them); the model has {dims.n_heads}"
            )
        return None

    def __init__(self, dims: AttentionDims, options: SparseTransformerOptions | None = None):
        super().__init__(dims, options)
        if self.options.combine == "heads" and dims.n_heads < 2:
            raise ValueError("combine='heads' needs at least 2 heads; use 'merged' or 'layers'")

    @classmethod
    def dense_reason(cls, options: SparseTransformerOptions, n: int) -> str | None:
        """Dense when A⁽¹⁾ ∪ A⁽²⁾ covers every pair (``merged``) or each of A⁽¹⁾, A⁽²⁾
        does alone (``heads``/``layers``: each head or layer attends with one of them).

        Strided: A⁽¹⁾ (|i − j| ≤ l) covers all pairs iff l ≥ n − 1, A⁽²⁾ ((i − j) mod l
        = 0) iff l = 1; their union iff either does (distance l + 1 is in neither).
        Fixed: A⁽¹⁾ (own block) iff n ≤ l, A⁽²⁾ (summary columns) iff c = l; the union
        iff either (a non-summary key in another block is in neither).
        """
        l, c = options.stride, options.c  # noqa: E741 - the paper's name
        if options.pattern == "strided":
            first = f"stride {l} ≥ n − 1 = {n - 1}: the band A⁽¹⁾ holds every pair"
            second = "stride 1: every key is on the strided component A⁽²⁾"
            covered = (l >= n - 1, l == 1 or n <= 1)
        else:
            first = f"stride {l} ≥ n = {n}: the sequence is one block of A⁽¹⁾"
            second = f"c = stride = {l}: every position is a summary column of A⁽²⁾"
            covered = (n <= l, c == l)
        reasons = [why for why, ok in zip((first, second), covered, strict=True) if ok]
        if options.combine == "merged":
            return reasons[0] if reasons else None
        return "; ".join(reasons) if len(reasons) == 2 else None

    def pattern(self, length: int, causal: bool, device: torch.device) -> SparsePattern:
        return sparse_transformer_pattern(
            length, self.options, causal, self.dims.n_heads, self.dims.layer_index, device
        )


register_preset("sparse-fixed", "sparse-strided", pattern="fixed", stride=16, c=4)
