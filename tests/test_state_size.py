"""Recurrent state sizes declared by variants match the states they really carry."""

from __future__ import annotations

import torch

from attnbench.attention import (
    VARIANTS,
    AttentionContext,
    AttentionDims,
    AttentionMask,
    get_variant,
)
from attnbench.config import job_config, validate_profile
from attnbench.job import STATE_ELEMENT_BYTES, build_job

DIMS = AttentionDims(d_model=16, n_heads=2, head_dim=8, max_len=12, is_causal=True)


def test_transformer_xl_state_is_the_memory_it_returns() -> None:
    spec = get_variant("transformer-xl")
    attn = spec.build(DIMS, {"mem_len": 5}).eval()
    x = torch.randn(3, 12, 16)
    ctx = AttentionContext(mask=AttentionMask(causal=True), positions=torch.arange(12))
    out = attn(x, None, ctx)
    assert out.state is not None
    per_sequence = out.state.numel() // x.shape[0]
    assert spec.state_size(DIMS, {"mem_len": 5}) == per_sequence == 5 * 16


def test_linear_attention_state_counts_s_and_z() -> None:
    # S = Σ φ(k)vᵀ: (H, d_k, d_v); z = Σ φ(k): (H, d_k)
    assert get_variant("linear").state_size(DIMS) == 2 * (8 * 8 + 8)
    assert get_variant("performer").state_size(DIMS, {"n_features": 32}) == 2 * (32 * 8 + 32)


def test_softmax_variants_declare_no_state() -> None:
    for name in ("vanilla", "fused", "local", "bigbird", "topk-8"):
        assert VARIANTS.get(name).state_size(DIMS) is None


def test_job_reports_bytes_per_layer(tmp_path) -> None:
    profile = validate_profile(
        {
            "profile": "t",
            "output_dir": str(tmp_path),
            "model": {"d_model": 16, "n_heads": 2, "n_layers": 3, "d_ff": 32},
            "tasks": {"listops": {"data": {"n_train": 8, "n_val": 4, "n_test": 4}}},
        }
    )
    job = build_job(job_config(profile, "listops", "linear"), None)
    assert job.state_bytes_per_layer() == 2 * (8 * 8 + 8) * STATE_ELEMENT_BYTES
    vanilla = build_job(job_config(profile, "listops", "vanilla"), None)
    assert vanilla.state_bytes_per_layer() is None
    # keys and values of 2 heads × 8 dims, float32, in 3 layers; linear attention: none
    assert vanilla.kv_cache_bytes_per_token() == 2 * 2 * 8 * STATE_ELEMENT_BYTES * 3
    assert job.kv_cache_bytes_per_token() is None
