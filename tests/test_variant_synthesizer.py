"""Synthesizer: attention weights that never compare two tokens.

Dense: row i of the weights is softmax of an MLP of x_i alone (checked against the
formula written out here, and by changing every other token). Random: the weights
are softmax(R) whatever the input. Plus masks (causal, padding, empty rows), the
value path, the head mask and the declared limits. float64 for tight comparisons.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    get_variant,
)

B, T, D, H, DH, MAX_LEN = 3, 7, 16, 4, 4, 10
ATOL = 1e-10
NAMES = [
    "synthesizer-dense",
    "synthesizer-random",
    "synthesizer-random-fixed",
    "synthesizer-random-k8",
]


def build(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=MAX_LEN, dropout=0.0)
    return get_variant(name).build(dims, overrides or None).double().eval()


def inputs(length: int = T, seed: int = 1, batch: int = B) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, D, generator=gen, dtype=torch.float64)


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def run(attn, x: Tensor, mask: AttentionMask | None = None, **ctx_kw):
    ctx = AttentionContext(mask=mask or AttentionMask(), need_weights=True, **ctx_kw)
    with torch.no_grad():
        return attn(x, None, ctx)


def values_reference(attn, x: Tensor, weights: Tensor) -> Tensor:
    """Y = W_O · merge(weights @ (x W_V)), written out independently of forward."""
    b, n, _ = x.shape
    v = attn.v_proj(x).view(b, n, H, DH).transpose(1, 2)
    return attn.out_proj((weights @ v).transpose(1, 2).reshape(b, n, H * DH))


# ---------------------------------------------------------------------------------------
# The defining property: no token–token dot products
# ---------------------------------------------------------------------------------------
def test_dense_weights_match_the_formula() -> None:
    attn = build("synthesizer-dense")
    x = inputs()
    got = run(attn, x)
    # B_i = W₂ relu(W₁ x_i + b₁) + b₂, per head, truncated to the T keys
    want = torch.empty(B, H, T, T, dtype=torch.float64)
    for h in range(H):
        hidden = torch.relu(x @ attn.w1[h] + attn.b1[h])  # (B, T, d')
        logits = hidden @ attn.w2[h] + attn.b2[h]  # (B, T, ℓ)
        assert logits.shape[-1] == MAX_LEN
        want[:, h] = torch.softmax(logits[..., :T], dim=-1)
    assert got.weights is not None
    torch.testing.assert_close(got.weights, want.detach(), atol=ATOL, rtol=0)
    torch.testing.assert_close(got.out, values_reference(attn, x, want).detach(), atol=ATOL, rtol=0)


def test_dense_row_i_depends_on_x_i_only() -> None:
    attn = build("synthesizer-dense")
    x = inputs()
    base = run(attn, x).weights
    for i in (0, 3, T - 1):
        changed = x.clone()
        others = [j for j in range(T) if j != i]
        changed[:, others] = inputs(seed=5)[:, others]  # every token but i changes
        w = run(attn, changed).weights
        torch.testing.assert_close(w[:, :, i], base[:, :, i], atol=ATOL, rtol=0)
        assert (w[:, :, others] - base[:, :, others]).abs().max() > 1e-3
    # and row i does follow x_i
    changed = x.clone()
    changed[:, 2] = inputs(seed=6)[:, 2]
    assert (run(attn, changed).weights[:, :, 2] - base[:, :, 2]).abs().max() > 1e-3


def test_dense_weights_are_not_permutation_equivariant_like_dot_products() -> None:
    # with no position information, dot-product attention weights permute with the
    # tokens; synthetic logits are tied to key POSITIONS: swapping two tokens moves
    # their rows but not the columns
    attn = build("synthesizer-dense")
    x = inputs()
    perm = torch.tensor([1, 0, *range(2, T)])
    w, wp = run(attn, x).weights, run(attn, x[:, perm]).weights
    torch.testing.assert_close(wp, w[:, :, perm], atol=ATOL, rtol=0)  # rows follow tokens
    assert not torch.allclose(wp, w[:, :, perm][..., perm])  # columns do not


@pytest.mark.parametrize("name", NAMES[1:])
def test_random_weights_do_not_depend_on_the_input(name: str) -> None:
    attn = build(name)
    a, b = run(attn, inputs(seed=1)), run(attn, inputs(seed=2) * 3.0)
    torch.testing.assert_close(a.weights, b.weights, atol=0, rtol=0)
    if attn.options.rank is None:
        r = attn.r[:, :T, :T]
    else:
        r = attn.r1[:, :T] @ attn.r2[:, :T].transpose(-2, -1)
    want = torch.softmax(r, dim=-1)[None].expand(B, -1, -1, -1)
    torch.testing.assert_close(a.weights, want.detach(), atol=ATOL, rtol=0)
    x = inputs(seed=1)
    torch.testing.assert_close(a.out, values_reference(attn, x, want).detach(), atol=ATOL, rtol=0)


def test_random_trainable_fixed_and_factorized_parameters() -> None:
    trainable = build("synthesizer-random")
    fixed = build("synthesizer-random-fixed")
    factorized = build("synthesizer-random-k8")
    names = {n for n, _ in trainable.named_parameters()}
    assert "r" in names and trainable.r.shape == (H, MAX_LEN, MAX_LEN)
    assert "r" not in {n for n, _ in fixed.named_parameters()}
    assert "r" in fixed.state_dict()  # a fixed R is still saved with the model
    assert factorized.r1.shape == factorized.r2.shape == (H, MAX_LEN, 8)
    assert not hasattr(factorized, "r")
    # R is learned: a gradient reaches it; a fixed R gets none and stays put
    x = inputs()
    for attn in (trainable, fixed):
        attn.train()
        attn(x, None, AttentionContext()).out.pow(2).sum().backward()
    assert trainable.r.grad is not None and trainable.r.grad[:, :T, :T].abs().sum() > 0
    assert fixed.r.grad is None and not fixed.r.requires_grad


# ---------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_causal_has_no_leak(name: str) -> None:
    attn = build(name)
    x = inputs()
    mask = AttentionMask(causal=True)
    base = run(attn, x, mask)
    assert torch.equal(base.weights.triu(1), torch.zeros_like(base.weights))
    torch.testing.assert_close(base.weights.sum(-1), torch.ones(B, H, T, dtype=torch.float64))
    for t in (1, T // 2, T - 1):
        changed = x.clone()
        changed[:, t:] = inputs(seed=9)[:, t:]
        out = run(attn, changed, mask).out
        torch.testing.assert_close(out[:, :t], base.out[:, :t], atol=ATOL, rtol=0)
        assert (out[:, t:] - base.out[:, t:]).abs().max() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_padded_keys_are_ignored(name: str) -> None:
    attn = build(name)
    lengths = [T, 4, 1]
    pad = padding(lengths, T)
    x = inputs()
    changed = torch.where(pad[..., None], x, inputs(seed=4))
    for causal in (False, True):
        mask = AttentionMask(causal=causal, key_padding=pad)
        a, b = run(attn, x, mask), run(attn, changed, mask)
        assert (a.weights * ~pad[:, None, None, :]).abs().max() == 0  # no weight on padding
        for i, n in enumerate(lengths):
            torch.testing.assert_close(a.out[i, :n], b.out[i, :n], atol=ATOL, rtol=0)
        # a padded batch row equals the sequence alone (logits truncated to its length)
        alone = run(attn, x[1:2, :4], AttentionMask(causal=causal)).out
        torch.testing.assert_close(a.out[1:2, :4], alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_fully_padded_row_gives_zeros_not_nan(name: str) -> None:
    attn = build(name)
    pad = padding([T, 0, 2], T)
    res = run(attn, inputs(), AttentionMask(key_padding=pad))
    assert torch.isfinite(res.out).all() and torch.isfinite(res.weights).all()
    assert res.weights[1].abs().max() == 0
    # zero weights → zero mixed values → the output is W_O's bias alone
    torch.testing.assert_close(res.out[1], attn.out_proj.bias.expand(T, D).detach())


# ---------------------------------------------------------------------------------------
# Head mask, limits, autocast
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["synthesizer-dense", "synthesizer-random"])
def test_head_mask_removes_a_heads_contribution(name: str) -> None:
    attn = build(name)
    x = inputs()
    head_mask = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    got = run(attn, x, head_mask=head_mask)
    weights = got.weights * head_mask[None, :, None, None]  # zero weights = ablated head
    torch.testing.assert_close(got.out, values_reference(attn, x, weights), atol=ATOL, rtol=0)
    assert (got.out - run(attn, x).out).abs().max() > 1e-3


def test_declared_limits() -> None:
    spec = get_variant("synthesizer-dense")
    caps = spec.capabilities
    assert caps.causal and caps.padding_mask and caps.variable_length
    assert not caps.cross_attention
    attn = build("synthesizer-dense")
    with pytest.raises(ValueError, match="self-attention"):
        attn(inputs(), inputs(5), AttentionContext())
    with pytest.raises(ValueError, match="max_len"):
        attn(inputs(MAX_LEN + 1), None, AttentionContext())
    run(attn, inputs(MAX_LEN))  # exactly max_len is fine
    with pytest.raises(ValueError, match="rank"):
        build("synthesizer-random", rank=0)
    assert build("synthesizer-dense", hidden=3).w1.shape == (H, D, 3)


@pytest.mark.parametrize("name", ["synthesizer-dense", "synthesizer-random-k8"])
def test_bf16_autocast_close_to_fp32(name: str) -> None:
    attn = build(name).float()
    x = inputs().float()
    mask = AttentionMask(causal=True, key_padding=padding([T, 3, 5], T))
    ref = run(attn, x, mask).out
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run(attn, x, mask).out
    assert torch.isfinite(got.float()).all()
    torch.testing.assert_close(got.float(), ref, atol=5e-2, rtol=5e-2)
