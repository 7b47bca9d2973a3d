"""Offline stand-ins for GLUE tasks, on corpora the repository ships.

They are never named after GLUE (``stand_in=True`` in their dataset info): ``wordnet-lex``
(single sentence: a WordNet definition → its lexicographer category, 45 classes) and
``bible-paraphrase`` (MRPC-like: a King James verse paired with the World English Bible's
rendering of the same verse, or of a verse 1–3 away in the same chapter); the word-order
tasks of :mod:`attnbench.tasks.word_order` build on :class:`StandInTask` too. A stand-in's
rows are written in the GLUE row schema (``sentence``/``label``,
``sentence1``/``sentence2``/``label``) as parquet files in the data directory and read
back through :func:`attnbench.data.hf.load_hf_dataset`, so the conversion, tokenization,
model and evaluation code is that of the real benchmark (:mod:`attnbench.tasks.glue`).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from attnbench.data.bundled import read_table
from attnbench.data.hf import load_hf_dataset
from attnbench.tasks.base import DatasetInfo, register_task
from attnbench.tasks.glue import (
    GlueTask,
    check_cap,
    check_pair_encoding,
    check_split_fractions,
    check_text_knobs,
)

SOURCE_DIR = "source"  # a stand-in's rows in the GLUE schema, read back through HF datasets

#: WordNet 3.0 lexicographer files in the order of WordNet's ``lexnames`` (ids 0–44).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal",
    "noun.artifact", "noun.attribute", "noun.body", "noun.cognition", "noun.communication",
    "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive",
    "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip


@dataclass
class WordNetLexData:
    """Data knobs of ``wordnet-lex``; defaults use all of WordNet (117,659 definitions)."""

    path: str | None = None  # parquet with WordNet's columns (null: the bundled wordnet.parquet)
    seed: int = 0  # seeds the split
    n_train: int | None = None  # null: every definition not in val or test
    n_val: int = 5000
    n_test: int = 5000
    vocab_size: int = 8000
    max_length: int = 128  # model input tokens including [CLS]
    min_frequency: int = 2

    def __post_init__(self) -> None:
        where = "tasks.wordnet-lex.data"
        check_cap(where, "n_train", self.n_train)
        for name in ("n_val", "n_test"):
            check_cap(where, name, getattr(self, name))
        check_text_knobs(where, self.vocab_size, self.max_length, self.min_frequency)


@dataclass
class BibleParaphraseData:
    """Data knobs of ``bible-paraphrase``; defaults use every aligned verse (≈31K)."""

    path: str | None = None  # parquet with the Bible's columns (null: the bundled bible.parquet)
    seed: int = 0  # seeds which verses become positives / negatives and the subsampling
    val_fraction: float = 0.1  # share of chapters (by hash of book.chapter) in validation
    test_fraction: float = 0.1  # share of chapters in test
    max_distance: int = 3  # negatives: a verse 1..max_distance away in the same chapter
    n_train: int | None = None  # caps (seeded subsample, balanced; null: all)
    n_val: int | None = None
    n_test: int | None = None
    vocab_size: int = 8000
    max_length: int = 128  # model input tokens including [CLS] and [SEP]
    min_frequency: int = 2
    pair_encoding: str = "joint"  # pairs: "joint" ([CLS] s1 [SEP] s2) | "siamese" (two towers)

    def __post_init__(self) -> None:
        where = "tasks.bible-paraphrase.data"
        check_split_fractions(where, self.val_fraction, self.test_fraction)
        check_cap(where, "max_distance", self.max_distance)
        for name in ("n_train", "n_val", "n_test"):
            check_cap(where, name, getattr(self, name), minimum=2)
        check_text_knobs(where, self.vocab_size, self.max_length, self.min_frequency)
        check_pair_encoding(where, self.pair_encoding)


# ---------------------------------------------------------------------------------------
# Offline stand-ins: generators (pure functions of the source table and the knobs)
# ---------------------------------------------------------------------------------------
def wordnet_lex_rows(
    table: dict[str, Sequence[Any]],
    *,
    seed: int,
    n_train: int | None,
    n_val: int,
    n_test: int,
) -> dict[str, list[dict[str, Any]]]:
    """WordNet synsets → {train, validation, test} rows ``sentence``/``label``/``idx``.

    ``sentence`` is the synset's definition, ``label`` the index of its lexicographer
    file in :data:`LEXNAMES`. A definition shared by several synsets is dropped
    everywhere (it could carry two labels, and would leak between splits). The split
    is a seeded permutation of the synsets sorted by id, so it does not depend on the
    row order of the file.
    """
    for column in ("synset", "lexname", "definition"):
        if column not in table:
            raise ValueError(f"wordnet table lacks column {column!r}; has: {', '.join(table)}")
    unknown = sorted(set(table["lexname"]) - set(LEXNAMES))
    if unknown:
        raise ValueError(f"wordnet table: unknown lexname(s) {', '.join(map(str, unknown[:5]))}")
    definitions = [(d or "").strip() for d in table["definition"]]
    seen = Counter(definitions)
    rows = sorted(
        (synset, d, LEXNAMES.index(lexname))
        for synset, lexname, d in zip(table["synset"], table["lexname"], definitions, strict=True)
        if d and seen[d] == 1
    )
    if n_val + n_test >= len(rows):
        raise ValueError(
            f"wordnet-lex: {len(rows)} usable definitions, too few for n_val={n_val} + "
            f"n_test={n_test} and a training set"
        )
    order = np.random.default_rng([seed, 0]).permutation(len(rows)).tolist()
    chosen = {
        "test": order[:n_test],
        "validation": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :][:n_train],
    }
    return {
        split: [
            {"sentence": rows[i][1], "label": rows[i][2], "idx": j, "synset": rows[i][0]}
            for j, i in enumerate(sorted(picked))
        ]
        for split, picked in chosen.items()
    }


def chapter_split(book: str, chapter: int, val_fraction: float, test_fraction: float) -> str:
    """ "train" / "validation" / "test" for a chapter, from a hash of ``book.chapter``.

    A fixed hash (not a seed) so that a chapter, and with it every verse's
    neighbours, is in the same split for every seed and every size cap.
    """
    digest = hashlib.sha256(f"{book}.{chapter}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < test_fraction:
        return "test"
    return "validation" if u < test_fraction + val_fraction else "train"


def bible_paraphrase_rows(
    table: dict[str, Sequence[Any]],
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    max_distance: int,
    caps: dict[str, int | None],
) -> dict[str, list[dict[str, Any]]]:
    """KJV/WEB verse pairs → {train, validation, test} rows in MRPC's schema.

    Each usable verse (both translations present, and a different verse at most
    ``max_distance`` away in its chapter) is the anchor of exactly one example:
    ``sentence1`` is its KJV text, ``sentence2`` the WEB text of the same verse
    (label 1, paraphrase) or of a neighbour (label 0, a hard negative: same context,
    style and vocabulary). Anchors are shuffled with the seed, cut to the split's cap,
    and labelled alternately, so the classes are balanced (one more positive when the
    count is odd). ``ref1``/``ref2`` name the two verses.
    """
    for column in ("ref", "book", "chapter", "verse", "kjv", "web"):
        if column not in table:
            raise ValueError(f"bible table lacks column {column!r}; has: {', '.join(table)}")
    chapters: dict[tuple[str, int], dict[int, tuple[str, str, str]]] = defaultdict(dict)
    for ref, book, chapter, verse, kjv, web in zip(
        table["ref"], table["book"], table["chapter"], table["verse"],
        table["kjv"], table["web"], strict=True,
    ):  # fmt: skip
        if kjv and web and kjv.strip() and web.strip():
            chapters[(book, int(chapter))][int(verse)] = (ref, kjv.strip(), web.strip())
    anchors: dict[str, list[tuple[tuple[str, str, str], list[tuple[str, str, str]]]]] = {
        "train": [],
        "validation": [],
        "test": [],
    }
    for (book, chapter), verses in chapters.items():
        split = chapter_split(book, chapter, val_fraction, test_fraction)
        for v in sorted(verses):
            here = verses[v]
            neighbours = [
                verses[v + d]
                for d in (*range(-max_distance, 0), *range(1, max_distance + 1))
                if v + d in verses
                and verses[v + d][2] != here[2]  # a different text, not a repeated refrain
                and verses[v + d][1] != here[1]
            ]
            if neighbours:
                anchors[split].append((here, neighbours))
    out: dict[str, list[dict[str, Any]]] = {}
    for stream, split in enumerate(("train", "validation", "test")):
        rng = np.random.default_rng([seed, stream])
        pool = anchors[split]
        order = rng.permutation(len(pool)).tolist()[: caps.get(split)]
        rows = []
        for j, k in enumerate(order):
            (ref, kjv, web), neighbours = pool[k]
            label = 1 if j % 2 == 0 else 0
            partner = (ref, kjv, web) if label else neighbours[int(rng.integers(len(neighbours)))]
            rows.append(
                {
                    "sentence1": kjv,
                    "sentence2": partner[2],
                    "label": label,
                    "idx": j,
                    "ref1": ref,
                    "ref2": partner[0],
                }
            )
        out[split] = rows
    return out


def write_glue_files(out_dir: Path, rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Write the stand-in's rows as GLUE-schema parquet files and read them back via HF."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = out_dir / SOURCE_DIR
    source.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, split_rows in rows.items():
        if not split_rows:
            raise ValueError(f"the {split} split of the stand-in is empty; raise its size or share")
        files[split] = str(source / f"{split}.parquet")
        pq.write_table(pa.Table.from_pylist(split_rows), files[split])
    return load_hf_dataset("parquet", data_files=files)


class StandInTask(GlueTask):
    """A stand-in: writes GLUE-schema files, then the shared GLUE code takes over."""

    eval_splits: ClassVar[dict[str, str]] = {"test": "test"}

    def stand_in_rows(self) -> dict[str, list[dict[str, Any]]]:
        raise NotImplementedError

    def read_sources(self, out_dir: Path) -> dict[str, Any]:
        data = write_glue_files(Path(out_dir), self.stand_in_rows())
        return {"train": data["train"], "val": data["validation"], "test": data["test"]}


@register_task
class WordNetLex(StandInTask):
    """Offline stand-in for single-sentence GLUE: WordNet definition → category (accuracy).

    Miller 1995, "WordNet: A Lexical Database for English" (WordNet 3.0). The input is
    a synset's definition; the label is its lexicographer file (45 classes:
    ``noun.animal``, ``verb.motion``, …), which needs the part of speech and the
    semantic field of a sentence. Macro-F1 is reported too, since the classes are
    unbalanced.
    """

    name = "wordnet-lex"
    metric = "accuracy"
    n_classes = len(LEXNAMES)
    DataConfig = WordNetLexData

    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        return DatasetInfo(
            "wordnet-lex",
            "bundled",
            True,
            "offline stand-in for single-sentence GLUE tasks: WordNet 3.0 definition → "
            f"lexicographer category (45 classes), {c.path or 'bundled wordnet.parquet'}; "
            f"seeded split (seed {c.seed}): {c.n_train or 'rest'}/{c.n_val}/{c.n_test} "
            f"train/val/test; trained from scratch with the shared backbone, BPE vocab "
            f"{c.vocab_size} learnt on train, max {c.max_length} tokens",
        )

    def stand_in_rows(self) -> dict[str, list[dict[str, Any]]]:
        c = self.cfg
        table = read_table("wordnet", c.path, ("synset", "lexname", "definition"))
        return wordnet_lex_rows(
            table, seed=c.seed, n_train=c.n_train, n_val=c.n_val, n_test=c.n_test
        )


@register_task
class BibleParaphrase(StandInTask):
    """Offline stand-in for MRPC: the same Bible verse in two translations? (accuracy, F1).

    King James Version (1611/1769) against the World English Bible (both public
    domain), aligned by book, chapter and verse. Positives are the two renderings of
    one verse; negatives pair a verse with the WEB text of a verse at most three
    away in the same chapter. Classes are balanced; chapters are split by hash so a
    verse's neighbours never cross splits. F1 and accuracy are reported as for MRPC,
    but the primary metric is accuracy: with balanced classes every constant predictor
    scores 50 %, whereas "all positive" would score F1 = 67 % and so a mean of F1 and
    accuracy of 58 % without learning anything.
    """

    name = "bible-paraphrase"
    metric = "accuracy"
    fields = ("sentence1", "sentence2")
    DataConfig = BibleParaphraseData

    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        caps = "/".join(str(n or "all") for n in (c.n_train, c.n_val, c.n_test))
        return DatasetInfo(
            "bible-paraphrase",
            "bundled",
            True,
            "offline stand-in for MRPC: KJV verse vs World English Bible verse, same "
            f"reference (positive) or 1–{c.max_distance} verses away in the chapter "
            f"(negative), balanced, {c.path or 'bundled bible.parquet'}; chapters split by "
            f"hash {1 - c.val_fraction - c.test_fraction:g}/{c.val_fraction:g}/"
            f"{c.test_fraction:g}, at most {caps} examples (seed {c.seed}); trained from "
            f"scratch with the shared backbone{self._encoding()}, BPE vocab {c.vocab_size} "
            f"learnt on train, max {c.max_length} tokens",
        )

    def stand_in_rows(self) -> dict[str, list[dict[str, Any]]]:
        c = self.cfg
        table = read_table("bible", c.path, ("ref", "book", "chapter", "verse", "kjv", "web"))
        return bible_paraphrase_rows(
            table,
            seed=c.seed,
            val_fraction=c.val_fraction,
            test_fraction=c.test_fraction,
            max_distance=c.max_distance,
            caps={"train": c.n_train, "validation": c.n_val, "test": c.n_test},
        )
