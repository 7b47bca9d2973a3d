"""Sparse Transformer (Child et al. 2019): the strided and fixed patterns exactly as the
paper defines them (masks written out independently below), how heads / layers share
the two components, and full connectivity after two layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
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
L, C = 4, 2  # stride and summary width used below


def build(layer_index: int = 0, n_heads: int = H, **options) -> MultiHeadAttention:
    torch.manual_seed(layer_index)
    dims = AttentionDims(
        d_model=D, n_heads=n_heads, head_dim=D // n_heads, max_len=64, layer_index=layer_index
    )
    attn = get_variant("sparse-strided").build(dims, options)
    assert isinstance(attn, MultiHeadAttention)
    return attn.double().eval()


def inputs(t: int, seed: int = 1) -> Tensor:
    return torch.randn(B, t, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def paper_components(t: int, pattern: str, causal: bool) -> tuple[Tensor, Tensor]:
    """A⁽¹⁾, A⁽²⁾ as (T, T) bool, pair by pair from the paper's set definitions."""
    a1 = torch.zeros(t, t, dtype=torch.bool)
    a2 = torch.zeros(t, t, dtype=torch.bool)
    for i in range(t):
        for j in range(t):
            if causal and j > i:
                continue
            if pattern == "strided":
                a1[i, j] = i - L <= j <= i if causal else abs(i - j) <= L
                a2[i, j] = (i - j) % L == 0
            else:
                a1[i, j] = j // L == i // L
                a2[i, j] = j % L in range(L - C, L)
    return a1, a2


def expected_heads(t: int, pattern: str, causal: bool, combine: str, layer: int = 0) -> Tensor:
    """(H, T, T): the keys each head may see."""
    a1, a2 = paper_components(t, pattern, causal)
    if combine == "merged":
        return (a1 | a2).expand(H, t, t)
    if combine == "layers":
        return (a1 if layer % 2 == 0 else a2).expand(H, t, t)
    return torch.stack([a1 if h % 2 == 0 else a2 for h in range(H)])


def sdpa_reference(attn: MultiHeadAttention, x: Tensor, allowed: Tensor) -> Tensor:
    def heads(t: Tensor) -> Tensor:
        return t.view(B, -1, H, DH).transpose(1, 2)

    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    out = out.masked_fill(~allowed.any(-1, keepdim=True), 0.0)  # rows with no key → 0
    return attn.out_proj(out.transpose(1, 2).reshape(B, -1, D))


CASES = [
    (pattern, causal, combine)
    for pattern in ("strided", "fixed")
    for causal in (True, False)
    for combine in ("heads", "merged", "layers")
]


@pytest.mark.parametrize(("pattern", "causal", "combine"), CASES)
def test_pattern_is_exactly_the_papers(pattern: str, causal: bool, combine: str) -> None:
    t = 15  # not a multiple of the stride: a partial last block
    for layer in (0, 1) if combine == "layers" else (0,):
        attn = build(layer, pattern=pattern, stride=L, c=C, combine=combine)
        ctx = AttentionContext(mask=AttentionMask(causal=causal), need_weights=True)
        with torch.no_grad():
            weights = attn(inputs(t), None, ctx).weights
        assert weights is not None
        want = expected_heads(t, pattern, causal, combine, layer)
        assert torch.equal(weights > 0, want.expand(B, H, t, t))


@pytest.mark.parametrize(("pattern", "causal", "combine"), CASES)
def test_output_matches_sdpa_with_the_papers_mask(pattern: str, causal: bool, combine: str) -> None:
    t = 14
    attn = build(1, pattern=pattern, stride=L, c=C, combine=combine)
    x = inputs(t)
    pad = torch.arange(t)[None, :] < torch.tensor([t, 9])[:, None]
    allowed = expected_heads(t, pattern, causal, combine, layer=1)[None] & pad[:, None, None, :]
    with torch.no_grad():
        got = attn(x, None, AttentionContext(mask=AttentionMask(causal, pad))).out
        want = sdpa_reference(attn, x, allowed)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def reach_after_two_layers(first: Tensor, second: Tensor) -> Tensor:
    """Pairs (i, j) connected by a path j → k (first layer) → i (second layer); the
    residual stream adds the identity."""
    eye = torch.eye(first.shape[-1], dtype=torch.bool)
    return ((second | eye).double() @ (first | eye).double()) > 0


@pytest.mark.parametrize("pattern", ["strided", "fixed"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("combine", ["heads", "merged", "layers"])
def test_two_layers_reach_every_allowed_pair(pattern: str, causal: bool, combine: str) -> None:
    t = 24  # a multiple of the stride: every block has its summary columns
    layers = []
    for layer in (0, 1):
        attn = build(layer, pattern=pattern, stride=L, c=C, combine=combine)
        ctx = AttentionContext(mask=AttentionMask(causal=causal), need_weights=True)
        with torch.no_grad():
            weights = attn(inputs(t), None, ctx).weights
        assert weights is not None
        layers.append((weights[0] > 0).any(0))  # a layer's heads together
    allowed = torch.ones(t, t, dtype=torch.bool)
    allowed = allowed.tril() if causal else allowed
    assert not torch.equal(layers[0], allowed)  # one layer alone is sparse
    assert torch.equal(reach_after_two_layers(layers[0], layers[1]), allowed)


def test_one_component_alone_does_not_cover() -> None:
    """Guard: coverage needs both components (A⁽¹⁾ twice stays local)."""
    a1, _ = paper_components(24, "strided", True)
    assert not torch.equal(reach_after_two_layers(a1, a1), torch.ones(24, 24).tril().bool())


def test_rows_per_query_grow_like_l_plus_n_over_l() -> None:
    t, stride = 256, 16
    attn = build(pattern="strided", stride=stride, combine="merged")
    ctx = AttentionContext(mask=AttentionMask(causal=False), need_weights=True)
    with torch.no_grad():
        weights = attn(torch.randn(1, t, D, dtype=torch.float64), None, ctx).weights
    assert weights is not None
    per_row = (weights[0, 0] > 0).sum(-1)
    assert per_row.max() <= 2 * stride + 1 + t // stride


def test_presets_and_options() -> None:
    strided = get_variant("sparse-strided").options()
    fixed = get_variant("sparse-fixed").options()
    assert strided.pattern == "strided" and fixed.pattern == "fixed"
    assert fixed.c <= fixed.stride
    for bad in ({"pattern": "axial"}, {"combine": "sum"}, {"c": 0}, {"stride": 4, "c": 5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            get_variant("sparse-strided").options(bad)
    with pytest.raises(ValueError, match="2 heads"):
        build(n_heads=1, combine="heads")
    build(n_heads=1, combine="merged")  # fine with one head
