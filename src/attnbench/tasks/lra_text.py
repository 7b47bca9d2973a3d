"""LRA Text: byte-level document classification (IMDb sentiment; offline: novels by author).

Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient Transformers", §3.3
(after Maas et al. 2011, "Learning Word Vectors for Sentiment Analysis"). Reviews are
read as raw UTF-8 bytes, one token per byte (:mod:`attnbench.data.lra`), so the
model must compose characters into words itself over thousands of positions; the
first ``max_length`` bytes are kept (the paper: 4K; the repository's base config:
1000). LRA has no validation split: its code validates on the test split, so the
"best" checkpoint is chosen on test (``val_from: test``, the default for IMDb; set
``val_from: train`` to hold out ``n_val`` training reviews instead).

Data sources (both read through :func:`attnbench.data.hf.load_hf_dataset`)
    ``huggingface``: ``load_hf_dataset(hf_path, hf_name)``, splits ``train`` / ``test``,
    rows ``{"text", "label"}`` (IMDb: 25,000 / 25,000 reviews, label 0 = negative,
    1 = positive). ``hf_path`` may be a local directory of ``train`` / ``test`` files in
    that schema (parquet, JSON, CSV).

    ``bundled`` (offline stand-in, labelled as such): the public-domain novels in
    ``novels.parquet``. Each book's paragraphs are joined in reading order (``\\n``
    between paragraphs) and cut into consecutive, non-overlapping ``max_length``-byte
    chunks; a chunk's label is its book's **author** (default; five authors) or its
    **title** (ten books). Author is the default because it is the more learnable of
    the two from short chunks (measured with the default profile's model, 128-byte
    chunks and 100 steps: 30 % against 20 % chance for authors, 16 % against 10 % for
    titles, i.e. Cohen's κ 0.13 against 0.07), and because, like IMDb sentiment, it
    rests on lexical and stylistic cues spread over the text rather than on one
    character name. Classes are balanced by taking the same number of chunks from each
    (a seeded sample: Jane Austen's six novels share one author's quota); test, then
    validation, then training chunks are drawn per class, so no text is in two splits.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from attnbench.attention import VariantSpec
from attnbench.data import lra
from attnbench.data.bundled import read_table
from attnbench.data.hf import load_hf_dataset
from attnbench.model import ModelConfig, SequenceClassifier
from attnbench.tasks.base import (
    DatasetInfo,
    Evaluation,
    SequenceClassificationTask,
    TaskSetup,
    register_task,
)

SOURCES = ("huggingface", "bundled")
LABELS = ("author", "title")
SPLITS = ("train", "val", "test")
META_FILE = "meta.json"


@dataclass
class TextData:
    """Data knobs (``tasks.text.data``); defaults are LRA's (IMDb, 4K bytes, all reviews)."""

    source: str = "huggingface"  # "huggingface" (IMDb, LRA) | "bundled" (novels stand-in)
    hf_path: str = "imdb"  # HF dataset id, or a local directory with train/test files
    hf_name: str | None = None  # HF config name, if the dataset has several
    path: str | None = None  # bundled: the novels parquet (None: the copy shipped here)
    max_length: int = 4000  # bytes kept per document (LRA paper 4K; repo base config 1000)
    # None: the source's default — IMDb: validate on the test split (LRA); novels: held out
    val_from: str | None = None  # "test" | "train" (hold out n_val training documents)
    n_train: int | None = None  # None: all (IMDb 25,000; novels 80 % of the balanced pool)
    n_val: int | None = None  # None: IMDb with val_from train 2,500; novels 10 %
    n_test: int | None = None  # None: all (IMDb 25,000; novels 10 %)
    label: str = "author"  # bundled: what a chunk is labelled with, "author" | "title"
    seed: int = 0  # subsampling and hold-out (the data seed, not the training seed)

    def __post_init__(self) -> None:
        where = "tasks.text.data"
        if self.source not in SOURCES:
            raise ValueError(f"{where}.source={self.source!r}; valid choices: {', '.join(SOURCES)}")
        if self.label not in LABELS:
            raise ValueError(f"{where}.label={self.label!r}; valid choices: {', '.join(LABELS)}")
        if self.val_from not in (None, "test", "train"):
            raise ValueError(f"{where}.val_from={self.val_from!r}; valid choices: test, train")
        if self.source == "bundled" and self.val_from == "test":
            raise ValueError(f"{where}.val_from=test is for IMDb; the novels have held-out chunks")
        if self.max_length <= 0:
            raise ValueError(f"{where}.max_length must be positive, got {self.max_length}")
        for name in ("n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{where}.{name} must be positive or null, got {value}")
        if self.n_val is not None and self.validation == "test":
            raise ValueError(
                f"{where}.n_val needs val_from: train (with test, val is the test split)"
            )

    @property
    def validation(self) -> str:
        """Where validation examples come from: ``test`` (LRA) or held out of training."""
        if self.val_from is not None:
            return self.val_from
        return "test" if self.source == "huggingface" else "train"


@register_task
class LRAText(SequenceClassificationTask):
    """LRA Text: byte-level binary sentiment (IMDb) or, offline, novel-author classification."""

    averages = (("LRA", 5), ("LRA with Path-X", 6))

    name = "text"
    family = "lra"
    DataConfig = TextData

    def __init__(self, data_cfg: TextData, setup: TaskSetup | None = None) -> None:
        super().__init__(data_cfg, setup)
        self.class_names: list[str] = ["negative", "positive"]  # set from the data by load()

    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        val = "validation = test split (LRA)" if c.validation == "test" else "held-out validation"
        if c.source == "huggingface":
            return DatasetInfo(
                f"{Path(c.hf_path).name or c.hf_path}-bytes",
                "huggingface",
                False,
                f"IMDb reviews ({c.hf_path}) as UTF-8 bytes, first {c.max_length}; {val}",
            )
        return DatasetInfo(
            f"novels-{c.label}-bytes",
            "bundled",
            True,
            f"public-domain novels, {c.max_length}-byte chunks labelled by {c.label}, "
            "balanced (offline stand-in for LRA Text / IMDb)",
        )

    def max_len(self) -> int:
        return self.cfg.max_length + 1  # + [CLS]

    def vocab_size(self) -> int:
        return lra.VOCAB_SIZE

    def build_model(
        self, cfg: ModelConfig, variant: VariantSpec, options: dict[str, Any]
    ) -> nn.Module:
        # The number of classes comes from the data (2 for IMDb, one per title or author).
        return SequenceClassifier(self.vocab_size(), len(self.class_names), cfg, variant, options)

    # -- data -------------------------------------------------------------------------------
    def prepare(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.source == "huggingface":
            splits, names = self._imdb_splits()
        else:
            splits, names = self._novel_splits()
        for split in SPLITS:
            docs, labels = splits[split]
            lra.save_packed(out_dir / f"{split}.npz", labels, tokens=docs)
        meta = {"classes": names, "sizes": {s: len(splits[s][1]) for s in SPLITS}}
        (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    def _imdb_splits(self) -> tuple[dict[str, tuple[list[bytes], list[int]]], list[str]]:
        c = self.cfg
        rng = random.Random(c.seed)
        train = _hf_rows(c.hf_path, c.hf_name, "train", c.max_length)
        test = _subsample(_hf_rows(c.hf_path, c.hf_name, "test", c.max_length), c.n_test, rng)
        if c.validation == "test":
            val = test
        else:
            n_val = c.n_val if c.n_val is not None else len(train) // 10
            if n_val >= len(train):
                raise ValueError(
                    f"tasks.text.data.n_val={n_val} leaves no training reviews of {len(train)}"
                )
            held = set(rng.sample(range(len(train)), n_val))
            val = [row for i, row in enumerate(train) if i in held]
            train = [row for i, row in enumerate(train) if i not in held]
        train = _subsample(train, c.n_train, rng)
        splits = {
            name: ([doc for doc, _ in rows], [label for _, label in rows])
            for name, rows in (("train", train), ("val", val), ("test", test))
        }
        return splits, ["negative", "positive"]

    def _novel_splits(self) -> tuple[dict[str, tuple[list[bytes], list[int]]], list[str]]:
        c = self.cfg
        table = read_table("novels", c.path)
        chunks = novel_chunks(table, c.max_length, c.label)
        names = sorted(chunks)
        per_class = min(len(v) for v in chunks.values())
        k = len(names)
        if k < 2:
            raise ValueError(f"the novels give {k} {c.label}(s); need at least 2 classes")
        total = per_class * k
        tenth = per_class // 10 * k  # defaults: 10 % / 10 % / the rest, balanced
        n_test = c.n_test if c.n_test is not None else tenth
        n_val = c.n_val if c.n_val is not None else tenth
        n_train = c.n_train if c.n_train is not None else total - 2 * tenth
        need = [_share(n, k) for n in (n_test, n_val, n_train)]
        if sum(counts[0] for counts in need) > per_class:  # class 0 gets the most
            raise ValueError(
                f"tasks.text.data asks for {n_train}/{n_val}/{n_test} chunks; the novels give "
                f"{per_class} per {c.label} x {k} = {total} balanced chunks of "
                f"{c.max_length} bytes"
            )
        rng = random.Random(c.seed)
        splits: dict[str, tuple[list[bytes], list[int]]] = {s: ([], []) for s in SPLITS}
        for label, name in enumerate(names):
            order = rng.sample(range(len(chunks[name])), len(chunks[name]))
            start = 0
            for split, counts in zip(("test", "val", "train"), need, strict=True):
                take = order[start : start + counts[label]]
                start += counts[label]
                splits[split][0].extend(chunks[name][i] for i in sorted(take))
                splits[split][1].extend([label] * len(take))
        return splits, names

    def load(self, data_dir: Path) -> None:
        data_dir = Path(data_dir)
        meta = json.loads((data_dir / META_FILE).read_text())
        self.class_names = list(meta["classes"])
        for split in SPLITS:
            labels, columns = lra.load_packed(data_dir / f"{split}.npz")
            self.splits[split] = list(zip(columns["tokens"], labels, strict=True))

    def record_info(self, evaluation: Evaluation | None = None) -> dict[str, Any]:
        info = {"classes": self.class_names, "max_length_bytes": self.cfg.max_length}
        return info | super().record_info(evaluation)


def _hf_rows(path: str, name: str | None, split: str, max_length: int) -> list[tuple[bytes, int]]:
    """(first max_length UTF-8 bytes, label) for each row of an IMDb-schema split."""
    ds = load_hf_dataset(path, name, split=split)
    cols = lra.columns(ds, ("text", "label"), f"dataset {path} split {split}")
    rows = []
    for i, (text, label) in enumerate(zip(cols["text"], cols["label"], strict=True)):
        if label not in (0, 1):
            raise ValueError(f"dataset {path} split {split} row {i}: label {label!r}; valid: 0, 1")
        rows.append((text.encode("utf-8")[:max_length], int(label)))
    return rows


def _subsample(rows: list[Any], n: int | None, rng: random.Random) -> list[Any]:
    """A seeded subset of ``n`` rows in their original order (all rows if n is None)."""
    if n is None:
        return rows
    if n > len(rows):
        raise ValueError(f"asked for {n} examples, the split has {len(rows)}")
    keep = sorted(rng.sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def _share(n: int, k: int) -> list[int]:
    """n examples over k classes as evenly as possible (the first n % k get one more)."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def novel_chunks(table: Any, max_length: int, label: str) -> dict[str, list[bytes]]:
    """Per class (title or author), every book's consecutive ``max_length``-byte chunks.

    ``table``: rows with ``author``, ``title``, ``position``, ``text`` (one paragraph
    each). A book is its paragraphs in ``position`` order joined by ``\\n``; the last,
    shorter chunk is dropped so every example has the same length.
    """
    cols = lra.columns(table, ("author", "title", "position", "text"), "the novels table")
    books: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for author, title, position, text in zip(*cols.values(), strict=True):
        books.setdefault((author, title), []).append((int(position), text))
    chunks: dict[str, list[bytes]] = {}
    for (author, title), paragraphs in sorted(books.items()):
        data = "\n".join(text for _, text in sorted(paragraphs)).encode("utf-8")
        n = len(data) // max_length
        key = title if label == "title" else author
        chunks.setdefault(key, []).extend(
            data[i * max_length : (i + 1) * max_length] for i in range(n)
        )
    empty = [key for key, value in chunks.items() if not value]
    if empty:
        raise ValueError(f"no {max_length}-byte chunk in: {', '.join(empty)}")
    return chunks
