"""Block-sparse attention: one computation for local, Sparse Transformer, Longformer, BigBird.

A sparsity pattern is a union of cheap *parts*; each query attends, by one softmax, to
the union of the keys its parts allow:

- :class:`BlockPart` — positions, taken in some ``order`` (natural, or permuted: the
  strided pattern groups positions by ``i mod l``), are cut into blocks of ``block``
  tokens; query block ``b`` attends to the key blocks ``layout[b]`` (−1 = empty slot),
  narrowed token by token by ``predicate(q_pos, k_pos)`` (window edges, strides).
- :class:`ColumnPart` — every query may attend to a fixed set of key positions (global
  tokens, the fixed pattern's summary columns), narrowed by ``predicate``.
- ``global_queries`` — positions that attend to every key (dense rows, g × n).

Causal masking (``k ≤ q``) and key padding apply on top of every part. The parts a
query uses must be disjoint (a key allowed by two parts would count twice); each part
is a softmax on its own, and the parts are merged with their log-sum-exps:

    o_p = softmax(S_p) V_p,   ℓ_p = log Σ_k exp(S_p[k]),   S_p = Q K_pᵀ / √d
    o   = Σ_p exp(ℓ_p − ℓ) o_p,   ℓ = log Σ_p exp(ℓ_p)

which equals one softmax over the concatenated scores. A query with no allowed key
gets a zero output. Memory: a block part's scores are (B, H, n, kb·block) — linear in
n for a fixed number kb of key blocks; a column part's (B, H, n, G); global rows
(B, H, g, n). No (n × n) tensor is built unless dense weights are asked for.

Two implementations of a block part compute the same thing:

- ``gather`` (CPU; also on GPU when dense weights or attention dropout are needed):
  pad to ``n_blocks·block``, permute, view as blocks, gather the layout's key blocks →
  (B, H, nb, kb·block, dh), scores (B, H, nb, block, kb·block), mask, softmax, sum;
- ``flex`` (CUDA): :func:`torch.nn.attention.flex_attention.flex_attention` (compiled)
  with a ``BlockMask`` built directly from the layout at FlexAttention's 128-token tile
  size (``BlockMask.from_kv_blocks``, no n² evaluation) and a ``mask_mod`` that gives
  the exact token-level pattern (layout membership, predicate, causal, padding).
  ``$ATTNBENCH_BLOCKSPARSE_IMPL=gather`` forces the gathered path everywhere.

:func:`dense_pattern` and :func:`block_part_dense` build (T × T) masks for tests and
analysis only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.attention import (
    AttentionContext,
    AttentionMask,
    AttentionOutput,
    MultiHeadAttention,
    default_scale,
)

Predicate = Callable[[Tensor, Tensor], Tensor]  # (q_pos, k_pos) → bool, broadcasting
FLEX_TILE = 128  # FlexAttention's sparse block size (BlockMask granularity)
_TINY = 1e-30
# "auto" (flex on CUDA, gather elsewhere), or force "gather" / "flex" for every call
DEFAULT_IMPL = os.environ.get("ATTNBENCH_BLOCKSPARSE_IMPL", "auto")


# ---------------------------------------------------------------------------------------
# Pattern description
# ---------------------------------------------------------------------------------------
@dataclass
class BlockPart:
    """Query blocks attend to listed key blocks (positions grouped in ``order``)."""

    block: int  # tokens per block
    layout: Tensor  # (nb, kb) or (Hp, nb, kb) long: key blocks of each query block; −1 = none
    _: KW_ONLY
    order: Tensor | None = None  # (nb·block,) a permutation of positions; None = natural
    predicate: Predicate | None = None  # token-level restriction inside the listed blocks
    heads: tuple[int, ...] | None = None  # heads this part serves; None = all

    @property
    def n_blocks(self) -> int:
        return self.layout.shape[-2]

    @property
    def padded_len(self) -> int:
        return self.n_blocks * self.block

    def positions(self) -> Tensor:
        """(nb·block,) the position held by each slot of the blocked sequence."""
        if self.order is not None:
            return self.order
        return torch.arange(self.padded_len, device=self.layout.device)


@dataclass
class ColumnPart:
    """Every query may attend to the key positions ``keys`` (global tokens, summary columns)."""

    keys: Tensor  # (G,) long positions
    _: KW_ONLY
    predicate: Predicate | None = None
    heads: tuple[int, ...] | None = None


Part = BlockPart | ColumnPart


@dataclass
class SparsePattern:
    parts: list[Part]
    global_queries: Tensor | None = None  # (g,) long: positions that attend to every key


def window_layout(
    n_blocks: int, offsets: list[int] | range, device: torch.device | None = None
) -> Tensor:
    """(nb, len(offsets)) key blocks b + offset for each query block b; −1 outside [0, nb)."""
    off = torch.as_tensor(list(offsets), dtype=torch.long, device=device)
    layout = torch.arange(n_blocks, device=device)[:, None] + off[None, :]  # (nb, kb)
    return torch.where((layout >= 0) & (layout < n_blocks), layout, -1)


class BlockSparseAttention(MultiHeadAttention):
    """Multi-head self-attention restricted to the pattern :meth:`pattern` returns.

    Subclasses implement ``pattern(length, causal, device)``; projections, head mask
    and output projection are :class:`MultiHeadAttention`'s.
    """

    def pattern(self, length: int, causal: bool, device: torch.device) -> SparsePattern:
        raise NotImplementedError  # pragma: no cover - interface

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        if source is not None:
            raise ValueError(
                f"{type(self).__name__} is self-attention only (cross_attention=False)"
            )
        return super().forward(x, None, ctx)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        return sparse_attention(
            q,
            k,
            v,
            self.pattern(q.shape[-2], ctx.mask.causal, q.device),
            ctx.mask,
            dropout_p=self.attn_dropout.p if self.training else 0.0,
            need_weights=ctx.need_weights,
        )


# ---------------------------------------------------------------------------------------
# The computation
# ---------------------------------------------------------------------------------------
def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    pattern: SparsePattern,
    mask: AttentionMask,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    global_qkv: tuple[Tensor, Tensor, Tensor] | None = None,
    impl: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Attention of ``q`` over ``k, v`` (all (B, H, T, dh), self-attention) restricted to
    ``pattern`` and ``mask``; returns ((B, H, T, dh), dense (B, H, T, T) weights or None).

    ``global_qkv`` = (Q_g (B, H, g, dh), K_g (B, H, T, dh), V_g) replaces q/k/v for the
    global rows (Longformer's separate global projections). ``impl``: ``"auto"`` (flex on
    CUDA, gather elsewhere), ``"gather"`` or ``"flex"``; ``None`` reads
    ``$ATTNBENCH_BLOCKSPARSE_IMPL`` (default ``"auto"``). Dense weights and attention
    dropout always use the gathered path.
    ``dropout_p`` > 0 drops attention weights (pass 0 in eval mode).
    """
    h, t, dh = q.shape[1:]
    if k.shape[-2] != t:
        raise ValueError(
            f"block-sparse attention is self-attention: {t} queries, {k.shape[-2]} keys"
        )
    if mask.memory_len:
        raise ValueError("block-sparse attention does not support memory (memory_len > 0)")
    scale = default_scale(dh) if scale is None else scale
    impl = DEFAULT_IMPL if impl is None else impl
    if impl not in ("auto", "gather", "flex"):
        raise ValueError(f"impl={impl!r}; valid: auto, gather, flex")
    if impl == "auto":
        impl = "flex" if q.is_cuda else "gather"
    if need_weights or dropout_p > 0.0:
        impl = "gather"  # flex returns no weights and applies no attention dropout

    results: list[tuple[Tensor, Tensor, Tensor | None]] = []
    for part in pattern.parts:
        heads = list(range(h)) if part.heads is None else list(part.heads)
        if not heads:
            continue
        sub = (lambda x: x) if part.heads is None else (lambda x, i=heads: x[:, i])
        args = (sub(q), sub(k), sub(v), part, mask, scale)
        if isinstance(part, ColumnPart):
            res = _column_part(*args, dropout_p, need_weights)
        elif impl == "flex":
            res = (*_flex_block_part(*args), None)
        else:
            res = _gather_block_part(*args, dropout_p, need_weights)
        results.append(res if part.heads is None else _to_all_heads(res, heads, h))

    if len(results) == 1 and pattern.global_queries is None:
        out, _, weights = results[0]
        return out.to(v.dtype), weights
    out, weights = _merge(results, q, need_weights)
    if pattern.global_queries is not None:
        out, weights = _global_rows(
            out, weights, q, k, v, pattern.global_queries, mask, scale, dropout_p, global_qkv
        )
    return out.to(v.dtype), weights


def _softmax(scores: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """Masked softmax over the last axis in float32 → (probs, log-sum-exp).

    Rows with no allowed key get zero probabilities and ℓ = −∞, with finite gradients.
    """
    s = scores.to(_wide(scores.dtype)).masked_fill(~allowed, float("-inf"))
    m = s.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)  # masked → 0
    z = e.sum(dim=-1, keepdim=True)
    probs = e / z.clamp_min(_TINY)
    lse = torch.where(z > 0, torch.log(z.clamp_min(_TINY)) + m, float("-inf"))
    return probs, lse.squeeze(-1)


def _wide(dtype: torch.dtype) -> torch.dtype:
    """Softmax and merging run in float32 at least (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def _drop(probs: Tensor, p: float) -> Tensor:
    return F.dropout(probs, p=p, training=True) if p > 0.0 else probs


def _to_all_heads(
    res: tuple[Tensor, Tensor, Tensor | None], heads: list[int], n_heads: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Scatter a part computed on a subset of heads into all heads (others: no keys)."""
    out, lse, weights = res
    idx = torch.as_tensor(heads, device=out.device)
    b, _, t, dh = out.shape
    out = out.new_zeros(b, n_heads, t, dh).index_copy(1, idx, out)
    lse = lse.new_full((b, n_heads, t), float("-inf")).index_copy(1, idx, lse)
    if weights is not None:
        weights = weights.new_zeros(b, n_heads, *weights.shape[2:]).index_copy(1, idx, weights)
    return out, lse, weights


def _merge(
    results: list[tuple[Tensor, Tensor, Tensor | None]], q: Tensor, need_weights: bool
) -> tuple[Tensor, Tensor | None]:
    """o = Σ_p exp(ℓ_p − ℓ) o_p with ℓ = log Σ_p exp(ℓ_p); rows with no key stay zero."""
    b, h, t, dh = q.shape
    if not results:
        wide = _wide(q.dtype)
        zeros = q.new_zeros(b, h, t, t, dtype=wide) if need_weights else None
        return q.new_zeros(b, h, t, dh, dtype=wide), zeros
    lses = torch.stack([lse for _, lse, _ in results])  # (P, B, H, T)
    m = lses.amax(dim=0).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp(lses - m)  # (P, B, H, T)
    w = w / w.sum(dim=0).clamp_min(_TINY)
    out = sum(wp[..., None] * o.to(w.dtype) for wp, (o, _, _) in zip(w, results, strict=True))
    weights = None
    if need_weights:
        weights = sum(
            wp[..., None] * wt for wp, (_, _, wt) in zip(w, results, strict=True) if wt is not None
        )
    assert isinstance(out, Tensor)
    return out, weights  # type: ignore[return-value]


def _gather_block_part(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    part: BlockPart,
    mask: AttentionMask,
    scale: float,
    dropout_p: float,
    need_weights: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    b, h, t, dh = q.shape
    nb, bs = part.n_blocks, part.block
    qb = _to_blocks(q, part)  # (B, H, nb, bs, dh)
    kb, vb = _to_blocks(k, part), _to_blocks(v, part)
    idx = part.layout.clamp_min(0)  # (nb, kb) | (H, nb, kb)
    if idx.dim() == 2:
        kg, vg = kb[:, :, idx], vb[:, :, idx]  # (B, H, nb, kb, bs, dh)
    else:
        heads = torch.arange(h, device=q.device)[:, None, None]
        kg, vg = kb[:, heads, idx], vb[:, heads, idx]  # (B, H, nb, kb, bs, dh)
    kg, vg = kg.flatten(3, 4), vg.flatten(3, 4)  # (B, H, nb, kb·bs, dh)
    scores = (qb @ kg.transpose(-2, -1)) * scale  # (B, H, nb, bs, kb·bs)
    allowed, kpos = _block_allowed(part, t, mask)  # (B|1, H|1, nb, bs, kb·bs)
    probs, lse = _softmax(scores, allowed)
    out = _drop(probs, dropout_p).to(vg.dtype) @ vg  # (B, H, nb, bs, dh)
    out = _from_blocks(out.reshape(b, h, nb * bs, dh), part, t)  # (B, H, T, dh)
    lse = _from_blocks(lse.reshape(b, h, nb * bs, 1), part, t)[..., 0]  # (B, H, T)
    weights = None
    if need_weights:
        cols = torch.where(kpos < t, kpos, t)  # (nb, kb·bs) | (H, nb, kb·bs); t = dump column
        cols = cols[:, :, None, :] if cols.dim() == 3 else cols[None, :, None, :]
        cols = cols.expand(b, h, nb, bs, cols.shape[-1]).reshape(b, h, nb * bs, -1)
        dense = probs.new_zeros(b, h, nb * bs, t + 1)
        dense = dense.scatter_add(-1, cols, probs.reshape(b, h, nb * bs, -1))
        weights = _from_blocks(dense, part, t)[..., :t]  # (B, H, T, T)
    return out, lse, weights


def _to_blocks(x: Tensor, part: BlockPart) -> Tensor:
    """(B, H, T, dh) → (B, H, nb, bs, dh) in the part's order, zero-padded."""
    b, h, t, dh = x.shape
    x = F.pad(x, (0, 0, 0, part.padded_len - t))
    if part.order is not None:
        x = x[:, :, part.order]
    return x.reshape(b, h, part.n_blocks, part.block, dh)


def _from_blocks(x: Tensor, part: BlockPart, t: int) -> Tensor:
    """(B, H, nb·bs, ·) in the part's order → (B, H, T, ·) in natural order."""
    if part.order is not None:
        inverse = torch.empty_like(part.order)
        inverse[part.order] = torch.arange(part.padded_len, device=part.order.device)
        x = x[:, :, inverse]
    return x[:, :, :t]


def _block_allowed(part: BlockPart, t: int, mask: AttentionMask) -> tuple[Tensor, Tensor]:
    """Boolean mask (B|1, H|1, nb, bs, kb·bs) of the gathered scores, and the key
    positions (nb, kb·bs) or (H, nb, kb·bs) of the gathered slots (≥ t: padding)."""
    nb, bs = part.n_blocks, part.block
    if part.padded_len < t:
        raise ValueError(f"pattern covers {part.padded_len} positions, input has {t}")
    pos = part.positions().view(nb, bs)  # (nb, bs)
    valid = part.layout >= 0
    kpos = pos[part.layout.clamp_min(0)].flatten(-2)  # (H?, nb, kb·bs)
    kpos = torch.where(valid.repeat_interleave(bs, dim=-1), kpos, t)  # empty slot → padding
    qpos = pos[:, :, None]  # (nb, bs, 1)
    kp = kpos[..., None, :]  # (H?, nb, 1, kb·bs)
    allowed = kp < t
    if part.predicate is not None:
        allowed = allowed & part.predicate(qpos, kp)
    if mask.causal:
        allowed = allowed & (kp <= qpos)
    allowed = allowed.expand(*kpos.shape[:-1], bs, kpos.shape[-1])  # (H?, nb, bs, kb·bs)
    allowed = allowed[None] if kpos.dim() == 3 else allowed[None, None]
    if mask.key_padding is not None:
        pad = mask.key_padding.to(torch.bool)[:, kpos.clamp(max=t - 1)]  # (B, H?, nb, kb·bs)
        allowed = allowed & (pad[:, None, :, None, :] if kpos.dim() == 2 else pad[..., None, :])
    return allowed, kpos


def _column_part(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    part: ColumnPart,
    mask: AttentionMask,
    scale: float,
    dropout_p: float,
    need_weights: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    b, h, t, dh = q.shape
    keys = part.keys[part.keys < t]  # (G,)
    if keys.numel() == 0:
        lse = q.new_full((b, h, t), float("-inf"), dtype=_wide(q.dtype))
        weights = q.new_zeros(b, h, t, t, dtype=lse.dtype) if need_weights else None
        return q.new_zeros(b, h, t, dh), lse, weights
    kc, vc = k[:, :, keys], v[:, :, keys]  # (B, H, G, dh)
    scores = (q @ kc.transpose(-2, -1)) * scale  # (B, H, T, G)
    allowed = _column_allowed(part.predicate, keys, t, mask)  # (B|1, 1, T, G)
    probs, lse = _softmax(scores, allowed)
    out = _drop(probs, dropout_p).to(vc.dtype) @ vc  # (B, H, T, dh)
    weights = probs.new_zeros(b, h, t, t).index_copy(-1, keys, probs) if need_weights else None
    return out, lse, weights


def _column_allowed(
    predicate: Predicate | None, keys: Tensor, t: int, mask: AttentionMask
) -> Tensor:
    qpos = torch.arange(t, device=keys.device)[:, None]  # (T, 1)
    kpos = keys[None, :]  # (1, G)
    allowed = torch.ones(t, keys.numel(), dtype=torch.bool, device=keys.device)
    if predicate is not None:
        allowed = allowed & predicate(qpos, kpos)
    if mask.causal:
        allowed = allowed & (kpos <= qpos)
    allowed = allowed[None, None]  # (1, 1, T, G)
    if mask.key_padding is not None:
        allowed = allowed & mask.key_padding.to(torch.bool)[:, keys][:, None, None, :]
    return allowed


def _global_rows(
    out: Tensor,
    weights: Tensor | None,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    global_queries: Tensor,
    mask: AttentionMask,
    scale: float,
    dropout_p: float,
    global_qkv: tuple[Tensor, Tensor, Tensor] | None,
) -> tuple[Tensor, Tensor | None]:
    """Rows of the global queries: dense attention to every key (g × n), replacing theirs."""
    t = q.shape[-2]
    keep = global_queries < t
    gq = global_queries[keep]
    if global_qkv is None:
        qg, kg, vg = q[:, :, gq], k, v  # (B, H, g, dh), (B, H, T, dh)
    else:
        qg, kg, vg = global_qkv
        qg = qg[:, :, keep]
    scores = (qg @ kg.transpose(-2, -1)) * scale  # (B, H, g, T)
    allowed = torch.ones(gq.numel(), t, dtype=torch.bool, device=q.device)
    if mask.causal:
        allowed = allowed & (torch.arange(t, device=q.device)[None, :] <= gq[:, None])
    allowed = allowed[None, None]  # (1, 1, g, T)
    if mask.key_padding is not None:
        allowed = allowed & mask.key_padding.to(torch.bool)[:, None, None, :]
    probs, _ = _softmax(scores, allowed)
    rows = _drop(probs, dropout_p).to(vg.dtype) @ vg  # (B, H, g, dh)
    out = out.index_copy(2, gq, rows.to(out.dtype))
    if weights is not None:
        weights = weights.index_copy(2, gq, probs.to(weights.dtype))
    return out, weights


# ---------------------------------------------------------------------------------------
# FlexAttention path (CUDA)
# ---------------------------------------------------------------------------------------
_COMPILED_FLEX: Any = None


def _flex_fn(device: torch.device) -> Any:
    """Compiled ``flex_attention`` on CUDA (eager would build dense scores); eager elsewhere."""
    global _COMPILED_FLEX
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(flex_attention)
    return _COMPILED_FLEX


def block_table(part: BlockPart) -> Tensor:
    """(H|1, nb, nb) bool: query block i lists key block j (block-level, (n/block)²)."""
    layout = part.layout if part.layout.dim() == 3 else part.layout[None]
    nb = part.n_blocks
    table = torch.zeros(*layout.shape[:-1], nb + 1, dtype=torch.bool, device=layout.device)
    table.scatter_(-1, torch.where(layout >= 0, layout, nb), True)
    return table[..., :nb]


def make_mask_mod(part: BlockPart, t: int, mask: AttentionMask) -> Callable[..., Tensor]:
    """FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` over the part's (permuted) slots."""
    pos = part.positions()
    table = block_table(part)
    per_head = part.layout.dim() == 3
    table0 = table[0]
    bs = part.block
    predicate, causal = part.predicate, mask.causal
    key_padding = None if mask.key_padding is None else mask.key_padding.to(torch.bool)

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        qpos, kpos = pos[q_idx], pos[kv_idx]
        listed = (
            table[h, q_idx // bs, kv_idx // bs] if per_head else table0[q_idx // bs, kv_idx // bs]
        )
        ok = listed & (kpos < t)
        if predicate is not None:
            ok = ok & predicate(qpos, kpos)
        if causal:
            ok = ok & (kpos <= qpos)
        if key_padding is not None:
            ok = ok & key_padding[b, kpos.clamp(max=t - 1)]
        return ok

    return mask_mod


def flex_block_mask(part: BlockPart, mask_mod: Callable[..., Tensor]) -> Any:
    """A FlexAttention ``BlockMask`` from the layout at ``FLEX_TILE`` granularity."""
    from torch.nn.attention.flex_attention import BlockMask

    bs, nb, n = part.block, part.n_blocks, part.padded_len
    layout = part.layout if part.layout.dim() == 3 else part.layout[None]  # (H|1, nb, kb)
    dev = layout.device
    n_tiles = math.ceil(n / FLEX_TILE)
    # every tile a block touches: its first token, each FLEX_TILE further, its last token
    offsets = torch.cat(
        [torch.arange(0, bs, FLEX_TILE, device=dev), torch.tensor([bs - 1], device=dev)]
    )
    q_tiles = (torch.arange(nb, device=dev)[:, None] * bs + offsets) // FLEX_TILE  # (nb, o)
    k_tiles = (layout.clamp_min(0)[..., None] * bs + offsets) // FLEX_TILE  # (H, nb, kb, o)
    k_tiles = torch.where(layout[..., None] >= 0, k_tiles, n_tiles)  # empty → dump tile
    hh = layout.shape[0]
    rows = q_tiles[None, :, :, None, None].expand(hh, nb, offsets.numel(), *k_tiles.shape[2:])
    cols = k_tiles[:, :, None].expand_as(rows)
    heads = torch.arange(hh, device=dev)[:, None, None, None, None].expand_as(rows)
    coarse = torch.zeros(hh, n_tiles, n_tiles + 1, dtype=torch.bool, device=dev)
    coarse[heads.reshape(-1), rows.reshape(-1), cols.reshape(-1)] = True
    coarse = coarse[..., :n_tiles]  # (H|1, nQt, nKt)
    num = coarse.sum(-1, dtype=torch.int32)[None]  # (1, H|1, nQt)
    indices = coarse.to(torch.int32).argsort(dim=-1, descending=True, stable=True)
    return BlockMask.from_kv_blocks(
        num,
        indices.to(torch.int32)[None],
        BLOCK_SIZE=FLEX_TILE,
        mask_mod=mask_mod,
        seq_lengths=(n, n),
    )


def _flex_block_part(
    q: Tensor, k: Tensor, v: Tensor, part: BlockPart, mask: AttentionMask, scale: float
) -> tuple[Tensor, Tensor]:
    from torch.nn.attention.flex_attention import AuxRequest

    t = q.shape[-2]
    n = part.padded_len

    def permuted(x: Tensor) -> Tensor:
        x = F.pad(x, (0, 0, 0, n - t))
        return (x if part.order is None else x[:, :, part.order]).contiguous()

    block_mask = flex_block_mask(part, make_mask_mod(part, t, mask))
    out, aux = _flex_fn(q.device)(
        permuted(q),
        permuted(k),
        permuted(v),
        block_mask=block_mask,
        scale=scale,
        return_aux=AuxRequest(lse=True),
    )
    out = _from_blocks(out, part, t)  # (B, H, T, dh)
    lse = _from_blocks(aux.lse.to(_wide(q.dtype))[..., None], part, t)[..., 0]  # (B, H, T)
    return out, lse


# ---------------------------------------------------------------------------------------
# Dense views, for tests and analysis only (T × T)
# ---------------------------------------------------------------------------------------
def block_part_dense(part: Part, t: int, causal: bool = False, via: str = "gather") -> Tensor:
    """(H|1, T, T) bool: which (query, key) pairs ``part`` allows (no padding).

    ``via="gather"`` uses the masks of the gathered (CPU) computation; ``"mask_mod"``
    evaluates the FlexAttention ``mask_mod`` over every pair (block parts only).
    """
    mask = AttentionMask(causal=causal)
    if isinstance(part, ColumnPart):
        keys = part.keys[part.keys < t]
        allowed = _column_allowed(part.predicate, keys, t, mask)[0]  # (1, T, G)
        return torch.zeros(1, t, t, dtype=torch.bool).index_copy(-1, keys, allowed)
    n = part.padded_len
    pos = part.positions()
    if via == "mask_mod":
        hh = part.layout.shape[0] if part.layout.dim() == 3 else 1
        idx = torch.arange(n)
        slots = make_mask_mod(part, t, mask)(
            torch.zeros((), dtype=torch.long),
            torch.arange(hh)[:, None, None],
            idx[None, :, None],
            idx[None, None, :],
        )  # (H|1, n, n) over slots
        dense = torch.zeros(hh, n, n, dtype=torch.bool)
        dense[:, pos[:, None], pos[None, :]] = slots  # slots → positions
        return dense[:, :t, :t]
    if via != "gather":
        raise ValueError(f"via={via!r}; valid: gather, mask_mod")
    allowed, kpos = _block_allowed(part, t, mask)  # (1, H|1, nb, bs, kb·bs)
    allowed = allowed[0]
    hh = allowed.shape[0]
    rows = pos.view(part.n_blocks, part.block)[None, :, :, None].expand_as(allowed)
    cols = (kpos if kpos.dim() == 3 else kpos[None])[:, :, None, :].expand_as(allowed)
    heads = torch.arange(hh)[:, None, None, None].expand_as(allowed)
    dense = torch.zeros(hh, n + 1, n + 1, dtype=torch.bool)
    sel = allowed
    dense[heads[sel], rows[sel], cols[sel]] = True
    return dense[:, :t, :t]


def dense_pattern(pattern: SparsePattern, t: int, n_heads: int, causal: bool = False) -> Tensor:
    """(H, T, T) bool: the keys each query may attend to under ``pattern`` (no padding)."""
    dense = torch.zeros(n_heads, t, t, dtype=torch.bool)
    for part in pattern.parts:
        heads = list(range(n_heads)) if part.heads is None else list(part.heads)
        dense[heads] |= block_part_dense(part, t, causal)
    if pattern.global_queries is not None:
        gq = pattern.global_queries[pattern.global_queries < t]
        full = torch.ones(t, t, dtype=torch.bool)
        dense[:, gq] = (full.tril() if causal else full)[gq]
    return dense
