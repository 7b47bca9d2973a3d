"""Linear attention (Katharopoulos et al. 2020) against the naive quadratic form.

The reference builds the full (T × S) kernel matrix φ(Q)φ(K)ᵀ with φ = elu + 1
written independently here (``F.elu(x) + 1``), applies an explicit mask, normalises
the rows and multiplies V. The variant never builds that matrix (prefix sums /
re-association), so agreement in float64 checks the linear-time algebra, the chunking
and the masks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    get_variant,
)
from attnbench.variants.linear_transformer import LinearAttention, elu_feature_map

B, H, T, S, DH = 3, 2, 11, 6, 4
ATOL = 1e-12  # float64


def build(chunk_size: int = 64, d_model: int = 8) -> LinearAttention:
    torch.manual_seed(0)
    dims = AttentionDims(d_model=d_model, n_heads=H, head_dim=d_model // H, max_len=32)
    attn = get_variant("linear").build(dims, {"chunk_size": chunk_size})
    assert isinstance(attn, LinearAttention)
    return attn.double().eval()


def qkv(t: int = T, s: int = T, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, t, DH, generator=gen, dtype=torch.float64)
    k = torch.randn(B, H, s, DH, generator=gen, dtype=torch.float64)
    v = torch.randn(B, H, s, DH, generator=gen, dtype=torch.float64)
    return q, k, v


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def naive(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None) -> Tensor:
    """Quadratic form: rows of the masked kernel matrix normalised, times V."""
    kernel = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-2, -1)  # (B, H, T, S)
    if allowed is not None:
        kernel = kernel * allowed
    total = kernel.sum(-1, keepdim=True)
    weights = torch.where(total > 0, kernel / total, torch.zeros_like(kernel))
    return weights @ v


def causal_allowed(t: int, s: int, memory_len: int = 0) -> Tensor:
    """(T, S): query i may see key j iff j <= memory_len + i, built by hand."""
    return torch.tensor([[j <= memory_len + i for j in range(s)] for i in range(t)])


def attend(attn: LinearAttention, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask) -> Tensor:
    with torch.no_grad():
        out, _ = attn.attend(q, k, v, AttentionContext(mask=mask))
    return out


# ---------------------------------------------------------------------------------------
# Feature map
# ---------------------------------------------------------------------------------------
def test_feature_map_is_elu_plus_one_and_positive() -> None:
    x = torch.linspace(-30, 30, 601, dtype=torch.float64)
    torch.testing.assert_close(elu_feature_map(x), F.elu(x) + 1, atol=1e-15, rtol=1e-12)
    assert (elu_feature_map(x) > 0).all()
    # positive in float32 too, where elu(x) + 1 already rounds to 0
    x32 = torch.linspace(-80, 10, 91)
    assert (elu_feature_map(x32) > 0).all()
    assert (F.elu(x32) + 1 == 0).any()  # the naive form would not be
    # and its gradient is finite everywhere (exp's unused branch is clamped)
    x32.requires_grad_(True)
    elu_feature_map(x32 * 20).sum().backward()
    assert x32.grad is not None and torch.isfinite(x32.grad).all()


# ---------------------------------------------------------------------------------------
# Equality with the quadratic form
# ---------------------------------------------------------------------------------------
def test_noncausal_equals_naive_quadratic_form() -> None:
    attn = build()
    q, k, v = qkv()
    got = attend(attn, q, k, v, AttentionMask())
    torch.testing.assert_close(got, naive(q, k, v, None), atol=ATOL, rtol=0)


def test_noncausal_with_padding_equals_naive() -> None:
    attn = build()
    q, k, v = qkv()
    pad = padding([T, 5, 1], T)
    got = attend(attn, q, k, v, AttentionMask(key_padding=pad))
    want = naive(q, k, v, pad[:, None, None, :])
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    # guard: the mask matters
    assert (got - naive(q, k, v, None)).abs().max() > 1e-3


def test_cross_attention_with_padding_equals_naive() -> None:
    attn = build()
    q, k, v = qkv(T, S)
    pad = padding([S, 2, 4], S)
    got = attend(attn, q, k, v, AttentionMask(key_padding=pad))
    assert got.shape == (B, H, T, DH)
    torch.testing.assert_close(got, naive(q, k, v, pad[:, None, None, :]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 3, 4, T, 64])
def test_causal_prefix_sums_equal_naive_quadratic_form(chunk_size: int) -> None:
    attn = build(chunk_size)
    q, k, v = qkv()
    got = attend(attn, q, k, v, AttentionMask(causal=True))
    want = naive(q, k, v, causal_allowed(T, T))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    # guard: the causal mask matters
    assert (got - naive(q, k, v, None)).abs().max() > 1e-3


@pytest.mark.parametrize("chunk_size", [3, 64])
def test_causal_with_padding_equals_naive(chunk_size: int) -> None:
    attn = build(chunk_size)
    q, k, v = qkv()
    pad = padding([T, 6, 2], T)
    pad[0, 0] = False  # a query (row 0 of batch 0) that sees no key at all
    got = attend(attn, q, k, v, AttentionMask(causal=True, key_padding=pad))
    want = naive(q, k, v, causal_allowed(T, T)[None, None] & pad[:, None, None, :])
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert torch.equal(got[0, :, 0], torch.zeros(H, DH, dtype=torch.float64))  # zeros, not NaN


@pytest.mark.parametrize("memory_len", [2, 5])
def test_causal_with_memory_offset_equals_naive(memory_len: int) -> None:
    attn = build(chunk_size=4)
    q, k, v = qkv(T, T + memory_len)
    got = attend(attn, q, k, v, AttentionMask(causal=True, memory_len=memory_len))
    want = naive(q, k, v, causal_allowed(T, T + memory_len, memory_len))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_no_causal_leakage() -> None:
    attn = build(chunk_size=4)
    q, k, v = qkv()
    base = attend(attn, q, k, v, AttentionMask(causal=True))
    for t in (0, 3, 4, 7, T - 1):  # inside chunks and on chunk boundaries
        k2, v2, q2 = k.clone(), v.clone(), q.clone()
        k2[:, :, t:] += 1.0
        v2[:, :, t:] -= 2.0
        q2[:, :, t + 1 :] *= 3.0
        got = attend(attn, q2, k2, v2, AttentionMask(causal=True))
        assert torch.equal(got[:, :, :t], base[:, :, :t])  # bit-identical before t
        assert (got[:, :, t:] - base[:, :, t:]).abs().max() > 1e-3


def test_dense_weights_match_output() -> None:
    attn = build(chunk_size=3)
    q, k, v = qkv()
    pad = padding([T, 6, 2], T)
    mask = AttentionMask(causal=True, key_padding=pad)
    with torch.no_grad():
        out, weights = attn.attend(q, k, v, AttentionContext(mask=mask, need_weights=True))
        _, none = attn.attend(q, k, v, AttentionContext(mask=mask))
    assert none is None  # no dense matrix unless asked
    assert weights is not None and weights.shape == (B, H, T, T)
    allowed = (causal_allowed(T, T)[None, None] & pad[:, None, None, :]).expand(B, H, T, T)
    assert torch.all(weights[~allowed] == 0)
    torch.testing.assert_close(weights @ v, out, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------
# Through the module
# ---------------------------------------------------------------------------------------
def test_module_under_bf16_autocast_is_close_to_float32() -> None:
    torch.manual_seed(0)
    dims = AttentionDims(d_model=16, n_heads=4, head_dim=4, max_len=64)
    attn = get_variant("linear").build(dims, {"chunk_size": 8}).eval()
    x = torch.randn(2, 40, 16)
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    with torch.no_grad():
        full = attn(x, None, ctx).out
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = attn(x, None, ctx).out
    assert torch.isfinite(low.float()).all()
    torch.testing.assert_close(low.float(), full, atol=0.05, rtol=0.05)


def test_bad_chunk_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        get_variant("linear").options({"chunk_size": 0})
