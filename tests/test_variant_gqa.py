"""Grouped-query attention: G = h is vanilla exactly, G = 1 is MQA, the groups are right.

References are written here with PyTorch's SDPA on explicitly repeated key/value heads
(no grouping trick), with dense masks built by ``attn_cases``. float64 throughout.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attn_cases import Cases
from torch import Tensor

from attnbench.attention import AttentionContext, AttentionDims, AttentionMask, get_variant
from attnbench.variants.gqa import GroupedQueryAttention

C = Cases()
B, T, S, D, H, DH = C.B, C.T, C.S, C.D, C.H, C.DH
heads, case_setup = C.heads, C.case_setup
CASES = ["none", "causal", "causal+padding", "cross+padding"]


def build(name: str = "gqa", seed: int = 0, **overrides) -> GroupedQueryAttention:
    attn = C.build(name, seed, **overrides)
    assert isinstance(attn, GroupedQueryAttention)
    return attn


def reference(
    attn: GroupedQueryAttention, x: Tensor, source: Tensor | None, allowed: Tensor, kv_heads: int
) -> Tensor:
    """Query head i reads K/V head ⌊i / (H / G)⌋: repeat the G heads, then SDPA."""
    kv = x if source is None else source
    n = kv.shape[1]
    q = heads(attn.q_proj(x))  # (B, H, T, dh)
    k = attn.k_proj(kv).view(B, n, kv_heads, DH).transpose(1, 2)  # (B, G, S, dh)
    v = attn.v_proj(kv).view(B, n, kv_heads, DH).transpose(1, 2)
    group = H // kv_heads
    owner = torch.tensor([i // group for i in range(H)])  # the K/V head of each query head
    k_rep, v_rep = k[:, owner], v[:, owner]  # (B, H, S, dh), copies
    out = F.scaled_dot_product_attention(q, k_rep, v_rep, attn_mask=allowed).nan_to_num(0.0)
    return attn.out_proj(out.transpose(1, 2).reshape(B, x.shape[1], D))


@pytest.mark.parametrize("case", CASES)
def test_as_many_kv_heads_as_query_heads_is_vanilla_exactly(case: str) -> None:
    attn = build(kv_heads=H)
    vanilla = C.build("vanilla", seed=5)
    # same parameter names and shapes: vanilla's weights load into G = h without leftovers
    result = attn.load_state_dict(vanilla.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        want = vanilla(x, source, AttentionContext(mask=mask, need_weights=True))
        sdpa = reference(attn, x, source, allowed, kv_heads=H)
    assert torch.equal(got.out, want.out)  # the same operations in the same order
    assert got.weights is not None and want.weights is not None
    assert torch.equal(got.weights, want.weights)
    torch.testing.assert_close(got.out, sdpa, atol=1e-12, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_one_kv_head_is_multi_query_attention(case: str) -> None:
    attn = build("mqa")
    assert attn.kv_heads == 1
    assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (DH, D)
    x, source, mask, allowed = case_setup(case)
    kv = x if source is None else source
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask)).out
        # MQA written out: one (B, 1, S, dh) key and value broadcast over the H query heads
        q = heads(attn.q_proj(x))
        k = attn.k_proj(kv)[:, None].expand(B, H, kv.shape[1], DH)
        v = attn.v_proj(kv)[:, None].expand(B, H, kv.shape[1], DH)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).nan_to_num(0.0)
        want = attn.out_proj(out.transpose(1, 2).reshape(B, T, D))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_two_groups_match_the_repeated_heads_reference(case: str) -> None:
    attn = build()  # default: H // 2 = 2 K/V heads for 4 query heads
    assert attn.kv_heads == 2
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        want = reference(attn, x, source, allowed, kv_heads=2)
    torch.testing.assert_close(got.out, want, atol=1e-12, rtol=0)
    w = got.weights
    assert w is not None and w.shape == (B, H, T, allowed.shape[-1])
    full = allowed.expand_as(w)
    assert torch.all(w[~full] == 0)
    rows = full.any(-1)
    torch.testing.assert_close(w.sum(-1)[rows], torch.ones_like(w.sum(-1)[rows]))


def test_heads_of_a_group_share_keys_and_groups_do_not() -> None:
    """Query heads 0 and 1 (one group) with equal queries give equal maps; heads 0 and 2
    (two groups) do not."""
    attn = build()
    x = C.inputs()
    with torch.no_grad():
        attn.q_proj.weight[DH : 2 * DH] = attn.q_proj.weight[:DH]  # head 1 := head 0
        attn.q_proj.bias[DH : 2 * DH] = attn.q_proj.bias[:DH]
        attn.q_proj.weight[2 * DH : 3 * DH] = attn.q_proj.weight[:DH]  # head 2 := head 0
        attn.q_proj.bias[2 * DH : 3 * DH] = attn.q_proj.bias[:DH]
        w = attn(x, None, AttentionContext(need_weights=True)).weights
    assert w is not None
    assert torch.equal(w[:, 0], w[:, 1])
    assert (w[:, 0] - w[:, 2]).abs().max() > 1e-3


def test_kv_cache_size() -> None:
    def dims(n_heads: int, head_dim: int = 8) -> AttentionDims:
        return AttentionDims(
            d_model=n_heads * head_dim, n_heads=n_heads, head_dim=head_dim, max_len=8
        )

    gqa, mqa, vanilla = get_variant("gqa"), get_variant("mqa"), get_variant("vanilla")
    assert gqa.kv_cache_size(dims(4)) == 2 * 2 * 8  # default G = 4 // 2
    assert gqa.kv_cache_size(dims(8), {"kv_heads": 2}) == 2 * 2 * 8
    assert gqa.kv_cache_size(dims(4), {"kv_heads": 4}) == vanilla.kv_cache_size(dims(4)) == 64
    assert mqa.kv_cache_size(dims(4)) == mqa.kv_cache_size(dims(16)) == 2 * 8
    # default: the largest divisor below n_heads (n_heads // its smallest prime factor)
    assert gqa.kv_cache_size(dims(6)) == 2 * 3 * 8
    assert gqa.kv_cache_size(dims(9)) == 2 * 3 * 8
    assert gqa.kv_cache_size(dims(5)) == 2 * 1 * 8
    assert gqa.kv_cache_size(dims(1)) == 2 * 1 * 8
    # the declaration is what the module holds: K and V outputs per token
    attn = gqa.build(dims(8), {"kv_heads": 2})
    assert attn.k_proj.out_features + attn.v_proj.out_features == gqa.kv_cache_size(
        dims(8), {"kv_heads": 2}
    )


def test_parameter_count_shrinks_only_in_k_and_v() -> None:
    count = {kv: sum(p.numel() for p in build(kv_heads=kv).parameters()) for kv in (1, 2, 4)}
    vanilla = sum(p.numel() for p in C.build("vanilla").parameters())
    for kv, n in count.items():
        assert vanilla - n == 2 * (H - kv) * DH * (D + 1)


def test_bad_kv_heads_is_a_one_line_error_naming_the_valid_values() -> None:
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=8)
    spec = get_variant("gqa")
    for bad in (3, 8):
        with pytest.raises(ValueError) as info:
            spec.build(dims, {"kv_heads": bad})
        message = str(info.value)
        assert message == f"kv_heads={bad} must divide n_heads=4; valid values: 1, 2, 4"
        with pytest.raises(ValueError, match="valid values: 1, 2, 4"):
            spec.kv_cache_size(dims, {"kv_heads": bad})
    with pytest.raises(ValueError, match="positive divisor"):
        spec.options({"kv_heads": 0})
    with pytest.raises(ValueError, match="kv_heads"):
        spec.options({"kv_heads": "2"})


def test_no_causal_leakage_and_gradients() -> None:
    attn = build().float().train()
    x = C.inputs().float()
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    with torch.no_grad():
        base = attn(x, None, ctx).out
        for t in (1, 4, T - 1):
            changed = x.clone()
            changed[:, t] += 1.0
            out = attn(changed, None, ctx).out
            torch.testing.assert_close(out[:, :t], base[:, :t], atol=0, rtol=0)
            assert (out[:, t:] - base[:, t:]).abs().max() > 1e-4
    attn(x, None, ctx).out.pow(2).sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_capabilities_and_registration() -> None:
    gqa, mqa = get_variant("gqa"), get_variant("mqa")
    assert gqa.canonical and (mqa.canonical, mqa.preset_of) == (False, "gqa")
    assert mqa.resolved_options() == {"kv_heads": 1}
    assert "Ainslie" in gqa.paper and "Shazeer" in mqa.paper
    caps = gqa.capabilities
    assert caps.causal and caps.cross_attention and caps.padding_mask
    assert not caps.exact_softmax
