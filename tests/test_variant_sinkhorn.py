"""Sparse Sinkhorn attention: the balancing, and the attention against explicit references.

The references use the module's projections but build the attention by hand: a dense
same-block mask for block-local attention, and a Python loop over blocks that forms
each sorted block as Σ_j S_ij K_j for the sorted part. Exact checks run in float64.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from attn_cases import LargestTensor
from torch import Tensor

from attnbench.attention import AttentionContext, AttentionDims, AttentionMask, get_variant
from attnbench.variants.sinkhorn import Sinkhorn, sinkhorn

B, D, H = 3, 16, 4
DH = D // H
ATOL = 1e-10


def build(seed: int = 0, dtype: torch.dtype = torch.float64, max_len: int = 64, **options):
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=max_len)
    attn = get_variant("sinkhorn").build(dims, options)
    assert isinstance(attn, Sinkhorn)
    return attn.to(dtype).eval()


def inputs(length: int, seed: int = 1, batch: int = B) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, D, generator=gen, dtype=torch.float64)


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def call(attn: Sinkhorn, x: Tensor, pad: Tensor | None = None, **fields):
    ctx = AttentionContext(mask=AttentionMask(key_padding=pad), **fields)
    return attn(x, None, ctx)


def heads(t: Tensor) -> Tensor:
    b, n, _ = t.shape
    return t.view(b, n, H, DH).transpose(1, 2)  # (B, H, n, dh)


def merge(attn: Sinkhorn, out: Tensor) -> Tensor:
    b, _, n, _ = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, D))


def balance_error(s: Tensor) -> Tensor:
    """max |row sum − 1|, |column sum − 1| per batch element."""
    rows = (s.sum(-1) - 1).abs().amax(dim=(-2, -1))
    cols = (s.sum(-2) - 1).abs().amax(dim=(-2, -1))
    return torch.maximum(rows, cols)


# ---------------------------------------------------------------------------------------
# Sinkhorn balancing
# ---------------------------------------------------------------------------------------
def test_sinkhorn_converges_to_doubly_stochastic() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 2, 6, 6, generator=gen, dtype=torch.float64) / 0.75
    errors = [balance_error(sinkhorn(logits, k)).max().item() for k in (0, 1, 2, 4, 8, 16, 32)]
    assert errors[0] > 1.0  # exp(R/τ) itself is far from balanced
    assert all(b < a for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-6
    s = sinkhorn(logits, 32)
    assert (s > 0).all()
    # the columns are normalised last: exactly stochastic
    torch.testing.assert_close(s.sum(-2), torch.ones(4, 2, 6, dtype=torch.float64))


def test_sorting_matrix_is_doubly_stochastic_and_ignores_empty_blocks() -> None:
    t, block = 20, 4  # 5 blocks; the second sequence fills 2, the third 1
    lengths = [20, 7, 3]
    pad = padding(lengths, t)
    x = inputs(t)
    errors = []
    for n_iters in (1, 3, 10, 30):
        attn = build(block=block, n_iters=n_iters)
        s = attn.sorting_matrix(x, pad)  # (B, H, 5, 5)
        assert s.shape == (B, H, 5, 5)
        errors.append(balance_error(s).max().item())
        for i, length in enumerate(lengths):
            real = -(-length // block)
            assert torch.all(s[i, :, :real, real:] == 0) and torch.all(s[i, :, real:, :real] == 0)
            empty = s[i, :, real:, real:]
            torch.testing.assert_close(empty, torch.eye(5 - real).expand_as(empty).double())
    assert all(b < a for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-6
    # before balancing, S is exp(R/τ) with R from the sorting network on masked sum-pools
    attn = build(block=block, n_iters=0, temperature=0.5)
    s = attn.sorting_matrix(x, pad)
    for i, length in enumerate(lengths):
        real = -(-length // block)
        pooled = torch.stack(
            [x[i, j * block : min((j + 1) * block, length)].sum(0) for j in range(real)]
        )
        r = attn.sort_net(pooled).view(real, H, -1)[:, :, :real].transpose(0, 1)  # (H, N, N)
        torch.testing.assert_close(s[i, :, :real, :real], torch.exp(r / 0.5), atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------
# The attention against references
# ---------------------------------------------------------------------------------------
def block_local_reference(attn: Sinkhorn, x: Tensor, pad: Tensor, block: int) -> Tensor:
    """Softmax attention within fixed blocks, dense mask, no sorting."""
    t = x.shape[1]
    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
    ids = torch.arange(t) // block
    allowed = (ids[:, None] == ids[None, :])[None, None] & pad[:, None, None, :]
    scores = (q @ k.transpose(-2, -1) / DH**0.5).masked_fill(~allowed, float("-inf"))
    return merge(attn, scores.softmax(dim=-1) @ v)


def test_identity_sort_is_block_local_attention() -> None:
    t, block, lengths = 14, 4, [14, 9, 2]
    attn = build(block=block)
    x, pad = inputs(t), padding(lengths, t)

    def identity(x_pad: Tensor, valid: Tensor) -> Tensor:
        nb = x_pad.shape[1] // block
        return torch.eye(nb, dtype=x_pad.dtype).expand(x_pad.shape[0], H, nb, nb)

    attn.sorting_matrix = identity  # type: ignore[method-assign]
    out = call(attn, x, pad).out
    ref = block_local_reference(attn, x, pad, block)
    for i, length in enumerate(lengths):
        torch.testing.assert_close(out[i, :length], ref[i, :length], atol=ATOL, rtol=0)


def sorted_reference(attn: Sinkhorn, x: Tensor, pad: Tensor, block: int) -> Tensor:
    """Own block + Σ_j S_ij (block j), one softmax, built block by block."""
    bsz, t, _ = x.shape
    nb = -(-t // block)
    n = nb * block
    xp = torch.cat([x, x.new_zeros(bsz, n - t, D)], dim=1)
    valid = torch.cat([pad, pad.new_zeros(bsz, n - t)], dim=1)
    s = attn.sorting_matrix(xp, valid)  # (B, H, N, N), the module's sort
    q, k, v = heads(attn.q_proj(xp)), heads(attn.k_proj(xp)), heads(attn.v_proj(xp))
    k, v = k * valid[:, None, :, None], v * valid[:, None, :, None]
    out = torch.zeros(bsz, H, n, DH, dtype=x.dtype)
    for i in range(nb):
        rows = slice(i * block, (i + 1) * block)
        k_sorted = sum(
            s[:, :, i, j, None, None] * k[:, :, j * block : (j + 1) * block] for j in range(nb)
        )
        v_sorted = sum(
            s[:, :, i, j, None, None] * v[:, :, j * block : (j + 1) * block] for j in range(nb)
        )
        slot_real = sum(
            (s[:, :, i, j, None] > 0) & valid[:, None, j * block : (j + 1) * block]
            for j in range(nb)
        )
        keys = torch.cat([k[:, :, rows], k_sorted], dim=2)  # (B, H, 2b, dh)
        values = torch.cat([v[:, :, rows], v_sorted], dim=2)
        allowed = torch.cat([valid[:, None, rows].expand(-1, H, -1), slot_real > 0], dim=-1)
        scores = q[:, :, rows] @ keys.transpose(-2, -1) / DH**0.5
        probs = scores.masked_fill(~allowed[:, :, None], float("-inf")).softmax(dim=-1)
        out[:, :, rows] = probs @ values
    return merge(attn, out[:, :, :t])


def test_sorted_attention_matches_blockwise_reference() -> None:
    t, block, lengths = 15, 4, [15, 10, 5]
    attn = build(block=block, n_iters=5)
    x, pad = inputs(t, seed=4), padding(lengths, t)
    out = call(attn, x, pad, need_weights=True)
    ref = sorted_reference(attn, x, pad, block)
    for i, length in enumerate(lengths):
        torch.testing.assert_close(out.out[i, :length], ref[i, :length], atol=ATOL, rtol=0)
    # the sort is not trivial: blocks really mix
    s = attn.sorting_matrix(torch.cat([x, x.new_zeros(B, 1, D)], 1), padding(lengths, 16))
    assert (s[0] - torch.eye(4, dtype=s.dtype)).abs().max() > 0.05
    # the analysis weights reproduce the output: out = W V on the real tokens
    weights = out.weights
    assert weights is not None and weights.shape == (B, H, t, t)
    v = heads(attn.v_proj(x)) * pad[:, None, :, None]
    for i, length in enumerate(lengths):
        mixed = merge(attn, weights @ v)
        torch.testing.assert_close(mixed[i, :length], out.out[i, :length], atol=ATOL, rtol=0)
        assert (weights[i, :, :, length:] == 0).all()  # nothing on padded tokens
    assert (weights >= 0).all()


# ---------------------------------------------------------------------------------------
# Padding, noise, gradients
# ---------------------------------------------------------------------------------------
def test_padded_keys_do_not_leak() -> None:
    t, block, lengths = 13, 4, [13, 9, 3]
    attn = build(block=block)
    x, pad = inputs(t), padding(lengths, t)
    noisy = torch.where(pad[..., None], x, 50.0 * inputs(t, seed=7))
    with torch.no_grad():
        base = call(attn, x, pad).out
        changed = call(attn, noisy, pad).out
        for i, length in enumerate(lengths):
            torch.testing.assert_close(changed[i, :length], base[i, :length], atol=ATOL, rtol=0)
            alone = call(attn, x[i : i + 1, :length]).out
            torch.testing.assert_close(alone[0], base[i, :length], atol=ATOL, rtol=0)


def test_gumbel_noise_only_in_training() -> None:
    attn = build(block=4)
    x = inputs(16)
    with torch.no_grad():
        e1, e2 = call(attn, x).out, call(attn, x).out
        attn.train()
        torch.manual_seed(3)
        t1 = call(attn, x).out
        t2 = call(attn, x).out
        torch.manual_seed(3)
        t3 = call(attn, x).out
    torch.testing.assert_close(e1, e2, atol=0, rtol=0)
    assert (t1 - t2).abs().max() > 1e-6
    torch.testing.assert_close(t1, t3, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sort_net_learns_and_gradients_are_finite(dtype: torch.dtype) -> None:
    attn = build(block=4, dtype=torch.float32).train()
    x = torch.randn(2, 24, D, requires_grad=True)
    pad = padding([24, 3], 24)  # the second sequence: five blocks of padding only
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = call(attn, x, pad).out
    assert torch.isfinite(out.float()).all()
    (out.float().pow(2) * pad[..., None]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in attn.sort_net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads if g is not None)
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters() if p.grad is not None)


# ---------------------------------------------------------------------------------------
# Efficiency and options
# ---------------------------------------------------------------------------------------
def largest_tensor(attn: Sinkhorn, t: int) -> int:
    with LargestTensor() as mode:
        call(attn, torch.randn(1, t, D)).out.sum().backward()
    return mode.largest


def test_memory_is_linear_in_length() -> None:
    block = 16
    attn = build(block=block, dtype=torch.float32, max_len=1024).train()
    small, large = largest_tensor(attn, 512), largest_tensor(attn, 1024)
    assert large <= 2 * small
    assert large <= H * 1024 * 2 * block  # scores: n · 2b per head
    assert large < H * 1024 * 1024 // 8  # far from one dense score matrix


def test_options_are_checked() -> None:
    spec = get_variant("sinkhorn")
    assert get_variant("sinkhorn-32").options().block == 32
    for bad in ({"block": 0}, {"n_iters": -1}, {"temperature": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            spec.options(bad)
    attn = build(block=4, max_len=8)
    with pytest.raises(ValueError, match="cross"):
        attn(inputs(4), inputs(4), AttentionContext())
    with pytest.raises(ValueError, match="max_len"):
        call(attn, inputs(12))
