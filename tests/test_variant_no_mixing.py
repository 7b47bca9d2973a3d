"""The attention-free control ``no-mixing``: out_i = W_O(W_V x_i), no token ever mixed.

Checked against the per-position formula written out here, and through whole models:
changing token j changes the hidden states (logits) at j only — while vanilla attention,
built the same way, does change the others (so the checks can fail).
"""

from __future__ import annotations

import pytest
import torch
from attn_cases import Cases, padding
from torch import Tensor

from attnbench.attention import AttentionContext, AttentionDims, AttentionMask, get_variant
from attnbench.model import LanguageModel, ModelConfig, SequenceClassifier
from attnbench.variants.no_mixing import NoMixing

C = Cases(B=3, T=9, D=16, H=4, self_lengths=(9, 5, 0))
NAME = "no-mixing"
VOCAB = 20


def formula(module: NoMixing, x: Tensor) -> Tensor:
    """W_O (W_V x_i + b_V) + b_O for every position i, written with plain matmuls."""
    v = x @ module.v_proj.weight.T + module.v_proj.bias
    return v @ module.out_proj.weight.T + module.out_proj.bias


def test_declared_as_a_canonical_control() -> None:
    spec = get_variant(NAME)
    caps = spec.capabilities
    assert spec.canonical and spec.preset_of is None
    assert caps.mixes_tokens is False
    assert caps.causal and caps.padding_mask and not caps.cross_attention
    assert spec.capabilities.as_dict()["mixes_tokens"] is False  # travels in the record
    assert all(
        get_variant(other).capabilities.mixes_tokens for other in ("vanilla", "local", "linear")
    )


@pytest.mark.parametrize("causal", [False, True])
def test_output_is_the_per_position_formula(causal: bool) -> None:
    module = C.build(NAME)
    x = C.inputs()
    out = module(x, None, AttentionContext(mask=AttentionMask(causal=causal))).out
    torch.testing.assert_close(out, formula(module, x), atol=1e-12, rtol=0)


def test_padding_real_positions_follow_the_formula_padded_ones_get_the_bias() -> None:
    module = C.build(NAME)
    x = C.inputs()
    pad = padding(C.self_lengths, C.T)
    out = module(x, None, AttentionContext(mask=AttentionMask(key_padding=pad))).out
    expected = torch.where(pad[..., None], formula(module, x), module.out_proj.bias)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("j", [0, 4, 8])
def test_changing_token_j_changes_output_j_only(j: int) -> None:
    module = C.build(NAME)
    x = C.inputs()
    changed = x.clone()
    changed[:, j] += torch.randn(
        C.B, C.D, dtype=x.dtype, generator=torch.Generator().manual_seed(3)
    )
    ctx = AttentionContext()
    a, b = module(x, None, ctx).out, module(changed, None, ctx).out
    others = [i for i in range(C.T) if i != j]
    torch.testing.assert_close(a[:, others], b[:, others], atol=0, rtol=0)
    assert (a[:, j] - b[:, j]).abs().min() > 0


def test_weights_are_the_identity_with_padded_rows_zero() -> None:
    module = C.build(NAME)
    pad = padding(C.self_lengths, C.T)
    ctx = AttentionContext(mask=AttentionMask(key_padding=pad), need_weights=True)
    weights = module(C.inputs(), None, ctx).weights
    assert weights is not None and weights.shape == (C.B, C.H, C.T, C.T)
    expected = torch.eye(C.T, dtype=weights.dtype) * pad[:, None, :, None]
    torch.testing.assert_close(weights, expected.expand_as(weights), atol=0, rtol=0)


@pytest.mark.parametrize("h", range(C.H))
def test_head_mask_removes_that_heads_value(h: int) -> None:
    module = C.build(NAME)
    x = C.inputs()
    head_mask = torch.ones(C.H, dtype=x.dtype)
    head_mask[h] = 0
    out = module(x, None, AttentionContext(head_mask=head_mask)).out
    v = x @ module.v_proj.weight.T + module.v_proj.bias  # (B, T, H·dh)
    v = v.view(C.B, C.T, C.H, C.DH) * head_mask[:, None]
    expected = v.reshape(C.B, C.T, -1) @ module.out_proj.weight.T + module.out_proj.bias
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_training_dropout_drops_whole_values_and_still_never_mixes() -> None:
    torch.manual_seed(0)
    dims = AttentionDims(d_model=C.D, n_heads=C.H, head_dim=C.DH, max_len=32, dropout=0.5)
    module = get_variant(NAME).build(dims).double().train()
    x = C.inputs()
    torch.manual_seed(1)
    out = module(x, None, AttentionContext()).out
    v = (x @ module.v_proj.weight.T + module.v_proj.bias).view(C.B, C.T, C.H, C.DH)
    # recover each (b, i, h) factor from the output: it is 0 or 1/(1 − p) = 2
    torch.manual_seed(1)
    keep = module.attn_dropout(torch.ones(C.B, C.H, C.T, 1, dtype=x.dtype))
    expected = (v * keep.permute(0, 2, 1, 3)).reshape(C.B, C.T, -1)
    expected = expected @ module.out_proj.weight.T + module.out_proj.bias
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    assert set(keep.unique().tolist()) == {0.0, 2.0}


def test_cross_attention_is_refused() -> None:
    module = C.build(NAME)
    with pytest.raises(ValueError, match="no cross-attention"):
        module(C.inputs(), C.inputs(C.S, seed=2), AttentionContext())


def test_only_value_and_output_projections() -> None:
    module = C.build(NAME)
    assert {name for name, _ in module.named_parameters()} == {
        "v_proj.weight",
        "v_proj.bias",
        "out_proj.weight",
        "out_proj.bias",
    }


# ---------------------------------------------------------------------------------------
# Whole models: position i never sees token j ≠ i
# ---------------------------------------------------------------------------------------
def model_cfg() -> ModelConfig:
    return ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=32, dropout=0.0)


def ids_and_changed(n: int, j: int) -> tuple[Tensor, Tensor]:
    ids = torch.randint(2, VOCAB, (2, n), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, j] = (changed[:, j] - 2 + 1) % (VOCAB - 2) + 2  # another real token
    return ids, changed


@pytest.mark.parametrize("name", [NAME, "vanilla"])
def test_encoder_hidden_state_i_ignores_token_j(name: str) -> None:
    torch.manual_seed(0)
    model = SequenceClassifier(VOCAB, 3, model_cfg(), get_variant(name)).eval()
    n, j = 12, 5
    ids, changed = ids_and_changed(n, j)
    with torch.no_grad():
        a = model.encoder(ids, None).hidden  # (B, n, d)
        b = model.encoder(changed, None).hidden
    diff = (a - b).abs().amax(dim=(0, 2))  # (n,)
    assert diff[j] > 1e-3
    others = torch.cat([diff[:j], diff[j + 1 :]])
    if name == NAME:
        assert others.max() == 0  # exactly: no path from token j to position i ≠ j
    else:  # the same check would catch a mixing variant
        assert others.min() > 1e-6


@pytest.mark.parametrize("name", [NAME, "vanilla"])
def test_language_model_logits_i_ignore_token_j(name: str) -> None:
    torch.manual_seed(0)
    model = LanguageModel(VOCAB, model_cfg(), get_variant(name)).eval()
    n, j = 12, 3
    ids, changed = ids_and_changed(n, j)
    with torch.no_grad():
        diff = (model(ids).logits - model(changed).logits).abs().amax(dim=(0, 2))  # (n,)
    assert diff[:j].max() == 0  # causal for both
    assert diff[j] > 1e-3
    later = diff[j + 1 :]
    if name == NAME:
        assert later.max() == 0
    else:
        assert later.min() > 1e-6
