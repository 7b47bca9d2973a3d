"""TUPE: untied position term independent of content, [CLS] untying, shared across layers.

- the positional term is content-free and one module per stack;
- without a [CLS] token (``first_token_cls`` False: LM, decoder, translation encoder)
  position 0 is an ordinary position: the positional scores, TUPE-R's bias included,
  equal (p_i U_Q)(p_j U_K)ᵀ/√(2d) + b_{bucket(j − i)} everywhere, written out here,
  and no θ exists;
- with one, row 0 takes θ₁ and column 0 (i ≠ 0) θ₂, and in TUPE-R they take the
  official code's [CLS] buckets (others → [CLS]: bucket n; [CLS] → others: bucket n/2,
  never produced by bidirectional bucketing; a causal stack gets bucket n + 1) instead
  of any relative bias.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from attnbench.attention import AttentionContext, AttentionDims, AttentionMask, get_variant
from attnbench.model import (
    EncoderDecoder,
    LanguageModel,
    ModelConfig,
    SequenceClassifier,
    count_parameters,
)
from attnbench.variants.tupe import relative_bucket


@pytest.fixture(autouse=True)
def float64_default():
    """float64 inside this module's tests only (a module-level setting would leak)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


BASE = AttentionDims(d_model=16, n_heads=2, head_dim=8, max_len=32)


def dims(**fields) -> AttentionDims:
    """BASE with ``fields``, and a stack of its own (a fresh shared dict): no test sees
    another test's positional module."""
    return replace(BASE, shared={}, **fields)


def t5_bucket(rel: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128):
    """T5's bucket of j − i = ``rel``, one number at a time (mesh-tensorflow's rule)."""
    n, ret = -rel, 0
    if bidirectional:
        num_buckets //= 2
        ret += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    exact = num_buckets // 2
    if n < exact:
        return ret + n
    log_ratio = math.log(n / exact) / math.log(max_distance / exact)
    large = exact + int(log_ratio * (num_buckets - exact))
    return ret + min(large, num_buckets - 1)


def plain_positional(module, n: int) -> Tensor:
    """(H, n, n): (p_i U_Q)(p_j U_K)ᵀ / √(2d) for every i, j, from the weights."""
    p = module.norm(module.p.weight[:n])
    pq = module.u_q(p).view(n, 2, 8).transpose(0, 1)
    pk = module.u_k(p).view(n, 2, 8).transpose(0, 1)
    return pq @ pk.transpose(-2, -1) / math.sqrt(2 * 8)


def _weights(attn, x):
    ctx = AttentionContext(mask=AttentionMask(), need_weights=True)
    return attn(x, None, ctx).weights


def test_position_term_is_independent_of_content() -> None:
    torch.manual_seed(0)
    attn = get_variant("tupe").build(dims()).eval()
    with torch.no_grad():  # no content correlation: only the positional term remains
        attn.q_proj.weight.zero_()
        attn.q_proj.bias.zero_()
    x1, x2 = torch.randn(1, 10, 16), torch.randn(1, 10, 16)
    w1, w2 = _weights(attn, x1), _weights(attn, x2)
    torch.testing.assert_close(w1, w2)
    positions = torch.arange(10)
    expected = torch.softmax(attn.positional(positions, positions), dim=-1)
    torch.testing.assert_close(w1[0], expected)
    assert not torch.allclose(w1[0, 0, 3], w1[0, 0, 5])  # positions do matter


def test_cls_row_and_column_use_their_own_learned_values() -> None:
    torch.manual_seed(0)
    attn = get_variant("tupe").build(dims(first_token_cls=True))
    with torch.no_grad():
        attn.positional.theta.copy_(torch.tensor([[1.5, -2.0], [0.25, 3.0]]))
    pos = torch.arange(8)
    scores = attn.positional(pos, pos)  # (H, T, S)
    for head in range(2):
        assert torch.all(scores[head, 0, :] == attn.positional.theta[0, head])
        assert torch.all(scores[head, 1:, 0] == attn.positional.theta[1, head])
    torch.testing.assert_close(scores[:, 1:, 1:], plain_positional(attn.positional, 8)[:, 1:, 1:])
    assert scores[0, 1, 2] != scores[0, 1, 3]


@pytest.mark.parametrize("name", ["tupe", "tupe-r"])
@pytest.mark.parametrize("causal", [False, True])
def test_without_cls_position_zero_is_an_ordinary_position(name: str, causal: bool) -> None:
    torch.manual_seed(0)
    attn = get_variant(name).build(dims(is_causal=causal))
    module = attn.positional
    assert module.theta is None and not module.untied  # nothing to untie
    n = 12
    want = plain_positional(module, n)
    if name == "tupe-r":
        assert module.rel_bias.num_embeddings == 32  # T5's buckets only
        with torch.no_grad():
            module.rel_bias.weight.copy_(torch.randn(32, 2))
        for i in range(n):
            for j in range(n):
                want[:, i, j] += module.rel_bias.weight[t5_bucket(j - i, not causal)]
    pos = torch.arange(n)
    got = module(pos, pos)
    torch.testing.assert_close(got, want)
    # so row 0 is no constant θ: it varies with the key position like any other row
    assert not torch.allclose(got[:, 0, 1:], got[:, 0, 1:2].expand(-1, n - 1))


def test_tupe_r_cls_row_and_column_take_their_own_buckets_not_the_relative_bias() -> None:
    torch.manual_seed(0)
    attn = get_variant("tupe-r").build(dims(first_token_cls=True))
    module = attn.positional
    assert module.rel_bias.num_embeddings == 33  # the official code's rel_pos_bins + 1
    with torch.no_grad():
        module.theta.copy_(torch.tensor([[1.5, -2.0], [0.25, 3.0]]))
        module.rel_bias.weight.copy_(torch.randn(33, 2))
    table = module.rel_bias.weight
    n = 12
    pos = torch.arange(n)
    got = module(pos, pos)
    plain = plain_positional(module, n)
    for i in range(n):
        for j in range(n):
            if i == 0:  # [CLS] → everything: θ₁ + b_{CLS→} (bucket 16, unused by T5)
                want = module.theta[0] + table[16]
            elif j == 0:  # others → [CLS]: θ₂ + b_{→CLS} (bucket 32)
                want = module.theta[1] + table[32]
            else:
                want = plain[:, i, j] + table[t5_bucket(j - i, True)]
            torch.testing.assert_close(got[:, i, j], want)
    # bucket 16 is never a bidirectional T5 bucket, so [CLS] → others shares no bias
    assert all(t5_bucket(r, True) != 16 for r in range(-200, 201))
    # a causal stack whose inputs start with [CLS] (all 32 buckets in use) gets 32 and 33
    causal = get_variant("tupe-r").build(dims(first_token_cls=True, is_causal=True)).positional
    assert causal.rel_bias.num_embeddings == 34
    with torch.no_grad():
        causal.rel_bias.weight.copy_(torch.randn(34, 2))
    got = causal(pos, pos)
    b = causal.rel_bias.weight
    torch.testing.assert_close(got[:, 0, :], (causal.theta[0] + b[33])[:, None].expand(-1, n))
    torch.testing.assert_close(got[:, 1:, 0], (causal.theta[1] + b[32])[:, None].expand(-1, n - 1))
    torch.testing.assert_close(got[:, 3, 2], plain_positional(causal, n)[:, 3, 2] + b[1])


def test_models_untie_cls_only_where_inputs_start_with_cls() -> None:
    cfg = ModelConfig(d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=32)
    for name in ("tupe", "tupe-r"):
        spec = get_variant(name)
        classifier = SequenceClassifier(10, 2, cfg, spec)
        assert classifier.encoder.stack.layers[0].self_attn.positional.theta is not None
        lm = LanguageModel(10, cfg, spec)
        assert lm.stack.layers[0].self_attn.positional.theta is None
        seq2seq = EncoderDecoder(10, cfg, spec, get_variant("vanilla"))
        assert seq2seq.encoder.stack.layers[0].self_attn.positional.theta is None
        assert seq2seq.decoder.layers[0].self_attn.positional.theta is None
    # no dead parameter where nothing is untied: every positional parameter gets a gradient
    lm = LanguageModel(10, cfg, get_variant("tupe-r"))
    lm(torch.randint(0, 10, (2, 9))).logits.sum().backward()
    positional = lm.stack.layers[0].self_attn.positional
    assert all(p.grad is not None for p in positional.parameters())


def test_positions_are_not_added_to_the_input_and_the_term_is_shared_across_layers() -> None:
    cfg = ModelConfig(d_model=16, n_heads=2, n_layers=3, d_ff=32, max_len=32)
    model = SequenceClassifier(10, 2, cfg, get_variant("tupe"))
    assert not model.encoder.embed.add_positions and model.encoder.embed.positions is None
    layers = [layer.self_attn for layer in model.encoder.stack.layers]
    assert layers[0].positional is layers[1].positional is layers[2].positional
    shared = sum(p.numel() for p in layers[0].positional.parameters())
    cfg1 = ModelConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=32)
    one_layer = count_parameters(SequenceClassifier(10, 2, cfg1, get_variant("tupe")))
    per_layer = sum(p.numel() for p in layers[1].parameters()) - shared
    # two more layers add only their own parameters, not another positional module
    assert count_parameters(model) == one_layer + 2 * (
        per_layer
        + sum(
            p.numel()
            for p in model.encoder.stack.layers[1].parameters()
            if all(p is not q for q in layers[1].parameters())
        )
    )


def test_tupe_r_bias_depends_only_on_relative_position() -> None:
    torch.manual_seed(0)
    for cls in (False, True):
        attn = get_variant("tupe-r").build(dims(first_token_cls=cls))
        with torch.no_grad():
            attn.positional.u_q.weight.zero_()
            attn.positional.u_q.bias.zero_()
        pos = torch.arange(12)
        scores = attn.positional(pos, pos)
        # without [CLS] everywhere; with it, outside its row and column
        inner = scores[:, 1:, 1:] if cls else scores
        for offset in (-3, 0, 2):
            diag = torch.diagonal(inner, offset=offset, dim1=-2, dim2=-1)
            assert torch.allclose(diag, diag[:, :1].expand_as(diag))


def test_relative_buckets_are_exact_near_and_logarithmic_far() -> None:
    rel = torch.arange(-200, 201)
    buckets = relative_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    assert buckets.min() >= 0 and buckets.max() < 32
    assert len(set(buckets[(rel.abs() < 8)].tolist())) == 15  # exact for |j − i| < 8
    assert buckets[rel == 150] == buckets[rel == 200]  # beyond max_distance: one bucket
    causal = relative_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    assert torch.all(causal[rel > 0] == 0)
