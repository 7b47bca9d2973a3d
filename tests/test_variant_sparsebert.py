"""SparseBERT: the defining properties, against references written out here.

- ``sparsebert-diag``: a token never attends to itself (weights exactly 0 on the
  diagonal, also with a memory offset); the rest is softmax over the other keys
  (checked against scaled_dot_product_attention with a mask built here); a query with
  no other key gets zeros;
- ``sparsebert-dam``: in evaluation the mask is [α > 0], binary and deterministic,
  and the attention is the masked softmax under it; in training the mask is relaxed
  (stochastic, soft) and α receives gradients; a nearly binary relaxed gate acts as
  that mask; the penalty λ·Σ σ(α) over the block in use is returned as ``aux_loss``
  and reaches α;
- masks combine with causality and padding; no leakage, padded keys ignored.
"""

from __future__ import annotations

import math

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
from attnbench.variants.sparsebert import SparseBert

B, T, H, DH, MAX_LEN = 3, 9, 4, 8, 16
D = H * DH


def build(name: str, seed: int = 0, max_len: int = MAX_LEN, **overrides) -> SparseBert:
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=max_len, dropout=0.0)
    attn = get_variant(name).build(dims, overrides or None).double().eval()
    assert isinstance(attn, SparseBert)
    return attn


def inputs(length: int = T, seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, length, D, generator=gen, dtype=torch.float64)


def run(attn: SparseBert, x: Tensor, mask: AttentionMask | None = None, grad: bool = False):
    ctx = AttentionContext(mask=mask or AttentionMask(), need_weights=True)
    with torch.set_grad_enabled(grad):
        return attn(x, None, ctx)


def heads(attn: SparseBert, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    b, n, _ = x.shape

    def split(t: Tensor) -> Tensor:
        return t.view(b, n, H, DH).transpose(1, 2)

    return split(attn.q_proj(x)), split(attn.k_proj(x)), split(attn.v_proj(x))


def reference(attn: SparseBert, x: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax over ``allowed`` keys via SDPA (rows with none: zeros); (out, weights)."""
    q, k, v = heads(attn, x)
    allowed = allowed.expand(q.shape[0], H, q.shape[2], k.shape[2])
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(DH)
    weights = torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0)  # empty rows → zeros
    has_key = allowed.any(-1, keepdim=True)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | ~has_key)
    sdpa = sdpa * has_key
    torch.testing.assert_close(sdpa, weights @ v)  # the two references agree
    b, _, n, _ = sdpa.shape
    return attn.out_proj(sdpa.transpose(1, 2).reshape(b, n, D)), weights


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------------------------------
# sparsebert-diag
# ---------------------------------------------------------------------------------------
def test_diag_never_attends_to_itself() -> None:
    attn = build("sparsebert-diag")
    x = inputs()
    got = run(attn, x)
    assert got.weights is not None
    diagonal = torch.diagonal(got.weights, dim1=-2, dim2=-1)
    assert torch.equal(diagonal, torch.zeros_like(diagonal))
    allowed = ~torch.eye(T, dtype=torch.bool)[None, None]
    want_out, want_w = reference(attn, x, allowed)
    torch.testing.assert_close(got.weights, want_w, atol=1e-12, rtol=0)
    torch.testing.assert_close(got.out, want_out, atol=1e-12, rtol=0)
    assert got.aux_loss is None and not list(p for n, p in attn.named_parameters() if "mask" in n)


def test_diag_with_causal_padding_and_memory_offset() -> None:
    attn = build("sparsebert-diag")
    memory_len = 3
    s = T + memory_len
    x_keys = inputs(s)
    pad = padding([s, s - 2, 5], s)
    mask = AttentionMask(causal=True, key_padding=pad, memory_len=memory_len)
    q, k, v = heads(attn, x_keys)
    q = q[:, :, memory_len:]  # the segment's queries sit at key positions 3 … s − 1
    ctx = AttentionContext(mask=mask, need_weights=True)
    with torch.no_grad():
        out, weights = attn.attend(q, k, v, ctx)
    assert weights is not None
    allowed = torch.zeros(B, 1, T, s, dtype=torch.bool)
    for i in range(T):
        allowed[:, :, i, : memory_len + i] = True  # the past, without itself (memory_len + i)
    allowed &= pad[:, None, None, :]
    self_weights = weights[:, :, torch.arange(T), memory_len + torch.arange(T)]
    assert torch.equal(self_weights, torch.zeros_like(self_weights))
    assert (weights[~allowed.expand_as(weights)] == 0).all()
    want = torch.softmax(
        ((q @ k.transpose(-2, -1)) / math.sqrt(DH)).masked_fill(~allowed, -math.inf), dim=-1
    )
    torch.testing.assert_close(weights, torch.nan_to_num(want, nan=0.0), atol=1e-12, rtol=0)
    torch.testing.assert_close(out, weights @ v, atol=1e-12, rtol=0)


def test_diag_query_with_no_other_key_gets_zeros() -> None:
    attn = build("sparsebert-diag")
    x = inputs(1)  # one token: its only key is itself
    got = run(attn, x)
    assert got.weights is not None and torch.equal(got.weights, torch.zeros(B, H, 1, 1))
    torch.testing.assert_close(got.out, attn.out_proj.bias.expand(B, 1, D))
    causal = run(attn, inputs(), AttentionMask(causal=True))  # first query: only itself
    assert causal.weights is not None
    assert torch.equal(causal.weights[:, :, 0], torch.zeros(B, H, T))
    assert torch.isfinite(causal.out).all()


# ---------------------------------------------------------------------------------------
# sparsebert-dam
# ---------------------------------------------------------------------------------------
def set_logits(attn: SparseBert, seed: int = 5, scale: float = 1.0) -> Tensor:
    assert attn.mask_logits is not None
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        attn.mask_logits.copy_(torch.randn(attn.mask_logits.shape, generator=gen) * scale)
    return attn.mask_logits.detach()


def test_dam_eval_mask_is_binary_deterministic_and_applied() -> None:
    attn = build("sparsebert-dam")
    alpha = set_logits(attn)
    x = inputs()
    first, second = run(attn, x), run(attn, x)
    assert torch.equal(first.out, second.out) and first.weights is not None
    kept = (alpha[0, :T, :T] > 0)[None, None]  # M = [α > 0], built here
    assert 0.2 < kept.double().mean() < 0.8  # a real mix of kept and dropped entries
    want_out, want_w = reference(attn, x, kept)
    torch.testing.assert_close(first.weights, want_w, atol=1e-12, rtol=0)
    torch.testing.assert_close(first.out, want_out, atol=1e-12, rtol=0)
    assert (first.weights[~kept.expand_as(first.weights)] == 0).all()  # exactly 0


def test_dam_training_mask_is_relaxed_and_stochastic() -> None:
    attn = build("sparsebert-dam").train()
    set_logits(attn, scale=0.5)
    x = inputs()
    a, b = run(attn, x), run(attn, x)
    assert a.weights is not None and b.weights is not None
    assert (a.weights - b.weights).abs().max() > 1e-3  # Gumbel noise: a new mask each call
    # soft: weights are not those of any binary mask; and every row still sums to 1
    kept = (attn.mask_logits.detach()[0, :T, :T] > 0)[None, None]
    _, hard = reference(attn, x, kept)
    assert (a.weights - hard).abs().max() > 1e-3
    torch.testing.assert_close(a.weights.sum(-1), torch.ones(B, H, T, dtype=torch.float64))


def test_dam_nearly_binary_gate_acts_as_the_mask_in_training() -> None:
    """σ((α + G' − G'')/τ) with |α| = 40: the gate is 0 or 1 up to ~e⁻²⁰ (noise > 20 has
    probability ~1e-9), so the relaxed attention is the masked softmax under [α > 0]:
    the gate multiplies the unnormalised weights and the rows are renormalised."""
    attn = build("sparsebert-dam").train()
    alpha = set_logits(attn)
    with torch.no_grad():
        attn.mask_logits.copy_(torch.where(alpha > 0, 40.0, -40.0))
    x = inputs()
    kept = (alpha[0, :T, :T] > 0)[None, None]
    want_out, want_w = reference(attn, x, kept)
    got = run(attn, x)
    assert got.weights is not None
    torch.testing.assert_close(got.weights, want_w, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.out, want_out, atol=1e-6, rtol=0)


@pytest.mark.parametrize("per_head", [False, True])
def test_dam_logits_get_gradients_and_penalty_is_aux_loss(per_head: bool) -> None:
    lam = 0.3
    attn = build("sparsebert-dam", per_head=per_head, sparsity_weight=lam).train()
    assert attn.mask_logits is not None
    assert attn.mask_logits.shape == (H if per_head else 1, MAX_LEN, MAX_LEN)
    alpha = set_logits(attn)
    x = inputs()
    got = run(attn, x, grad=True)
    assert got.aux_loss is not None
    want = lam * torch.sigmoid(alpha[:, :T, :T]).sum()  # over the (T × S) block in use
    torch.testing.assert_close(got.aux_loss, want, atol=1e-12, rtol=0)
    # the task loss alone reaches every used logit (through the relaxed gate) ...
    (task_grad,) = torch.autograd.grad(got.out.pow(2).sum(), attn.mask_logits, retain_graph=True)
    assert (task_grad[:, :T, :T] != 0).all()
    assert torch.equal(task_grad[:, T:], torch.zeros_like(task_grad[:, T:]))  # unused rows
    # ... and so does the penalty: λ σ'(α) on the used entries, nothing elsewhere
    (pen_grad,) = torch.autograd.grad(got.aux_loss, attn.mask_logits)
    s = torch.sigmoid(alpha[:, :T, :T])
    torch.testing.assert_close(pen_grad[:, :T, :T], lam * s * (1 - s))
    assert torch.equal(pen_grad[:, :, T:], torch.zeros_like(pen_grad[:, :, T:]))
    # in evaluation the penalty is still reported (deterministic), the mask is hard
    attn.eval()
    assert run(attn, x).aux_loss == pytest.approx(want.item())


def test_dam_causal_and_padding() -> None:
    attn = build("sparsebert-dam")
    alpha = set_logits(attn, scale=0.5)
    x = inputs()
    pad = padding([T, T - 3, 2], T)
    for training in (False, True):
        attn.train(training)
        got = run(attn, x, AttentionMask(causal=True, key_padding=pad))
        assert got.weights is not None
        future = torch.ones(T, T, dtype=torch.bool).triu(1)[None, None]
        padded = ~pad[:, None, None, :]
        assert (got.weights[(future | padded).expand_as(got.weights)] == 0).all()
        assert torch.isfinite(got.out).all()
        # changing the future / the padding changes nothing before it
        torch.manual_seed(7)
        base = run(attn, x, AttentionMask(causal=True, key_padding=pad)).out
        changed = x.clone()
        changed[:, 5:] += 1.0
        changed[1, T - 3 :] = 9.0
        torch.manual_seed(7)  # the same Gumbel noise
        out = run(attn, changed, AttentionMask(causal=True, key_padding=pad)).out
        torch.testing.assert_close(out[:, :5], base[:, :5], atol=1e-12, rtol=0)
    # evaluation with padding equals the reference under [α > 0] ∧ padding
    attn.eval()
    allowed = (alpha[0, :T, :T] > 0)[None, None] & pad[:, None, None, :]
    want_out, _ = reference(attn, x, allowed)
    got = run(attn, x, AttentionMask(key_padding=pad))
    real = pad[:, :, None]
    torch.testing.assert_close(got.out * real, want_out * real, atol=1e-12, rtol=0)


def test_dam_with_diagonal_dropped_and_length_check() -> None:
    attn = build("sparsebert-dam", drop_diagonal=True)
    alpha = set_logits(attn)
    with torch.no_grad():
        attn.mask_logits.copy_(alpha.abs() + 1.0)  # keep everything the mask can keep
    got = run(attn, inputs())
    assert got.weights is not None
    diagonal = torch.diagonal(got.weights, dim1=-2, dim2=-1)
    assert torch.equal(diagonal, torch.zeros_like(diagonal))
    with pytest.raises(ValueError, match="max_len"):
        run(attn, inputs(MAX_LEN + 1))


def test_presets_and_capabilities() -> None:
    diag = get_variant("sparsebert-diag").options()
    dam = get_variant("sparsebert-dam").options()
    assert diag.drop_diagonal and not diag.learn_mask
    assert dam.learn_mask and not dam.drop_diagonal
    caps = get_variant("sparsebert-dam").capabilities
    assert caps.causal and caps.padding_mask and not caps.cross_attention
    with pytest.raises(ValueError, match="temperature"):
        get_variant("sparsebert-dam").options({"temperature": 0.0})
