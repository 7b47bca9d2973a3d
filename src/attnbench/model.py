"""Shared Transformer blocks and task heads.

Every block receives its attention as a built module (from a :class:`VariantSpec`)
and calls it through the one interface in :mod:`attnbench.attention`; nothing
here knows or tests a variant's name. What differs between variants reaches the
model only through their declared :class:`Capabilities` (e.g. whether the model
adds absolute positions to the input).

Positions are a model-level axis (``ModelConfig.positions``, the profile's
``model.positions``): ``learned`` and ``sinusoidal`` are added to the input embedding,
``rope`` reaches the attention as ``AttentionDims.position_scheme`` (each head's q and k
rotated in :meth:`attnbench.attention.MultiHeadAttention.forward`), ``alibi`` as the
slopes on the stack's :class:`AttentionMask` (a score bias), ``none`` adds nothing. A
variant that encodes positions itself (``capabilities.positions == "own"``) gets nothing
added; a stack refuses a scheme its variant does not declare in
``capabilities.position_schemes`` (the job runner makes such a pair ``n/a`` first).

Layout (pre-LN by default, Xiong et al. 2020)::

    x → x + Attn(LN(x)) → x + CrossAttn(LN(x), memory) → x + FFN(LN(x))

Heads: :class:`SequenceClassifier` (CLS or mean pooling), :class:`PairClassifier`
(two towers, LRA Retrieval style), :class:`LanguageModel` (causal decoder) and
:class:`EncoderDecoder` (translation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.attention import (
    ABSOLUTE_SCHEMES,
    POSITION_SCHEMES,
    AttentionContext,
    AttentionDims,
    AttentionMask,
    AttentionOutput,
    VariantSpec,
    alibi_slopes,
)


@dataclass
class ModelConfig:
    """Backbone sizes; the profile sets them per task (defaults are a small CPU model)."""

    d_model: int = 64  # residual width
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128  # feed-forward hidden width; 0: no feed-forward block (attention only)
    head_dim: int | None = None  # None: d_model // n_heads
    dropout: float = 0.1  # on embeddings, residual branches and FFN
    attention_dropout: float = 0.0  # on attention weights
    # "learned" | "sinusoidal" (added to the input) | "rope" | "alibi" | "none"; a variant
    # that owns its positions replaces learned/sinusoidal and runs with nothing else
    positions: str = "learned"
    norm_first: bool = True  # pre-LN (True) or post-LN (False)
    pooling: str = "mean"  # "mean" | "cls" | "attentive" (classification heads)
    attentive_hops: int = 4  # attentive pooling: r attention hops (Lin et al. 2017)
    attentive_hidden: int = 64  # attentive pooling: d_a, width of the scoring MLP
    attentive_penalty: float = 1.0  # attentive pooling: coefficient of ‖AAᵀ − I‖²_F
    activation: str = "gelu"  # "gelu" | "relu"
    max_len: int = 512  # longest input (set by the task from its data)
    tie_embeddings: bool = True  # LM / decoder: output projection shares the embedding

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "n_layers", "max_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.d_ff < 0:
            raise ValueError(f"model.d_ff must be >= 0 (0: no feed-forward block), got {self.d_ff}")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"model.d_model ({self.d_model}) must be divisible by model.n_heads "
                    f"({self.n_heads}), or set model.head_dim"
                )
            self.head_dim = self.d_model // self.n_heads
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(
                f"model.positions='rope' rotates pairs of dimensions: head_dim "
                f"({self.head_dim}) must be even"
            )
        choices = {
            "positions": POSITION_SCHEMES,
            "pooling": ("mean", "cls", "attentive"),
            "activation": ("gelu", "relu"),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"model.{name}={getattr(self, name)!r}; valid choices: {', '.join(valid)}"
                )
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class StackOutput:
    hidden: Tensor  # (B, T, d_model), after the final norm
    aux_loss: Tensor | None = None  # sum of the variants' auxiliary losses
    weights: list[Tensor | None] = field(default_factory=list)  # per layer (B, H, T, S)
    state: list[Any] | None = None  # per layer, for recurrent variants


# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------
class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model)
        self.act = nn.GELU() if cfg.activation == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...) (Vaswani et al. 2017)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    div = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : d_model // 2]
    return table


class Embedding(nn.Module):
    """Token embedding, plus absolute positions unless the variant encodes positions itself."""

    def __init__(self, vocab_size: int, cfg: ModelConfig, add_positions: bool) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, cfg.d_model)
        self.scale = math.sqrt(cfg.d_model)
        self.add_positions = add_positions
        self.max_len = cfg.max_len
        self.positions: nn.Module | None = None
        if add_positions and cfg.positions not in ABSOLUTE_SCHEMES:
            raise ValueError(
                f"model.positions={cfg.positions!r} adds nothing to the input embedding"
            )
        if add_positions and cfg.positions == "learned":
            self.positions = nn.Embedding(cfg.max_len, cfg.d_model)
        elif add_positions:
            self.register_buffer(
                "sinusoid", sinusoidal_table(cfg.max_len, cfg.d_model), persistent=False
            )
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.tokens.weight, std=cfg.d_model**-0.5)

    def forward(self, ids: Tensor, offset: int = 0) -> Tensor:
        length = ids.shape[1]
        if offset + length > self.max_len:
            raise ValueError(
                f"sequence of length {offset + length} is longer than the model's "
                f"max_len {self.max_len}"
            )
        x = self.tokens(ids) * self.scale  # (B, T, d)
        if self.add_positions:
            pos = torch.arange(offset, offset + length, device=ids.device)
            x = x + (self.positions(pos) if self.positions is not None else self.sinusoid[pos])
        return self.dropout(x)


def adds_input_positions(cfg: ModelConfig, variant: VariantSpec) -> bool:
    """Whether the input embedding adds positions: an absolute scheme (learned,
    sinusoidal), and a variant that leaves positions to the model."""
    return variant.capabilities.positions == "absolute" and cfg.positions in ABSOLUTE_SCHEMES


def check_position_scheme(cfg: ModelConfig, variant: VariantSpec) -> None:
    """Refuse to build ``variant`` under a scheme it does not declare (it would ignore it)."""
    schemes = variant.capabilities.position_schemes or frozenset()
    if cfg.positions not in schemes:
        raise ValueError(
            f"variant {variant.name!r} does not support model.positions={cfg.positions!r} "
            f"(its capabilities.position_schemes: {', '.join(sorted(schemes)) or '(none)'})"
        )


class TransformerLayer(nn.Module):
    """One block assembled from parts: self-attention, optional cross-attention, FFN."""

    def __init__(
        self,
        cfg: ModelConfig,
        self_attn: nn.Module,
        cross_attn: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.norm_first = cfg.norm_first
        self.self_attn = self_attn
        self.cross_attn = cross_attn
        # d_ff = 0: attention-only blocks (Zoology's MQAR models have no MLP)
        self.ff = FeedForward(cfg) if cfg.d_ff > 0 else None
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model) if cross_attn is not None else None
        self.norm3 = nn.LayerNorm(cfg.d_model) if self.ff is not None else None
        self.dropout = nn.Dropout(cfg.dropout)

    def _sublayer(self, x: Tensor, norm: nn.Module, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """x + Dropout(f(LN(x))) (pre-LN) or LN(x + Dropout(f(x))) (post-LN)."""
        if self.norm_first:
            return x + self.dropout(fn(norm(x)))
        return norm(x + self.dropout(fn(x)))

    def forward(
        self,
        x: Tensor,
        ctx: AttentionContext,
        memory: Tensor | None = None,
        cross_ctx: AttentionContext | None = None,
    ) -> tuple[Tensor, list[AttentionOutput]]:
        """The new hidden states and the attention outputs (self first, then cross)."""
        outs: list[AttentionOutput] = []

        def attend(module: nn.Module, source: Tensor | None, context: AttentionContext):
            def fn(h: Tensor) -> Tensor:
                outs.append(module(h, source, context))
                return outs[-1].out

            return fn

        x = self._sublayer(x, self.norm1, attend(self.self_attn, None, ctx))
        if self.cross_attn is not None:
            assert memory is not None and cross_ctx is not None and self.norm2 is not None
            x = self._sublayer(x, self.norm2, attend(self.cross_attn, memory, cross_ctx))
        if self.ff is not None:
            assert self.norm3 is not None
            x = self._sublayer(x, self.norm3, self.ff)
        return x, outs


class TransformerStack(nn.Module):
    """N layers of one attention variant (and optionally cross-attention) with a final norm."""

    def __init__(
        self,
        cfg: ModelConfig,
        variant: VariantSpec,
        variant_options: dict[str, Any] | None = None,
        *,
        causal: bool = False,
        cross_variant: VariantSpec | None = None,
        cross_options: dict[str, Any] | None = None,
        first_token_cls: bool = False,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.causal = causal
        assert cfg.head_dim is not None
        check_position_scheme(cfg, variant)
        # ALiBi's slopes ride on the stack's self-attention mask (none in cross-attention)
        self.alibi_slopes: Tensor | None
        self.register_buffer(
            "alibi_slopes",
            alibi_slopes(cfg.n_heads) if cfg.positions == "alibi" else None,
            persistent=False,
        )
        layers = []
        shared: dict[str, Any] = {}  # parameters a variant shares across this stack's layers
        cross_shared: dict[str, Any] = {}
        for i in range(cfg.n_layers):
            dims = AttentionDims(
                d_model=cfg.d_model,
                n_heads=cfg.n_heads,
                head_dim=cfg.head_dim,
                max_len=cfg.max_len,
                dropout=cfg.attention_dropout,
                layer_index=i,
                n_layers=cfg.n_layers,
                is_causal=causal,
                first_token_cls=first_token_cls,
                position_scheme=cfg.positions,
                shared=shared,
            )
            cross = None
            if cross_variant is not None:
                cross_dims = dataclasses.replace(
                    dims, is_cross=True, is_causal=False, shared=cross_shared
                )
                cross = cross_variant.build(cross_dims, cross_options)
            layers.append(TransformerLayer(cfg, variant.build(dims, variant_options), cross))
        self.layers = nn.ModuleList(layers)
        self.final_norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()

    def forward(
        self,
        x: Tensor,
        key_padding: Tensor | None = None,
        *,
        memory: Tensor | None = None,
        memory_padding: Tensor | None = None,
        state: list[Any] | None = None,
        offset: int = 0,
        head_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> StackOutput:
        """x: (B, T, d); key_padding: (B, T) True = real token; head_mask: (L, H)."""
        positions = torch.arange(offset, offset + x.shape[1], device=x.device)
        aux: Tensor | None = None
        weights: list[Tensor | None] = []
        new_state: list[Any] = []
        mask = AttentionMask(
            causal=self.causal, key_padding=key_padding, alibi_slopes=self.alibi_slopes
        )
        cross_mask = AttentionMask(causal=False, key_padding=memory_padding)
        for i, layer in enumerate(self.layers):
            ctx = AttentionContext(
                mask=mask,
                positions=positions,
                state=state[i] if state is not None else None,
                head_mask=head_mask[i] if head_mask is not None else None,
                need_weights=need_weights,
            )
            cross_ctx = None
            if memory is not None:
                cross_ctx = AttentionContext(  # head ablation covers self-attention heads
                    mask=cross_mask,
                    need_weights=need_weights,
                )
            x, outs = layer(x, ctx, memory, cross_ctx)
            weights.append(outs[0].weights)
            new_state.append(outs[0].state)
            for o in outs:
                if o.aux_loss is not None:
                    aux = o.aux_loss if aux is None else aux + o.aux_loss
        return StackOutput(
            hidden=self.final_norm(x),
            aux_loss=aux,
            weights=weights,
            state=new_state if any(s is not None for s in new_state) else None,
        )


# ---------------------------------------------------------------------------------------
# Task heads
# ---------------------------------------------------------------------------------------
@dataclass
class ModelOutput:
    logits: Tensor
    aux_loss: Tensor | None = None
    weights: list[Tensor | None] = field(default_factory=list)
    state: list[Any] | None = None


class StructuredSelfAttentivePooling(nn.Module):
    """Lin et al. 2017, "A Structured Self-attentive Sentence Embedding".

    A = softmax(W_s2 tanh(W_s1 Hᵀ)) ∈ R^{r×n} (softmax over tokens, padding masked),
    M = A H ∈ R^{r×d}, flattened to r·d; penalty P = ‖AAᵀ − I‖²_F keeps the r hops apart.
    """

    def __init__(self, d_model: int, hidden: int, hops: int) -> None:
        super().__init__()
        self.w_s1 = nn.Linear(d_model, hidden, bias=False)
        self.w_s2 = nn.Linear(hidden, hops, bias=False)
        self.hops = hops

    def hop_weights(self, hidden: Tensor, key_padding: Tensor | None) -> Tensor:
        scores = self.w_s2(torch.tanh(self.w_s1(hidden))).transpose(1, 2)  # (B, r, T)
        if key_padding is not None:
            scores = scores.masked_fill(~key_padding[:, None, :], float("-inf"))
        return torch.softmax(scores, dim=-1)

    @staticmethod
    def penalty(a: Tensor) -> Tensor:
        """‖AAᵀ − I‖²_F averaged over the batch; a: (B, r, T)."""
        eye = torch.eye(a.shape[1], device=a.device, dtype=a.dtype)
        return ((a @ a.transpose(1, 2) - eye) ** 2).sum(dim=(1, 2)).mean()

    def forward(self, hidden: Tensor, key_padding: Tensor | None) -> tuple[Tensor, Tensor]:
        a = self.hop_weights(hidden, key_padding)  # (B, r, T)
        m = a @ hidden  # (B, r, d)
        return m.flatten(1), self.penalty(a)  # (B, r·d), scalar


class Pooler(nn.Module):
    """(B, T, d) → (B, d_out): [CLS], mean over real tokens, or structured self-attention."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.how = cfg.pooling
        self.attentive: StructuredSelfAttentivePooling | None = None
        self.penalty_coef = cfg.attentive_penalty
        self.out_dim = cfg.d_model
        if cfg.pooling == "attentive":
            self.attentive = StructuredSelfAttentivePooling(
                cfg.d_model, cfg.attentive_hidden, cfg.attentive_hops
            )
            self.out_dim = cfg.d_model * cfg.attentive_hops

    def forward(self, hidden: Tensor, key_padding: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Pooled vectors and the pooling's auxiliary loss (attentive pooling only)."""
        if self.attentive is not None:
            pooled, penalty = self.attentive(hidden, key_padding)
            return pooled, self.penalty_coef * penalty
        if self.how == "cls":
            return hidden[:, 0], None
        if key_padding is None:
            return hidden.mean(dim=1), None
        weights = key_padding.to(hidden.dtype)[..., None]  # (B, T, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0), None


class Encoder(nn.Module):
    """Embedding + bidirectional stack (``first_token_cls``: inputs start with [CLS])."""

    def __init__(
        self,
        vocab_size: int,
        cfg: ModelConfig,
        variant: VariantSpec,
        options=None,
        *,
        first_token_cls: bool = False,
    ):
        super().__init__()
        self.embed = Embedding(vocab_size, cfg, adds_input_positions(cfg, variant))
        self.stack = TransformerStack(cfg, variant, options, first_token_cls=first_token_cls)

    def forward(self, ids: Tensor, key_padding: Tensor | None, **kwargs: Any) -> StackOutput:
        return self.stack(self.embed(ids), key_padding, **kwargs)


class SequenceClassifier(nn.Module):
    """Encoder → pooling (CLS or mean) → linear classifier (LRA ListOps, Text, Image, ...).

    Its inputs start with a [CLS] token (the classification tasks' convention)."""

    def __init__(
        self, vocab_size: int, n_classes: int, cfg: ModelConfig, variant: VariantSpec, options=None
    ) -> None:
        super().__init__()
        self.encoder = Encoder(vocab_size, cfg, variant, options, first_token_cls=True)
        self.pooler = Pooler(cfg)
        self.classifier = nn.Linear(self.pooler.out_dim, n_classes)

    def forward(self, ids: Tensor, key_padding: Tensor | None = None, **kwargs: Any) -> ModelOutput:
        enc = self.encoder(ids, key_padding, **kwargs)
        pooled, penalty = self.pooler(enc.hidden, key_padding)
        return ModelOutput(self.classifier(pooled), _add(enc.aux_loss, penalty), enc.weights)


class PairClassifier(nn.Module):
    """Two towers sharing one encoder; [u, v, u⊙v, u−v] → MLP (LRA Retrieval).

    Each tower's input starts with a [CLS] token."""

    def __init__(
        self, vocab_size: int, n_classes: int, cfg: ModelConfig, variant: VariantSpec, options=None
    ) -> None:
        super().__init__()
        if cfg.d_ff <= 0:
            raise ValueError("model.d_ff must be positive for a pair classifier (its MLP head)")
        self.encoder = Encoder(vocab_size, cfg, variant, options, first_token_cls=True)
        self.pooler = Pooler(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(4 * self.pooler.out_dim, cfg.d_ff),
            nn.GELU() if cfg.activation == "gelu" else nn.ReLU(),
            nn.Linear(cfg.d_ff, n_classes),
        )

    def forward(
        self,
        ids_a: Tensor,
        ids_b: Tensor,
        padding_a: Tensor | None = None,
        padding_b: Tensor | None = None,
        **kwargs: Any,
    ) -> ModelOutput:
        enc_a = self.encoder(ids_a, padding_a, **kwargs)
        enc_b = self.encoder(ids_b, padding_b, **kwargs)
        u, pen_a = self.pooler(enc_a.hidden, padding_a)
        v, pen_b = self.pooler(enc_b.hidden, padding_b)
        aux = _add(_add(enc_a.aux_loss, enc_b.aux_loss), _add(pen_a, pen_b))
        return ModelOutput(self.mlp(torch.cat([u, v, u * v, u - v], dim=-1)), aux, enc_a.weights)


class LanguageModel(nn.Module):
    """Causal decoder-only model with a (tied) output projection."""

    causal = True  # every query attends to itself and earlier positions only

    def __init__(self, vocab_size: int, cfg: ModelConfig, variant: VariantSpec, options=None):
        super().__init__()
        self.embed = Embedding(vocab_size, cfg, adds_input_positions(cfg, variant))
        self.stack = TransformerStack(cfg, variant, options, causal=True)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.tokens.weight

    def forward(
        self, ids: Tensor, key_padding: Tensor | None = None, *, offset: int = 0, **kwargs: Any
    ) -> ModelOutput:
        out = self.stack(self.embed(ids, offset), key_padding, offset=offset, **kwargs)
        return ModelOutput(self.lm_head(out.hidden), out.aux_loss, out.weights, out.state)


class EncoderDecoder(nn.Module):
    """Encoder–decoder for translation.

    Self-attention in both stacks uses the variant (causal in the decoder);
    cross-attention uses ``cross_variant`` — the variant itself when it declares
    cross-attention support, otherwise standard attention (the caller decides and
    records which).
    """

    def __init__(
        self,
        vocab_size: int,
        cfg: ModelConfig,
        variant: VariantSpec,
        cross_variant: VariantSpec,
        options=None,
        cross_options=None,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(vocab_size, cfg, variant, options)
        self.decoder_embed = Embedding(vocab_size, cfg, adds_input_positions(cfg, variant))
        self.decoder_embed.tokens = self.encoder.embed.tokens  # shared vocabulary
        self.decoder = TransformerStack(
            cfg,
            variant,
            options,
            causal=True,
            cross_variant=cross_variant,
            cross_options=cross_options,
        )
        self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.encoder.embed.tokens.weight

    def encode(self, src: Tensor, src_padding: Tensor | None = None) -> StackOutput:
        return self.encoder(src, src_padding)

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_padding: Tensor | None,
        tgt_padding: Tensor | None = None,
        **kwargs: Any,
    ) -> ModelOutput:
        out = self.decoder(
            self.decoder_embed(tgt),
            tgt_padding,
            memory=memory,
            memory_padding=memory_padding,
            **kwargs,
        )
        return ModelOutput(self.lm_head(out.hidden), out.aux_loss, out.weights, out.state)

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_padding: Tensor | None = None,
        tgt_padding: Tensor | None = None,
    ) -> ModelOutput:
        enc = self.encode(src, src_padding)
        dec = self.decode(tgt, enc.hidden, src_padding, tgt_padding)
        dec.aux_loss = _add(enc.aux_loss, dec.aux_loss)
        return dec


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=ignore_index
    )
