"""Sigmoid attention: the formula with its bias b = −log n, masks, and which n is used.

The reference is written here: σ(QKᵀ/√d − log n) times the dense 0/1 mask of
``attn_cases`` (masked pairs contribute 0 by multiplication, not through −∞), with n
counted from that mask. float64 throughout.
"""

from __future__ import annotations

import math

import pytest
import torch
from attn_cases import Cases
from torch import Tensor

from attnbench.attention import AttentionContext, AttentionMask, get_variant
from attnbench.variants.sigmoid import SigmoidAttention

C = Cases()
B, T, S, D, H, DH = C.B, C.T, C.S, C.D, C.H, C.DH
heads, case_setup = C.heads, C.case_setup
CASES = ["none", "causal", "causal+padding", "cross+padding"]


def build(seed: int = 0, **overrides) -> SigmoidAttention:
    attn = C.build("sigmoid", seed, **overrides)
    assert isinstance(attn, SigmoidAttention)
    return attn


def reference(
    attn: SigmoidAttention,
    x: Tensor,
    source: Tensor | None,
    allowed: Tensor,
    n: Tensor | float,
    distance_bias: Tensor | float = 0.0,
) -> tuple[Tensor, Tensor]:
    kv = x if source is None else source
    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(kv)), heads(attn.v_proj(kv))
    logits = q @ k.transpose(-2, -1) / math.sqrt(DH) + distance_bias  # (B, H, T, S)
    b = -torch.log(torch.as_tensor(n, dtype=torch.float64))
    weights = torch.sigmoid(logits + b) * allowed.to(torch.float64)
    out = (weights @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], D)
    return weights, attn.out_proj(out)


def keys_seen(allowed: Tensor) -> Tensor:
    """n per query: its allowed keys (at least 1), (B|1, 1, T, 1)."""
    return allowed.sum(-1, keepdim=True).clamp_min(1).to(torch.float64)


@pytest.mark.parametrize("case", CASES)
def test_matches_the_formula(case: str) -> None:
    attn = build()
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        want_w, want_out = reference(attn, x, source, allowed, keys_seen(allowed))
    assert got.weights is not None
    torch.testing.assert_close(got.weights, want_w.expand_as(got.weights), atol=1e-12, rtol=0)
    torch.testing.assert_close(got.out, want_out, atol=1e-12, rtol=0)
    full = allowed.expand_as(got.weights)
    assert torch.all(got.weights[~full] == 0)  # masked keys contribute exactly 0


@pytest.mark.parametrize("case", CASES)
def test_max_len_bias_matches_the_formula(case: str) -> None:
    attn = build(bias_n="max_len")
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        want_w, want_out = reference(attn, x, source, allowed, float(C.max_len))
    assert got.weights is not None
    torch.testing.assert_close(got.weights, want_w.expand_as(got.weights), atol=1e-12, rtol=0)
    torch.testing.assert_close(got.out, want_out, atol=1e-12, rtol=0)


def zero_queries(attn: SigmoidAttention) -> SigmoidAttention:
    with torch.no_grad():
        attn.q_proj.weight.zero_()
        attn.q_proj.bias.zero_()
    return attn


@pytest.mark.parametrize("case", CASES)
def test_the_bias_is_minus_log_n(case: str) -> None:
    """With Q = 0 every logit is b alone, so each allowed weight is σ(−log n) = 1/(1 + n)."""
    attn = zero_queries(build())
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        w = attn(x, source, AttentionContext(mask=mask, need_weights=True)).weights
    assert w is not None
    n_keys = allowed.shape[-1]
    lengths = {"causal+padding": C.self_lengths, "cross+padding": C.cross_lengths}.get(
        case, (n_keys,) * B
    )
    for row in range(B):
        for i in range(T):
            seen = i + 1 if case.startswith("causal") else n_keys
            n = min(seen, lengths[row])  # the keys query i of this row may attend to
            want = torch.zeros(n_keys, dtype=torch.float64)
            if n > 0:
                keys = allowed.expand(B, 1, T, n_keys)[row, 0, i]
                want[keys] = 1.0 / (1.0 + n)
            torch.testing.assert_close(w[row, :, i], want.expand(H, -1), atol=1e-15, rtol=0)
    # the unmasked case: n = T for every query, b = −log 7
    if case == "none":
        assert torch.allclose(w, torch.full_like(w, 1 / (1 + T)), atol=1e-15, rtol=0)


def test_the_max_len_bias_is_minus_log_max_len() -> None:
    attn = zero_queries(build(bias_n="max_len"))
    x, _, mask, allowed = case_setup("causal+padding")
    with torch.no_grad():
        w = attn(x, None, AttentionContext(mask=mask, need_weights=True)).weights
    assert w is not None
    full = allowed.expand_as(w)
    torch.testing.assert_close(w[full], torch.full_like(w[full], 1 / (1 + C.max_len)))
    assert torch.all(w[~full] == 0)


def test_rows_are_not_normalised() -> None:
    attn = build()
    with torch.no_grad():
        w = attn(C.inputs(), None, AttentionContext(need_weights=True)).weights
    assert w is not None
    sums = w.sum(-1)
    assert (sums - 1).abs().max() > 1e-2  # not a softmax
    assert torch.all((w > 0) & (w < 1))


@pytest.mark.parametrize("bias_n", ["allowed", "max_len"])
def test_a_causal_prefix_does_not_depend_on_what_follows(bias_n: str) -> None:
    """Position i's output is the same in a sequence of length t > i and of length T:
    no leakage of later tokens, and none of the sequence's length either."""
    attn = build(bias_n=bias_n)
    x = C.inputs()
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    with torch.no_grad():
        full = attn(x, None, ctx).out
        for t in (1, 3, T - 1):
            prefix = attn(x[:, :t], None, ctx).out
            torch.testing.assert_close(prefix, full[:, :t], atol=1e-13, rtol=0)
            changed = x.clone()
            changed[:, t] += 1.0
            out = attn(changed, None, ctx).out
            torch.testing.assert_close(out[:, :t], full[:, :t], atol=0, rtol=0)
            assert (out[:, t:] - full[:, t:]).abs().max() > 1e-4


def test_padding_changes_nothing() -> None:
    """A padded row computes what the unpadded sequence computes alone."""
    attn = build()
    x, source, mask, _ = case_setup("cross+padding")
    with torch.no_grad():
        batched = attn(x, source, AttentionContext(mask=mask)).out
        for row, length in enumerate(C.cross_lengths):
            alone = attn(x[row : row + 1], source[row : row + 1, :length], AttentionContext()).out
            torch.testing.assert_close(batched[row : row + 1], alone, atol=1e-13, rtol=0)


def test_fully_masked_row_is_finite_with_finite_gradients() -> None:
    attn = build().float()
    x, _, mask, _ = case_setup("causal+padding")  # row 2 has no real token
    x = x.float().requires_grad_(True)
    out = attn(x, None, AttentionContext(mask=mask)).out
    torch.testing.assert_close(out[2], attn.out_proj.bias.expand(T, D).detach())
    out.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in attn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_options_and_capabilities() -> None:
    spec = get_variant("sigmoid")
    assert spec.resolved_options() == {"bias_n": "allowed"}
    assert "Ramapuram" in spec.paper and "Sigmoid Self-Attention" in spec.paper
    with pytest.raises(ValueError, match="bias_n must be one of allowed, max_len"):
        spec.options({"bias_n": "length"})
    caps = spec.capabilities
    assert caps.causal and caps.cross_attention and caps.padding_mask
    assert not caps.exact_softmax


@pytest.mark.parametrize("case", ["none", "causal", "causal+padding"])
def test_alibi_joins_the_bias_inside_the_sigmoid(case: str) -> None:
    """Under ALiBi: σ(q_i·k_j/√d − log n_i − m_h·|i − j|), slopes from Press et al.'s
    geometric rule for 4 heads (2^-2, 2^-4, 2^-6, 2^-8), written out here."""
    attn = build()
    x, source, mask, allowed = case_setup(case)
    slopes = torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8], dtype=torch.float64)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    distance_bias = -slopes[:, None, None] * (i - j).abs().to(torch.float64)  # (H, T, T)
    alibi = AttentionMask(
        causal=mask.causal, key_padding=mask.key_padding, alibi_slopes=slopes.float()
    )
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=alibi, need_weights=True))
        want_w, want_out = reference(attn, x, source, allowed, keys_seen(allowed), distance_bias)
        plain = attn(x, source, AttentionContext(mask=mask)).out
    assert got.weights is not None
    torch.testing.assert_close(got.weights, want_w.expand_as(got.weights), atol=1e-7, rtol=0)
    torch.testing.assert_close(got.out, want_out, atol=1e-6, rtol=0)
    assert (got.out - plain).abs().max() > 1e-3  # the bias changed the output
