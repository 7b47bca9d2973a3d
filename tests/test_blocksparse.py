"""The shared block-sparse computation against independent dense references.

Patterns here are arbitrary (random layouts, permuted orders, predicates, column parts,
global rows), and each reference mask is written out pair by pair from the pattern's
definition, then handed to PyTorch's ``scaled_dot_product_attention``. The FlexAttention
path (the one used on CUDA) runs eagerly on CPU in this torch, so it is compared with
the gathered path directly, and its ``mask_mod`` and ``BlockMask`` are checked against
the gathered path's dense pattern.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from attn_cases import LargestAllocation
from torch import Tensor

from attnbench.attention import AttentionMask
from attnbench.blocksparse import (
    FLEX_TILE,
    BlockPart,
    ColumnPart,
    SparsePattern,
    block_part_dense,
    dense_pattern,
    flex_block_mask,
    make_mask_mod,
    sparse_attention,
    window_layout,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # eager flex on CPU warns

B, H, DH = 2, 4, 8
ATOL = 1e-10  # float64


def qkv(t: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, t, DH, generator=gen, dtype=dtype) for _ in range(3))


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------
def reference_part_mask(part: BlockPart | ColumnPart, t: int, causal: bool) -> Tensor:
    """(H|1, T, T) bool, pair by pair from the part's definition."""
    if isinstance(part, ColumnPart):
        mask = torch.zeros(1, t, t, dtype=torch.bool)
        for i in range(t):
            for j in part.keys.tolist():
                ok = j < t and (not causal or j <= i)
                if ok and part.predicate is not None:
                    ok = bool(part.predicate(torch.tensor(i), torch.tensor(j)))
                mask[0, i, j] = ok
        return mask
    layout = part.layout if part.layout.dim() == 3 else part.layout[None]
    n = part.n_blocks * part.block
    pos = part.order.tolist() if part.order is not None else list(range(n))
    mask = torch.zeros(layout.shape[0], t, t, dtype=torch.bool)
    for h in range(layout.shape[0]):
        for q_slot in range(n):
            i = pos[q_slot]
            if i >= t:
                continue
            for kblock in layout[h, q_slot // part.block].tolist():
                if kblock < 0:
                    continue
                for k_slot in range(kblock * part.block, (kblock + 1) * part.block):
                    j = pos[k_slot]
                    if j >= t or (causal and j > i):
                        continue
                    if part.predicate is None or bool(
                        part.predicate(torch.tensor(i), torch.tensor(j))
                    ):
                        mask[h, i, j] = True
    return mask


def reference_pattern_mask(pattern: SparsePattern, t: int, causal: bool) -> Tensor:
    mask = torch.zeros(H, t, t, dtype=torch.bool)
    for part in pattern.parts:
        heads = list(range(H)) if part.heads is None else list(part.heads)
        mask[heads] |= reference_part_mask(part, t, causal)
    if pattern.global_queries is not None:
        for i in pattern.global_queries.tolist():
            if i < t:
                mask[:, i, :] = True if not causal else torch.arange(t) <= i
    return mask


def reference_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    """SDPA with an explicit mask; rows with no allowed key → 0."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return out.masked_fill(~allowed.any(-1, keepdim=True), 0.0).nan_to_num(0.0)


def random_layout(n_blocks: int, kb: int, heads: int | None, seed: int) -> Tensor:
    """Distinct random key blocks per query block, some slots empty (−1)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (heads or 1, n_blocks, n_blocks)
    picked = torch.rand(shape, generator=gen).argsort(-1)[..., :kb]
    empty = torch.rand(picked.shape, generator=gen) < 0.25
    layout = torch.where(empty, -1, picked)
    return layout if heads else layout[0]


def strided_order(t: int, stride: int) -> tuple[Tensor, int]:
    m = math.ceil(t / stride)
    order = torch.arange(m)[None, :] * stride + torch.arange(stride)[:, None]
    return order.reshape(-1), m


def patterns(t: int) -> dict[str, SparsePattern]:
    """A spread of patterns over t positions (t = 29 leaves padded blocks)."""
    order, m = strided_order(t, 5)
    glob = torch.tensor([0, 11])
    is_glob = torch.zeros(t, dtype=torch.bool)
    is_glob[glob] = True
    return {
        "band": SparsePattern(
            [
                BlockPart(
                    4,
                    window_layout(math.ceil(t / 4), range(-1, 2)),
                    predicate=lambda q, k: (q - k).abs() <= 3,
                )
            ]
        ),
        "random-layout": SparsePattern([BlockPart(4, random_layout(math.ceil(t / 4), 3, None, 1))]),
        "per-head-layout": SparsePattern([BlockPart(3, random_layout(math.ceil(t / 3), 4, H, 2))]),
        "permuted-order": SparsePattern(
            [
                BlockPart(
                    m,
                    torch.arange(5)[:, None],
                    order=order,
                    predicate=lambda q, k: (q - k) % 5 == 0,
                )
            ]
        ),
        "two-parts-by-heads": SparsePattern(
            [
                BlockPart(5, window_layout(math.ceil(t / 5), [0]), heads=(0, 2)),
                ColumnPart(torch.arange(4, t, 5), heads=(1, 3)),
            ]
        ),
        "merged-parts+global": SparsePattern(
            [
                BlockPart(
                    4,
                    window_layout(math.ceil(t / 4), range(-1, 2)),
                    predicate=lambda q, k: ((q - k).abs() <= 2) & ~is_glob[k.clamp(max=t - 1)],
                ),
                ColumnPart(glob),
            ],
            global_queries=glob,
        ),
    }


T = 29
NAMES = list(patterns(T))


# ---------------------------------------------------------------------------------------
# Output and weights against the reference
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_output_matches_dense_reference(name: str, causal: bool) -> None:
    pattern = patterns(T)[name]
    q, k, v = qkv(T)
    pad = padding([T, 17], T)
    allowed = reference_pattern_mask(pattern, T, causal)[None] & pad[:, None, None, :]
    out, weights = sparse_attention(
        q, k, v, pattern, AttentionMask(causal=causal, key_padding=pad), need_weights=True
    )
    torch.testing.assert_close(out, reference_attention(q, k, v, allowed), atol=ATOL, rtol=0)
    assert weights is not None and weights.shape == (B, H, T, T)
    assert torch.all(weights[~allowed] == 0)
    assert torch.all(weights[allowed] > 0)
    has_key = allowed.any(-1)
    torch.testing.assert_close(weights.sum(-1), has_key.to(weights.dtype), atol=ATOL, rtol=0)
    torch.testing.assert_close(weights @ v, out, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_dense_pattern_helper_matches_reference(name: str) -> None:
    pattern = patterns(T)[name]
    for causal in (False, True):
        assert torch.equal(
            dense_pattern(pattern, T, H, causal), reference_pattern_mask(pattern, T, causal)
        )


def test_reference_is_sensitive_to_the_pattern() -> None:
    """Guard: the comparisons above would fail with the pattern ignored."""
    q, k, v = qkv(T)
    out, _ = sparse_attention(q, k, v, patterns(T)["band"], AttentionMask())
    full = reference_attention(q, k, v, torch.ones(T, T, dtype=torch.bool))
    assert (out - full).abs().max() > 1e-2


def test_global_rows_use_the_given_projections() -> None:
    pattern = patterns(T)["merged-parts+global"]
    q, k, v = qkv(T)
    qg_all, kg, vg = qkv(T, seed=5)
    glob = pattern.global_queries
    assert glob is not None
    out, _ = sparse_attention(
        q, k, v, pattern, AttentionMask(), global_qkv=(qg_all[:, :, glob], kg, vg)
    )
    plain, _ = sparse_attention(q, k, v, pattern, AttentionMask())
    local = torch.ones(T, dtype=torch.bool)
    local[glob] = False
    torch.testing.assert_close(out[:, :, local], plain[:, :, local], atol=ATOL, rtol=0)
    want = F.scaled_dot_product_attention(qg_all[:, :, glob], kg, vg)
    torch.testing.assert_close(out[:, :, glob], want, atol=ATOL, rtol=0)


def test_query_with_no_key_gets_zero_and_finite_gradients() -> None:
    pattern = patterns(T)["random-layout"]
    q, k, v = (x.clone().requires_grad_() for x in qkv(T))
    pad = padding([T, 0], T)  # the second sequence is all padding
    mask = AttentionMask(causal=True, key_padding=pad)
    out, _ = sparse_attention(q, k, v, pattern, mask)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    empty = ~reference_pattern_mask(pattern, T, True).any(-1)  # rows without keys
    assert empty.any()
    assert torch.all(out[0][empty] == 0)
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_bfloat16_is_close_to_float32() -> None:
    pattern = patterns(T)["merged-parts+global"]
    q, k, v = qkv(T, dtype=torch.float32)
    mask = AttentionMask(causal=True, key_padding=padding([T, 20], T))
    want, _ = sparse_attention(q, k, v, pattern, mask)
    got, _ = sparse_attention(*(x.bfloat16() for x in (q, k, v)), pattern, mask)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=5e-2, rtol=0)


def test_dropout_drops_weights_only_when_asked() -> None:
    pattern = patterns(T)["band"]
    q, k, v = qkv(T)
    plain, _ = sparse_attention(q, k, v, pattern, AttentionMask())
    again, _ = sparse_attention(q, k, v, pattern, AttentionMask(), dropout_p=0.0)
    torch.manual_seed(0)
    dropped, _ = sparse_attention(q, k, v, pattern, AttentionMask(), dropout_p=0.5)
    assert torch.equal(plain, again)
    assert torch.isfinite(dropped).all() and (dropped - plain).abs().max() > 1e-3


def test_rejects_what_it_cannot_do() -> None:
    q, k, v = qkv(T)
    pattern = patterns(T)["band"]
    with pytest.raises(ValueError, match="self-attention"):
        sparse_attention(q, k[:, :, :10], v[:, :, :10], pattern, AttentionMask())
    with pytest.raises(ValueError, match="memory"):
        sparse_attention(q, k, v, pattern, AttentionMask(causal=True, memory_len=3))
    with pytest.raises(ValueError, match="impl"):
        sparse_attention(q, k, v, pattern, AttentionMask(), impl="triton")


# ---------------------------------------------------------------------------------------
# The FlexAttention path (the CUDA one), run eagerly on CPU
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "causal"), [(name, True) for name in NAMES] + [("merged-parts+global", False)]
)
def test_flex_path_equals_gather_path(name: str, causal: bool) -> None:
    """(Each eager flex call is traced anew, about a second, so few cases run here.)"""
    pattern = patterns(T)[name]
    q, k, v = qkv(T)
    mask = AttentionMask(causal=causal, key_padding=padding([T, 13], T))
    gathered, _ = sparse_attention(q, k, v, pattern, mask, impl="gather")
    flexed, _ = sparse_attention(q, k, v, pattern, mask, impl="flex")
    torch.testing.assert_close(flexed, gathered, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_mask_mod_evaluated_densely_equals_the_layout_pattern(name: str) -> None:
    for part in patterns(T)[name].parts:
        if not isinstance(part, BlockPart):
            continue
        for causal in (False, True):
            via_mod = block_part_dense(part, T, causal, via="mask_mod")
            via_layout = block_part_dense(part, T, causal, via="gather")
            assert torch.equal(via_mod, via_layout)
            assert torch.equal(via_layout, reference_part_mask(part, T, causal))


def test_flex_block_mask_is_sparse_and_covers_the_pattern() -> None:
    """Tiles the BlockMask skips hold no allowed pair; a band keeps O(n/tile) tiles."""
    t, window = 2048, 16
    part = BlockPart(
        window,
        window_layout(t // window, range(-1, 2)),
        predicate=lambda q, k: (q - k).abs() <= window,
    )
    block_mask = flex_block_mask(part, make_mask_mod(part, t, AttentionMask()))
    tiles = block_mask.to_dense()[0, 0].bool()  # (nQt, nKt)
    n_tiles = t // FLEX_TILE
    assert tiles.shape == (n_tiles, n_tiles)
    assert tiles.sum() <= 3 * n_tiles  # banded, not dense
    dense = block_part_dense(part, t)[0]
    touched = dense.view(n_tiles, FLEX_TILE, n_tiles, FLEX_TILE).any(dim=(1, 3))
    assert torch.equal(tiles, touched)


# ---------------------------------------------------------------------------------------
# Memory: nothing of size n² is allocated
# ---------------------------------------------------------------------------------------
def test_memory_is_linear_in_length() -> None:
    t = 4096
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, t, DH, generator=gen) for _ in range(3))
    pattern = SparsePattern(
        [
            BlockPart(
                32, window_layout(t // 32, range(-1, 2)), predicate=lambda q, k: (q - k).abs() <= 32
            ),
            ColumnPart(torch.tensor([0, 1])),
        ],
        global_queries=torch.tensor([0, 1]),
    )
    mask = AttentionMask(causal=True, key_padding=torch.ones(1, t, dtype=torch.bool))
    with LargestAllocation() as probe:
        out, weights = sparse_attention(q, k, v, pattern, mask)
    assert weights is None and out.shape == (1, 1, t, DH)
    n_squared = t * t * 4  # bytes of one float32 (n × n) matrix
    assert probe.largest < n_squared / 16
    with LargestAllocation() as dense_probe:  # guard: the probe does see n² allocations
        short = (x[..., :1024, :] for x in (q, k, v))
        sparse_attention(*short, pattern, AttentionMask(), need_weights=True)
    assert dense_probe.largest >= 1024 * 1024 * 4
