"""Vanilla attention against an independent reference, masks and masked softmax.

The reference reuses the module's own projections and calls PyTorch's fused
``scaled_dot_product_attention``, so any error in vanilla's head split, scaling,
masking or merge shows up as a mismatch. Everything runs in float64 so the
comparison can be tight.
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
    MultiHeadAttention,
    get_variant,
    masked_softmax,
)

B, T, S, D, H = 3, 7, 5, 16, 4
DH = D // H
ATOL = 1e-10  # float64


def build_vanilla(seed: int = 0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=32, dropout=0.0)
    attn = get_variant("vanilla").build(dims)
    assert isinstance(attn, MultiHeadAttention)
    return attn.double().eval()


def inputs(length: int = T, seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, length, D, generator=gen, dtype=torch.float64)


def padding(lengths: list[int], total: int) -> Tensor:
    """(B, total) bool, True = real token, padding at the end."""
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def reference_heads(
    attn: MultiHeadAttention, x: Tensor, source: Tensor | None, allowed: Tensor | None
) -> Tensor:
    """Per-head output (B, H, T, dh) of SDPA with the module's projections."""
    kv = x if source is None else source

    def heads(t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, H, DH).transpose(1, 2)

    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(kv)), heads(attn.v_proj(kv))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


def reference(
    attn: MultiHeadAttention,
    x: Tensor,
    source: Tensor | None,
    allowed: Tensor | None,
    head_mask: Tensor | None = None,
) -> Tensor:
    out = reference_heads(attn, x, source, allowed)
    if head_mask is not None:
        out = out * head_mask[None, :, None, None]
    b, _, n, _ = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, H * DH))


def causal_allowed(q_len: int, k_len: int) -> Tensor:
    return torch.ones(q_len, k_len, dtype=torch.bool).tril()


CASES = ["none", "causal", "padding", "causal+padding", "cross+padding"]


def case_setup(case: str) -> tuple[Tensor, Tensor | None, AttentionMask, Tensor | None]:
    """(x, source, the mask given to vanilla, the boolean mask given to SDPA)."""
    x = inputs(T)
    if case == "none":
        return x, None, AttentionMask(), None
    if case == "causal":
        return x, None, AttentionMask(causal=True), causal_allowed(T, T)
    pad = padding([T, 4, 1], T)
    if case == "padding":
        return x, None, AttentionMask(key_padding=pad), pad[:, None, None, :]
    if case == "causal+padding":
        allowed = causal_allowed(T, T)[None, None] & pad[:, None, None, :]
        return x, None, AttentionMask(causal=True, key_padding=pad), allowed
    assert case == "cross+padding"
    source = inputs(S, seed=2)
    src_pad = padding([S, 2, 3], S)
    return x, source, AttentionMask(key_padding=src_pad), src_pad[:, None, None, :]


@pytest.mark.parametrize("case", CASES)
def test_vanilla_matches_sdpa_reference(case: str) -> None:
    attn = build_vanilla()
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask)).out
        want = reference(attn, x, source, allowed)
    assert got.shape == (B, T, D)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_vanilla_float32_matches_reference_at_1e5() -> None:
    attn = build_vanilla().float()
    x, _source, mask, allowed = case_setup("causal+padding")
    with torch.no_grad():
        got = attn(x.float(), None, AttentionContext(mask=mask)).out
        want = reference(attn, x.float(), None, allowed)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_reference_is_sensitive_to_the_mask() -> None:
    """Guard: the cases above would not pass with the mask ignored."""
    attn = build_vanilla()
    x, source, mask, _allowed = case_setup("causal+padding")
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask)).out
        unmasked = reference(attn, x, source, None)
    assert (got - unmasked).abs().max() > 1e-3


@pytest.mark.parametrize("case", CASES)
def test_weights_shape_normalised_and_zero_on_masked_keys(case: str) -> None:
    attn = build_vanilla()
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        weights = attn(x, source, AttentionContext(mask=mask, need_weights=True)).weights
    k_len = S if source is not None else T
    assert weights is not None
    assert weights.shape == (B, H, T, k_len)
    full = (
        torch.ones(B, H, T, k_len, dtype=torch.bool)
        if allowed is None
        else allowed.expand(B, H, T, k_len)
    )
    assert torch.all(weights[~full] == 0.0)  # exactly zero, not just small
    assert torch.all(weights >= 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T, dtype=torch.float64))
    # the weights are the ones that produced the output
    with torch.no_grad():
        heads = reference_heads(attn, x, source, allowed)
        v = attn.v_proj(x if source is None else source).view(B, k_len, H, DH).transpose(1, 2)
    torch.testing.assert_close(weights @ v, heads, atol=ATOL, rtol=0)


def test_need_weights_false_returns_none() -> None:
    attn = build_vanilla()
    x = inputs()
    out = attn(x, None, AttentionContext(mask=AttentionMask(causal=True), need_weights=False))
    assert out.weights is None
    assert out.out.shape == (B, T, D)


def test_masked_softmax_fully_masked_row_is_zero_not_nan() -> None:
    scores = torch.randn(2, 3, 4, requires_grad=True)
    allowed = torch.ones(2, 3, 4, dtype=torch.bool)
    allowed[0, 1] = False  # a query that may see nothing
    allowed[1, 2, 1:] = False
    probs = masked_softmax(scores, allowed)
    assert not torch.isnan(probs).any()
    assert torch.equal(probs[0, 1], torch.zeros(4))
    torch.testing.assert_close(probs[1, 2], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(probs[0, 0], F.softmax(scores[0, 0], dim=-1))
    probs.sum().backward()  # and no NaN reaches the scores' gradient
    assert scores.grad is not None and torch.isfinite(scores.grad).all()


def test_masked_softmax_without_mask_is_softmax() -> None:
    scores = torch.randn(2, 5)
    torch.testing.assert_close(masked_softmax(scores, None), F.softmax(scores, dim=-1))


def test_vanilla_padded_query_row_with_nothing_allowed_is_finite() -> None:
    """A sequence that is all padding: its queries see no key; outputs stay finite."""
    attn = build_vanilla()
    pad = padding([T, 0, 3], T)
    with torch.no_grad():
        out = attn(inputs(), None, AttentionContext(mask=AttentionMask(key_padding=pad)))
    assert torch.isfinite(out.out).all()


@pytest.mark.parametrize("h", range(H))
def test_head_mask_zeroes_that_heads_output(h: int) -> None:
    attn = build_vanilla()
    x, source, mask, allowed = case_setup("causal+padding")
    head_mask = torch.ones(H, dtype=torch.float64)
    head_mask[h] = 0.0
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, head_mask=head_mask)).out
        want = reference(attn, x, source, allowed, head_mask=head_mask)
        unablated = reference(attn, x, source, allowed)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert (got - unablated).abs().max() > 1e-3


def test_all_ones_head_mask_equals_no_head_mask_exactly() -> None:
    attn = build_vanilla()
    x, source, mask, _ = case_setup("causal+padding")
    with torch.no_grad():
        plain = attn(x, source, AttentionContext(mask=mask)).out
        ones = attn(x, source, AttentionContext(mask=mask, head_mask=torch.ones(H))).out
    assert torch.equal(plain, ones)


def test_allowed_none_when_nothing_is_masked() -> None:
    assert AttentionMask().allowed(3, 4, torch.device("cpu")) is None


def test_allowed_with_memory() -> None:
    mem, q_len = 3, 4
    k_len = mem + q_len
    allowed = AttentionMask(causal=True, memory_len=mem).allowed(q_len, k_len, torch.device("cpu"))
    assert allowed is not None
    assert allowed.shape == (1, 1, q_len, k_len)
    want = torch.tensor(
        [[j <= mem + i for j in range(k_len)] for i in range(q_len)], dtype=torch.bool
    )
    assert torch.equal(allowed[0, 0], want)
    # query 0 sees all the memory and itself, the last query sees everything
    assert allowed[0, 0, 0].tolist() == [True] * (mem + 1) + [False] * (q_len - 1)
    assert allowed[0, 0, -1].all()


def test_allowed_with_memory_and_padding() -> None:
    mem, q_len = 2, 3
    k_len = mem + q_len
    pad = padding([k_len, 3], k_len)
    mask = AttentionMask(causal=True, key_padding=pad, memory_len=mem)
    allowed = mask.allowed(q_len, k_len, torch.device("cpu"))
    assert allowed is not None
    assert allowed.shape == (2, 1, q_len, k_len)
    causal = torch.tensor([[j <= mem + i for j in range(k_len)] for i in range(q_len)])
    assert torch.equal(allowed[0, 0], causal)
    assert torch.equal(allowed[1, 0], causal & pad[1][None, :])


def test_allowed_padding_only_broadcasts_over_heads_and_queries() -> None:
    pad = padding([3, 1], 4)
    allowed = AttentionMask(key_padding=pad).allowed(5, 4, torch.device("cpu"))
    assert allowed is not None
    assert allowed.shape == (2, 1, 1, 4)
    assert torch.equal(allowed[:, 0, 0], pad)
