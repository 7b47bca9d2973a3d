"""Linformer (Wang et al. 2020): length projection, identity limit, padding.

The reference in :func:`reference` recomputes softmax(Q (E K)ᵀ/√d)(F V) from the
module's own weights with explicit einsums over the length axis; the identity-limit
test compares with the vanilla variant (k = n, E = F = I makes Linformer exactly
softmax attention). Everything runs in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    MultiHeadAttention,
    get_variant,
)
from attnbench.variants.linformer import Linformer

B, N, D, H = 3, 10, 16, 4
DH = D // H
ATOL = 1e-10


def build(k: int = 4, max_len: int = N, share_kv: bool = False, seed: int = 0) -> Linformer:
    torch.manual_seed(seed)
    dims = AttentionDims(d_model=D, n_heads=H, head_dim=DH, max_len=max_len)
    attn = get_variant("linformer").build(dims, {"k": k, "share_kv": share_kv})
    assert isinstance(attn, Linformer)
    return attn.double().eval()


def inputs(n: int = N, seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, D, generator=gen, dtype=torch.float64)


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def run(attn: Linformer, x: Tensor, pad: Tensor | None = None) -> Tensor:
    with torch.no_grad():
        return attn(x, None, AttentionContext(mask=AttentionMask(key_padding=pad))).out


def reference(attn: Linformer, x: Tensor, e: Tensor, f: Tensor, pad: Tensor | None) -> Tensor:
    """softmax(Q (E K)ᵀ/√d)(F V) per head, padded rows of K, V zeroed, einsum over length."""

    def heads(t: Tensor) -> Tensor:  # (B, n, D) → (B, H, n, dh)
        return t.view(t.shape[0], t.shape[1], H, DH).permute(0, 2, 1, 3)

    with torch.no_grad():
        q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
        if pad is not None:
            keep = pad[:, None, :, None].double()
            k, v = k * keep, v * keep
        k_low = torch.einsum("jn,bhnd->bhjd", e, k)
        v_low = torch.einsum("jn,bhnd->bhjd", f, v)
        scores = torch.einsum("bhtd,bhjd->bhtj", q, k_low) / math.sqrt(DH)
        out = torch.einsum("bhtj,bhjd->bhtd", scores.softmax(-1), v_low)
        return attn.out_proj(out.permute(0, 2, 1, 3).reshape(x.shape[0], -1, D))


# ---------------------------------------------------------------------------------------
# The defining property: attention over length-projected keys and values
# ---------------------------------------------------------------------------------------
def test_projections_act_along_length() -> None:
    attn = build(k=4, max_len=N)
    assert attn.proj_e.shape == (4, N) and attn.proj_f is not None
    assert attn.proj_f.shape == (4, N)
    with torch.no_grad():
        _, weights = attn.attend(
            *(torch.randn(B, H, N, DH, dtype=torch.float64) for _ in range(3)),
            AttentionContext(need_weights=True),
        )
    assert weights is not None and weights.shape == (B, H, N, N)


def test_identity_projection_equals_vanilla() -> None:
    attn = build(k=N, max_len=N)
    with torch.no_grad():
        attn.proj_e.copy_(torch.eye(N))
        attn.proj_f.copy_(torch.eye(N))
    vanilla = get_variant("vanilla").build(attn.dims).double().eval()
    assert isinstance(vanilla, MultiHeadAttention)
    vanilla.load_state_dict(
        {name: p for name, p in attn.state_dict().items() if not name.startswith("proj_")}
    )
    x = inputs()
    with torch.no_grad():
        want = vanilla(x, None, AttentionContext()).out
    torch.testing.assert_close(run(attn, x), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("share_kv", [False, True])
def test_equals_reference_with_padding(share_kv: bool) -> None:
    attn = build(k=4, share_kv=share_kv)
    e = attn.proj_e.detach()
    f = e if share_kv else attn.proj_f.detach()
    x, pad = inputs(), padding([N, 6, 2], N)
    torch.testing.assert_close(run(attn, x, pad), reference(attn, x, e, f, pad), atol=ATOL, rtol=0)
    torch.testing.assert_close(run(attn, x), reference(attn, x, e, f, None), atol=ATOL, rtol=0)


def test_share_kv_ties_e_and_f() -> None:
    shared, separate = build(share_kv=True), build(share_kv=False)
    assert shared.proj_f is None
    names = [name for name, _ in shared.named_parameters() if name.startswith("proj_")]
    assert names == ["proj_e"]
    assert (
        sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in shared.parameters())
        == 4 * N
    )
    e, f = shared.projections(N)
    assert e is f or torch.equal(e, f)


def test_output_invariant_to_permuting_positions_with_columns_of_e_and_f() -> None:
    attn = build(k=4)
    x = inputs()
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    base = run(attn, x)
    with torch.no_grad():
        e, f = attn.proj_e.clone(), attn.proj_f.clone()
        # without permuting E, F the output is not just permuted: the projection sees order
        assert (run(attn, x[:, perm]) - base[:, perm]).abs().max() > 1e-3
        attn.proj_e.copy_(e[:, perm])
        attn.proj_f.copy_(f[:, perm])
    torch.testing.assert_close(run(attn, x[:, perm]), base[:, perm], atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------
# Padding and lengths
# ---------------------------------------------------------------------------------------
def test_padded_keys_do_not_leak() -> None:
    attn = build(k=4)
    lengths = [N, 6, 2]
    x, pad = inputs(), padding(lengths, N)
    changed = torch.where(pad[..., None], x, inputs(seed=9) * 5)
    base, got = run(attn, x, pad), run(attn, changed, pad)
    for i, length in enumerate(lengths):
        torch.testing.assert_close(got[i, :length], base[i, :length], atol=ATOL, rtol=0)
    # guard: without the mask the padded tokens would change the outputs
    assert (run(attn, changed)[1, :6] - run(attn, x)[1, :6]).abs().max() > 1e-3
    # and a real token does change them
    moved = x.clone()
    moved[:, 0] += 1.0
    assert (run(attn, moved, pad)[:, :2] - base[:, :2]).abs().max() > 1e-3


def test_fully_padded_sequence_gives_finite_output() -> None:
    attn = build(k=4)
    out = run(attn, inputs(), padding([N, 0, 3], N))
    assert torch.isfinite(out).all()


def test_shorter_input_equals_padding_to_max_len() -> None:
    attn = build(k=4, max_len=N)
    x = inputs()
    short = run(attn, x[:, :6])
    padded = run(attn, x, padding([6, 6, 6], N))
    torch.testing.assert_close(short, padded[:, :6], atol=ATOL, rtol=0)


def test_rejects_too_long_input_and_causal_mask() -> None:
    attn = build(k=4, max_len=N)
    with pytest.raises(ValueError, match="max_len"):
        run(attn, inputs(N + 1))
    with pytest.raises(ValueError, match="causal"):
        attn(inputs(), None, AttentionContext(mask=AttentionMask(causal=True)))


def test_capabilities_and_presets() -> None:
    caps = get_variant("linformer").capabilities
    assert not caps.causal and not caps.cross_attention and not caps.variable_length
    assert caps.padding_mask
    assert get_variant("linformer-16").options().k == 16
    assert get_variant("linformer-64").options().k == 64
    with pytest.raises(ValueError, match="k must be positive"):
        get_variant("linformer").options({"k": 0})
