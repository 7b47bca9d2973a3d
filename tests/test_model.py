"""The shared suite: every registered variant through every head, plus the trainer.

Each check is parametrized over :func:`variant_names`, so a new variant file is
tested here with no edit. A check is skipped only when the variant's declared
:class:`Capabilities` say it does not support what the check needs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from attnbench.attention import Attention, VariantSpec, get_variant, variant_names
from attnbench.model import (
    Embedding,
    EncoderDecoder,
    LanguageModel,
    ModelConfig,
    PairClassifier,
    SequenceClassifier,
    count_parameters,
    sinusoidal_table,
)
from attnbench.provenance import seed_everything
from attnbench.tasks.base import (
    Batch,
    DatasetInfo,
    Evaluation,
    SequenceClassificationTask,
)
from attnbench.train import Diverged, TrainConfig, lr_factor, train

VOCAB = 20
N_CLASSES = 3
MAX_LEN = 64
BATCH = 3
VARIANTS = variant_names()
CPU = torch.device("cpu")


def small_cfg(**overrides: Any) -> ModelConfig:
    values: dict[str, Any] = {
        "d_model": 32,
        "n_heads": 4,
        "n_layers": 2,
        "d_ff": 64,
        "max_len": MAX_LEN,
    }
    return ModelConfig(**{**values, **overrides})


def seq_len(spec: VariantSpec, wanted: int = 12) -> int:
    """A length the variant accepts: ``max_len`` for fixed-length variants."""
    caps = spec.capabilities
    length = wanted if caps.variable_length else MAX_LEN
    return min(length, caps.max_length) if caps.max_length is not None else length


def random_ids(batch: int, length: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(2, VOCAB, (batch, length), generator=gen)


def padding(lengths: list[int], total: int) -> Tensor:
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


def attention_modules(model: nn.Module) -> list[Attention]:
    return [m for m in model.modules() if isinstance(m, Attention)]


def assert_grads_reach_attention(model: nn.Module, loss: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    loss.backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
    modules = attention_modules(model)
    assert modules, "the model holds no Attention module"
    for module in modules:
        params = list(module.parameters())
        if not params:
            continue
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), (
            f"no gradient reaches {type(module).__name__}"
        )


def total_loss(out: Any) -> Tensor:
    loss = out.logits.float().pow(2).mean()
    return loss if out.aux_loss is None else loss + out.aux_loss


def need(spec: VariantSpec, feature: str) -> None:
    """Skip when the variant declares it cannot do ``feature``."""
    if not getattr(spec.capabilities, feature):
        pytest.skip(f"{spec.name} declares {feature}=False")


def cross_variant(spec: VariantSpec) -> VariantSpec:
    return spec if spec.capabilities.cross_attention else get_variant("vanilla")


# ---------------------------------------------------------------------------------------
# Shapes and gradients of every head
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VARIANTS)
def test_sequence_classifier_shapes_and_grads(name: str) -> None:
    spec = get_variant(name)
    torch.manual_seed(0)
    n = seq_len(spec)
    model = SequenceClassifier(VOCAB, N_CLASSES, small_cfg(), spec)
    ids = random_ids(BATCH, n)
    pad = padding([n, n - 3, n - 5], n) if spec.capabilities.padding_mask else None
    out = model(ids, pad)
    assert out.logits.shape == (BATCH, N_CLASSES)
    assert torch.isfinite(out.logits).all()
    assert_grads_reach_attention(model, total_loss(out))


@pytest.mark.parametrize("name", VARIANTS)
def test_language_model_shapes_and_grads(name: str) -> None:
    spec = get_variant(name)
    need(spec, "causal")
    torch.manual_seed(0)
    n = seq_len(spec)
    model = LanguageModel(VOCAB, small_cfg(), spec)
    out = model(random_ids(BATCH, n))
    assert out.logits.shape == (BATCH, n, VOCAB)
    assert torch.isfinite(out.logits).all()
    assert_grads_reach_attention(model, total_loss(out))


@pytest.mark.parametrize("name", VARIANTS)
def test_encoder_decoder_shapes_and_grads(name: str) -> None:
    spec = get_variant(name)
    need(spec, "causal")
    torch.manual_seed(0)
    n_src = seq_len(spec, 10)
    n_tgt = seq_len(spec, 7)
    model = EncoderDecoder(VOCAB, small_cfg(), spec, cross_variant(spec))
    src_pad = (
        padding([n_src, n_src - 4, n_src - 2], n_src) if spec.capabilities.padding_mask else None
    )
    out = model(random_ids(BATCH, n_src), random_ids(BATCH, n_tgt, seed=1), src_pad)
    assert out.logits.shape == (BATCH, n_tgt, VOCAB)
    assert torch.isfinite(out.logits).all()
    assert_grads_reach_attention(model, total_loss(out))
    # both self-attention stacks and the cross-attention receive gradients
    assert len(attention_modules(model)) == 3 * small_cfg().n_layers


@pytest.mark.parametrize("name", VARIANTS)
def test_pair_classifier_shapes_and_grads(name: str) -> None:
    spec = get_variant(name)
    torch.manual_seed(0)
    n_a, n_b = seq_len(spec, 12), seq_len(spec, 9)
    model = PairClassifier(VOCAB, N_CLASSES, small_cfg(), spec)
    pads: tuple[Tensor | None, Tensor | None] = (None, None)
    if spec.capabilities.padding_mask:
        pads = (padding([n_a, 5, 8], n_a), padding([2, n_b, 4], n_b))
    out = model(random_ids(BATCH, n_a), random_ids(BATCH, n_b, seed=1), *pads)
    assert out.logits.shape == (BATCH, N_CLASSES)
    assert torch.isfinite(out.logits).all()
    assert_grads_reach_attention(model, total_loss(out))


# ---------------------------------------------------------------------------------------
# Masking: causality and padding
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VARIANTS)
def test_language_model_has_no_causal_leakage(name: str) -> None:
    spec = get_variant(name)
    need(spec, "causal")
    torch.manual_seed(0)
    n = seq_len(spec, 16)
    model = LanguageModel(VOCAB, small_cfg(), spec).eval()
    ids = random_ids(2, n)
    with torch.no_grad():
        base = model(ids).logits
        for t in (1, n // 2, n - 1):
            changed = ids.clone()
            changed[:, t] = (changed[:, t] + 1 - 2) % (VOCAB - 2) + 2  # another real token
            logits = model(changed).logits
            torch.testing.assert_close(logits[:, :t], base[:, :t], atol=1e-6, rtol=0)
            # the change is visible from t on (the test would catch a model ignoring inputs)
            assert (logits[:, t:] - base[:, t:]).abs().max() > 1e-4


@pytest.mark.parametrize("name", VARIANTS)
def test_encoder_ignores_padded_ids(name: str) -> None:
    spec = get_variant(name)
    need(spec, "padding_mask")
    torch.manual_seed(0)
    n = seq_len(spec)
    model = SequenceClassifier(VOCAB, N_CLASSES, small_cfg(), spec).eval()
    lengths = [n, n - 4, 3]
    pad = padding(lengths, n)
    ids = random_ids(BATCH, n)
    changed = torch.where(pad, ids, random_ids(BATCH, n, seed=7))
    assert not torch.equal(changed, ids)
    with torch.no_grad():
        a = model.encoder(ids, pad).hidden
        b = model.encoder(changed, pad).hidden
        logits_a, logits_b = model(ids, pad).logits, model(changed, pad).logits
    for i, length in enumerate(lengths):
        torch.testing.assert_close(a[i, :length], b[i, :length], atol=1e-6, rtol=0)
    torch.testing.assert_close(logits_a, logits_b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_padded_batch_equals_sequences_alone(name: str) -> None:
    spec = get_variant(name)
    need(spec, "padding_mask")
    need(spec, "variable_length")
    torch.manual_seed(0)
    model = SequenceClassifier(VOCAB, N_CLASSES, small_cfg(pooling="mean"), spec).eval()
    lengths = [12, 7, 4]
    n = max(lengths)
    ids = random_ids(BATCH, n)
    with torch.no_grad():
        batched = model(ids, padding(lengths, n)).logits
        alone = torch.cat(
            [model(ids[i : i + 1, :length]).logits for i, length in enumerate(lengths)]
        )
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_encoder_decoder_decoder_is_causal(name: str) -> None:
    spec = get_variant(name)
    need(spec, "causal")
    torch.manual_seed(0)
    n_src, n_tgt = seq_len(spec, 9), seq_len(spec, 8)
    model = EncoderDecoder(VOCAB, small_cfg(), spec, cross_variant(spec)).eval()
    src, tgt = random_ids(2, n_src), random_ids(2, n_tgt, seed=1)
    t = n_tgt // 2
    changed = tgt.clone()
    changed[:, t] = (changed[:, t] + 1 - 2) % (VOCAB - 2) + 2
    with torch.no_grad():
        base = model(src, tgt).logits
        logits = model(src, changed).logits
    torch.testing.assert_close(logits[:, :t], base[:, :t], atol=1e-6, rtol=0)
    assert (logits[:, t:] - base[:, t:]).abs().max() > 1e-4


@pytest.mark.parametrize("name", VARIANTS)
def test_encoder_decoder_ignores_padded_source(name: str) -> None:
    spec = get_variant(name)
    need(spec, "padding_mask")
    need(spec, "causal")  # the decoder self-attention is causal
    torch.manual_seed(0)
    n_src, n_tgt = seq_len(spec, 10), seq_len(spec, 6)
    model = EncoderDecoder(VOCAB, small_cfg(), spec, cross_variant(spec)).eval()
    src_pad = padding([n_src, 6, 3], n_src)
    src, tgt = random_ids(BATCH, n_src), random_ids(BATCH, n_tgt, seed=1)
    changed = torch.where(src_pad, src, random_ids(BATCH, n_src, seed=9))
    assert not torch.equal(changed, src)
    with torch.no_grad():
        base = model(src, tgt, src_pad).logits
        logits = model(changed, tgt, src_pad).logits
        real_change = src.clone()
        real_change[:, 0] = (real_change[:, 0] + 1 - 2) % (VOCAB - 2) + 2
        moved = model(real_change, tgt, src_pad).logits
    torch.testing.assert_close(logits, base, atol=1e-6, rtol=0)
    assert (moved - base).abs().max() > 1e-4  # the source does reach the decoder


# ---------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
@pytest.mark.parametrize("name", VARIANTS)
def test_position_kinds_work(name: str, positions: str) -> None:
    spec = get_variant(name)
    torch.manual_seed(0)
    n = seq_len(spec)
    model = SequenceClassifier(VOCAB, N_CLASSES, small_cfg(positions=positions), spec).eval()
    owns = spec.capabilities.positions == "own"
    assert model.encoder.embed.add_positions is not owns
    with torch.no_grad():
        out = model(random_ids(BATCH, n))
    assert out.logits.shape == (BATCH, N_CLASSES)
    assert torch.isfinite(out.logits).all()
    if owns:
        assert model.encoder.embed.positions is None
        assert not hasattr(model.encoder.embed, "sinusoid")
    elif positions == "learned":
        assert isinstance(model.encoder.embed.positions, nn.Embedding)
    else:
        assert model.encoder.embed.positions is None
        assert torch.equal(model.encoder.embed.sinusoid, sinusoidal_table(MAX_LEN, 32))


@pytest.mark.parametrize("name", VARIANTS)
def test_every_embedding_follows_the_variants_positions(name: str) -> None:
    spec = get_variant(name)
    absolute = spec.capabilities.positions == "absolute"
    lm = LanguageModel(VOCAB, small_cfg(), spec)
    ed = EncoderDecoder(VOCAB, small_cfg(), spec, cross_variant(spec))
    for embed in (lm.embed, ed.encoder.embed, ed.decoder_embed):
        assert embed.add_positions is absolute


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_embedding_adds_positions_only_when_asked(positions: str) -> None:
    torch.manual_seed(0)
    cfg = small_cfg(positions=positions, dropout=0.0)
    without = Embedding(VOCAB, cfg, add_positions=False).eval()
    with_pos = Embedding(VOCAB, cfg, add_positions=True).eval()
    with_pos.tokens.load_state_dict(without.tokens.state_dict())
    ids = torch.full((1, 10), 5)  # the same token everywhere
    with torch.no_grad():
        x_without, x_with = without(ids), with_pos(ids)
        shifted = with_pos(ids[:, :4], offset=3)
    # no positions: output is the scaled token embedding, the same at every position
    torch.testing.assert_close(x_without, without.tokens.weight.detach()[ids] * math.sqrt(32))
    torch.testing.assert_close(x_without[0], x_without[0, :1].expand(10, -1))
    assert without.positions is None and not hasattr(without, "sinusoid")
    # positions: the difference is the position table, different per position
    table = (
        with_pos.positions.weight.detach()[:10]
        if positions == "learned"
        else sinusoidal_table(MAX_LEN, cfg.d_model)[:10]
    )[None]
    torch.testing.assert_close(x_with - x_without, table)
    assert not torch.allclose(x_with[0, 0], x_with[0, 1])
    # offsets shift positions
    torch.testing.assert_close(shifted - x_without[:, :4], table[:, 3:7])


def test_sinusoidal_table_values() -> None:
    table = sinusoidal_table(50, 8)
    p, i = 7, 1
    angle = p / 10000 ** (2 * i / 8)
    assert table.shape == (50, 8)
    assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert torch.equal(table[0, 0::2], torch.zeros(4))
    assert torch.equal(table[0, 1::2], torch.ones(4))


def test_embedding_rejects_too_long_input() -> None:
    emb = Embedding(VOCAB, small_cfg(), add_positions=True)
    emb(torch.zeros(1, MAX_LEN, dtype=torch.long))  # exactly max_len is fine
    with pytest.raises(ValueError, match="max_len") as info:
        emb(torch.zeros(1, MAX_LEN + 1, dtype=torch.long))
    assert str(MAX_LEN + 1) in str(info.value) and str(MAX_LEN) in str(info.value)
    with pytest.raises(ValueError, match="max_len"):
        emb(torch.zeros(1, 10, dtype=torch.long), offset=MAX_LEN - 5)
    # also when the variant owns positions (there is no table to overflow)
    with pytest.raises(ValueError, match="max_len"):
        Embedding(VOCAB, small_cfg(), add_positions=False)(
            torch.zeros(1, MAX_LEN + 1, dtype=torch.long)
        )


# ---------------------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VARIANTS)
def test_runs_under_bf16_autocast(name: str) -> None:
    spec = get_variant(name)
    torch.manual_seed(0)
    n = seq_len(spec)
    cls = SequenceClassifier(VOCAB, N_CLASSES, small_cfg(), spec)
    pad = padding([n, 5, 2], n) if spec.capabilities.padding_mask else None
    outputs = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cls(random_ids(BATCH, n), pad)
        outputs.append(out.logits)
        if spec.capabilities.causal:
            outputs.append(LanguageModel(VOCAB, small_cfg(), spec)(random_ids(BATCH, n)).logits)
    total_loss(out).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in cls.parameters())
    for logits in outputs:
        assert torch.isfinite(logits.float()).all()


# ---------------------------------------------------------------------------------------
# Parameters and config
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VARIANTS)
def test_count_parameters_counts_tied_weights_once(name: str) -> None:
    spec = get_variant(name)
    if not spec.capabilities.causal:
        pytest.skip(f"{name} declares causal=False")
    cfg = small_cfg()
    tied = LanguageModel(VOCAB, cfg, spec)
    untied = LanguageModel(VOCAB, dataclasses.replace(cfg, tie_embeddings=False), spec)
    assert tied.lm_head.weight is tied.embed.tokens.weight
    assert count_parameters(untied) - count_parameters(tied) == VOCAB * cfg.d_model
    # independent count: unique tensors only
    unique = {id(p): p.numel() for p in tied.parameters()}
    assert count_parameters(tied) == sum(unique.values())


def test_count_parameters_shared_encoder_decoder_vocabulary() -> None:
    cfg = small_cfg()
    vanilla = get_variant("vanilla")
    model = EncoderDecoder(VOCAB, cfg, vanilla, vanilla)
    assert model.decoder_embed.tokens is model.encoder.embed.tokens
    by_hand = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert count_parameters(model) == by_hand
    frozen = EncoderDecoder(VOCAB, cfg, vanilla, vanilla)
    frozen.lm_head.requires_grad_(False)  # tied: freezes the embedding too
    assert count_parameters(model) - count_parameters(frozen) == VOCAB * cfg.d_model


def test_model_config_head_dim_must_divide() -> None:
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=30, n_heads=4)
    assert ModelConfig(d_model=30, n_heads=4, head_dim=8).head_dim == 8
    assert ModelConfig(d_model=32, n_heads=4).head_dim == 8


def test_model_config_zero_heads() -> None:
    with pytest.raises(ValueError, match="n_heads"):
        ModelConfig(n_heads=0)


def test_model_config_bad_pooling_lists_choices() -> None:
    with pytest.raises(ValueError, match="pooling") as info:
        ModelConfig(pooling="max")
    assert "mean" in str(info.value) and "cls" in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"d_model": 0},
        {"n_layers": -1},
        {"positions": "rotary"},
        {"activation": "tanh"},
        {"dropout": 1.0},
        {"attention_dropout": -0.1},
    ],
)
def test_model_config_rejects_bad_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(overrides))):
        ModelConfig(**overrides)


# ---------------------------------------------------------------------------------------
# Trainer: learning-rate schedule
# ---------------------------------------------------------------------------------------
def test_warmup_is_linear_to_one() -> None:
    cfg = TrainConfig(steps=100, warmup_steps=10, schedule="constant")
    factors = [lr_factor(s, cfg) for s in range(10)]
    assert factors == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[-1] == 1.0  # reaches 1 on the last warm-up step
    steps = [b - a for a, b in itertools.pairwise([0.0, *factors])]
    assert steps == pytest.approx([0.1] * 10)  # equal increments: linear
    assert lr_factor(10, cfg) == 1.0 and lr_factor(99, cfg) == 1.0


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_decay_starts_at_one_and_decreases(schedule: str) -> None:
    cfg = TrainConfig(steps=51, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1)
    factors = [lr_factor(s, cfg) for s in range(10, 51)]
    assert factors[0] == pytest.approx(1.0)
    assert all(b <= a for a, b in itertools.pairwise(factors))
    assert min(factors) >= 0.1
    mid = lr_factor(30, cfg)  # halfway through the decay (steps 10..50)
    assert mid == pytest.approx(0.1 + 0.9 * 0.5)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_decay_reaches_min_lr_ratio_at_last_step(schedule: str) -> None:
    cfg = TrainConfig(steps=20, warmup_steps=4, schedule=schedule, min_lr_ratio=0.1)
    assert lr_factor(cfg.steps - 1, cfg) == pytest.approx(0.1)


def test_rsqrt_is_continuous_at_the_join() -> None:
    warmup = 16
    cfg = TrainConfig(steps=200, warmup_steps=warmup, schedule="rsqrt")
    assert lr_factor(warmup - 1, cfg) == pytest.approx(1.0)  # end of warm-up
    # the decay formula sqrt(w / (s + 1)) equals 1 at the last warm-up step
    assert math.sqrt(warmup / warmup) == lr_factor(warmup - 1, cfg)
    # first decay step: a step of the same size as the rsqrt curve's own steps
    assert lr_factor(warmup, cfg) == pytest.approx(math.sqrt(warmup / (warmup + 1)))
    assert lr_factor(4 * warmup - 1, cfg) == pytest.approx(0.5)
    jump = lr_factor(warmup - 1, cfg) - lr_factor(warmup, cfg)
    assert 0 < jump < 1.0 / warmup


# ---------------------------------------------------------------------------------------
# Trainer: a tiny synthetic task
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class ParityData:
    n_train: int = 200
    n_val: int = 60
    n_test: int = 60
    seed: int = 0


class FirstTokenParity(SequenceClassificationTask):
    """Label = parity of the first token; ids 2..7, lengths 8-12."""

    name = "first-token-parity"
    family = "test"
    n_classes = 2
    DataConfig = ParityData
    LENGTHS: ClassVar[tuple[int, int]] = (8, 12)

    def __init__(self, data_cfg: ParityData | None = None) -> None:
        super().__init__(data_cfg or ParityData())
        gen = torch.Generator().manual_seed(self.cfg.seed)
        sizes = {"train": self.cfg.n_train, "val": self.cfg.n_val, "test": self.cfg.n_test}
        for split, size in sizes.items():
            rows = []
            for _ in range(size):
                length = int(
                    torch.randint(self.LENGTHS[0], self.LENGTHS[1] + 1, (1,), generator=gen)
                )
                ids = torch.randint(2, 8, (length,), generator=gen).tolist()
                rows.append((ids, ids[0] % 2))
            self.splits[split] = rows

    def vocab_size(self) -> int:
        return 8

    def max_len(self) -> int:
        return self.LENGTHS[1] + 1

    def dataset_info(self) -> DatasetInfo:
        return DatasetInfo("first-token-parity", "generated", False, "test task")

    def prepare(self, out_dir: Path) -> None:
        pass

    def load(self, data_dir: Path) -> None:
        pass


def parity_model(task: FirstTokenParity, seed: int = 0, dropout: float = 0.0) -> nn.Module:
    seed_everything(seed)
    cfg = small_cfg(max_len=task.max_len(), dropout=dropout)
    return task.build_model(cfg, get_variant("vanilla"), {})


def train_cfg(**overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "lr": 3e-3,
        "batch_size": 32,
        "eval_batch_size": 64,
        "steps": 150,
        "warmup_steps": 10,
        "eval_every": 25,
        "schedule": "cosine",
    }
    return TrainConfig(**{**values, **overrides})


def test_train_learns_a_tiny_task() -> None:
    task = FirstTokenParity()
    model = parity_model(task)
    before = task.evaluate(model, "val", 64, CPU).metrics
    result = train(task, model, train_cfg(), seed=0, device=CPU, progress=False)
    losses = [h["train_loss"] for h in result.history]
    accuracies = [h["val"]["accuracy"] for h in result.history]
    assert [h["step"] for h in result.history] == [25, 50, 75, 100, 125, 150]
    assert losses[-1] < 0.5 * losses[0]
    assert result.val["loss"] < before["loss"]
    assert max(accuracies) >= 0.9
    assert result.test["accuracy"] >= 0.85
    assert result.test_evaluation is not None
    assert len(result.test_evaluation.predictions) == task.cfg.n_test
    assert result.train_tokens > 0
    # best_step is the first argmax of the validation accuracy
    best = max(range(len(accuracies)), key=lambda i: (accuracies[i], -i))
    assert result.best_step == result.history[best]["step"]
    assert result.val == result.history[best]["val"]


class ScriptedValidation(FirstTokenParity):
    """Validation scores follow a script; ``test`` reports a fingerprint of the weights."""

    def __init__(self, script: list[float], higher_is_better: bool) -> None:
        super().__init__(ParityData(n_train=64, n_val=8, n_test=8))
        self.script = list(script)
        self.higher_is_better = higher_is_better
        self.metric = "accuracy" if higher_is_better else "loss"
        self.n_val = 0

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str, batch_size: int, device: torch.device
    ) -> Evaluation:
        if split == "val":
            score = self.script[self.n_val]
            self.n_val += 1
            return Evaluation({self.metric: score}, [])
        return Evaluation({"fingerprint": fingerprint(model)}, [])


def fingerprint(model: nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))


@pytest.mark.parametrize(
    ("script", "higher_is_better", "best_step"),
    [([0.5, 0.9, 0.6, 0.9], True, 10), ([2.0, 1.5, 0.7, 1.1], False, 15)],
)
def test_test_split_is_evaluated_at_best_validation_step(
    script: list[float], higher_is_better: bool, best_step: int
) -> None:
    task = ScriptedValidation(script, higher_is_better)
    model = parity_model(task)
    seen: dict[int, float] = {}
    result = train(
        task,
        model,
        train_cfg(steps=20, eval_every=5, warmup_steps=0, lr=1e-2),
        seed=0,
        device=CPU,
        progress=False,
        on_eval=lambda step, val: seen.__setitem__(step, fingerprint(model)),
    )
    assert sorted(seen) == [5, 10, 15, 20]
    assert result.best_step == best_step
    assert result.val == {task.metric: script[best_step // 5 - 1]}
    assert len({round(v, 9) for v in seen.values()}) == 4  # the weights moved
    assert result.test["fingerprint"] == pytest.approx(seen[best_step], abs=1e-9)
    assert result.test["fingerprint"] != pytest.approx(seen[20], abs=1e-6)


class NaNAtStep3(FirstTokenParity):
    def __init__(self) -> None:
        super().__init__(ParityData(n_train=64, n_val=8, n_test=8))
        self.calls = 0

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor | None]:
        loss, aux = super().loss(model, batch)
        self.calls += 1
        return (loss * float("nan") if self.calls == 4 else loss), aux


def test_train_raises_diverged_on_nan_loss() -> None:
    task = NaNAtStep3()
    model = parity_model(task)
    with pytest.raises(Diverged) as info:
        train(task, model, train_cfg(steps=20), seed=0, device=CPU, progress=False)
    assert info.value.step == 3
    assert math.isnan(info.value.loss)
    assert "step 3" in str(info.value)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no NaN update applied


def test_train_is_reproducible_with_the_same_seed() -> None:
    results = []
    for _ in range(2):
        task = FirstTokenParity(ParityData(n_train=96, n_val=30, n_test=30))
        model = parity_model(task, seed=3, dropout=0.1)  # dropout: the RNG matters too
        results.append(
            train(
                task, model, train_cfg(steps=30, eval_every=10), seed=3, device=CPU, progress=False
            )
        )
    a, b = results
    assert a.history == b.history
    assert a.test == b.test
    assert a.test_evaluation == b.test_evaluation
    assert a.best_step == b.best_step
    # and a different seed gives a different run (the check above is not vacuous)
    task = FirstTokenParity(ParityData(n_train=96, n_val=30, n_test=30))
    other = train(
        task,
        parity_model(task, seed=4, dropout=0.1),
        train_cfg(steps=30, eval_every=10),
        seed=4,
        device=CPU,
        progress=False,
    )
    assert other.history != a.history


def test_d_ff_zero_builds_attention_only_blocks() -> None:
    """model.d_ff = 0: no feed-forward sublayer (Zoology's MQAR models), the rest intact."""
    from attnbench.attention import get_variant
    from attnbench.model import LanguageModel, ModelConfig

    cfg = ModelConfig(d_model=16, n_heads=2, n_layers=2, d_ff=0, max_len=8, dropout=0.0)
    model = LanguageModel(11, cfg, get_variant("vanilla"))
    assert all(layer.ff is None and layer.norm3 is None for layer in model.stack.layers)
    assert not any("ff." in name for name, _ in model.named_parameters())
    out = model(torch.randint(0, 11, (2, 8))).logits
    assert out.shape == (2, 8, 11) and torch.isfinite(out).all()
    with_ff = LanguageModel(
        11,
        ModelConfig(d_model=16, n_heads=2, n_layers=2, d_ff=4, max_len=8),
        get_variant("vanilla"),
    )
    assert all(layer.ff is not None for layer in with_ff.stack.layers)
    with pytest.raises(ValueError, match=r"model\.d_ff must be >= 0"):
        ModelConfig(d_ff=-1)
