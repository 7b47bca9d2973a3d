"""SparseBERT: the defining properties, against references written out here.

- ``sparsebert-diag``: a token never attends to itself (weights exactly 0 on the
  diagonal, also with a memory offset); the rest is softmax over the other keys
  (checked against scaled_dot_product_attention with a mask built here); a query with
  no other key gets zeros;
- ``sparsebert-dam``: α has one logit per relative offset (|j − i|, or j − i) and head,
  and is the same parameter in every layer of a stack (weight decay exempts it); during
  the search (the first ``search_steps`` training calls) the mask is relaxed
  (stochastic, soft, one draw per call for all layers), α receives gradients and the
  penalty λ·Σ σ(α) over the block in use is ``aux_loss``; a nearly binary relaxed gate
  acts as the hard mask; evaluation mid-search uses [α > 0]; at call search_steps + 1
  exactly, [α > 0] is fixed in ``binary_mask``, and every later training and evaluation
  call attends under that mask (the masked softmax, built here), with no penalty and no
  use of α; the mask and the phase survive a state_dict round trip;
- masks combine with causality and padding; no leakage, padded keys ignored.
"""

from __future__ import annotations

import io
import math
from dataclasses import replace

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
from attnbench.model import ModelConfig, SequenceClassifier
from attnbench.train import decay_exempt_parameters
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
    return attn.mask_logits.detach().clone()


def toeplitz(per_offset: Tensor, n_q: int, n_k: int, memory_len: int = 0, symmetric=True):
    """(H|1, n_q, n_k) from one value per offset, written out entry by entry."""
    max_len = per_offset.shape[-1] if symmetric else (per_offset.shape[-1] + 1) // 2
    out = torch.empty(per_offset.shape[0], n_q, n_k, dtype=per_offset.dtype)
    for i in range(n_q):
        for j in range(n_k):
            r = j - (memory_len + i)
            out[:, i, j] = per_offset[:, abs(r)] if symmetric else per_offset[:, r + max_len - 1]
    return out


def past_search(attn: SparseBert, steps: int | None = None) -> None:
    """Run the search's training calls (or ``steps`` of them) on random inputs."""
    attn.train()
    for seed in range(attn.options.search_steps if steps is None else steps):
        run(attn, inputs(seed=100 + seed))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("per_head", [True, False])
def test_alpha_is_one_logit_per_offset_shared_by_every_layer(per_head, symmetric) -> None:
    torch.manual_seed(0)
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=MAX_LEN, n_layers=3)
    spec = get_variant("sparsebert-dam")
    options = {"per_head": per_head, "symmetric": symmetric}
    layers = [spec.build(replace(dims, layer_index=i), options) for i in range(3)]
    alpha = layers[0].mask_logits
    assert alpha is not None
    assert all(layer.mask_logits is alpha for layer in layers)  # one object
    offsets = MAX_LEN if symmetric else 2 * MAX_LEN - 1  # |j − i| < n, or −n < j − i < n
    assert alpha.shape == (H if per_head else 1, offsets)
    # the index r(i, j) is the offset
    idx = layers[1].offsets(T, T, 0, torch.device("cpu"))
    ids = torch.arange(offsets, dtype=torch.float64)[None]
    torch.testing.assert_close(idx.double()[None], toeplitz(ids, T, T, symmetric=symmetric))
    # another stack (its own shared dict) has its own α
    assert spec.build(replace(dims, shared={})).mask_logits is not alpha


def test_alpha_is_shared_and_decay_exempt_in_a_model() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=D, n_heads=H, n_layers=3, d_ff=32, max_len=MAX_LEN)
    model = SequenceClassifier(10, 2, cfg, get_variant("sparsebert-dam"))
    layers = [layer.self_attn for layer in model.encoder.stack.layers]
    assert layers[0].mask_logits is layers[1].mask_logits is layers[2].mask_logits
    named = [n for n, _ in model.named_parameters() if n.endswith("mask_logits")]
    assert len(named) == 1  # counted once
    assert decay_exempt_parameters(model) == {id(layers[0].mask_logits)}


def test_search_relaxed_mask_is_stochastic_soft_and_shared_by_the_layers() -> None:
    attn = build("sparsebert-dam").train()
    set_logits(attn, scale=0.5)
    x = inputs()
    a, b = run(attn, x), run(attn, x)
    assert a.weights is not None and b.weights is not None
    assert (a.weights - b.weights).abs().max() > 1e-3  # Gumbel noise: a new mask each call
    # soft: weights are not those of any binary mask; and every row still sums to 1
    kept = toeplitz(attn.mask_logits.detach() > 0, T, T)[None]
    _, hard = reference(attn, x, kept)
    assert (a.weights - hard).abs().max() > 1e-3
    torch.testing.assert_close(a.weights.sum(-1), torch.ones(B, H, T, dtype=torch.float64))
    # two layers of one stack at the same call draw one sample: with equal projections
    # they give equal weights; a later call draws another
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=MAX_LEN, n_layers=2)
    first = get_variant("sparsebert-dam").build(dims).double().train()
    second = get_variant("sparsebert-dam").build(replace(dims, layer_index=1)).double().train()
    second.load_state_dict(first.state_dict())
    w1, w2 = run(first, x).weights, run(second, x).weights
    assert w1 is not None and w2 is not None
    torch.testing.assert_close(w1, w2, atol=0, rtol=0)
    w3 = run(first, x).weights
    assert w3 is not None and (w3 - w1).abs().max() > 1e-3


def test_search_nearly_binary_gate_acts_as_the_mask() -> None:
    """σ((α + G' − G'')/τ) with |α| = 40: the gate is 0 or 1 up to ~e⁻²⁰ (noise > 20 has
    probability ~1e-9), so the relaxed attention is the masked softmax under [α > 0]:
    the gate multiplies the unnormalised weights and the rows are renormalised."""
    attn = build("sparsebert-dam").train()
    alpha = set_logits(attn)
    with torch.no_grad():
        attn.mask_logits.copy_(torch.where(alpha > 0, 40.0, -40.0))
    x = inputs()
    kept = toeplitz(alpha > 0, T, T)[None]
    want_out, want_w = reference(attn, x, kept)
    got = run(attn, x)
    assert got.weights is not None and got.aux_loss is not None  # still the search
    torch.testing.assert_close(got.weights, want_w, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.out, want_out, atol=1e-6, rtol=0)


@pytest.mark.parametrize("per_head", [False, True])
def test_search_logits_get_gradients_and_penalty_is_aux_loss(per_head: bool) -> None:
    lam = 0.3
    attn = build("sparsebert-dam", per_head=per_head, sparsity_weight=lam).train()
    assert attn.mask_logits is not None
    alpha = set_logits(attn)
    x = inputs()
    got = run(attn, x, grad=True)
    assert got.aux_loss is not None
    used = toeplitz(torch.sigmoid(alpha), T, T)  # σ(α_{|j−i|}) over the (T × S) block
    want = lam * used.sum()
    torch.testing.assert_close(got.aux_loss, want, atol=1e-12, rtol=0)
    # the task loss alone reaches every used logit (through the relaxed gate) ...
    (task_grad,) = torch.autograd.grad(got.out.pow(2).sum(), attn.mask_logits, retain_graph=True)
    assert (task_grad[:, :T] != 0).all()
    assert torch.equal(task_grad[:, T:], torch.zeros_like(task_grad[:, T:]))  # unused offsets
    # ... and so does the penalty: λ σ'(α_r) times the number of (i, j) at offset r
    (pen_grad,) = torch.autograd.grad(got.aux_loss, attn.mask_logits)
    s = torch.sigmoid(alpha[:, :T])
    count = torch.tensor([T] + [2 * (T - r) for r in range(1, T)], dtype=torch.float64)
    torch.testing.assert_close(pen_grad[:, :T], lam * s * (1 - s) * count)
    assert torch.equal(pen_grad[:, T:], torch.zeros_like(pen_grad[:, T:]))


def test_penalty_of_a_stack_counts_its_one_mask_once() -> None:
    lam = 0.3
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=D, n_heads=H, n_layers=3, d_ff=32, max_len=MAX_LEN)
    model = SequenceClassifier(10, 2, cfg, get_variant("sparsebert-dam"), {"sparsity_weight": lam})
    model.train()
    ids = torch.randint(1, 10, (2, T))
    alpha = model.encoder.stack.layers[0].self_attn.mask_logits.detach()
    out = model(ids)
    assert out.aux_loss is not None
    want = lam * toeplitz(torch.sigmoid(alpha), T, T).sum()
    torch.testing.assert_close(out.aux_loss, want.to(out.aux_loss.dtype))


def test_eval_mid_search_uses_the_current_binarisation() -> None:
    attn = build("sparsebert-dam", search_steps=3)
    past_search(attn, steps=1)  # mid-search
    alpha = set_logits(attn)
    attn.eval()
    x = inputs()
    first, second = run(attn, x), run(attn, x)
    assert torch.equal(first.out, second.out) and first.weights is not None
    assert first.aux_loss is None  # the penalty is a training term
    assert int(attn.calls) == 1  # evaluation does not count
    kept = toeplitz(alpha > 0, T, T)[None]  # M = [α > 0], built here
    assert 0.2 < kept.double().mean() < 0.8  # a real mix of kept and dropped entries
    want_out, want_w = reference(attn, x, kept)
    torch.testing.assert_close(first.weights, want_w, atol=1e-12, rtol=0)
    torch.testing.assert_close(first.out, want_out, atol=1e-12, rtol=0)
    assert (first.weights[~kept.expand_as(first.weights)] == 0).all()  # exactly 0


def test_the_switch_happens_exactly_at_search_steps() -> None:
    steps = 4
    attn = build("sparsebert-dam", search_steps=steps)
    set_logits(attn)
    attn.train()
    x = inputs()
    for call in range(steps):  # the search: relaxed, penalised, α in use
        assert attn.searching
        got = run(attn, x)
        assert got.aux_loss is not None, call
        assert not attn.binary_mask.any()  # nothing fixed yet
    assert not attn.searching and int(attn.calls) == steps
    with torch.no_grad():  # the optimiser's last update of the search
        attn.mask_logits.mul_(-1.0)
    alpha = attn.mask_logits.detach().clone()
    got = run(attn, x, grad=True)  # call steps + 1: binarises, then attends under it
    assert got.aux_loss is None
    assert torch.equal(attn.binary_mask, alpha > 0)
    assert got.out.grad_fn is not None
    (grad,) = torch.autograd.grad(got.out.sum(), attn.mask_logits, allow_unused=True)
    assert grad is None  # α no longer matters
    with torch.no_grad():  # α moving after the switch changes nothing
        attn.mask_logits.copy_(torch.randn_like(alpha))
    again = run(attn, x)
    assert again.aux_loss is None and torch.equal(attn.binary_mask, alpha > 0)
    torch.testing.assert_close(again.out, got.out, atol=0, rtol=0)  # deterministic


def test_after_the_switch_training_and_evaluation_use_the_same_fixed_mask() -> None:
    attn = build("sparsebert-dam", search_steps=5)
    set_logits(attn, scale=0.5)
    past_search(attn)
    past_search(attn, steps=3)  # a few training calls of the second phase
    fixed = attn.binary_mask.clone()
    assert 0 < fixed.double().mean() < 1
    x = inputs(seed=7)
    kept = toeplitz(fixed, T, T)[None]
    want_out, want_w = reference(attn, x, kept)
    trained = run(attn.train(), x)  # training after the switch ...
    evaluated = run(attn.eval(), x)  # ... and evaluation
    assert torch.equal(attn.current_mask(), fixed)
    for got in (trained, evaluated):
        assert got.weights is not None and got.aux_loss is None
        torch.testing.assert_close(got.weights, want_w, atol=1e-12, rtol=0)
        torch.testing.assert_close(got.out, want_out, atol=1e-12, rtol=0)
        assert (got.weights[~kept.expand_as(got.weights)] == 0).all()


def test_the_mask_and_the_phase_survive_a_state_dict_round_trip() -> None:
    attn = build("sparsebert-dam", search_steps=2)
    set_logits(attn, scale=0.5)
    past_search(attn, steps=4)
    fixed = attn.binary_mask.clone()
    with torch.no_grad():
        attn.mask_logits.mul_(-1.0)  # α after the switch disagrees with the fixed mask
    buffer = io.BytesIO()
    torch.save(attn.state_dict(), buffer)
    buffer.seek(0)
    fresh = build("sparsebert-dam", seed=9, search_steps=2)
    assert not torch.equal(fresh.mask_logits, attn.mask_logits)
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh.binary_mask, fixed) and int(fresh.calls) == 4
    x = inputs()
    for mode in ("eval", "train"):  # a reloaded checkpoint / a resumed run
        want = run(getattr(attn, mode)(), x)
        got = run(getattr(fresh, mode)(), x)
        torch.testing.assert_close(got.out, want.out, atol=0, rtol=0)
        assert got.aux_loss is None
    assert torch.equal(fresh.current_mask(), fixed)
    kept = toeplitz(fixed, T, T)[None]
    torch.testing.assert_close(run(fresh.eval(), x).out, reference(fresh, x, kept)[0])


def test_search_steps_zero_fixes_the_initial_binarisation() -> None:
    attn = build("sparsebert-dam", search_steps=0)
    alpha = attn.mask_logits.detach().clone()
    got = run(attn.train(), inputs())
    assert got.aux_loss is None and torch.equal(attn.binary_mask, alpha > 0)


def test_dam_causal_and_padding() -> None:
    attn = build("sparsebert-dam", search_steps=1)
    alpha = set_logits(attn, scale=0.5)
    x = inputs()
    pad = padding([T, T - 3, 2], T)
    for phase in ("search", "fixed"):
        attn.train()
        assert attn.searching == (phase == "search")
        got = run(attn, x, AttentionMask(causal=True, key_padding=pad))
        assert got.weights is not None
        future = torch.ones(T, T, dtype=torch.bool).triu(1)[None, None]
        padded = ~pad[:, None, None, :]
        assert (got.weights[(future | padded).expand_as(got.weights)] == 0).all()
        assert torch.isfinite(got.out).all()
        # changing the future / the padding changes nothing before it
        attn.eval()  # the same (hard) mask for both calls
        base = run(attn, x, AttentionMask(causal=True, key_padding=pad)).out
        changed = x.clone()
        changed[:, 5:] += 1.0
        changed[1, T - 3 :] = 9.0
        out = run(attn, changed, AttentionMask(causal=True, key_padding=pad)).out
        torch.testing.assert_close(out[:, :5], base[:, :5], atol=1e-12, rtol=0)
    # evaluation with padding equals the reference under [α > 0] ∧ padding
    assert torch.equal(attn.binary_mask, alpha > 0)
    allowed = toeplitz(alpha > 0, T, T)[None] & pad[:, None, None, :]
    want_out, _ = reference(attn, x, allowed)
    got = run(attn, x, AttentionMask(key_padding=pad))
    real = pad[:, :, None]
    torch.testing.assert_close(got.out * real, want_out * real, atol=1e-12, rtol=0)


def test_dam_memory_offset_indexes_the_offsets() -> None:
    """Query i sits at key position memory_len + i: its offsets are j − (memory_len + i)."""
    attn = build("sparsebert-dam", symmetric=False)
    alpha = set_logits(attn)
    memory_len = 3
    s = T + memory_len
    q, k, v = heads(attn, inputs(s))
    q = q[:, :, memory_len:]
    ctx = AttentionContext(mask=AttentionMask(causal=True, memory_len=memory_len))
    with torch.no_grad():
        _, weights = attn.attend(q, k, v, ctx)
    assert weights is not None
    kept = toeplitz(alpha > 0, T, s, memory_len, symmetric=False)[None]
    causal = torch.arange(s)[None, :] <= torch.arange(T)[:, None] + memory_len
    allowed = (kept & causal).expand(B, H, T, s)
    scores = ((q @ k.transpose(-2, -1)) / math.sqrt(DH)).masked_fill(~allowed, -math.inf)
    want = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    torch.testing.assert_close(weights, want, atol=1e-12, rtol=0)


def test_dam_with_diagonal_dropped_and_length_check() -> None:
    attn = build("sparsebert-dam", drop_diagonal=True)
    alpha = set_logits(attn)
    with torch.no_grad():
        attn.mask_logits.copy_(alpha.abs() + 1.0)  # keep everything the mask can keep
    for training in (False, True):
        got = run(attn.train(training), inputs())
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
    assert dam.per_head and dam.symmetric and dam.search_steps == 300  # released-code form
    caps = get_variant("sparsebert-dam").capabilities
    assert caps.causal and caps.padding_mask and not caps.cross_attention
    with pytest.raises(ValueError, match="temperature"):
        get_variant("sparsebert-dam").options({"temperature": 0.0})
    with pytest.raises(ValueError, match="search_steps"):
        get_variant("sparsebert-dam").options({"search_steps": -1})
    diag_layer = build("sparsebert-diag")
    assert diag_layer.mask_logits is None and diag_layer.calls is None
    assert set(diag_layer.state_dict()) == set(build("sparsebert-dam").state_dict()) - {
        "mask_logits",
        "calls",
        "binary_mask",
    }
