"""Retention (Sun et al. 2023): the three forms against each other and against naive loops.

The references here are written independently of the variant: a double loop over
(n, m) with γ^(n−m) (or γ^|n−m|) for the retention sum, a hand-built decay matrix for
the parallel form, and for the layer the same sequence run alone / in one pass. The
recurrent form S_n = γ S_{n−1} + k_nᵀ v_n is the paper's definition and the oracle for
the parallel and chunkwise forms. Everything is float64.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    get_variant,
)
from attnbench.variants.retnet import (
    RetentionState,
    RetNet,
    decay_rates,
    retention_bidirectional,
    retention_chunkwise,
    retention_parallel,
    retention_recurrent,
    rotate,
)

B, H, T, DK, DV = 3, 4, 11, 5, 6
D_MODEL = 16
TOL = 1e-10
CHUNKS = [1, 3, 4, T, T + 5]  # 3 and 4 do not divide T = 11


def randn(*shape: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def qkv(t: int = T, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    return (
        randn(B, H, t, DK, seed=seed),
        randn(B, H, t, DK, seed=seed + 1),
        randn(B, H, t, DV, seed=seed + 2),
    )


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def ragged_padding() -> Tensor:
    """Right padding, a padded position inside a row and an all-but-one-padded row."""
    real = padding([T, 8, 1], T)
    real[1, 0] = False
    real[1, 4] = False
    return real


LOG_GAMMA = torch.log(decay_rates(H))


def naive(q: Tensor, k: Tensor, v: Tensor, gamma: Tensor, causal: bool = True) -> Tensor:
    """o_n = Σ_m γ^(n−m) (q_n·k_m) v_m over m ≤ n (causal) or γ^|n−m| over all m."""
    b, h, t, _ = q.shape
    out = torch.zeros(b, h, t, v.shape[-1], dtype=q.dtype)
    for n in range(t):
        for m in range(t if not causal else n + 1):
            d = gamma.view(1, h, 1) ** abs(n - m)
            out[:, :, n] += d * (q[:, :, n] * k[:, :, m]).sum(-1, keepdim=True) * v[:, :, m]
    return out


def build(**options) -> RetNet:
    torch.manual_seed(0)
    dims = AttentionDims(d_model=D_MODEL, n_heads=H, head_dim=D_MODEL // H, max_len=64)
    attn = get_variant("retnet").build(dims, options or None)
    assert isinstance(attn, RetNet)
    return attn.double().eval()


def run(attn: RetNet, x: Tensor, mask: AttentionMask, state=None):
    with torch.no_grad():
        return attn(x, None, AttentionContext(mask=mask, state=state))


# ---------------------------------------------------------------------------------------
# Decay rates
# ---------------------------------------------------------------------------------------
def test_decay_rates_are_the_papers_multi_scale_values() -> None:
    assert decay_rates(4).tolist() == [1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128, 1 - 1 / 256]
    assert decay_rates(4).tolist() == [0.96875, 0.984375, 0.9921875, 0.99609375]
    want8 = [1 - 2.0 ** (-5 - h) for h in range(8)]
    assert decay_rates(8).tolist() == want8
    assert decay_rates(8)[-1].item() == 1 - 1 / 4096


def test_decay_rates_override() -> None:
    assert decay_rates(3, 0.5).tolist() == [0.5, 0.5, 0.5]
    assert decay_rates(2, [0.9, 1]).tolist() == [0.9, 1.0]
    with pytest.raises(ValueError, match="2 values for 3 heads"):
        decay_rates(3, [0.9, 0.8])
    attn = build(gamma=[0.5, 0.6, 0.7, 0.8])
    torch.testing.assert_close(attn.log_gamma.exp(), torch.tensor([0.5, 0.6, 0.7, 0.8]).double())
    with pytest.raises(ValueError, match="heads"):
        build(gamma=[0.5, 0.6])


@pytest.mark.parametrize(
    "overrides",
    [{"chunk_size": 0}, {"form": "fast"}, {"gamma": 0.0}, {"gamma": 1.5}, {"gamma": [0.9, -1]}],
)
def test_bad_options_are_rejected(overrides: dict) -> None:
    with pytest.raises(ValueError):
        get_variant("retnet").options(overrides)


# ---------------------------------------------------------------------------------------
# The three forms (functions on per-head q, k, v)
# ---------------------------------------------------------------------------------------
def test_recurrent_form_equals_naive_sum() -> None:
    q, k, v = qkv()
    out, _ = retention_recurrent(q, k, v, LOG_GAMMA)
    torch.testing.assert_close(out, naive(q, k, v, decay_rates(H)), atol=TOL, rtol=0)


def test_parallel_form_is_qk_times_hand_built_decay_matrix() -> None:
    q, k, v = qkv()
    gamma = decay_rates(H)
    d = torch.zeros(H, T, T, dtype=torch.float64)
    for n in range(T):
        for m in range(n + 1):
            d[:, n, m] = gamma ** (n - m)
    want = ((q @ k.transpose(-2, -1)) * d) @ v
    got, _ = retention_parallel(q, k, v, LOG_GAMMA)
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_parallel_and_chunkwise_forms_agree(
    chunk_size: int, padded: bool, with_state: bool
) -> None:
    q, k, v = qkv()
    real = ragged_padding() if padded else None
    if real is not None:
        k = k * real[:, None, :, None]  # the layer zeroes padded keys
    state = randn(B, H, DK, DV, seed=9) if with_state else None
    want, want_state = retention_recurrent(q, k, v, LOG_GAMMA, real, state)
    par, par_state = retention_parallel(q, k, v, LOG_GAMMA, real, state)
    chunk, chunk_state = retention_chunkwise(q, k, v, LOG_GAMMA, real, state, chunk_size)
    for got, got_state in ((par, par_state), (chunk, chunk_state)):
        torch.testing.assert_close(got, want, atol=TOL, rtol=0)
        torch.testing.assert_close(got_state, want_state, atol=TOL, rtol=0)
    # guards: the decay and the state matter
    no_decay, _ = retention_recurrent(q, k, v, torch.zeros(H, dtype=torch.float64), real, state)
    assert (no_decay - want).abs().max() > 1e-3


@pytest.mark.parametrize("chunk_size", [3, 64])
def test_chunkwise_gradients_equal_parallel_gradients(chunk_size: int) -> None:
    q, k, v = (x.requires_grad_(True) for x in qkv())
    grads = []
    for fn in (retention_parallel, retention_chunkwise):
        extra = {"chunk_size": chunk_size} if fn is retention_chunkwise else {}
        out, state = fn(q, k, v, LOG_GAMMA, **extra)
        grads.append(torch.autograd.grad((out.sin().sum() + state.cos().sum()), (q, k, v)))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


BIDIRECTIONAL = [("parallel", 0), ("recurrent", 0)] + [("chunkwise", c) for c in CHUNKS]


def test_bidirectional_forms_equal_naive_symmetric_decay() -> None:
    q, k, v = qkv()
    want = naive(q, k, v, decay_rates(H), causal=False)
    for form, chunk in BIDIRECTIONAL:
        got = retention_bidirectional(form, q, k, v, LOG_GAMMA, None, chunk)
        torch.testing.assert_close(got, want, atol=TOL, rtol=0)


def test_bidirectional_forms_agree_with_padding_at_real_queries() -> None:
    q, k, v = qkv()
    real = ragged_padding()
    k = k * real[:, None, :, None]
    want = retention_bidirectional("recurrent", q, k, v, LOG_GAMMA, real)
    for form, chunk in BIDIRECTIONAL[:1] + BIDIRECTIONAL[2:]:
        got = retention_bidirectional(form, q, k, v, LOG_GAMMA, real, chunk)
        rows = real[:, None, :, None].expand_as(got)
        torch.testing.assert_close(got[rows], want[rows], atol=TOL, rtol=0)


def test_rotation_is_relative() -> None:
    x, y = randn(2, 1, 7, 6, seed=3), randn(2, 1, 7, 6, seed=4)
    n = torch.arange(7, dtype=torch.float64)
    a = (rotate(x, n) * rotate(y, n + 5)).sum(-1)  # q at n, k at n + 5: distance 5 each
    b = (rotate(x, n + 40) * rotate(y, n + 45)).sum(-1)
    torch.testing.assert_close(a, b, atol=TOL, rtol=0)
    torch.testing.assert_close(rotate(x, n).norm(dim=-1), x.norm(dim=-1), atol=TOL, rtol=0)
    assert (a - (x * y).sum(-1)).abs().max() > 1e-3  # it does rotate


# ---------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------
def test_gamma_one_without_extras_is_plain_linear_attention() -> None:
    """γ = 1, no normalisation, rotation, GroupNorm or gate: Σ_{j≤i} (q_i·k_j) v_j."""
    attn = build(gamma=1.0, normalize=False, rotate=False, group_norm=False, gate=False)
    q, k, v = qkv()
    with torch.no_grad():
        got, _ = attn.attend(q, k, v, AttentionContext(mask=AttentionMask(causal=True)))
    want = torch.zeros_like(v)
    for i in range(T):
        for j in range(i + 1):
            want[:, :, i] += (q[:, :, i] * k[:, :, j]).sum(-1, keepdim=True) * v[:, :, j]
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True])
def test_layer_forms_agree(causal: bool, padded: bool) -> None:
    x = randn(B, T, D_MODEL, seed=5)
    mask = AttentionMask(causal=causal, key_padding=ragged_padding() if padded else None)
    want = run(build(form="recurrent"), x, mask)
    for options in (
        {"form": "parallel"},
        *({"form": "chunkwise", "chunk_size": c} for c in CHUNKS),
    ):
        got = run(build(**options), x, mask)
        torch.testing.assert_close(got.out, want.out, atol=TOL, rtol=0)
        if causal:
            torch.testing.assert_close(got.state.kv, want.state.kv, atol=TOL, rtol=0)
            assert torch.equal(got.state.seen, want.state.seen)
        else:
            assert got.state is None and want.state is None


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_no_causal_leakage(chunk_size: int) -> None:
    attn = build(chunk_size=chunk_size)
    x = randn(B, T, D_MODEL, seed=5)
    mask = AttentionMask(causal=True)
    base = run(attn, x, mask).out
    for t in (0, 3, 4, 7, T - 1):  # inside chunks and on chunk boundaries
        changed = x.clone()
        changed[:, t + 1 :] = randn(B, T - t - 1, D_MODEL, seed=t)
        changed[:, t] += 1.0
        got = run(attn, changed, mask).out
        torch.testing.assert_close(got[:, :t], base[:, :t], atol=1e-12, rtol=0)
        assert (got[:, t:] - base[:, t:]).abs().max() > 1e-3


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("form", ["chunkwise", "recurrent", "parallel"])
def test_padded_rows_equal_sequences_alone(causal: bool, form: str) -> None:
    attn = build(form=form, chunk_size=3)
    x = randn(B, T, D_MODEL, seed=5)
    lengths = [T, 6, 2]
    right = padding(lengths, T)
    left = right.flip(-1)  # the same sequences at the end of the rows
    x_left = torch.stack([x[i].roll(T - n, dims=0) for i, n in enumerate(lengths)])
    batched = run(attn, x, AttentionMask(causal=causal, key_padding=right))
    batched_left = run(attn, x_left, AttentionMask(causal=causal, key_padding=left))
    for i, n in enumerate(lengths):
        alone = run(attn, x[i : i + 1, :n], AttentionMask(causal=causal))
        torch.testing.assert_close(batched.out[i, :n], alone.out[0], atol=TOL, rtol=0)
        torch.testing.assert_close(batched_left.out[i, T - n :], alone.out[0], atol=TOL, rtol=0)
        if causal:  # the state after the padding is the state of the real tokens
            for state in (batched.state, batched_left.state):
                torch.testing.assert_close(state.kv[i], alone.state.kv[0], atol=TOL, rtol=0)
                assert state.seen[i] == n


@pytest.mark.parametrize("options", [{}, {"form": "recurrent"}, {"chunk_size": 4}])
def test_state_across_two_segments_equals_one_pass(options: dict) -> None:
    attn = build(**options)
    x = randn(B, 2 * T, D_MODEL, seed=6)
    mask = AttentionMask(causal=True)
    whole = run(attn, x, mask)
    first = run(attn, x[:, :T], mask)
    second = run(attn, x[:, T:], mask, state=first.state)
    assert isinstance(first.state, RetentionState)
    torch.testing.assert_close(torch.cat([first.out, second.out], 1), whole.out, atol=TOL, rtol=0)
    torch.testing.assert_close(second.state.kv, whole.state.kv, atol=TOL, rtol=0)
    assert torch.equal(second.state.seen, whole.state.seen)
    # guard: the state matters
    fresh = run(attn, x[:, T:], mask)
    assert (fresh.out - second.out).abs().max() > 1e-3


def test_state_after_a_padded_segment_continues_the_real_tokens() -> None:
    """Row 1's first segment has 4 real tokens then padding: its second segment continues
    from those 4, as one pass over the 4 + T real tokens does."""
    attn = build(chunk_size=4)
    x = randn(B, 2 * T, D_MODEL, seed=7)
    pad = padding([T, 4, 0], T)  # row 2: an empty first segment
    first = run(attn, x[:, :T], AttentionMask(causal=True, key_padding=pad))
    second = run(attn, x[:, T:], AttentionMask(causal=True), state=first.state)
    for i, n in enumerate([T, 4, 0]):
        seq = torch.cat([x[i : i + 1, :n], x[i : i + 1, T:]], 1)
        whole = run(attn, seq, AttentionMask(causal=True))
        torch.testing.assert_close(second.out[i], whole.out[0, n:], atol=TOL, rtol=0)


def test_gradients_flow_through_the_carried_state() -> None:
    attn = build()
    x = randn(B, 2 * T, D_MODEL, seed=6).requires_grad_(True)
    mask = AttentionMask(causal=True)
    first = attn(x[:, :T], None, AttentionContext(mask=mask))
    second = attn(x[:, T:], None, AttentionContext(mask=mask, state=first.state))
    (grad_split,) = torch.autograd.grad(torch.cat([first.out, second.out], 1).sin().sum(), x)
    (grad_whole,) = torch.autograd.grad(
        attn(x, None, AttentionContext(mask=mask)).out.sin().sum(), x
    )
    torch.testing.assert_close(grad_split, grad_whole, atol=TOL, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_weights_reproduce_the_retention_output(causal: bool) -> None:
    attn = build(chunk_size=3)
    q, k, v = qkv()
    pad = padding([T, 6, 2], T)
    mask = AttentionMask(causal=causal, key_padding=pad)
    with torch.no_grad():
        out, weights = attn.attend(q, k, v, AttentionContext(mask=mask, need_weights=True))
        _, none = attn.attend(q, k, v, AttentionContext(mask=mask))
    assert none is None
    assert weights is not None and weights.shape == (B, H, T, T)
    torch.testing.assert_close(weights @ v, out, atol=TOL, rtol=0)
    allowed = pad[:, None, None, :] & pad[:, None, :, None]
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool).tril()
    assert torch.all(weights[~allowed.expand(B, H, T, T)] == 0)
    x = randn(B, T, D_MODEL, seed=5)
    with torch.no_grad():
        full = attn(x, None, AttentionContext(mask=mask, need_weights=True))
    assert full.weights is not None and full.weights.shape == (B, H, T, T)


def test_normalisation_is_scale_invariant_under_group_norm() -> None:
    """The paper's factors rescale each head's output per position; GroupNorm removes
    them (up to its eps), so the layer with and without them nearly agrees."""
    x = randn(B, T, D_MODEL, seed=5) * 3
    mask = AttentionMask(causal=True)
    a = run(build(normalize=True), x, mask).out
    b = build(normalize=False)
    with torch.no_grad():  # undo only the 1/√d_k, which is not a per-row factor with rotation
        b.q_proj.weight /= 2.0
        b.q_proj.bias /= 2.0
    torch.testing.assert_close(run(b, x, mask).out, a, atol=1e-3, rtol=0)


def test_declarations() -> None:
    spec = get_variant("retnet")
    caps = spec.capabilities
    assert caps.causal and caps.recurrent and caps.padding_mask and caps.variable_length
    assert not caps.cross_attention and caps.positions == "own"
    dims = AttentionDims(d_model=64, n_heads=4, head_dim=16, max_len=128)
    assert spec.state_size(dims) == 4 * 16 * 17 + 1
    assert spec.state_size(dims, {"normalize": False}) == 4 * 16 * 16
    assert spec.kv_cache_size(dims) is None
    assert spec.memory_len() == 0
    assert spec.dense_reason(100) is None


def test_state_size_counts_what_is_carried() -> None:
    for normalize in (True, False):
        attn = build(normalize=normalize)
        state = run(attn, randn(1, T, D_MODEL), AttentionMask(causal=True)).state
        carried = state.kv.numel() + (0 if state.seen is None else state.seen.numel())
        dims = AttentionDims(d_model=D_MODEL, n_heads=H, head_dim=D_MODEL // H, max_len=64)
        assert carried == RetNet.state_size(attn.options, dims)


def test_misuse_is_rejected() -> None:
    attn = build()
    x = randn(B, T, D_MODEL)
    state = run(attn, x, AttentionMask(causal=True)).state
    with pytest.raises(ValueError, match="non-causal"):
        run(attn, x, AttentionMask(causal=False), state=state)
    with pytest.raises(ValueError, match="self-retention"):
        attn(x, randn(B, 5, D_MODEL), AttentionContext())
    with pytest.raises(ValueError, match=r"ctx\.state"):
        run(attn, x, AttentionMask(causal=True, memory_len=2))


def test_module_under_bf16_autocast_is_close_to_float32() -> None:
    torch.manual_seed(0)
    dims = AttentionDims(d_model=16, n_heads=4, head_dim=4, max_len=64)
    attn = get_variant("retnet").build(dims, {"chunk_size": 8}).eval()
    x = torch.randn(2, 40, 16)
    ctx = AttentionContext(mask=AttentionMask(causal=True))
    with torch.no_grad():
        full = attn(x, None, ctx).out
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = attn(x, None, ctx).out
    assert torch.isfinite(low.float()).all()
    torch.testing.assert_close(low.float(), full, atol=0.05, rtol=0.05)


def test_long_sequence_is_finite_in_float32() -> None:
    """Decays over thousands of steps underflow to 0 without producing inf or NaN."""
    torch.manual_seed(0)
    dims = AttentionDims(d_model=16, n_heads=4, head_dim=4, max_len=4096)
    attn = get_variant("retnet").build(dims, {"gamma": 0.5, "chunk_size": 64})
    x = torch.randn(1, 3000, 16, requires_grad=True)
    out = attn(x, None, AttentionContext(mask=AttentionMask(causal=True))).out
    out.sum().backward()
    assert torch.isfinite(out).all() and x.grad is not None and torch.isfinite(x.grad).all()


def test_language_model_reads_two_segments_as_one_pass() -> None:
    """Through the model's per-layer state plumbing (two layers, pre-LN blocks)."""
    from attnbench.model import LanguageModel, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=64, dropout=0.0)
    model = LanguageModel(20, cfg, get_variant("retnet"), {"chunk_size": 4}).double().eval()
    ids = torch.randint(2, 20, (2, 22), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model(ids)
        first = model(ids[:, :9])
        second = model(ids[:, 9:], state=first.state, offset=9)
    assert first.state is not None and len(first.state) == 2
    logits = torch.cat([first.logits, second.logits], 1)
    torch.testing.assert_close(logits, whole.logits, atol=TOL, rtol=0)
