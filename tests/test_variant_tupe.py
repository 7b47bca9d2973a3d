"""TUPE: untied position term independent of content, [CLS] untying, shared across layers."""

from __future__ import annotations

import pytest
import torch

from attnbench.attention import AttentionContext, AttentionDims, AttentionMask, get_variant
from attnbench.model import ModelConfig, SequenceClassifier, count_parameters
from attnbench.variants.tupe import relative_bucket


@pytest.fixture(autouse=True)
def float64_default():
    """float64 inside this module's tests only (a module-level setting would leak)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


DIMS = AttentionDims(d_model=16, n_heads=2, head_dim=8, max_len=32)


def _weights(attn, x):
    ctx = AttentionContext(mask=AttentionMask(), need_weights=True)
    return attn(x, None, ctx).weights


def test_position_term_is_independent_of_content() -> None:
    torch.manual_seed(0)
    attn = get_variant("tupe").build(DIMS).eval()
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
    attn = get_variant("tupe").build(DIMS)
    with torch.no_grad():
        attn.positional.theta.copy_(torch.tensor([[1.5, -2.0], [0.25, 3.0]]))
    pos = torch.arange(8)
    scores = attn.positional(pos, pos)  # (H, T, S)
    for head in range(2):
        assert torch.all(scores[head, 0, :] == attn.positional.theta[0, head])
        assert torch.all(scores[head, 1:, 0] == attn.positional.theta[1, head])
    assert scores[0, 1, 2] != scores[0, 1, 3]


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
    attn = get_variant("tupe-r").build(DIMS)
    with torch.no_grad():
        attn.positional.u_q.weight.zero_()
        attn.positional.u_q.bias.zero_()
        attn.positional.theta.zero_()
    pos = torch.arange(12)
    scores = attn.positional(pos, pos)
    for offset in (-3, 0, 2):
        diag = torch.diagonal(scores[:, 1:, 1:], offset=offset, dim1=-2, dim2=-1)
        assert torch.allclose(diag, diag[:, :1].expand_as(diag))


def test_relative_buckets_are_exact_near_and_logarithmic_far() -> None:
    rel = torch.arange(-200, 201)
    buckets = relative_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    assert buckets.min() >= 0 and buckets.max() < 32
    assert len(set(buckets[(rel.abs() < 8)].tolist())) == 15  # exact for |j − i| < 8
    assert buckets[rel == 150] == buckets[rel == 200]  # beyond max_distance: one bucket
    causal = relative_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    assert torch.all(causal[rel > 0] == 0)
