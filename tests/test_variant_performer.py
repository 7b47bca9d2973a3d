"""Performer (FAVOR+): the defining properties, against references written out here.

- the approximation of exact softmax attention (float64, computed here) improves as
  the number of random features grows;
- the outputs are exactly the normalised random-feature kernel φ(Q)φ(K)ᵀ computed
  quadratically here, non-causal (with padding, cross lengths) and causal (with
  padding and a memory offset), whatever the chunk size;
- causal: no leakage from the future, also not through the numerical stabiliser
  (a future key that would underflow the past under a global maximum);
- the random features: orthogonal d-row blocks, χ(d) norms, drawn again only when due,
  saved with the model;
- no (T × S) tensor is kept for the backward pass.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    get_variant,
)
from attnbench.variants.performer import Performer, gaussian_orthogonal_features

B, H, DH = 2, 2, 16


def build(seed: int = 0, **overrides) -> Performer:
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=H * DH, n_heads=H, head_dim=DH, max_len=128, dropout=0.0)
    attn = get_variant("performer").build(dims, overrides or None).eval()
    assert isinstance(attn, Performer)
    return attn


def qkv(t: int, s: int | None = None, seed: int = 1, scale: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    s = t if s is None else s
    q = torch.randn(B, H, t, DH, generator=gen) * scale
    k = torch.randn(B, H, s, DH, generator=gen) * scale
    v = torch.randn(B, H, s, DH, generator=gen)
    return q, k, v


def attend(attn: Performer, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask) -> Tensor:
    with torch.no_grad():
        out, _ = attn.attend(q, k, v, AttentionContext(mask=mask))
    return out


def softmax_reference(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v.double()


def kernel_reference(w: Tensor, q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None) -> Tensor:
    """D⁻¹ (φ(Q)φ(K)ᵀ ⊙ mask) V in float64 with no stabiliser, φ(x) = exp(Wx̂ − ‖x̂‖²/2)."""
    w = w.double()

    def phi(x: Tensor) -> Tensor:
        x = x.double() / x.shape[-1] ** 0.25
        return torch.exp(x @ w.T - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(w.shape[0])

    kernel = phi(q) @ phi(k).transpose(-2, -1)  # (B, H, T, S)
    if allowed is not None:
        kernel = kernel * allowed
    den = kernel.sum(-1, keepdim=True)
    return torch.where(den > 0, kernel / den.clamp_min(1e-300), 0.0) @ v.double()


def dense_allowed(t: int, s: int, causal: bool, pad: Tensor | None, memory_len: int = 0):
    """Which keys each query may see, built here independently: (B, 1, T, S) bool."""
    allowed = torch.ones(B, 1, t, s, dtype=torch.bool)
    if causal:
        for i in range(t):
            allowed[:, :, i, memory_len + i + 1 :] = False
    if pad is not None:
        allowed &= pad[:, None, None, :]
    return allowed


# ---------------------------------------------------------------------------------------
# The approximation of softmax attention
# ---------------------------------------------------------------------------------------
def test_error_against_exact_softmax_falls_as_features_grow() -> None:
    sizes = [16, 64, 256, 1024]
    errors = []
    for m in sizes:
        per_seed = []
        for seed in range(8):
            attn = build(seed=seed, n_features=m)
            q, k, v = qkv(24, seed=100 + seed, scale=0.5)
            got = attend(attn, q, k, v, AttentionMask())
            per_seed.append((got.double() - softmax_reference(q, k, v)).abs().mean().item())
        errors.append(sum(per_seed) / len(per_seed))
    # the estimator's error shrinks like 1/√m (half per 4× features); ask for 20% less per
    # step and 3× less over the 64× range
    for small, large in itertools.pairwise(errors):
        assert large < 0.8 * small, errors
    assert errors[-1] < errors[0] / 3, errors
    # and it approximates softmax, not just the mean of the values (uniform attention)
    baselines = []
    for seed in range(8):
        q, k, v = qkv(24, seed=100 + seed, scale=0.5)
        uniform = v.double().mean(dim=-2, keepdim=True)
        baselines.append((softmax_reference(q, k, v) - uniform).abs().mean().item())
    assert errors[-1] < 0.5 * sum(baselines) / len(baselines), (errors, baselines)


def test_output_is_a_weighted_mean_of_values() -> None:
    """Positive features: the implied weights are ≥ 0 and sum to 1 (no cancellation)."""
    attn = build(n_features=32)
    q, k, v = qkv(10, scale=2.0)
    ctx = AttentionContext(mask=AttentionMask(), need_weights=True)
    with torch.no_grad():
        out, weights = attn.attend(q, k, v, ctx)
    assert weights is not None and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, 10))
    torch.testing.assert_close(out, weights @ v, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Exactly the random-feature kernel, quadratic reference
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("s", [13, 7])
def test_non_causal_equals_the_kernel_computed_quadratically(s: int) -> None:
    attn = build(n_features=40)  # 40 = two full 16-row blocks and a partial one
    q, k, v = qkv(13, s, scale=1.5)
    pad = torch.ones(B, s, dtype=torch.bool)
    pad[1, s - 3 :] = False
    mask = AttentionMask(key_padding=pad)
    want = kernel_reference(attn.features, q, k, v, dense_allowed(13, s, False, pad))
    got = attend(attn, q, k, v, mask)
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-5)
    # padded keys change nothing
    k2, v2 = k.clone(), v.clone()
    k2[1, :, s - 3 :] = 50.0
    v2[1, :, s - 3 :] = -7.0
    torch.testing.assert_close(attend(attn, q, k2, v2, mask), got, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("chunk_size", "memory_len"), [(4, 0), (5, 3), (64, 0), (1, 2)])
def test_causal_equals_the_kernel_computed_quadratically(chunk_size: int, memory_len: int) -> None:
    attn = build(n_features=40, chunk_size=chunk_size)
    t, s = 13, 13 + memory_len
    q, k, v = qkv(t, s, scale=1.5)
    pad = torch.ones(B, s, dtype=torch.bool)
    pad[1, :2] = False  # leading padding: the first queries of row 1 see nothing
    pad[0, s - 2 :] = False
    mask = AttentionMask(causal=True, key_padding=pad, memory_len=memory_len)
    allowed = dense_allowed(t, s, True, pad, memory_len)
    assert torch.equal(allowed, mask.allowed(t, s, q.device).expand(B, 1, t, s))
    want = kernel_reference(attn.features, q, k, v, allowed)
    got = attend(attn, q, k, v, mask)
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-5)
    if memory_len == 0:  # row 1, query 0 sees only a padded key: zeros, not NaN
        assert torch.equal(got[1, :, 0], torch.zeros(H, DH))


def test_causal_has_no_leakage() -> None:
    attn = build(n_features=64, chunk_size=4)
    q, k, v = qkv(12)
    mask = AttentionMask(causal=True)
    base = attend(attn, q, k, v, mask)
    for t in (1, 5, 11):
        k2, v2 = k.clone(), v.clone()
        k2[:, :, t] = k[:, :, t] * 3.0
        v2[:, :, t] = v[:, :, t] + 3.0
        got = attend(attn, q, k2, v2, mask)
        torch.testing.assert_close(got[:, :, :t], base[:, :, :t], atol=1e-6, rtol=0)
        assert (got[:, :, t:] - base[:, :, t:]).abs().max() > 1e-3  # the change is seen


def test_causal_stabiliser_does_not_look_ahead() -> None:
    """Long past keys have feature exponents near −100; a short future key has ≈ +5.

    A stabiliser shared by all keys (the global maximum) would shift the past by the
    future key's exponent and underflow every past feature to 0, so the past outputs
    would change (to 0). The running maximum sees only the keys a query sees.
    """
    attn = build(n_features=64, chunk_size=4)
    q, k, v = qkv(12)
    k = k * 12.0  # ‖k̂‖ ≈ 24: exponents W k̂ − ‖k̂‖²/2 far below −87
    mask = AttentionMask(causal=True)
    base = attend(attn, q, k, v, mask)
    assert torch.isfinite(base).all() and base.abs().max() > 0.1
    want = kernel_reference(attn.features, q, k, v, dense_allowed(12, 12, True, None))
    torch.testing.assert_close(base.double(), want, atol=2e-5, rtol=1e-4)
    for t in (1, 6):
        k2 = k.clone()
        k2[:, :, t] = k[:, :, t] / 12.0
        got = attend(attn, q, k2, v, mask)
        torch.testing.assert_close(got[:, :, :t], base[:, :, :t], atol=1e-6, rtol=0)
        assert (got[:, :, t:] - base[:, :, t:]).abs().max() > 1e-3


def test_causal_matches_non_causal_on_the_last_query() -> None:
    """The last query sees every key: the causal and full forms agree there."""
    attn = build(n_features=32, chunk_size=3)
    q, k, v = qkv(10)
    causal = attend(attn, q, k, v, AttentionMask(causal=True))
    full = attend(attn, q, k, v, AttentionMask())
    torch.testing.assert_close(causal[:, :, -1], full[:, :, -1], atol=1e-5, rtol=1e-5)
    assert (causal[:, :, 0] - full[:, :, 0]).abs().max() > 1e-3


def test_large_inputs_stay_finite() -> None:
    attn = build(n_features=64)
    q, k, v = qkv(16, scale=20.0)  # exponents in the hundreds: exp would overflow unshifted
    for causal in (False, True):
        out = attend(attn, q, k, v, AttentionMask(causal=causal))
        assert torch.isfinite(out).all()
        assert out.abs().max() <= v.abs().max() + 1e-4  # still a convex combination


# ---------------------------------------------------------------------------------------
# The random features
# ---------------------------------------------------------------------------------------
def test_blocks_are_orthogonal_with_chi_norms() -> None:
    torch.manual_seed(0)
    d, m = 16, 40
    w = gaussian_orthogonal_features(m, d).double()
    assert w.shape == (m, d)
    norms = w.norm(dim=-1)
    for start in range(0, m, d):
        block = w[start : start + d]
        gram = block @ block.T
        off_diagonal = gram - torch.diag(torch.diagonal(gram))
        assert off_diagonal.abs().max() < 1e-5 * gram.abs().max()
        # after removing the χ rescaling the rows are orthonormal
        unit = block / norms[start : start + d, None]
        eye = torch.eye(len(block), dtype=torch.float64)
        torch.testing.assert_close(unit @ unit.T, eye, atol=1e-6, rtol=0)
    # rows of different blocks are not orthogonal: the blocks are independent
    assert (w[:d] @ w[d : 2 * d].T).abs().max() > 1e-2
    # norms are random (not a constant √d), with E‖w‖² = d as for a Gaussian row
    assert norms.std() > 0.1
    many = gaussian_orthogonal_features(4096, d).double()
    assert many.pow(2).sum(-1).mean().item() == pytest.approx(d, abs=0.6)
    # and the directions are unbiased: averaged over blocks, row r of a block has mean ≈ 0
    # in every coordinate (QR's sign convention would skew it by ≈ 0.2 without the fix)
    units = (many / many.norm(dim=-1, keepdim=True)).view(-1, d, d)  # (blocks, row, coord)
    assert units.mean(0).abs().max() < 0.1


def test_features_redrawn_only_when_due() -> None:
    attn = build(n_features=16, redraw_every=3).train()
    q, k, v = qkv(6)
    seen = [attn.features.clone()]
    for _ in range(7):
        attn.attend(q, k, v, AttentionContext())
        seen.append(attn.features.clone())
    changed = [not torch.equal(a, b) for a, b in itertools.pairwise(seen)]
    # calls 1–3 use the first draw, 4–6 the second, 7 the third
    assert changed == [False, False, False, True, False, False, True]
    # evaluation neither counts nor redraws
    attn.eval()
    before = attn.features.clone()
    for _ in range(5):
        attn.attend(q, k, v, AttentionContext())
    assert torch.equal(attn.features, before) and int(attn.calls) == 7
    # redraw_every = 0: fixed features
    fixed = build(n_features=16, redraw_every=0).train()
    first = fixed.features.clone()
    for _ in range(5):
        fixed.attend(q, k, v, AttentionContext())
    assert torch.equal(fixed.features, first)


def test_features_are_saved_with_the_model() -> None:
    a = build(seed=0, n_features=32)
    b = build(seed=1, n_features=32)
    assert not torch.equal(a.features, b.features)
    assert "features" in a.state_dict()
    q, k, v = qkv(8)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(
        attend(b, q, k, v, AttentionMask()), attend(a, q, k, v, AttentionMask())
    )


def test_same_seed_same_features() -> None:
    assert torch.equal(build(seed=3).features, build(seed=3).features)


# ---------------------------------------------------------------------------------------
# Efficiency: nothing of size T × S is kept
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_no_quadratic_tensor_is_saved_for_backward(causal: bool) -> None:
    attn = build(n_features=16, chunk_size=16).train()
    t = 512
    q, k, v = (x.requires_grad_() for x in qkv(t))
    sizes: list[int] = []

    def pack(x: Tensor) -> Tensor:
        sizes.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out, _ = attn.attend(q, k, v, AttentionContext(mask=AttentionMask(causal=causal)))
    out.sum().backward()
    assert sizes and max(sizes) < B * H * t * t / 8


def test_presets() -> None:
    assert get_variant("performer").options().n_features == 64
    assert get_variant("performer-256").options().n_features == 256
    caps = get_variant("performer").capabilities
    assert caps.causal and caps.cross_attention and caps.padding_mask
    with pytest.raises(ValueError, match="n_features"):
        get_variant("performer").options({"n_features": 0})
