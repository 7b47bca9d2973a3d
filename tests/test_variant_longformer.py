"""Longformer: sliding window plus symmetric global attention, with the paper's separate
global projections, against a reference written out independently with SDPA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.attention import AttentionContext, AttentionDims, AttentionMask, get_variant
from attnbench.variants.longformer import LongformerAttention

B, D, H = 2, 16, 4
DH = D // H
ATOL = 1e-10  # float64
W = 2  # window on each side
GLOBAL = (0, 9)


def build(seed: int = 0, **options) -> LongformerAttention:
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=64)
    options = {"window": W, "global_positions": GLOBAL, **options}
    attn = get_variant("longformer").build(dims, options)
    assert isinstance(attn, LongformerAttention)
    return attn.double().eval()


def inputs(t: int, seed: int = 1) -> Tensor:
    return torch.randn(B, t, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def expected_mask(t: int, causal: bool, glob: tuple[int, ...] = GLOBAL) -> Tensor:
    """(T, T): window + global columns for every row; global rows see everything."""
    allowed = torch.zeros(t, t, dtype=torch.bool)
    for i in range(t):
        for j in range(t):
            allowed[i, j] = i in glob or j in glob or abs(i - j) <= W
    return allowed.tril() if causal else allowed


def reference(attn: LongformerAttention, x: Tensor, causal: bool, pad: Tensor) -> Tensor:
    """Local rows: SDPA with (window ∪ global columns) and Q, K, V. Global rows: SDPA over
    every key with Q_g, K_g, V_g (or Q, K, V without separate projections)."""
    t = x.shape[1]

    def heads(y: Tensor) -> Tensor:
        return y.view(B, -1, H, DH).transpose(1, 2)

    full = torch.ones(t, t, dtype=torch.bool)
    full = full.tril() if causal else full
    local_mask = expected_mask(t, causal)[None, None] & pad[:, None, None, :]
    global_mask = full[None, None] & pad[:, None, None, :]
    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=local_mask)
    proj = attn.global_proj
    if proj is not None:
        q, k, v = heads(proj["q"](x)), heads(proj["k"](x)), heads(proj["v"](x))
    rows = F.scaled_dot_product_attention(q, k, v, attn_mask=global_mask)
    glob = torch.tensor(GLOBAL)
    out[:, :, glob] = rows[:, :, glob]
    return attn.out_proj(out.transpose(1, 2).reshape(B, t, D))


def perturb_global_projections(attn: LongformerAttention) -> None:
    assert attn.global_proj is not None
    with torch.no_grad():
        for p in attn.global_proj.parameters():
            p.add_(torch.randn_like(p) * 0.5)


@pytest.mark.parametrize("causal", [False, True])
def test_weights_follow_window_plus_global_pattern(causal: bool) -> None:
    t = 20
    attn = build()
    ctx = AttentionContext(mask=AttentionMask(causal=causal), need_weights=True)
    with torch.no_grad():
        weights = attn(inputs(t), None, ctx).weights
    assert weights is not None and weights.shape == (B, H, t, t)
    assert torch.equal(weights > 0, expected_mask(t, causal).expand(B, H, t, t))
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, t, dtype=torch.float64))
    # spelled out: global rows and columns are full, a local row is window + globals
    visible = (weights > 0)[0, 0]
    if not causal:
        assert visible[list(GLOBAL)].all() and visible[:, list(GLOBAL)].all()
    assert set(torch.nonzero(visible[15]).flatten().tolist()) == (
        {0, 9, 13, 14, 15} if causal else {0, 9, 13, 14, 15, 16, 17}
    )


@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference_with_separate_global_projections(causal: bool) -> None:
    t = 19
    attn = build()
    perturb_global_projections(attn)
    x, pad = inputs(t), padding([t, 12], t)
    with torch.no_grad():
        got = attn(x, None, AttentionContext(mask=AttentionMask(causal, pad))).out
        want = reference(attn, x, causal, pad)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_global_projections_start_as_copies_and_matter_once_trained() -> None:
    attn = build()
    assert attn.global_proj is not None
    for name, local in zip("qkv", (attn.q_proj, attn.k_proj, attn.v_proj), strict=True):
        assert torch.equal(attn.global_proj[name].weight, local.weight)
        assert attn.global_proj[name].weight is not local.weight  # separate parameters
    assert "global_proj.q.weight" in attn.state_dict()
    x = inputs(16)
    with torch.no_grad():
        before = attn(x, None, AttentionContext()).out
        perturb_global_projections(attn)
        after = attn(x, None, AttentionContext()).out
    changed = (after - before).abs().amax(dim=(0, 2)) > 1e-6
    # global rows use them; local rows do not (they read global keys through K and V)
    assert torch.equal(changed, torch.isin(torch.arange(16), torch.tensor(GLOBAL)))


def test_without_separate_projections_matches_sdpa_with_the_dense_mask() -> None:
    t = 17
    attn = build(separate_global=False)
    assert attn.global_proj is None
    x, pad = inputs(t), padding([t, 11], t)
    with torch.no_grad():
        got = attn(x, None, AttentionContext(mask=AttentionMask(key_padding=pad))).out
        want = reference(attn, x, False, pad)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_global_token_reads_and_is_read_by_far_tokens() -> None:
    t, far = 24, 20
    attn = build(global_positions=(0,))
    x = inputs(t)
    with torch.no_grad():
        base = attn(x, None, AttentionContext()).out
        moved_far = x.clone()
        moved_far[:, far] += 3.0
        out_far = attn(moved_far, None, AttentionContext()).out
        moved_global = x.clone()
        moved_global[:, 0] += 3.0
        out_global = attn(moved_global, None, AttentionContext()).out
    delta_far = (out_far - base).abs().amax(dim=(0, 2))
    delta_global = (out_global - base).abs().amax(dim=(0, 2))
    assert delta_far[0] > 1e-6  # the global token attends to the far token
    assert (delta_far[1 : far - W] == 0).all()  # local tokens outside its window do not
    assert (delta_global > 1e-6).all()  # every token attends to the global token


def test_global_positions_option() -> None:
    opts = get_variant("longformer").options({"global_positions": [5, 0, 5]})
    assert opts.global_positions == (0, 5)
    assert get_variant("longformer").options().global_positions == (0,)
    with pytest.raises(ValueError, match="global_positions"):
        get_variant("longformer").options({"global_positions": [-1]})
    # positions past the input are ignored: no global token at all here
    attn = build(global_positions=(40,))
    ctx = AttentionContext(mask=AttentionMask(), need_weights=True)
    with torch.no_grad():
        weights = attn(inputs(10), None, ctx).weights
    assert weights is not None
    i, j = torch.arange(10)[:, None], torch.arange(10)[None, :]
    assert torch.equal(weights[0, 0] > 0, (i - j).abs() <= W)


def test_rejects_cross_attention_and_honours_head_mask() -> None:
    attn = build()
    with pytest.raises(ValueError, match="self-attention"):
        attn(inputs(6), inputs(6, seed=2), AttentionContext())
    x = inputs(12)
    head_mask = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        masked = attn(x, None, AttentionContext(head_mask=head_mask)).out
        zero_all = attn(x, None, AttentionContext(head_mask=torch.zeros(H).double())).out
    assert torch.equal(zero_all, torch.zeros_like(zero_all))  # only the residual path remains
    assert not torch.allclose(masked, zero_all)


# ---------------------------------------------------------------------------------------
# Dilated sliding window (the paper's §3.1): keys every d tokens, up to w·d away
# ---------------------------------------------------------------------------------------
def dilated_mask(t: int, window: int, dilation: int, causal: bool, glob: tuple[int, ...]) -> Tensor:
    """Independent (T, T), one pair at a time: a global row or column, or a key a multiple
    of d away and no further than w·d."""
    allowed = torch.zeros(t, t, dtype=torch.bool)
    for i in range(t):
        for j in range(t):
            near = abs(i - j) <= window * dilation and (i - j) % dilation == 0
            allowed[i, j] = (i in glob or j in glob or near) and (j <= i or not causal)
    return allowed


def dilated_reference(
    attn: LongformerAttention, x: Tensor, allowed: Tensor, causal: bool, pad: Tensor
) -> Tensor:
    """Local rows: SDPA with the loop mask ((T, T), or (H, T, T) one per head) and Q, K, V;
    global rows: SDPA over every key
    with Q_g, K_g, V_g."""
    t = x.shape[1]

    def heads(y: Tensor) -> Tensor:
        return y.view(B, -1, H, DH).transpose(1, 2)

    full = torch.ones(t, t, dtype=torch.bool)
    full = (full.tril() if causal else full)[None, None] & pad[:, None, None, :]
    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
    per_head = allowed if allowed.dim() == 3 else allowed[None]  # (H | 1, T, T)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=per_head[None] & full)
    assert attn.global_proj is not None
    proj = attn.global_proj
    qg, kg, vg = heads(proj["q"](x)), heads(proj["k"](x)), heads(proj["v"](x))
    rows = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=full)
    glob = [p for p in attn.options.global_positions if p < t]
    out[:, :, glob] = rows[:, :, glob]
    return attn.out_proj(out.transpose(1, 2).reshape(B, t, D))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("window", "dilation", "glob", "t"),
    [(2, 2, GLOBAL, 19), (3, 3, (0,), 23), (1, 4, (0, 5), 18), (0, 3, (0,), 10), (4, 2, (), 9)],
)
def test_dilated_window_matches_sdpa_with_a_loop_built_mask(
    window: int, dilation: int, glob: tuple[int, ...], t: int, causal: bool
) -> None:
    attn = build(window=window, dilation=dilation, global_positions=glob)
    perturb_global_projections(attn)
    x, pad = inputs(t), padding([t, t - 5], t)
    allowed = dilated_mask(t, window, dilation, causal, glob)
    with torch.no_grad():
        got = attn(x, None, AttentionContext(mask=AttentionMask(causal, pad))).out
        want = dilated_reference(attn, x, allowed, causal, pad)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_dilated_weights_follow_the_loop_mask(causal: bool) -> None:
    t, dilation = 22, 3
    attn = build(dilation=dilation)
    ctx = AttentionContext(mask=AttentionMask(causal=causal), need_weights=True)
    with torch.no_grad():
        weights = attn(inputs(t), None, ctx).weights
    assert weights is not None
    want = dilated_mask(t, W, dilation, causal, GLOBAL)
    assert torch.equal(weights > 0, want.expand(B, H, t, t))
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, t, dtype=torch.float64))
    # spelled out: query 15 sees 15 ± 3, 15 ± 6 and the globals 0 and 9
    visible = set(torch.nonzero(want[15]).flatten().tolist())
    assert visible == ({0, 9, 12, 15} if causal else {0, 9, 12, 15, 18, 21})


@pytest.mark.parametrize("causal", [False, True])
def test_dilated_pattern_gather_and_flex_mask_mod_agree_with_the_loop(causal: bool) -> None:
    """The permuted block part, as the CPU path reads it and as FlexAttention's
    ``mask_mod`` (the CUDA path) evaluates it, is the loop's pattern on non-global keys."""
    from attnbench.blocksparse import block_part_dense
    from attnbench.variants.longformer import longformer_pattern

    t, window, dilation, glob = 29, 2, 3, (0, 7)
    pattern = longformer_pattern(t, window, glob, None, dilation)
    part = pattern.parts[0]
    want = dilated_mask(t, window, dilation, causal, ())
    want[:, list(glob)] = False  # global keys belong to the column part
    for via in ("gather", "mask_mod"):
        got = block_part_dense(part, t, causal, via=via)[0]
        assert torch.equal(got, want), via


def test_dilation_one_is_the_undilated_pattern_and_option_checks() -> None:
    from attnbench.variants.longformer import longformer_pattern

    assert get_variant("longformer").options().dilation == 1  # the default changes nothing
    plain = longformer_pattern(20, 3, (0,), None)
    assert plain.parts[0].order is None
    assert longformer_pattern(20, 3, (0,), None, 2).parts[0].order is not None
    with pytest.raises(ValueError, match="dilation must be ≥ 1"):
        get_variant("longformer").options({"dilation": 0})


def test_dilated_memory_stays_order_n_times_w() -> None:
    """Regrouped by residue, the dilated window gathers ~3w keys per query, not 3·w·d."""
    from attn_cases import LargestAllocation

    t, window, dilation = 4096, 16, 8
    torch.manual_seed(0)
    dims = AttentionDims(d_model=D, n_heads=1, head_dim=D, max_len=t)
    options = {"window": window, "dilation": dilation, "separate_global": False}
    attn = get_variant("longformer").build(dims, options).eval()
    x = torch.randn(1, t, D)
    with torch.no_grad(), LargestAllocation() as probe:
        out = attn(x, None, AttentionContext()).out
    assert out.shape == (1, t, D)
    assert probe.largest <= 2 * t * 3 * window * 4  # n × (3 blocks of w) float32
    assert probe.largest < t * 3 * window * dilation * 4  # what an undilated span would take


def test_dilated_dense_rule() -> None:
    spec = get_variant("longformer")
    # one non-global position (n = 2, global 0): dense whatever the dilation
    assert spec.dense_reason(2, {"window": 1, "dilation": 3}) is not None
    # two non-global positions 1 apart are never both seen with d > 1
    assert spec.dense_reason(3, {"window": 8, "dilation": 2}) is None
    # globals 0 and 2 leave 1 and 3: 2 apart, dense with d = 2 once w·d ≥ 2
    assert spec.dense_reason(4, {"window": 1, "dilation": 2, "global_positions": (0, 2)})
    assert spec.dense_reason(4, {"window": 0, "dilation": 2, "global_positions": (0, 2)}) is None
    assert spec.dense_reason(4, {"window": 1, "dilation": 3, "global_positions": (0, 2)}) is None
    # dilation 1 keeps the rule and message of the plain window
    assert spec.dense_reason(9, {"window": 8, "global_positions": ()}) == "window 8 ≥ n − 1 = 8"


# ---------------------------------------------------------------------------------------
# A dilation per head (the paper's multi-head setting: some heads local, some far)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("window", "dilations", "glob", "t"),
    [(2, (1, 1, 2, 3), GLOBAL, 19), (1, (4, 1, 4, 2), (0, 5), 18), (3, (2, 2, 2, 2), (0,), 11)],
)
def test_per_head_dilation_matches_sdpa_with_a_mask_per_head(
    window: int, dilations: tuple[int, ...], glob: tuple[int, ...], t: int, causal: bool
) -> None:
    attn = build(window=window, dilation=list(dilations), global_positions=glob)
    perturb_global_projections(attn)
    x, pad = inputs(t), padding([t, t - 5], t)
    allowed = torch.stack([dilated_mask(t, window, d, causal, glob) for d in dilations])
    ctx = AttentionContext(mask=AttentionMask(causal, pad), need_weights=True)
    with torch.no_grad():
        result = attn(x, None, ctx)
        want = dilated_reference(attn, x, allowed, causal, pad)
    torch.testing.assert_close(result.out, want, atol=ATOL, rtol=0)
    assert result.weights is not None
    seen = result.weights > 0
    for b, length in enumerate((t, t - 5)):  # each head's weights follow its own mask
        expected = allowed[:, :length, :length] & (
            torch.ones(length, length, dtype=torch.bool).tril() if causal else True
        )
        assert torch.equal(seen[b, :, :length, :length], expected), b


def test_per_head_dilation_equals_single_dilation_models_head_by_head() -> None:
    """Head h of the per-head model is head h of the model with d = d_h for every head."""
    t, dilations = 21, (1, 3, 1, 2)
    mixed = build(dilation=list(dilations))
    ctx = AttentionContext(mask=AttentionMask(causal=False), need_weights=True)
    with torch.no_grad():
        got = mixed(inputs(t), None, ctx).weights
        for d in set(dilations):
            one = build(dilation=d)
            one.load_state_dict(mixed.state_dict())
            want = one(inputs(t), None, ctx).weights
            heads = [h for h, d_h in enumerate(dilations) if d_h == d]
            assert got is not None and want is not None
            torch.testing.assert_close(got[:, heads], want[:, heads], atol=ATOL, rtol=0)


def test_per_head_dilation_options_trains_and_needs_one_value_per_head() -> None:
    spec = get_variant("longformer")
    options = spec.options({"dilation": [1, 2]})
    assert options.dilation == (1, 2) and options.per_head() == (1, 2)
    assert options.distinct() == (1, 2) and spec.options().distinct() == (1,)
    for bad in ([], [1, 0], [2, True]):
        with pytest.raises(ValueError, match="dilation"):
            spec.options({"dilation": bad})
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=32)
    reason = spec.unsupported_dims(dims, {"dilation": [1, 2]})
    assert reason == "lists 2 dilations (one per head) for a model with 4 heads"
    assert spec.unsupported_dims(dims, {"dilation": [1, 1, 2, 2]}) is None
    with pytest.raises(ValueError, match="one per head"):
        spec.build(dims, {"dilation": [1, 2]})
    attn = build(dilation=[1, 2, 1, 3])  # gradients reach every head's projections
    attn(inputs(15), None, AttentionContext(mask=AttentionMask(causal=True))).out.sum().backward()
    for name in ("q_proj", "k_proj", "v_proj"):
        grad = getattr(attn, name).weight.grad
        assert grad is not None
        assert all(grad[h * DH : (h + 1) * DH].abs().sum() > 0 for h in range(H)), name


def test_per_head_dense_rule_needs_every_head_dense() -> None:
    spec = get_variant("longformer")
    opts = {"window": 1, "global_positions": (0, 2)}
    assert spec.dense_reason(4, {**opts, "dilation": [2, 2]})  # every head dense
    assert spec.dense_reason(4, {**opts, "dilation": [2, 3]}) is None  # the d = 3 head is not
    assert spec.dense_reason(9, {"window": 8, "global_positions": (), "dilation": [1, 1]}) == (
        "window 8 ≥ n − 1 = 8"
    )
