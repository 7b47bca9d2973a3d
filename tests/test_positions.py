"""Positions as a model-level axis (issue #19): learned, sinusoidal, RoPE, ALiBi, none.

RoPE (Su et al. 2021) is checked against an independent complex-number rotation
(``torch.view_as_complex``) and on its defining property (q·k depends on positions only
through i − j); ALiBi (Press, Smith & Lewis 2022) against slopes written out from the
paper's formula and against −m_h·|i − j| in the mask's bias; NoPE on a bidirectional
model and a scheme a variant does not declare are ``n/a`` with their reasons, end to end;
learned and sinusoidal positions give the numbers of the code before the schemes existed.

Every variant that declares ``"rope"`` is checked to *be* attention over the rotated
q, k (its output equals the same weights run on q, k rotated by the reference rotation,
and it is invariant to shifting all positions); every variant that declares ``"alibi"``
to add −m_h·|i − j| to its scores (a steep slope leaves each query on its own key).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from attn_cases import padding, tiny_profile
from torch import Tensor

from attnbench import records
from attnbench.attention import (
    POSITION_SCHEMES,
    AttentionContext,
    AttentionDims,
    AttentionMask,
    Capabilities,
    MultiHeadAttention,
    Requirements,
    alibi_slopes,
    check_support,
    get_variant,
    masked_softmax,
    rope_frequencies,
    rope_rotate,
    scaled_masked_softmax,
    variant_names,
)
from attnbench.config import (
    job_config,
    load_profile,
    row_setting,
    selected_tasks,
    selected_variants,
    validate_profile,
)
from attnbench.job import build_job, job_requirements, model_dims
from attnbench.model import LanguageModel, ModelConfig, SequenceClassifier, count_parameters
from attnbench.runner import run_job
from attnbench.tasks.base import get_task, make_data_config

REPO = Path(__file__).resolve().parents[1]
POSITIONS_PROFILE = REPO / "config" / "positions.yaml"
CROSSED = ("learned", "rope", "alibi")  # the schemes config/positions.yaml crosses
VOCAB, N_CLASSES, MAX_LEN, D, H = 20, 3, 64, 32, 4
VARIANTS = variant_names()


def small_cfg(positions: str = "learned", **overrides: Any) -> ModelConfig:
    values = {"d_model": D, "n_heads": H, "n_layers": 2, "d_ff": 64, "max_len": MAX_LEN}
    return ModelConfig(**{**values, "dropout": 0.0, "positions": positions, **overrides})


def random_ids(batch: int, length: int, seed: int = 0) -> Tensor:
    return torch.randint(2, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def declares(name: str, scheme: str) -> bool:
    return scheme in (get_variant(name).capabilities.position_schemes or ())


def length_for(name: str, wanted: int = 12) -> int:
    caps = get_variant(name).capabilities
    n = wanted if caps.variable_length else MAX_LEN
    return min(n, caps.max_length) if caps.max_length is not None else n


# ---------------------------------------------------------------------------------------
# RoPE
# ---------------------------------------------------------------------------------------
def complex_rotate(x: Tensor, positions: Tensor) -> Tensor:
    """RoFormer's rotation as a complex product: (x_2i + i·x_2i+1)·e^{i·p·θ_i}, θ_i =
    10000^(−2i/d) — written from the paper, in float64, without attnbench's rotation."""
    d = x.shape[-1]
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angle = positions.to(torch.float64)[:, None] * theta[None, :]  # (n, d/2)
    pairs = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], d // 2, 2))
    turned = pairs * torch.polar(torch.ones_like(angle), angle)
    return torch.view_as_real(turned).flatten(-2).to(x.dtype)


def test_rope_frequencies_are_the_papers() -> None:
    expected = [10000 ** (-2 * i / 8) for i in range(4)]  # θ_i = 10000^(−2i/d), d = 8
    assert rope_frequencies(8).tolist() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)


def test_rope_equals_the_complex_number_rotation() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, 16, generator=gen)
    positions = torch.arange(10) + 5
    turned = rope_rotate(x, positions, rope_frequencies(16))
    torch.testing.assert_close(turned, complex_rotate(x, positions), atol=1e-5, rtol=1e-5)
    # a rotation: norms of every pair are kept, position 0 is the identity
    torch.testing.assert_close(turned.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rope_rotate(x, torch.zeros(10), rope_frequencies(16)), x)


@pytest.mark.parametrize("shift", [1, 7, 50])
def test_rope_scores_depend_only_on_the_offset(shift: int) -> None:
    """⟨R_m q, R_n k⟩ is a function of q, k and m − n: shifting every position by a
    constant leaves every q·k unchanged; the scores do depend on the positions."""
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, 4, 12, 8, generator=gen), torch.randn(2, 4, 12, 8, generator=gen)
    freqs = rope_frequencies(8)

    def scores(pos: Tensor) -> Tensor:
        return rope_rotate(q, pos, freqs) @ rope_rotate(k, pos, freqs).transpose(-2, -1)

    base = scores(torch.arange(12))
    torch.testing.assert_close(scores(torch.arange(12) + shift), base, atol=1e-5, rtol=1e-5)
    assert (base - q @ k.transpose(-2, -1)).abs().max() > 1e-2  # positions do enter
    # one pair of vectors at positions (m, n): the score follows m − n only
    qv, kv = q[0, 0, :1], k[0, 0, :1]

    def pair(m: int, n: int) -> float:
        qm = rope_rotate(qv, torch.tensor([m]), freqs)
        kn = rope_rotate(kv, torch.tensor([n]), freqs)
        return float(qm @ kn.T)

    assert pair(3, 1) == pytest.approx(pair(3 + shift, 1 + shift), abs=1e-5)
    assert pair(3, 1) != pytest.approx(pair(3, 2), abs=1e-3)


def rotating_attend(layer: MultiHeadAttention) -> None:
    """Make ``layer`` (built without RoPE) attend over q, k rotated by
    :func:`complex_rotate` at the context's positions: the reference RoPE layer."""
    attend = layer.attend

    def rotated(q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext):
        pos = ctx.positions if ctx.positions is not None else torch.arange(q.shape[-2])
        return attend(complex_rotate(q, pos), complex_rotate(k, pos), v, ctx)

    layer.attend = rotated  # type: ignore[method-assign]


def layer_pair(name: str, scheme: str, **dims: Any) -> tuple[Any, Any]:
    """The variant's layer under ``scheme`` and under learned, with the same weights."""
    spec = get_variant(name)
    base = AttentionDims(d_model=D, n_heads=H, head_dim=D // H, max_len=MAX_LEN, **dims)
    torch.manual_seed(0)
    with_scheme = spec.build(dataclasses.replace(base, position_scheme=scheme)).eval()
    plain = spec.build(base).eval()
    plain.load_state_dict(with_scheme.state_dict())
    return with_scheme, plain


def contexts(name: str, n: int) -> list[tuple[str, AttentionMask]]:
    caps = get_variant(name).capabilities
    masks = [("bidirectional", AttentionMask())]
    if caps.causal:
        masks.append(("causal", AttentionMask(causal=True)))
    if caps.padding_mask and caps.variable_length:
        masks.append(("padded", AttentionMask(key_padding=padding([n, n - 3], n))))
    return masks


ROPE_VARIANTS = [n for n in VARIANTS if declares(n, "rope")]
# RoPE on q and k before the scores (MultiHeadAttention.rotate); a variant that
# overrides rotate applies RoPE elsewhere (linear attention: on the numerator's features,
# RoFormer §3.3) and tests that in its own file
QK_ROPE_VARIANTS = [
    n for n in ROPE_VARIANTS if get_variant(n).cls.rotate is MultiHeadAttention.rotate
]
ALIBI_VARIANTS = [n for n in VARIANTS if declares(n, "alibi")]
# rows sum to 1 (sigmoid attention's do not: its weights are σ(s − log n) each)
NORMALISED_ALIBI = {n for n in ALIBI_VARIANTS if get_variant(n).cls.__name__ != "SigmoidAttention"}


def test_the_scheme_declarations_this_change_verified() -> None:
    """The declarations of the variants this change checked; a variant added since may
    declare more (its own tests and the generic ones below check it)."""
    rope = {
        "vanilla", "fused", "entmax15", "topk-8", "talking-heads", "distance", "local",
        "bigbird", "sparse-strided", "nystromformer", "linformer",
    }  # fmt: skip
    assert rope <= set(ROPE_VARIANTS)
    assert {"differential", "gqa", "mqa", "sigmoid"} <= set(QK_ROPE_VARIANTS)
    assert "linear" in set(ROPE_VARIANTS) - set(QK_ROPE_VARIANTS)  # on φ(q), φ(k)
    assert {"vanilla", "entmax15", "gated-attention", "gqa", "mqa", "sigmoid"} <= set(
        ALIBI_VARIANTS
    )
    # Not declared (yet): Performer (RoFormer §3.3's numerator-only rotation, as linear
    # attention has it, is not written for its random features); longformer,
    # sinkhorn, rela and reformer override forward without MultiHeadAttention.rotate; the
    # other softmax variants score through boolean masks or SDPA, not AttentionMask.bias;
    # differential's 2h maps would need 2h slopes (no ALiBi).
    for name in ("tupe", "transformer-xl"):  # own positions: in place of the absolute ones
        caps = get_variant(name).capabilities
        assert caps.positions == "own" and caps.position_schemes == {"learned", "sinusoidal"}


@pytest.mark.parametrize("name", QK_ROPE_VARIANTS)
def test_declared_rope_is_attention_over_rotated_q_and_k(name: str) -> None:
    """The variant under RoPE equals the same weights attending over q, k rotated by the
    reference rotation; shifting all positions changes nothing; RoPE changes the output."""
    rope, plain = layer_pair(name, "rope")
    reference = copy.deepcopy(plain)
    assert isinstance(reference, MultiHeadAttention), "rope is applied by MultiHeadAttention"
    rotating_attend(reference)
    n = length_for(name)
    x = torch.randn(2, n, D, generator=torch.Generator().manual_seed(2))
    for label, mask in contexts(name, n):

        def run(layer: Any, offset: int = 0, mask: AttentionMask = mask) -> Tensor:
            ctx = AttentionContext(mask=mask, positions=torch.arange(n) + offset)
            with torch.no_grad():
                return layer(x, None, ctx).out

        out = run(rope)
        torch.testing.assert_close(out, run(reference), atol=1e-5, rtol=1e-4, msg=label)
        torch.testing.assert_close(out, run(rope, offset=9), atol=1e-5, rtol=1e-4, msg=label)
        assert (out - run(plain)).abs().max() > 1e-3, f"{label}: RoPE changed nothing"


def test_rope_is_not_applied_in_cross_attention() -> None:
    rope, plain = layer_pair("vanilla", "rope", is_cross=True)
    assert rope.rope_freqs is None
    x, memory = torch.randn(2, 5, D), torch.randn(2, 7, D)
    ctx = AttentionContext(positions=torch.arange(5))
    with torch.no_grad():
        torch.testing.assert_close(rope(x, memory, ctx).out, plain(x, memory, ctx).out)


def test_rope_keys_of_a_memory_continue_before_the_queries() -> None:
    rope, _ = layer_pair("vanilla", "rope")
    q, k = torch.randn(1, H, 3, D // H), torch.randn(1, H, 5, D // H)
    ctx = AttentionContext(mask=AttentionMask(memory_len=2), positions=torch.arange(3) + 10)
    rq, rk = rope.rotate(q, k, ctx)
    torch.testing.assert_close(rq, complex_rotate(q, torch.arange(10, 13)))
    torch.testing.assert_close(rk, complex_rotate(k, torch.arange(8, 13)))


# ---------------------------------------------------------------------------------------
# ALiBi
# ---------------------------------------------------------------------------------------
# Press, Smith & Lewis 2022, §3: for H heads (a power of two) the slopes are the geometric
# sequence starting at 2^(−8/H) with ratio 2^(−8/H); for other H, those of the closest
# power of two below H, then every other slope of the sequence for twice that many heads.
EXPECTED_SLOPES = {
    4: [2**-2, 2**-4, 2**-6, 2**-8],
    8: [2**-1, 2**-2, 2**-3, 2**-4, 2**-5, 2**-6, 2**-7, 2**-8],
    # 8 → 2^-1 … 2^-8; 16 heads' slopes are 2^-0.5, 2^-1, 2^-1.5, …: every other one,
    # from the first, gives 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 for the 4 heads left
    12: [2.0**-e for e in (1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5, 2.5, 3.5)],
}


@pytest.mark.parametrize("heads", sorted(EXPECTED_SLOPES))
def test_alibi_slopes_are_the_papers(heads: int) -> None:
    assert alibi_slopes(heads).tolist() == pytest.approx(EXPECTED_SLOPES[heads], rel=1e-6)


@pytest.mark.parametrize("heads", [4, 8, 12])
def test_alibi_bias_is_minus_slope_times_distance(heads: int) -> None:
    slopes = alibi_slopes(heads)
    t = 6
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    m = torch.tensor(EXPECTED_SLOPES[heads])[:, None, None]
    expected = -m * (i - j).abs()  # (H, T, T)
    bias = AttentionMask(alibi_slopes=slopes).bias(t, t, torch.device("cpu"), torch.float32)
    assert bias.shape == (1, heads, t, t)
    torch.testing.assert_close(bias[0], expected)
    # causal: −m_h·(i − j) on the allowed keys j ≤ i, −∞ on the future
    causal = AttentionMask(causal=True, alibi_slopes=slopes).bias(
        t, t, torch.device("cpu"), torch.float32
    )[0]
    past = (j <= i).expand(heads, t, t)
    torch.testing.assert_close(causal[past], (-m * (i - j))[past.expand(heads, t, t)])
    assert torch.isneginf(causal[~past]).all()


def test_alibi_bias_with_padding_and_memory_and_the_mask_cache() -> None:
    slopes, cpu = alibi_slopes(4), torch.device("cpu")
    pad = padding([5, 3], 5)
    mask = AttentionMask(key_padding=pad, memory_len=2, alibi_slopes=slopes)
    bias = mask.bias(3, 5, cpu, torch.float32)  # 3 queries at positions 2, 3, 4
    assert bias.shape == (2, 4, 3, 5)
    qpos, kpos = torch.arange(3)[:, None] + 2, torch.arange(5)[None, :]
    expected = -slopes[:, None, None] * (qpos - kpos).abs()
    torch.testing.assert_close(bias[0], expected)
    assert torch.isneginf(bias[1, :, :, 3:]).all()
    torch.testing.assert_close(bias[1, :, :, :3], expected[:, :, :3])
    # allowed stays the boolean pattern; bias and position_bias are built once per mask
    plain = AttentionMask(key_padding=pad, memory_len=2)
    assert torch.equal(mask.allowed(3, 5, cpu), plain.allowed(3, 5, cpu))
    assert mask.bias(3, 5, cpu, torch.float32) is bias
    alibi = mask.position_bias(3, 5, cpu, torch.float32)
    assert alibi is mask.position_bias(3, 5, cpu, torch.float32)
    # without ALiBi nothing changes: no bias at all when nothing is masked
    assert AttentionMask().bias(3, 3, cpu, torch.float32) is None
    assert AttentionMask().position_bias(3, 3, cpu, torch.float32) is None


def test_scaled_masked_softmax_adds_alibi_also_with_empty_rows() -> None:
    slopes, t = alibi_slopes(4), 5
    scores = torch.randn(2, 4, t, t, generator=torch.Generator().manual_seed(3))
    distance = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).abs()
    alibi = -slopes[:, None, None] * distance
    for pad in (padding([5, 3], t), torch.tensor([[True] * 5, [False] * 5])):  # row 2 empty
        mask = AttentionMask(causal=True, key_padding=pad, alibi_slopes=slopes)
        allowed = mask.allowed(t, t, torch.device("cpu"))
        expected = masked_softmax(scores * 0.5 + alibi, allowed)
        torch.testing.assert_close(scaled_masked_softmax(scores, mask, scale=0.5), expected)


def test_vanilla_with_alibi_is_the_papers_formula() -> None:
    """softmax(q_i Kᵀ/√d − m_h·(i − j), causal) V, then W_O, written out."""
    layer, _ = layer_pair("vanilla", "alibi", is_causal=True)
    x, t = torch.randn(2, 7, D, generator=torch.Generator().manual_seed(4)), 7
    mask = AttentionMask(causal=True, alibi_slopes=alibi_slopes(H))
    with torch.no_grad():
        out = layer(x, None, AttentionContext(mask=mask)).out
        q, k, v = (layer.split_heads(p(x)) for p in (layer.q_proj, layer.k_proj, layer.v_proj))
        i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // H)
        scores = scores - torch.tensor(EXPECTED_SLOPES[H])[:, None, None] * (i - j)
        scores = scores.masked_fill(j > i, float("-inf"))
        expected = layer.out_proj(layer.merge_heads(torch.softmax(scores, -1) @ v))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALIBI_VARIANTS)
def test_declared_alibi_reaches_the_scores(name: str) -> None:
    """A steep slope (−1e4 per token) leaves each query on its own key: every other weight
    is 0 and, where rows are normalised, the weights are the identity and the output is
    W_O of the query's own value (sigmoid attention's own test checks its formula); a
    gentle slope changes the output."""
    layer, _ = layer_pair(name, "alibi")
    n = length_for(name)
    x = torch.randn(2, n, D, generator=torch.Generator().manual_seed(5))
    for label, mask in contexts(name, n):
        if mask.key_padding is not None:
            continue  # a padded query's own key is masked (the bias test covers padding)
        plain = dataclasses.replace(mask)
        steep = dataclasses.replace(mask, alibi_slopes=torch.full((H,), 1e4))
        gentle = dataclasses.replace(mask, alibi_slopes=alibi_slopes(H))
        with torch.no_grad():
            out = layer(x, None, AttentionContext(mask=steep, need_weights=True))
            # the layer with identity weights (each query reads its own value), through
            # everything after the weights (an output gate, the output projection)
            identity = copy.deepcopy(layer)
            identity.attend = lambda q, k, v, ctx: (  # v of K/V heads shared by query heads
                v.repeat_interleave(q.shape[1] // v.shape[1], dim=1),
                None,
            )
            own = identity(x, None, AttentionContext(mask=plain)).out
            moved = layer(x, None, AttentionContext(mask=gentle)).out
            unmoved = layer(x, None, AttentionContext(mask=plain)).out
        eye = torch.eye(n).expand_as(out.weights)
        off_diagonal = out.weights.masked_fill(eye.bool(), 0.0)
        torch.testing.assert_close(off_diagonal, torch.zeros_like(eye), atol=1e-6, rtol=0)
        if name in NORMALISED_ALIBI:
            torch.testing.assert_close(out.weights, eye, atol=1e-6, rtol=0, msg=label)
            torch.testing.assert_close(out.out, own, atol=1e-5, rtol=1e-5, msg=label)
        assert (moved - unmoved).abs().max() > 1e-3, f"{label}: ALiBi changed nothing"


# ---------------------------------------------------------------------------------------
# The model: schemes through dims and mask, never by name
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["rope", "alibi", "none"])
def test_relative_schemes_add_nothing_to_the_input(scheme: str) -> None:
    spec = get_variant("vanilla")
    torch.manual_seed(0)
    model = LanguageModel(VOCAB, small_cfg(scheme), spec).eval()
    learned = LanguageModel(VOCAB, small_cfg(), spec)
    assert not model.embed.add_positions and model.embed.positions is None
    assert count_parameters(learned) - count_parameters(model) == MAX_LEN * D
    stack = model.stack
    assert (stack.alibi_slopes is not None) == (scheme == "alibi")
    rotating = [m.rope_freqs is not None for m in stack.modules() if hasattr(m, "rope_freqs")]
    assert rotating and all(r == (scheme == "rope") for r in rotating)
    # no absolute position anywhere: a window read at another offset gives the same logits
    ids = random_ids(2, 10)
    with torch.no_grad():
        at0, at7 = model(ids).logits, model(ids, offset=7).logits
    torch.testing.assert_close(at0, at7, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scheme", ["rope", "alibi"])
@pytest.mark.parametrize("name", VARIANTS)
def test_every_model_runs_or_refuses_each_scheme(name: str, scheme: str) -> None:
    """A declared scheme trains (finite gradients); an undeclared one is refused when the
    model is built — the variant would silently ignore it."""
    spec = get_variant(name)
    cfg = small_cfg(scheme)
    if not declares(name, scheme):
        with pytest.raises(ValueError, match=f"model.positions='{scheme}'"):
            SequenceClassifier(VOCAB, N_CLASSES, cfg, spec)
        return
    torch.manual_seed(0)
    n = length_for(name)
    models = [SequenceClassifier(VOCAB, N_CLASSES, cfg, spec)]
    if spec.capabilities.causal:
        models.append(LanguageModel(VOCAB, cfg, spec))
    for model in models:
        out = model(random_ids(2, n))
        loss = out.logits.float().pow(2).mean() + (0 if out.aux_loss is None else out.aux_loss)
        loss.backward()
        assert torch.isfinite(out.logits).all()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_model_config_accepts_the_schemes_and_needs_even_heads_for_rope() -> None:
    for scheme in POSITION_SCHEMES:
        assert ModelConfig(positions=scheme).positions == scheme
    with pytest.raises(ValueError, match="even"):
        ModelConfig(d_model=30, n_heads=2, positions="rope")  # head_dim 15
    with pytest.raises(ValueError, match="positions"):
        ModelConfig(positions="rotary")


# ---------------------------------------------------------------------------------------
# learned / sinusoidal: the numbers of the code before the schemes
# ---------------------------------------------------------------------------------------
# logits of a seeded vanilla model (ids below), computed with the code before this change
BEFORE = {
    "learned": {
        "lm": [
            [0.45006, 0.831646, 0.129352, 3.168935],
            [-0.180193, -1.019662, 1.528522, 1.990926],
            [-0.297371, -0.536427, -0.291757, -1.01393],
        ],
        "cls": [[-0.153427, 0.294777, 0.152292], [-0.084334, 0.11852, 0.243914]],
    },
    "sinusoidal": {
        "lm": [
            [1.994419, -1.85745, 0.064643, 4.629718],
            [2.065408, -2.048368, -0.187259, 4.608168],
            [-0.124622, -0.796607, 0.023012, 0.61893],
        ],
        "cls": [[-0.129252, -0.68508, -0.384604], [0.383657, 0.169386, -0.353498]],
    },
}


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_absolute_positions_give_the_numbers_from_before(positions: str) -> None:
    cfg, spec = small_cfg(positions), get_variant("vanilla")
    ids = random_ids(2, 10)
    torch.manual_seed(0)
    lm = LanguageModel(VOCAB, cfg, spec).eval()
    torch.manual_seed(0)
    cls = SequenceClassifier(VOCAB, N_CLASSES, cfg, spec).eval()
    with torch.no_grad():
        got = {"lm": lm(ids).logits[0, -3:, :4], "cls": cls(ids).logits}
    for head, expected in BEFORE[positions].items():
        torch.testing.assert_close(got[head], torch.tensor(expected), atol=2e-5, rtol=0)
    # the same path as before: positions added to the input, nothing in the attention
    assert lm.embed.add_positions and lm.stack.alibi_slopes is None
    assert all(getattr(m, "rope_freqs", None) is None for m in lm.modules())
    assert not any("rope" in k or "alibi" in k for k in lm.state_dict())


# ---------------------------------------------------------------------------------------
# n/a pairs
# ---------------------------------------------------------------------------------------
def test_check_support_reasons() -> None:
    absolute, own = Capabilities(), Capabilities(positions="own")
    assert absolute.position_schemes == {"learned", "sinusoidal", "none"}
    assert own.position_schemes == {"learned", "sinusoidal"}
    nope = check_support(absolute, Requirements(causal=False, position_scheme="none"))
    assert nope is not None and "NoPE" in nope and "permutation-invariant" in nope
    assert check_support(absolute, Requirements(causal=True, position_scheme="none")) is None
    encoder = Requirements(causal=True, bidirectional=True, position_scheme="none")
    assert "NoPE" in (check_support(absolute, encoder) or "")
    rope = check_support(absolute, Requirements(position_scheme="rope"))
    assert rope == (
        "needs position scheme 'rope', which this variant does not declare "
        "(it supports: learned, sinusoidal, none)"
    )
    mine = check_support(own, Requirements(position_scheme="alibi"))
    assert mine is not None and "encodes positions itself" in mine
    assert check_support(own, Requirements(position_scheme="sinusoidal")) is None
    assert json.dumps(absolute.as_dict())  # records carry it: a sorted list
    assert absolute.as_dict()["position_schemes"] == ["learned", "none", "sinusoidal"]
    with pytest.raises(ValueError, match="unknown"):
        Capabilities(position_schemes=frozenset({"rotary"}))


def test_nope_on_a_bidirectional_model_is_permutation_invariant() -> None:
    """Why NoPE needs a causal model: mean-pooled encoder logits ignore word order."""
    torch.manual_seed(0)
    model = SequenceClassifier(VOCAB, N_CLASSES, small_cfg("none"), get_variant("vanilla"))
    ids = random_ids(2, 10)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids.flip(1)).logits, model(ids).logits)


@pytest.mark.parametrize(
    ("task", "data", "expected"),
    [
        ("listops", {}, True),  # an encoder
        ("translation", {}, True),  # causal decoder, but a bidirectional encoder
        ("lm", {}, False),  # one causal stack
    ],
)
def test_nope_is_na_unless_every_stack_is_causal(task: str, data: dict, expected: bool) -> None:
    task_cls = get_task(task)
    obj = task_cls(make_data_config(task_cls, data))
    req = job_requirements(obj, small_cfg("none"))
    assert req.position_scheme == "none" and req.bidirectional is expected
    reason = check_support(get_variant("vanilla").capabilities, req)
    assert (reason is not None) is expected


def na_record(tmp_path: Path, positions: str, variant: str) -> dict[str, Any]:
    raw = tiny_profile(tmp_path / "out")
    raw["model"]["positions"] = positions
    raw["variants"] = {"include": [variant, "vanilla"]}
    profile = validate_profile(raw)
    record_file = tmp_path / "out" / f"{variant}.json"
    return run_job(
        profile,
        "listops",
        variant,
        0,
        data_dir=tmp_path / "no-data",  # an n/a pair reads no data
        record_file=record_file,
        na_ok=True,
        progress=False,
    )


def test_runner_writes_na_records_for_nope_and_an_undeclared_scheme(tmp_path: Path) -> None:
    nope = na_record(tmp_path / "a", "none", "vanilla")
    assert records.validate_record(nope) is None
    assert nope["status"] == "n/a" and "NoPE" in nope["reason"]
    assert nope["config"]["model"]["positions"] == "none"  # the scheme is in the record
    undeclared = next(n for n in ("performer", "linear", "longformer") if not declares(n, "rope"))
    rope = na_record(tmp_path / "b", "rope", undeclared)
    assert rope["status"] == "n/a" and "'rope'" in rope["reason"], rope["reason"]
    assert rope["config"]["model"]["positions"] == "rope"
    assert "rope" not in rope["capabilities"]["position_schemes"]


# ---------------------------------------------------------------------------------------
# config/positions.yaml: one profile, one task entry per (task, scheme)
# ---------------------------------------------------------------------------------------
def test_positions_profile_starts_with_its_command_and_crosses_tasks_and_schemes() -> None:
    text = POSITIONS_PROFILE.read_text()
    assert text.startswith("# ")
    assert "#   run it:      snakemake --cores all --configfile config/positions.yaml" in text
    profile = load_profile(POSITIONS_PROFILE)
    assert profile["profile"] == "positions" and profile["variants"]["include"] == "canonical"
    crossed = set()
    for name in selected_tasks(profile):
        cfg = job_config(profile, name, "vanilla")
        crossed.add((cfg["task_kind"], cfg["model"]["positions"]))
        assert name == f"{cfg['task_kind']}-{cfg['model']['positions']}"
    assert crossed == {(t, s) for t in ("listops", "lm") for s in CROSSED}


@pytest.mark.parametrize("scheme", CROSSED)
def test_each_entry_records_its_scheme_and_na_pairs_follow_declarations(scheme: str) -> None:
    profile = load_profile(POSITIONS_PROFILE)
    for task in (f"listops-{scheme}", f"lm-{scheme}"):
        for variant in selected_variants(profile):
            cfg = job_config(profile, task, variant)
            assert cfg["model"]["positions"] == scheme and cfg["model"]["d_model"] == 64
            job = build_job(cfg, None)
            assert job.requirements().position_scheme == scheme
            expected = check_support(get_variant(variant).capabilities, job.task.requirements())
            if expected is None:
                expected = get_variant(variant).unsupported_dims(
                    model_dims(job.model_config), cfg["variant_options"]
                )
            if expected is None and not declares(variant, scheme):
                assert job.na_reason is not None and f"'{scheme}'" in job.na_reason
            else:
                assert job.na_reason == expected, (task, variant)


def test_no_canonical_variant_is_dense_at_a_positions_task_length() -> None:
    profile = load_profile(POSITIONS_PROFILE)
    for task in selected_tasks(profile):
        for variant in selected_variants(profile):
            cfg = job_config(profile, task, variant)
            why = get_variant(variant).dense_reason(cfg["model"]["max_len"], cfg["variant_options"])
            assert why is None, f"{variant} × {task}: {why}"


def test_positions_profile_dry_run(tmp_path: Path) -> None:
    """One workflow run schedules every (entry, variant) pair under its entry's path."""
    from test_workflow import REPO as WORKFLOW_REPO
    from test_workflow import job_counts, snakemake

    for item in ("Snakefile", "workflow", "config"):
        src = WORKFLOW_REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    proc = snakemake(tmp_path, "-n", "--configfile", "config/positions.yaml")
    profile = load_profile(POSITIONS_PROFILE)
    n_runs = len(selected_variants(profile)) - 1 + len(profile["reference"]["seeds"])
    counts = job_counts(proc.stdout)
    assert counts["prepare_data"] == 6
    assert counts["train"] == n_runs  # grouped: one job per (variant, seed) trains all six
    assert "results/positions/runs/positions/lm-rope/" in proc.stdout


# ---------------------------------------------------------------------------------------
# The leaderboard shows the scheme in the row label when a profile varies it
# ---------------------------------------------------------------------------------------
def test_positions_entries_share_a_column_with_the_scheme_in_the_row() -> None:
    profile = load_profile(POSITIONS_PROFILE)
    for kind in ("listops", "lm"):
        for scheme in CROSSED:
            row = row_setting(profile, f"{kind}-{scheme}", "gla")
            assert row == {
                "column": kind,
                "setting": {"positions": scheme},
                "reference_setting": {"positions": "learned"},  # the top-level scheme
            }


def test_no_row_axis_where_a_profile_varies_nothing_or_more_than_the_scheme() -> None:
    default = load_profile(REPO / "config" / "default.yaml")
    assert all(row_setting(default, t, "vanilla") is None for t in selected_tasks(default))
    zoology = load_profile(REPO / "config" / "zoology.yaml")  # widths and data differ
    assert all(row_setting(zoology, t, "vanilla") is None for t in selected_tasks(zoology))
    raw = load_profile(POSITIONS_PROFILE)
    raw["tasks"]["lm-rope"] = {**raw["tasks"]["lm-rope"], "train": {"steps": 10}}
    assert row_setting(raw, "lm-rope", "vanilla") is None  # a different budget too
    assert row_setting(raw, "lm-alibi", "vanilla") is None
    raw["tasks"]["lm-alibi"] = {**raw["tasks"]["lm-alibi"], "model": {"positions": "rope"}}
    assert row_setting(raw, "listops-rope", "vanilla") is not None  # listops still varies
    raw = load_profile(POSITIONS_PROFILE)
    raw["tasks"]["lm-alibi"] = {**raw["tasks"]["lm-alibi"], "model": {"dropout": 0.0}}
    assert row_setting(raw, "lm-rope", "vanilla") is None  # two entries with learned


def test_the_leaderboard_folds_scheme_entries_into_rows(tmp_path: Path) -> None:
    from test_leaderboard import build, main_table, make_record

    runs = []
    for scheme, shift in (("learned", 0.0), ("rope", 0.2), ("alibi", -0.2)):
        row = {
            "column": "listops",
            "setting": {"positions": scheme},
            "reference_setting": {"positions": "learned"},
        }
        for seed in range(4):
            value = 0.5 + shift + 0.01 * seed
            runs.append(
                make_record(
                    f"listops-{scheme}",
                    "vanilla",
                    seed,
                    value,
                    row=row,
                    profile="p",
                    reference_variant="vanilla",
                )
            )
        runs.append(
            make_record(
                f"listops-{scheme}",
                "gla",
                0,
                0.55 + shift,
                row=row,
                profile="p",
                reference_variant="vanilla",
            )
        )
        control = {
            "capabilities": {"mixes_tokens": False},
            "row": row,
            "profile": "p",
            "reference_variant": "vanilla",
        }
        if scheme == "learned":
            runs.append(make_record("listops-learned", "no-mixing", 0, 0.3, **control))
        else:
            runs.append(
                make_record(f"listops-{scheme}", "no-mixing", 0, None, status="n/a",
                            reason="declares no such scheme", **control)
            )  # fmt: skip
    runs.append(
        make_record(
            "listops-rope",
            "linear",
            0,
            status="n/a",
            reason="no rope",
            row={**row, "setting": {"positions": "rope"}},
            profile="p",
            reference_variant="vanilla",
        )
    )
    result, markdown, _ = build(tmp_path, runs)
    table = main_table(markdown)
    table.pop("*strongest trivial baseline*")
    table = {name.removesuffix(" (control: no token mixing)"): row for name, row in table.items()}
    assert next(iter(table)) == "vanilla · learned"  # the reference row comes first
    assert set(table) == {
        f"{v} · {s}" for v in ("vanilla", "gla", "no-mixing") for s in CROSSED
    } | {"linear · rope"}
    # the signal check names the control that has a result, not its n/a rows
    assert "| no-mixing · learned 30.00 | **signal** |" in markdown
    assert "no-mixing · rope —" not in markdown
    assert result.tasks == ["listops"]  # one column, not one per scheme
    acc = "listops accuracy (%) ↑"
    assert table["vanilla · rope"][acc].startswith("71.50 ± 1.29 (n=4)")
    assert "▲" in table["vanilla · rope"][acc] and "▼" in table["vanilla · alibi"][acc]
    assert table["linear · rope"][acc].startswith("n/a")
    assert result.analysis.reference("p") == "vanilla · learned"
    # the CSV keeps one row per record, the scheme in the variant column
    assert sorted(set(result.frame["variant"])) == sorted(table)


def test_the_runner_records_the_row_of_a_varied_scheme(tmp_path: Path) -> None:
    raw = tiny_profile(tmp_path / "out")
    listops = raw["tasks"].pop("listops")
    raw["tasks"] = {
        "listops-learned": {**listops, "task": "listops", "model": {"positions": "learned"}},
        "listops-rope": {**listops, "task": "listops", "model": {"positions": "rope"}},
    }
    undeclared = next(n for n in ("performer", "linear", "longformer") if not declares(n, "rope"))
    raw["variants"] = {"include": [undeclared, "vanilla"]}
    profile = validate_profile(raw)
    record = run_job(
        profile,
        "listops-rope",
        undeclared,
        0,
        data_dir=tmp_path / "no-data",
        record_file=tmp_path / "out" / "r.json",
        na_ok=True,
        progress=False,
    )
    assert record["status"] == "n/a"
    assert record["row"] == {
        "column": "listops",
        "setting": {"positions": "rope"},
        "reference_setting": {"positions": "learned"},
    }
    assert "row" not in na_record(tmp_path / "plain", "rope", undeclared)
