"""Transformer-XL: relative shift, segment recurrence, stop-gradient memory, causality."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.attention import AttentionContext, AttentionDims, AttentionMask, get_variant
from attnbench.model import LanguageModel, ModelConfig
from attnbench.variants.transformer_xl import relative_shift


@pytest.fixture(autouse=True)
def float64_default():
    """float64 inside this module's tests only (a module-level setting would leak)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


DIMS = AttentionDims(d_model=16, n_heads=2, head_dim=8, max_len=64, is_causal=True)


def test_relative_shift_equals_naive_per_pair_indexing() -> None:
    t, m = 5, 3
    s = m + t
    distances = torch.arange(s - 1, -t, -1)  # column r ↔ distance S − 1 − r
    per_distance = torch.randn(2, t, t + s - 1)
    shifted = relative_shift(per_distance, m)
    for i in range(t):
        for j in range(s):
            r = int((distances == (m + i - j)).nonzero())
            assert shifted[1, i, j] == per_distance[1, i, r]


def test_scores_equal_naive_per_pair_formula() -> None:
    """A_ij = (q_i + u)ᵀk_j + (q_i + v)ᵀ W_R R_{i−j}, computed pair by pair."""
    torch.manual_seed(0)
    attn = get_variant("transformer-xl").build(DIMS).eval()
    with torch.no_grad():
        attn.u.normal_()
        attn.v.normal_()
    x, mem = torch.randn(1, 4, 16), torch.randn(1, 3, 16)
    out = attn(
        x, None, AttentionContext(mask=AttentionMask(causal=True), state=mem, need_weights=True)
    )
    h = torch.cat([mem, x], 1)
    q = attn.split_heads(attn.q_proj(x))[0]
    k = attn.split_heads(attn.k_proj(h))[0]
    d = DIMS.d_model
    inv = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    expected = torch.full((2, 4, 7), float("-inf"))
    for i in range(4):
        for j in range(7):
            dist = 3 + i - j
            if dist < 0:
                continue  # causal
            rel = torch.cat([(dist * inv).sin(), (dist * inv).cos()])
            w_r = attn.r_proj(rel).view(2, 8)
            for head in range(2):
                score = (q[head, i] + attn.u[head, 0]) @ k[head, j]
                score = score + (q[head, i] + attn.v[head, 0]) @ w_r[head]
                expected[head, i, j] = score / math.sqrt(8)
    torch.testing.assert_close(out.weights[0], torch.softmax(expected, -1))


def _lm() -> LanguageModel:
    cfg = ModelConfig(d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=64, dropout=0.0)
    return LanguageModel(20, cfg, get_variant("transformer-xl"), {"mem_len": 6}).eval()


def test_segment_two_depends_on_segment_one_through_memory() -> None:
    torch.manual_seed(0)
    lm = _lm()
    seg1, seg2 = torch.randint(0, 20, (2, 6)), torch.randint(0, 20, (2, 6))
    out1 = lm(seg1)
    assert out1.state is not None and len(out1.state) == 2
    assert out1.state[0].shape == (2, 6, 16)
    with_memory = lm(seg2, state=out1.state).logits
    without = lm(seg2).logits
    assert not torch.allclose(with_memory, without)
    other = seg1.clone()
    other[:, 0] = (other[:, 0] + 1) % 20
    changed = lm(seg2, state=lm(other).state).logits
    assert not torch.allclose(changed, with_memory)


def test_no_gradient_flows_into_the_memory() -> None:
    """A loss on segment 2 sends no gradient back into segment 1's computation."""
    torch.manual_seed(0)
    lm = _lm().train()
    seg1, seg2 = torch.randint(0, 20, (2, 6)), torch.randint(0, 20, (2, 6))
    captured = []
    hook = lm.embed.register_forward_hook(lambda _m, _i, out: captured.append(out))
    state = lm(seg1).state
    hook.remove()
    seg1_embedding = captured[0]
    seg1_embedding.retain_grad()
    assert all(not s.requires_grad and s.grad_fn is None for s in state)
    lm(seg2, state=state).logits.sum().backward()
    assert seg1_embedding.grad is None  # no path from segment 2's loss to segment 1
    # The memory is used, though: with a gradient-tracking copy, it would receive one.
    memory = [s.clone().requires_grad_(True) for s in state]
    lm(seg2, state=memory).logits.sum().backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in memory)


def test_no_causal_leakage_with_memory() -> None:
    torch.manual_seed(0)
    lm = _lm()
    seg1, seg2 = torch.randint(0, 20, (1, 6)), torch.randint(0, 20, (1, 6))
    state = lm(seg1).state
    base = lm(seg2, state=state).logits
    future = seg2.clone()
    future[0, 4] = (future[0, 4] + 3) % 20
    changed = lm(future, state=state).logits
    torch.testing.assert_close(changed[0, :4], base[0, :4])
    assert not torch.allclose(changed[0, 4:], base[0, 4:])
