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


# ---------------------------------------------------------------------------------------
# RoPE (RoFormer §3.3): rotated features in the numerator only
# ---------------------------------------------------------------------------------------
def roformer_rotate(x: Tensor, positions: Tensor) -> Tensor:
    """R_p x as RoFormer writes it (eq. 34): pairs (x_2i, x_2i+1) turned by p·θ_i,
    θ_i = 10000^(−2i/d), via complex numbers in float64."""
    d = x.shape[-1]
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = positions.to(torch.float64)[:, None] * theta[None, :]
    pairs = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], d // 2, 2))
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angle), angle)).flatten(-2)


def naive_rope(
    q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, q_pos: Tensor, k_pos: Tensor
) -> Tensor:
    """Eq. 19, one query and one key at a time: Σ_j (R_i φ(q_i))·(R_j φ(k_j)) v_j over
    Σ_j φ(q_i)·φ(k_j), the sums over the keys query i sees."""
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    rq, rk = roformer_rotate(phi_q, q_pos), roformer_rotate(phi_k, k_pos)
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float64)
    for i in range(q.shape[-2]):
        num = torch.zeros(*q.shape[:-2], v.shape[-1], dtype=torch.float64)
        den = torch.zeros(*q.shape[:-2], 1, dtype=torch.float64)
        for j in range(k.shape[-2]):
            seen = torch.ones(()) if allowed is None else allowed[..., i, j]
            seen = seen.to(torch.float64).reshape(*seen.shape, *([1] * (3 - seen.dim())))
            num = num + seen * (rq[..., i, :] * rk[..., j, :]).sum(-1, keepdim=True) * v[..., j, :]
            den = den + seen * (phi_q[..., i, :] * phi_k[..., j, :]).sum(-1, keepdim=True)
        out[..., i, :] = torch.where(den > 0, num / den, torch.zeros_like(num))
    return out


ROPE_ATOL = 1e-6  # the module's angles are float32 (rope_rotate), the reference's float64


def build_rope(chunk_size: int = 64) -> LinearAttention:
    torch.manual_seed(0)
    dims = AttentionDims(d_model=8, n_heads=H, head_dim=DH, max_len=32, position_scheme="rope")
    attn = get_variant("linear").build(dims, {"chunk_size": chunk_size})
    assert isinstance(attn, LinearAttention)
    return attn.double().eval()


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
@pytest.mark.parametrize("case", ["none", "padded", "causal", "causal+padded", "memory"])
def test_rope_rotates_the_numerators_features_only(case: str, chunk_size: int) -> None:
    attn = build_rope(chunk_size)
    memory = 3 if case == "memory" else 0
    q, k, v = qkv(T, T + memory, seed=4)
    pad = padding([T, T - 4, 2], T) if "padded" in case else None
    mask = AttentionMask(causal=case != "none" and case != "padded", key_padding=pad)
    if memory:
        mask = AttentionMask(causal=True, memory_len=memory)
    allowed = None
    if mask.causal:
        allowed = causal_allowed(T, T + memory, memory)[None, None].expand(B, H, T, T + memory)
    if pad is not None:
        keys = pad[:, None, None, :].expand(B, H, T, T)
        allowed = keys if allowed is None else allowed & keys
    q_pos = torch.arange(T) + memory
    k_pos = torch.arange(T + memory)
    want = naive_rope(q, k, v, allowed, q_pos, k_pos)
    torch.testing.assert_close(attend(attn, q, k, v, mask), want, atol=ROPE_ATOL, rtol=0)


def test_rope_on_linear_attention_is_relative_and_changes_the_output() -> None:
    """Shifting every position leaves the layer's output as it is; without RoPE the
    same weights give another output; the module rotates nothing before φ."""
    attn = build_rope()
    plain = build()
    plain.load_state_dict(attn.state_dict())
    x = torch.randn(B, T, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for mask in (AttentionMask(), AttentionMask(causal=True)):

        def run(layer: LinearAttention, offset: int = 0, mask: AttentionMask = mask) -> Tensor:
            ctx = AttentionContext(mask=mask, positions=torch.arange(T) + offset)
            with torch.no_grad():
                return layer(x, None, ctx).out

        torch.testing.assert_close(run(attn), run(attn, offset=17), atol=ROPE_ATOL, rtol=0)
        assert (run(attn) - run(plain)).abs().max() > 1e-4
    q, k = torch.randn(2, 1, H, T, DH, dtype=torch.float64).unbind(0)
    same_q, same_k = attn.rotate(q, k, AttentionContext())
    assert same_q is q and same_k is k


def test_rope_dense_weights_match_the_output() -> None:
    attn = build_rope()
    q, k, v = qkv(seed=6)
    ctx = AttentionContext(mask=AttentionMask(causal=True), need_weights=True)
    with torch.no_grad():
        out, weights = attn.attend(q, k, v, ctx)
    assert weights is not None
    torch.testing.assert_close(weights @ v, out, atol=ROPE_ATOL, rtol=0)
    assert (weights < 0).any()  # rotated numerators are not positive
