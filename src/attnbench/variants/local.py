"""Local attention: each query attends only to keys near it.

Sliding window (Beltagy, Peters & Cohan 2020, "Longformer: The Long-Document
Transformer", the window part; also the local 1D attention of Parmar et al. 2018,
"Image Transformer"). With window w (tokens on each side)::

    A_i = { j : |i − j| ≤ w }            (bidirectional)
    A_i = { j : 0 ≤ i − j ≤ w }          (causal: the window to the left only)
    Attention(Q, K, V)_i = softmax_{j ∈ A_i}(q_i·k_j / √d) V

``blocked=True`` is Parmar et al.'s blocked form instead: the sequence is cut into
query blocks of w tokens, and block b attends to every key in blocks b − 1, b, b + 1
(causal: b − 1 and b, with the causal mask inside) — cheaper to gather, but the
neighbourhood depends on where a token sits in its block.

Computed by :mod:`attnbench.blocksparse` in blocks of ``min(w, n)`` tokens, each query
block gathering the key blocks that cover its window: time O(n·w·d), memory O(n·w).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from attnbench.attention import Capabilities, register_preset, register_variant
from attnbench.blocksparse import BlockPart, BlockSparseAttention, SparsePattern, window_layout


@dataclass
class LocalOptions:
    window: int = 16  # w: keys attended on each side of the query (causal: to its left)
    blocked: bool = False  # Image Transformer's blocked local attention (blocks of w tokens)

    def __post_init__(self) -> None:
        if self.window < (1 if self.blocked else 0):
            raise ValueError(f"window must be ≥ {1 if self.blocked else 0}, got {self.window}")


def local_pattern(
    length: int,
    window: int,
    causal: bool,
    blocked: bool = False,
    device: torch.device | None = None,
) -> SparsePattern:
    """The local pattern over ``length`` positions as one block part."""
    if blocked:
        n_blocks = math.ceil(length / window)
        offsets = range(-1, 1) if causal else range(-1, 2)
        layout = window_layout(n_blocks, offsets, device)
        return SparsePattern([BlockPart(window, layout)])
    block = max(1, min(window, length))  # computation block: covers the window in few blocks
    reach = math.ceil(window / block)  # key blocks needed on each side
    offsets = range(-reach, 1) if causal else range(-reach, reach + 1)
    layout = window_layout(math.ceil(length / block), offsets, device)

    def in_window(q: Tensor, k: Tensor) -> Tensor:
        return (q - k).abs() <= window

    return SparsePattern([BlockPart(block, layout, predicate=in_window)])


@register_variant(
    "local",
    paper='Parmar et al. 2018, "Image Transformer"; Beltagy et al. 2020, "Longformer"',
    summary="sliding-window attention, |i − j| ≤ w",
)
class LocalAttention(BlockSparseAttention):
    """Sliding-window (or blocked) local attention."""

    Options = LocalOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=False,
        padding_mask=True,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope"}),
        time_complexity="O(n·w·d)",
        memory_complexity="O(n·w)",
    )

    @classmethod
    def dense_reason(cls, options: LocalOptions, n: int) -> str | None:
        """Sliding: dense once |i − j| ≤ w holds for every pair, w ≥ n − 1. Blocked: dense
        once the sequence is at most 2 blocks of w (each block sees its neighbour)."""
        w = options.window
        if options.blocked:
            n_blocks = math.ceil(n / w)
            if n_blocks <= 2:
                return f"blocked, blocks of {w}: n = {n} is {n_blocks} ≤ 2 neighbouring blocks"
            return None
        if w >= n - 1:
            return f"window {w} ≥ n − 1 = {n - 1}"
        return None

    def pattern(self, length: int, causal: bool, device: torch.device) -> SparsePattern:
        opts: LocalOptions = self.options
        return local_pattern(length, opts.window, causal, opts.blocked, device)


register_preset("local-32", "local", window=32)
register_preset("local-blocked-32", "local", window=32, blocked=True)
