"""Diagnostics: synthetic recall, copying and memorisation tasks (MQAR and MAD).

Small causal language-modelling tasks that isolate what a sequence mixer is for:

* ``mqar``: multi-query associative recall (Arora et al. 2023, "Zoology: Measuring and
  Improving Recall in Efficient Language Models"; generator :mod:`attnbench.data.mqar`);
* ``mad-*``: the six MAD tasks (Poli et al. 2024, "Mechanistic Design and Scaling of
  Hybrid Architectures"; generators :mod:`attnbench.data.mad`).

Every example is a token sequence with a target at each scored position and
:data:`IGNORE` elsewhere; the model is a causal decoder (:class:`LanguageModel`), the
loss is cross-entropy on the scored positions only, and the primary metric is accuracy
over all scored positions of the split (micro-averaged, as Zoology and MAD report it).
The saved predictions have one row per scored position (``example`` says which example
it belongs to), so paired tests resample scored positions.

A task's *capacity axes* (``capacity_axes``: pairs, length, vocabulary, ...) are its
difficulty coordinates; a run's record carries their values (``task_info.capacity``) and,
for a task evaluated on several settings at once, the accuracy of each
(``task_info.evaluation.by_setting``): the leaderboard's capacity figures plot them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from attnbench import baselines as bl
from attnbench.attention import Requirements, VariantSpec
from attnbench.data import mad, mqar
from attnbench.model import (
    Embedding,
    LanguageModel,
    ModelConfig,
    ModelOutput,
    TransformerStack,
    adds_input_positions,
    cross_entropy,
    sinusoidal_table,
)
from attnbench.records import atomic_write_bytes
from attnbench.tasks.base import (
    Batch,
    DatasetInfo,
    Evaluation,
    Task,
    npy_bytes,
    register_task,
    with_aux,
)

IGNORE = mqar.IGNORE
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split: ``inputs``/``targets`` (n, T) int64, right-padded with ``pad_id`` /
    :data:`IGNORE` to the longest example; ``lengths`` (n,) and ``setting`` (n,): each
    example's length and the index of its setting: in :meth:`DiagnosticTask.settings` for
    the evaluated splits (val, test), in the training settings for train."""

    inputs: np.ndarray
    targets: np.ndarray
    lengths: np.ndarray
    setting: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)


def stack_settings(parts: Sequence[tuple[np.ndarray, np.ndarray]], pad_id: int) -> Split:
    """One :class:`Split` from per-setting (inputs, targets) arrays of possibly different
    lengths, in setting order."""
    width = max(inputs.shape[1] for inputs, _ in parts)
    n = sum(len(inputs) for inputs, _ in parts)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    tgt = np.full((n, width), IGNORE, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    setting = np.zeros(n, dtype=np.int64)
    row = 0
    for index, (inputs, targets) in enumerate(parts):
        m, t = inputs.shape
        ids[row : row + m, :t] = inputs
        tgt[row : row + m, :t] = targets
        lengths[row : row + m] = t
        setting[row : row + m] = index
        row += m
    return Split(ids, tgt, lengths, setting)


class DiagnosticTask(Task):
    """Shared base: causal LM over token sequences, accuracy on the scored positions."""

    family = "diagnostics"
    metric = "accuracy"
    higher_is_better = True
    head = "lm"
    # the task's difficulty coordinates, recorded per run (task_info.capacity)
    capacity_axes: ClassVar[tuple[str, ...]] = ()
    pad_id: ClassVar[int] = 0
    # the "bigram" baseline (majority target per input token) solves a task whose answer
    # is a fixed function of the current token (memorisation); such a task turns it off
    bigram_baseline: ClassVar[bool] = True

    # -- what subclasses define -------------------------------------------------------
    def vocab_size(self) -> int:
        raise NotImplementedError

    def settings(self) -> list[dict[str, Any]]:
        """The settings the splits are made of: one dict of capacity-axis values each."""
        raise NotImplementedError

    def generate(self) -> dict[str, Split]:
        """The three splits, generated from the data config's seed."""
        raise NotImplementedError

    # -- description ------------------------------------------------------------------
    def requirements(self) -> Requirements:
        # right padding after the last real token cannot reach earlier positions of a
        # causal model, so no padding mask is needed and fixed-length variants run too
        return Requirements(causal=True, padding_mask=False, max_len=self.max_len())

    def capacity(self) -> dict[str, Any]:
        """The capacity-axis values of the task: one value per axis, or a list of values
        where the splits mix several settings."""
        out: dict[str, Any] = {}
        for axis in self.capacity_axes:
            values = sorted({s[axis] for s in self.settings()})
            out[axis] = values[0] if len(values) == 1 else values
        return out

    # -- data -------------------------------------------------------------------------
    def prepare(self, out_dir: Path) -> None:
        for name, split in self.generate().items():
            for key in ("inputs", "targets", "lengths", "setting"):
                atomic_write_bytes(out_dir / f"{name}.{key}.npy", npy_bytes(getattr(split, key)))

    def load(self, data_dir: Path) -> None:
        for name in SPLIT_NAMES:
            arrays = {
                key: np.load(Path(data_dir) / f"{name}.{key}.npy")
                for key in ("inputs", "targets", "lengths", "setting")
            }
            self.splits[name] = Split(**arrays)

    def split_size(self, split: str) -> int:
        return len(self.splits[split])

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        epoch: int = 0,
        seed: int = 0,
        by_length: bool = False,
    ) -> Iterator[Batch]:
        data: Split = self.splits[split]
        groups = self.batch_indices(
            split,
            data.lengths.tolist(),
            batch_size,
            shuffle=shuffle,
            epoch=epoch,
            seed=seed,
            by_length=by_length,
        )
        for idx in groups:
            index = np.asarray(idx, dtype=np.int64)
            width = self.setup.pad_to or int(data.lengths[index].max())
            ids = np.full((len(index), width), self.pad_id, dtype=np.int64)
            tgt = np.full((len(index), width), IGNORE, dtype=np.int64)
            t = min(width, data.inputs.shape[1])
            ids[:, :t] = data.inputs[index, :t]
            tgt[:, :t] = data.targets[index, :t]
            yield Batch(
                {"ids": torch.from_numpy(ids)},
                torch.from_numpy(tgt),
                int(data.lengths[index].sum()),
                torch.from_numpy(index),
            )

    # -- model ------------------------------------------------------------------------
    def build_model(
        self, cfg: ModelConfig, variant: VariantSpec, options: dict[str, Any]
    ) -> nn.Module:
        return LanguageModel(self.vocab_size(), cfg, variant, options)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor | None]:
        out = model(**batch.inputs)
        return with_aux(cross_entropy(out.logits, batch.targets), out.aux_loss)

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str,
        batch_size: int,
        device: torch.device,
        **model_kwargs: Any,
    ) -> Evaluation:
        data: Split = self.splits[split]
        rows: list[dict[str, Any]] = []
        loss_sum, n_scored = 0.0, 0
        settings = self.settings()
        correct = np.zeros(len(settings), dtype=np.int64)
        total = np.zeros(len(settings), dtype=np.int64)
        for batch in self.batches(split, batch_size, by_length=True):
            batch = batch.to(device)
            logits = model(**batch.inputs, **model_kwargs).logits.float()
            scored = batch.targets != IGNORE
            count = int(scored.sum())
            loss_sum += float(cross_entropy(logits, batch.targets)) * count
            n_scored += count
            pred = logits.argmax(dim=-1)
            assert batch.index is not None
            for j, example in enumerate(batch.index.tolist()):
                positions = scored[j].nonzero().flatten().tolist()
                hits = pred[j, positions].tolist()
                gold = batch.targets[j, positions].tolist()
                s = int(data.setting[example])
                total[s] += len(positions)
                correct[s] += sum(int(h == g) for h, g in zip(hits, gold, strict=True))
                rows.extend(
                    {"example": example, "position": q, "prediction": h, "target": g}
                    for q, h, g in zip(positions, hits, gold, strict=True)
                )
        rows.sort(key=lambda r: (r["example"], r["position"]))
        for i, row in enumerate(rows):  # paired tests match rows by this index
            row["index"] = i
        accuracy = float(correct.sum() / max(total.sum(), 1))
        by_setting = [
            {**s, "accuracy": float(c / t) if t else None, "n_scored": int(t)}
            for s, c, t in zip(settings, correct.tolist(), total.tolist(), strict=True)
        ]
        return Evaluation(
            {"accuracy": accuracy, "loss": loss_sum / max(n_scored, 1)},
            rows,
            info={"by_setting": by_setting, "n_scored": int(n_scored)},
        )

    def analysis_batch(self, size: int = 64) -> Batch | None:
        return next(self.batches("val", size))

    def record_info(self, evaluation: Evaluation | None = None) -> dict[str, Any]:
        return {**super().record_info(evaluation), "capacity": self.capacity()}

    # -- baselines --------------------------------------------------------------------
    def scored(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(input token, target) at every scored position of ``split``."""
        data: Split = self.splits[split]
        mask = data.targets != IGNORE
        return data.inputs[mask], data.targets[mask]

    def baselines(self) -> dict[str, float]:
        """``majority_target`` (the most frequent training target everywhere) and, unless
        turned off, ``bigram`` (the majority training target of the current input token)."""
        if not self.splits.get("train") or not self.splits.get("test"):
            return {}
        train_tokens, train_targets = self.scored("train")
        test_tokens, test_targets = self.scored("test")
        result = {"majority_target": bl.majority_class(train_targets, test_targets)}
        if self.bigram_baseline:
            guess = bl.grouped_majority(train_tokens.tolist(), train_targets, test_tokens.tolist())
            result["bigram"] = bl.accuracy(guess, test_targets)
        return result


# ---------------------------------------------------------------------------------------
# MQAR
# ---------------------------------------------------------------------------------------
def _settings(values: Any, where: str) -> tuple[mqar.Setting, ...]:
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"{where} must be a non-empty list of [length, pairs]")
    out = []
    for item in values:
        if isinstance(item, mqar.Setting):
            out.append(item)
        elif isinstance(item, list | tuple) and len(item) == 2:
            out.append(mqar.Setting(int(item[0]), int(item[1])))
        else:
            raise ValueError(f"{where}: each setting is [length, pairs], got {item!r}")
    return tuple(out)


@dataclass
class MQARData:
    """Data knobs (``tasks.mqar.data``); defaults are Zoology's figure-2 (L = 64, K = 4)."""

    seed: int = 0
    vocab_size: int = 8192
    # training settings [[length, pairs], ...]: examples of each, mixed in training
    train_settings: list = field(default_factory=lambda: [[64, 4]])
    # test (and validation) settings; None: the training settings. Accuracy is reported
    # over all of them and per setting (the capacity curve of one run)
    test_settings: list | None = None
    n_train: int = 100_000  # per training setting (Zoology: 100K)
    n_val: int = 500  # per test setting
    n_test: int = 3_000  # per test setting (Zoology: 3K)
    power_a: float = mqar.POWER_A
    random_fill: bool = False  # True: random ids between queries (Zoology's default)

    def __post_init__(self) -> None:
        where = "tasks.mqar.data"
        train = _settings(self.train_settings, f"{where}.train_settings")
        test = _settings(
            self.test_settings if self.test_settings is not None else self.train_settings,
            f"{where}.test_settings",
        )
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{where}.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.power_a <= 1:
            raise ValueError(f"{where}.power_a must lie in (0, 1], got {self.power_a}")
        for setting in (*train, *test):
            mqar.check_setting(setting, self.vocab_size, f"{where} setting {setting.label}")
        self.train_settings = [[s.length, s.pairs] for s in train]
        if self.test_settings is not None:
            self.test_settings = [[s.length, s.pairs] for s in test]


@register_task
class MQAR(DiagnosticTask):
    """Zoology MQAR: recall the value of every queried key from the pairs in context (accuracy)."""

    name = "mqar"
    DataConfig = MQARData
    capacity_axes = ("pairs", "length", "vocab_size")
    pad_id = mqar.FILLER

    def _train_settings(self) -> tuple[mqar.Setting, ...]:
        return _settings(self.cfg.train_settings, "train_settings")

    def _test_settings(self) -> tuple[mqar.Setting, ...]:
        values = self.cfg.test_settings
        return _settings(values if values is not None else self.cfg.train_settings, "")

    def settings(self) -> list[dict[str, Any]]:
        return [
            {"pairs": s.pairs, "length": s.length, "vocab_size": self.cfg.vocab_size}
            for s in self._test_settings()
        ]

    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def max_len(self) -> int:
        return max(s.length for s in (*self._train_settings(), *self._test_settings()))

    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        train = ", ".join(s.label for s in self._train_settings())
        test = ", ".join(s.label for s in self._test_settings())
        return DatasetInfo(
            "mqar-generated",
            "generated",
            False,  # generated in Zoology too: not a stand-in
            f"Zoology MQAR, vocab {c.vocab_size}, train {train} ({c.n_train} each), "
            f"test {test} ({c.n_test} each), seed {c.seed}",
        )

    def generate(self) -> dict[str, Split]:
        c = self.cfg
        rng = np.random.default_rng(c.seed)
        plan = {
            "train": (self._train_settings(), c.n_train),
            "val": (self._test_settings(), c.n_val),
            "test": (self._test_settings(), c.n_test),
        }
        out = {}
        for name, (settings, n) in plan.items():
            parts = [
                mqar.generate(
                    rng,
                    n,
                    c.vocab_size,
                    s,
                    power_a=c.power_a,
                    random_fill=c.random_fill,
                )
                for s in settings
            ]
            out[name] = stack_settings(parts, self.pad_id)
        return out

    def baselines(self) -> dict[str, float]:
        """The base class's, plus ``context_value``: a uniform guess among the example's
        K values (expected accuracy 1/K per query, computed exactly)."""
        result = super().baselines()
        if result:
            data: Split = self.splits["test"]
            settings = self._test_settings()
            pairs = np.array([settings[s].pairs for s in data.setting])
            per_example = (data.targets != IGNORE).sum(axis=1)
            result["context_value"] = float((per_example / pairs).sum() / per_example.sum())
        return result


# ---------------------------------------------------------------------------------------
# MAD
# ---------------------------------------------------------------------------------------
class Compressor(nn.Module):
    """MAD's auto-encoder backbone for compression (mad-lab ``mad/model/auto_encoder.py``).

    The variant's stack (causal) encodes the sequence; its output at the last position
    (the compression token, which sees every token) is the code ``h``. The decoder reads
    ``h`` plus a fixed sinusoidal embedding of each output position through a
    non-expanding two-layer MLP and an unembedding, so everything the decoder knows
    about the sequence passes through ``h``. (mad-lab uses RMSNorm; LayerNorm here.)
    """

    causal = True

    def __init__(
        self, vocab_size: int, cfg: ModelConfig, variant: VariantSpec, options: dict[str, Any]
    ) -> None:
        super().__init__()
        d = cfg.d_model
        self.embed = Embedding(vocab_size, cfg, adds_input_positions(cfg, variant))
        self.stack = TransformerStack(cfg, variant, options, causal=True)
        self.register_buffer("positions", sinusoidal_table(cfg.max_len, d), persistent=False)
        self.decoder = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, d), nn.GELU()
        )
        self.unembed = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, vocab_size))

    def forward(self, ids: Tensor, key_padding: Tensor | None = None, **kwargs: Any):
        out = self.stack(self.embed(ids), key_padding, **kwargs)
        code = out.hidden[:, -1]  # (B, d)
        x = code[:, None, :] + self.positions[: ids.shape[1]]
        return ModelOutput(self.unembed(self.decoder(x)), out.aux_loss, out.weights)


class MadDiagnostic(DiagnosticTask):
    """One MAD task (:data:`attnbench.data.mad.MAD_TASKS`); subclasses name it."""

    spec: ClassVar[mad.MadTask]

    def vocab_size(self) -> int:
        return self.spec.vocab_size(self.cfg)

    def max_len(self) -> int:
        return self.spec.length(self.cfg)

    def settings(self) -> list[dict[str, Any]]:
        return [{axis: getattr(self.cfg, axis) for axis in self.capacity_axes}]

    def dataset_info(self) -> DatasetInfo:
        return DatasetInfo(
            f"{self.name}-generated", "generated", False, self.spec.description(self.cfg)
        )

    def generate(self) -> dict[str, Split]:
        return {
            name: stack_settings([arrays], self.pad_id)
            for name, arrays in mad.generate_splits(self.spec.name, self.cfg).items()
        }

    def build_model(
        self, cfg: ModelConfig, variant: VariantSpec, options: dict[str, Any]
    ) -> nn.Module:
        if self.spec.backbone == "autoencoder":
            return Compressor(self.vocab_size(), cfg, variant, options)
        return super().build_model(cfg, variant, options)


MAD_SUMMARIES = {
    "mad-in-context-recall": "recall the value of each repeated key (pairs in context)",
    "mad-fuzzy-recall": "recall multi-token values of repeated multi-token keys",
    "mad-noisy-recall": "in-context recall with noise tokens between the pairs",
    "mad-selective-copy": "copy the non-blank tokens, in order, after a copy token",
    "mad-compression": "reconstruct the sequence from the last position's output alone",
    "mad-memorization": "recall values of a fixed key-value dictionary (in the weights)",
}


def _register_mad(name: str, *, bigram: bool = True) -> type[MadDiagnostic]:
    spec = mad.MAD_TASKS[name]
    cls = type(
        spec.config.__name__.removesuffix("Config") + "Task",
        (MadDiagnostic,),
        {
            "__doc__": f"MAD (Poli et al. 2024): {MAD_SUMMARIES[name]} (accuracy).",
            "__module__": __name__,
            "name": name,
            "spec": spec,
            "DataConfig": spec.config,
            "capacity_axes": tuple(spec.sweeps),
            "bigram_baseline": bigram,
        },
    )
    return register_task(cls)


# memorisation's answer is a fixed function of the current token and compression's
# target is the current token: a per-token majority rule solves both, so it is no
# baseline there (the majority target is)
for _name in mad.MAD_TASKS:
    _register_mad(_name, bigram=_name not in ("mad-memorization", "mad-compression"))
