"""BigBird: block window + global blocks + random blocks.

Zaheer et al. 2020, "Big Bird: Transformers for Longer Sequences" (the ITC form, with
global tokens taken from the sequence). The sequence is cut into nb blocks of b tokens;
with the global blocks 𝒢 and r random blocks per query block, query block i (not
global) attends to key blocks::

    W(i) = { i − 1, i, i + 1 } \\ 𝒢                 (window of 3 blocks)
    R(i) = r blocks drawn uniformly, without repetition, from the rest (∉ W(i), ∉ 𝒢)
    A(i) = W(i) ∪ R(i) ∪ 𝒢
    𝒢 = { 0, …, g − 1 } ∪ { nb − 1 }                (the last block: option
                                                      ``last_block_global``, default on)

and the global tokens attend to every key (dense rows); every token attends to them
(the global columns). o_i = softmax_{j ∈ A}(q_i·k_j / √d) V as usual. Causal use keeps
j ≤ i: the window is {i − 1, i} and random blocks come from the left (≤ i − 2); the
last block's keys are then seen by its own queries only, and its queries see every
earlier key.

Which blocks are global. The authors' ITC code (google-research/bigbird,
``bigbird_block_sparse_attention``; also Hugging Face's port) makes the first *and the
last* block global — 2·b global tokens — and draws random blocks from the blocks between
them. ``last_block_global=True`` (the default) follows it; ``global_blocks`` = g sets how
many blocks at the start are global (default 1: the code's first block). ``last_block_global=False``
keeps only the first g, the behaviour of this module before the option existed (the
results committed before it were produced that way). The last block is the last block of
the input as given, padding included (the code's too: it pads to the model length).

The random layout R is drawn once, at construction, for ``dims.max_len`` from a
generator seeded with ``seed`` and the layer index (different layers get different
draws; each head draws its own, as in the authors' code), and kept as a buffer, so it is
saved with the model. Because the layout is fixed for ``max_len``, the variant asks for
fixed-length batches (``variable_length=False``); a shorter input drops the drawn blocks
past its end and those that are its own last block when that block is global.

Cost (:mod:`attnbench.blocksparse`): window and random blocks as one block part with a
per-head layout, global keys as G·b columns (G = g + 1 with the last block), global rows
dense: time O(n·(3 + r + G)·b·d), memory O(n·(3 + r + G)·b).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attnbench.attention import AttentionDims, Capabilities, register_preset, register_variant
from attnbench.blocksparse import BlockPart, BlockSparseAttention, ColumnPart, SparsePattern


@dataclass
class BigBirdOptions:
    block: int = 16  # b: tokens per block
    random_blocks: int = 2  # r: random key blocks per query block
    global_blocks: int = 1  # g: blocks at the start whose tokens are global
    seed: int = 0  # seeds the random layout, drawn once at construction
    # the last block is global too (the authors' ITC code); False: only the first g
    last_block_global: bool = True

    def __post_init__(self) -> None:
        if self.block < 1:
            raise ValueError(f"block must be ≥ 1, got {self.block}")
        if self.random_blocks < 0 or self.global_blocks < 0:
            raise ValueError("random_blocks and global_blocks must be ≥ 0")


def is_global_block(n_blocks: int, global_blocks: int, last_block_global: bool) -> torch.Tensor:
    """(nb,) bool: the first ``global_blocks`` blocks, and the last if ``last_block_global``."""
    glob = torch.arange(n_blocks) < global_blocks
    if last_block_global and n_blocks > 0:
        glob[-1] = True
    return glob


def window_blocks(
    n_blocks: int, global_blocks: int, causal: bool, last_block_global: bool = False
) -> torch.Tensor:
    """(nb, 3) (causal: (nb, 2)) window key blocks per query block; −1 = none/global."""
    offsets = torch.tensor([-1, 0] if causal else [-1, 0, 1])
    layout = torch.arange(n_blocks)[:, None] + offsets[None, :]
    ok = (layout >= global_blocks) & (layout < n_blocks)
    if last_block_global:
        ok &= layout != n_blocks - 1
    return torch.where(ok, layout, -1)


def draw_random_blocks(
    n_heads: int,
    n_blocks: int,
    random_blocks: int,
    global_blocks: int,
    causal: bool,
    generator: torch.Generator,
    last_block_global: bool = False,
) -> torch.Tensor:
    """(H, nb, r) random key blocks per head and query block; −1 where none is left.

    Candidates for query block i: not global, not in its window (and ≤ i − 2 if causal);
    global query blocks get none (their rows are dense anyway). The uniform keys are
    drawn for every (head, i, j) whatever is global, so ``last_block_global=False``
    reproduces the draws made before the option existed.
    """
    i = torch.arange(n_blocks)[:, None]
    j = torch.arange(n_blocks)[None, :]
    candidate = (j >= global_blocks) & (i >= global_blocks)
    if last_block_global:
        candidate &= (j != n_blocks - 1) & (i != n_blocks - 1)
    candidate &= (j <= i - 2) if causal else ((j - i).abs() > 1)
    if random_blocks == 0:
        return torch.full((n_heads, n_blocks, 0), -1, dtype=torch.long)
    keys = torch.rand(n_heads, n_blocks, n_blocks, generator=generator)
    keys = torch.where(candidate, keys, -1.0)  # non-candidates sort last
    k = min(random_blocks, n_blocks)
    values, picked = keys.topk(k, dim=-1)  # a uniform draw without replacement
    picked = torch.where(values >= 0, picked, -1)
    if k < random_blocks:
        picked = torch.cat([picked, torch.full((n_heads, n_blocks, random_blocks - k), -1)], dim=-1)
    return picked


@register_variant(
    "bigbird",
    paper='Zaheer et al. 2020, "Big Bird: Transformers for Longer Sequences"',
    summary="block window + global + random blocks",
)
class BigBirdAttention(BlockSparseAttention):
    """BigBird-ITC block-sparse attention with a seeded random layout."""

    Options = BigBirdOptions
    capabilities = Capabilities(
        causal=True,
        cross_attention=False,
        padding_mask=True,
        variable_length=False,
        position_schemes=frozenset({"learned", "sinusoidal", "none", "rope"}),
        time_complexity="O(n·(3 + r + g)·b·d)",
        memory_complexity="O(n·(3 + r + g)·b)",
    )

    def __init__(self, dims: AttentionDims, options: BigBirdOptions | None = None) -> None:
        super().__init__(dims, options)
        opts: BigBirdOptions = self.options
        generator = torch.Generator().manual_seed(opts.seed * 1_000_003 + dims.layer_index)
        n_blocks = math.ceil(dims.max_len / opts.block)
        random = draw_random_blocks(
            dims.n_heads,
            n_blocks,
            opts.random_blocks,
            opts.global_blocks,
            dims.is_causal,
            generator,
            opts.last_block_global,
        )
        self.random_layout: torch.Tensor
        self.register_buffer("random_layout", random)  # (H, nb_max, r), saved with the model

    @classmethod
    def dense_reason(cls, options: BigBirdOptions, n: int) -> str | None:
        """Dense once every query block sees every key block: with G global blocks (the
        first g, and the last), a non-global block at either end of the non-global run
        has nb − G − 2 blocks outside its window and the globals (at most, in either
        direction), and takes all of them when they are no more than r (random blocks
        are drawn without repetition among exactly those)."""
        b, g, r = options.block, options.global_blocks, options.random_blocks
        n_blocks = math.ceil(n / b)
        n_global = int(is_global_block(n_blocks, g, options.last_block_global).sum())
        outside = max(0, n_blocks - n_global - 2)
        if outside > r:
            return None
        which = f"{g} global block(s)"
        if options.last_block_global:
            which = f"{n_global} global block(s) (the first {g} and the last)"
        return (
            f"n = {n} is {n_blocks} block(s) of {b}: {which}, a 3-block window "
            f"and {r} random blocks reach every block"
        )

    def pattern(self, length: int, causal: bool, device: torch.device) -> SparsePattern:
        opts: BigBirdOptions = self.options
        if length > self.dims.max_len:
            raise ValueError(f"bigbird: length {length} > max_len {self.dims.max_len}")
        n_blocks = math.ceil(length / opts.block)
        last = opts.last_block_global
        window = window_blocks(n_blocks, opts.global_blocks, causal, last).to(device)
        random = self.random_layout[:, :n_blocks]  # (H, nb, r)
        # a shorter input: drop blocks past it, and its last block when that is global
        keep = random < n_blocks
        if last:
            keep &= random != n_blocks - 1
        random = torch.where(keep, random, -1)
        layout = torch.cat([window.expand(random.shape[0], -1, -1), random], dim=-1)
        glob_blocks = is_global_block(n_blocks, opts.global_blocks, last)
        tokens = glob_blocks.repeat_interleave(opts.block)[:length]  # (T,) global tokens
        glob = torch.nonzero(tokens).flatten().to(device)
        parts = [BlockPart(opts.block, layout), ColumnPart(glob)]
        return SparsePattern(parts, global_queries=glob)


register_preset("bigbird-64", "bigbird", block=64, random_blocks=3, global_blocks=2)
