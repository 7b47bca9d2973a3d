"""The task interface, the task registry and a shared classification base.

A task owns its data (prepare once, load many times), builds its model head
around the shared backbone, computes the training loss and evaluates. The
trainer (:mod:`attnbench.train`) sees only this interface.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from attnbench import baselines as bl
from attnbench.attention import Requirements, VariantSpec
from attnbench.batching import BUCKET_WINDOW, batch_groups
from attnbench.model import ModelConfig, SequenceClassifier, cross_entropy
from attnbench.options import build_options
from attnbench.records import atomic_write_bytes, atomic_write_text
from attnbench.registry import Registry, RegistryError, caller_origin

DATA_SOURCES = ("generated", "bundled", "huggingface", "lra-release")


@dataclass(frozen=True)
class DatasetInfo:
    """What the data is; shown on the leaderboard next to every number."""

    name: str  # e.g. "listops-generated", "bible-en-es"
    source: str  # one of DATA_SOURCES
    stand_in: bool  # True: an offline stand-in for a real benchmark
    description: str  # one line, e.g. "LRA ListOps rules, seeded generator, length 20–150"

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"data source {self.source!r}; valid: {', '.join(DATA_SOURCES)}")


@dataclass
class Batch:
    """One mini-batch; ``inputs`` go to the model as keyword arguments."""

    inputs: dict[str, Tensor]
    targets: Tensor
    n_tokens: int  # real (non-pad) input tokens, for tokens/s
    index: Tensor | None = None  # example indices in the split (for saved predictions)

    def to(self, device: torch.device) -> Batch:
        return Batch(
            {k: v.to(device) for k, v in self.inputs.items()},
            self.targets.to(device),
            self.n_tokens,
            self.index,
        )


class EmptySplitError(ValueError):
    pass


@dataclass(frozen=True)
class TaskSetup:
    """What a run fixes about its task besides the data, fixed when the task is built.

    :func:`attnbench.job.build_job` derives it from what the variant declares (its
    capabilities and options) and the model config; a task reads it and never changes it.
    """

    # Pad every batch to this length: the variant cannot take variable lengths
    # (``Capabilities.variable_length`` False); None: pad to the longest row.
    pad_to: int | None = None
    # Positions of earlier segments the variant keeps as memory (``Attention.memory_len``);
    # a task that reads text segment by segment plans with it. 0: no recurrence.
    memory_len: int = 0
    # Layers of the model (how far a recurrent memory reaches back).
    n_layers: int = 1
    # The variant that does encoder–decoder cross-attention: the run's own variant when it
    # can, else the profile's reference variant. None: the run's own variant.
    cross_attention: str | None = None


@dataclass(frozen=True)
class Evaluation:
    """What :meth:`Task.evaluate` returns: everything one evaluation of one split produced.

    ``metrics`` hold the task's ``metric`` and ``loss`` at least; ``predictions`` one row
    per example in split order (significance tests read them); ``extra`` further outputs
    that the runner writes beside the record (:meth:`Task.write_artifacts`): a list of rows
    becomes ``<stem>.<kind>.jsonl``, an array ``<stem>.<kind>.npy``; ``info`` says how the
    split was evaluated (the record's ``task_info.evaluation``).
    """

    metrics: dict[str, Any]  # numbers, and strings such as sacrebleu's signatures
    predictions: list[dict[str, Any]]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in NumPy's ``.npy`` format (to write atomically)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def with_aux(loss: Tensor, aux: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """A task's ``loss`` result: the loss plus the model's auxiliary loss, and that part."""
    return (loss, None) if aux is None else (loss + aux, aux)


def analysis_mask(
    real: Tensor | None, length: int, device: torch.device, *, causal: bool = False
) -> Tensor:
    """(B or 1, 1, T, T) bool: the (query, key) pairs attention statistics count.

    Both the query and the key must be real tokens (``real``: (B, T), True = a token;
    None: all are), and with ``causal`` the key may not follow the query.
    """
    allowed = torch.ones(1, 1, length, length, dtype=torch.bool, device=device)
    if real is not None:
        allowed = allowed & real[:, None, None, :] & real[:, None, :, None]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=device).tril()
    return allowed


class Task:
    """Base class of a benchmark task.

    Class attributes describe the task; ``DataConfig`` is a dataclass of the data
    knobs the profile may set under ``tasks.<name>.data``.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""  # "lra" | "lm" | "translation" | "glue"
    metric: ClassVar[str] = ""  # primary metric, a key of evaluate()'s result
    higher_is_better: ClassVar[bool] = True
    head: ClassVar[str] = ""  # "classification" | "pair_classification" | "lm" | "seq2seq"
    # Validation metric that picks the best checkpoint (None: ``metric``), e.g. a task whose
    # primary metric is costly to compute every eval may select by validation loss.
    selection_metric: ClassVar[str | None] = None
    selection_higher_is_better: ClassVar[bool | None] = None
    DataConfig: ClassVar[type] = object
    # Bumped when the code that prepares the data changes what it writes (a generator fix):
    # part of the prepared data's hash, so data prepared by older code is prepared anew.
    data_version: ClassVar[int] = 1
    # The published averages this task counts toward, as (label, number of tasks it averages):
    # LRA's "Avg" over its five tasks, GLUE's score over nine. Runs carry them in their
    # records, and the leaderboard shows an average only when all of its tasks are there.
    averages: ClassVar[tuple[tuple[str, int], ...]] = ()
    # Rows per split of the real data as published, by "<hub dataset>[/<configuration>]"
    # (``attnbench data check`` compares local copies with them); {} for generated data.
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {}

    def __init__(self, data_cfg: Any, setup: TaskSetup | None = None) -> None:
        self.cfg = data_cfg
        self.setup = setup if setup is not None else TaskSetup()
        self.splits: dict[str, Any] = {}
        # Training batches are sorted by length within windows of this many batches
        # (attnbench.batching.batch_groups); 1 is plain random batching.
        self.bucket_window: int = BUCKET_WINDOW

    # -- description ------------------------------------------------------------------
    def requirements(self) -> Requirements:
        raise NotImplementedError

    def dataset_info(self) -> DatasetInfo:
        raise NotImplementedError

    def max_len(self) -> int:
        """Longest model input this task produces (sets ``ModelConfig.max_len``)."""
        raise NotImplementedError

    # -- data -----------------------------------------------------------------------------
    def prepare(self, out_dir: Path) -> None:
        """Create the task's data files under ``out_dir`` (run once per task)."""
        raise NotImplementedError

    def load(self, data_dir: Path) -> None:
        """Read prepared data into ``self.splits`` (train/val/test).

        Part of building the task (:func:`attnbench.job.build_job`): nothing else calls it.
        """
        raise NotImplementedError

    def batches(
        self, split: str, batch_size: int, *, shuffle: bool = False, epoch: int = 0, seed: int = 0
    ) -> Iterator[Batch]:
        raise NotImplementedError

    def batch_indices(
        self,
        split: str,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = False,
        epoch: int = 0,
        seed: int = 0,
        by_length: bool = False,
    ) -> list[list[int]]:
        """Example indices of each batch of ``split`` (:func:`attnbench.batching.batch_groups`):
        length-bucketed when ``shuffle`` (training; a pure function of seed and epoch), split
        order otherwise, longest first with ``by_length``. An empty split is an error."""
        if not lengths:
            raise EmptySplitError(f"task {self.name!r}: split {split!r} is empty")
        return batch_groups(
            lengths,
            batch_size,
            shuffle=shuffle,
            epoch=epoch,
            seed=seed,
            by_length=by_length,
            window=self.bucket_window,
        )

    def split_size(self, split: str) -> int:
        return len(self.splits[split])

    # -- model ----------------------------------------------------------------------------
    def build_model(
        self, cfg: ModelConfig, variant: VariantSpec, options: dict[str, Any]
    ) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """The training loss to minimise, and its auxiliary part (already included) if any."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str,
        batch_size: int,
        device: torch.device,
        **model_kwargs: Any,
    ) -> Evaluation:
        """Metrics on a whole split, per-example predictions (for significance tests) and
        whatever else the evaluation produced (:class:`Evaluation`); the task keeps nothing.

        ``model_kwargs`` go to every forward call (e.g. ``head_mask`` for head ablation).
        """
        raise NotImplementedError

    def baselines(self) -> dict[str, float]:
        """The task's strongest trivial baselines on the test split, for the leaderboard.

        ``{snake_case name: value}``, every value in the units of the primary metric
        (``metric``), computed by the task from its loaded splits (:mod:`attnbench.baselines`)
        and scored as its models are. The runner computes them once when the data are
        prepared and reads them back in each run (:func:`attnbench.baselines.task_baselines`).
        """
        return {}

    def analysis_batch(self, size: int = 64) -> Batch | None:
        """A fixed batch (the first ``size`` validation examples) for attention analysis."""
        return None

    @torch.no_grad()
    def attention_analysis(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """Per-layer attention statistics on :meth:`analysis_batch` (trained model).

        Returns :func:`attention_statistics` plus ``maps`` (:func:`attention_maps`, popped
        and saved by the runner). The default handles models called as
        ``model(ids=..., key_padding=...)``; tasks with other inputs override it.
        """
        batch = self.analysis_batch()
        if batch is None:
            return {"available": False, "reason": f"task {self.name!r} has no analysis batch"}
        batch = batch.to(device)
        model.eval()
        out = model(**batch.inputs, need_weights=True)
        padding = batch.inputs.get("key_padding")
        t = batch.inputs["ids"].shape[1]
        allowed = analysis_mask(padding, t, device, causal=getattr(model, "causal", False))
        stats = attention_statistics(out.weights, allowed)
        if stats["available"]:
            n = int(padding[0].sum()) if padding is not None else t
            stats["maps"] = attention_maps(out.weights, n)
        return stats

    # -- what a run adds to its record --------------------------------------------------------
    def record_info(self, evaluation: Evaluation | None = None) -> dict[str, Any]:
        """Task-specific facts for the run record (e.g. which cross-attention was used),
        with ``evaluation.info`` (how the test split was evaluated) as ``evaluation``."""
        return {"evaluation": evaluation.info} if evaluation is not None and evaluation.info else {}

    def write_artifacts(self, stem: Path, evaluation: Evaluation) -> dict[str, str]:
        """Write ``evaluation.extra`` beside the record (``stem`` + suffix); return
        {kind: file name}. The runner saves the predictions as ``<stem>.predictions.jsonl``.

        A list of rows becomes ``<stem>.<kind>.jsonl``, an array ``<stem>.<kind>.npy``.
        """
        files: dict[str, str] = {}
        for kind, value in evaluation.extra.items():
            if isinstance(value, np.ndarray):
                path = stem.with_name(f"{stem.name}.{kind}.npy")
                atomic_write_bytes(path, npy_bytes(value))
            else:
                path = stem.with_name(f"{stem.name}.{kind}.jsonl")
                atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in value))
            files[kind] = path.name
        return files


def head_diversity(p: Tensor, rows: Tensor) -> float | None:
    """Mean pairwise Jensen–Shannon distance between the heads' attention rows.

    ``p``: (B, H, T, S) attention weights; ``rows``: (B, H, T) queries to count. For heads
    h ≠ g and each counted query, JSD(p_h, p_g) in bits (so the distance √JSD lies in
    [0, 1]: 0 = identical heads, 1 = disjoint supports), averaged over queries and pairs.
    None with fewer than two heads.
    """
    n_heads = p.shape[1]
    if n_heads < 2:
        return None
    row_mask = rows.all(dim=1)  # (B, T): queries real in every head
    if not row_mask.any():
        return None

    def entropy_bits(q: Tensor) -> Tensor:
        return -(q * q.clamp_min(1e-30).log2()).sum(-1)

    distances = []
    for h in range(n_heads):
        for g in range(h + 1, n_heads):
            a, b = p[:, h], p[:, g]  # (B, T, S)
            jsd = entropy_bits((a + b) / 2) - (entropy_bits(a) + entropy_bits(b)) / 2
            distances.append(jsd.clamp_min(0).sqrt()[row_mask].mean())
    return float(torch.stack(distances).mean())


MAP_TOKENS = 64  # attention maps saved for the gallery cover at most this many tokens


def attention_maps(weights: list[Tensor | None], n_tokens: int) -> Any:
    """Attention of the first example, (layers, heads, n, n) float16, n = min(real, 64).

    The runner saves it beside the record for the report's attention-map gallery.
    """

    n = min(n_tokens, MAP_TOKENS)
    maps = [w[0, :, :n, :n].float().cpu().numpy() for w in weights if w is not None]
    return np.stack(maps).astype(np.float16)


def attention_statistics(weights: list[Tensor | None], allowed: Tensor) -> dict[str, Any]:
    """Per-layer sparsity (share of exact zeros), entropy (nats) and head diversity.

    ``weights``: per layer (B, H, T, S) or None; ``allowed``: (B, 1, T, S) bool, the
    (query, key) pairs that are not masked. Only allowed entries of real queries count.
    Head diversity is :func:`head_diversity` (mean pairwise Jensen–Shannon distance).
    """
    if not weights or any(w is None for w in weights):
        return {"available": False, "reason": "the variant does not return attention weights"}
    if any(bool((w < 0).any()) for w in weights if w is not None):
        # retention or a difference of softmax maps: entropy and Jensen–Shannon distances
        # are defined for distributions only
        return {
            "available": False,
            "reason": "the variant's weights are signed (not a distribution over keys)",
        }
    layers = []
    for w in weights:
        assert w is not None
        mask = allowed.expand_as(w)
        p = w.float().masked_fill(~mask, 0.0)
        zeros = ((p == 0) & mask).sum() / mask.sum().clamp_min(1)
        rows = mask.any(dim=-1)  # (B, H, T) queries with at least one allowed key
        entropy = -(p.clamp_min(1e-30).log() * p).sum(-1)
        layers.append(
            {
                "sparsity": float(zeros),
                "entropy": float(entropy[rows].mean()),
                "head_diversity": head_diversity(p, rows),
                "per_head_sparsity": [
                    float(((p[:, h] == 0) & mask[:, h]).sum() / mask[:, h].sum().clamp_min(1))
                    for h in range(p.shape[1])
                ],
                "per_head_entropy": [
                    float(entropy[:, h][rows[:, h]].mean()) for h in range(p.shape[1])
                ],
            }
        )
    return {"available": True, "layers": layers}


TASKS: Registry[type[Task]] = Registry(
    "task", "attnbench.tasks", "attnbench.tasks", "ATTNBENCH_TASK_PATH"
)


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a task under its ``name``."""
    if not cls.name:
        raise RegistryError(f"task class {cls.__name__} has no name")
    if not dataclasses.is_dataclass(cls.DataConfig):
        raise RegistryError(f"task {cls.name!r}: DataConfig must be a dataclass")
    TASKS.add(cls.name, cls, caller_origin())
    return cls


def get_task(name: str) -> type[Task]:
    return TASKS.get(name)


def task_names() -> list[str]:
    return TASKS.names()


def make_data_config(task_cls: type[Task], values: dict[str, Any] | None) -> Any:
    """Build the task's DataConfig from profile values; unknown keys name the valid ones."""
    return build_options(task_cls.DataConfig, values, f"tasks.{task_cls.name}.data")


# ---------------------------------------------------------------------------------------
# Shared base for single-sequence classification (ListOps, LRA Text / Image / Pathfinder)
# ---------------------------------------------------------------------------------------
PAD_ID = 0
CLS_ID = 1


class SequenceClassificationTask(Task):
    """Examples are ``(token ids, label)``; inputs are ``[CLS] + ids`` padded per batch."""

    head = "classification"
    metric = "accuracy"
    higher_is_better = True
    n_classes: ClassVar[int] = 2

    def vocab_size(self) -> int:
        raise NotImplementedError

    def requirements(self) -> Requirements:
        # Batches can be padded to max_len (setup.pad_to), so fixed-length variants run too.
        return Requirements(padding_mask=True, variable_length=False, max_len=self.max_len())

    def build_model(
        self, cfg: ModelConfig, variant: VariantSpec, options: dict[str, Any]
    ) -> nn.Module:
        return SequenceClassifier(self.vocab_size(), self.n_classes, cfg, variant, options)

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
        """Batches of ``[CLS] + ids``, padded to the longest row (or ``setup.pad_to``).

        Which examples form a batch is :func:`attnbench.batching.batch_groups`:
        length-bucketed when ``shuffle`` (training), else split order, or longest first
        with ``by_length`` (:meth:`evaluate` asks for that, so a subclass that
        overrides this method accepts ``by_length`` too).
        """
        examples: Sequence[tuple[Sequence[int], int]] = self.splits[split]
        lengths = [len(ids) for ids, *_ in examples]
        groups = self.batch_indices(
            split, lengths, batch_size, shuffle=shuffle, epoch=epoch, seed=seed, by_length=by_length
        )
        for idx in groups:
            rows = [[CLS_ID, *examples[i][0]] for i in idx]
            width = self.setup.pad_to or max(len(r) for r in rows)
            ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
            for j, row in enumerate(rows):
                ids[j, : len(row)] = torch.tensor(row, dtype=torch.long)
            padding = ids != PAD_ID
            targets = torch.tensor([examples[i][1] for i in idx], dtype=torch.long)
            yield Batch(
                {"ids": ids, "key_padding": padding},
                targets,
                int(padding.sum()),
                torch.tensor(idx, dtype=torch.long),
            )

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
        correct, total, loss_sum = 0, 0, 0.0
        predictions: list[dict[str, Any]] = []
        # longest first: a batch holds similar lengths (little padding); the predictions
        # are put back in split order below
        for batch in self.batches(split, batch_size, by_length=True):
            batch = batch.to(device)
            logits = model(**batch.inputs, **model_kwargs).logits.float()
            loss_sum += float(cross_entropy(logits, batch.targets)) * len(batch.targets)
            pred = logits.argmax(dim=-1)
            correct += int((pred == batch.targets).sum())
            total += len(batch.targets)
            assert batch.index is not None
            for i, p, t in zip(
                batch.index.tolist(), pred.tolist(), batch.targets.tolist(), strict=True
            ):
                predictions.append({"index": i, "prediction": p, "target": t})
        predictions.sort(key=lambda row: row["index"])
        return Evaluation({"accuracy": correct / total, "loss": loss_sum / total}, predictions)

    def analysis_batch(self, size: int = 64) -> Batch | None:
        return next(self.batches("val", size))

    def baselines(self) -> dict[str, float]:
        """Test accuracy of ``majority_class`` and ``bag_of_tokens``.

        ``bag_of_tokens``: multinomial logistic regression on ``log(1 + count)`` of each
        token (:func:`attnbench.baselines.bag_features`), fit on train, its L2 strength
        chosen on val (:func:`attnbench.baselines.bag_of_tokens`). Subclasses add theirs.
        """
        train, test = self.splits.get("train"), self.splits.get("test")
        if not train or not test:
            return {}
        labels = {split: [label for _, label in self.splits[split]] for split in self.splits}
        result = {"majority_class": bl.majority_class(labels["train"], labels["test"])}
        if self.splits.get("val"):
            n_classes = max(2, 1 + max(max(y) for y in labels.values() if y))
            vocab = self.vocab_size()
            predictions = bl.bag_of_tokens(
                lambda split: bl.bag_features([ids for ids, _ in self.splits[split]], vocab),
                labels,
                n_classes,
            )
            result["bag_of_tokens"] = bl.accuracy(predictions, labels["test"])
        return result
