"""Reformer's LSH attention: shared-QK attention restricted to hashed, sorted chunks.

Kitaev, Kaiser & Levskaya, "Reformer: The Efficient Transformer", ICLR 2020.

Shared QK: one projection gives the queries, and the keys are the unit-normalised
queries, so a token's query and key fall in the same hash bucket:

    q_i = x_i W_QK,   k_i = q_i / ‖q_i‖,   v_i = x_i W_V

Angular LSH with a random rotation R ∈ ℝ^{d_h × n_buckets/2} per head and round r:

    h⁽ʳ⁾(x) = argmax([x R⁽ʳ⁾ ; −x R⁽ʳ⁾])

In round r the tokens are sorted by (bucket, position) and the sorted sequence is cut
into chunks of ``chunk_len``; a chunk attends to itself and to the chunk before it
(no wrap-around: the first chunk sees only itself). P_i⁽ʳ⁾ is that window for query i.
A token does not attend to itself unless it has no other target: the self score gets
the paper's −10⁵ penalty, which removes it from any row holding another target.

Multi-round attention is softmax attention over the union P_i = ∪_r P_i⁽ʳ⁾. Each round
is computed alone, with keys met in several rounds counted once through
N_ij = |{r : j ∈ P_i⁽ʳ⁾}| folded into the scores (the paper's appendix A):

    z_i⁽ʳ⁾ = logsumexp_{j ∈ P_i⁽ʳ⁾} (q_i·k_j/√d_h − m_ij − log N_ij)
    o_i⁽ʳ⁾ = Σ_{j ∈ P_i⁽ʳ⁾} exp(q_i·k_j/√d_h − m_ij − log N_ij − z_i⁽ʳ⁾) v_j
    o_i    = Σ_r exp(z_i⁽ʳ⁾ − logsumexp_r' z_i⁽ʳ'⁾) o_i⁽ʳ⁾

(m_ij: 10⁵ for j = i, where the log N_ii term is dropped; ∞ for padded keys and, under
a causal mask, later keys). Scores are (n/c)·c·2c = 2n·c per round. The default number
of buckets follows the paper's choice m = 2l/n_buckets for chunk length m, with l the
model's ``max_len``, so a bucket holds about half a chunk.

Rotations: drawn fresh from the torch RNG on every training forward; in eval mode a
fixed set (a buffer drawn at construction, saved with the weights) is used, so
evaluation is deterministic. Padded tokens are put in an extra last bucket, so they
sort after every real token and never move a real token's chunk.

Not causal: the code honours ``mask.causal`` (keys after the query are masked inside
the chunks), but the sort couples all positions — a later token's bucket shifts the
chunk boundaries and so changes *which* earlier keys a token sees. That is
information from the future, so the variant declares ``causal=False``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.attention import (
    Attention,
    AttentionContext,
    AttentionDims,
    AttentionOutput,
    Capabilities,
    default_scale,
    project_heads,
    register_preset,
    register_variant,
)

SELF_PENALTY = 1e5  # the paper's mask value for a token attending to itself


@dataclass
class ReformerOptions:
    n_hashes: int = 1  # hashing rounds; each round buckets, sorts and chunks anew
    n_buckets: int = 0  # per round: even (argmax over ±xR); 1 = no hashing; 0 = paper's rule
    #   n_buckets = 2·max_len/chunk_len (rounded up to even), i.e. buckets of ~chunk_len/2
    chunk_len: int = 16  # tokens per sorted chunk; a chunk also sees the previous one

    def __post_init__(self) -> None:
        if self.n_hashes < 1:
            raise ValueError(f"n_hashes must be >= 1, got {self.n_hashes}")
        if self.n_buckets < 0 or (self.n_buckets > 1 and self.n_buckets % 2):
            raise ValueError(f"n_buckets must be 0 (auto), 1 or even, got {self.n_buckets}")
        if self.chunk_len < 1:
            raise ValueError(f"chunk_len must be >= 1, got {self.chunk_len}")


def look_back(t: Tensor, fill: float | bool) -> Tensor:
    """(B, H, R, nc, c, ...) → (B, H, R, nc, 2c, ...): each chunk, then the one before it.

    The first chunk's "previous chunk" is filled with ``fill`` (no wrap-around).
    """
    prev = torch.cat([torch.full_like(t[:, :, :, :1], fill), t[:, :, :, :-1]], dim=3)
    return torch.cat([t, prev], dim=4)


@register_variant(
    "reformer",
    paper='Kitaev, Kaiser & Levskaya 2020, "Reformer: The Efficient Transformer"',
    summary="shared-QK attention within LSH-sorted chunks, multi-round",
)
class Reformer(Attention):
    """LSH attention: hash, sort, chunk, attend to own and previous chunk, merge rounds."""

    Options = ReformerOptions
    capabilities = Capabilities(
        causal=False,  # the sort lets later tokens move earlier tokens' chunks (see module doc)
        cross_attention=False,
        padding_mask=True,
        time_complexity="O(r·n·(c·d + log n))",
        memory_complexity="O(r·n·c)",
    )

    def __init__(self, dims: AttentionDims, options: ReformerOptions | None = None) -> None:
        super().__init__(dims, options)
        o: ReformerOptions = self.options
        auto = 2 * math.ceil(dims.max_len / o.chunk_len)  # 2·max_len/chunk_len, even
        self.n_buckets = o.n_buckets or max(auto, 2)
        inner = dims.n_heads * dims.head_dim
        self.qk_proj = nn.Linear(dims.d_model, inner)
        self.v_proj = nn.Linear(dims.d_model, inner)
        self.out_proj = nn.Linear(inner, dims.d_model)
        self.attn_dropout = nn.Dropout(dims.dropout)
        # the rotations used in eval mode (training draws fresh ones every call)
        self.register_buffer("eval_rotations", self.draw_rotations(torch.device("cpu")))

    @classmethod
    def dense_reason(cls, options: ReformerOptions, n: int) -> str | None:
        """chunk_len ≥ n: one chunk holds every token, so hashing and sorting select
        nothing — dense shared-QK attention (oneself only when no other key is left)."""
        if options.chunk_len >= n:
            return f"chunk_len {options.chunk_len} ≥ n = {n}: one chunk, the LSH selects nothing"
        return None

    def draw_rotations(self, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        o: ReformerOptions = self.options
        shape = (self.dims.n_heads, self.dims.head_dim, o.n_hashes, max(self.n_buckets // 2, 1))
        return torch.randn(shape, device=device, dtype=dtype)  # (H, dh, R, n_buckets/2)

    def hash(self, qk: Tensor) -> Tensor:
        """Bucket of every token in every round: (B, H, T, dh) → (B, H, R, T) in [0, n_buckets)."""
        o: ReformerOptions = self.options
        b, h, t, _ = qk.shape
        if self.n_buckets == 1:
            return torch.zeros(b, h, o.n_hashes, t, dtype=torch.long, device=qk.device)
        qk = qk.detach()
        rot = (
            self.draw_rotations(qk.device, qk.dtype)
            if self.training
            else self.eval_rotations.to(qk.dtype)
        )
        proj = torch.einsum("bhtd,hdrk->bhrtk", qk, rot)  # (B, H, R, T, n_buckets/2)
        return torch.cat([proj, -proj], dim=-1).argmax(dim=-1)  # (B, H, R, T)

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        if source is not None:
            raise ValueError("reformer: shared-QK LSH attention has no cross-attention")
        o: ReformerOptions = self.options
        bsz, t, _ = x.shape
        h, dh, r = self.dims.n_heads, self.dims.head_dim, o.n_hashes
        c = max(min(o.chunk_len, t), 1)
        n = t + (-t) % c  # length padded to whole chunks
        n_chunks = n // c

        def heads(y: Tensor) -> Tensor:  # (B, T, H·dh) → (B, H, n, dh), zero-padded to n
            y = y.view(bsz, t, h, dh).transpose(1, 2)
            return F.pad(y, (0, 0, 0, n - t))

        qk = heads(self.qk_proj(x))  # (B, H, n, dh)
        v = heads(self.v_proj(x))  # (B, H, n, dh)
        valid = torch.ones(bsz, t, dtype=torch.bool, device=x.device)
        if ctx.mask.key_padding is not None:
            valid = ctx.mask.key_padding.to(device=x.device, dtype=torch.bool)
        valid = F.pad(valid, (0, n - t), value=False)  # (B, n)

        # hash; padding goes to an extra last bucket so it sorts after every real token
        buckets = self.hash(qk).masked_fill(~valid[:, None, None, :], self.n_buckets)  # (B,H,R,n)
        pos = torch.arange(n, device=x.device)
        order = (buckets * n + pos).argsort(dim=-1)  # (B, H, R, n): sorted slot → token
        rank = order.argsort(dim=-1)  # (B, H, R, n): token → sorted slot
        chunk_of = rank // c  # (B, H, R, n): each token's chunk in each round

        # sort queries and values into chunks (one gather for both)
        qkv = torch.cat([qk, v], dim=-1)[:, :, None].expand(-1, -1, r, -1, -1)  # (B,H,R,n,2dh)
        qkv = qkv.gather(3, order[..., None].expand(-1, -1, -1, -1, 2 * dh))
        q_s, v_s = qkv.view(bsz, h, r, n_chunks, c, 2 * dh).split(dh, dim=-1)  # (B,H,R,nc,c,dh)
        k_s = F.normalize(q_s, dim=-1)  # keys: unit-length queries
        kv_w = look_back(torch.cat([k_s, v_s], dim=-1), 0.0)  # (B, H, R, nc, 2c, 2dh)
        k_w, v_w = kv_w.split(dh, dim=-1)  # (B, H, R, nc, 2c, dh)
        q_tok = order.view(bsz, h, r, n_chunks, c)  # token index of each query slot
        k_tok = look_back(q_tok, 0)  # (B, H, R, nc, 2c)
        q_valid = valid[:, None, None, :].expand(-1, h, r, -1).gather(3, order)  # (B, H, R, n)
        k_valid = look_back(q_valid.view(bsz, h, r, n_chunks, c), False)  # (B, H, R, nc, 2c)

        scores = (q_s * default_scale(dh)) @ k_w.transpose(-2, -1)  # (B, H, R, nc, c, 2c)
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
        allowed = k_valid[..., None, :]  # (B, H, R, nc, 1, 2c)
        if ctx.mask.causal:
            allowed = allowed & (k_tok[..., None, :] <= q_tok[..., :, None] + ctx.mask.memory_len)
        has_key = allowed.any(dim=-1, keepdim=True)  # (B, H, R, nc, c or 1, 1)
        # the additive mask −m_ij − log N_ij: −10⁵ on oneself, −∞ where not allowed
        is_self = k_tok[..., None, :] == q_tok[..., :, None]  # (B, H, R, nc, c, 2c)
        if r > 1:  # count every key once across rounds (oneself is masked anyway)
            bias = self.round_counts(chunk_of, q_tok, k_tok).to(scores.dtype)
            bias = bias.reciprocal_().log_().masked_fill_(is_self, -SELF_PENALTY)
        else:
            bias = torch.where(is_self, -SELF_PENALTY, 0.0).to(scores.dtype)
        bias.masked_fill_(~allowed, float("-inf"))
        bias.masked_fill_(~has_key, 0.0)  # rows with no key stay finite; zeroed below
        scores = scores + bias
        probs = torch.softmax(scores, dim=-1)  # (B, H, R, nc, c, 2c)
        out_s = self.attn_dropout(probs).to(v_w.dtype) @ v_w  # (B, H, R, nc, c, dh)
        out_s = out_s * has_key  # a query with no allowed key gets zeros

        # back to token order, then weight the rounds by exp(z⁽ʳ⁾ − logsumexp_r z⁽ʳ⁾)
        unsort = rank[..., None].expand(-1, -1, -1, -1, dh)  # (B, H, R, n, dh)
        out_r = out_s.reshape(bsz, h, r, n, dh).gather(3, unsort)
        if r == 1:
            w = torch.ones(bsz, h, 1, n, dtype=scores.dtype, device=x.device)
            out = out_r[:, :, 0, :t]  # (B, H, T, dh)
        else:
            z = scores.logsumexp(dim=-1, keepdim=True).masked_fill(~has_key, float("-inf"))
            z = z.expand(-1, -1, -1, -1, c, -1).reshape(bsz, h, r, n).gather(3, rank)
            z = z.masked_fill(torch.isinf(z).all(dim=2, keepdim=True), 0.0)  # (B, H, R, n)
            w = torch.softmax(z, dim=2)  # (B, H, R, n)
            out = (w[..., None].to(out_r.dtype) * out_r).sum(dim=2)[:, :, :t]  # (B, H, T, dh)

        weights = None
        if ctx.need_weights:  # dense (B, H, T, T), for analysis only
            w_s = w.gather(3, order).view(bsz, h, r, n_chunks, c, 1)
            flat = (q_tok[..., :, None] * n + k_tok[..., None, :]).reshape(bsz, h, -1)
            dense = torch.zeros(bsz, h, n * n, dtype=probs.dtype, device=x.device)
            mass = w_s * probs * has_key  # (B, H, R, nc, c, 2c)
            dense.scatter_add_(-1, flat, mass.reshape(bsz, h, -1))
            weights = dense.view(bsz, h, n, n)[:, :, :t, :t]
        return AttentionOutput(
            out=project_heads(out, self.out_proj, ctx.head_mask), weights=weights
        )

    @staticmethod
    def round_counts(chunk_of: Tensor, q_tok: Tensor, k_tok: Tensor) -> Tensor:
        """N_ij: in how many rounds key j lies in query i's window (uint8).

        chunk_of: (B, H, R, n); q_tok: (B, H, R, nc, c); k_tok: (B, H, R, nc, 2c).
        Returns (B, H, R, nc, c, 2c); meaningful where j is in this round's window.
        """
        bsz, h, r, _ = chunk_of.shape
        small = torch.int16 if chunk_of.shape[-1] < 2**14 else torch.int32  # chunk ids < n
        chunk_of = chunk_of.to(small)
        counts = torch.ones(*q_tok.shape, k_tok.shape[-1], dtype=torch.uint8, device=q_tok.device)
        for shift in range(1, r):  # every other round (own round: j is in the window)
            table = chunk_of.roll(-shift, dims=2)  # (B, H, R, n): round r + shift
            cq = table.gather(3, q_tok.reshape(bsz, h, r, -1)).view(q_tok.shape)
            ck = table.gather(3, k_tok.reshape(bsz, h, r, -1)).view(k_tok.shape)
            gap = cq[..., :, None] - ck[..., None, :]  # (B, H, R, nc, c, 2c)
            counts += (gap >> 1) == 0  # gap ∈ {0, 1}: own chunk or the one before
        return counts


register_preset("reformer-2h", "reformer", n_hashes=2, summary="LSH attention, 2 hash rounds")
register_preset("reformer-4h", "reformer", n_hashes=4, summary="LSH attention, 4 hash rounds")
