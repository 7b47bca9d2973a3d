"""Head ablation (Michel et al. 2019) and structured self-attentive pooling (Lin et al. 2017)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from attn_cases import tiny_profile

from attnbench.ablation import head_ablation
from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    get_variant,
    variant_names,
)
from attnbench.config import validate_profile
from attnbench.model import ModelConfig, SequenceClassifier, StructuredSelfAttentivePooling
from attnbench.runner import prepare_data, run_job

DIMS = AttentionDims(d_model=32, n_heads=4, head_dim=8, max_len=16)


def _ctx(head_mask: torch.Tensor | None) -> AttentionContext:
    return AttentionContext(mask=AttentionMask(), head_mask=head_mask)


@pytest.mark.parametrize("name", variant_names())
def test_every_variant_honours_the_head_mask(name: str) -> None:
    """All heads off → the attention adds nothing; all on → the same as no mask."""
    torch.manual_seed(0)
    attn = get_variant(name).build(DIMS).eval()
    x = torch.randn(2, DIMS.max_len, DIMS.d_model)
    with torch.no_grad():
        plain = attn(x, None, _ctx(None)).out
        ones = attn(x, None, _ctx(torch.ones(DIMS.n_heads))).out
        zeros = attn(x, None, _ctx(torch.zeros(DIMS.n_heads))).out
        one_off = attn(x, None, _ctx(torch.tensor([1.0, 0.0, 1.0, 1.0]))).out
    torch.testing.assert_close(ones, plain, rtol=1e-5, atol=1e-6)
    assert torch.equal(zeros, torch.zeros_like(zeros))
    assert not torch.allclose(one_off, plain)


def test_disabling_all_heads_of_a_layer_leaves_only_the_residual_path() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=16, dropout=0.0)
    model = SequenceClassifier(10, 3, cfg, get_variant("vanilla")).eval()
    ids = torch.randint(2, 10, (2, 12))
    layer = model.encoder.stack.layers[0]
    x = model.encoder.embed(ids)
    ctx = AttentionContext(mask=AttentionMask(), head_mask=torch.zeros(4))
    with torch.no_grad():
        out, _ = layer(x, ctx)
        after_attention = x  # the attention sublayer contributes exactly nothing
        expected = after_attention + layer.ff(layer.norm3(after_attention))
    torch.testing.assert_close(out, expected)


def test_head_ablation_tool_reproduces_the_record_and_measures_every_head(tmp_path: Path) -> None:
    profile = validate_profile(tiny_profile(tmp_path, n_layers=2, n_test=32))
    data = tmp_path / "data"
    prepare_data(profile, "listops", data)
    record_file = tmp_path / "runs" / "seed0.json"
    record = run_job(
        profile, "listops", "vanilla", 0, data_dir=data, record_file=record_file, progress=False
    )
    result = head_ablation(record_file, data, progress=False)
    assert result["reproduces_record"] and result["base"] == record["metrics"]["test"]["accuracy"]
    assert result["all_ones_mask"] == result["base"]
    assert len(result["delta_per_head"]) == 2 and all(len(r) == 2 for r in result["delta_per_head"])
    assert len(result["delta_per_layer"]) == 2
    # The CLI writes the same result.
    out = tmp_path / "ablation.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "attnbench.cli",
            "ablate-heads",
            "--record",
            str(record_file),
            "--data",
            str(data),
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["delta_per_head"] == result["delta_per_head"]


def test_attentive_pooling_penalty_is_zero_for_orthogonal_one_hot_hops() -> None:
    hops = torch.zeros(1, 3, 5)
    hops[0, 0, 1] = hops[0, 1, 3] = hops[0, 2, 4] = 1.0  # three distinct one-hot rows
    assert StructuredSelfAttentivePooling.penalty(hops) == 0
    overlapping = hops.clone()
    overlapping[0, 2] = hops[0, 1]
    assert StructuredSelfAttentivePooling.penalty(overlapping) == pytest.approx(2.0)


def test_attentive_pooling_output_is_r_by_d_and_ignores_padding() -> None:
    torch.manual_seed(0)
    pool = StructuredSelfAttentivePooling(d_model=8, hidden=6, hops=3)
    hidden = torch.randn(2, 7, 8)
    padding = torch.ones(2, 7, dtype=torch.bool)
    padding[1, 4:] = False
    pooled, penalty = pool(hidden, padding)
    assert pooled.shape == (2, 3 * 8)
    a = pool.hop_weights(hidden, padding)
    torch.testing.assert_close(pooled.view(2, 3, 8), a @ hidden)
    assert torch.all(a[1, :, 4:] == 0)
    changed = hidden.clone()
    changed[1, 4:] = 100.0
    torch.testing.assert_close(pool(changed, padding)[0][1], pooled[1])
    assert penalty.ndim == 0 and penalty >= 0


def test_attentive_pooling_is_selectable_and_its_penalty_is_an_aux_loss() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        d_model=16,
        n_heads=2,
        n_layers=1,
        d_ff=32,
        max_len=12,
        pooling="attentive",
        attentive_hops=2,
        attentive_penalty=0.5,
    )
    model = SequenceClassifier(10, 3, cfg, get_variant("vanilla")).eval()
    ids = torch.randint(2, 10, (4, 9))
    out = model(ids)
    assert out.logits.shape == (4, 3)
    expected = 0.5 * model.pooler.attentive.penalty(
        model.pooler.attentive.hop_weights(model.encoder(ids, None).hidden, None)
    )
    torch.testing.assert_close(out.aux_loss, expected)
