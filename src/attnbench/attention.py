"""The one interface every attention variant implements, and the variant registry.

A variant is an ``nn.Module`` subclass of :class:`Attention` in its own file under
``attnbench/variants/``. The shared Transformer blocks (:mod:`attnbench.model`)
build it with :class:`AttentionDims` plus the variant's own options dataclass and
call it as ``attn(x, source, ctx)``; they never look at its name.

Most variants change only how the heads mix values, so they subclass
:class:`MultiHeadAttention` and override :meth:`MultiHeadAttention.attend`, which
receives per-head ``q, k, v`` and the mask and returns the per-head output and
(optionally) the attention weights. Variants that need more — their own
projections (Linformer, Reformer's shared QK), positions (TUPE,
Transformer-XL), recurrent memory (Transformer-XL), an auxiliary loss
(SparseBERT's mask penalty) — override ``forward`` or use the fields of
:class:`AttentionContext` and :class:`AttentionOutput`; the signature stays the same.

Registration happens where the class is defined::

    @register_variant("vanilla", paper="Vaswani et al. 2017, ...")
    class Vanilla(MultiHeadAttention): ...

    register_preset("topk-8", "topk", k=8)   # a named setting of another variant
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.options import build_options
from attnbench.registry import Registry, RegistryError, caller_origin

# ---------------------------------------------------------------------------------------
# Position schemes (the profile's ``model.positions``)
# ---------------------------------------------------------------------------------------
# learned / sinusoidal: absolute positions added to the input embedding; rope: q and k of
# each head rotated by their positions (MultiHeadAttention.forward); alibi: a per-head
# linear distance penalty added to the scores (AttentionMask.bias); none: nothing (NoPE).
POSITION_SCHEMES = ("learned", "sinusoidal", "rope", "alibi", "none")
ABSOLUTE_SCHEMES = frozenset({"learned", "sinusoidal"})  # added to the input embedding
INPUT_SCHEMES = ABSOLUTE_SCHEMES | {"none"}  # need nothing from the attention itself
ROPE_BASE = 10000.0  # θ_i = base^(−2i/d_h) (Su et al. 2021)


def rope_frequencies(head_dim: int, base: float = ROPE_BASE) -> Tensor:
    """θ_i = base^(−2i/d_h) for i = 0 … d_h/2 − 1: (d_h/2,) float32 (RoFormer eq. 15)."""
    if head_dim % 2:
        raise ValueError(f"rope rotates pairs of dimensions: head_dim must be even, got {head_dim}")
    return base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


def rope_rotate(x: Tensor, positions: Tensor, freqs: Tensor) -> Tensor:
    """Rotate each pair (x_2i, x_2i+1) of ``x`` (…, n, d_h) by the angle p·θ_i.

    ``positions``: (n,) the positions of the rows; ``freqs``: θ from
    :func:`rope_frequencies`. RoFormer's R^d_{Θ,p} x (eq. 34): ⟨R_m q, R_n k⟩ depends on
    q, k and m − n only. Angles are computed in float32, the product in ``x``'s dtype.
    """
    angles = positions.to(device=x.device, dtype=torch.float32)[:, None] * freqs.to(x.device)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)  # (n, d_h/2)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi's head-specific slopes m_h, (H,) float32 (Press, Smith & Lewis 2022, §3).

    H a power of two: the geometric sequence m_h = 2^(−8h/H), h = 1 … H. Otherwise the
    paper's rule: the slopes of the closest smaller power of two n, then every other slope
    of the 2n-head sequence, first to last, until there are H.
    """
    if n_heads < 1:
        raise ValueError(f"n_heads must be positive, got {n_heads}")

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    closest = 1 << (n_heads.bit_length() - 1)  # the largest power of two ≤ H
    slopes = geometric(closest) + geometric(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


# ---------------------------------------------------------------------------------------
# What a variant declares about itself
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Capabilities:
    """What a variant can do; tasks state what they need and :func:`check_support` compares.

    ``positions`` says who encodes token order: ``"absolute"`` — the model applies the
    profile's position scheme (``model.positions``, see :data:`POSITION_SCHEMES`);
    ``"own"`` — the variant encodes positions itself (relative or untied schemes) from
    ``ctx.positions``, and the model adds nothing to the input.

    ``position_schemes`` lists the model-level schemes the variant runs with; a task
    under any other scheme is ``n/a`` for it (:func:`check_support`). Unset (``None``),
    it follows ``positions``: an ``"absolute"`` variant takes the schemes that only touch
    the input (:data:`INPUT_SCHEMES`: learned, sinusoidal, none); an ``"own"`` variant
    takes learned and sinusoidal, which it *replaces* by its own encoding (the default
    profiles keep running it), and nothing else — RoPE, ALiBi or no positions would be a
    second encoding on top of its own, or a claim it cannot honour. A variant declares
    ``"rope"`` when it attends with the ``q, k`` that :meth:`MultiHeadAttention.forward`
    rotates (scores from their dot products), and ``"alibi"`` when its scores go through
    the mask's additive :meth:`AttentionMask.bias` (e.g. :func:`scaled_masked_softmax`).
    """

    causal: bool = True  # can mask the future (decoders, language modelling)
    # can see both directions (an encoder's self-attention); False: causal by construction
    # (a left-to-right recurrence), so a task whose model has an encoder gets n/a
    bidirectional: bool = True
    cross_attention: bool = True  # keys/values from another sequence of another length
    padding_mask: bool = True  # honours a key padding mask (variable-length batches)
    positions: str = "absolute"  # "absolute" | "own"
    recurrent: bool = False  # carries state across segments (ctx.state / AttentionOutput.state)
    variable_length: bool = True  # False: every batch is padded to ``dims.max_len`` for it
    max_length: int | None = None  # a hard limit on length, if any (besides ``max_len``)
    # False: output i depends on input i only — no token mixing at all (an attention-free
    # control); the leaderboard identifies controls by this, never by name
    mixes_tokens: bool = True
    # True: computes exact softmax attention, so the efficiency sweep's FLOP count is its real
    # work; other variants' rates there are the equivalent rate of exact attention
    exact_softmax: bool = False
    time_complexity: str = "O(n²·d)"
    memory_complexity: str = "O(n²)"
    # model-level position schemes it runs with (None: from ``positions``, see above)
    position_schemes: frozenset[str] | None = None

    def __post_init__(self) -> None:
        schemes = self.position_schemes
        if schemes is None:
            schemes = INPUT_SCHEMES if self.positions == "absolute" else ABSOLUTE_SCHEMES
        schemes = frozenset(schemes)
        unknown = sorted(schemes - set(POSITION_SCHEMES))
        if unknown:
            raise ValueError(
                f"position_schemes {unknown} unknown; valid: {', '.join(POSITION_SCHEMES)}"
            )
        object.__setattr__(self, "position_schemes", schemes)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["position_schemes"] = sorted(self.position_schemes or ())  # JSON: a sorted list
        return out


@dataclass(frozen=True)
class AttentionDims:
    """Sizes the model hands to every attention module it builds."""

    d_model: int  # width of the residual stream
    n_heads: int
    head_dim: int  # per-head width; usually d_model // n_heads
    max_len: int  # longest sequence this model will see (positions, Linformer's E/F, ...)
    dropout: float = 0.0  # dropout on attention weights
    layer_index: int = 0
    n_layers: int = 1
    is_cross: bool = False  # built as encoder–decoder cross-attention
    is_causal: bool = False  # built for a causal stack (decoder self-attention, LM)
    # position 0 of every input is a [CLS] token (the classification heads' inputs); a
    # variant that treats [CLS] apart (TUPE's untying) does so only then
    first_token_cls: bool = False
    # the model's position scheme (profile model.positions, one of POSITION_SCHEMES):
    # MultiHeadAttention rotates q and k under "rope" (not in cross-attention)
    position_scheme: str = "learned"
    # One dict per stack, the same object for every layer: a variant that shares
    # parameters across layers (TUPE's positional term, say) keeps them here.
    shared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class AttentionMask:
    """Which keys each query may see, in a form every variant can use.

    Dense variants call :meth:`allowed`; linear-time variants read ``causal`` and
    ``key_padding`` directly. ``memory_len`` counts keys that precede the current
    segment (Transformer-XL memory): query ``i`` sits at key position ``memory_len + i``.

    ``alibi_slopes`` (H,) carries ALiBi (the ``alibi`` position scheme): a score bias
    −m_h·|i − j| per head, part of :meth:`bias` (and so of :func:`scaled_masked_softmax`)
    but not of :meth:`allowed`, which stays the boolean pattern; only variants that
    declare ``"alibi"`` in ``Capabilities.position_schemes`` are built under it.
    """

    causal: bool = False
    key_padding: Tensor | None = None  # (B, S) bool, True = a real token
    memory_len: int = 0
    alibi_slopes: Tensor | None = None  # (H,) ALiBi slopes m_h, or None (no ALiBi)
    # What :meth:`allowed`, :meth:`bias`, :meth:`position_bias` and :meth:`has_empty_rows`
    # built, so the layers of a stack (which share one mask per forward) build each once.
    _cache: dict[tuple[Any, ...], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _cached(self, key: tuple[Any, ...], build: Any) -> Any:
        # keyed by the fields too, so a mask whose fields change is rebuilt; the cache
        # keeps key_padding alive, so its id() cannot be reused by another tensor
        pad, slopes = self.key_padding, self.alibi_slopes
        full = (
            *key,
            self.causal,
            self.memory_len,
            id(pad),
            None if pad is None else pad._version,
            id(slopes),
            None if slopes is None else slopes._version,
        )
        hit = self._cache.get(full)
        if hit is None:
            hit = self._cache[full] = ((pad, slopes), build())
        return hit[1]

    def allowed(self, q_len: int, k_len: int, device: torch.device) -> Tensor | None:
        """Boolean mask broadcastable to (B, H, T, S), True where attention is allowed.

        ``None`` means everything is allowed.
        """
        return self._cached(
            ("allowed", q_len, k_len, torch.device(device)),
            lambda: self._build_allowed(q_len, k_len, device),
        )

    def bias(
        self, q_len: int, k_len: int, device: torch.device, dtype: torch.dtype
    ) -> Tensor | None:
        """Additive mask broadcastable to (B, H, T, S): 0 where allowed, −∞ elsewhere,
        plus the ALiBi term (:meth:`position_bias`) when the mask carries one.

        ``None`` means everything is allowed and there is no ALiBi. Without ALiBi,
        ``scores + bias`` equals ``scores.masked_fill(~allowed, -inf)`` exactly, and its
        gradient needs no mask.
        """

        def build() -> Tensor | None:
            allowed = self.allowed(q_len, k_len, device)
            alibi = self.position_bias(q_len, k_len, device, dtype)
            if allowed is None:
                return alibi
            if alibi is None:
                zeros = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
                return zeros.masked_fill_(~allowed, float("-inf"))
            return alibi.masked_fill(~allowed, float("-inf"))  # (B | 1, H, T, S)

        return self._cached(("bias", q_len, k_len, torch.device(device), dtype), build)

    def position_bias(
        self, q_len: int, k_len: int, device: torch.device, dtype: torch.dtype
    ) -> Tensor | None:
        """ALiBi's score bias (1, H, T, S): −m_h·|i − j|, or ``None`` without ALiBi.

        Query i sits at key position ``memory_len + i``. Under a causal mask the allowed
        keys have j ≤ i, where this is the paper's −m_h·(i − j); the others are masked.
        """
        given = self.alibi_slopes
        if given is None:
            return None

        def build() -> Tensor:
            q_pos = torch.arange(q_len, device=device)[:, None] + self.memory_len
            k_pos = torch.arange(k_len, device=device)[None, :]
            distance = (q_pos - k_pos).abs().to(torch.float32)  # (T, S)
            slopes = given.to(device=device, dtype=torch.float32)  # (H,)
            return (-slopes[:, None, None] * distance)[None].to(dtype)  # (1, H, T, S)

        return self._cached(("alibi", q_len, k_len, torch.device(device), dtype), build)

    def has_empty_rows(self, q_len: int, k_len: int, device: torch.device) -> bool:
        """Whether some query has no allowed key (a fully padded sequence, say).

        Without key padding a query always sees at least its own position; with it, the
        answer needs one look at the mask (a host sync on a GPU), made once per mask.
        """
        if self.key_padding is None:
            return False

        def build() -> bool:
            allowed = self.allowed(q_len, k_len, device)
            assert allowed is not None
            return not bool(allowed.any(dim=-1).all())

        return self._cached(("empty", q_len, k_len, torch.device(device)), build)

    def _build_allowed(self, q_len: int, k_len: int, device: torch.device) -> Tensor | None:
        mask: Tensor | None = None
        if self.causal:
            q_pos = torch.arange(q_len, device=device)[:, None] + self.memory_len
            k_pos = torch.arange(k_len, device=device)[None, :]
            mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, S)
        if self.key_padding is not None:
            pad = self.key_padding[:, None, None, :].to(
                device=device, dtype=torch.bool
            )  # (B,1,1,S)
            mask = pad if mask is None else mask & pad
        return mask


@dataclass
class AttentionContext:
    """Everything besides the inputs that a variant may need for one call.

    Fields a variant does not use are ignored, so new needs are met by a new field
    here, not by a new argument on every variant.
    """

    mask: AttentionMask = field(default_factory=AttentionMask)
    positions: Tensor | None = None  # (T,) absolute positions of the queries
    state: Any = None  # this layer's state from the previous segment (recurrent variants)
    head_mask: Tensor | None = None  # (H,) 1 = keep head, 0 = ablate (head-ablation studies)
    need_weights: bool = False  # return attention weights for analysis


@dataclass
class AttentionOutput:
    out: Tensor  # (B, T, d_model)
    weights: Tensor | None = None  # (B, H, T, S) when asked for and the variant has them
    state: Any = None  # state for the next segment (recurrent variants)
    aux_loss: Tensor | None = None  # added to the task loss (e.g. a sparsity penalty)


@dataclass
class NoOptions:
    """For variants without knobs."""


class Attention(nn.Module):
    """Base class of every attention variant.

    Subclasses set ``Options`` (a dataclass of knobs, defaults commented) and
    ``capabilities``, accept ``(dims, options)`` in ``__init__`` and implement
    ``forward(x, source, ctx) -> AttentionOutput`` where ``x`` is (B, T, d_model)
    queries and ``source`` is (B, S, d_model) keys/values for cross-attention or
    ``None`` for self-attention.
    """

    Options: ClassVar[type] = NoOptions
    capabilities: ClassVar[Capabilities] = Capabilities()
    # Attributes naming structural parameters (or modules holding them) that weight decay
    # must not reach (relative position biases, mixing matrices initialised at the
    # identity, learned masks; an attribute that is None is skipped): decay
    # would pull them toward 0, a different prior for each variant. The optimiser
    # (attnbench.train.make_optimizer) honours this on any submodule that declares it.
    decay_exempt: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dims: AttentionDims, options: Any = None) -> None:
        super().__init__()
        self.dims = dims
        self.options = options if options is not None else self.Options()

    @classmethod
    def dense_reason(cls, options: Any, n: int) -> str | None:
        """Why, with ``options``, this variant is dense attention at length ``n``, or ``None``.

        A sparse or compressed variant whose pattern covers every query–key pair at
        length ``n`` (a window of at least the sequence, k ≥ n kept keys, as many
        landmarks as tokens …) computes dense softmax attention or a reparametrisation
        of it there, so a result at that length says nothing about its mechanism. The
        message states the rule with numbers, e.g. ``"window 32 ≥ n − 1 = 24"``.

        ``n`` is both the sequence length and the model's ``max_len`` (as in a run,
        where the model is built for the task's longest sequence). The rule holds under
        causal masking too (it then covers every pair j ≤ i). Default: never.
        """
        return None

    @classmethod
    def state_size(cls, options: Any, dims: AttentionDims) -> int | None:
        """Elements of the recurrent state one layer carries per sequence, or ``None``.

        A linear-time recurrent variant reads a sequence with a fixed-size state (e.g. the
        d_k × d_v matrix per head of linear attention); Transformer-XL carries a memory of
        ``mem_len`` hidden vectors. Softmax attention has no such state (its key–value
        cache grows with the length): ``None``, the default. Records carry it in bytes, so
        quality can be plotted against state size.
        """
        return None

    @classmethod
    def unsupported_dims(cls, options: Any, dims: AttentionDims) -> str | None:
        """Why, with ``options``, this variant cannot run a model of ``dims``, or ``None``.

        A pattern that splits or mixes heads needs several of them (differential
        attention's pairs, talking heads, the Sparse Transformer's head split); a job
        whose model has too few is ``n/a`` with this reason, e.g. ``"needs an even
        n_heads (heads='half'); the model has 1"``. Default: ``None``.
        """
        return None

    @classmethod
    def kv_cache_size(cls, options: Any, dims: AttentionDims) -> int | None:
        """Elements one layer caches per token to decode (keys and values), or ``None``.

        Softmax attention keeps every past key and value: 2 · heads · head_dim per token
        (:class:`MultiHeadAttention`'s default). Key/value sharing (GQA, MQA) keeps fewer;
        a variant decoding from a fixed-size state (:meth:`state_size`) keeps none. Records
        and the efficiency sweep carry it in bytes. Default here: ``None`` (not declared).
        """
        return None

    @classmethod
    def memory_len(cls, options: Any) -> int:
        """Positions of earlier segments a recurrent variant keeps as memory, with ``options``.

        A task that reads a long text segment by segment (the LM's recurrent evaluation)
        plans its warm-up from this; 0 means no memory. Default: 0. A variant whose
        capabilities say ``recurrent`` overrides it.
        """
        return 0

    def forward(  # pragma: no cover - interface
        self, x: Tensor, source: Tensor | None, ctx: AttentionContext
    ) -> AttentionOutput:
        raise NotImplementedError


class MultiHeadAttention(Attention):
    """Standard multi-head plumbing around a replaceable ``attend`` step.

    ``forward`` = project (Q = xW_Q, K = sW_K, V = sW_V) → split heads → ``attend``
    → optional head mask → merge heads → output projection W_O.
    """

    def __init__(self, dims: AttentionDims, options: Any = None) -> None:
        super().__init__(dims, options)
        inner = dims.n_heads * dims.head_dim
        self.q_proj = nn.Linear(dims.d_model, inner)
        self.k_proj = nn.Linear(dims.d_model, inner)
        self.v_proj = nn.Linear(dims.d_model, inner)
        self.out_proj = nn.Linear(inner, dims.d_model)
        self.attn_dropout = nn.Dropout(dims.dropout)
        rope = dims.position_scheme == "rope" and not dims.is_cross  # self-attention only
        self.rope_freqs: Tensor | None  # θ_i under RoPE, else None (a buffer: follows .to())
        self.register_buffer(
            "rope_freqs", rope_frequencies(dims.head_dim) if rope else None, persistent=False
        )

    @classmethod
    def kv_cache_size(cls, options: Any, dims: AttentionDims) -> int | None:
        """Every past key and value of every head: 2 · heads · head_dim elements per token;
        ``None`` for a variant that decodes from a fixed-size state (it declares
        :meth:`state_size` and keeps no positional memory, :meth:`memory_len`)."""
        if cls.state_size(options, dims) is not None and cls.memory_len(options) == 0:
            return None
        return 2 * dims.n_heads * dims.head_dim

    def split_heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.dims.n_heads, self.dims.head_dim).transpose(1, 2)  # (B, H, n, dh)

    def merge_heads(self, t: Tensor) -> Tensor:
        b, h, n, dh = t.shape
        return t.transpose(1, 2).reshape(b, n, h * dh)  # (B, n, H·dh)

    def forward(self, x: Tensor, source: Tensor | None, ctx: AttentionContext) -> AttentionOutput:
        kv = x if source is None else source
        q = self.split_heads(self.q_proj(x))  # (B, H, T, dh)
        k = self.split_heads(self.k_proj(kv))  # (B, H, S, dh)
        v = self.split_heads(self.v_proj(kv))  # (B, H, S, dh)
        q, k = self.rotate(q, k, ctx)  # RoPE, when the model's scheme is rope
        out, weights = self.attend(q, k, v, ctx)  # (B, H, T, dh), (B, H, T, S) | None
        return AttentionOutput(
            out=self.project_out(out, ctx.head_mask),
            weights=weights if ctx.need_weights else None,
        )

    def project_out(self, out: Tensor, head_mask: Tensor | None) -> Tensor:
        """(B, H, T, dh) per-head outputs → (B, T, d_model), honouring the head mask."""
        return project_heads(out, self.out_proj, head_mask)

    def rotate(self, q: Tensor, k: Tensor, ctx: AttentionContext) -> tuple[Tensor, Tensor]:
        """RoPE (``dims.position_scheme == "rope"``): q and k rotated by their positions.

        Queries sit at ``ctx.positions`` (default 0 … T − 1, after ``memory_len``
        earlier keys); keys of self-attention at the same positions, memory keys
        (S = memory_len + T) contiguously before them. Cross-attention and the other
        schemes return q, k unchanged (no work). A variant that overrides ``forward``
        calls this itself before it declares ``"rope"``.
        """
        freqs = self.rope_freqs
        if freqs is None:
            return q, k
        if freqs.dtype != torch.float32:  # a model cast to half precision: θ from scratch
            freqs = rope_frequencies(q.shape[-1]).to(q.device)
        t, s = q.shape[-2], k.shape[-2]
        memory = ctx.mask.memory_len
        q_pos = ctx.positions
        if q_pos is None:
            q_pos = torch.arange(t, device=q.device) + memory
        q_pos = q_pos.reshape(t).to(q.device)
        if s == t:
            k_pos = q_pos
        elif s == memory + t:
            before = q_pos[:1] - memory + torch.arange(memory, device=q.device)
            k_pos = torch.cat([before, q_pos])
        else:
            raise ValueError(
                f"rope: {s} keys for {t} queries and memory_len {memory}; self-attention "
                "needs S = T or S = memory_len + T"
            )
        return rope_rotate(q, q_pos, freqs), rope_rotate(k, k_pos, freqs)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:  # pragma: no cover - interface
        raise NotImplementedError


def project_heads(out: Tensor, out_proj: nn.Linear, head_mask: Tensor | None) -> Tensor:
    """Merge heads (B, H, T, dh) → (B, T, H·dh) and apply W_O, with head gates ξ_h.

    MultiHead = Σ_h ξ_h · head_h W_O^h (Michel et al. 2019). W_O's bias is shared by the
    heads, so it is dropped when every head is gated off: the sublayer then adds nothing
    and only the residual path remains. Every variant routes its output through here.
    """
    b, h, t, dh = out.shape
    if head_mask is None:
        return out_proj(out.transpose(1, 2).reshape(b, t, h * dh))
    mask = head_mask.to(out.dtype)
    merged = (out * mask[None, :, None, None]).transpose(1, 2).reshape(b, t, h * dh)
    return out_proj(merged) - out_proj.bias * (1 - mask.max())


def masked_softmax(scores: Tensor, allowed: Tensor | None) -> Tensor:
    """Softmax over the last axis restricted to ``allowed`` keys.

    A query with no allowed key (e.g. a fully padded row) gets all-zero weights
    instead of NaN.
    """
    if allowed is None:
        return F.softmax(scores, dim=-1)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = F.softmax(scores, dim=-1)
    return probs.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)


def scaled_masked_softmax(scores: Tensor, mask: AttentionMask, scale: float = 1.0) -> Tensor:
    """``masked_softmax(scores · scale, mask.allowed(T, S))``, with fewer passes over scores.

    ``scores``: (..., T, S). The scale and the mask are one pass (``bias + scale · scores``
    with the mask's cached additive :meth:`AttentionMask.bias`), and the all-zero fix-up
    of queries without an allowed key runs only when the mask has such queries. The
    weights and their gradients are :func:`masked_softmax`'s (0 + a·x rounds as a·x, and
    −∞ + a·x is −∞; identical on CPU in the tests). A mask with ALiBi adds its
    :meth:`AttentionMask.position_bias` to the scaled scores (the paper's
    softmax(q_i Kᵀ/√d + m·[−(i − 1), …, 0])).
    """
    t, s = scores.shape[-2:]
    bias = mask.bias(t, s, scores.device, scores.dtype)
    if bias is None:
        return F.softmax(scores * scale if scale != 1.0 else scores, dim=-1)
    if mask.has_empty_rows(t, s, scores.device):
        alibi = mask.position_bias(t, s, scores.device, scores.dtype)
        scaled = scores * scale if alibi is None else torch.add(alibi, scores, alpha=scale)
        return masked_softmax(scaled, mask.allowed(t, s, scores.device))
    return F.softmax(torch.add(bias, scores, alpha=scale), dim=-1)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)


# ---------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VariantSpec:
    """A registered variant: a class plus a named setting of its options.

    ``canonical`` is True for the class's own registration (:func:`register_variant`)
    and False for a named setting of it (:func:`register_preset`), whose
    ``preset_of`` names the canonical registration it derives from.
    """

    name: str
    cls: type[Attention]
    paper: str
    summary: str
    defaults: dict[str, Any]  # option values this name fixes (presets)
    canonical: bool = True  # registered with register_variant, not register_preset
    preset_of: str | None = None  # presets: the canonical variant they are a setting of

    def __post_init__(self) -> None:
        if self.canonical != (self.preset_of is None):
            raise RegistryError(
                f"variant {self.name!r}: a canonical registration has no preset_of, "
                f"a preset has one (canonical={self.canonical}, preset_of={self.preset_of!r})"
            )

    @property
    def capabilities(self) -> Capabilities:
        return self.cls.capabilities

    def options(self, overrides: dict[str, Any] | None = None) -> Any:
        """The variant's options dataclass: class defaults < preset < ``overrides``.

        Unknown option names and wrong types raise ``ValueError`` naming the valid ones.
        """
        values = {**self.defaults, **(overrides or {})}
        return build_options(self.cls.Options, values, f"variant {self.name!r}", noun="option")

    def resolved_options(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        return dataclasses.asdict(self.options(overrides))

    def build(self, dims: AttentionDims, overrides: dict[str, Any] | None = None) -> Attention:
        return self.cls(dims, self.options(overrides))

    def dense_reason(self, n: int, overrides: dict[str, Any] | None = None) -> str | None:
        """Why this variant, with its options resolved as in :meth:`options`, is dense
        attention (or a reparametrisation of it) at length ``n``; ``None`` when it is not.

        See :meth:`Attention.dense_reason`.
        """
        return self.cls.dense_reason(self.options(overrides), n)

    def state_size(
        self, dims: AttentionDims, overrides: dict[str, Any] | None = None
    ) -> int | None:
        """Recurrent-state elements per layer and sequence; see :meth:`Attention.state_size`."""
        return self.cls.state_size(self.options(overrides), dims)

    def kv_cache_size(
        self, dims: AttentionDims, overrides: dict[str, Any] | None = None
    ) -> int | None:
        """KV-cache elements per layer and token; see :meth:`Attention.kv_cache_size`."""
        return self.cls.kv_cache_size(self.options(overrides), dims)

    def memory_len(self, overrides: dict[str, Any] | None = None) -> int:
        """Recurrent memory in positions (0: none); see :meth:`Attention.memory_len`."""
        return self.cls.memory_len(self.options(overrides))

    def unsupported_dims(
        self, dims: AttentionDims, overrides: dict[str, Any] | None = None
    ) -> str | None:
        """Why this variant cannot run a model of ``dims``; see
        :meth:`Attention.unsupported_dims`."""
        return self.cls.unsupported_dims(self.options(overrides), dims)


VARIANTS: Registry[VariantSpec] = Registry(
    "variant", "attnbench.variants", "attnbench.variants", "ATTNBENCH_VARIANT_PATH"
)


def register_variant(name: str, *, paper: str, summary: str = "", **defaults: Any):
    """Class decorator: register ``cls`` under ``name`` (optionally fixing option values).

    This is the class's canonical registration (``VariantSpec.canonical``); further
    settings of it are presets (:func:`register_preset`).
    """
    origin = caller_origin()

    def wrap(cls: type[Attention]) -> type[Attention]:
        if not (isinstance(cls, type) and issubclass(cls, Attention)):
            raise RegistryError(f"variant {name!r}: {cls!r} is not a subclass of Attention")
        first_doc_line = next(iter((cls.__doc__ or "").strip().splitlines()), "")
        spec = VariantSpec(name, cls, paper, summary or first_doc_line, dict(defaults))
        spec.options()  # fail at import time on bad defaults
        VARIANTS.add(name, spec, origin)
        return cls

    return wrap


def register_preset(
    name: str, base: str, *, summary: str = "", paper: str = "", **values: Any
) -> VariantSpec:
    """Register a named setting of an already-registered variant, e.g. ``topk-8``.

    ``paper`` overrides the base's citation when the setting comes from another paper.
    The spec is not canonical; its ``preset_of`` is the base's canonical registration
    (the base itself, or what the base is a preset of).
    """
    origin = caller_origin()
    try:
        parent = VARIANTS._entries[base]  # no discovery: the base sits in the same module
    except KeyError:
        raise RegistryError(f"preset {name!r}: base variant {base!r} is not registered") from None
    spec = VariantSpec(
        name,
        parent.cls,
        paper or parent.paper,
        summary or parent.summary,
        {**parent.defaults, **values},
        canonical=False,
        preset_of=parent.name if parent.canonical else parent.preset_of,
    )
    spec.options()
    return VARIANTS.add(name, spec, origin)


def get_variant(name: str) -> VariantSpec:
    return VARIANTS.get(name)


def variant_names() -> list[str]:
    return VARIANTS.names()


# ---------------------------------------------------------------------------------------
# Variant × task compatibility
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Requirements:
    """What a task needs from the attention (declared by the task)."""

    causal: bool = False
    cross_attention: bool = False  # False: cross-attention may fall back to standard attention
    padding_mask: bool = False
    variable_length: bool = False  # True: the task cannot pad its inputs to one fixed length
    max_len: int = 0
    # the model's position scheme (profile model.positions; attnbench.job.build_job sets it)
    position_scheme: str = "learned"
    # some self-attention of the task's model sees both directions (an encoder), even if
    # another part is causal (translation); not causal implies it
    bidirectional: bool = False


def check_support(caps: Capabilities, req: Requirements) -> str | None:
    """``None`` if a variant with ``caps`` can run a task needing ``req``, else the reason."""
    if req.causal and not caps.causal:
        return "needs causal masking, which this variant cannot do"
    if (req.bidirectional or not req.causal) and not caps.bidirectional:
        return (
            "needs a bidirectional encoder; this variant reads left to right only "
            "(causal by construction)"
        )
    if req.cross_attention and not caps.cross_attention:
        return "needs cross-attention, which this variant cannot do"
    if req.padding_mask and not caps.padding_mask:
        return "needs a key padding mask, which this variant cannot apply"
    if req.variable_length and not caps.variable_length:
        return "needs variable-length inputs; this variant needs fixed-length ones"
    if caps.max_length is not None and req.max_len > caps.max_length:
        return f"needs length {req.max_len}; this variant supports at most {caps.max_length}"
    return check_position_scheme(caps, req)


def check_position_scheme(caps: Capabilities, req: Requirements) -> str | None:
    """``None`` if a variant with ``caps`` runs under ``req.position_scheme``, else why not.

    Worded like :func:`check_support`'s reasons: "[the task] needs …".
    """
    scheme = req.position_scheme
    if scheme == "none" and (req.bidirectional or not req.causal):
        return (
            "needs position scheme 'none' (NoPE) in a bidirectional (non-causal) stack, "
            "which without positions is permutation-invariant: NoPE needs a causal model"
        )
    schemes = caps.position_schemes or frozenset()
    if scheme in schemes:
        return None
    supported = ", ".join(s for s in POSITION_SCHEMES if s in schemes) or "(none)"
    if caps.positions == "own":
        return (
            f"needs position scheme {scheme!r}; this variant encodes positions itself, "
            f"in place of only: {supported}"
        )
    return (
        f"needs position scheme {scheme!r}, which this variant does not declare "
        f"(it supports: {supported})"
    )
