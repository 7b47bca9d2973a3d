"""Declared degenerate regimes: ``dense_reason`` says when a variant is dense attention.

Two kinds of checks. The rules: each variant with a rule is marked exactly at the
boundary its pattern implies and unmarked one step past it. Reality: at a length the
variant declares dense, its output equals vanilla attention's with the same weights
(or, for Reformer's shared-QK attention, dense shared-QK attention written out here);
one step past the boundary it does not — so the rule is neither too loose nor too strict.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from attn_cases import Cases, padding, tiny_profile
from torch import Tensor

from attnbench.attention import (
    Attention,
    AttentionContext,
    AttentionMask,
    get_variant,
    variant_names,
)
from attnbench.config import job_config, validate_profile
from attnbench.job import build_job
from attnbench.runner import _base_record

D, H = 16, 4


def reason(name: str, n: int, **options: object) -> str | None:
    return get_variant(name).dense_reason(n, options or None)


# ---------------------------------------------------------------------------------------
# The rules, at their boundaries
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("w", [1, 5, 16])
def test_local_window_rule(w: int) -> None:
    assert reason("local", w + 1, window=w) == f"window {w} ≥ n − 1 = {w}"
    assert reason("local", w, window=w) is not None
    assert reason("local", w + 2, window=w) is None


@pytest.mark.parametrize("w", [1, 5, 16])
def test_local_blocked_rule(w: int) -> None:
    assert "2 ≤ 2" in reason("local", 2 * w, window=w, blocked=True)
    assert reason("local", w, window=w, blocked=True) is not None
    assert reason("local", 2 * w + 1, window=w, blocked=True) is None


def test_local_presets_resolve_their_options() -> None:
    assert reason("local-32", 33) == "window 32 ≥ n − 1 = 32"
    assert reason("local-32", 34) is None
    assert get_variant("local-32").dense_reason(33, {"window": 8}) is None  # overrides win
    assert reason("local-blocked-32", 64) is not None
    assert reason("local-blocked-32", 65) is None


def test_longformer_rule_counts_only_non_global_positions() -> None:
    # globals (0,): non-global positions 1 … n − 1 span n − 2
    assert reason("longformer", 10, window=8, global_positions=(0,)) is not None
    assert reason("longformer", 11, window=8, global_positions=(0,)) is None
    # no globals: the plain window rule
    assert reason("longformer", 9, window=8, global_positions=()) == "window 8 ≥ n − 1 = 8"
    assert reason("longformer", 10, window=8, global_positions=()) is None
    # globals at both ends: span n − 3
    assert reason("longformer", 11, window=8, global_positions=(0, 10)) is not None
    assert reason("longformer", 12, window=8, global_positions=(0, 10)) is None
    # a list, as options come back from a JSON record, resolves too
    assert get_variant("longformer").dense_reason(10, {"window": 8, "global_positions": [0]})


def test_bigbird_rule_every_block_reached() -> None:
    # the first block and the last global (the default), 2 random: an end block of the
    # non-global run has nb − 4 blocks outside window and globals, all drawn when ≤ 2 →
    # dense iff nb ≤ 6
    assert reason("bigbird", 24, block=4, global_blocks=1, random_blocks=2) is not None
    assert reason("bigbird", 25, block=4, global_blocks=1, random_blocks=2) is None
    assert reason("bigbird", 16, block=4, global_blocks=0, random_blocks=1) is not None
    assert reason("bigbird", 17, block=4, global_blocks=0, random_blocks=1) is None
    assert reason("bigbird-64", 64 * 8) is not None  # 2 + last global, 2 window, 3 random
    assert reason("bigbird-64", 64 * 8 + 1) is None
    # only the first g global (last_block_global=False): nb − g − 2 outside → dense iff nb ≤ 5
    first = {"block": 4, "global_blocks": 1, "random_blocks": 2, "last_block_global": False}
    assert reason("bigbird", 20, **first) is not None
    assert reason("bigbird", 21, **first) is None
    first = {"block": 4, "global_blocks": 0, "random_blocks": 1, "last_block_global": False}
    assert reason("bigbird", 12, **first) is not None
    assert reason("bigbird", 13, **first) is None
    first_64 = {"last_block_global": False}
    assert get_variant("bigbird-64").dense_reason(64 * 7, first_64) is not None
    assert get_variant("bigbird-64").dense_reason(64 * 7 + 1, first_64) is None
    # every block global: dense at once
    assert reason("bigbird", 8, block=4, global_blocks=1, random_blocks=0) is not None


@pytest.mark.parametrize("combine", ["merged", "heads", "layers"])
def test_sparse_strided_rule(combine: str) -> None:
    l = 6  # noqa: E741
    dense_band = reason("sparse-strided", l + 1, stride=l, combine=combine)
    if combine == "merged":  # the band alone covers every pair
        assert dense_band == f"stride {l} ≥ n − 1 = {l}: the band A⁽¹⁾ holds every pair"
    else:  # the strided heads/layers still see only every l-th key
        assert dense_band is None
    assert reason("sparse-strided", l + 2, stride=l, combine=combine) is None
    every = reason("sparse-strided", 50, stride=1, c=1, combine=combine)
    assert (every is not None) == (combine == "merged")
    both = reason("sparse-strided", 2, stride=1, c=1, combine=combine)
    assert both is not None


@pytest.mark.parametrize("combine", ["merged", "heads", "layers"])
def test_sparse_fixed_rule(combine: str) -> None:
    opts = {"pattern": "fixed", "stride": 6, "combine": combine}
    one_block = reason("sparse-strided", 6, c=2, **opts)
    assert (one_block is not None) == (combine == "merged")
    assert reason("sparse-strided", 7, c=2, **opts) is None
    all_summary = reason("sparse-strided", 40, c=6, **opts)
    assert (all_summary is not None) == (combine == "merged")
    assert reason("sparse-strided", 6, c=6, **opts) is not None  # both components dense
    assert reason("sparse-strided", 7, c=5, **opts) is None


def test_sinkhorn_linformer_nystrom_topk_reformer_rules() -> None:
    assert reason("sinkhorn", 16, block=16) == "block 16 ≥ n = 16: one block, attending to itself"
    assert reason("sinkhorn", 17, block=16) is None
    assert reason("linformer", 32, k=32) is not None
    assert reason("linformer", 33, k=32) is None
    assert reason("linformer-64", 64) is not None and reason("linformer-64", 65) is None
    assert reason("nystromformer", 16, landmarks=16) is not None
    assert reason("nystromformer", 17, landmarks=16) is None
    assert "conv" in reason("nystrom-16-conv", 16)
    assert reason("topk-8", 8) == "k = 8 ≥ n = 8: every key is kept"
    assert reason("topk-8", 9) is None
    assert reason("topk-32", 32) is not None and reason("topk-32", 33) is None
    assert reason("reformer", 16, chunk_len=16) is not None
    assert reason("reformer", 17, chunk_len=16) is None


def test_variants_without_a_rule_are_never_marked() -> None:
    with_rule = {
        name
        for name in variant_names()
        if get_variant(name).cls.dense_reason.__func__ is not Attention.dense_reason.__func__
    }
    assert {"local", "longformer", "bigbird", "sparse-strided", "sinkhorn", "linformer"} <= (
        with_rule
    )
    assert {"nystromformer", "topk-8", "reformer"} <= with_rule
    for name in set(variant_names()) - with_rule:
        assert reason(name, 2) is None
    assert reason("vanilla", 1) is None
    assert reason("sparsebert-diag", 4) is None  # never dense: the diagonal is masked


# ---------------------------------------------------------------------------------------
# The rules against reality: declared dense ⇔ the output is dense attention's
# ---------------------------------------------------------------------------------------
def build_pair(name: str, n: int, **options: object) -> tuple[Attention, Attention, Cases]:
    """(variant, vanilla) with the variant's Q, K, V, O copied from vanilla; max_len = n."""
    cases = Cases(B=2, T=n, D=D, H=H, max_len=n, self_lengths=(n, max(1, n - 3)))
    vanilla = cases.build("vanilla", seed=0)
    variant = cases.build(name, seed=5, **options)
    state = vanilla.state_dict()
    _, unexpected = variant.load_state_dict(state, strict=False)
    assert not unexpected
    if hasattr(variant, "global_proj") and variant.global_proj is not None:  # Longformer
        for part in "qkv":
            variant.global_proj[part].load_state_dict(getattr(vanilla, f"{part}_proj").state_dict())
    return variant, vanilla, cases


def outputs(module: Attention, cases: Cases, mask: str) -> Tensor:
    x = cases.inputs()
    if mask == "causal":
        ctx = AttentionContext(mask=AttentionMask(causal=True))
    elif mask == "padding":
        ctx = AttentionContext(mask=AttentionMask(key_padding=padding(cases.self_lengths, cases.T)))
    else:
        ctx = AttentionContext()
    out = module(x, None, ctx).out
    if mask == "padding":  # padded query rows are free to differ
        out = out * padding(cases.self_lengths, cases.T)[..., None]
    return out


# (variant, options at the dense boundary, options one step past it, length, masks)
REALITY = [
    ("local", {"window": 11}, {"window": 10}, 12, ["none", "causal", "padding"]),
    ("local", {"window": 6, "blocked": True}, {"window": 5, "blocked": True}, 12, ["none"]),
    ("topk-8", {"k": 12}, {"k": 11}, 12, ["none", "causal", "padding"]),
    ("longformer", {"window": 10}, {"window": 9}, 12, ["none", "causal"]),
    (
        "longformer",
        {"window": 11, "global_positions": ()},
        {"window": 10, "global_positions": ()},
        12,
        ["none"],
    ),
    (
        "bigbird",
        {"block": 3, "global_blocks": 1, "random_blocks": 2},
        {"block": 3, "global_blocks": 1, "random_blocks": 1},
        18,
        ["none", "causal", "padding"],
    ),
    (
        "bigbird",
        {"block": 3, "global_blocks": 1, "random_blocks": 2, "last_block_global": False},
        {"block": 3, "global_blocks": 1, "random_blocks": 1, "last_block_global": False},
        15,
        ["none", "causal", "padding"],
    ),
    # sinks: the bidirectional rule (under a causal mask 11 sinks + the query's own key
    # already cover every j ≤ i at n = 12, so "causal" is left out of the sparse check)
    ("local", {"window": 0, "sinks": 12}, {"window": 0, "sinks": 11}, 12, ["none", "padding"]),
    ("local", {"window": 11, "sinks": 4}, {"window": 10, "sinks": 4}, 12, ["none", "padding"]),
    (
        "longformer",
        {"window": 5, "dilation": 2, "global_positions": (0, 2, 4, 6, 8, 10)},
        {"window": 4, "dilation": 2, "global_positions": (0, 2, 4, 6, 8, 10)},
        12,
        ["none", "causal"],
    ),
    (
        "longformer",
        {"window": 5, "dilation": 2, "global_positions": (0, 2, 4, 6, 8, 10)},
        {"window": 5, "dilation": 2, "global_positions": (0, 2, 4, 6, 8)},
        12,
        ["none", "causal"],
    ),
    ("sinkhorn", {"block": 12}, {"block": 6}, 12, ["none", "padding"]),
    (
        "sparse-strided",
        {"stride": 11, "combine": "merged", "c": 1},
        {"stride": 10, "combine": "merged", "c": 1},
        12,
        ["none", "causal"],
    ),
    (
        "sparse-strided",
        {"pattern": "fixed", "stride": 4, "c": 4, "combine": "merged"},
        {"pattern": "fixed", "stride": 4, "c": 3, "combine": "merged"},
        12,
        ["none", "causal"],
    ),
    (
        "nystromformer",
        {"landmarks": 12, "exact_pinv": True},
        {"landmarks": 11, "exact_pinv": True},
        12,
        ["none", "padding"],
    ),
]


@pytest.mark.parametrize(("name", "dense", "sparse", "n", "masks"), REALITY)
def test_declared_dense_equals_vanilla_and_one_step_past_does_not(
    name: str, dense: dict, sparse: dict, n: int, masks: list[str]
) -> None:
    assert get_variant(name).dense_reason(n, dense) is not None
    assert get_variant(name).dense_reason(n, sparse) is None
    for mask in masks:
        variant, vanilla, cases = build_pair(name, n, **dense)
        with torch.no_grad():
            expected = outputs(vanilla, cases, mask)
            torch.testing.assert_close(outputs(variant, cases, mask), expected)
            variant, _, _ = build_pair(name, n, **sparse)
            gap = (outputs(variant, cases, mask) - expected).abs().max()
        assert gap > 1e-4, f"{name} {sparse} under {mask!r} still equals vanilla"


def test_linformer_at_k_equal_n_can_be_vanilla_exactly() -> None:
    """k ≥ n is a reparametrisation: E = F = I gives vanilla; k < n cannot keep every key."""
    n = 10
    for k, equal in ((n, True), (n + 3, True), (n - 1, False)):
        variant, vanilla, cases = build_pair("linformer", n, k=k)
        assert (variant.dense_reason(variant.options, n) is not None) == equal
        with torch.no_grad():
            eye = torch.eye(k, n, dtype=torch.float64)  # [I; 0], or the first k rows of I
            variant.proj_e.copy_(eye)
            variant.proj_f.copy_(eye)
            a, b = outputs(variant, cases, "none"), outputs(vanilla, cases, "none")
        if k > n:  # the zero rows are keys with score 0 and value 0: not vanilla as such
            continue
        assert torch.allclose(a, b) == equal


@pytest.mark.parametrize("n_hashes", [1, 2])
def test_reformer_one_chunk_is_dense_shared_qk_attention(n_hashes: int) -> None:
    n = 12
    cases = Cases(B=2, T=n, D=D, H=H, max_len=n)
    x = cases.inputs()

    def dense_shared_qk(module: Attention) -> Tensor:
        q = cases.heads(module.qk_proj(x))  # (B, H, n, dh)
        k = F.normalize(q, dim=-1)
        v = cases.heads(module.v_proj(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(cases.DH) - 1e5 * torch.eye(n)
        out = scores.softmax(dim=-1) @ v
        return module.out_proj(out.transpose(1, 2).reshape(cases.B, n, cases.D))

    dense = cases.build("reformer", chunk_len=n, n_buckets=4, n_hashes=n_hashes)
    assert dense.dense_reason(dense.options, n) is not None
    sparse = cases.build("reformer", chunk_len=n // 2, n_buckets=4, n_hashes=n_hashes)
    assert sparse.dense_reason(sparse.options, n) is None
    with torch.no_grad():
        torch.testing.assert_close(dense(x, None, AttentionContext()).out, dense_shared_qk(dense))
        gap = (sparse(x, None, AttentionContext()).out - dense_shared_qk(sparse)).abs().max()
    assert gap > 1e-4


# ---------------------------------------------------------------------------------------
# The run record
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("window", "dense"), [(64, True), (4, False)])
def test_record_carries_dense_at_length(tmp_path: Path, window: int, dense: bool) -> None:
    raw = tiny_profile(tmp_path)
    raw["variants"] = {"include": ["vanilla", "local"], "options": {"local": {"window": window}}}
    profile = validate_profile(raw)
    job = build_job(job_config(profile, "listops", "local"), None)
    n = job.task.max_len()
    record = _base_record(job, seed=0)
    expected = f"window {window} ≥ n − 1 = {n - 1}" if dense else None
    assert record["dense_at_length"] == expected
    vanilla = build_job(job_config(profile, "listops", "vanilla"), None)
    assert _base_record(vanilla, 0)["dense_at_length"] is None
