"""The mask's cached forms (AttentionMask.allowed / bias / has_empty_rows) and the
one-pass scaled_masked_softmax, against masks and softmaxes built independently here.

The dense reference masks come from attn_cases (built without AttentionMask); the
reference softmax is the two-fill masked_softmax path written out, weights and
gradients, in float64 and float32.
"""

from __future__ import annotations

import pytest
import torch
from attn_cases import Cases, padding

from attnbench.attention import AttentionMask, masked_softmax, scaled_masked_softmax

C = Cases(B=3, T=7, S=5, H=2)
CASES = ["none", "causal", "causal+padding", "cross+padding"]


def _reference_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """softmax over allowed keys; rows with none allowed → 0 (independent of attnbench)."""
    masked = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(masked, dim=-1)
    return torch.where(allowed.any(dim=-1, keepdim=True), probs, torch.zeros_like(probs))


def _setup(case: str) -> tuple[AttentionMask, torch.Tensor, int, int]:
    _, source, mask, allowed = C.case_setup(case)
    s = C.T if source is None else C.S
    return mask, allowed, C.T, s


@pytest.mark.parametrize("case", CASES)
def test_bias_is_zero_where_allowed_and_minus_inf_elsewhere(case: str) -> None:
    mask, allowed, t, s = _setup(case)
    bias = mask.bias(t, s, torch.device("cpu"), torch.float32)
    if case == "none":
        assert bias is None and mask.allowed(t, s, torch.device("cpu")) is None
        return
    assert bias is not None and bias.dtype == torch.float32
    full = allowed.expand(C.B, 1, t, s)
    assert torch.all(bias.expand_as(full)[full] == 0)
    assert torch.all(bias.expand_as(full)[~full] == float("-inf"))


def test_masks_are_built_once_per_mask_and_rebuilt_when_it_changes() -> None:
    pad = padding([7, 4, 3], 7)
    mask = AttentionMask(causal=True, key_padding=pad)
    cpu = torch.device("cpu")
    first = mask.allowed(7, 7, cpu)
    assert mask.allowed(7, 7, cpu) is first  # the layers share one build
    assert mask.bias(7, 7, cpu, torch.float64) is mask.bias(7, 7, cpu, torch.float64)
    assert mask.bias(7, 7, cpu, torch.float32).dtype == torch.float32  # one per dtype
    # a new padding tensor, a padding tensor changed in place, a changed field: rebuilt
    mask.key_padding = padding([7, 1, 3], 7)
    second = mask.allowed(7, 7, cpu)
    assert second is not first and int(second[1].sum()) == 7  # every query: key 0
    mask.key_padding[1, 1] = True
    assert int(mask.allowed(7, 7, cpu)[1].sum()) == 13  # keys 0, 1 for queries ≥ 1
    mask.causal = False
    assert int(mask.allowed(7, 7, cpu)[1].sum()) == 2 and mask.allowed(7, 7, cpu).shape[2] == 1


def test_has_empty_rows() -> None:
    cpu = torch.device("cpu")
    assert not AttentionMask().has_empty_rows(4, 4, cpu)
    assert not AttentionMask(causal=True, memory_len=3).has_empty_rows(4, 7, cpu)
    assert not AttentionMask(key_padding=padding([4, 1], 4)).has_empty_rows(4, 4, cpu)
    assert AttentionMask(key_padding=padding([4, 0], 4)).has_empty_rows(4, 4, cpu)
    # left padding under a causal mask: the first query sees only a padded key
    left = torch.tensor([[False, True, True, True]])
    assert AttentionMask(causal=True, key_padding=left).has_empty_rows(4, 4, cpu)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", [*CASES, "empty rows"])
def test_scaled_masked_softmax_equals_the_two_fill_softmax(case: str, dtype: torch.dtype) -> None:
    if case == "empty rows":  # the third sequence is all padding (C.self_lengths has a 0)
        mask = AttentionMask(key_padding=padding([7, 2, 0], 7))
        allowed, t, s = mask.key_padding[:, None, None, :], 7, 7
    else:
        mask, allowed, t, s = _setup(case)
    gen = torch.Generator().manual_seed(0)
    scores = (3 * torch.randn(C.B, C.H, t, s, generator=gen, dtype=dtype)).requires_grad_()
    scale = 0.37
    got = scaled_masked_softmax(scores, mask, scale)
    want = _reference_softmax(scores * scale, allowed)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got, masked_softmax(scores * scale, mask.allowed(t, s, "cpu")))
    grad_out = torch.randn(got.shape, generator=gen, dtype=dtype)
    (g_got,) = torch.autograd.grad(got, scores, grad_out)
    (g_want,) = torch.autograd.grad(want, scores, grad_out)
    assert torch.isfinite(g_got).all()
    torch.testing.assert_close(g_got, g_want)
