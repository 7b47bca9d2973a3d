"""Local (sliding-window / blocked) attention: its pattern, its equivalence to vanilla when
the window covers everything, and that its memory really is O(n·w)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attn_cases import LargestAllocation
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    MultiHeadAttention,
    get_variant,
)

B, D, H = 2, 16, 4
DH = D // H
ATOL = 1e-10  # float64


def build(name: str = "local", seed: int = 0, max_len: int = 64, **options) -> MultiHeadAttention:
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=max_len)
    attn = get_variant(name).build(dims, options)
    assert isinstance(attn, MultiHeadAttention)
    return attn.double().eval()


def inputs(t: int, seed: int = 1) -> Tensor:
    return torch.randn(B, t, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def band(t: int, window: int, causal: bool) -> Tensor:
    """Independent (T, T) sliding-window mask."""
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    allowed = (i - j).abs() <= window
    return allowed & (j <= i) if causal else allowed


def blocked(t: int, block: int, causal: bool) -> Tensor:
    """Independent (T, T) mask of Image-Transformer blocked local attention."""
    allowed = torch.zeros(t, t, dtype=torch.bool)
    for i in range(t):
        for j in range(t):
            near = j // block - i // block
            allowed[i, j] = near in ((-1, 0) if causal else (-1, 0, 1)) and (not causal or j <= i)
    return allowed


def sdpa_reference(attn: MultiHeadAttention, x: Tensor, allowed: Tensor) -> Tensor:
    def heads(t: Tensor) -> Tensor:
        return t.view(B, -1, H, DH).transpose(1, 2)

    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return attn.out_proj(out.transpose(1, 2).reshape(B, -1, D))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [0, 1, 3, 8])
def test_matches_sdpa_with_an_independent_band_mask(window: int, causal: bool) -> None:
    t = 21
    attn = build(window=window)
    x = inputs(t)
    pad = padding([t, 15], t)
    mask = AttentionMask(causal=causal, key_padding=pad)
    allowed = band(t, window, causal)[None, None] & pad[:, None, None, :]
    with torch.no_grad():
        got = attn(x, None, AttentionContext(mask=mask)).out
        want = sdpa_reference(attn, x, allowed)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_blocked_mode_matches_an_independent_blocked_mask(causal: bool) -> None:
    t = 23
    attn = build(window=5, blocked=True)
    x = inputs(t)
    with torch.no_grad():
        got = attn(x, None, AttentionContext(mask=AttentionMask(causal=causal))).out
        want = sdpa_reference(attn, x, blocked(t, 5, causal))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [19, 100])
def test_window_covering_the_sequence_equals_vanilla(window: int, causal: bool) -> None:
    t = 20  # window ≥ t − 1 reaches every key
    local = build(window=window)
    vanilla = build("vanilla")
    vanilla.load_state_dict(local.state_dict())
    x = inputs(t)
    mask = AttentionMask(causal=causal, key_padding=padding([t, 9], t))
    with torch.no_grad():
        got = local(x, None, AttentionContext(mask=mask)).out
        want = vanilla(x, None, AttentionContext(mask=mask)).out
        narrow = build(window=4)
        narrow.load_state_dict(local.state_dict())
        different = narrow(x, None, AttentionContext(mask=mask)).out
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert (different - want).abs().max() > 1e-3  # guard: a narrow window does differ


@pytest.mark.parametrize("causal", [False, True])
def test_weights_are_zero_outside_the_window_and_sum_to_one(causal: bool) -> None:
    t, window = 18, 3
    attn = build(window=window)
    ctx = AttentionContext(mask=AttentionMask(causal=causal), need_weights=True)
    with torch.no_grad():
        weights = attn(inputs(t), None, ctx).weights
    assert weights is not None and weights.shape == (B, H, t, t)
    allowed = band(t, window, causal).expand(B, H, t, t)
    assert torch.all(weights[~allowed] == 0)
    assert torch.all(weights[allowed] > 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, t, dtype=torch.float64))
    assert attn(inputs(t), None, AttentionContext()).weights is None


def test_changing_a_token_outside_the_window_leaves_the_output_unchanged() -> None:
    t, window, probe = 24, 4, 12
    attn = build(window=window)
    x = inputs(t)
    changed = x.clone()
    changed[:, probe] += 3.0  # moves that position's key and value
    with torch.no_grad():
        base = attn(x, None, AttentionContext()).out
        moved = attn(changed, None, AttentionContext()).out
    near = (torch.arange(t) - probe).abs() <= window
    torch.testing.assert_close(moved[:, ~near], base[:, ~near], atol=ATOL, rtol=0)
    assert ((moved - base).abs().amax(dim=(0, 2))[near] > 1e-6).all()


def test_head_mask_and_padding_rows_stay_finite() -> None:
    t = 10
    attn = build(window=2)
    head_mask = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    ctx = AttentionContext(mask=AttentionMask(key_padding=padding([t, 0], t)), head_mask=head_mask)
    out = attn(inputs(t), None, ctx).out
    assert torch.isfinite(out).all()


def test_rejects_cross_attention() -> None:
    attn = build()
    with pytest.raises(ValueError, match="self-attention"):
        attn(inputs(6), inputs(6, seed=2), AttentionContext())


def test_memory_is_order_n_times_w() -> None:
    """n = 4096, w = 16: no tensor near n² is ever allocated (scores are n × 3w)."""
    t, window = 4096, 16
    torch.manual_seed(0)
    dims = AttentionDims(d_model=D, n_heads=1, head_dim=D, max_len=t)
    attn = get_variant("local").build(dims, {"window": window}).eval()
    x = torch.randn(1, t, D)
    mask = AttentionMask(causal=False, key_padding=torch.ones(1, t, dtype=torch.bool))
    with torch.no_grad(), LargestAllocation() as probe:
        out = attn(x, None, AttentionContext(mask=mask)).out
    assert out.shape == (1, t, D)
    scores_bytes = t * 3 * window * 4  # n × (3 blocks of w) float32
    assert probe.largest <= 2 * scores_bytes
    assert probe.largest < t * t * 4 / 32  # far below one n × n float32 matrix


def test_presets_and_options() -> None:
    assert get_variant("local").options().window == 16
    assert get_variant("local-32").options().window == 32
    blocked_opts = get_variant("local-blocked-32").options()
    assert blocked_opts.blocked and blocked_opts.window == 32
    caps = get_variant("local").capabilities
    assert caps.causal and caps.padding_mask and not caps.cross_attention
    with pytest.raises(ValueError, match="window"):
        get_variant("local").options({"window": -1})
    with pytest.raises(ValueError, match="window"):
        get_variant("local").options({"window": 0, "blocked": True})


# ---------------------------------------------------------------------------------------
# Attention sinks (StreamingLLM, Xiao et al. 2024): the first s tokens are keys of every query
# ---------------------------------------------------------------------------------------
def sinks_mask(t: int, window: int, sinks: int, causal: bool) -> Tensor:
    """Independent (T, T) mask, one pair at a time: the window, or a key among the first s."""
    allowed = torch.zeros(t, t, dtype=torch.bool)
    for i in range(t):
        for j in range(t):
            seen = abs(i - j) <= window or j < sinks
            allowed[i, j] = seen and (j <= i or not causal)
    return allowed


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("window", "sinks"), [(0, 1), (2, 4), (3, 1), (5, 8), (2, 30)])
def test_sinks_match_sdpa_with_a_loop_built_mask(window: int, sinks: int, causal: bool) -> None:
    t = 21
    attn = build(window=window, sinks=sinks)
    x = inputs(t)
    pad = padding([t, 13], t)
    mask = AttentionMask(causal=causal, key_padding=pad)
    allowed = sinks_mask(t, window, sinks, causal)[None, None] & pad[:, None, None, :]
    with torch.no_grad():
        got = attn(x, None, AttentionContext(mask=mask)).out
        want = sdpa_reference(attn, x, allowed)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_sink_weights_follow_the_loop_mask_and_sum_to_one(causal: bool) -> None:
    t, window, sinks = 19, 2, 4
    attn = build(window=window, sinks=sinks)
    ctx = AttentionContext(mask=AttentionMask(causal=causal), need_weights=True)
    with torch.no_grad():
        weights = attn(inputs(t), None, ctx).weights
    assert weights is not None and weights.shape == (B, H, t, t)
    want = sinks_mask(t, window, sinks, causal)
    assert torch.equal(weights > 0, want.expand(B, H, t, t))
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, t, dtype=torch.float64))
    # spelled out: a far query sees the 4 sinks and its window, nothing in between
    assert set(torch.nonzero(want[15]).flatten().tolist()) == (
        {0, 1, 2, 3, 13, 14, 15} if causal else {0, 1, 2, 3, 13, 14, 15, 16, 17}
    )
    # the sinks are not global queries: a sink row sees its window (and the other sinks)
    assert set(torch.nonzero(want[1]).flatten().tolist()) == ({0, 1} if causal else {0, 1, 2, 3})


def test_a_sink_moves_every_output_and_a_far_token_does_not() -> None:
    t, window, sinks, probe = 24, 3, 2, 12
    attn = build(window=window, sinks=sinks)
    x = inputs(t)
    with torch.no_grad():
        base = attn(x, None, AttentionContext()).out
        moved_sink = x.clone()
        moved_sink[:, 1] += 3.0
        sink_delta = (attn(moved_sink, None, AttentionContext()).out - base).abs().amax((0, 2))
        moved_far = x.clone()
        moved_far[:, probe] += 3.0
        far_delta = (attn(moved_far, None, AttentionContext()).out - base).abs().amax((0, 2))
    assert (sink_delta > 1e-6).all()  # every query reads token 1
    near = (torch.arange(t) - probe).abs() <= window
    assert (far_delta[~near] == 0).all() and (far_delta[near] > 1e-6).all()


def test_no_sinks_is_the_plain_window_pattern() -> None:
    from attnbench.variants.local import local_pattern

    plain = local_pattern(20, 3, False)
    assert len(plain.parts) == 1 and plain.global_queries is None
    with_sinks = local_pattern(20, 3, False, sinks=4)
    assert len(with_sinks.parts) == 2
    # sinks past the input are clipped to it
    assert local_pattern(3, 1, True, sinks=8).parts[1].keys.tolist() == [0, 1, 2]


def test_sinks_memory_is_order_n_times_w_plus_s() -> None:
    t, window, sinks = 4096, 16, 4
    torch.manual_seed(0)
    dims = AttentionDims(d_model=D, n_heads=1, head_dim=D, max_len=t)
    attn = get_variant("streaming-llm").build(dims, {"window": window}).eval()
    assert attn.options.sinks == sinks
    x = torch.randn(1, t, D)
    with torch.no_grad(), LargestAllocation() as probe:
        out = attn(x, None, AttentionContext(mask=AttentionMask(causal=True))).out
    assert out.shape == (1, t, D)
    assert probe.largest <= 2 * t * (3 * window + sinks) * 4  # n × (3 blocks of w + s)
    assert probe.largest < t * t * 4 / 32


def test_sinks_options_preset_and_dense_rule() -> None:
    spec = get_variant("streaming-llm")
    assert spec.preset_of == "local" and not spec.canonical
    opts = spec.options()
    assert (opts.window, opts.sinks, opts.blocked) == (16, 4, False)
    assert "Xiao" in spec.paper and "Attention Sinks" in spec.paper
    assert get_variant("local").options().sinks == 0  # the default changes nothing
    with pytest.raises(ValueError, match="sinks must be ≥ 0"):
        get_variant("local").options({"sinks": -1})
    with pytest.raises(ValueError, match="sliding window"):
        get_variant("local").options({"sinks": 2, "blocked": True, "window": 4})
    # the pair (0, n − 1) still needs the window, unless every key is a sink
    assert spec.dense_reason(17) == "window 16 ≥ n − 1 = 16"
    assert spec.dense_reason(18) is None
    assert spec.dense_reason(4, {"window": 0}) == "4 sinks ≥ n = 4: every key is a sink"
    assert spec.dense_reason(5, {"window": 0}) is None


@pytest.mark.parametrize("causal", [False, True])
def test_sink_pattern_parts_as_gather_and_flex_mask_mod_read_them(causal: bool) -> None:
    """The window part (as the CPU path and FlexAttention's ``mask_mod``, the CUDA path,
    read it) and the sink columns are disjoint and together the loop's pattern."""
    from attnbench.blocksparse import block_part_dense
    from attnbench.variants.local import local_pattern

    t, window, sinks = 23, 3, 4
    window_part, columns = local_pattern(t, window, causal, sinks=sinks).parts
    want = sinks_mask(t, window, sinks, causal)
    cols = block_part_dense(columns, t, causal)[0]
    for via in ("gather", "mask_mod"):
        win = block_part_dense(window_part, t, causal, via=via)[0]
        assert not (win & cols).any(), via  # no key counted twice
        assert torch.equal(win | cols, want), via
