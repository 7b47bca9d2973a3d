"""BigBird: the block pattern (window of 3 blocks + global blocks + r random blocks), the
seeded random layout kept as a buffer, and the output against SDPA with the dense mask.

Global blocks: the first G and, by default (``last_block_global``, the authors' ITC code),
the last; every pattern test runs both settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.attention import AttentionContext, AttentionDims, AttentionMask, get_variant
from attnbench.variants.bigbird import BigBirdAttention

B, D, H = 2, 16, 4
DH = D // H
ATOL = 1e-10  # float64
BLOCK, R, G = 4, 2, 1
T = 40  # 10 blocks


def build(
    seed: int = 0, layer_index: int = 0, max_len: int = T, causal: bool = False, **options
) -> BigBirdAttention:
    torch.manual_seed(0)
    dims = AttentionDims(
        d_model=D,
        n_heads=H,
        head_dim=DH,
        max_len=max_len,
        layer_index=layer_index,
        is_causal=causal,
    )
    options = {"block": BLOCK, "random_blocks": R, "global_blocks": G, "seed": seed, **options}
    attn = get_variant("bigbird").build(dims, options)
    assert isinstance(attn, BigBirdAttention)
    return attn.double().eval()


def inputs(t: int = T, seed: int = 1) -> Tensor:
    return torch.randn(B, t, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def global_blocks(n_blocks: int, last: bool) -> set[int]:
    return set(range(G)) | ({n_blocks - 1} if last else set())


def expected_blocks(random: Tensor, n_blocks: int, causal: bool, last: bool = True) -> Tensor:
    """(H, nb, nb) bool from the paper's definition and the drawn random blocks."""
    allowed = torch.zeros(H, n_blocks, n_blocks, dtype=torch.bool)
    glob = global_blocks(n_blocks, last)
    for h in range(H):
        for i in range(n_blocks):
            for j in range(n_blocks):
                window = j in ((i - 1, i) if causal else (i - 1, i, i + 1))
                drawn = j in random[h, i].tolist()
                allowed[h, i, j] = i in glob or j in glob or window or drawn
    return allowed


def expected_tokens(random: Tensor, t: int, causal: bool, last: bool = True) -> Tensor:
    n_blocks = -(-t // BLOCK)
    blocks = expected_blocks(random[:, :n_blocks], n_blocks, causal, last)
    tokens = blocks.repeat_interleave(BLOCK, 1).repeat_interleave(BLOCK, 2)[:, :t, :t]
    return tokens & torch.ones(t, t, dtype=torch.bool).tril() if causal else tokens


LAST = [True, False]  # last_block_global: the authors' code (default), the first G only


@pytest.mark.parametrize("last", LAST)
@pytest.mark.parametrize("causal", [False, True])
def test_weights_follow_the_block_pattern(causal: bool, last: bool) -> None:
    attn = build(causal=causal, last_block_global=last)
    ctx = AttentionContext(mask=AttentionMask(causal=causal), need_weights=True)
    with torch.no_grad():
        weights = attn(inputs(), None, ctx).weights
    assert weights is not None and weights.shape == (B, H, T, T)
    want = expected_tokens(attn.random_layout, T, causal, last)
    assert torch.equal(weights > 0, want.expand(B, H, T, T))
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T, dtype=torch.float64))
    # sparse: a non-global query block sees at most 3 + r + (its global blocks) blocks
    n_global = G + last
    rows = (weights[0] > 0).sum(-1)[:, G * BLOCK : T - BLOCK if last else T]
    assert (rows <= (3 + R + n_global) * BLOCK).all()


@pytest.mark.parametrize("last", LAST)
@pytest.mark.parametrize("causal", [False, True])
def test_output_matches_sdpa_with_the_dense_mask(causal: bool, last: bool) -> None:
    attn = build(causal=causal, last_block_global=last)
    x = inputs()
    pad = torch.arange(T)[None, :] < torch.tensor([T, 27])[:, None]
    allowed = expected_tokens(attn.random_layout, T, causal, last)[None] & pad[:, None, None, :]

    def heads(y: Tensor) -> Tensor:
        return y.view(B, -1, H, DH).transpose(1, 2)

    with torch.no_grad():
        got = attn(x, None, AttentionContext(mask=AttentionMask(causal, pad))).out
        q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        want = attn.out_proj(ref.transpose(1, 2).reshape(B, T, D))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("last", LAST)
@pytest.mark.parametrize("causal", [False, True])
def test_random_blocks_are_distinct_and_never_window_or_global(causal: bool, last: bool) -> None:
    attn = build(causal=causal, max_len=96, random_blocks=3, last_block_global=last)
    random = attn.random_layout
    n_blocks = 24
    glob = global_blocks(n_blocks, last)
    assert random.shape == (H, n_blocks, 3)
    for h in range(H):
        for i in range(n_blocks):
            drawn = [j for j in random[h, i].tolist() if j >= 0]
            if i in glob:
                assert drawn == []  # global rows are dense anyway
                continue
            window = {i - 1, i} if causal else {i - 1, i, i + 1}
            candidates = [j for j in range(n_blocks) if j not in window | glob]
            candidates = [j for j in candidates if j < i] if causal else candidates
            assert len(drawn) == min(3, len(candidates))  # r of them whenever possible
            assert len(set(drawn)) == len(drawn)  # no duplicates
            assert set(drawn) <= set(candidates)  # never window, global, or (causal) future


def test_random_layout_depends_on_seed_and_layer_only() -> None:
    a, b = build(seed=3), build(seed=3)
    assert torch.equal(a.random_layout, b.random_layout)
    assert not torch.equal(a.random_layout, build(seed=4).random_layout)
    assert not torch.equal(a.random_layout, build(seed=3, layer_index=1).random_layout)
    heads = a.random_layout
    assert any(not torch.equal(heads[0], heads[h]) for h in range(1, H))  # per-head draws


def test_random_layout_is_saved_with_the_model() -> None:
    a, b = build(seed=1), build(seed=2)
    assert "random_layout" in a.state_dict()
    x = inputs()
    with torch.no_grad():
        out_a = a(x, None, AttentionContext()).out
        assert not torch.allclose(b(x, None, AttentionContext()).out, out_a)
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(b(x, None, AttentionContext()).out, out_a, atol=0, rtol=0)


@pytest.mark.parametrize("last", LAST)
def test_shorter_input_keeps_the_pattern_of_its_blocks(last: bool) -> None:
    attn = build(last_block_global=last)
    t = 26  # 7 blocks, the last one partial
    ctx = AttentionContext(need_weights=True)
    with torch.no_grad():
        weights = attn(inputs(t), None, ctx).weights
    assert weights is not None
    assert torch.equal(
        weights > 0, expected_tokens(attn.random_layout, t, False, last).expand_as(weights)
    )
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, t, dtype=torch.float64))
    with pytest.raises(ValueError, match="max_len"):
        attn(inputs(T + 1), None, AttentionContext())


def test_shorter_input_whose_last_block_was_drawn_counts_it_once() -> None:
    """A block drawn at random for max_len can be the last block of a shorter input, which
    is global there: it is then one of the global columns, not a second copy of them."""
    t = 26  # 7 blocks; block 6 is a candidate in the 10-block draw
    seed = next(s for s in range(50) if (build(seed=s).random_layout[:, 1:6] == 6).any())
    attn = build(seed=seed)
    x = inputs(t)

    def heads(y: Tensor) -> Tensor:
        return y.view(B, -1, H, DH).transpose(1, 2)

    with torch.no_grad():
        got = attn(x, None, AttentionContext()).out
        allowed = expected_tokens(attn.random_layout, t, False)[None]
        q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        want = attn.out_proj(ref.transpose(1, 2).reshape(B, t, D))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_the_first_and_the_last_block_are_global_by_default() -> None:
    """The authors' ITC code: q[0] and q[−1] attend to everything, and every query attends
    to k[0] and k[−1]; without the option only the first G blocks are global."""
    ctx = AttentionContext(need_weights=True)
    with torch.no_grad():
        default = build()(inputs(), None, ctx).weights
        first_only = build(last_block_global=False)(inputs(), None, ctx).weights
    assert default is not None and first_only is not None
    seen = (default > 0)[0]  # (H, T, T)
    ends = list(range(BLOCK)) + list(range(T - BLOCK, T))
    assert seen[:, ends].all() and seen[:, :, ends].all()
    middle = list(range(BLOCK, T - BLOCK))
    assert not seen[:, middle][:, :, middle].all()  # the rest stays sparse
    last_block = list(range(T - BLOCK, T))
    assert not (first_only[0] > 0)[:, last_block].all()  # rows of the last block are sparse
    assert get_variant("bigbird").options().last_block_global


def test_capabilities_and_presets() -> None:
    caps = get_variant("bigbird").capabilities
    assert caps.causal and caps.padding_mask and not caps.cross_attention
    assert not caps.variable_length  # the random layout is drawn for max_len
    opts = get_variant("bigbird-64").options()
    assert (opts.block, opts.random_blocks, opts.global_blocks) == (64, 3, 2)
    assert opts.last_block_global  # the preset follows the default
    with pytest.raises(ValueError, match="block"):
        get_variant("bigbird").options({"block": 0})
