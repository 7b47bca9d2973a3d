"""Top-k attention: exactly k non-zeros per row, the k best keys, vanilla when k ≥ n.

The reference selects keys with a stable sort of the −∞-masked scores written here
(ties: the earlier key first) and applies softmax over them; the k ≥ n case is
compared with PyTorch's ``scaled_dot_product_attention`` and with the vanilla
variant holding the same weights. float64 throughout.
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
    AttentionMask,
    MultiHeadAttention,
    get_variant,
)
from attnbench.variants.topk import topk_keep

C = Cases(T=12, S=10, max_len=64, self_lengths=(12, 6, 2), cross_lengths=(10, 3, 7))
B, T, S, D, H, DH = C.B, C.T, C.S, C.D, C.H, C.DH
build, inputs, heads, case_setup = C.build, C.inputs, C.heads, C.case_setup


def reference(
    attn: MultiHeadAttention, x: Tensor, source: Tensor | None, allowed: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """(weights, output): softmax over the k best allowed keys picked by a stable sort."""
    kv = x if source is None else source
    q, key, v = heads(attn.q_proj(x)), heads(attn.k_proj(kv)), heads(attn.v_proj(kv))
    scores = q @ key.transpose(-2, -1) / math.sqrt(DH)  # (B, H, T, S)
    allowed = allowed.expand_as(scores)
    masked = scores.masked_fill(~allowed, float("-inf"))
    order = torch.sort(masked, dim=-1, descending=True, stable=True).indices
    chosen = torch.zeros_like(allowed).scatter(-1, order[..., :k], True) & allowed
    probs = torch.softmax(scores.masked_fill(~chosen, float("-inf")), dim=-1).nan_to_num(0.0)
    out = (probs @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], D)
    return probs, attn.out_proj(out)


@pytest.mark.parametrize("case", ["none", "causal+padding", "cross+padding"])
@pytest.mark.parametrize("name", ["topk-8", "topk-16"])
def test_matches_stable_sort_reference(name: str, case: str) -> None:
    attn = build(name)
    k = get_variant(name).resolved_options()["k"]
    x, source, mask, allowed = case_setup(case)
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask, need_weights=True))
        want_w, want_out = reference(attn, x, source, allowed, k)
    assert got.weights is not None
    torch.testing.assert_close(got.weights, want_w, atol=1e-12, rtol=0)
    torch.testing.assert_close(got.out, want_out, atol=1e-12, rtol=0)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_exactly_k_nonzeros_per_row(k: int) -> None:
    attn = build("topk-8", k=k)
    x, source, mask, allowed = case_setup("causal+padding")
    with torch.no_grad():
        w = attn(x, source, AttentionContext(mask=mask, need_weights=True)).weights
    assert w is not None
    full = allowed.expand_as(w)
    n_allowed = full.sum(-1)  # (B, H, T)
    torch.testing.assert_close((w > 0).sum(-1), n_allowed.clamp(max=k))  # fewer in early rows
    assert torch.all(w[~full] == 0)
    rows = n_allowed > 0
    torch.testing.assert_close(w.sum(-1)[rows], torch.ones(int(rows.sum()), dtype=w.dtype))
    assert torch.all(w[~rows] == 0)  # no allowed key: zeros, not NaN
    # the kept keys are the best-scoring ones: every kept score ≥ every dropped allowed score
    q, key = heads(attn.q_proj(x)), heads(attn.k_proj(x))
    scores = (q @ key.transpose(-2, -1)).detach()
    kept_min = scores.masked_fill(~(w > 0), float("inf")).amin(-1)
    dropped_max = scores.masked_fill(~(full & (w == 0)), float("-inf")).amax(-1)
    assert torch.all(kept_min >= dropped_max)


@pytest.mark.parametrize("case", ["none", "causal+padding", "cross+padding"])
def test_k_at_least_length_is_vanilla(case: str) -> None:
    attn = build("topk-8", k=64)
    vanilla = build("vanilla", seed=9)
    vanilla.load_state_dict(attn.state_dict())
    x, source, mask, allowed = case_setup(case)
    kv = x if source is None else source
    with torch.no_grad():
        got = attn(x, source, AttentionContext(mask=mask)).out
        want = vanilla(x, source, AttentionContext(mask=mask)).out
        sdpa = F.scaled_dot_product_attention(
            heads(attn.q_proj(x)), heads(attn.k_proj(kv)), heads(attn.v_proj(kv)), attn_mask=allowed
        ).nan_to_num(0.0)
        sdpa_out = attn.out_proj(sdpa.transpose(1, 2).reshape(B, T, D))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    rows = allowed.expand(B, 1, T, allowed.shape[-1]).any(-1)[:, 0]  # (B, T) queries with a key
    torch.testing.assert_close(got[rows], sdpa_out[rows], atol=1e-10, rtol=0)
    # and k < n does differ from vanilla (the comparison above is not vacuous)
    small = build("topk-8", k=2)
    small.load_state_dict(attn.state_dict())
    with torch.no_grad():
        assert (small(x, source, AttentionContext(mask=mask)).out - want).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------
# Ties
# ---------------------------------------------------------------------------------------
def test_ties_go_to_the_earliest_keys() -> None:
    scores = torch.tensor(
        [
            [1.0, 3.0, 3.0, 3.0, 0.0],  # 3 tied at the 2nd best: keep the first two of them
            [2.0, 2.0, 2.0, 2.0, 2.0],  # all tied
            [0.0, 5.0, 1.0, 1.0, 4.0],  # ties below the cut do not matter
        ]
    )
    keep = topk_keep(scores, None, 2)
    assert keep is not None
    want = torch.tensor(
        [
            [False, True, True, False, False],
            [True, True, False, False, False],
            [False, True, False, False, True],
        ]
    )
    assert torch.equal(keep, want)
    # masked keys are never taken, even when tied with the k-th allowed score
    allowed = torch.tensor([True, False, True, True, True])[None].expand(3, 5)
    keep = topk_keep(scores, allowed, 2)
    assert keep is not None
    assert torch.equal(keep[1], torch.tensor([True, False, True, False, False]))
    assert torch.equal(keep[0], torch.tensor([False, False, True, True, False]))


def test_identical_keys_keep_the_first_k_allowed() -> None:
    """Equal content → all scores tie → uniform weight 1/k on the first k allowed keys."""
    k = 3
    attn = build("topk-8", k=k)
    x = inputs()[:, :1].expand(B, T, D).contiguous()  # one token repeated
    with torch.no_grad():
        w = attn(x, None, AttentionContext(mask=AttentionMask(causal=True), need_weights=True))
    assert w.weights is not None
    want = torch.zeros(T, T, dtype=torch.float64)
    for i in range(T):
        n = min(k, i + 1)
        want[i, :n] = 1.0 / n
    torch.testing.assert_close(w.weights, want.expand(B, H, T, T), atol=1e-12, rtol=0)


def test_gradients_reach_only_selected_keys() -> None:
    """A key no query selects gets no gradient, through its key or its value."""
    attn = build("topk-8", k=2)
    gen = torch.Generator().manual_seed(3)
    q = torch.rand(1, H, 4, DH, generator=gen, dtype=torch.float64) + 0.1  # all positive
    key = torch.randn(1, H, 5, DH, generator=gen, dtype=torch.float64)
    key[:, :, 0] = -10.0  # the lowest score for every query
    v = torch.randn(1, H, 5, DH, generator=gen, dtype=torch.float64)
    q, key, v = (t.requires_grad_(True) for t in (q, key, v))
    out, weights = attn.attend(q, key, v, AttentionContext())
    assert weights is not None and torch.all(weights[..., 0] == 0)
    out.pow(2).sum().backward()
    assert key.grad is not None and v.grad is not None and q.grad is not None
    assert torch.all(key.grad[:, :, 0] == 0) and torch.all(v.grad[:, :, 0] == 0)
    assert key.grad[:, :, 1:].abs().sum() > 0 and v.grad[:, :, 1:].abs().sum() > 0
    assert torch.isfinite(q.grad).all()


def test_presets() -> None:
    for name, k in (("topk-8", 8), ("topk-16", 16), ("topk-32", 32)):
        assert get_variant(name).resolved_options() == {"k": k}
    with pytest.raises(ValueError, match="k must be positive"):
        get_variant("topk-8").options({"k": 0})
