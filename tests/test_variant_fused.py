"""Fused exact attention: the same function as vanilla, through SDPA's kernels.

The reference is the registered ``vanilla`` variant with the same weights loaded
(``fused.load_state_dict(vanilla.state_dict())``), compared on outputs, gradients
and (when asked) weights. The mask plumbing — the ``is_causal`` fast path that
keeps FlashAttention eligible, explicit masks otherwise, dropout only in training,
zeros for fully masked rows — is checked on CPU by spying on the SDPA call; the
kernel choice itself is checked on CUDA when one is present.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    MultiHeadAttention,
    get_variant,
)
from attnbench.variants import fused as fused_module

B, T, S, D, H = 3, 7, 5, 16, 4
DH = D // H


def build_pair(
    dtype: torch.dtype = torch.float64, dropout: float = 0.0, d: int = D, h: int = H
) -> tuple[MultiHeadAttention, MultiHeadAttention]:
    dims = AttentionDims(d_model=d, n_heads=h, head_dim=d // h, max_len=64, dropout=dropout)
    torch.manual_seed(0)
    vanilla = get_variant("vanilla").build(dims)
    torch.manual_seed(123)  # different init: the state dict must carry everything
    fused = get_variant("fused").build(dims)
    assert isinstance(fused, MultiHeadAttention) and isinstance(vanilla, MultiHeadAttention)
    fused.load_state_dict(vanilla.state_dict())
    return vanilla.to(dtype).eval(), fused.to(dtype).eval()


def inputs(length: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, length, D, generator=gen).to(dtype)


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


CASES = ["none", "causal", "padding", "causal+padding", "cross", "cross+padding", "memory"]


def case_setup(case: str, dtype: torch.dtype) -> tuple[Tensor, Tensor | None, AttentionMask]:
    x = inputs(T, 1, dtype)
    pad = padding([T, 4, 1], T)
    source = inputs(S, 2, dtype)
    return {
        "none": (x, None, AttentionMask()),
        "causal": (x, None, AttentionMask(causal=True)),
        "padding": (x, None, AttentionMask(key_padding=pad)),
        "causal+padding": (x, None, AttentionMask(causal=True, key_padding=pad)),
        "cross": (x, source, AttentionMask()),
        "cross+padding": (x, source, AttentionMask(key_padding=padding([S, 2, 3], S))),
        # Transformer-XL-style offset: 3 memory keys precede the 7 queries
        "memory": (x, inputs(T + 3, 3, dtype), AttentionMask(causal=True, memory_len=3)),
    }[case]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES)
def test_fused_equals_vanilla(case: str, dtype: torch.dtype) -> None:
    vanilla, fused = build_pair(dtype)
    x, source, mask = case_setup(case, dtype)
    atol = 1e-10 if dtype == torch.float64 else 2e-5
    results = []
    for attn in (vanilla, fused):
        xi = x.clone().requires_grad_(True)
        si = None if source is None else source.clone().requires_grad_(True)
        attn.zero_grad(set_to_none=True)
        res = attn(xi, si, AttentionContext(mask=mask, need_weights=True))
        res.out.pow(2).sum().backward()
        grads = [xi.grad] + ([] if si is None else [si.grad])
        grads += [p.grad for p in attn.parameters()]
        results.append((res.out, res.weights, grads))
    (out_v, w_v, g_v), (out_f, w_f, g_f) = results
    torch.testing.assert_close(out_f, out_v, atol=atol, rtol=0)
    assert w_f is not None and w_v is not None  # explicit weights on request
    torch.testing.assert_close(w_f, w_v, atol=atol, rtol=0)
    for gf, gv in zip(g_f, g_v, strict=True):
        torch.testing.assert_close(gf, gv, atol=atol * 10, rtol=0)


def test_fully_masked_rows_give_zeros_and_finite_gradients() -> None:
    vanilla, fused = build_pair(torch.float32)
    x = inputs(T, 1, torch.float32).requires_grad_(True)
    # batch row 1 has no real key at all; with causal + a left-padded row 2,
    # the first queries of row 2 see nothing either
    pad = padding([T, 0, T], T)
    pad[2, :3] = False
    mask = AttentionMask(causal=True, key_padding=pad)
    heads = {}

    def spy_attend(q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext):
        out, w = type(fused).attend(fused, q, k, v, ctx)
        heads["out"] = out
        return out, w

    fused.attend = spy_attend  # type: ignore[method-assign]
    res = fused(x, None, AttentionContext(mask=mask))
    assert torch.isfinite(res.out).all()
    assert heads["out"][1].abs().max() == 0  # (H, T, dh) all zero for the empty row
    assert heads["out"][2, :, :3].abs().max() == 0
    res.out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in fused.parameters())
    # and the rows with keys are still vanilla's
    with torch.no_grad():
        want = vanilla(x, None, AttentionContext(mask=mask)).out
    torch.testing.assert_close(res.out.detach(), want, atol=2e-5, rtol=0)


def test_sdpa_mask_opens_empty_rows_and_flags_them() -> None:
    pad = padding([3, 0], 3)
    attn_mask, is_causal, empty = fused_module.sdpa_mask(
        AttentionMask(key_padding=pad), 3, 3, torch.device("cpu")
    )
    assert not is_causal and attn_mask is not None and empty is not None
    assert empty[:, 0, 0, 0].tolist() == [False, True]
    assert attn_mask[1].all()  # the empty row is opened for the kernel (then zeroed)
    assert attn_mask[0].all()
    assert fused_module.sdpa_mask(AttentionMask(causal=True), 4, 4, torch.device("cpu")) == (
        None,
        True,
        None,
    )


# ---------------------------------------------------------------------------------------
# The decision logic, by spying on the SDPA call
# ---------------------------------------------------------------------------------------
def spy_sdpa(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    real = F.scaled_dot_product_attention

    def spy(q: Tensor, k: Tensor, v: Tensor, **kwargs: Any) -> Tensor:
        calls.append(kwargs)
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(fused_module.F, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize(
    ("case", "want_causal", "want_mask"),
    [
        ("none", False, False),
        ("causal", True, False),  # the fast path: flash stays eligible
        ("cross", False, False),
        ("padding", False, True),
        ("causal+padding", False, True),
        ("cross+padding", False, True),
        ("memory", False, True),  # an offset causal mask is not SDPA's top-left tril
    ],
)
def test_is_causal_fast_path_only_without_padding_or_offset(
    monkeypatch: pytest.MonkeyPatch, case: str, want_causal: bool, want_mask: bool
) -> None:
    calls = spy_sdpa(monkeypatch)
    _, fused = build_pair(torch.float32)
    x, source, mask = case_setup(case, torch.float32)
    with torch.no_grad():
        fused(x, source, AttentionContext(mask=mask))
    (kwargs,) = calls
    assert kwargs["is_causal"] is want_causal
    assert (kwargs["attn_mask"] is not None) is want_mask
    if want_mask:
        assert kwargs["attn_mask"].dtype == torch.bool
    assert kwargs["scale"] == pytest.approx(DH**-0.5)


def test_dropout_only_in_training(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_sdpa(monkeypatch)
    _, fused = build_pair(torch.float32, dropout=0.25)
    x = inputs(T, 1, torch.float32)
    fused.train()
    a = fused(x, None, AttentionContext()).out
    b = fused(x, None, AttentionContext()).out
    fused.eval()
    c = fused(x, None, AttentionContext()).out
    d = fused(x, None, AttentionContext()).out
    assert [kw["dropout_p"] for kw in calls] == [0.25, 0.25, 0.0, 0.0]
    assert not torch.allclose(a, b)  # dropout did act in training
    torch.testing.assert_close(c, d, atol=0, rtol=0)


def test_weights_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    _, fused = build_pair(torch.float32)
    x = inputs(T, 1, torch.float32)
    assert fused(x, None, AttentionContext()).weights is None
    # no dense scores are formed on the normal path: only SDPA sees q and k
    matmuls: list[tuple[int, ...]] = []
    real_matmul = Tensor.__matmul__

    def spy(a: Tensor, b: Tensor) -> Tensor:
        matmuls.append(tuple(a.shape))
        return real_matmul(a, b)

    monkeypatch.setattr(Tensor, "__matmul__", spy)
    fused(x, None, AttentionContext())
    assert matmuls == []
    w = fused(x, None, AttentionContext(need_weights=True)).weights
    assert w is not None and w.shape == (B, H, T, T) and matmuls


# ---------------------------------------------------------------------------------------
# On CUDA: the fused kernels are really used
# ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_uses_the_fused_kernel_on_cuda() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    vanilla, fused = build_pair(torch.float32, d=256, h=4)  # head_dim 64
    vanilla, fused = vanilla.cuda().bfloat16(), fused.cuda().bfloat16()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 256, 256, generator=gen).cuda().bfloat16().requires_grad_(True)
    causal = AttentionContext(mask=AttentionMask(causal=True))
    # sdpa_kernel raises "No available kernel" if the flash kernel cannot run this call
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = fused(x, None, causal).out
        out.float().pow(2).mean().backward()
    with torch.no_grad():
        want = vanilla(x, None, causal).out
    torch.testing.assert_close(out.float(), want.float(), atol=3e-2, rtol=3e-2)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # with padding the explicit mask rules flash out; the memory-efficient kernel runs it
    pad = padding([256, 100], 256).cuda()
    padded = AttentionContext(mask=AttentionMask(causal=True, key_padding=pad))
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        out = fused(x, None, padded).out
    with torch.no_grad():
        want = vanilla(x, None, padded).out
    torch.testing.assert_close(out.float(), want.float(), atol=3e-2, rtol=3e-2)
