"""The partial-sort / candidate-bisection entmax (attnbench.variants.entmax) against the
``entmax`` package: weights and gradients (α's too), masked keys, rows with no
allowed key, every partial-sort size — too small (rows fall back to a full sort), just
right, all of n — and the attention module's second call (partial sort active)
against its first (full sort). float64 unless stated.
"""

from __future__ import annotations

import math

import pytest
import torch
from entmax import entmax15, entmax_bisect, sparsemax
from torch import Tensor

from attnbench.attention import AttentionContext, AttentionDims, AttentionMask, get_variant
from attnbench.variants import entmax as entmax_module
from attnbench.variants.entmax import (
    BISECT_ALL,
    entmax_scores,
    partial_sort_size,
    support_quantile,
)

B, H, T, N = 2, 3, 11, 40


def _scores(scale: float, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(B, H, T, N, generator=gen, dtype=dtype)
    lengths = torch.tensor([N, 9])
    keep = torch.arange(N)[None, :] < lengths[:, None]  # row 1: 9 real keys
    x = x.masked_fill(~keep[:, None, None, :], float("-inf"))
    x[1, :, 3] = float("-inf")  # queries with no allowed key at all
    return x


def _package(name: str, x: Tensor, alpha: Tensor | None = None) -> Tensor:
    """The package on the rows that have an allowed key; zeros on the others."""
    rows = torch.isfinite(x).any(dim=-1)
    out = torch.zeros_like(x)
    if name == "entmax15":
        out[rows] = entmax15(x[rows], dim=-1)
    elif name == "sparsemax":
        out[rows] = sparsemax(x[rows], dim=-1)
    else:
        assert alpha is not None
        out[rows] = entmax_bisect(x[rows], alpha.expand(*x.shape[:-1], 1)[rows], dim=-1, n_iter=20)
    return out


ALPHA = {"entmax15": 1.5, "sparsemax": 2.0}


@pytest.mark.parametrize("k", [None, 2, 8, 16, N])
@pytest.mark.parametrize("scale", [0.3, 3.0])
@pytest.mark.parametrize("name", ["entmax15", "sparsemax"])
def test_sort_based_mappings_equal_the_package(name: str, scale: float, k: int | None) -> None:
    x = _scores(scale).requires_grad_()
    got, support = entmax_scores(x, ALPHA[name], k=k)
    want = _package(name, x)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    assert torch.equal(support, (want > 0).sum(-1, keepdim=True))
    assert torch.all(got[1, :, 3] == 0) and torch.all(got[1, ..., 9:] == 0)
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    (g_got,) = torch.autograd.grad(got, x, grad_out)
    (g_want,) = torch.autograd.grad(want, x, grad_out)
    assert torch.isfinite(g_got).all()
    rows = torch.isfinite(x.detach()).any(dim=-1)
    torch.testing.assert_close(g_got[rows], g_want[rows], atol=1e-12, rtol=0)
    assert torch.all(g_got[~rows] == 0)


@pytest.mark.parametrize("k", [None, 3, 8, 30])
@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_bisection_with_learned_alpha_equals_the_package(scale: float, k: int | None) -> None:
    x = _scores(scale).requires_grad_()
    alpha = torch.tensor([1.3, 1.5, 1.8], dtype=x.dtype)[None, :, None, None].requires_grad_()
    got, support = entmax_scores(x, alpha, n_iter=20, k=k)
    want = _package("alpha", x, alpha)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)
    assert torch.equal(support, (got > 0).sum(-1, keepdim=True))
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    g_got = torch.autograd.grad(got, (x, alpha), grad_out)
    g_want = torch.autograd.grad(want, (x, alpha), grad_out)
    assert all(torch.isfinite(g).all() for g in g_got)
    rows = torch.isfinite(x.detach()).any(dim=-1)
    torch.testing.assert_close(g_got[0][rows], g_want[0][rows], atol=1e-8, rtol=0)
    torch.testing.assert_close(g_got[1], g_want[1], atol=1e-7, rtol=1e-6)


def test_candidate_bisection_is_used_and_falls_back_for_long_supports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # scale 30: supports of 1-2 keys, every row solved on its k + 1 = 4 candidates;
    # scale 0.3: supports of many keys, so rows fall back to the full bisection
    widths: list[tuple[int, int]] = []  # (rows, keys) of each bisection

    def spy(x: Tensor, *args: object) -> tuple[Tensor, Tensor, Tensor]:
        widths.append((x[..., 0].numel(), x.shape[-1]))
        return bisect(x, *args)

    bisect = entmax_module._bisect
    monkeypatch.setattr(entmax_module, "_bisect", spy)
    assert BISECT_ALL * N >= 3 + 1
    for scale, fallback in ((30.0, False), (0.3, True)):
        widths.clear()
        x = _scores(scale, seed=2, dtype=torch.float32)
        alpha = torch.full((1, H, 1, 1), 1.5)
        got, _ = entmax_scores(x, alpha, k=3)
        assert widths[0] == (B * H * T, 4)
        assert (len(widths) == 2 and widths[1][1] == N and widths[1][0] < B * H * T) == fallback
        full, _ = entmax_scores(x, alpha, k=None)
        torch.testing.assert_close(got, full, atol=3e-6, rtol=0)  # bisection tolerance
        torch.testing.assert_close(got, _package("alpha", x, alpha), atol=3e-6, rtol=0)


def test_half_precision_runs_in_float32() -> None:
    x = _scores(3.0, dtype=torch.float32)
    for alpha in (1.5, 2.0, torch.full((1, H, 1, 1), 1.6)):
        got, _ = entmax_scores(x.to(torch.bfloat16), alpha, k=8)
        assert got.dtype == torch.bfloat16
        sums = got.float().sum(-1)
        rows = torch.isfinite(x).any(-1)
        torch.testing.assert_close(sums[rows], torch.ones_like(sums[rows]), atol=2e-2, rtol=0)


def test_partial_sort_size_and_support_quantile() -> None:
    assert partial_sort_size(None) is None
    assert partial_sort_size(0.0) == 8
    assert partial_sort_size(20.0) == math.ceil(25.0) + 2
    support = torch.arange(1, 101).reshape(10, 10, 1)
    assert support_quantile(support) == 99.0
    assert support_quantile(support, q=0.5) == 50.0


@pytest.mark.parametrize("name", ["entmax15", "sparsemax", "entmax-alpha"])
def test_module_second_call_with_partial_sort_equals_the_first(name: str) -> None:
    torch.manual_seed(0)
    spec = get_variant(name)
    dims = AttentionDims(d_model=16, n_heads=4, head_dim=4, max_len=64)
    attn = spec.build(dims).double().eval()
    gen = torch.Generator().manual_seed(3)
    x = 4 * torch.randn(2, 60, 16, generator=gen, dtype=torch.float64)
    pad = torch.arange(60)[None, :] < torch.tensor([60, 25])[:, None]
    ctx = AttentionContext(mask=AttentionMask(causal=True, key_padding=pad), need_weights=True)
    assert attn.support_seen is None
    with torch.no_grad():
        first = attn(x, None, ctx)  # full sort: nothing seen yet
        seen = attn.support_seen
        assert seen is not None and partial_sort_size(seen) < 60 * BISECT_ALL
        second = attn(x, None, ctx)  # partial sort from the support seen
    assert first.weights is not None and second.weights is not None
    atol = 1e-12 if name != "entmax-alpha" else 1e-9
    torch.testing.assert_close(second.weights, first.weights, atol=atol, rtol=0)
    torch.testing.assert_close(second.out, first.out, atol=atol * 10, rtol=0)
