"""GLUE: nine sentence and sentence-pair tasks, plus two offline stand-ins.

Wang et al. 2019, "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural
Language Understanding". Each GLUE task is registered as its own task (``cola``,
``sst2``, ``mrpc``, ``stsb``, ``qqp``, ``mnli``, ``qnli``, ``rte``, ``wnli``) and
scored with its official metric (:mod:`attnbench.metrics`). Models are trained from
scratch, as the GLUE paper's own baselines are (no pre-training): every variant gets
the same shared backbone and the same protocol, so that a difference in the score is
the attention's (the lesson of Narang et al. 2021, "Do Transformer Modifications
Transfer Across Implementations and Applications?").

Protocol, and why:

- **Test = the official validation split.** GLUE's test labels are hidden behind the
  submission server, so the validation split is the test set here (MNLI: matched and
  mismatched), and a seeded part of the training split is held out as our validation
  set for model selection. Every ``dataset_info()`` says so.
- **Input.** One encoder reads ``[CLS] s1 [SEP] s2`` (single-sentence tasks:
  ``[CLS] s``), cut to ``max_length`` tokens longest-first as BERT does (Devlin et al.
  2019); there are no segment embeddings, the [SEP] token marks the boundary. The
  tokenizer is a byte-level BPE (:class:`attnbench.text.SubwordTokenizer`) trained on
  the task's training split only and saved beside the data.
- **Pair encoding** (``pair_encoding``): ``joint`` (the default, above) lets attention
  work across the two sentences. ``siamese`` encodes each sentence alone with one
  shared encoder and classifies ``[u, v, u⊙v, u−v]`` (:class:`attnbench.model.PairClassifier`),
  as the GLUE paper's own from-scratch baselines do (after Conneau et al. 2017,
  InferSent); it learns sentence matching in far fewer steps, but attention then never
  relates the two sentences. Both see the same tokens (one ``max_length`` budget per
  pair), so the two encodings can be compared.
- **STS-B** is a regression: one output, mean squared error on the 0–5 score.

The offline stand-ins (``stand_in=True``, never named after GLUE): ``wordnet-lex``
(single sentence: a WordNet definition → its lexicographer category, 45 classes) and
``bible-paraphrase`` (MRPC-like: a King James verse paired with the World English
Bible's rendering of the same verse, or of a verse 1–3 away in the same chapter). Their
rows are written in the GLUE row schema (``sentence``/``label``,
``sentence1``/``sentence2``/``label``) as parquet files in the data directory and read
back through :func:`attnbench.data.hf.load_hf_dataset`, so the conversion,
tokenization and evaluation code is the same as for the real benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import baselines as bl
from attnbench.attention import VariantSpec
from attnbench.data.hf import load_hf_dataset
from attnbench.metrics import task_metrics
from attnbench.model import ModelConfig, PairClassifier, cross_entropy
from attnbench.records import atomic_write_text
from attnbench.tasks.base import (
    CLS_ID,
    PAD_ID,
    Batch,
    DatasetInfo,
    Evaluation,
    SequenceClassificationTask,
    TaskSetup,
    analysis_mask,
    attention_statistics,
    register_task,
    with_aux,
)
from attnbench.text import SEP, SPECIALS, UNK, SubwordTokenizer

META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"


# ---------------------------------------------------------------------------------------
# Data knobs
# ---------------------------------------------------------------------------------------
PAIR_ENCODINGS = ("joint", "siamese")


def check_pair_encoding(where: str, value: str) -> None:
    if value not in PAIR_ENCODINGS:
        raise ValueError(
            f"{where}.pair_encoding={value!r}; valid choices: {', '.join(PAIR_ENCODINGS)}"
        )


def check_text_knobs(where: str, vocab_size: int, max_length: int, min_frequency: int) -> None:
    if vocab_size <= 263:
        raise ValueError(f"{where}.vocab_size must exceed 263 (specials + bytes), got {vocab_size}")
    if max_length < 3:
        raise ValueError(f"{where}.max_length must be at least 3 tokens, got {max_length}")
    if min_frequency < 1:
        raise ValueError(f"{where}.min_frequency must be at least 1, got {min_frequency}")


def check_split_fractions(where: str, val: float, test: float) -> None:
    """Validation and test fractions each in (0, 1), together below 1."""
    for name, value in (("val_fraction", val), ("test_fraction", test)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{where}.{name} must be in (0, 1), got {value}")
    if val + test >= 1.0:
        raise ValueError(f"{where}: val_fraction + test_fraction must be below 1, got {val + test}")


def check_cap(where: str, name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ValueError(f"{where}.{name} must be at least {minimum} or null, got {value}")


def _is_split_files(value: Any) -> bool:
    """``{split: "file"}`` or ``{split: ["file", ...]}``."""

    def files(v: Any) -> bool:
        return isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))

    return isinstance(value, dict) and all(
        isinstance(k, str) and files(v) for k, v in value.items()
    )


@dataclass
class GlueData:
    """Data knobs of a GLUE task (``tasks.<task>.data``); defaults are the full benchmark.

    ``hf_path``/``hf_name`` name the HuggingFace dataset; a local copy in the GLUE
    schema is read with e.g. ``hf_path: json`` and ``data_files: {train: ...,
    validation: ...}`` (MNLI: ``validation_matched``, ``validation_mismatched``).
    """

    task = "glue"  # not a field: the task name, for messages (set per task)

    hf_path: str = "nyu-mll/glue"  # HF dataset (hub id, or "json"/"parquet" with data_files)
    hf_name: str | None = None  # dataset config: the task's GLUE config (set per task)
    data_files: dict[str, Any] | None = None  # {split: file or [files]} for local copies
    revision: str | None = None  # hub revision (commit or tag) to pin the data
    seed: int = 0  # seeds the held-out validation split and any subsampling
    val_fraction: float = 0.1  # share of train held out as validation ...
    max_val: int | None = 5000  # ... but at most this many examples (null: no cap)
    max_train: int | None = None  # cap on training examples after the hold-out (null: all)
    max_test: int | None = None  # cap on test examples (seeded subsample; null: all)
    vocab_size: int = 8000  # BPE vocabulary, learnt on the training split
    max_length: int = 128  # model input tokens including [CLS] and [SEP] (BERT's GLUE setting)
    min_frequency: int = 2  # BPE: merges seen fewer times are not learnt
    pair_encoding: str = "joint"  # pairs: "joint" ([CLS] s1 [SEP] s2) | "siamese" (two towers)

    def __post_init__(self) -> None:
        where = f"tasks.{self.task}.data"
        if self.data_files is not None and not _is_split_files(self.data_files):
            raise ValueError(
                f"{where}.data_files must map split names to a file or a list of files, "
                f"got {self.data_files!r}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"{where}.val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("max_val", "max_train", "max_test"):
            check_cap(where, name, getattr(self, name))
        check_text_knobs(where, self.vocab_size, self.max_length, self.min_frequency)
        check_pair_encoding(where, self.pair_encoding)


def _glue_data(task: str) -> type[GlueData]:
    """The DataConfig of one GLUE task: :class:`GlueData` with ``hf_name`` = the task."""
    cls = type(
        f"GlueData_{task}",
        (GlueData,),
        {"__annotations__": {"hf_name": "str | None"}, "hf_name": task, "task": task},
    )
    cls.__module__ = __name__
    return dataclass(cls)


# ---------------------------------------------------------------------------------------
# Rows → token ids (shared by the real benchmark and the stand-ins)
# ---------------------------------------------------------------------------------------
def truncate_longest_first(lengths: Sequence[int], budget: int) -> list[int]:
    """Lengths after cutting tokens from the longer text until the total fits ``budget``.

    BERT's ``_truncate_seq_pair``: ties cut the second text, so both texts keep a share.
    """
    kept = list(lengths)
    while sum(kept) > budget:
        longest = max(range(len(kept)), key=lambda i: (kept[i], i))
        kept[longest] -= 1
    return kept


def encode_rows(
    columns: Sequence[Sequence[str]], tokenizer: SubwordTokenizer, max_length: int
) -> tuple[list[list[int]], int]:
    """``s`` or ``s1 [SEP] s2`` as ids (without [CLS]), at most ``max_length - 1`` of them.

    Returns the id lists and how many examples were truncated. A literal "[SEP]" (or
    any special token's name) in a text becomes [UNK]: only this function places
    structural tokens, so the sentence boundary is unambiguous.
    """
    encoded = [
        [
            [UNK if i < len(SPECIALS) else i for i in ids]
            for ids in tokenizer.encode_batch(list(col))
        ]
        for col in columns
    ]
    budget = max_length - 1 - (len(columns) - 1)  # room left by [CLS] and the [SEP]s
    rows, truncated = [], 0
    for parts in zip(*encoded, strict=True):
        kept = truncate_longest_first([len(p) for p in parts], budget)
        truncated += kept != [len(p) for p in parts]
        ids: list[int] = []
        for j, (part, n) in enumerate(zip(parts, kept, strict=True)):
            ids += ([SEP] if j else []) + part[:n]
        rows.append(ids)
    return rows, truncated


def _split_pair(ids: list[int]) -> tuple[list[int], list[int]]:
    """``s1 [SEP] s2`` → ``([CLS] s1, [CLS] s2)`` (the first [SEP] is the boundary)."""
    cut = ids.index(SEP)
    return [CLS_ID, *ids[:cut]], [CLS_ID, *ids[cut + 1 :]]


def _seeded_subset(n: int, size: int | None, seed: int, stream: int) -> list[int]:
    """Sorted indices of a seeded random subset of ``range(n)`` (all when size is null/≥ n)."""
    if size is None or size >= n:
        return list(range(n))
    perm = np.random.default_rng([seed, stream]).permutation(n)
    return sorted(perm[:size].tolist())


# ---------------------------------------------------------------------------------------
# The shared GLUE task
# ---------------------------------------------------------------------------------------
class GlueTask(SequenceClassificationTask):
    """Base of the GLUE tasks and their stand-ins (not registered itself)."""

    family = "glue"
    head = "classification"
    fields: ClassVar[tuple[str, ...]] = ("sentence",)  # text columns of a row
    #: our split → the dataset's split that provides it ("train" is held out for "val").
    eval_splits: ClassVar[dict[str, str]] = {"test": "validation"}
    title: ClassVar[str] = ""  # e.g. "CoLA (Warstadt et al. 2019)", for the description
    #: key of the metric set's output that is ``metric`` (MNLI renames it per split)
    set_metric: ClassVar[str | None] = None
    #: rows per split of the hub's GLUE configuration (``attnbench data check``), keyed by
    #: "glue/<configuration>"; the test splits' labels are hidden (-1)
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {}

    def __init__(self, data_cfg: Any, setup: TaskSetup | None = None) -> None:
        super().__init__(data_cfg, setup)
        self.meta: dict[str, Any] = {}
        self.siamese = getattr(data_cfg, "pair_encoding", "joint") == "siamese"
        if self.siamese and len(self.fields) != 2:
            raise ValueError(
                f"tasks.{self.name}.data.pair_encoding=siamese needs a sentence-pair task; "
                f"{self.name} has one sentence (valid choice: joint)"
            )

    @property
    def regression(self) -> bool:
        return self.n_classes == 1

    # -- description ------------------------------------------------------------------
    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        where = f"{c.hf_path}" + (f" ({c.hf_name})" if c.hf_name else "")
        if c.data_files:
            where += " files " + ", ".join(f"{k}={v}" for k, v in c.data_files.items())
        test = " + ".join(self.eval_splits.values())
        cap = f", at most {c.max_val}" if c.max_val is not None else ""
        return DatasetInfo(
            f"glue-{self.name}",
            "huggingface",
            False,
            f"GLUE {self.title} from {where}; test = official {test} (GLUE test labels "
            f"are hidden), val = {c.val_fraction:g} of train held out, seed {c.seed}{cap}; "
            f"trained from scratch with the shared backbone{self._encoding()}, "
            f"BPE vocab {c.vocab_size} learnt on train, max {c.max_length} tokens",
        )

    def _encoding(self) -> str:
        if len(self.fields) == 1:
            return ""
        return " (two-tower siamese pair encoder)" if self.siamese else " ([CLS] s1 [SEP] s2)"

    def max_len(self) -> int:
        return self.cfg.max_length

    def vocab_size(self) -> int:
        if not self.meta:
            raise ValueError(f"task {self.name!r}: load() the prepared data first")
        return int(self.meta["vocab_size"])

    # -- data -----------------------------------------------------------------------------
    def read_sources(self, out_dir: Path) -> dict[str, Any]:
        """Our splits as HF datasets in the GLUE row schema: train, val, test (, ...)."""
        c = self.cfg
        data = load_hf_dataset(c.hf_path, c.hf_name, data_files=c.data_files, revision=c.revision)
        what = c.hf_path + (f"/{c.hf_name}" if c.hf_name else "")
        for split in ("train", *self.eval_splits.values()):
            if split not in data:
                raise ValueError(
                    f"dataset {what} has no {split!r} split; it has: {', '.join(data)}"
                )
        train = data["train"]
        n = len(train)
        n_val = max(1, round(c.val_fraction * n))
        n_val = min(n_val, c.max_val) if c.max_val is not None else n_val
        if n_val >= n:
            raise ValueError(f"dataset {what}: {n} training rows are too few to hold out {n_val}")
        perm = np.random.default_rng([c.seed, 0]).permutation(n)
        val_idx, rest = sorted(perm[:n_val].tolist()), perm[n_val:]
        train_idx = sorted(rest[: c.max_train].tolist() if c.max_train else rest.tolist())
        sources = {"train": train.select(train_idx), "val": train.select(val_idx)}
        for stream, (ours, theirs) in enumerate(self.eval_splits.items(), start=1):
            rows = data[theirs]
            sources[ours] = rows.select(_seeded_subset(len(rows), c.max_test, c.seed, stream))
        return sources

    def _columns(self, split: str, rows: Any) -> tuple[list[list[str]], list[Any]]:
        """The text columns and checked labels of one split, as plain lists."""
        missing = [f for f in (*self.fields, "label") if f not in rows.column_names]
        if missing:
            raise ValueError(
                f"task {self.name!r}, {split} split: missing column(s) {', '.join(missing)}; "
                f"it has: {', '.join(rows.column_names)}"
            )
        table = rows.select_columns([*self.fields, "label"]).to_dict()  # lists, not lazy columns
        labels = table["label"]
        if self.regression:
            bad = [y for y in labels if y is None or not 0.0 <= float(y) <= 5.0]
            what = "scores in [0, 5]"
        else:
            bad = [y for y in labels if y is None or int(y) != y or not 0 <= y < self.n_classes]
            what = f"labels in 0..{self.n_classes - 1}"
        if bad:
            hidden = " (GLUE test labels are hidden: use the validation split)" if -1 in bad else ""
            raise ValueError(
                f"task {self.name!r}, {split} split: {len(bad)} row(s) without valid "
                f"{what}, e.g. {bad[0]!r}{hidden}"
            )
        texts = [[text or "" for text in table[f]] for f in self.fields]
        return texts, [float(y) if self.regression else int(y) for y in labels]

    def prepare(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        sources = self.read_sources(out_dir)
        columns = {split: self._columns(split, rows) for split, rows in sources.items()}
        tokenizer = SubwordTokenizer.train(
            (text for texts in columns["train"][0] for text in texts),
            self.cfg.vocab_size,
            min_frequency=self.cfg.min_frequency,
        )
        tokenizer.save(out_dir / TOKENIZER_FILE)
        meta: dict[str, Any] = {
            "vocab_size": tokenizer.vocab_size,
            "max_length": self.cfg.max_length,
            "fields": list(self.fields),
            "splits": {},
        }
        for split, (texts, labels) in columns.items():
            ids, truncated = encode_rows(texts, tokenizer, self.cfg.max_length)
            payload = {"ids": ids, "labels": labels}
            atomic_write_text(out_dir / f"{split}.json", json.dumps(payload, separators=(",", ":")))
            meta["splits"][split] = {
                "examples": len(ids),
                "truncated": truncated,
                "mean_tokens": float(np.mean([len(r) + 1 for r in ids])) if ids else 0.0,
            }
        atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2) + "\n")

    def load(self, data_dir: Path) -> None:
        data_dir = Path(data_dir)
        try:
            self.meta = json.loads((data_dir / META_FILE).read_text())
            for split in self.meta["splits"]:
                payload = json.loads((data_dir / f"{split}.json").read_text())
                self.splits[split] = list(zip(payload["ids"], payload["labels"], strict=True))
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(
                f"task {self.name!r}: cannot read prepared data in {data_dir}: "
                f"{str(exc).splitlines()[0]}"
            ) from None
        for split, examples in self.splits.items():
            longest = max((len(ids) + 1 for ids, _ in examples), default=0)
            if longest > self.max_len():
                raise ValueError(
                    f"task {self.name!r}: {split} examples are up to {longest} tokens, beyond "
                    f"max_length={self.max_len()}; rerun attnbench prepare"
                )

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
        # The base pads [CLS] + ids and picks the examples of each batch (length-bucketed
        # by (seed, epoch) in training); its targets are class indices, so a regression
        # task replaces them with the float scores, and the siamese encoding re-packs each
        # pair as two [CLS]-led sequences (the same examples per batch as the joint one).
        examples = self.splits[split]
        for batch in super().batches(
            split, batch_size, shuffle=shuffle, epoch=epoch, seed=seed, by_length=by_length
        ):
            assert batch.index is not None
            index = batch.index.tolist()
            if self.regression:
                batch.targets = torch.tensor([examples[i][1] for i in index], dtype=torch.float32)
            if self.siamese:
                pairs = [_split_pair(examples[i][0]) for i in index]
                ids_a, padding_a = self._pad([a for a, _ in pairs])
                ids_b, padding_b = self._pad([b for _, b in pairs])
                batch.inputs = {
                    "ids_a": ids_a,
                    "ids_b": ids_b,
                    "padding_a": padding_a,
                    "padding_b": padding_b,
                }
                batch.n_tokens = int(padding_a.sum() + padding_b.sum())
            yield batch

    def _pad(self, rows: list[list[int]]) -> tuple[Tensor, Tensor]:
        """(B, T) ids padded to ``pad_to`` or the longest row, and the real-token mask."""
        width = self.setup.pad_to or max(len(r) for r in rows)
        ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
        for j, row in enumerate(rows):
            ids[j, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids, ids != PAD_ID

    # -- model ----------------------------------------------------------------------------
    def build_model(
        self, cfg: ModelConfig, variant: VariantSpec, options: dict[str, Any]
    ) -> nn.Module:
        if self.siamese:  # one shared encoder per sentence, [u, v, u⊙v, u−v] → MLP
            return PairClassifier(self.vocab_size(), self.n_classes, cfg, variant, options)
        return super().build_model(cfg, variant, options)

    @torch.no_grad()
    def attention_analysis(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        if not self.siamese:
            return super().attention_analysis(model, device)
        batch = self.analysis_batch()
        assert batch is not None
        batch = batch.to(device)
        model.eval()
        out = model(**batch.inputs, need_weights=True)  # the weights of sentence 1's tower
        real = batch.inputs["padding_a"]
        allowed = analysis_mask(real, real.shape[1], device)
        return {**attention_statistics(out.weights, allowed), "sequence": "sentence1"}

    # -- training and evaluation -------------------------------------------------------
    def _loss_of(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.regression:
            return F.mse_loss(logits[:, 0].float(), targets.float())
        return cross_entropy(logits, targets)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor | None]:
        out = model(**batch.inputs)
        return with_aux(self._loss_of(out.logits, batch.targets), out.aux_loss)

    def scores(self, predictions: Sequence[float], targets: Sequence[float]) -> dict[str, float]:
        """The task's official metrics (:data:`attnbench.metrics.TASK_METRICS`)."""
        return task_metrics(self.name, predictions, targets)

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str,
        batch_size: int,
        device: torch.device,
        **model_kwargs: Any,
    ) -> Evaluation:
        loss_sum, total = 0.0, 0
        predictions: list[dict[str, Any]] = []
        examples = self.splits[split]  # exact targets (a float32 tensor rounds STS-B scores)
        # longest first (little padding), then the predictions back in split order
        for batch in self.batches(split, batch_size, by_length=True):
            batch = batch.to(device)
            logits = model(**batch.inputs, **model_kwargs).logits.float()
            loss_sum += float(self._loss_of(logits, batch.targets)) * len(batch.targets)
            total += len(batch.targets)
            pred = logits[:, 0] if self.regression else logits.argmax(dim=-1)
            assert batch.index is not None
            for i, p in zip(batch.index.tolist(), pred.tolist(), strict=True):
                predictions.append({"index": i, "prediction": p, "target": examples[i][1]})
        predictions.sort(key=lambda row: row["index"])
        preds = [row["prediction"] for row in predictions]
        targets = [row["target"] for row in predictions]
        return Evaluation({**self.scores(preds, targets), "loss": loss_sum / total}, predictions)

    def baselines(self) -> dict[str, float]:
        """Trivial predictors on the test split, scored in the primary metric.

        ``majority_class``: the most frequent training label (ties: the smallest);
        STS-B: ``mean_prediction``, the mean training score (a constant has no
        correlation: 0). Where the primary metric involves F1 and the majority is not the
        positive class, ``constant_positive`` too: predicting "paraphrase" for everything
        scores F1 > 0, so it is the bar a model has to clear there.

        ``bag_of_tokens``: a linear model on bags of the task's BPE tokens, fit on train,
        its L2 strength chosen on val by the task's own metric
        (:func:`attnbench.baselines.select_linear`): multinomial logistic regression, for
        STS-B ridge regression on the score. A sentence is ``log(1 + count)`` of each
        token (:func:`attnbench.baselines.bag_features`); a pair is ``[a + b, |a − b|,
        a ⊙ b]`` of its two sentences' bags (:func:`attnbench.baselines.pair_bag_features`),
        whatever the ``pair_encoding``.
        """
        train = [label for _, label in self.splits.get("train", [])]
        test = [label for _, label in self.splits.get("test", [])]
        if not train or not test:
            return {}
        key = self.set_metric or self.metric

        def score(predictions: Sequence[float], targets: Sequence[float]) -> float:
            return self.scores(list(predictions), list(targets))[key]

        if self.regression:
            result = {"mean_prediction": score([float(np.mean(train))] * len(test), test)}
        else:
            majority = bl.majority_label(train)
            result = {"majority_class": score([majority] * len(test), test)}
            if "f1" in key and majority != 1:
                result["constant_positive"] = score([1] * len(test), test)
        if self.splits.get("val"):
            labels = {split: [label for _, label in self.splits[split]] for split in self.splits}
            predictions = bl.bag_of_tokens(
                self._baseline_bag_features,
                labels,
                1 if self.regression else self.n_classes,
                score=lambda p, t: score(p.tolist(), t.tolist()),
            )
            result["bag_of_tokens"] = score(predictions.tolist(), test)
        return result

    def _baseline_bag_features(self, split: str) -> Tensor:
        """Bag-of-tokens features of a split: one bag per sentence, or a pair's combination."""
        rows = [ids for ids, _ in self.splits[split]]
        if len(self.fields) == 1:
            return bl.bag_features(rows, self.vocab_size())
        cuts = [ids.index(SEP) for ids in rows]
        return bl.pair_bag_features(
            [ids[:cut] for ids, cut in zip(rows, cuts, strict=True)],
            [ids[cut + 1 :] for ids, cut in zip(rows, cuts, strict=True)],
            self.vocab_size(),
        )

    def record_info(self, evaluation: Evaluation | None = None) -> dict[str, Any]:
        return ({"data": self.meta} if self.meta else {}) | super().record_info(evaluation)


# ---------------------------------------------------------------------------------------
# The nine GLUE tasks
# ---------------------------------------------------------------------------------------
@register_task
class CoLA(GlueTask):
    """GLUE CoLA: grammatical acceptability of one sentence (Matthews correlation).

    Warstadt, Singh & Bowman 2019, "Neural Network Acceptability Judgments".
    """

    averages = (("GLUE", 9),)

    name = "cola"
    metric = "mcc"
    set_metric = "mcc"
    title = "CoLA (Warstadt et al. 2019)"
    DataConfig = _glue_data("cola")
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "glue/cola": {"train": 8_551, "validation": 1_043, "test": 1_063}
    }


@register_task
class SST2(GlueTask):
    """GLUE SST-2: binary sentiment of a movie-review sentence (accuracy).

    Socher et al. 2013, "Recursive Deep Models for Semantic Compositionality Over a
    Sentiment Treebank".
    """

    averages = (("GLUE", 9),)

    name = "sst2"
    title = "SST-2 (Socher et al. 2013)"
    DataConfig = _glue_data("sst2")
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "glue/sst2": {"train": 67_349, "validation": 872, "test": 1_821}
    }


@register_task
class MRPC(GlueTask):
    """GLUE MRPC: is a news sentence pair a paraphrase (mean of F1 and accuracy)?

    Dolan & Brockett 2005, "Automatically Constructing a Corpus of Sentential
    Paraphrases". The primary metric is GLUE's task score, the mean of F1 (class 1,
    paraphrase) and accuracy; both are reported.
    """

    averages = (("GLUE", 9),)

    name = "mrpc"
    metric = "f1_accuracy"
    fields = ("sentence1", "sentence2")
    title = "MRPC (Dolan & Brockett 2005)"
    DataConfig = _glue_data("mrpc")
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "glue/mrpc": {"train": 3_668, "validation": 408, "test": 1_725}
    }


@register_task
class STSB(GlueTask):
    """GLUE STS-B: similarity score 0–5 of a sentence pair (mean of Pearson and Spearman).

    Cer et al. 2017, "SemEval-2017 Task 1: Semantic Textual Similarity Multilingual and
    Cross-lingual Focused Evaluation". A regression: one output trained with mean
    squared error; the primary metric is GLUE's task score, the mean of Pearson's r and
    Spearman's ρ, and both are reported.
    """

    averages = (("GLUE", 9),)

    name = "stsb"
    metric = "pearson_spearman"
    head = "regression"
    n_classes = 1
    fields = ("sentence1", "sentence2")
    title = "STS-B (Cer et al. 2017)"
    DataConfig = _glue_data("stsb")
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "glue/stsb": {"train": 5_749, "validation": 1_500, "test": 1_379}
    }


@register_task
class QQP(GlueTask):
    """GLUE QQP: are two Quora questions duplicates (mean of F1 and accuracy)?

    Iyer, Dandekar & Csernai 2017, "First Quora Dataset Release: Question Pairs".
    """

    averages = (("GLUE", 9),)

    name = "qqp"
    metric = "f1_accuracy"
    fields = ("question1", "question2")
    title = "QQP (Iyer et al. 2017)"
    DataConfig = _glue_data("qqp")
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "glue/qqp": {"train": 363_846, "validation": 40_430, "test": 390_965}
    }


@register_task
class MNLI(GlueTask):
    """GLUE MNLI: entailment / neutral / contradiction (matched and mismatched accuracy).

    Williams, Nangia & Bowman 2018, "A Broad-Coverage Challenge Corpus for Sentence
    Understanding through Inference". Test is the matched validation split (the
    training genres, primary metric ``accuracy_matched``); the mismatched one (other
    genres) is evaluated at the same checkpoint and reported as ``accuracy_mismatched``,
    its per-example predictions in ``<record>.predictions_mismatched.jsonl``. Our
    validation set is held out of train, i.e. in the training genres: "matched".
    """

    averages = (("GLUE", 9),)

    name = "mnli"
    metric = "accuracy_matched"
    set_metric = "accuracy"
    n_classes = 3
    fields = ("premise", "hypothesis")
    eval_splits: ClassVar[dict[str, str]] = {
        "test": "validation_matched",
        "test_mismatched": "validation_mismatched",
    }
    title = "MNLI (Williams et al. 2018)"
    DataConfig = _glue_data("mnli")
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "glue/mnli": {
            "train": 392_702,
            "validation_matched": 9_815,
            "validation_mismatched": 9_832,
            "test_matched": 9_796,
            "test_mismatched": 9_847,
        }
    }

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str,
        batch_size: int,
        device: torch.device,
        **model_kwargs: Any,
    ) -> Evaluation:
        """Matched accuracy; on test also the mismatched split, its predictions as
        ``extra["predictions_mismatched"]`` (written beside the record)."""
        matched = super().evaluate(model, split, batch_size, device, **model_kwargs)
        scores = matched.metrics
        result = {"accuracy_matched": scores["accuracy"], "loss": scores["loss"]}
        if split != "test":
            return Evaluation(result, matched.predictions)
        other = super().evaluate(model, "test_mismatched", batch_size, device, **model_kwargs)
        result |= {
            "accuracy_mismatched": other.metrics["accuracy"],
            "loss_mismatched": other.metrics["loss"],
        }
        return Evaluation(
            result, matched.predictions, extra={"predictions_mismatched": other.predictions}
        )


@register_task
class QNLI(GlueTask):
    """GLUE QNLI: does a Wikipedia sentence answer the question (accuracy)?

    Built by GLUE from Rajpurkar et al. 2016, "SQuAD: 100,000+ Questions for Machine
    Comprehension of Text".
    """

    averages = (("GLUE", 9),)

    name = "qnli"
    fields = ("question", "sentence")
    title = "QNLI (from SQuAD, Rajpurkar et al. 2016)"
    DataConfig = _glue_data("qnli")
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "glue/qnli": {"train": 104_743, "validation": 5_463, "test": 5_463}
    }


@register_task
class RTE(GlueTask):
    """GLUE RTE: does the first text entail the second (accuracy)?

    Dagan, Glickman & Magnini 2006, "The PASCAL Recognising Textual Entailment
    Challenge", and its successors RTE2, RTE3 and RTE5, merged by GLUE.
    """

    averages = (("GLUE", 9),)

    name = "rte"
    fields = ("sentence1", "sentence2")
    title = "RTE (Dagan et al. 2006, RTE1-3 and 5)"
    DataConfig = _glue_data("rte")
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "glue/rte": {"train": 2_490, "validation": 277, "test": 3_000}
    }


@register_task
class WNLI(GlueTask):
    """GLUE WNLI: Winograd schemas as entailment of a pronoun substitution (accuracy).

    Levesque, Davis & Morgenstern 2012, "The Winograd Schema Challenge". GLUE warns
    that its validation set is adversarial (shared sentences with flipped labels):
    models trained on WNLI's train split often score below the majority class.
    """

    averages = (("GLUE", 9),)

    name = "wnli"
    fields = ("sentence1", "sentence2")
    title = "WNLI (Levesque et al. 2012)"
    DataConfig = _glue_data("wnli")
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "glue/wnli": {"train": 635, "validation": 71, "test": 146}
    }
