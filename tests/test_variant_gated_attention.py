"""Gated attention (Qiu et al. 2025): softmax attention, each head's output ⊙ σ(X W_θ + b_θ).

References are written here: the attention with PyTorch's SDPA and the dense masks of
``attn_cases``, the gate from the formula; vanilla attention with the same projections
is what the gate, held open, must give back exactly. float64 throughout.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attn_cases import Cases
from torch import Tensor

from attnbench.attention import AttentionContext, AttentionDims, AttentionMask, get_variant
from attnbench.variants.gated_attention import GatedAttention

C = Cases()
B, T, S, D, H, DH = C.B, C.T, C.S, C.D, C.H, C.DH
heads, case_setup = C.heads, C.case_setup
CASES = ["none", "causal", "causal+padding", "cross+padding"]
GATES = ["elementwise", "headwise"]


def build(seed: int = 0, **overrides) -> GatedAttention:
    attn = C.build("gated-attention", seed, **overrides)
    assert isinstance(attn, GatedAttention)
    return attn


def set_gate(attn: GatedAttention, bias: float, weight: float | None = 0.0) -> GatedAttention:
    """W_θ = ``weight`` (None: keep it), b_θ = ``bias``."""
    with torch.no_grad():
        if weight is not None:
            attn.gate_proj.weight.fill_(weight)
        attn.gate_proj.bias.fill_(bias)
    return attn


def reference(attn: GatedAttention, x: Tensor, source: Tensor | None, allowed: Tensor) -> Tensor:
    """SDPA over the dense mask, times σ(x W_θᵀ + b_θ) per head, then W_O."""
    kv = x if source is None else source
    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(kv)), heads(attn.v_proj(kv))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).nan_to_num(0.0)  # (B,H,T,dh)
    scores = x @ attn.gate_proj.weight.T + attn.gate_proj.bias  # (B, T, H·dh | H)
    gate = torch.sigmoid(scores).view(x.shape[0], x.shape[1], H, -1).transpose(1, 2)
    out = (y * gate).transpose(1, 2).reshape(x.shape[0], x.shape[1], H * DH)
    return attn.out_proj(out)


def vanilla_with_the_same_projections(attn: GatedAttention) -> torch.nn.Module:
    vanilla = C.build("vanilla", seed=7)
    missing, unexpected = vanilla.load_state_dict(attn.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"gate_proj.weight", "gate_proj.bias"}
    return vanilla


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("case", CASES)
def test_matches_the_formula_with_sdpa(case: str, gate: str) -> None:
    attn = set_gate(build(gate=gate), bias=0.3, weight=None)  # a trained-looking gate
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        want = reference(attn, x, source, allowed)
    torch.testing.assert_close(got.out, want, atol=1e-12, rtol=0)
    assert got.weights is not None  # the softmax weights, before the gate
    full = allowed.expand_as(got.weights)
    assert torch.all(got.weights[~full] == 0)
    rows = full.any(-1)
    sums = got.weights.sum(-1)[rows]
    torch.testing.assert_close(sums, torch.ones_like(sums))


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("case", CASES)
def test_an_open_gate_is_vanilla_attention_exactly(case: str, gate: str) -> None:
    """W_θ = 0 and b_θ = 100: σ = 1 in float64, so Y' = Y and the output is vanilla's with
    the same Q, K, V, O — bit for bit — and SDPA's to rounding."""
    attn = set_gate(build(gate=gate), bias=100.0)
    vanilla = vanilla_with_the_same_projections(attn)
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        assert torch.equal(attn.gate(x), torch.ones_like(attn.gate(x)))
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        want = vanilla(x, source, AttentionContext(mask=mask, need_weights=True))
        kv = x if source is None else source
        q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(kv)), heads(attn.v_proj(kv))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).nan_to_num(0.0)
        sdpa = attn.out_proj(y.transpose(1, 2).reshape(B, T, D))
    assert torch.equal(got.out, want.out)
    assert got.weights is not None and want.weights is not None
    assert torch.equal(got.weights, want.weights)
    torch.testing.assert_close(got.out, sdpa, atol=1e-12, rtol=0)


def test_a_half_open_gate_halves_each_head() -> None:
    """W_θ = 0, b_θ = 0 (the default bias): σ = 1/2, out = W_O(Y/2) = (vanilla − b_O)/2 + b_O."""
    attn = set_gate(build(), bias=0.0)
    vanilla = vanilla_with_the_same_projections(attn)
    x, _, mask, _ = case_setup("causal+padding")
    with torch.no_grad():
        got = attn(x, None, AttentionContext(mask=mask)).out
        want = vanilla(x, None, AttentionContext(mask=mask)).out
    b_o = attn.out_proj.bias
    torch.testing.assert_close(got, (want - b_o) / 2 + b_o, atol=1e-12, rtol=0)


@pytest.mark.parametrize("gate", GATES)
def test_the_gate_is_query_dependent(gate: str) -> None:
    """σ(x_i W_θ + b_θ): moving token i's input moves row i of the gate and no other."""
    attn = build(gate=gate)
    x = C.inputs()
    probe = 3
    moved = x.clone()
    moved[:, probe] += 1.0
    with torch.no_grad():
        base, after = attn.gate(x), attn.gate(moved)
    changed = (after - base).abs().amax(dim=(0, 1, 3))  # per query position
    assert changed[probe] > 1e-4
    assert (changed[torch.arange(T) != probe] == 0).all()
    # it reads the queries, not the source: in cross-attention the source leaves it alone
    x_, source, mask, _ = case_setup("cross+padding")
    with torch.no_grad():
        g = attn.gate(x_)
        out = attn(x_, source, AttentionContext(mask=mask)).out
        out_other = attn(x_, source + 1.0, AttentionContext(mask=mask)).out
    assert g.shape[2] == T and (out - out_other).abs().max() > 1e-4  # the source still matters


@pytest.mark.parametrize(("gate", "width"), [("elementwise", DH), ("headwise", 1)])
def test_gate_shapes_and_headwise_scales_each_head_by_one_number(gate: str, width: int) -> None:
    attn = build(gate=gate)
    assert attn.gate_proj.weight.shape == (H * width, D)
    x = C.inputs()
    with torch.no_grad():
        g = attn.gate(x)
    assert g.shape == (B, H, T, width)
    assert torch.all((g > 0) & (g < 1))
    if gate == "headwise":
        # head h's channels share gate h: the same as an elementwise gate with its row repeated
        wide = build(gate="elementwise")
        shared = {k: v for k, v in attn.state_dict().items() if not k.startswith("gate_proj")}
        wide.load_state_dict(shared, strict=False)  # Q, K, V, O
        with torch.no_grad():
            wide.gate_proj.weight.copy_(attn.gate_proj.weight.repeat_interleave(DH, dim=0))
            wide.gate_proj.bias.copy_(attn.gate_proj.bias.repeat_interleave(DH))
            ctx = AttentionContext(mask=AttentionMask(causal=True))
            torch.testing.assert_close(
                attn(x, None, ctx).out, wide(x, None, ctx).out, atol=1e-12, rtol=0
            )


def test_a_closed_head_contributes_nothing() -> None:
    """b_θ = −100 on head 1 (W_θ = 0): its output is gated to 0, as if the head were ablated."""
    attn = build(gate="headwise")
    with torch.no_grad():
        attn.gate_proj.weight.zero_()
        attn.gate_proj.bias.copy_(torch.tensor([100.0, -100.0, 100.0, 100.0]))
    vanilla = vanilla_with_the_same_projections(attn)
    x = C.inputs()
    head_mask = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        got = attn(x, None, AttentionContext()).out
        want = vanilla(x, None, AttentionContext(head_mask=head_mask)).out
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("gate", GATES)
def test_no_causal_leakage(gate: str) -> None:
    """Under a causal mask, changing token t changes no output before t (neither through
    the attention nor through the gate), and a prefix computes what the whole does."""
    attn = build(gate=gate)
    x = C.inputs()
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    with torch.no_grad():
        full = attn(x, None, ctx).out
        for t in (1, 3, T - 1):
            changed = x.clone()
            changed[:, t] += 2.0
            out = attn(changed, None, ctx).out
            torch.testing.assert_close(out[:, :t], full[:, :t], atol=0, rtol=0)
            assert (out[:, t] - full[:, t]).abs().max() > 1e-4
            prefix = attn(x[:, :t], None, ctx).out
            torch.testing.assert_close(prefix, full[:, :t], atol=1e-13, rtol=0)


def test_gradients_reach_the_gate_and_a_fully_masked_row_stays_finite() -> None:
    attn = build().float()
    x, _, mask, _ = case_setup("causal+padding")  # row 2 has no real token
    x = x.float().requires_grad_(True)
    out = attn(x, None, AttentionContext(mask=mask)).out
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in attn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert attn.gate_proj.weight.grad is not None and attn.gate_proj.weight.grad.abs().sum() > 0


def test_options_capabilities_and_initialisation() -> None:
    spec = get_variant("gated-attention")
    assert spec.canonical
    assert spec.resolved_options() == {"gate": "elementwise", "gate_bias_init": 0.0}
    assert "Qiu" in spec.paper and "Gated Attention for Large Language Models" in spec.paper
    with pytest.raises(ValueError, match="gate must be one of elementwise, headwise"):
        spec.options({"gate": "additive"})
    caps = spec.capabilities
    assert caps.causal and caps.cross_attention and caps.padding_mask and caps.bidirectional
    assert caps.position_schemes == {"learned", "sinusoidal", "none", "rope", "alibi"}
    assert not caps.exact_softmax  # its output is not softmax attention's
    assert spec.dense_reason(4) is None
    attn = build(gate_bias_init=2.0)
    assert torch.all(attn.gate_proj.bias == 2.0)
    assert attn.gate_proj.weight.abs().max() > 0  # PyTorch's default init, not zeros
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=8)
    assert spec.kv_cache_size(dims) == 2 * H * DH  # the gate reads the current token only
