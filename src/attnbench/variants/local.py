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

Attention sinks (option ``sinks`` = s, default 0: none; Xiao, Tian, Chen, Han & Lewis
2024, "Efficient Streaming Language Models with Attention Sinks", ICLR 2024 —
StreamingLLM): every query also attends to the first s tokens of the sequence, wherever
its window is::

    A_i = { j : |i − j| ≤ w } ∪ { j : j < s }      (causal: ∩ { j ≤ i })

one softmax over the union. The paper keeps the KV of the 4 initial tokens beside a
rolling window of recent ones, so that the softmax keeps the "sink" it learnt to park
attention on (preset ``streaming-llm``: s = 4, w = 16). Its setting is causal; here the
sinks are extra keys in both directions, and the sink positions themselves attend only
through their window (they are not global queries, unlike Longformer's global tokens).
Positions are the tokens' own: the paper's renumbering inside the rolling cache only
matters when decoding past the trained length, which a fixed window here never does.
Sinks apply to the sliding window only (not to ``blocked``).

Computed by :mod:`attnbench.blocksparse` in blocks of ``min(w, n)`` tokens, each query
block gathering the key blocks that cover its window (keys that are sinks left out), the
sinks as s key columns: time O(n·(w + s)·d), memory O(n·(w + s)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from attnbench.attention import Capabilities, register_preset, register_variant
from attnbench.blocksparse import (
    BlockPart,
    BlockSparseAttention,
    ColumnPart,
    SparsePattern,
    window_layout,
)


@dataclass
class LocalOptions:
    window: int = 16  # w: keys attended on each side of the query (causal: to its left)
    blocked: bool = False  # Image Transformer's blocked local attention (blocks of w tokens)
    sinks: int = 0  # s: the first s tokens are keys of every query (StreamingLLM); 0 = none

    def __post_init__(self) -> None:
        if self.window < (1 if self.blocked else 0):
            raise ValueError(f"window must be ≥ {1 if self.blocked else 0}, got {self.window}")
        if self.sinks < 0:
            raise ValueError(f"sinks must be ≥ 0, got {self.sinks}")
        if self.sinks and self.blocked:
            raise ValueError("sinks apply to the sliding window: use blocked=False with sinks > 0")


def local_pattern(
    length: int,
    window: int,
    causal: bool,
    blocked: bool = False,
    device: torch.device | None = None,
    sinks: int = 0,
) -> SparsePattern:
    """The local pattern over ``length`` positions: one block part (the window), plus a
    column part for the first ``sinks`` positions (the window then leaves them out)."""
    if sinks and blocked:
        raise ValueError("sinks apply to the sliding window, not to blocked local attention")
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

    if sinks == 0:
        return SparsePattern([BlockPart(block, layout, predicate=in_window)])

    def in_window_past_sinks(q: Tensor, k: Tensor) -> Tensor:
        return ((q - k).abs() <= window) & (k >= sinks)  # the sinks are the columns' keys

    columns = ColumnPart(torch.arange(min(sinks, length), device=device))
    return SparsePattern([BlockPart(block, layout, predicate=in_window_past_sinks), columns])


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
        once the sequence is at most 2 blocks of w (each block sees its neighbour).

        With s sinks, also once every key is a sink (s ≥ n); otherwise the pair (0, n − 1)
        still needs the window, so the sliding rule is unchanged. That is the
        bidirectional rule (``dense_reason`` takes no causal flag); under a causal mask the
        sinks and the window already cover every j ≤ i from w ≥ n − 1 − s on.
        """
        w = options.window
        if options.sinks >= n:
            return f"{options.sinks} sinks ≥ n = {n}: every key is a sink"
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
        return local_pattern(length, opts.window, causal, opts.blocked, device, opts.sinks)


register_preset("local-32", "local", window=32)
register_preset("local-blocked-32", "local", window=32, blocked=True)
register_preset(
    "streaming-llm",
    "local",
    sinks=4,
    paper='Xiao et al. 2024, "Efficient Streaming Language Models with Attention Sinks"',
    summary="sliding window + the first 4 tokens as attention sinks",
)
