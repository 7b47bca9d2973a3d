"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025): the gated chunkwise form and the layer.

The oracle is :func:`recurrent_delta_rule` with log-decays (M ← α_t M before the delta
step), checked once against a loop written here in the paper's orientation,
S_t = α_t S_{t−1}(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ. Float64 throughout; decays include
strong ones (α down to e⁻⁸), where a form dividing by cumulative products would overflow.
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
from attnbench.model import ModelConfig, SequenceClassifier
from attnbench.train import decay_exempt_parameters
from attnbench.variants.deltanet import DeltaNet, chunk_delta_rule, recurrent_delta_rule
from attnbench.variants.gated_deltanet import GatedDeltaNet

B, H, T, DK, DV = 3, 2, 11, 4, 5  # T is not a multiple of 4
D, HEADS = 16, 4
ATOL = 1e-10
CHUNKS = [1, 3, 4, T, T + 5]
NAME = "gated-deltanet"


def rule_inputs(t: int = T, seed: int = 0) -> tuple[Tensor, ...]:
    """Unit q, k; values; β ∈ (0, 1); log α ∈ (−8, 0); an initial state M_0 = S_0ᵀ."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q = F.normalize(randn(B, H, t, DK), dim=-1)
    k = F.normalize(randn(B, H, t, DK), dim=-1)
    v = randn(B, H, t, DV)
    beta = torch.rand(B, H, t, generator=gen, dtype=torch.float64)
    log_alpha = -8.0 * torch.rand(B, H, t, generator=gen, dtype=torch.float64) ** 3
    m0 = randn(B, H, DK, DV)
    return q, k, v, beta, log_alpha, m0


def paper_loop(q, k, v, beta, log_alpha, s0) -> Tensor:
    """S_t = α_t S_{t−1} (I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ, o_t = S_t q_t; S (d_v × d_k)."""
    outs = torch.zeros(*v.shape, dtype=v.dtype)
    eye = torch.eye(q.shape[-1], dtype=q.dtype)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            s = s0[b, h].clone()
            for t in range(q.shape[2]):
                kt, bt = k[b, h, t], beta[b, h, t]
                alpha = math.exp(log_alpha[b, h, t])
                s = alpha * s @ (eye - bt * torch.outer(kt, kt)) + bt * torch.outer(v[b, h, t], kt)
                outs[b, h, t] = s @ q[b, h, t]
    return outs


def build(seed: int = 0, name: str = NAME, **options) -> DeltaNet:
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=D, n_heads=HEADS, head_dim=D // HEADS, max_len=64)
    attn = get_variant(name).build(dims, options or None)
    assert isinstance(attn, DeltaNet)
    return attn.double().eval()


def x_inputs(t: int = T, seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, t, D, generator=gen, dtype=torch.float64)


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def call(attn: DeltaNet, x: Tensor, **fields):
    mask = AttentionMask(causal=True, key_padding=fields.pop("key_padding", None))
    with torch.no_grad():
        out = attn(x, None, AttentionContext(mask=mask, **fields))
    return out.out, out.state


# ---------------------------------------------------------------------------------------
# The gated recurrence and its chunkwise form
# ---------------------------------------------------------------------------------------
def test_oracle_is_the_papers_recurrence() -> None:
    q, k, v, beta, log_alpha, m0 = rule_inputs()
    got, _ = recurrent_delta_rule(q, k, v, beta, log_alpha, m0)
    want = paper_loop(q, k, v, beta, log_alpha, m0.transpose(-2, -1))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("with_state", [False, True])
def test_chunkwise_equals_recurrent(chunk_size: int, with_state: bool) -> None:
    q, k, v, beta, log_alpha, m0 = rule_inputs()
    m0 = m0 if with_state else None
    want, want_state = recurrent_delta_rule(q, k, v, beta, log_alpha, m0)
    got, state = chunk_delta_rule(q, k, v, beta, log_alpha, m0, chunk_size=chunk_size)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(state, want_state, atol=ATOL, rtol=0)
    # guard: the decay matters
    ungated, _ = recurrent_delta_rule(q, k, v, beta, None, m0)
    assert (got - ungated).abs().max() > 1e-3


@pytest.mark.parametrize("chunk_size", [3, T])
def test_chunkwise_gradients_equal_recurrent(chunk_size: int) -> None:
    inputs = [t.requires_grad_() for t in rule_inputs()]

    def loss(out: Tensor, state: Tensor) -> Tensor:
        return (out * out.cos()).sum() + (state * state).sum()

    want = torch.autograd.grad(loss(*recurrent_delta_rule(*inputs)), inputs)
    got = torch.autograd.grad(loss(*chunk_delta_rule(*inputs, chunk_size=chunk_size)), inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=ATOL, rtol=0)


def test_alpha_one_is_deltanet() -> None:
    q, k, v, beta, log_alpha, m0 = rule_inputs()
    gated, gated_state = chunk_delta_rule(q, k, v, beta, torch.zeros_like(log_alpha), m0, 4)
    plain, plain_state = chunk_delta_rule(q, k, v, beta, None, m0, 4)
    torch.testing.assert_close(gated, plain, atol=1e-13, rtol=0)
    torch.testing.assert_close(gated_state, plain_state, atol=1e-13, rtol=0)


def test_very_strong_decay_stays_finite() -> None:
    """α = e⁻²⁰⁰ everywhere: the state is forgotten at each step, nothing overflows."""
    q, k, v, beta, log_alpha, m0 = rule_inputs()
    strong = torch.full_like(log_alpha, -200.0)
    inputs = [t.requires_grad_() for t in (q, k, v, beta, strong, m0)]
    out, state = chunk_delta_rule(*inputs, chunk_size=T)
    want, _ = recurrent_delta_rule(*(t.detach() for t in inputs))
    torch.testing.assert_close(out, want, atol=ATOL, rtol=0)
    (out.sum() + state.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in inputs)


# ---------------------------------------------------------------------------------------
# The decay's parametrisation
# ---------------------------------------------------------------------------------------
def test_decay_is_minus_a_softplus_and_in_range() -> None:
    attn = build()
    assert isinstance(attn, GatedDeltaNet)
    x = x_inputs()
    logits = attn.a_proj(x) + attn.dt_bias
    want = -attn.A_log.exp() * F.softplus(logits)
    got = attn.log_decay([logits])
    torch.testing.assert_close(got, want, atol=1e-15, rtol=0)
    assert got.shape == (B, T, HEADS) and (got < 0).all()  # α ∈ (0, 1)
    # initialisation: A ∈ (0, 16), softplus(b_dt) ∈ [1e-3, 1e-1]
    assert (attn.A_log.exp() > 0).all() and (attn.A_log.exp() < 16).all()
    dt = F.softplus(attn.dt_bias)
    assert (dt >= 1e-3 - 1e-12).all() and (dt <= 1e-1 + 1e-12).all()


def test_structural_parameters_are_exempt_from_weight_decay() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=12)
    model = SequenceClassifier(10, 2, cfg, get_variant(NAME))
    exempt = decay_exempt_parameters(model)
    found = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if id(p) in exempt}
    assert found == {"A_log", "dt_bias"}


# ---------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_layer_chunkwise_equals_recurrent_mode(chunk_size: int) -> None:
    x = x_inputs()
    pad = padding([T, 6, 0], T)
    with torch.no_grad():  # decays from e⁻⁵ to 1 (the initialisation's are near 1)
        strong = build(mode="recurrent")
        strong.A_log.copy_(torch.log(torch.tensor([0.5, 2.0, 8.0, 40.0])))
    chunked = build(chunk_size=chunk_size)
    chunked.load_state_dict(strong.state_dict())
    want, want_state = call(strong, x, key_padding=pad)
    got, state = call(chunked, x, key_padding=pad)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(state.memory, want_state.memory, atol=ATOL, rtol=0)


def test_layer_with_alpha_one_equals_deltanet_on_the_same_weights() -> None:
    plain = build(name="deltanet", output_gate=True, chunk_size=4)
    gated = build(seed=5, chunk_size=4)  # other weights, then DeltaNet's
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert set(missing) == {"a_proj.weight", "A_log", "dt_bias"} and not unexpected
    with torch.no_grad():
        gated.A_log.fill_(-torch.inf)  # A = 0: log α = −0 · softplus(·) = 0
    x = x_inputs()
    pad = padding([T, 6, 2], T)
    want, want_state = call(plain, x, key_padding=pad)
    got, state = call(gated, x, key_padding=pad)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(state.memory, want_state.memory, atol=1e-12, rtol=0)
    # guard: with its decay, the gated layer differs
    with torch.no_grad():
        gated.A_log.fill_(0.0)
    assert (call(gated, x, key_padding=pad)[0] - want).abs().max() > 1e-3


def test_no_causal_leakage() -> None:
    attn = build(chunk_size=4)
    x = x_inputs()
    base, _ = call(attn, x)
    for t in (0, 3, 4, 7, T - 1):
        changed = x.clone()
        changed[:, t:] += 1.0
        got, _ = call(attn, changed)
        torch.testing.assert_close(got[:, :t], base[:, :t], atol=1e-13, rtol=0)
        assert (got[:, t:] - base[:, t:]).abs().max() > 1e-3


@pytest.mark.parametrize("where", ["end", "start"])
def test_padded_rows_equal_the_sequences_alone(where: str) -> None:
    """Padding has α = 1 and β = 0 (its decay logits would otherwise shrink the state)."""
    attn = build(chunk_size=4)
    x = x_inputs()
    lengths = [T, 6, 3]
    pad = padding(lengths, T)
    if where == "start":
        pad = pad.flip(-1)
    got, state = call(attn, x, key_padding=pad)
    for i in range(B):
        real = pad[i]
        alone, alone_state = call(attn, x[i : i + 1, real])
        torch.testing.assert_close(got[i : i + 1, real], alone, atol=ATOL, rtol=0)
        torch.testing.assert_close(state.memory[i], alone_state.memory[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("chunk_size", [4, 16])
def test_state_across_segments_equals_one_pass(chunk_size: int) -> None:
    attn = build(chunk_size=chunk_size)
    x = x_inputs(t=2 * T)
    whole, whole_state = call(attn, x)
    first, state = call(attn, x[:, :T])
    second, end_state = call(attn, x[:, T:], state=state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=ATOL, rtol=0)
    torch.testing.assert_close(end_state.memory, whole_state.memory, atol=ATOL, rtol=0)


def test_output_gate_is_on_by_default_and_gradients_reach_everything() -> None:
    attn = build()
    assert attn.g_proj is not None
    x = x_inputs().requires_grad_()
    mask = AttentionMask(causal=True, key_padding=padding([T, 6, 2], T))
    attn(x, None, AttentionContext(mask=mask)).out.pow(2).sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_state_size_and_capabilities() -> None:
    spec = get_variant(NAME)
    dims = AttentionDims(d_model=D, n_heads=HEADS, head_dim=D // HEADS, max_len=64)
    _, state = call(build(), x_inputs())
    assert spec.state_size(dims) == state.memory[0].numel() + state.conv[0].numel()
    assert spec.state_size(dims, {"short_conv": False}) == HEADS * 4 * 4
    assert spec.kv_cache_size(dims) is None
    caps = spec.capabilities
    assert caps.causal and caps.recurrent and not caps.cross_attention


def test_bf16_autocast_is_close_to_float32() -> None:
    torch.manual_seed(0)
    dims = AttentionDims(d_model=D, n_heads=HEADS, head_dim=D // HEADS, max_len=64)
    attn = get_variant(NAME).build(dims).eval()
    x = torch.randn(2, 40, D)
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    with torch.no_grad():
        full = attn(x, None, ctx).out
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = attn(x, None, ctx).out
    assert torch.isfinite(low.float()).all()
    torch.testing.assert_close(low.float(), full, atol=0.1, rtol=0.1)
