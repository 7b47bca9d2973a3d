"""Nyströmformer (Xiong et al. 2021): landmarks, pseudo-inverse, exact limit, padding.

Independent references: PyTorch's ``scaled_dot_product_attention`` with an explicit
mask (with as many landmarks as tokens the Nyström form is exact, since A A⁺ A = A),
``torch.linalg.pinv`` for the iterative pseudo-inverse, and segment means computed
with ``reshape(...).mean`` as in the paper. Float64 throughout.
"""

from __future__ import annotations

import itertools

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
from attnbench.variants.nystromformer import Nystromformer, iterative_pinv, segment_means

B, N, D, H = 3, 12, 16, 4
DH = D // H
ATOL = 1e-9


def build(seed: int = 0, **options: object) -> Nystromformer:
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=64)
    attn = get_variant("nystromformer").build(dims, dict(options))
    assert isinstance(attn, Nystromformer)
    return attn.double().eval()


def qkv(n: int = N, dh: int = DH, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, n, dh, generator=gen, dtype=torch.float64) for _ in range(3))
    return q, k, v


def well_conditioned_kernel(*batch: int, m: int, seed: int) -> Tensor:
    """softmax(X Xᵀ/√d) with d = 16: self-similarity dominates, condition number ≈ 3."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, m, 16, generator=gen, dtype=torch.float64)
    return torch.softmax(x @ x.transpose(-2, -1) / 4, dim=-1)


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def attend(attn: Nystromformer, q: Tensor, k: Tensor, v: Tensor, pad: Tensor | None) -> Tensor:
    with torch.no_grad():
        out, _ = attn.attend(q, k, v, AttentionContext(mask=AttentionMask(key_padding=pad)))
    return out


def sdpa(q: Tensor, k: Tensor, v: Tensor, pad: Tensor | None) -> Tensor:
    mask = None if pad is None else pad[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# ---------------------------------------------------------------------------------------
# Pseudo-inverse
# ---------------------------------------------------------------------------------------
def test_iterative_pinv_converges_to_linalg_pinv() -> None:
    a = well_conditioned_kernel(2, 3, m=8, seed=0)
    assert torch.linalg.cond(a).max() < 10
    want = torch.linalg.pinv(a)
    errors = [(iterative_pinv(a, it) - want).abs().max().item() for it in (1, 2, 3, 6)]
    assert errors[0] > 1e-2  # not trivially right from the start
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))
    assert errors[-1] < 1e-10  # the paper's 6 iterations suffice


def test_iterative_pinv_keeps_a_zero_block_zero() -> None:
    """Empty landmarks give zero rows/columns; their pseudo-inverse block must stay zero."""
    a = torch.zeros(7, 7, dtype=torch.float64)
    a[:5, :5] = well_conditioned_kernel(m=5, seed=1)
    z = iterative_pinv(a, 8)
    torch.testing.assert_close(z, torch.linalg.pinv(a), atol=1e-10, rtol=0)
    assert torch.equal(z[5:], torch.zeros(2, 7, dtype=torch.float64))
    assert torch.equal(iterative_pinv(torch.zeros(3, 3), 6), torch.zeros(3, 3))  # no NaN


# ---------------------------------------------------------------------------------------
# Landmarks
# ---------------------------------------------------------------------------------------
def test_landmarks_are_segment_means() -> None:
    x = torch.randn(B, N, DH, dtype=torch.float64)
    means, valid = segment_means(torch.ones(B, N, dtype=torch.bool), 4)
    assert valid.all()
    torch.testing.assert_close(means.double() @ x, x.reshape(B, 4, N // 4, DH).mean(dim=2))


def test_landmarks_skip_padding_and_split_uneven_lengths() -> None:
    x = torch.randn(2, N, DH, dtype=torch.float64)
    real = padding([N, 7], N)
    means, valid = segment_means(real, 3)
    got = means.double() @ x
    torch.testing.assert_close(got[0], x[0].reshape(3, 4, DH).mean(dim=1))
    # 7 real tokens into 3 segments: ranks ⌊r·3/7⌋ = 0,0,0,1,1,2,2
    want = torch.stack([x[1, 0:3].mean(0), x[1, 3:5].mean(0), x[1, 5:7].mean(0)])
    torch.testing.assert_close(got[1], want)
    assert valid.all()
    # fewer real tokens than landmarks: one token each, the rest empty
    means, valid = segment_means(padding([2], N), 4)
    assert valid.tolist() == [[True, False, True, False]]
    torch.testing.assert_close(means[0, [0, 2]].double() @ x[0], x[0, :2])


# ---------------------------------------------------------------------------------------
# Exact limit and padding
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("exact_pinv", [True, False])
def test_as_many_landmarks_as_tokens_is_exact_softmax_attention(exact_pinv: bool) -> None:
    attn = build(landmarks=N, exact_pinv=exact_pinv, pinv_iterations=12)
    q, _, v = qkv(dh=16)
    k = q + 0.3 * torch.randn_like(q)  # keys near the queries: a well-conditioned kernel
    torch.testing.assert_close(attend(attn, q, k, v, None), sdpa(q, k, v, None), atol=ATOL, rtol=0)


def test_exact_limit_for_any_kernel_with_exact_pinv() -> None:
    attn = build(landmarks=N, exact_pinv=True)
    q, k, v = qkv()  # head_dim 4: a poorly conditioned kernel (A A⁺ A = A still holds)
    torch.testing.assert_close(attend(attn, q, k, v, None), sdpa(q, k, v, None), atol=ATOL, rtol=0)


def test_exact_limit_with_padding_and_uneven_lengths() -> None:
    attn = build(landmarks=N, exact_pinv=True)
    q, k, v = qkv()
    pad = padding([N, 7, 1], N)
    got = attend(attn, q, k, v, pad)
    want = sdpa(q, k, v, pad)
    torch.testing.assert_close(got[0], want[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[1, :, :7], want[1, :, :7], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[2, :, :1], want[2, :, :1], atol=ATOL, rtol=0)


def test_fewer_landmarks_approximate_but_differ() -> None:
    attn = build(landmarks=4)
    q, k, v = qkv()
    got, want = attend(attn, q, k, v, None), sdpa(q, k, v, None)
    assert torch.isfinite(got).all()
    assert (got - want).abs().max() > 1e-6  # a real approximation, not the dense path


@pytest.mark.parametrize("conv_kernel", [0, 5])
def test_padded_keys_do_not_leak(conv_kernel: int) -> None:
    attn = build(landmarks=5, conv_kernel=conv_kernel)
    lengths = [N, 7, 3]
    pad = padding(lengths, N)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(B, N, D, generator=gen, dtype=torch.float64)
    changed = torch.where(pad[..., None], x, 10 * torch.randn(B, N, D, generator=gen).double())
    ctx = AttentionContext(mask=AttentionMask(key_padding=pad))
    with torch.no_grad():
        base, got = attn(x, None, ctx).out, attn(changed, None, ctx).out
        unmasked = attn(changed, None, AttentionContext()).out
    for i, length in enumerate(lengths):
        torch.testing.assert_close(got[i, :length], base[i, :length], atol=ATOL, rtol=0)
    assert (unmasked[1, :7] - base[1, :7]).abs().max() > 1e-3  # guard: the mask matters


def test_padded_batch_equals_sequences_alone() -> None:
    attn = build(landmarks=5, conv_kernel=3)
    lengths = [N, 7, 3]
    x = torch.randn(B, N, D, dtype=torch.float64)
    with torch.no_grad():
        batched = attn(
            x, None, AttentionContext(mask=AttentionMask(key_padding=padding(lengths, N)))
        )
        for i, length in enumerate(lengths):
            alone = attn(x[i : i + 1, :length], None, AttentionContext()).out
            torch.testing.assert_close(batched.out[i : i + 1, :length], alone, atol=ATOL, rtol=0)


def test_conv_skip_is_depthwise_along_length() -> None:
    plain, conv = build(landmarks=4), build(landmarks=4, conv_kernel=3)
    assert conv.conv is not None and plain.conv is None
    assert conv.conv.weight.shape == (H, 1, 3, 1)  # one length-kernel per head
    q, k, v = qkv()
    with torch.no_grad():
        conv.conv.weight.zero_()
        conv.conv.weight[:, 0, 1, 0] = 1.0  # identity kernel: adds V itself
    torch.testing.assert_close(attend(conv, q, k, v, None), attend(plain, q, k, v, None) + v)


def test_weights_reproduce_output() -> None:
    attn = build(landmarks=4)
    q, k, v = qkv()
    pad = padding([N, 7, 3], N)
    ctx = AttentionContext(mask=AttentionMask(key_padding=pad), need_weights=True)
    with torch.no_grad():
        out, weights = attn.attend(q, k, v, ctx)
    assert weights is not None and weights.shape == (B, H, N, N)
    torch.testing.assert_close(weights @ v, out, atol=ATOL, rtol=0)
    assert torch.all(weights[1, :, :7, 7:] == 0)  # no weight on padded keys


def test_rejects_causal_and_bad_options() -> None:
    attn = build()
    q, k, v = qkv()
    with pytest.raises(ValueError, match="causal"):
        attn.attend(q, k, v, AttentionContext(mask=AttentionMask(causal=True)))
    with pytest.raises(ValueError, match="conv_kernel"):
        get_variant("nystromformer").options({"conv_kernel": 4})
    caps = get_variant("nystromformer").capabilities
    assert not caps.causal and not caps.cross_attention and caps.padding_mask
    assert get_variant("nystrom-32").options().landmarks == 32
    assert get_variant("nystrom-16-conv").options().conv_kernel == 35
