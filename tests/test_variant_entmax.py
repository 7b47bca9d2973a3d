"""α-entmax attention (entmax15, sparsemax, entmax-alpha) against the entmax package.

The references recompute the scores from the module's projections and call the
package directly with the masked keys at −∞ (the module uses a finite fill), so a
mistake in the scaling, masking, head split or α parametrisation shows up. Plus
hand-computed mappings, the α → 1 softmax limit, the learned α, exact zeros on
masked keys and empty rows. float64 unless stated.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from attn_cases import Cases, padding
from entmax import entmax15, entmax_bisect, sparsemax
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionMask,
    get_variant,
)
from attnbench.variants.entmax import Entmax, entmax_masked

C = Cases(scale=3.0)  # scores spread, so the mappings are sparse
B, T, S, D, H, DH = C.B, C.T, C.S, C.D, C.H, C.DH
build, inputs, heads = C.build, C.inputs, C.heads
NAMES = ["entmax15", "sparsemax", "entmax-alpha"]


def case_setup(case: str) -> tuple[Tensor, Tensor | None, AttentionMask, Tensor]:
    """C.case_setup, with the cross-attention mask expanded to (B, 1, T, S)."""
    x, source, mask, allowed = C.case_setup(case)
    if case == "cross+padding":
        allowed = allowed.expand(B, 1, T, S)
    return x, source, mask, allowed


def package_weights(attn: Entmax, name: str, scores: Tensor, allowed: Tensor) -> Tensor:
    """The package on −∞-masked scores, row by row where a row has an allowed key."""
    allowed = allowed.expand_as(scores)
    masked = scores.masked_fill(~allowed, float("-inf"))
    rows = allowed.any(dim=-1)  # (B, H, T)
    want = torch.zeros_like(scores)
    if name == "entmax15":
        want[rows] = entmax15(masked[rows], dim=-1)
    elif name == "sparsemax":
        want[rows] = sparsemax(masked[rows], dim=-1)
    else:
        assert attn.alpha_logit is not None
        gap = attn.options.min_alpha_gap
        alpha = 1 + gap + (1 - gap) / (1 + torch.exp(-attn.alpha_logit.detach()))  # (H,)
        alpha_rows = alpha[None, :, None].expand(rows.shape)[rows][:, None]  # (N, 1)
        want[rows] = entmax_bisect(masked[rows], alpha_rows, dim=-1, n_iter=attn.options.n_iter)
    return want


# ---------------------------------------------------------------------------------------
# The mapping itself
# ---------------------------------------------------------------------------------------
def test_mappings_by_hand() -> None:
    z = torch.tensor([[1.0, 0.5, -1.0, 0.8]], dtype=torch.float64)
    allowed = torch.tensor([[True, True, True, False]])
    # sparsemax([1, .5, -1]): τ = 0.25 on the support {1, .5} → (.75, .25, 0)
    got = entmax_masked(z, allowed, 2.0)
    torch.testing.assert_close(got, torch.tensor([[0.75, 0.25, 0.0, 0.0]], dtype=torch.float64))
    # 1.5-entmax: p = [z/2 − τ]²₊, support {1, .5}: (.5 − τ)² + (.25 − τ)² = 1
    tau = (1.5 - math.sqrt(1.5**2 + 8 * 0.6875)) / 4
    want = torch.tensor([[(0.5 - tau) ** 2, (0.25 - tau) ** 2, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(entmax_masked(z, allowed, 1.5), want, atol=1e-12, rtol=0)
    # the generic bisection agrees with the exact algorithm at α = 1.5
    torch.testing.assert_close(
        entmax_masked(z, allowed, 1.5 + 0 * z[:, :1]), want, atol=1e-5, rtol=0
    )
    # α = 1 is softmax over the allowed keys
    soft = torch.softmax(z[:, :3], dim=-1)
    torch.testing.assert_close(entmax_masked(z, allowed, 1.0)[:, :3], soft)


@pytest.mark.parametrize("name", NAMES)
def test_rows_sum_to_one_with_exact_zeros(name: str) -> None:
    attn = build(name)
    x, source, mask, allowed = case_setup("causal+padding")
    with torch.no_grad():
        w = attn(x, source, AttentionContext(mask=mask, need_weights=True)).weights
    assert w is not None and w.shape == (B, H, T, T)
    full = allowed.expand_as(w)
    rows = full.any(dim=-1)
    torch.testing.assert_close(w.sum(-1)[rows], torch.ones(int(rows.sum()), dtype=w.dtype))
    assert torch.all(w >= 0)
    assert torch.all(w[~rows] == 0)  # empty rows (an all-padding sequence): zeros, no NaN
    zeros_among_allowed = int(((w == 0) & full).sum())
    assert zeros_among_allowed > 0  # sparse: some allowed keys get exactly zero weight
    assert torch.all(w[~full] == 0)  # masked keys: exactly zero


@pytest.mark.parametrize("case", ["none", "causal+padding", "cross+padding"])
@pytest.mark.parametrize("name", NAMES)
def test_matches_entmax_package(name: str, case: str) -> None:
    attn = build(name, alpha_init_std=1.0) if name == "entmax-alpha" else build(name)
    x, source, mask, allowed = case_setup(case)
    kv = x if source is None else source
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(kv)), heads(attn.v_proj(kv))
        scores = q @ k.transpose(-2, -1) / math.sqrt(DH)
        want_w = package_weights(attn, name, scores, allowed)
        out = (want_w @ v).transpose(1, 2).reshape(B, T, D)
        want_out = attn.out_proj(out)
    assert got.weights is not None
    atol = 1e-9 if name != "entmax-alpha" else 1e-7  # bisection: rounding of the midpoints
    torch.testing.assert_close(got.weights, want_w, atol=atol, rtol=0)
    torch.testing.assert_close(got.out, want_out, atol=atol * 10, rtol=0)


def test_learned_alpha_heads_differ_and_each_head_uses_its_own() -> None:
    attn = build("entmax-alpha", alpha_init_std=1.0)
    alpha = attn.alpha()
    assert isinstance(alpha, Tensor) and alpha.shape == (H,)
    assert len(set(alpha.tolist())) == H
    # a permutation of the α's changes the weights (each head gets its own α)
    x, source, mask, _ = case_setup("none")
    with torch.no_grad():
        before = attn(x, source, AttentionContext(mask=mask, need_weights=True)).weights
        attn.alpha_logit.copy_(attn.alpha_logit.flip(0))
        after = attn(x, source, AttentionContext(mask=mask, need_weights=True)).weights
    assert before is not None and after is not None
    assert (before - after).abs().amax(dim=(0, 2, 3)).min() > 1e-6


def test_alpha_close_to_one_is_softmax() -> None:
    """entmax_bisect at α = 1 + 10⁻⁴ (the fixed-α bisection path) ≈ softmax."""
    attn = build("entmax15", alpha=1.0001, n_iter=60)
    x, source, mask, allowed = case_setup("causal+padding")
    with torch.no_grad():
        w = attn(x, source, AttentionContext(mask=mask, need_weights=True)).weights
        q, k = heads(attn.q_proj(x)), heads(attn.k_proj(x))
        scores = (q @ k.transpose(-2, -1) / math.sqrt(DH)).masked_fill(~allowed, float("-inf"))
        soft = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # empty rows → 0
    assert w is not None
    torch.testing.assert_close(w, soft, atol=2e-3, rtol=0)
    # and α = 1.5 is far from softmax on the same scores (the check above is not vacuous)
    sparse = build("entmax15")(x, source, AttentionContext(mask=mask, need_weights=True)).weights
    assert sparse is not None and (sparse.detach() - soft).abs().max() > 0.1


def test_alpha_is_learned_and_stays_in_range() -> None:
    attn = build("entmax-alpha").float().train()
    assert attn.alpha_logit is not None
    torch.testing.assert_close(attn.alpha(), torch.full((H,), 1.5))  # the initial α
    x = inputs().float()
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    attn(x, None, ctx).out.pow(2).mean().backward()
    grad = attn.alpha_logit.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().min() > 0
    # a huge step in either direction: α stays in (1, 2] and the forward stays finite
    for maximize in (False, True):
        opt = torch.optim.SGD([attn.alpha_logit], lr=1e6, maximize=maximize)
        attn.alpha_logit.grad = grad.clone()
        opt.step()
        alpha = attn.alpha()
        assert isinstance(alpha, Tensor)
        assert torch.all(alpha > 1.0) and torch.all(alpha <= 2.0)
        with torch.no_grad():
            assert torch.isfinite(attn(x, None, ctx).out).all()


def test_fixed_alpha_presets_have_no_alpha_parameter() -> None:
    for name, alpha in (("entmax15", 1.5), ("sparsemax", 2.0)):
        attn = build(name)
        assert attn.alpha_logit is None and attn.alpha() == alpha
        assert not any("alpha" in n for n, _ in attn.named_parameters())
    assert get_variant("entmax-alpha").resolved_options()["learn_alpha"] is True
    with pytest.raises(ValueError, match="alpha"):
        get_variant("entmax15").options({"alpha": 2.5})


# ---------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_masked_keys_exactly_zero_and_outputs_ignore_them(name: str) -> None:
    attn = build(name)
    x, source, mask, allowed = case_setup("cross+padding")
    assert source is not None
    changed = torch.where(mask.key_padding[..., None], source, 100 * inputs(S, seed=5))
    with torch.no_grad():
        a = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        b = attn(x, changed, AttentionContext(mask=mask, need_weights=True))
    assert a.weights is not None
    assert torch.all(a.weights[~allowed.expand_as(a.weights)] == 0)
    torch.testing.assert_close(a.out, b.out, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_empty_rows_give_zero_weights_and_finite_gradients(name: str) -> None:
    attn = build(name).float()
    pad = padding([T, 0, 2], T)  # the second sequence has no real key at all
    x = inputs().float().requires_grad_(True)
    out = attn(x, None, AttentionContext(mask=AttentionMask(key_padding=pad), need_weights=True))
    assert out.weights is not None
    assert torch.all(out.weights[1] == 0)
    assert torch.isfinite(out.out).all()
    out.out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in attn.parameters())


def test_bf16_autocast_weights_are_a_distribution() -> None:
    attn = build("entmax-alpha").float()
    x = inputs().float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = attn(x, None, AttentionContext(mask=AttentionMask(causal=True), need_weights=True))
    assert w.weights is not None and torch.isfinite(w.out.float()).all()
    sums = w.weights.float().sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=2e-2, rtol=0)
    assert F.relu(-w.weights.float()).max() == 0
