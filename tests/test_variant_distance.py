"""Distance-based attention: softmax(QKᵀ/√d − α_h|i − j|)V.

The reference is PyTorch's ``scaled_dot_product_attention`` with a float mask built
here (−α_h|i − j| on allowed keys, −∞ elsewhere); α = 0 is compared with the vanilla
variant holding the same weights. float64 throughout.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attn_cases import Cases, padding
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionMask,
    MultiHeadAttention,
    get_variant,
)
from attnbench.variants.distance import DistanceAttention

C = Cases(T=9)
B, T, S, D, H, DH = C.B, C.T, C.S, C.D, C.H, C.DH
inputs, heads = C.inputs, C.heads
ALPHAS = torch.tensor([0.0, 0.1, 0.5, 2.0], dtype=torch.float64)  # one per head


def build(name: str = "distance", seed: int = 0, **overrides):
    return C.build(name, seed, **overrides)


def sdpa_reference(
    attn: MultiHeadAttention,
    x: Tensor,
    alphas: Tensor,
    allowed: Tensor,
    q_pos: Tensor | None = None,
    k_pos: Tensor | None = None,
) -> Tensor:
    q_pos = torch.arange(x.shape[1]) if q_pos is None else q_pos
    k_pos = torch.arange(x.shape[1]) if k_pos is None else k_pos
    distance = (q_pos[:, None] - k_pos[None, :]).abs().to(torch.float64)  # (T, S)
    bias = -alphas[:, None, None] * distance  # (H, T, S)
    bias = bias.expand(x.shape[0], H, *distance.shape).masked_fill(~allowed, float("-inf"))
    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).nan_to_num(0.0)
    return attn.out_proj(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], D))


def set_alphas(attn: MultiHeadAttention, alphas: Tensor) -> None:
    assert isinstance(attn, DistanceAttention)
    with torch.no_grad():
        attn.alpha.copy_(alphas)


CASES = ["none", "causal", "causal+padding"]


def case_setup(case: str) -> tuple[AttentionMask, Tensor]:
    if case == "none":
        return AttentionMask(), torch.ones(1, 1, T, T, dtype=torch.bool)
    causal = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    if case == "causal":
        return AttentionMask(causal=True), causal
    pad = padding([T, 5, 0], T)
    return AttentionMask(causal=True, key_padding=pad), causal & pad[:, None, None, :]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ["distance", "distance-fixed"])
def test_matches_sdpa_with_distance_bias(name: str, case: str) -> None:
    attn = build(name)
    set_alphas(attn, ALPHAS)
    mask, allowed = case_setup(case)
    x = inputs()
    with torch.no_grad():
        got = attn(x, None, AttentionContext(mask=mask)).out
        want = sdpa_reference(attn, x, ALPHAS, allowed)
        no_penalty = sdpa_reference(attn, x, torch.zeros(H, dtype=torch.float64), allowed)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    assert (got - no_penalty).abs().max() > 1e-3  # the penalty does something


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("learned", [True, False])
def test_zero_penalty_is_vanilla(case: str, learned: bool) -> None:
    attn = build(alpha=0.0, learned=learned)
    vanilla = build("vanilla", seed=4)
    result = vanilla.load_state_dict(attn.state_dict(), strict=False)
    assert result.unexpected_keys == ["alpha"] and not result.missing_keys
    mask, _ = case_setup(case)
    x = inputs()
    with torch.no_grad():
        got = attn(x, None, AttentionContext(mask=mask, need_weights=True))
        want = vanilla(x, None, AttentionContext(mask=mask, need_weights=True))
    torch.testing.assert_close(got.out, want.out, atol=1e-12, rtol=0)
    assert got.weights is not None and want.weights is not None
    torch.testing.assert_close(got.weights, want.weights, atol=1e-12, rtol=0)


def test_equal_content_weights_fall_with_distance() -> None:
    """All keys identical → weight ∝ exp(−α|i − j|): falls monotonically with distance."""
    attn = build()
    alphas = torch.tensor([0.1, 0.3, 1.0, 2.0], dtype=torch.float64)
    set_alphas(attn, alphas)
    x = inputs()[:, :1].expand(B, T, D).contiguous()  # one token repeated
    with torch.no_grad():
        w = attn(x, None, AttentionContext(need_weights=True)).weights
    assert w is not None
    distance = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs()
    for h in range(H):
        for i in range(T):
            row = w[0, h, i]
            for j in range(T - 1):  # strictly decreasing away from i on both sides
                nearer, farther = (j + 1, j) if j < i else (j, j + 1)
                assert row[nearer] > row[farther]
        want = torch.softmax(-alphas[h] * distance.double(), dim=-1)
        torch.testing.assert_close(w[:, h], want.expand(B, T, T), atol=1e-12, rtol=0)


def test_learned_alpha_receives_gradient_fixed_does_not_train() -> None:
    attn = build().float().train()
    assert isinstance(attn, DistanceAttention)
    assert isinstance(attn.alpha, torch.nn.Parameter)
    torch.testing.assert_close(attn.alpha.detach(), torch.full((H,), 0.1))
    x = inputs().float()
    attn(x, None, AttentionContext(mask=AttentionMask(causal=True))).out.pow(2).sum().backward()
    assert attn.alpha.grad is not None and torch.isfinite(attn.alpha.grad).all()
    assert torch.all(attn.alpha.grad != 0)
    fixed = build("distance-fixed")
    assert isinstance(fixed, DistanceAttention)
    assert not isinstance(fixed.alpha, torch.nn.Parameter)
    assert "alpha" not in dict(fixed.named_parameters())
    assert "alpha" in fixed.state_dict()  # a buffer: saved with the model


def test_positions_and_memory_offset() -> None:
    attn = build()
    set_alphas(attn, ALPHAS)
    x = inputs()
    causal = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    mask = AttentionMask(causal=True)
    with torch.no_grad():
        plain = attn(x, None, AttentionContext(mask=mask)).out
        shifted = attn(x, None, AttentionContext(mask=mask, positions=torch.arange(5, 5 + T))).out
        spread = attn(x, None, AttentionContext(mask=mask, positions=2 * torch.arange(T))).out
        want_spread = sdpa_reference(
            attn, x, ALPHAS, causal, 2 * torch.arange(T), 2 * torch.arange(T)
        )
    torch.testing.assert_close(shifted, plain, atol=1e-12, rtol=0)  # only differences count
    torch.testing.assert_close(spread, want_spread, atol=1e-10, rtol=0)
    assert (spread - plain).abs().max() > 1e-4
    # memory_len: query i sits at key position m + i (keys: m memory tokens, then the T)
    m = 3
    q = torch.randn(1, H, 4, DH, dtype=torch.float64)
    k = torch.randn(1, H, m + 4, DH, dtype=torch.float64)
    v = torch.randn(1, H, m + 4, DH, dtype=torch.float64)
    ctx = AttentionContext(mask=AttentionMask(causal=True, memory_len=m), need_weights=True)
    with torch.no_grad():
        _, w = attn.attend(q, k, v, ctx)
    q_pos, k_pos = torch.arange(4) + m, torch.arange(m + 4)
    bias = -ALPHAS[:, None, None] * (q_pos[:, None] - k_pos[None, :]).abs().double()
    bias = bias.masked_fill(k_pos[None, :] > q_pos[:, None], float("-inf"))
    want = torch.softmax(q @ k.transpose(-2, -1) / DH**0.5 + bias, dim=-1)
    assert w is not None
    torch.testing.assert_close(w, want, atol=1e-12, rtol=0)
    with torch.no_grad():  # with positions given too, the same distances
        _, w2 = attn.attend(q, k, v, AttentionContext(mask=ctx.mask, positions=torch.arange(4) + 7))
    assert w2 is not None
    torch.testing.assert_close(w2, want, atol=1e-12, rtol=0)


def test_no_causal_leakage_and_declared_self_attention_only() -> None:
    attn = build()
    x = inputs()
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    for t in (1, 4, T - 1):
        changed = x.clone()
        changed[:, t] += 1.0
        with torch.no_grad():
            a, b = attn(x, None, ctx).out, attn(changed, None, ctx).out
        torch.testing.assert_close(a[:, :t], b[:, :t], atol=0, rtol=0)
        assert (a[:, t:] - b[:, t:]).abs().max() > 1e-4
    caps = get_variant("distance").capabilities
    assert caps.causal and caps.padding_mask and not caps.cross_attention
