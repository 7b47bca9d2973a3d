"""Talking-heads attention: identity mixing is vanilla, mixing couples heads, masks hold.

The reference writes the two mixes as explicit sums over heads (no einsum), with a
dense mask built here; the identity case is compared with the vanilla variant
holding the same projection weights and with PyTorch's SDPA. float64 throughout.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from attn_cases import Cases
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionMask,
    MultiHeadAttention,
    get_variant,
)
from attnbench.variants.talking_heads import TalkingHeads

C = Cases()
B, T, S, D, H, DH = C.B, C.T, C.S, C.D, C.H, C.DH
inputs, heads, case_setup = C.inputs, C.heads, C.case_setup
CASES = ["none", "causal", "causal+padding", "cross+padding"]


def build(name: str = "talking-heads", seed: int = 0, **overrides):
    return C.build(name, seed, **overrides)


def reference(
    attn: TalkingHeads, x: Tensor, source: Tensor | None, allowed: Tensor
) -> tuple[Tensor, Tensor]:
    kv = x if source is None else source
    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(kv)), heads(attn.v_proj(kv))
    logits = q @ k.transpose(-2, -1) / math.sqrt(DH)  # (B, H, T, S)
    p_l, p_w = attn.logits_mix, attn.weights_mix
    mixed = [sum(p_l[h, g] * logits[:, h] for h in range(H)) for g in range(H)]
    probs = [
        torch.softmax(m.masked_fill(~allowed[:, 0], float("-inf")), dim=-1).nan_to_num(0.0)
        for m in mixed
    ]
    weights = torch.stack([sum(p_w[g, f] * probs[g] for g in range(H)) for f in range(H)], 1)
    out = (weights @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], D)
    return weights, attn.out_proj(out)


def randomise(attn: MultiHeadAttention) -> TalkingHeads:
    assert isinstance(attn, TalkingHeads)
    with torch.no_grad():  # mixed signs, so that masked positions would leak if mishandled
        attn.logits_mix.normal_(0.0, 1.0)
        attn.weights_mix.normal_(0.0, 1.0)
    return attn


@pytest.mark.parametrize("case", CASES)
def test_identity_mixing_is_vanilla_exactly(case: str) -> None:
    attn = build()
    assert isinstance(attn, TalkingHeads)
    assert torch.equal(attn.logits_mix, torch.eye(H, dtype=torch.float64))
    assert torch.equal(attn.weights_mix, torch.eye(H, dtype=torch.float64))
    vanilla = build("vanilla", seed=5)
    result = vanilla.load_state_dict(attn.state_dict(), strict=False)
    assert sorted(result.unexpected_keys) == ["logits_mix", "weights_mix"]
    assert not result.missing_keys
    x, source, mask, allowed = case_setup(case)
    kv = x if source is None else source
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        want = vanilla(x, source, AttentionContext(mask=mask, need_weights=True))
        sdpa = F.scaled_dot_product_attention(
            heads(attn.q_proj(x)), heads(attn.k_proj(kv)), heads(attn.v_proj(kv)), attn_mask=allowed
        ).nan_to_num(0.0)
        sdpa_out = attn.out_proj(sdpa.transpose(1, 2).reshape(B, T, D))
    assert torch.equal(got.out, want.out)  # the identity mixes change no bit
    assert got.weights is not None and want.weights is not None
    assert torch.equal(got.weights, want.weights)
    rows = allowed.expand(B, 1, T, allowed.shape[-1]).any(-1)[:, 0]
    torch.testing.assert_close(got.out[rows], sdpa_out[rows], atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_mixing_matches_reference(case: str) -> None:
    attn = randomise(build())
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        want_w, want_out = reference(attn, x, source, allowed)
    assert got.weights is not None
    torch.testing.assert_close(got.weights, want_w, atol=1e-12, rtol=0)
    torch.testing.assert_close(got.out, want_out, atol=1e-12, rtol=0)


@pytest.mark.parametrize("case", ["causal+padding", "cross+padding"])
def test_masked_keys_stay_exactly_zero_after_weight_mixing(case: str) -> None:
    attn = randomise(build())
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        w = attn(x, source, AttentionContext(mask=mask, need_weights=True)).weights
    assert w is not None
    full = allowed.expand_as(w)
    assert torch.all(w[~full] == 0)  # exact zeros, although P_w has entries of both signs
    assert (w[full] < 0).any()  # (negative mixed weights do occur on allowed keys)
    assert torch.isfinite(w).all()


def test_mixing_couples_heads() -> None:
    """Changing head 0's query changes head 1's output — but not with identity mixing."""
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(2, H, T, DH, generator=gen, dtype=torch.float64)
    k = torch.randn(2, H, T, DH, generator=gen, dtype=torch.float64)
    v = torch.randn(2, H, T, DH, generator=gen, dtype=torch.float64)
    q_changed = q.clone()
    q_changed[:, 0] += torch.randn(2, T, DH, generator=gen, dtype=torch.float64)
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    for init, coupled in (("random", True), ("identity", False)):
        attn = build(init=init)
        with torch.no_grad():
            a, _ = attn.attend(q, k, v, ctx)
            b, _ = attn.attend(q_changed, k, v, ctx)
        moved = (a[:, 1:] - b[:, 1:]).abs().max()
        assert (moved > 1e-4) if coupled else (moved == 0)
        assert (a[:, 0] - b[:, 0]).abs().max() > 1e-4


def test_no_causal_leakage() -> None:
    attn = randomise(build())
    x = inputs()
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    for t in (1, 4, T - 1):
        changed = x.clone()
        changed[:, t] += 1.0
        with torch.no_grad():
            a, b = attn(x, None, ctx).out, attn(changed, None, ctx).out
        torch.testing.assert_close(a[:, :t], b[:, :t], atol=0, rtol=0)
        assert (a[:, t:] - b[:, t:]).abs().max() > 1e-4


def test_random_init_and_gradients() -> None:
    attn = build(init="random").float().train()
    assert isinstance(attn, TalkingHeads)
    assert not torch.allclose(attn.logits_mix, torch.eye(H))
    x = inputs().float()
    attn(x, None, AttentionContext(mask=AttentionMask(causal=True))).out.pow(2).sum().backward()
    for p in (attn.logits_mix, attn.weights_mix):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="init"):
        get_variant("talking-heads").options({"init": "zeros"})
