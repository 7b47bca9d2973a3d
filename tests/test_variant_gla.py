"""Gated linear attention (Yang et al. 2024) against the recurrence that defines it.

The oracle is written here independently of the variant: one step at a time,
S_t = Diag(α_t) S_{t−1} + k_tᵀ v_t and o_t = q_t S_t, with explicit outer products. The
chunkwise form (both of its within-chunk computations: the factored product and the
log-space pairwise one), the layer built on it (projections, gate, per-head LayerNorm,
output gate, W_O), padding, the state across segments and the head mask are checked
against it in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import attnbench.variants.gla as gla_module
from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    Requirements,
    check_support,
    get_variant,
)
from attnbench.variants.gla import GatedLinearAttention, gla_chunkwise, gla_recurrent

B, H, T, DK, DV = 3, 2, 11, 4, 5
D_MODEL, HEADS = 16, 4  # layer tests: head_dim 4, d_k = 2
ATOL = 1e-10  # float64
CHUNKS = [1, 3, 4, T, T + 5]  # 3 and 4 do not divide T = 11
PATHS = ["factored", "log-space"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through one within-chunk computation: the factored product (bound ∞) or
    the log-space pairwise form (bound −1: never factored)."""
    bound = math.inf if request.param == "factored" else -1.0
    monkeypatch.setattr(gla_module, "FACTORED_MAX_LOG_DECAY", bound)
    return request.param


def naive_gla(
    q: Tensor, k: Tensor, v: Tensor, log_alpha: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """S_t = Diag(α_t) S_{t−1} + k_tᵀ v_t, o_t = q_t S_t, one position at a time."""
    b, h, t, dk = q.shape
    s = torch.zeros(b, h, dk, v.shape[-1], dtype=q.dtype) if state is None else state.clone()
    outs = []
    for i in range(t):
        alpha = log_alpha[:, :, i].exp()  # (B, H, d_k)
        s = alpha[..., None] * s + torch.einsum("bhd,bhe->bhde", k[:, :, i], v[:, :, i])
        outs.append(torch.einsum("bhd,bhde->bhe", q[:, :, i], s))
    return torch.stack(outs, dim=2), s


def inputs(
    t: int = T, seed: int = 0, gate_scale: float = 3.0
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """q, k, v, log α (from logits ~ gate_scale · N(0, 1), τ = 4) and an initial state."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, t, DK, generator=gen, dtype=torch.float64)
    k = torch.randn(B, H, t, DK, generator=gen, dtype=torch.float64)
    v = torch.randn(B, H, t, DV, generator=gen, dtype=torch.float64)
    logits = gate_scale * torch.randn(B, H, t, DK, generator=gen, dtype=torch.float64)
    state = torch.randn(B, H, DK, DV, generator=gen, dtype=torch.float64)
    return q, k, v, F.logsigmoid(logits) / 4, state


def build(d_model: int = D_MODEL, seed: int = 0, **options) -> GatedLinearAttention:
    torch.manual_seed(seed)
    dims = AttentionDims(
        d_model=d_model, n_heads=HEADS, head_dim=d_model // HEADS, max_len=64, is_causal=True
    )
    attn = get_variant("gla").build(dims, options or None)
    assert isinstance(attn, GatedLinearAttention)
    return attn.double().eval()


def x_input(b: int = B, t: int = T, seed: int = 1, scale: float = 1.0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, t, D_MODEL, generator=gen, dtype=torch.float64)


def run(attn: GatedLinearAttention, x: Tensor, **ctx) -> tuple[Tensor, Tensor]:
    mask = AttentionMask(causal=True, key_padding=ctx.pop("key_padding", None))
    with torch.no_grad():
        out = attn(x, None, AttentionContext(mask=mask, **ctx))
    return out.out, out.state


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------------------------------
# The chunkwise form against the recurrence
# ---------------------------------------------------------------------------------------
def test_recurrent_form_equals_the_naive_loop() -> None:
    q, k, v, log_alpha, state = inputs()
    for s0 in (None, state):
        got, got_state = gla_recurrent(q, k, v, log_alpha, s0)
        want, want_state = naive_gla(q, k, v, log_alpha, s0)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        torch.testing.assert_close(got_state, want_state, atol=ATOL, rtol=0)


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_chunkwise_equals_recurrence(chunk_size: int, path: str) -> None:
    q, k, v, log_alpha, state = inputs()
    for s0 in (None, state):
        got, got_state = gla_chunkwise(q, k, v, log_alpha, chunk_size, s0)
        want, want_state = naive_gla(q, k, v, log_alpha, s0)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        torch.testing.assert_close(got_state, want_state, atol=ATOL, rtol=0)
    # guard: the gates matter (α ≡ 1 gives another output)
    ungated, _ = naive_gla(q, k, v, torch.zeros_like(log_alpha))
    assert (got - ungated).abs().max() > 1e-2


@pytest.mark.parametrize("chunk_size", [3, T])
def test_chunkwise_gradients_equal_the_recurrences(chunk_size: int, path: str) -> None:
    leaves = [t.clone().requires_grad_(True) for t in inputs()]
    weights = torch.randn(B, H, T, DV, dtype=torch.float64)
    grads = []
    for form in ("chunkwise", "recurrent"):
        if form == "chunkwise":
            out, s = gla_chunkwise(*leaves[:4], chunk_size, leaves[4])
        else:
            out, s = naive_gla(*leaves[:4], leaves[4])
        grads.append(torch.autograd.grad((out * weights).sum() + s.pow(2).sum(), leaves))
    for got, want in zip(*grads, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=1e-9, rtol=0)


def test_strong_decay_takes_the_log_space_path_and_stays_exact() -> None:
    """With chunks that decay by far more than e^30 the factored product would overflow in
    float32 (inf · 0 = NaN); the chunkwise form switches to log space and stays exact."""
    q, k, v, _, state = inputs()
    log_alpha = torch.full((B, H, T, DK), -30.0, dtype=torch.float64)  # e^-30 per step
    log_alpha[:, :, ::2] = -0.01  # and some slow steps in between
    want, want_state = naive_gla(q, k, v, log_alpha, state)
    got, got_state = gla_chunkwise(*(t.float() for t in (q, k, v, log_alpha)), 8, state.float())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_state.double(), want_state, atol=1e-4, rtol=1e-4)
    # guard: forced to factor, the same float32 computation breaks down
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gla_module, "FACTORED_MAX_LOG_DECAY", math.inf)
        broken, _ = gla_chunkwise(*(t.float() for t in (q, k, v, log_alpha)), 8, state.float())
    assert not torch.isfinite(broken).all()


def test_causal_leakage_inside_and_across_chunks() -> None:
    q, k, v, log_alpha, state = inputs()
    base, _ = gla_chunkwise(q, k, v, log_alpha, 4, state)
    for t in (0, 3, 4, 7, T - 1):  # inside chunks and on chunk boundaries
        q2, k2, v2, a2 = q.clone(), k.clone(), v.clone(), log_alpha.clone()
        k2[:, :, t:] += 1.0
        v2[:, :, t:] -= 2.0
        a2[:, :, t:] -= 0.5
        q2[:, :, t + 1 :] *= 3.0
        got, _ = gla_chunkwise(q2, k2, v2, a2, 4, state)
        torch.testing.assert_close(got[:, :, :t], base[:, :, :t], atol=1e-12, rtol=0)
        assert (got[:, :, t:] - base[:, :, t:]).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------
def layer_reference(attn: GatedLinearAttention, x: Tensor, state: Tensor | None = None) -> Tensor:
    """The layer from its parameters, with the naive recurrence in the middle."""
    b, t, _ = x.shape
    dk, dv = attn.d_k, attn.dims.head_dim

    def heads(y: Tensor) -> Tensor:
        return y.view(b, t, HEADS, -1).transpose(1, 2)

    q = heads(x @ attn.q_proj.weight.T + attn.q_proj.bias) / math.sqrt(dk)
    k = heads(x @ attn.k_proj.weight.T + attn.k_proj.bias)
    v = heads(x @ attn.v_proj.weight.T + attn.v_proj.bias)
    logits = heads(x @ attn.gate_down.weight.T @ attn.gate_up.weight.T + attn.gate_up.bias)
    alpha = torch.sigmoid(logits) ** (1 / 16)  # σ(x W_α1 W_α2 + b_α)^{1/τ}
    o, _ = naive_gla(q, k, v, alpha.log(), state)  # (B, H, T, d_v)
    if attn.norm is not None:
        mean = o.mean(-1, keepdim=True)
        var = o.var(-1, unbiased=False, keepdim=True)
        o = (o - mean) / torch.sqrt(var + attn.norm.eps) * attn.norm.weight + attn.norm.bias
    if attn.r_proj is not None:
        r = heads(x @ attn.r_proj.weight.T + attn.r_proj.bias)
        o = o * r * torch.sigmoid(r)  # Swish
    merged = o.transpose(1, 2).reshape(b, t, HEADS * dv)
    return merged @ attn.out_proj.weight.T + attn.out_proj.bias


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_layer_equals_its_definition(chunk_size: int) -> None:
    attn = build(chunk_size=chunk_size)
    with torch.no_grad():  # biases away from 0, so that every term is exercised
        for p in (attn.q_proj.bias, attn.k_proj.bias, attn.gate_up.bias, attn.norm.bias):
            p.normal_()
        attn.norm.weight.normal_()
    x = x_input()
    out, _ = run(attn, x)
    torch.testing.assert_close(out, layer_reference(attn, x), atol=ATOL, rtol=0)


def test_default_options_follow_the_paper() -> None:
    attn = build(d_model=32)
    assert attn.d_k == 4 and attn.dims.head_dim == 8  # d_k = d/2, d_v = d
    assert attn.options.gate_temperature == 16.0 and attn.options.gate_rank == 16
    assert attn.gate_down.weight.shape == (16, 32) and attn.gate_down.bias is None
    assert attn.gate_up.weight.shape == (HEADS * 4, 16)
    assert attn.r_proj is not None and attn.norm is not None


def test_gate_lies_strictly_between_zero_and_one() -> None:
    attn = build()
    x = x_input(scale=3.0)
    with torch.no_grad():
        alpha = attn.log_gate(x).exp()  # (B, H, T, d_k)
        logits = attn.gate_up(attn.gate_down(x)).view(B, T, HEADS, -1).transpose(1, 2)
    assert alpha.shape == (B, HEADS, T, attn.d_k)
    assert (alpha > 0).all() and (alpha < 1).all()
    torch.testing.assert_close(alpha, torch.sigmoid(logits) ** (1 / 16), atol=1e-14, rtol=0)
    # τ = 16 keeps forgetting slow: a logit of 0 gives α = 0.5^(1/16) ≈ 0.958, not 0.5
    with torch.no_grad():
        attn.gate_up.weight.zero_()
        attn.gate_up.bias.zero_()
        torch.testing.assert_close(
            attn.log_gate(x).exp(), torch.full_like(alpha, 0.5 ** (1 / 16)), atol=1e-15, rtol=0
        )


def test_with_alpha_one_and_no_gate_or_norm_it_is_linear_attention() -> None:
    """α ≡ 1, no output gate, no normalisation: o_t = Σ_{s≤t} (q_t·k_s) v_s, with the
    identity feature map and q scaled by 1/√d_k, then W_O."""
    attn = build(output_gate=False, normalize=False, chunk_size=4)
    with torch.no_grad():
        attn.gate_up.weight.zero_()
        attn.gate_up.bias.fill_(math.inf)  # σ(∞) = 1: log α = 0 exactly
    x = x_input()
    with torch.no_grad():
        assert torch.equal(attn.log_gate(x), torch.zeros(B, HEADS, T, attn.d_k))
    out, _ = run(attn, x)
    dk, dv = attn.d_k, attn.dims.head_dim
    with torch.no_grad():
        q = attn.q_proj(x).view(B, T, HEADS, dk) / math.sqrt(dk)
        k = attn.k_proj(x).view(B, T, HEADS, dk)
        v = attn.v_proj(x).view(B, T, HEADS, dv)
        o = torch.zeros(B, T, HEADS, dv, dtype=torch.float64)
        for b in range(B):
            for h in range(HEADS):
                for t in range(T):
                    for s in range(t + 1):
                        o[b, t, h] += torch.dot(q[b, t, h], k[b, s, h]) * v[b, s, h]
        want = attn.out_proj(o.reshape(B, T, HEADS * dv))
    torch.testing.assert_close(out, want, atol=ATOL, rtol=0)


def test_no_causal_leakage_through_the_layer() -> None:
    attn = build(chunk_size=4)
    x = x_input()
    base, _ = run(attn, x)
    for t in (0, 3, 4, 9):
        changed = x.clone()
        changed[:, t:] += torch.randn(B, T - t, D_MODEL, dtype=torch.float64)
        out, _ = run(attn, changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-12, rtol=0)
        assert (out[:, t:] - base[:, t:]).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------
# Padding, segments, head mask
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [3, 4, 64])
def test_padded_rows_equal_the_sequences_alone(chunk_size: int) -> None:
    attn = build(chunk_size=chunk_size)
    lengths = [T, 6, 1]
    x = x_input()
    out, state = run(attn, x, key_padding=padding(lengths, T))
    for i, n in enumerate(lengths):
        alone, alone_state = run(attn, x[i : i + 1, :n])
        torch.testing.assert_close(out[i, :n], alone[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(state[i], alone_state[0], atol=ATOL, rtol=0)


def test_a_padded_position_inside_a_row_is_skipped() -> None:
    """Padding anywhere: the state is unchanged there (k = 0, α = 1), so the real
    positions equal the row with the padded position removed."""
    attn = build(chunk_size=4)
    x = x_input()
    pad = torch.ones(B, T, dtype=torch.bool)
    pad[:, 5] = False
    out, state = run(attn, x, key_padding=pad)
    keep = [i for i in range(T) if i != 5]
    without, without_state = run(attn, x[:, keep])
    torch.testing.assert_close(out[:, keep], without, atol=ATOL, rtol=0)
    torch.testing.assert_close(state, without_state, atol=ATOL, rtol=0)
    # a fully padded row: zero state, finite output
    out, state = run(attn, x, key_padding=torch.zeros(B, T, dtype=torch.bool))
    assert torch.isfinite(out).all() and torch.equal(state, torch.zeros_like(state))


@pytest.mark.parametrize(("chunk_size", "split"), [(4, 6), (3, 5), (64, 1), (1, 7)])
def test_state_across_segments_equals_one_pass(chunk_size: int, split: int) -> None:
    attn = build(chunk_size=chunk_size)
    x = x_input()
    whole, whole_state = run(attn, x)
    first, state = run(attn, x[:, :split])
    second, final = run(attn, x[:, split:], state=state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=ATOL, rtol=0)
    torch.testing.assert_close(final, whole_state, atol=ATOL, rtol=0)
    # guard: without the state the second segment differs
    fresh, _ = run(attn, x[:, split:])
    assert (fresh - second).abs().max() > 1e-3


def test_returned_state_is_detached_and_sized_as_declared() -> None:
    attn = build()
    x = x_input().requires_grad_(True)
    out = attn(x, None, AttentionContext(mask=AttentionMask(causal=True)))
    assert out.state is not None and not out.state.requires_grad
    assert out.state.shape == (B, HEADS, attn.d_k, attn.dims.head_dim)
    spec = get_variant("gla")
    assert spec.state_size(attn.dims) == out.state.numel() // B == HEADS * 2 * 4
    assert spec.kv_cache_size(attn.dims) is None
    assert spec.memory_len() == 0


@pytest.mark.parametrize("h", range(HEADS))
def test_head_mask_removes_exactly_that_heads_contribution(h: int) -> None:
    attn = build()
    x = x_input()
    mask = torch.ones(HEADS, dtype=torch.float64)
    mask[h] = 0.0
    out, _ = run(attn, x, head_mask=mask)
    dv = attn.dims.head_dim
    with torch.no_grad():
        attn.out_proj.weight[:, h * dv : (h + 1) * dv] = 0.0
    want, _ = run(attn, x)
    torch.testing.assert_close(out, want, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------
# Declarations, precision, options
# ---------------------------------------------------------------------------------------
def test_capabilities_and_support() -> None:
    caps = get_variant("gla").capabilities
    assert caps.causal and caps.recurrent and caps.padding_mask and caps.variable_length
    assert not caps.cross_attention
    assert check_support(caps, Requirements(causal=True, padding_mask=True)) is None
    reason = check_support(caps, Requirements(causal=True, cross_attention=True))
    assert reason is not None and "cross-attention" in reason
    assert not caps.bidirectional  # an encoder task (non-causal, or with an encoder) is n/a
    for req in (Requirements(), Requirements(causal=True, bidirectional=True)):
        reason = check_support(caps, req)
        assert reason is not None and "left to right" in reason
    assert GatedLinearAttention.decay_exempt == ()  # the gate matrices are ordinary weights


def test_cross_attention_is_refused() -> None:
    attn = build()
    x = x_input()
    with pytest.raises(ValueError, match="cross-attention"):
        attn(x, x, AttentionContext())


def test_a_non_causal_call_reads_left_to_right() -> None:
    """GLA is causal by construction: without the causal flag it computes the same."""
    attn = build()
    x = x_input()
    causal, _ = run(attn, x)
    with torch.no_grad():
        plain = attn(x, None, AttentionContext(mask=AttentionMask(causal=False))).out
    assert torch.equal(plain, causal)


def test_module_under_bf16_autocast_is_close_to_float32() -> None:
    torch.manual_seed(0)
    dims = AttentionDims(d_model=16, n_heads=4, head_dim=4, max_len=64, is_causal=True)
    attn = get_variant("gla").build(dims, {"chunk_size": 8}).eval()
    x = torch.randn(2, 40, 16)
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    with torch.no_grad():
        full = attn(x, None, ctx)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = attn(x, None, ctx)
    assert low.state.dtype == torch.float32  # the state is kept in float32
    assert torch.isfinite(low.out.float()).all()
    torch.testing.assert_close(low.out.float(), full.out, atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    "bad",
    [{"chunk_size": 0}, {"expand_k": 0.0}, {"gate_rank": 0}, {"gate_temperature": -1.0}],
)
def test_bad_options_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        get_variant("gla").options(bad)
