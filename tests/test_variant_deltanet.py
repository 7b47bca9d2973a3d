"""DeltaNet (Yang et al. 2024): the chunkwise WY form against the recurrence, and the layer.

The oracle is :func:`recurrent_delta_rule`, the definition S_t = S_{t−1} − β_t (S_{t−1} k_t −
v_t) k_tᵀ, o_t = S_t q_t run one position at a time; an even plainer loop written here in
the paper's orientation (S: d_v × d_k) checks that oracle once. Everything runs in float64,
so the chunkwise algebra (UT transform, chunk carries, padding of the last chunk) must
agree to 1e-10.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    get_variant,
    project_heads,
)
from attnbench.variants.deltanet import (
    L2_EPS,
    DeltaNet,
    DeltaState,
    chunk_delta_rule,
    recurrent_delta_rule,
    short_causal_conv,
)

B, H, T, DK, DV = 3, 2, 11, 4, 5  # T is not a multiple of 4
D, HEADS = 16, 4  # the layer: d_model, heads (head_dim 4)
ATOL = 1e-10
CHUNKS = [1, 3, 4, T, T + 5]
NAME = "deltanet"


def rule_inputs(t: int = T, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Unit q, k; values; β ∈ (0, 1); an initial state M_0 = S_0ᵀ."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    q = F.normalize(randn(B, H, t, DK), dim=-1)
    k = F.normalize(randn(B, H, t, DK), dim=-1)
    v = randn(B, H, t, DV)
    beta = torch.rand(B, H, t, generator=gen, dtype=torch.float64)
    m0 = randn(B, H, DK, DV)
    return q, k, v, beta, m0


def paper_loop(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, s0: Tensor) -> Tensor:
    """S_t = S_{t−1} − β_t (S_{t−1} k_t − v_t) k_tᵀ, o_t = S_t q_t with S (d_v × d_k)."""
    outs = torch.zeros(*v.shape, dtype=v.dtype)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            s = s0[b, h].clone()
            for t in range(q.shape[2]):
                kt = k[b, h, t]
                s = s - beta[b, h, t] * torch.outer(s @ kt - v[b, h, t], kt)
                outs[b, h, t] = s @ q[b, h, t]
    return outs


def build(seed: int = 0, name: str = NAME, **options) -> DeltaNet:
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=D, n_heads=HEADS, head_dim=D // HEADS, max_len=64)
    attn = get_variant(name).build(dims, options or None)
    assert isinstance(attn, DeltaNet)
    return attn.double().eval()


def x_inputs(t: int = T, seed: int = 1, batch: int = B) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, t, D, generator=gen, dtype=torch.float64)


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def call(attn: DeltaNet, x: Tensor, causal: bool = True, **fields) -> tuple[Tensor, DeltaState]:
    mask = AttentionMask(causal=causal, key_padding=fields.pop("key_padding", None))
    with torch.no_grad():
        out = attn(x, None, AttentionContext(mask=mask, **fields))
    return out.out, out.state


# ---------------------------------------------------------------------------------------
# The recurrence and its chunkwise form
# ---------------------------------------------------------------------------------------
def test_oracle_is_the_papers_recurrence() -> None:
    q, k, v, beta, m0 = rule_inputs()
    got, _ = recurrent_delta_rule(q, k, v, beta, initial_state=m0)
    want = paper_loop(q, k, v, beta, m0.transpose(-2, -1))  # S_0 = M_0ᵀ
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("with_state", [False, True])
def test_chunkwise_equals_recurrent(chunk_size: int, with_state: bool) -> None:
    q, k, v, beta, m0 = rule_inputs()
    m0 = m0 if with_state else None
    want, want_state = recurrent_delta_rule(q, k, v, beta, initial_state=m0)
    got, state = chunk_delta_rule(q, k, v, beta, initial_state=m0, chunk_size=chunk_size)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(state, want_state, atol=ATOL, rtol=0)
    # guard: the rule is not plain linear attention (the delta correction matters)
    linear = (q @ k.transpose(-2, -1) * beta[..., None, :]).tril() @ v
    if not with_state:
        assert (got - linear).abs().max() > 1e-3


@pytest.mark.parametrize("chunk_size", [3, T])
def test_chunkwise_gradients_equal_recurrent(chunk_size: int) -> None:
    inputs = [t.requires_grad_() for t in rule_inputs()]
    q, k, v, beta, m0 = inputs

    def loss(out: Tensor, state: Tensor) -> Tensor:
        return (out * out.cos()).sum() + (state * state).sum()

    want = torch.autograd.grad(loss(*recurrent_delta_rule(q, k, v, beta, None, m0)), inputs)
    got = torch.autograd.grad(
        loss(*chunk_delta_rule(q, k, v, beta, None, m0, chunk_size=chunk_size)), inputs
    )
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=ATOL, rtol=0)


def test_beta_zero_leaves_the_state_unchanged() -> None:
    q, k, v, beta, m0 = rule_inputs()
    zero = torch.zeros_like(beta)
    for out, state in (
        recurrent_delta_rule(q, k, v, zero, initial_state=m0),
        chunk_delta_rule(q, k, v, zero, initial_state=m0, chunk_size=4),
    ):
        assert torch.equal(state, m0)
        torch.testing.assert_close(out, q @ m0, atol=1e-14, rtol=0)  # o_t = S_0 q_t


def test_beta_one_with_unit_key_stores_the_value_exactly() -> None:
    """β = 1 and ‖k‖ = 1: afterwards S k = v (the delta rule replaces the old value)."""
    q, k, v, beta, m0 = rule_inputs(t=1)
    _, state = chunk_delta_rule(q, k, v, torch.ones_like(beta), initial_state=m0)
    recalled = (k[:, :, 0, None, :] @ state).squeeze(-2)  # (S k)ᵀ = kᵀ M
    torch.testing.assert_close(recalled, v[:, :, 0], atol=1e-12, rtol=0)


def test_chunkwise_float32_is_close() -> None:
    q, k, v, beta, m0 = (t.float() for t in rule_inputs(t=100))
    want, _ = recurrent_delta_rule(q, k, v, beta, initial_state=m0)
    got, _ = chunk_delta_rule(q, k, v, beta, initial_state=m0, chunk_size=16)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------
# The short convolution
# ---------------------------------------------------------------------------------------
def test_short_conv_equals_conv1d_and_is_causal() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 9, generator=gen, dtype=torch.float64)  # (B, C, T)
    w = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    y, _ = short_causal_conv(x, w)
    want = F.conv1d(F.pad(x, (3, 0)), w[:, None, :], groups=6)
    torch.testing.assert_close(y, want, atol=1e-13, rtol=0)
    for t in range(9):  # changing input t leaves outputs before t untouched
        changed = x.clone()
        changed[..., t] += 1.0
        y2, _ = short_causal_conv(changed, w)
        assert torch.equal(y2[..., :t], y[..., :t])
        assert (y2[..., t : t + 4] - y[..., t : t + 4]).abs().min() > 0  # reach K = 4


def test_short_conv_gradients() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda a, b: short_causal_conv(a, b)[0], (x, w))


def test_short_conv_cache_continues_the_sequence() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 10, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    whole, _ = short_causal_conv(x, w)
    first, cache = short_causal_conv(x[..., :7], w)
    second, _ = short_causal_conv(x[..., 7:], w, cache)
    torch.testing.assert_close(torch.cat([first, second], -1), whole, atol=1e-13, rtol=0)
    # with ``ends``, the cache holds the inputs before each row's end
    _, cache = short_causal_conv(x[..., :7], w, ends=torch.tensor([7, 2]))
    assert torch.equal(cache[0], x[0, :, 4:7])
    assert torch.equal(cache[1, :, 1:], x[1, :, :2]) and torch.equal(cache[1, :, 0], 0 * x[1, :, 0])


# ---------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_layer_chunkwise_equals_recurrent_mode(chunk_size: int) -> None:
    x = x_inputs()
    pad = padding([T, 6, 0], T)
    recurrent = build(mode="recurrent")
    chunked = build(chunk_size=chunk_size)
    want, want_state = call(recurrent, x, key_padding=pad)
    got, state = call(chunked, x, key_padding=pad)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(state.memory, want_state.memory, atol=ATOL, rtol=0)


def test_no_causal_leakage() -> None:
    attn = build(chunk_size=4)
    x = x_inputs()
    base, _ = call(attn, x)
    for t in (0, 3, 4, 7, T - 1):  # inside chunks and on chunk boundaries
        changed = x.clone()
        changed[:, t:] += 1.0
        got, _ = call(attn, changed)
        torch.testing.assert_close(got[:, :t], base[:, :t], atol=1e-13, rtol=0)
        assert (got[:, t:] - base[:, t:]).abs().max() > 1e-3


def test_non_causal_mask_still_reads_left_to_right() -> None:
    """The mechanism has no bidirectional form: a non-causal call is the causal one."""
    attn = build()
    x = x_inputs()
    torch.testing.assert_close(call(attn, x, causal=False)[0], call(attn, x)[0], atol=0, rtol=0)


@pytest.mark.parametrize("where", ["end", "start"])
def test_padded_rows_equal_the_sequences_alone(where: str) -> None:
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
        # the convolution's memory: the last real inputs
        torch.testing.assert_close(state.conv[i], alone_state.conv[0], atol=ATOL, rtol=0)


def test_fully_padded_row_keeps_the_state_and_is_finite() -> None:
    attn = build()
    x = x_inputs()
    _, first = call(attn, x)
    out, state = call(attn, x, key_padding=padding([T, 5, 0], T), state=first)
    assert torch.isfinite(out).all()
    assert torch.equal(state.memory[2], first.memory[2])
    assert torch.equal(state.conv[2], first.conv[2])


@pytest.mark.parametrize("chunk_size", [4, 16])
def test_state_across_segments_equals_one_pass(chunk_size: int) -> None:
    attn = build(chunk_size=chunk_size)
    x = x_inputs(t=2 * T)
    whole, whole_state = call(attn, x)
    first, state = call(attn, x[:, :T])
    second, end_state = call(attn, x[:, T:], state=state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=ATOL, rtol=0)
    torch.testing.assert_close(end_state.memory, whole_state.memory, atol=ATOL, rtol=0)
    assert not state.memory.requires_grad  # detached: truncated back-propagation


def test_state_across_padded_segments_continues_after_the_last_real_token() -> None:
    """Row 1's first segment has 6 real tokens: its continuation reads as if the padding
    were not there (the convolution's memory holds tokens 3–5, not padding)."""
    attn = build(chunk_size=4)
    x = x_inputs(t=2 * T)
    lengths = [T, 6, 1]
    first, state = call(attn, x[:, :T], key_padding=padding(lengths, T))
    second, _ = call(attn, x[:, T:], state=state)
    for i, n in enumerate(lengths):
        seq = torch.cat([x[i : i + 1, :n], x[i : i + 1, T:]], 1)
        alone, _ = call(attn, seq)
        torch.testing.assert_close(first[i : i + 1, :n], alone[:, :n], atol=ATOL, rtol=0)
        torch.testing.assert_close(second[i : i + 1], alone[:, n:], atol=ATOL, rtol=0)


def test_layer_with_beta_zero_reads_its_initial_state() -> None:
    """β ≡ 0 (σ(−∞)): the state passes through unchanged and o_t = S_0 q_t."""
    attn = build(short_conv=False)
    with torch.no_grad():
        attn.b_proj.weight.zero_()
        attn.b_proj.bias.fill_(-torch.inf)
    gen = torch.Generator().manual_seed(3)
    m0 = torch.randn(B, HEADS, D // HEADS, D // HEADS, generator=gen, dtype=torch.float64)
    x = x_inputs()
    heads = {}
    attn.project_out = lambda out, head_mask: heads.setdefault("out", out)  # type: ignore
    _, state = call(attn, x, state=DeltaState(m0, None))
    assert torch.equal(state.memory, m0)
    q = F.silu(attn.q_proj(x)).view(B, T, HEADS, -1).transpose(1, 2)
    q = q / (q.square().sum(-1, keepdim=True) + L2_EPS).sqrt()  # unit q (up to ε)
    want = F.rms_norm(q @ m0, (D // HEADS,), attn.norm_weight, eps=1e-5)
    torch.testing.assert_close(heads["out"], want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("h", range(HEADS))
def test_head_mask_scales_that_heads_output(h: int) -> None:
    attn = build()
    x = x_inputs()
    heads = []
    original = attn.project_out

    def capture(out: Tensor, head_mask: Tensor | None) -> Tensor:
        heads.append(out)
        return original(out, head_mask)

    attn.project_out = capture  # type: ignore[method-assign]
    mask = torch.ones(HEADS, dtype=torch.float64)
    mask[h] = 0.0
    got, _ = call(attn, x, head_mask=mask)
    plain, _ = call(attn, x)
    torch.testing.assert_close(got, project_heads(heads[0], attn.out_proj, mask), atol=0, rtol=0)
    assert (got - plain).abs().max() > 1e-3
    assert torch.equal(call(attn, x, head_mask=torch.ones(HEADS))[0], plain)


def test_no_attention_weights() -> None:
    attn = build()
    mask = AttentionMask(causal=True)
    out = attn(x_inputs(), None, AttentionContext(mask=mask, need_weights=True))
    assert out.weights is None


def test_state_size_counts_the_state_it_returns() -> None:
    spec = get_variant(NAME)
    dims = AttentionDims(d_model=D, n_heads=HEADS, head_dim=D // HEADS, max_len=64)
    for options in ({}, {"short_conv": False}, {"conv_size": 2}):
        attn = build(**options)
        _, state = call(attn, x_inputs())
        carried = sum(s[0].numel() for s in state if s is not None)
        assert spec.state_size(dims, options) == carried
    assert spec.state_size(dims, {"short_conv": False}) == HEADS * 4 * 4  # H · d_k · d_v
    assert spec.kv_cache_size(dims) is None


def test_gradients_reach_every_parameter() -> None:
    attn = build()
    x = x_inputs().requires_grad_()
    mask = AttentionMask(causal=True, key_padding=padding([T, 6, 2], T))
    attn(x, None, AttentionContext(mask=mask)).out.pow(2).sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


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


def test_capabilities_and_rejections() -> None:
    caps = get_variant(NAME).capabilities
    assert caps.causal and caps.recurrent and caps.padding_mask and caps.variable_length
    assert not caps.cross_attention
    attn = build()
    with pytest.raises(ValueError, match="cross-attention"):
        attn(x_inputs(), x_inputs(), AttentionContext())
    for bad in ({"chunk_size": 0}, {"mode": "parallel"}, {"conv_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            get_variant(NAME).options(bad)
