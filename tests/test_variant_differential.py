"""Differential attention: the paper's formula, λ_init per layer, λ = 0, head gates.

The reference is written here head by head from the channel layout (head i: query and
key channels [2i·d, 2i·d + d) for Q1/K1 and the next d for Q2/K2, value channels
[2i·d, 2i·d + 2d)), with masks built by ``attn_cases`` and softmax attention from
PyTorch's SDPA where it applies. float64 throughout.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from attn_cases import Cases
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    get_variant,
)
from attnbench.model import LanguageModel, ModelConfig
from attnbench.variants.differential import DifferentialAttention

C = Cases()
B, T, S, D, H, DH = C.B, C.T, C.S, C.D, C.H, C.DH
case_setup = C.case_setup
CASES = ["none", "causal", "causal+padding", "cross+padding"]
MODES = {"half": (H // 2, DH), "all": (H, DH // 2)}  # heads → (differential heads, d)


def build(seed: int = 0, **overrides) -> DifferentialAttention:
    attn = C.build("differential", seed, **overrides)
    assert isinstance(attn, DifferentialAttention)
    return attn


def randomise(attn: DifferentialAttention) -> DifferentialAttention:
    """λ vectors large enough that λ moves well away from λ_init; a non-trivial gain."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2):
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
        attn.norm_weight.copy_(1 + 0.5 * torch.randn(attn.norm_weight.shape, generator=gen))
    return attn


def masked_softmax_ref(logits: Tensor, allowed: Tensor) -> Tensor:
    return torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)


def rms_norm(x: Tensor, gain: Tensor) -> Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * gain


def reference(
    attn: DifferentialAttention,
    x: Tensor,
    source: Tensor | None,
    allowed: Tensor,
    heads: str,
    layer: int = 1,
) -> tuple[Tensor, Tensor]:
    """(weights (B, h, T, S), output): the paper's equations, one head at a time."""
    h, d = MODES[heads]
    kv = x if source is None else source
    q_all, k_all, v_all = attn.q_proj(x), attn.k_proj(kv), attn.v_proj(kv)
    lam = (
        math.exp(float(attn.lambda_q1 @ attn.lambda_k1))
        - math.exp(float(attn.lambda_q2 @ attn.lambda_k2))
        + (0.8 - 0.6 * math.exp(-0.3 * (layer - 1)))
    )
    lam_init = 0.8 - 0.6 * math.exp(-0.3 * (layer - 1))
    mask = allowed[:, 0]  # (B|1, T, S)
    outs, maps = [], []
    for i in range(h):
        q1, q2 = (
            q_all[..., 2 * i * d : 2 * i * d + d],
            q_all[..., 2 * i * d + d : 2 * i * d + 2 * d],
        )
        k1, k2 = (
            k_all[..., 2 * i * d : 2 * i * d + d],
            k_all[..., 2 * i * d + d : 2 * i * d + 2 * d],
        )
        v = v_all[..., 2 * i * d : 2 * i * d + 2 * d]  # (B, S, 2d)
        a1 = masked_softmax_ref(q1 @ k1.transpose(-2, -1) / math.sqrt(d), mask)
        a2 = masked_softmax_ref(q2 @ k2.transpose(-2, -1) / math.sqrt(d), mask)
        diff = a1 - lam * a2
        maps.append(diff)
        outs.append((1 - lam_init) * rms_norm(diff @ v, attn.norm_weight))
    return torch.stack(maps, 1), attn.out_proj(torch.cat(outs, dim=-1))


@pytest.mark.parametrize("heads", ["half", "all"])
@pytest.mark.parametrize("case", CASES)
def test_matches_the_papers_equations(case: str, heads: str) -> None:
    attn = randomise(build(heads=heads))
    assert abs(float(attn.lambda_().detach()) - attn.lambda_init) > 0.05
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        want_w, want_out = reference(attn, x, source, allowed, heads)
    assert got.weights is not None and got.weights.shape == want_w.shape
    torch.testing.assert_close(got.weights, want_w, atol=1e-12, rtol=0)
    torch.testing.assert_close(got.out, want_out, atol=1e-12, rtol=0)
    full = allowed.expand_as(got.weights)
    assert torch.all(got.weights[~full] == 0)  # masked keys: exactly 0 in both maps
    rows = full.any(-1)  # rows of A1 − λ·A2 sum to 1 − λ
    sums = got.weights.sum(-1)[rows]
    torch.testing.assert_close(sums, torch.full_like(sums, 1 - float(attn.lambda_().detach())))


@pytest.mark.parametrize("heads", ["half", "all"])
@pytest.mark.parametrize("case", CASES)
def test_lambda_zero_is_normalised_softmax_attention(case: str, heads: str) -> None:
    """With λ = 0, head i is (1 − λ_init) · RMSNorm(softmax(Q1 K1ᵀ/√d + M) V): softmax
    attention of the first query/key halves over values of width 2d (SDPA here), then
    the per-head RMSNorm and the fixed factor. The returned map is that softmax."""
    attn = randomise(build(heads=heads))
    h, d = MODES[heads]
    with torch.no_grad():  # exp(λ_q1·λ_k1) = 1 − λ_init, exp(λ_q2·λ_k2) = 1: λ = 0
        attn.lambda_q1.zero_()[0] = math.log(1 - attn.lambda_init)
        attn.lambda_k1.zero_()[0] = 1.0
        attn.lambda_q2.zero_()
        attn.lambda_k2.zero_()
    assert abs(float(attn.lambda_().detach())) < 1e-15
    x, source, mask, allowed = case_setup(case)
    kv = x if source is None else source
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        q = attn.q_proj(x).view(B, T, h, 2, d)[:, :, :, 0].transpose(1, 2)  # Q1: (B, h, T, d)
        k = attn.k_proj(kv).view(B, -1, h, 2, d)[:, :, :, 0].transpose(1, 2)  # K1
        v = attn.v_proj(kv).view(B, -1, h, 2 * d).transpose(1, 2)  # (B, h, S, 2d)
        softmax_out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).nan_to_num(0.0)
        heads_out = (1 - attn.lambda_init) * rms_norm(softmax_out, attn.norm_weight)
        want = attn.out_proj(heads_out.transpose(1, 2).reshape(B, T, D))
        a1 = masked_softmax_ref((q @ k.transpose(-2, -1)) / math.sqrt(d), allowed)
    torch.testing.assert_close(got.out, want, atol=1e-12, rtol=0)
    assert got.weights is not None
    torch.testing.assert_close(got.weights, a1, atol=1e-12, rtol=0)


def test_lambda_init_per_layer() -> None:
    """λ_init = 0.8 − 0.6·exp(−0.3·(l − 1)), l = layer_index + 1 (1-based)."""
    expected = [0.2, 0.35550907, 0.47071302, 0.55605820, 0.61928347, 0.66612190]
    for index, want in enumerate(expected):
        dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=8, layer_index=index)
        attn = get_variant("differential").build(dims)
        assert isinstance(attn, DifferentialAttention)
        assert attn.lambda_init == pytest.approx(want, abs=1e-8)
        assert attn.lambda_init == 0.8 - 0.6 * math.exp(-0.3 * index)
    # a model's stack numbers its layers
    cfg = ModelConfig(d_model=D, n_heads=H, n_layers=3, d_ff=32, max_len=8)
    model = LanguageModel(10, cfg, get_variant("differential"))
    got = [layer.self_attn.lambda_init for layer in model.stack.layers]
    assert got == pytest.approx(expected[:3])


@pytest.mark.parametrize("heads", ["half", "all"])
def test_parameters_are_vanillas_plus_lambda_and_gain(heads: str) -> None:
    attn = build(heads=heads)
    vanilla = C.build("vanilla")
    _, d = MODES[heads]
    extra = {n: p for n, p in attn.named_parameters() if n not in dict(vanilla.named_parameters())}
    assert set(extra) == {"lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2", "norm_weight"}
    assert all(p.ndim == 1 for p in extra.values())  # 1-D: weight decay leaves them alone
    assert sum(p.numel() for p in extra.values()) == 4 * d + 2 * d
    for name, p in vanilla.named_parameters():
        assert dict(attn.named_parameters())[name].shape == p.shape


def test_lambda_vectors_are_drawn_small() -> None:
    torch.manual_seed(0)
    dims = AttentionDims(d_model=512, n_heads=4, head_dim=128, max_len=8)
    attn = get_variant("differential").build(dims)
    assert isinstance(attn, DifferentialAttention)
    for p in (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2):
        assert p.shape == (128,) and 0.07 < float(p.detach().std()) < 0.13
    assert torch.equal(attn.norm_weight, torch.ones(256))


def test_head_gates_half_pair_the_slots() -> None:
    """With heads="half", slots 2i and 2i + 1 are differential head i: gating either one
    removes the whole head; with heads="all" slot i is head i."""
    x = C.inputs()
    for heads in ("half", "all"):
        attn = build(heads=heads)
        h, _ = MODES[heads]
        with torch.no_grad():
            per_head, _ = attn.attend(
                attn.q_proj(x).view(B, T, 2 * h, -1).transpose(1, 2),
                attn.k_proj(x).view(B, T, 2 * h, -1).transpose(1, 2),
                attn.v_proj(x).view(B, T, h, -1).transpose(1, 2),
                AttentionContext(),
            )
            without_head_0 = per_head.clone()
            without_head_0[:, 0] = 0
            want = attn.out_proj(without_head_0.transpose(1, 2).reshape(B, T, D))
            first = attn(x, None, AttentionContext(head_mask=torch.tensor([0.0, 1, 1, 1]))).out
            second = attn(x, None, AttentionContext(head_mask=torch.tensor([1.0, 0, 1, 1]))).out
        torch.testing.assert_close(first, want, atol=1e-12, rtol=0)
        if heads == "half":
            assert torch.equal(first, second)
        else:
            assert (first - second).abs().max() > 1e-4


def test_no_causal_leakage_and_gradients() -> None:
    attn = randomise(build()).float().train()
    x = C.inputs().float()
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    with torch.no_grad():
        base = attn(x, None, ctx).out
        for t in (1, 4, T - 1):
            changed = x.clone()
            changed[:, t] += 1.0
            out = attn(changed, None, ctx).out
            torch.testing.assert_close(out[:, :t], base[:, :t], atol=0, rtol=0)
            assert (out[:, t:] - base[:, t:]).abs().max() > 1e-4
    attn(x, None, ctx).out.pow(2).sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_fully_masked_row_is_finite() -> None:
    attn = build().float()
    x, _, mask, _ = case_setup("causal+padding")  # row 2 has no real token
    x = x.float().requires_grad_(True)
    out = attn(x, None, AttentionContext(mask=mask)).out
    torch.testing.assert_close(out[2], attn.out_proj.bias.expand(T, D).detach())
    out.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_options_validation_and_capabilities() -> None:
    spec = get_variant("differential")
    assert spec.resolved_options() == {"heads": "half"}
    assert "Ye et al. 2024" in spec.paper and "Differential Transformer" in spec.paper
    with pytest.raises(ValueError, match="heads must be one of half, all"):
        spec.options({"heads": "third"})
    with pytest.raises(ValueError, match="even n_heads, got 3"):
        spec.build(AttentionDims(d_model=24, n_heads=3, head_dim=8, max_len=8))
    with pytest.raises(ValueError, match="even head_dim, got 5"):
        spec.build(AttentionDims(d_model=20, n_heads=4, head_dim=5, max_len=8), {"heads": "all"})
    assert spec.kv_cache_size(AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=8)) == (
        2 * H * DH  # K and V keep vanilla's widths
    )
    caps = spec.capabilities
    assert caps.causal and caps.cross_attention and caps.padding_mask
    assert not caps.exact_softmax


def test_rope_rotates_sub_heads_of_width_d_and_needs_it_even() -> None:
    """RoPE's frequencies are those of the sub-head width d (d_h / 2 with heads='all'),
    and an odd d is n/a under RoPE (fine under learned positions)."""
    from attnbench.attention import AttentionDims, rope_frequencies

    spec = get_variant("differential")
    dims = AttentionDims(d_model=32, n_heads=4, head_dim=8, max_len=16, position_scheme="rope")
    layer = spec.build(dims, {"heads": "all"})
    assert layer.rope_freqs is not None
    torch.testing.assert_close(layer.rope_freqs, rope_frequencies(4))
    odd = AttentionDims(d_model=24, n_heads=4, head_dim=6, max_len=16, position_scheme="rope")
    reason = spec.unsupported_dims(odd, {"heads": "all"})
    assert reason == "rotates sub-heads of width 3 under RoPE, which needs an even width"
    assert spec.unsupported_dims(odd, {"heads": "half"}) is None  # d = d_h = 6
    learned = AttentionDims(d_model=24, n_heads=4, head_dim=6, max_len=16)
    assert spec.unsupported_dims(learned, {"heads": "all"}) is None
