"""LRA Text: byte-level document classification (IMDb sentiment; offline: novels by author).

Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient Transformers", §3.3
(after Maas et al. 2011, "Learning Word Vectors for Sentiment Analysis"). Reviews are
read as raw UTF-8 bytes, one token per byte (:mod:`attnbench.data.lra`), so the
model must compose characters into words itself over thousands of positions; the
first ``max_length`` bytes are kept (the paper: 4K; the repository's base config:
1000).

**Validation.** IMDb has no validation split, and LRA's code validates on the test
split, so its "best" checkpoint is chosen on test. Here validation is held out of the
training set by default (``val_from: train``): ``n_val`` reviews (default 10 % of the
25,000, i.e. 2,500) drawn with the data seed, disjoint from the remaining training
reviews and from the test split. LRA's behaviour is available for comparability as
``val_from: test`` (validation = the test split); such runs are labelled in the record:
the dataset's name ends in ``-val-on-test`` and its description and ``task_info.validation``
say that the checkpoint was selected on the test split.

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

    **Split by chunk or by book** (``split_by``). ``chunk`` (the default) draws each
    class's chunks at random into the three splits, so every book is in every split
    and a model may tell authors apart by their books' character names. ``book`` (label
    ``author`` only) puts every book in one split: per author, a seeded draw of its
    books gives one test book, one validation book when *every* author has at least
    three books (otherwise validation chunks are drawn from the training books, disjoint
    from the training chunks), and the rest to training, so test books are never seen
    in training. Each split is then balanced over the authors by taking the same number
    of chunks from each (by default as many as the author with the fewest chunks in
    that split's books has; validation drawn from training books takes 10 % of that
    pool). The bundled novels cannot be split by book: four of the five authors
    (Dickens, Wells, Melville, Verne) have one book each (only Jane Austen has several,
    six); ``book`` is for a novels table of one's own (``path``) with at least two books
    per author. What the chunk split gives away, measured on such a table (the bundled
    novels relabelled "Jane Austen" / "not Austen", 6 and 4 books; 128-byte chunks, the
    default profile's model, 600 steps, seed 0, 1,000 test chunks): vanilla 68.7 % with
    ``chunk`` (bag of bytes 71.7 %) and 63.4 % with ``book`` (bag of bytes 63.1 %;
    test books Persuasion and The War of the Worlds).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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
SPLIT_BY = ("chunk", "book")
VAL_FROM = ("train", "test")
SPLITS = ("train", "val", "test")
META_FILE = "meta.json"


@dataclass
class TextData:
    """Data knobs (``tasks.text.data``); defaults are LRA's (IMDb, 4K bytes, all reviews)
    except validation, which is held out of the training reviews (LRA: ``val_from: test``)."""

    source: str = "huggingface"  # "huggingface" (IMDb, LRA) | "bundled" (novels stand-in)
    hf_path: str = "imdb"  # HF dataset id, or a local directory with train/test files
    hf_name: str | None = None  # HF config name, if the dataset has several
    path: str | None = None  # bundled: the novels parquet (None: the copy shipped here)
    max_length: int = 4000  # bytes kept per document (LRA paper 4K; repo base config 1000)
    # "train": hold out n_val training documents; "test": validate on the test split (LRA's
    # code; the best checkpoint is then chosen on test; IMDb only, labelled in the record)
    val_from: str = "train"
    n_train: int | None = None  # None: all (IMDb 22,500 after hold-out; novels 80 % of pool)
    n_val: int | None = None  # None: 10 % (IMDb 2,500 training reviews; novels 10 % of pool)
    n_test: int | None = None  # None: all (IMDb 25,000; novels 10 %)
    label: str = "author"  # bundled: what a chunk is labelled with, "author" | "title"
    # bundled: "chunk" (chunks drawn at random into the splits) | "book" (each book in one
    # split; label author, at least 2 books per author: not the bundled novels)
    split_by: str = "chunk"
    seed: int = 0  # subsampling and hold-out (the data seed, not the training seed)

    def __post_init__(self) -> None:
        where = "tasks.text.data"
        if self.source not in SOURCES:
            raise ValueError(f"{where}.source={self.source!r}; valid choices: {', '.join(SOURCES)}")
        if self.label not in LABELS:
            raise ValueError(f"{where}.label={self.label!r}; valid choices: {', '.join(LABELS)}")
        if self.val_from not in VAL_FROM:
            raise ValueError(
                f"{where}.val_from={self.val_from!r}; valid choices: {', '.join(VAL_FROM)}"
            )
        if self.source == "bundled" and self.val_from == "test":
            raise ValueError(f"{where}.val_from=test is for IMDb; the novels have held-out chunks")
        if self.split_by not in SPLIT_BY:
            raise ValueError(
                f"{where}.split_by={self.split_by!r}; valid choices: {', '.join(SPLIT_BY)}"
            )
        if self.split_by == "book" and (self.source != "bundled" or self.label != "author"):
            raise ValueError(
                f"{where}.split_by=book needs source bundled and label author "
                "(a title is one book; IMDb has no books)"
            )
        if self.max_length <= 0:
            raise ValueError(f"{where}.max_length must be positive, got {self.max_length}")
        for name in ("n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{where}.{name} must be positive or null, got {value}")
        if self.n_val is not None and self.val_from == "test":
            raise ValueError(
                f"{where}.n_val needs val_from: train (with test, val is the test split)"
            )


@register_task
class LRAText(SequenceClassificationTask):
    """LRA Text: byte-level binary sentiment (IMDb) or, offline, novel-author classification."""

    # IMDb (Maas et al. 2011; HF stanfordnlp/imdb)
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "imdb": {"train": 25_000, "test": 25_000, "unsupervised": 50_000},
        "imdb/plain_text": {"train": 25_000, "test": 25_000, "unsupervised": 50_000},
    }

    averages = (("LRA", 5), ("LRA with Path-X", 6))

    name = "text"
    family = "lra"
    DataConfig = TextData
    # 2: IMDb validation held out of training by default; novels split by chunk or by book
    data_version = 2

    def __init__(self, data_cfg: TextData, setup: TaskSetup | None = None) -> None:
        super().__init__(data_cfg, setup)
        self.class_names: list[str] = ["negative", "positive"]  # set from the data by load()
        self.split_books: dict[str, list[str]] = {}  # bundled: "author: title" per split

    def validation(self) -> str:
        """How the validation split (which picks the best checkpoint) was made, in words."""
        c = self.cfg
        if c.val_from == "test":
            return "the test split (LRA compatibility: the best checkpoint is chosen on test)"
        if c.source == "huggingface":
            n = "10 %" if c.n_val is None else f"{c.n_val:,}"
            return f"{n} of the training reviews held out (seeded), disjoint from train and test"
        if c.split_by == "book":
            return "held-out books, or held-out chunks of the training books (see split_by)"
        return "held-out chunks (seeded), disjoint from train and test"

    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        val = f"validation: {self.validation()}"
        if c.source == "huggingface":
            suffix = "-val-on-test" if c.val_from == "test" else ""
            return DatasetInfo(
                f"{Path(c.hf_path).name or c.hf_path}-bytes{suffix}",
                "huggingface",
                False,
                f"IMDb reviews ({c.hf_path}) as UTF-8 bytes, first {c.max_length}; {val}",
            )
        split = (
            "split by book (test books unseen in training)"
            if c.split_by == "book"
            else "chunks drawn at random into the splits (every book in every split)"
        )
        return DatasetInfo(
            f"novels-{c.label}-bytes" + ("-by-book" if c.split_by == "book" else ""),
            "bundled",
            True,
            f"public-domain novels, {c.max_length}-byte chunks labelled by {c.label}, "
            f"balanced, {split} (offline stand-in for LRA Text / IMDb)",
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
        books: dict[str, list[str]] = {}
        if self.cfg.source == "huggingface":
            splits, names = self._imdb_splits()
        else:
            splits, names, books = self._novel_splits()
        for split in SPLITS:
            docs, labels = splits[split]
            lra.save_packed(out_dir / f"{split}.npz", labels, tokens=docs)
        meta = {
            "classes": names,
            "sizes": {s: len(splits[s][1]) for s in SPLITS},
            "val_from": self.cfg.val_from,
        }
        if self.cfg.source == "bundled":
            meta["split_by"] = self.cfg.split_by
        if books:
            meta["books"] = books  # split by book: the books of each split
        (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    def _imdb_splits(self) -> tuple[dict[str, tuple[list[bytes], list[int]]], list[str]]:
        c = self.cfg
        rng = random.Random(c.seed)
        train = _hf_rows(c.hf_path, c.hf_name, "train", c.max_length)
        test = _subsample(_hf_rows(c.hf_path, c.hf_name, "test", c.max_length), c.n_test, rng)
        if c.val_from == "test":
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

    def _novel_splits(
        self,
    ) -> tuple[dict[str, tuple[list[bytes], list[int]]], list[str], dict[str, list[str]]]:
        """Balanced splits of the novels' chunks, the class names and each split's books."""
        c = self.cfg
        books = book_chunks(read_table("novels", c.path), c.max_length)
        by_class: dict[str, list[tuple[str, str]]] = {}
        for author, title in books:  # sorted by (author, title)
            by_class.setdefault(title if c.label == "title" else author, []).append((author, title))
        names = sorted(by_class)
        k = len(names)
        if k < 2:
            raise ValueError(f"the novels give {k} {c.label}(s); need at least 2 classes")
        rng = random.Random(c.seed)

        def chunks_of(part: list[tuple[str, str]]) -> list[bytes]:
            return [chunk for book in part for chunk in books[book]]

        # per class: groups of splits drawing from one pool of chunks, in drawing order
        groups: dict[str, list[tuple[tuple[str, ...], list[bytes]]]] = {}
        assigned: dict[str, list[str]] = {s: [] for s in SPLITS}  # book split: its books
        if c.split_by == "chunk":
            for name in names:
                groups[name] = [(("test", "val", "train"), chunks_of(by_class[name]))]
        else:
            few = [f"{n} ({len(b)})" for n, b in by_class.items() if len(b) < 2]
            if few:
                raise ValueError(
                    "tasks.text.data.split_by=book needs at least 2 books per author (3 for "
                    f"validation books); the novels have fewer for: {', '.join(few)}"
                )
            val_books = all(len(b) >= 3 for b in by_class.values())
            for name in names:
                order = rng.sample(by_class[name], len(by_class[name]))
                parts = {"test": order[:1], "val": order[1:2] if val_books else []}
                parts["train"] = order[1 + len(parts["val"]) :]
                for split, part in parts.items():
                    assigned[split] += [f"{a}: {t}" for a, t in part]
                groups[name] = [(("test",), chunks_of(parts["test"]))]
                if val_books:
                    groups[name] += [
                        (("val",), chunks_of(parts["val"])),
                        (("train",), chunks_of(parts["train"])),
                    ]
                else:
                    groups[name] += [(("val", "train"), chunks_of(parts["train"]))]
        empty = [
            f"{name} ({'/'.join(members)})"
            for name in names
            for members, pool in groups[name]
            if not pool
        ]
        if empty:
            raise ValueError(f"no {c.max_length}-byte chunk in: {', '.join(empty)}")
        need = self._novel_counts(groups, names)
        splits: dict[str, tuple[list[bytes], list[int]]] = {s: ([], []) for s in SPLITS}
        for label, name in enumerate(names):
            for members, pool in groups[name]:
                order = rng.sample(range(len(pool)), len(pool))
                start = 0
                for split in members:
                    take = order[start : start + need[split][label]]
                    start += need[split][label]
                    splits[split][0].extend(pool[i] for i in sorted(take))
                    splits[split][1].extend([label] * len(take))
        return splits, names, {s: sorted(b) for s, b in assigned.items() if b}

    def _novel_counts(
        self, groups: dict[str, list[tuple[tuple[str, ...], list[bytes]]]], names: list[str]
    ) -> dict[str, list[int]]:
        """Chunks per split and class (balanced); ValueError if a class's pool is too small.

        Defaults per group of splits sharing a pool: the smallest class's pool, 10 % each to
        test and validation where they share it with training (chunk split), all of it to a
        split that has the pool alone (book split).
        """
        c = self.cfg
        k = len(names)
        asked = {"test": c.n_test, "val": c.n_val, "train": c.n_train}
        sizes: dict[str, int] = {}
        for g, (members, _) in enumerate(groups[names[0]]):
            smallest = min(len(groups[name][g][1]) for name in names)
            rest = smallest
            for split in members[:-1]:  # test / val beside training: 10 % of the pool
                sizes[split] = smallest // 10 * k
                rest -= smallest // 10
            sizes[members[-1]] = rest * k
        n = {split: asked[split] if asked[split] is not None else sizes[split] for split in SPLITS}
        need = {split: _share(n[split], k) for split in SPLITS}
        for label, name in enumerate(names):
            for members, pool in groups[name]:
                if sum(need[split][label] for split in members) > len(pool):
                    where = "/".join(members)
                    raise ValueError(
                        f"tasks.text.data asks for {n['train']}/{n['val']}/{n['test']} "
                        f"train/val/test chunks; {c.label} {name!r} has {len(pool)} {where} "
                        f"chunks of {c.max_length} bytes, not enough for balanced chunks"
                    )
        return need

    def load(self, data_dir: Path) -> None:
        data_dir = Path(data_dir)
        meta = json.loads((data_dir / META_FILE).read_text())
        self.class_names = list(meta["classes"])
        self.split_books = {s: list(b) for s, b in meta.get("books", {}).items()}
        for split in SPLITS:
            labels, columns = lra.load_packed(data_dir / f"{split}.npz")
            self.splits[split] = list(zip(columns["tokens"], labels, strict=True))

    def record_info(self, evaluation: Evaluation | None = None) -> dict[str, Any]:
        c = self.cfg
        info: dict[str, Any] = {
            "classes": self.class_names,
            "max_length_bytes": c.max_length,
            "val_from": c.val_from,
            "validation": self.validation(),
        }
        if c.source == "bundled":
            info["split_by"] = c.split_by
        if self.split_books:
            info["books"] = self.split_books
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


def book_chunks(table: Any, max_length: int) -> dict[tuple[str, str], list[bytes]]:
    """Per book ``(author, title)``, sorted, its consecutive ``max_length``-byte chunks.

    ``table``: rows with ``author``, ``title``, ``position``, ``text`` (one paragraph
    each). A book is its paragraphs in ``position`` order joined by ``\\n``; the last,
    shorter chunk is dropped so every example has the same length.
    """
    cols = lra.columns(table, ("author", "title", "position", "text"), "the novels table")
    books: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for author, title, position, text in zip(*cols.values(), strict=True):
        books.setdefault((author, title), []).append((int(position), text))
    chunks: dict[tuple[str, str], list[bytes]] = {}
    for key, paragraphs in sorted(books.items()):
        data = "\n".join(text for _, text in sorted(paragraphs)).encode("utf-8")
        chunks[key] = [
            data[i * max_length : (i + 1) * max_length] for i in range(len(data) // max_length)
        ]
    return chunks


def novel_chunks(table: Any, max_length: int, label: str) -> dict[str, list[bytes]]:
    """Per class (title or author), every book's chunks (:func:`book_chunks`), books in
    (author, title) order."""
    chunks: dict[str, list[bytes]] = {}
    for (author, title), parts in book_chunks(table, max_length).items():
        chunks.setdefault(title if label == "title" else author, []).extend(parts)
    empty = [key for key, value in chunks.items() if not value]
    if empty:
        raise ValueError(f"no {max_length}-byte chunk in: {', '.join(empty)}")
    return chunks
