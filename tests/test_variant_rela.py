"""ReLA (rela, rela-nogate): ReLU weights, switch-off, the gated RMSNorm, the sparsity rate.

The reference writes the formula out from the module's parameters —
W_O(σ(w ⊙ Z) ⊙ g ⊙ Z / √(mean Z² + ε)) with Z = concat_h ReLU(q kᵀ/√d) v and a
dense mask built here — so an error in the scaling, masking, norm axis or gate
shows up. float64 unless stated.
"""

from __future__ import annotations

import math

import pytest
import torch
from attn_cases import Cases
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionMask,
    get_variant,
)
from attnbench.variants.rela import ReLA

C = Cases()
B, T, S, D, H, DH = C.B, C.T, C.S, C.D, C.H, C.DH
build, inputs, heads, case_setup = C.build, C.inputs, C.heads, C.case_setup
NAMES = ["rela", "rela-nogate"]


def reference(
    attn: ReLA, x: Tensor, source: Tensor | None, allowed: Tensor, head_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    kv = x if source is None else source
    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(kv)), heads(attn.v_proj(kv))
    scores = q @ k.transpose(-2, -1) / math.sqrt(DH)
    weights = torch.where(allowed, scores.clamp(min=0), torch.zeros_like(scores))
    z = (weights @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], D)  # (B, T, D)
    eps = attn.options.eps
    y = attn.norm_gain * z / torch.sqrt((z * z).mean(-1, keepdim=True) + eps)
    if attn.gate_weight is not None:
        y = y / (1 + torch.exp(-attn.gate_weight * z))
    if head_mask is not None:
        y = y * head_mask.repeat_interleave(DH)
    return weights, attn.out_proj(y)


@pytest.mark.parametrize("case", ["none", "causal+padding", "cross+padding"])
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference(name: str, case: str) -> None:
    attn = build(name)
    with torch.no_grad():  # a non-trivial gain, so a norm over the wrong axis shows
        attn.norm_gain.uniform_(0.5, 1.5)
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        want_w, want_out = reference(attn, x, source, allowed)
    assert got.weights is not None
    torch.testing.assert_close(got.weights, want_w.expand_as(got.weights), atol=1e-12, rtol=0)
    torch.testing.assert_close(got.out, want_out, atol=1e-12, rtol=0)


def test_gated_and_ungated_differ() -> None:
    gated, plain = build("rela"), build("rela-nogate")
    assert gated.gate_weight is not None and plain.gate_weight is None
    missing = plain.load_state_dict(gated.state_dict(), strict=False)
    assert missing.unexpected_keys == ["gate_weight"] and not missing.missing_keys
    x = inputs()
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    with torch.no_grad():
        assert (gated(x, None, ctx).out - plain(x, None, ctx).out).abs().max() > 1e-3
    assert get_variant("rela").resolved_options()["gate"] is True
    assert get_variant("rela-nogate").resolved_options()["gate"] is False


# ---------------------------------------------------------------------------------------
# Switching off and sparsity
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_query_with_only_negative_scores_switches_off(name: str) -> None:
    attn = build(name)
    with torch.no_grad():  # q = −k for the same input: every score is −|k|²/√d < 0
        attn.q_proj.weight.copy_(-attn.k_proj.weight)
        attn.q_proj.bias.copy_(-attn.k_proj.bias)
    x = inputs()[:, :1].expand(B, T, D).contiguous()  # one token repeated
    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
    with torch.no_grad():
        z, weights = attn.attend(q, k, v, AttentionContext())
        out = attn(x, None, AttentionContext()).out
    assert weights is not None
    assert torch.equal(weights, torch.zeros_like(weights))  # attends to nothing
    assert torch.equal(z, torch.zeros_like(z))  # exactly zero before the norm and gate
    assert torch.equal(out, attn.out_proj.bias.expand(B, T, D))  # only W_O's bias is left
    assert attn.last_sparsity == 1.0
    # with q = +k every score is positive: the query does attend (the test is not vacuous)
    with torch.no_grad():
        attn.q_proj.weight.copy_(attn.k_proj.weight)
        attn.q_proj.bias.copy_(attn.k_proj.bias)
        out = attn(x, None, AttentionContext()).out
    assert (out - attn.out_proj.bias).abs().max() > 1e-3
    assert attn.last_sparsity == 0.0


def test_sparsity_rate_on_a_constructed_case() -> None:
    attn = build("rela")
    assert attn.last_sparsity is None  # before any forward
    # one batch, one head used (the others copy it); scores q·k in a 2-d subspace
    q = torch.tensor([[1.0, 0], [-1, 0], [0, 0], [1, 0]], dtype=torch.float64)
    k = torch.tensor([[1.0, 0], [-1, 0], [2, 0], [0, 1]], dtype=torch.float64)
    pad = torch.zeros(DH - 2, dtype=torch.float64)
    qh = torch.stack([torch.cat([r, pad]) for r in q])[None, None].expand(1, H, 4, DH)
    kh = torch.stack([torch.cat([r, pad]) for r in k])[None, None].expand(1, H, 4, DH)
    v = torch.ones(1, H, 4, DH, dtype=torch.float64)
    # scores: row 0 [1, −1, 2, 0], row 1 [−1, 1, −2, 0], row 2 all 0, row 3 = row 0
    attn.attend(qh, kh, v, AttentionContext())
    assert attn.last_sparsity == pytest.approx((2 + 3 + 4 + 2) / 16)  # a zero score counts
    # causal: row i sees keys ≤ i → zeros 0 of 1, 1 of 2, 3 of 3, 2 of 4; masked keys not counted
    attn.attend(qh, kh, v, AttentionContext(mask=AttentionMask(causal=True)))
    assert attn.last_sparsity == pytest.approx(6 / 10)
    # padding the last key away too: row 3 sees [1, −1, 2] → 1 zero of 3
    mask = AttentionMask(causal=True, key_padding=torch.tensor([[True, True, True, False]]))
    attn.attend(qh, kh, v, AttentionContext(mask=mask))
    assert attn.last_sparsity == pytest.approx(5 / 9)
    assert isinstance(attn.last_sparsity, float)


# ---------------------------------------------------------------------------------------
# Masks and head mask
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_masked_keys_exactly_zero_and_ignored(name: str) -> None:
    attn = build(name)
    x, source, mask, allowed = case_setup("causal+padding")
    assert mask.key_padding is not None
    changed = torch.where(mask.key_padding[..., None], x, 50 * inputs(seed=7))
    with torch.no_grad():
        a = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        b = attn(changed, source, AttentionContext(mask=mask, need_weights=True))
    assert a.weights is not None
    assert torch.all(a.weights[~allowed.expand_as(a.weights)] == 0)
    real = mask.key_padding  # outputs at real positions ignore padded tokens
    torch.testing.assert_close(a.out[real], b.out[real], atol=1e-12, rtol=0)
    assert torch.isfinite(a.out).all()  # the all-padding sequence gives finite outputs


def test_causal_no_leakage() -> None:
    attn = build("rela")
    x = inputs()
    changed = x.clone()
    changed[:, 4] += 1.0
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    with torch.no_grad():
        a, b = attn(x, None, ctx).out, attn(changed, None, ctx).out
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=0, rtol=0)
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3


@pytest.mark.parametrize("h", [0, 2])
def test_head_mask_removes_that_heads_slice(h: int) -> None:
    attn = build("rela")
    x, source, mask, allowed = case_setup("causal+padding")
    head_mask = torch.ones(H, dtype=torch.float64)
    head_mask[h] = 0.0
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, head_mask=head_mask)).out
        _, want = reference(attn, x, source, allowed, head_mask=head_mask)
        full = attn(x, source, AttentionContext(mask=mask)).out
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    assert (got - full).abs().max() > 1e-4


def test_bf16_autocast() -> None:
    attn = build("rela").float()
    x = inputs().float().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, None, AttentionContext(mask=AttentionMask(causal=True))).out
    assert torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert 0.0 <= (attn.last_sparsity or 0.0) <= 1.0
