"""Reformer's LSH attention against dense references built independently here.

The references never chunk or gather: they compute shared-QK scores for every pair,
build the allowed set as a dense (T × T) mask (from the buckets for the multi-round
case) and apply the paper's rule "no attention to oneself unless there is no other
target", then an ordinary softmax. Everything that must match exactly runs in float64.
"""

from __future__ import annotations

import pytest
import torch
from attn_cases import LargestTensor
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    get_variant,
)
from attnbench.model import LanguageModel, ModelConfig
from attnbench.variants.reformer import Reformer

B, D, H = 3, 16, 4
DH = D // H
ATOL = 1e-10


def build(seed: int = 0, dtype: torch.dtype = torch.float64, **options) -> Reformer:
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=64)
    attn = get_variant("reformer").build(dims, options)
    assert isinstance(attn, Reformer)
    return attn.to(dtype).eval()


def inputs(length: int, seed: int = 1, batch: int = B) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, D, generator=gen, dtype=torch.float64)


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def call(attn: Reformer, x: Tensor, **ctx_fields) -> tuple[Tensor, Tensor | None]:
    mask = AttentionMask(
        causal=ctx_fields.pop("causal", False), key_padding=ctx_fields.pop("pad", None)
    )
    out = attn(x, None, AttentionContext(mask=mask, **ctx_fields))
    return out.out, out.weights


def heads(t: Tensor) -> Tensor:
    b, n, _ = t.shape
    return t.view(b, n, H, DH).transpose(1, 2)  # (B, H, n, dh)


def dense_reference(
    attn: Reformer, x: Tensor, allowed: Tensor, head_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Shared-QK softmax attention over a dense ``allowed`` (B, H, T, T) mask."""
    q = heads(attn.qk_proj(x))
    k = q / q.norm(dim=-1, keepdim=True)
    v = heads(attn.v_proj(x))
    scores = q @ k.transpose(-2, -1) / DH**0.5  # (B, H, T, T)
    t = x.shape[1]
    not_self = allowed & ~torch.eye(t, dtype=torch.bool)
    has_other = not_self.any(dim=-1, keepdim=True)
    allowed = torch.where(has_other, not_self, allowed)  # self only when nothing else
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    probs = probs.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)
    out = probs @ v
    if head_mask is not None:
        out = out * head_mask[None, :, None, None]
    out = attn.out_proj(out.transpose(1, 2).reshape(x.shape[0], t, D))
    return out, probs


def reference_buckets(attn: Reformer, x: Tensor, valid: Tensor) -> Tensor:
    """Angular LSH h(x) = argmax([xR; −xR]) with the eval rotations: (B, H, R, T)."""
    q = heads(attn.qk_proj(x))
    rot = attn.eval_rotations  # (H, dh, R, n_buckets/2)
    proj = torch.einsum("bhtd,hdrk->bhrtk", q, rot)
    buckets = torch.cat([proj, -proj], dim=-1).argmax(dim=-1)
    return buckets.masked_fill(~valid[:, None, None, :], attn.n_buckets)


def union_mask(buckets: Tensor, chunk_len: int) -> Tensor:
    """(B, H, T, T) True where key j is in query i's window in at least one round.

    Window of round r: sort by (bucket, position), chunk, own chunk or the one before.
    """
    t = buckets.shape[-1]
    key = buckets * t + torch.arange(t)
    rank = key.argsort(dim=-1).argsort(dim=-1)  # (B, H, R, T)
    chunk = rank // chunk_len
    gap = chunk[..., :, None] - chunk[..., None, :]  # (B, H, R, T, T)
    return ((gap == 0) | (gap == 1)).any(dim=2)


# ---------------------------------------------------------------------------------------
# One bucket, one chunk: exactly full shared-QK attention
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["none", "padding", "causal", "causal+padding"])
def test_one_bucket_one_chunk_is_full_shared_qk_attention(case: str) -> None:
    t = 9
    attn = build(n_buckets=1, chunk_len=16, n_hashes=1)
    x = inputs(t)
    pad = padding([t, 4, 1], t) if "padding" in case else None  # length 1: self is all
    causal = "causal" in case
    head_mask = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    out, weights = call(attn, x, pad=pad, causal=causal, head_mask=head_mask, need_weights=True)

    allowed = torch.ones(B, H, t, t, dtype=torch.bool)
    if pad is not None:
        allowed = allowed & pad[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(t, t, dtype=torch.bool).tril()
    ref, ref_probs = dense_reference(attn, x, allowed, head_mask)
    rows = pad if pad is not None else torch.ones(B, t, dtype=torch.bool)
    torch.testing.assert_close(out[rows], ref[rows], atol=ATOL, rtol=0)
    assert weights is not None
    torch.testing.assert_close(
        weights[rows[:, None].expand(-1, H, -1)],
        ref_probs[rows[:, None].expand(-1, H, -1)],
        atol=ATOL,
        rtol=0,
    )
    # the rule was exercised: no self weight where another target exists
    diag = weights.diagonal(dim1=-2, dim2=-1)  # (B, H, T)
    assert torch.all(diag[0, :, 1:] == 0.0)
    if causal:
        assert torch.all(diag[..., 0] == 1.0)  # the first token has no other target
    else:
        assert torch.all(diag[0, :, 0] == 0.0)
    if pad is not None:
        assert torch.all(diag[2, :, 0] == 1.0)  # the length-1 sequence: only itself


# ---------------------------------------------------------------------------------------
# Several rounds: the logsumexp combination is softmax over the union of the windows
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_hashes", [1, 3])
def test_rounds_combine_to_softmax_over_the_union_of_windows(n_hashes: int) -> None:
    t, chunk = 11, 3  # 4 chunks after padding to 12; a window holds 6 of 11 keys
    attn = build(n_buckets=4, chunk_len=chunk, n_hashes=n_hashes)
    x = inputs(t, seed=3)
    lengths = [t, 8, 5]
    pad = padding(lengths, t)
    out, weights = call(attn, x, pad=pad, need_weights=True)

    allowed = union_mask(reference_buckets(attn, x, pad), chunk) & pad[:, None, None, :]
    ref, ref_probs = dense_reference(attn, x, allowed)
    for i, length in enumerate(lengths):
        torch.testing.assert_close(out[i, :length], ref[i, :length], atol=ATOL, rtol=0)
        assert weights is not None
        torch.testing.assert_close(
            weights[i, :, :length], ref_probs[i, :, :length], atol=ATOL, rtol=0
        )
    # the case is not trivial: windows are a strict subset, and more rounds see more
    real = pad[:, None, :, None] & pad[:, None, None, :]
    assert (allowed & real).sum() < real.expand(-1, H, -1, -1).sum()
    if n_hashes > 1:
        single = union_mask(reference_buckets(attn, x, pad)[:, :, :1], chunk)
        assert (allowed & ~single).any()


def test_weights_reproduce_the_output_at_every_position() -> None:
    """out = W V for the returned dense weights, padded queries included (zero if keyless)."""
    t, lengths = 16, [16, 9, 2]  # the short row leaves chunks of padding only
    attn = build(n_buckets=4, chunk_len=4, n_hashes=2)
    x, pad = inputs(t), padding(lengths, t)
    out, weights = call(attn, x, pad=pad, need_weights=True)
    assert weights is not None
    v = heads(attn.v_proj(x))
    mixed = attn.out_proj((weights @ v).transpose(1, 2).reshape(B, t, D))
    torch.testing.assert_close(out, mixed, atol=ATOL, rtol=0)
    row_mass = weights.sum(-1)  # (B, H, T): 1 for a query with a key, 0 for one without
    assert torch.all(((row_mass - 1).abs() < 1e-12) | (row_mass == 0))
    assert (row_mass == 0).any() and torch.all(row_mass[pad[:, None].expand(-1, H, -1)] > 0.5)


def test_hash_is_angular() -> None:
    """h(c·x) = h(x) for c > 0, and h(−x) = h(x) + n_buckets/2 (mod n_buckets)."""
    attn = build(n_buckets=8, n_hashes=2)
    qk = torch.randn(2, H, 20, DH, dtype=torch.float64)
    buckets = attn.hash(qk)
    assert buckets.shape == (2, H, 2, 20)
    assert buckets.min() >= 0 and buckets.max() < 8
    assert torch.equal(attn.hash(3.0 * qk), buckets)
    assert torch.equal(attn.hash(-qk), (buckets + 4) % 8)
    assert len(buckets.unique()) > 2


def test_rotations_fresh_in_training_fixed_in_eval() -> None:
    attn = build(n_buckets=8, chunk_len=4, n_hashes=2)
    x = inputs(24)
    with torch.no_grad():
        attn.train()
        torch.manual_seed(5)
        a = call(attn, x)[0]
        b = call(attn, x)[0]  # another draw of the rotations
        torch.manual_seed(5)
        c = call(attn, x)[0]  # the same draw again
        attn.eval()
        e1 = call(attn, x)[0]
        torch.manual_seed(123)
        e2 = call(attn, x)[0]
    assert (a - b).abs().max() > 1e-6
    torch.testing.assert_close(a, c, atol=0, rtol=0)
    torch.testing.assert_close(e1, e2, atol=0, rtol=0)
    assert "eval_rotations" in attn.state_dict()  # saved with the weights


# ---------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------
def test_padded_keys_do_not_leak_and_do_not_move_chunks() -> None:
    t, lengths = 13, [13, 9, 5]
    attn = build(n_buckets=4, chunk_len=4, n_hashes=2)
    x = inputs(t)
    pad = padding(lengths, t)
    noisy = torch.where(pad[..., None], x, 100.0 * inputs(t, seed=9))
    with torch.no_grad():
        base = call(attn, x, pad=pad)[0]
        changed = call(attn, noisy, pad=pad)[0]
        for i, length in enumerate(lengths):
            alone = call(attn, x[i : i + 1, :length])[0]
            torch.testing.assert_close(base[i, :length], alone[0], atol=ATOL, rtol=0)
            torch.testing.assert_close(changed[i, :length], base[i, :length], atol=ATOL, rtol=0)


def test_causal_mask_gives_no_weight_to_later_keys() -> None:
    t = 16
    attn = build(n_buckets=4, chunk_len=4, n_hashes=2)
    _, weights = call(attn, inputs(t), causal=True, need_weights=True)
    assert weights is not None
    later = torch.ones(t, t, dtype=torch.bool).triu(1)
    assert weights[..., later].abs().max() == 0
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, t, dtype=torch.float64))


def test_sorting_leaks_the_future_so_causal_is_not_declared() -> None:
    """Why ``causal=False``: a later token's bucket moves earlier tokens' chunks.

    Run causally anyway (the model does not check), changing token 12 changes the
    outputs at positions before 12, although no weight ever falls on a later key.
    """
    spec = get_variant("reformer")
    assert spec.capabilities.causal is False
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=64)
    model = LanguageModel(20, cfg, spec, {"chunk_len": 4}).eval()
    ids = torch.randint(2, 20, (2, 16), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 12] = (changed[:, 12] + 1 - 2) % 18 + 2
    with torch.no_grad():
        gap = (model(changed).logits[:, :12] - model(ids).logits[:, :12]).abs().max()
    assert gap > 1e-3


# ---------------------------------------------------------------------------------------
# Efficiency
# ---------------------------------------------------------------------------------------
def largest_tensor(attn: Reformer, t: int) -> int:
    x = torch.randn(1, t, D)
    with LargestTensor() as mode:
        call(attn, x)[0].sum().backward()
    return mode.largest


def test_memory_is_linear_in_length() -> None:
    chunk, rounds = 16, 2
    attn = build(dtype=torch.float32, n_buckets=8, chunk_len=chunk, n_hashes=rounds).train()
    small, large = largest_tensor(attn, 512), largest_tensor(attn, 1024)
    assert large <= 2 * small  # linear: doubling the length at most doubles the largest
    assert large <= H * rounds * 1024 * 2 * chunk  # scores: n · 2c per head and round
    assert large < H * 1024 * 1024 // 4  # far from one dense score matrix


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_are_finite_with_chunks_of_padding_only(dtype: torch.dtype) -> None:
    attn = build(dtype=torch.float32, n_buckets=4, chunk_len=4, n_hashes=2).train()
    x = torch.randn(2, 24, D, requires_grad=True)
    pad = padding([24, 3], 24)  # the second sequence: five chunks of padding only
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = call(attn, x, pad=pad)[0]
    assert torch.isfinite(out.float()).all()
    (out.float().pow(2) * pad[..., None]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in attn.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_options_are_checked() -> None:
    spec = get_variant("reformer")
    assert spec.options().n_hashes == 1
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=101)
    assert spec.build(dims).n_buckets == 14  # 2·101/16 → 14: buckets of ~chunk_len/2
    assert spec.build(dims, {"n_buckets": 4}).n_buckets == 4
    assert get_variant("reformer-4h").options().n_hashes == 4
    for bad in ({"n_buckets": 3}, {"n_hashes": 0}, {"chunk_len": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            spec.options(bad)
    with pytest.raises(ValueError, match="cross"):
        build()(inputs(4), inputs(4), AttentionContext())
