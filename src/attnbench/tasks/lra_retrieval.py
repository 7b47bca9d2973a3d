"""LRA Retrieval: do two byte-level documents match? (AAN citation pairs; offline: Bibles).

Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient Transformers", §3.5
(after Radev et al. 2013, "The ACL Anthology Network corpus"). Two papers, each read
as its first ``max_length`` bytes (LRA: 4000, so 8K bytes per pair), are
encoded **separately** by one shared encoder — a two-tower model
(:class:`attnbench.model.PairClassifier`: pooled vectors u, v combined as
[u, v, u⊙v, u−v] into an MLP) — and classified as linked (one cites the other) or
not. Encoding each document alone is the point: the model must compress a long
document into one vector, not align the pair token by token.

Data sources (one reader, :func:`attnbench.data.lra.read_pairs_tsv`, for both)
    ``lra-release``: ``path`` is the release's ``lra_release/tsv_data`` directory with
    ``new_aan_pairs.{train,eval,test}.tsv`` (147,086 / 18,090 / 17,437 pairs; the
    format is described in :mod:`attnbench.data.lra`). The release tarball is the
    only public copy of the AAN text LRA used (the original AAN download is dead).
    **Bytes as LRA reads them**: the release stores each paper as a Python bytes
    literal ``b'...'``, and LRA's pipeline byte-encodes that literal as it stands,
    without decoding it (``b'`` prefix, backslash escapes such as ``\\n`` or
    ``\\xc3\\xa9`` and the closing quote are all tokens; ``max_length`` counts them).
    The documents here are exactly those bytes.

    ``bundled`` (offline stand-in, labelled as such): chapter matching across two
    English Bible translations from ``bible.parquet``. Each chapter (KJV
    versification, verses in order, joined by spaces) exists in the King James
    Version and in the World English Bible; the positive pair is the same chapter in
    both, the negative pairs a KJV chapter with the WEB text of a different chapter.
    Chapters are split (seeded) into test, validation and training chapters, and
    negatives are drawn within a split, so no chapter text is in two splits. Inside a
    split the chapters are put in a seeded random order and chapter i's negative is
    the WEB text of chapter i + 1 (cyclically): every chapter gives one positive and
    one negative pair (balanced), and every document appears once in each. The pairs
    are written as TSV files in the release format (bytes literals) and read back by
    the same reader, so the model sees them as LRA's models see AAN: as literals.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attnbench import baselines as bl
from attnbench.attention import Requirements, VariantSpec
from attnbench.data import lra
from attnbench.data.bundled import read_table
from attnbench.model import ModelConfig, PairClassifier
from attnbench.tasks.base import (
    Batch,
    DatasetInfo,
    SequenceClassificationTask,
    Task,
    analysis_mask,
    attention_statistics,
    register_task,
)

SOURCES = ("lra-release", "bundled")
SPLITS = ("train", "val", "test")
BIBLE_SPLIT_FILES = {
    split: f"bible_pairs.{file.split('.', 1)[1]}" for split, file in lra.AAN_SPLIT_FILES.items()
}

Pair = tuple[np.ndarray, np.ndarray, int]  # (tokens of document 1, of document 2, label)


@dataclass
class RetrievalData:
    """Data knobs (``tasks.retrieval.data``); defaults are LRA's (AAN, 4000 bytes each)."""

    source: str = "lra-release"  # "lra-release" (AAN TSVs) | "bundled" (KJV vs WEB chapters)
    path: str | None = None  # lra-release: the tsv_data directory; bundled: bible parquet
    max_length: int = 4000  # bytes kept per document (LRA: 4000)
    n_train: int | None = None  # pairs; None: all (bundled: the chapters left after val/test)
    n_val: int | None = None  # pairs; None: all (bundled: 2 per chapter for 10 % of chapters)
    n_test: int | None = None  # pairs; None: all (bundled: as n_val)
    seed: int = 0  # subsampling, chapter split and negatives (the data seed)

    def __post_init__(self) -> None:
        where = "tasks.retrieval.data"
        if self.source not in SOURCES:
            raise ValueError(f"{where}.source={self.source!r}; valid choices: {', '.join(SOURCES)}")
        if self.source == "lra-release" and not self.path:
            raise ValueError(
                f"{where}.path is required with source lra-release (the directory "
                "lra_release/tsv_data of the LRA release holding new_aan_pairs.*.tsv)"
            )
        if self.max_length <= 0:
            raise ValueError(f"{where}.max_length must be positive, got {self.max_length}")
        for name in ("n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{where}.{name} must be positive or null, got {value}")
            if self.source == "bundled" and value is not None and value % 2:
                raise ValueError(
                    f"{where}.{name}={value} must be even with source bundled "
                    "(one positive and one negative pair per chapter)"
                )


@register_task
class LRARetrieval(Task):
    """LRA Retrieval: binary document matching with a two-tower encoder (accuracy)."""

    averages = (("LRA", 5), ("LRA with Path-X", 6))

    name = "retrieval"
    family = "lra"
    metric = "accuracy"
    higher_is_better = True
    head = "pair_classification"
    n_classes = 2
    DataConfig = RetrievalData
    data_version = 2  # 2: documents are the release's bytes literals as written (as LRA)

    # -- description ------------------------------------------------------------------------
    def requirements(self) -> Requirements:
        # Both towers can be padded to max_len (self.setup.pad_to): fixed-length variants run too.
        return Requirements(padding_mask=True, variable_length=False, max_len=self.max_len())

    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        if c.source == "lra-release":
            return DatasetInfo(
                "aan-lra-release",
                "lra-release",
                False,
                f"ACL Anthology Network citation pairs (LRA release, {c.path}), "
                f"first {c.max_length} bytes of each paper's bytes literal as stored (as LRA)",
            )
        return DatasetInfo(
            "bible-kjv-web-chapters",
            "bundled",
            True,
            f"KJV vs WEB Bible chapter matching, first {c.max_length} bytes of each chapter's "
            "bytes literal (as LRA reads AAN), balanced (offline stand-in for LRA Retrieval / AAN)",
        )

    def max_len(self) -> int:
        return self.cfg.max_length + 1  # + [CLS] in each tower

    # -- data -------------------------------------------------------------------------------
    def prepare(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        c = self.cfg
        if c.source == "lra-release":
            assert c.path is not None  # checked by RetrievalData
            files = {s: Path(c.path) / f for s, f in lra.AAN_SPLIT_FILES.items()}
        else:
            table = read_table("bible", c.path)
            pairs = bible_chapter_pairs(table, c.n_train, c.n_val, c.n_test, c.seed)
            files = {s: out_dir / f for s, f in BIBLE_SPLIT_FILES.items()}
            for split, file in files.items():
                lra.write_pairs_tsv(file, pairs[split])
        rng = random.Random(c.seed)
        sizes = {"train": c.n_train, "val": c.n_val, "test": c.n_test}
        for split in SPLITS:
            # the release reader for both sources: each document is its text field's raw bytes
            # (the bytes literal, as LRA encodes it), cut to max_length bytes at once
            examples = [
                (e.text1[: c.max_length], e.text2[: c.max_length], e.label)
                for e in lra.iter_pairs_tsv(files[split])
            ]
            n = sizes[split]
            if c.source == "lra-release" and n is not None:
                if n > len(examples):
                    raise ValueError(
                        f"tasks.retrieval.data.n_{split}={n}, but {files[split]} has "
                        f"{len(examples)} pairs"
                    )
                examples = [examples[i] for i in sorted(rng.sample(range(len(examples)), n))]
            lra.save_packed(
                out_dir / f"{split}.npz",
                [label for *_, label in examples],
                a=[a for a, _, _ in examples],
                b=[b for _, b, _ in examples],
            )

    def load(self, data_dir: Path) -> None:
        for split in SPLITS:
            labels, columns = lra.load_packed(Path(data_dir) / f"{split}.npz")
            self.splits[split] = list(zip(columns["a"], columns["b"], labels, strict=True))

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
        """Two towers per batch; the examples of each batch as in every task (batch_groups).

        A pair's length is its longer document's (the wider of its two towers).
        """
        examples: Sequence[Pair] = self.splits[split]
        lengths = [max(len(a), len(b)) for a, b, _ in examples]
        groups = self.batch_indices(
            split, lengths, batch_size, shuffle=shuffle, epoch=epoch, seed=seed, by_length=by_length
        )
        for idx in groups:
            ids_a, padding_a = self._tower([examples[i][0] for i in idx])
            ids_b, padding_b = self._tower([examples[i][1] for i in idx])
            yield Batch(
                {"ids_a": ids_a, "ids_b": ids_b, "padding_a": padding_a, "padding_b": padding_b},
                torch.tensor([examples[i][2] for i in idx], dtype=torch.long),
                int(padding_a.sum() + padding_b.sum()),
                torch.tensor(idx, dtype=torch.long),
            )

    def _tower(self, docs: list[np.ndarray]) -> tuple[Tensor, Tensor]:
        """[CLS] + tokens, padded to ``setup.pad_to`` (fixed-length variants) or the longest."""
        width = self.setup.pad_to or 1 + max(len(d) for d in docs)
        ids = np.full((len(docs), width), lra.PAD_ID, dtype=np.int64)
        ids[:, 0] = lra.CLS_ID
        for j, doc in enumerate(docs):
            ids[j, 1 : 1 + len(doc)] = doc
        ids_t = torch.from_numpy(ids)
        return ids_t, ids_t != lra.PAD_ID

    # -- model ------------------------------------------------------------------------------
    def build_model(
        self, cfg: ModelConfig, variant: VariantSpec, options: dict[str, Any]
    ) -> nn.Module:
        return PairClassifier(lra.VOCAB_SIZE, self.n_classes, cfg, variant, options)

    # Same loss and evaluation as single-sequence classification (the inputs differ only
    # in their names, and the model takes them as keyword arguments).
    loss = SequenceClassificationTask.loss
    evaluate = SequenceClassificationTask.evaluate

    def baselines(self) -> dict[str, float]:
        """Test accuracy of ``majority_class`` and ``bag_of_tokens``.

        ``bag_of_tokens``: logistic regression on ``[a + b, |a − b|, a ⊙ b]`` of the two
        documents' ``log(1 + count)`` byte bags (:func:`attnbench.baselines.pair_bag_features`),
        fit on train, its L2 strength chosen on val.
        """
        if not self.splits.get("train") or not self.splits.get("test"):
            return {}
        labels = {split: [label for *_, label in pairs] for split, pairs in self.splits.items()}
        result = {"majority_class": bl.majority_class(labels["train"], labels["test"])}
        if self.splits.get("val"):

            def features(split: str) -> Tensor:
                pairs = self.splits[split]
                return bl.pair_bag_features(
                    [a for a, _, _ in pairs], [b for _, b, _ in pairs], lra.VOCAB_SIZE
                )

            predictions = bl.bag_of_tokens(features, labels, self.n_classes)
            result["bag_of_tokens"] = bl.accuracy(predictions, labels["test"])
        return result

    def analysis_batch(self, size: int = 64) -> Batch | None:
        return next(self.batches("val", size))

    @torch.no_grad()
    def attention_analysis(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """Sparsity and entropy of the first tower's attention (both towers share weights)."""
        batch = self.analysis_batch()
        assert batch is not None
        batch = batch.to(device)
        model.eval()
        out = model(**batch.inputs, need_weights=True)
        padding = batch.inputs["padding_a"]
        allowed = analysis_mask(padding, padding.shape[1], device)
        return {**attention_statistics(out.weights, allowed), "tower": "first document"}


def bible_chapter_pairs(
    table: Any, n_train: int | None, n_val: int | None, n_test: int | None, seed: int
) -> dict[str, list[lra.PairExample]]:
    """Balanced KJV↔WEB chapter pairs per split (see the module docstring).

    ``table``: verse rows with ``book``, ``book_index``, ``chapter``, ``verse``, ``kjv``,
    ``web`` (null where the WEB lacks the verse). Sizes count pairs (2 per chapter);
    None: 10 % of the chapters each for val and test, the rest for training.
    """
    verses: dict[tuple[int, int], list[tuple[int, str, str | None]]] = {}
    names: dict[tuple[int, int], str] = {}
    cols = lra.columns(
        table, ("book", "book_index", "chapter", "verse", "kjv", "web"), "the Bible table"
    )
    for book, index, chapter, verse, kjv, web in zip(*cols.values(), strict=True):
        key = (int(index), int(chapter))
        verses.setdefault(key, []).append((int(verse), kjv, web))
        names[key] = f"{book}.{chapter}"
    chapters: list[tuple[str, str, str]] = []  # (name, kjv text, web text)
    for key in sorted(verses):
        rows = sorted(verses[key])
        kjv = " ".join(k for _, k, _ in rows if k)
        web = " ".join(w for _, _, w in rows if w)
        if kjv and web:  # a chapter needs both translations
            chapters.append((names[key], kjv, web))
    rng = random.Random(seed)
    rng.shuffle(chapters)
    tenth = len(chapters) // 10
    counts = {
        "test": n_test // 2 if n_test is not None else tenth,
        "val": n_val // 2 if n_val is not None else tenth,
    }
    counts["train"] = (
        n_train // 2 if n_train is not None else len(chapters) - counts["test"] - counts["val"]
    )
    if sum(counts.values()) > len(chapters) or min(counts.values()) < 2:
        raise ValueError(
            f"tasks.retrieval.data asks for {2 * counts['train']}/{2 * counts['val']}/"
            f"{2 * counts['test']} pairs (2 per chapter, at least 2 chapters each); the Bible "
            f"has {len(chapters)} chapters in both translations"
        )
    out: dict[str, list[lra.PairExample]] = {}
    start = 0
    for split in ("test", "val", "train"):
        part = chapters[start : start + counts[split]]
        start += counts[split]
        pairs = []
        for i, (name, kjv, web) in enumerate(part):
            other_name, _, other_web = part[(i + 1) % len(part)]
            pairs.append(
                lra.PairExample(1, f"kjv:{name}", f"web:{name}", kjv.encode(), web.encode())
            )
            pairs.append(
                lra.PairExample(
                    0, f"kjv:{name}", f"web:{other_name}", kjv.encode(), other_web.encode()
                )
            )
        out[split] = pairs
    return out
