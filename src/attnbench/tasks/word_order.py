"""``bible-bshift`` / ``bible-shuffle``: order-only acceptability stand-ins on KJV verses.

Conneau, Kruszewski, Lample, Barrault & Baroni 2018, "What you can cram into a single
$&!#* vector: Probing sentence embeddings for linguistic properties", task BShift: a
sentence is either in its original word order (label 0) or has two adjacent words
inverted (label 1). The multiset of words is the same in both classes, so word order
is the only signal: a bag-of-tokens model scores chance (50 %) by construction. It plays
the role of CoLA (single-sentence acceptability) among the offline GLUE stand-ins,
which a bag of tokens otherwise solves well (``wordnet-lex``, ``bible-paraphrase``).

The knob ``perturbation`` picks how a label-1 verse is changed (:data:`PERTURBATIONS`):
``"bigram_shift"`` (BShift: one adjacent pair inverted; the default of
``bible-bshift``), ``"shuffle"`` (the movable words randomly permuted among their own
slots; the default of ``bible-shuffle``) or ``"swaps"`` (``n_swaps`` successive random
adjacent inversions). ``bible-shuffle`` is in BShift's lineage but plainly an easier,
order-only variant: a scrambled verse breaks many local word pairs at once, where BShift
breaks one, so a small model trained briefly can learn it while BShift stays at chance.

The sentences are King James verses of the bundled Bible (:mod:`attnbench.data.bundled`)
of ``min_words``–``max_words`` whitespace-separated words. Chapters are split between
train, validation and test by a fixed hash of ``book.chapter``
(:func:`attnbench.tasks.glue_standins.chapter_split`), and a verse text that occurs more than
once in the Bible (refrains such as "And the LORD spake unto Moses, saying,") is kept
only at its first occurrence, so no test sentence is seen in training.

Which words may move (:func:`swappable_positions`, :func:`movable_positions`): purely
alphabetic ones (``str.isalpha``: punctuation stays attached to its word, and a word
carrying punctuation is never moved) other than the verse's first word; an inverted
adjacent pair must differ (case-insensitively), and a perturbed verse must differ from
its original other than in letter case. Those rules keep the class signal in the
order alone: the byte-level BPE (:class:`attnbench.text.SubwordTokenizer`) marks a
word's leading space, so moving the first word would change the bag of tokens, and a
moved comma or full stop (or a capitalised first word in second place) would be a
shortcut that needs no syntax. A perturbed sentence must also not be the text of any
verse. Every perturbation draws from the same verses: those with at least one adjacent
pair that may be inverted into a text that is no verse. The rows use the GLUE schema
(``sentence``/``label``) and go through the shared GLUE code of
:mod:`attnbench.tasks.glue` (tokenizer, encoding, batching, model, the majority-class
and bag-of-tokens baselines); the metric is accuracy, as in SentEval.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from attnbench.data.bundled import read_table
from attnbench.metrics import compute_metrics
from attnbench.tasks.base import DatasetInfo, register_task
from attnbench.tasks.glue import check_cap, check_split_fractions, check_text_knobs
from attnbench.tasks.glue_standins import StandInTask, chapter_split

__all__ = [
    "PERTURBATIONS",
    "BibleBShift",
    "BibleBShiftData",
    "BibleShuffle",
    "BibleShuffleData",
    "bshift_rows",
    "movable_positions",
    "perturb",
    "swappable_positions",
]

SPLITS = ("train", "validation", "test")
#: how a label-1 verse is changed (the knob ``perturbation``)
PERTURBATIONS = ("bigram_shift", "shuffle", "swaps")
#: random draws of a ``shuffle``/``swaps`` order before falling back to one inversion
MAX_DRAWS = 100


@dataclass
class BibleBShiftData:
    """Data knobs of ``bible-bshift``; defaults use every usable verse (≈16K)."""

    task: ClassVar[str] = "bible-bshift"  # names the task in error messages

    path: str | None = None  # parquet with the Bible's columns (null: the bundled bible.parquet)
    seed: int = 0  # seeds the subsampling, which verses are perturbed, and how
    val_fraction: float = 0.1  # share of chapters (by hash of book.chapter) in validation
    test_fraction: float = 0.1  # share of chapters in test
    min_words: int = 6  # verses of min_words..max_words whitespace-separated words
    max_words: int = 24
    perturbation: str = "bigram_shift"  # bigram_shift | shuffle | swaps (see PERTURBATIONS)
    n_swaps: int = 3  # successive adjacent inversions of a "swaps" verse
    punctuated: bool = False  # also move words carrying punctuation ("heaven," "earth.")
    pairs: bool = False  # minimal pairs: each chosen verse both unchanged and perturbed
    n_train: int | None = None  # caps (seeded subsample, balanced; null: all)
    n_val: int | None = None
    n_test: int | None = None
    vocab_size: int = 8000
    max_length: int = 64  # model input tokens including [CLS]
    min_frequency: int = 2

    def __post_init__(self) -> None:
        where = f"tasks.{self.task}.data"
        check_split_fractions(where, self.val_fraction, self.test_fraction)
        check_cap(where, "min_words", self.min_words, minimum=3)
        if self.max_words < self.min_words:
            raise ValueError(
                f"{where}.max_words ({self.max_words}) must be at least "
                f"min_words ({self.min_words})"
            )
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(
                f"{where}.perturbation must be one of {', '.join(PERTURBATIONS)}, "
                f"got {self.perturbation!r}"
            )
        check_cap(where, "n_swaps", self.n_swaps, minimum=1)
        for name in ("n_train", "n_val", "n_test"):
            check_cap(where, name, getattr(self, name), minimum=2)
        check_text_knobs(where, self.vocab_size, self.max_length, self.min_frequency)


@dataclass
class BibleShuffleData(BibleBShiftData):
    """Data knobs of ``bible-shuffle``: those of ``bible-bshift``, shuffled by default."""

    task: ClassVar[str] = "bible-shuffle"

    perturbation: str = "shuffle"


def _movable(word: str, punctuated: bool) -> bool:
    return word.isalpha() or (punctuated and any(ch.isalpha() for ch in word))


def movable_positions(words: Sequence[str], *, punctuated: bool = False) -> list[int]:
    """Positions ``i ≥ 1`` of the words a perturbation may move.

    Purely alphabetic words (``punctuated``: with at least one letter, attached
    punctuation moving with its word); the verse's first word stays first.
    """
    return [i for i in range(1, len(words)) if _movable(words[i], punctuated)]


def swappable_positions(words: Sequence[str], *, punctuated: bool = False) -> list[int]:
    """Positions ``i`` at which ``words[i]`` and ``words[i + 1]`` may be inverted.

    Both words movable (:func:`movable_positions`) and different (case-insensitively):
    see the module docstring for why.
    """
    return [
        i
        for i in range(1, len(words) - 1)
        if _movable(words[i], punctuated)
        and _movable(words[i + 1], punctuated)
        and words[i].lower() != words[i + 1].lower()
    ]


def perturb(
    words: Sequence[str],
    positions: Sequence[int],
    rng: np.random.Generator,
    *,
    perturbation: str,
    n_swaps: int = 3,
    punctuated: bool = False,
    texts: frozenset[str] | set[str] = frozenset(),
) -> tuple[list[str], int]:
    """A perturbed copy of ``words`` and the inverted pair's position (-1 unless one pair).

    ``positions`` are the verse's admissible single inversions (non-empty): swappable
    pairs whose inversion is not in ``texts``. ``bigram_shift`` inverts one of them,
    drawn uniformly. ``shuffle`` permutes the movable words among their own slots and
    ``swaps`` applies ``n_swaps`` successive inversions, each at a swappable pair of the
    current order drawn uniformly; both redraw (up to :data:`MAX_DRAWS` times) until the
    result differs from ``words`` other than in letter case and is not in ``texts``,
    then fall back to one admissible inversion, so every result is a valid label 1.
    """
    if not positions:
        raise ValueError("perturb needs at least one admissible inversion")
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {perturbation!r}; one of {PERTURBATIONS}")
    if perturbation != "bigram_shift":
        original = [w.lower() for w in words]
        slots = movable_positions(words, punctuated=punctuated)
        for _ in range(MAX_DRAWS):
            out = list(words)
            if perturbation == "shuffle":
                for slot, k in zip(slots, rng.permutation(len(slots)).tolist(), strict=True):
                    out[slot] = words[slots[k]]
            else:
                for _ in range(n_swaps):
                    pairs = swappable_positions(out, punctuated=punctuated)
                    i = pairs[int(rng.integers(len(pairs)))]
                    out[i], out[i + 1] = out[i + 1], out[i]
            if [w.lower() for w in out] != original and " ".join(out) not in texts:
                return out, -1
    i = positions[int(rng.integers(len(positions)))]
    return _swap(words, i).split(), i


def bshift_rows(
    table: dict[str, Sequence[Any]],
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    min_words: int,
    max_words: int,
    caps: dict[str, int | None],
    pairs: bool = False,
    punctuated: bool = False,
    perturbation: str = "bigram_shift",
    n_swaps: int = 3,
) -> dict[str, list[dict[str, Any]]]:
    """KJV verses → {train, validation, test} rows of the GLUE schema and provenance.

    Each row has ``sentence``, ``label``, ``idx``, ``ref`` (the verse), ``swap`` and
    ``moved`` (below).

    A verse is usable when it has ``min_words``–``max_words`` words, a text no earlier
    verse has, and a swappable pair whose inversion is not the text of any verse. Each
    split's usable verses (in Bible order, chapters assigned by
    :func:`attnbench.tasks.glue.chapter_split`) are shuffled with ``(seed, split)``, cut
    to the split's cap, and labelled alternately 1, 0, 1, …, so the classes are balanced
    (one more perturbed verse when the count is odd). A perturbed verse is changed by
    :func:`perturb`; ``swap`` is the inverted pair's first position when exactly one
    pair was inverted as such (``bigram_shift``, or a fallback), else -1, and ``moved``
    counts the word positions that differ from the original (0 for an unchanged verse).
    """
    for column in ("ref", "book", "chapter", "verse", "kjv"):
        if column not in table:
            raise ValueError(f"bible table lacks column {column!r}; has: {', '.join(table)}")
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {perturbation!r}; one of {PERTURBATIONS}")
    rank: dict[str, int] = {}  # a book's first row: the Bible's book order, whatever the rows'
    for row, book in enumerate(table["book"]):
        rank.setdefault(str(book), row)
    verses = sorted(
        (
            (str(book), int(chapter), int(verse), str(ref), " ".join(str(kjv).split()))
            for ref, book, chapter, verse, kjv in zip(
                *(table[c] for c in ("ref", "book", "chapter", "verse", "kjv")), strict=True
            )
            if kjv and str(kjv).strip()
        ),
        key=lambda v: (rank[v[0]], v[1], v[2]),
    )
    texts = {v[4] for v in verses}
    seen: set[str] = set()
    pools: dict[str, list[tuple[str, list[str], list[int]]]] = defaultdict(list)
    for book, chapter, _, ref, text in verses:
        if text in seen:
            continue
        seen.add(text)
        words = text.split()
        if not min_words <= len(words) <= max_words:
            continue
        positions = [
            i
            for i in swappable_positions(words, punctuated=punctuated)
            if _swap(words, i) not in texts
        ]
        if positions:
            split = chapter_split(book, chapter, val_fraction, test_fraction)
            pools[split].append((ref, words, positions))
    out: dict[str, list[dict[str, Any]]] = {}
    for stream, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, stream])
        pool = pools[split]
        order = rng.permutation(len(pool)).tolist()
        if pairs:  # each verse twice: perturbed, then unchanged
            order = [k for k in order for _ in range(2)]
        order = order[: caps.get(split)]
        rows = []
        for j, k in enumerate(order):
            ref, words, positions = pool[k]
            new, swap = list(words), -1
            if j % 2 == 0:
                new, swap = perturb(
                    words,
                    positions,
                    rng,
                    perturbation=perturbation,
                    n_swaps=n_swaps,
                    punctuated=punctuated,
                    texts=texts,
                )
            rows.append(
                {
                    "sentence": " ".join(new),
                    "label": int(j % 2 == 0),
                    "idx": j,
                    "ref": ref,
                    "swap": swap,
                    "moved": sum(a != b for a, b in zip(new, words, strict=True)),
                }
            )
        out[split] = rows
    return out


def _swap(words: Sequence[str], i: int) -> str:
    """The sentence with ``words[i]`` and ``words[i + 1]`` inverted."""
    inverted = list(words)
    inverted[i], inverted[i + 1] = inverted[i + 1], inverted[i]
    return " ".join(inverted)


#: what a label-1 verse is, per perturbation, for :meth:`BibleBShift.dataset_info`
_DESCRIBE = {
    "bigram_shift": "half have two adjacent (alphabetic, non-initial) words inverted",
    "shuffle": "half have their alphabetic non-initial words randomly permuted (full "
    "shuffling: an easier, order-only variant of BShift)",
    "swaps": "half have {n} successive random inversions of adjacent (alphabetic, "
    "non-initial) words",
}


@register_task
class BibleBShift(StandInTask):
    """Offline stand-in for CoLA: is a Bible verse in its original word order (accuracy)?

    SentEval's bigram-shift probing task (Conneau et al. 2018, BShift) on King James
    verses: half of them have two adjacent words inverted (label 1). Both classes have
    the same bag of words, so a bag-of-tokens model scores ≈ 50 %: what a model scores
    above that it learnt from word order. The knob ``perturbation`` selects a
    shuffled or multi-swap label 1 instead (see the module docstring).
    """

    name = "bible-bshift"
    metric = "accuracy"
    DataConfig = BibleBShiftData
    data_version = 2  # rows gained the column "moved"

    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        caps = "/".join(str(n or "all") for n in (c.n_train, c.n_val, c.n_test))
        return DatasetInfo(
            self.name,
            "bundled",
            True,
            f"offline stand-in for CoLA: word-order acceptability ({c.perturbation}; "
            "lineage: SentEval bigram shift, BShift, Conneau et al. 2018) on KJV verses of "
            f"{c.min_words}–{c.max_words} words, {c.path or 'bundled bible.parquet'}: "
            f"{_DESCRIBE[c.perturbation].format(n=c.n_swaps)}, same bag of words in both "
            f"classes; chapters split by hash {1 - c.val_fraction - c.test_fraction:g}"
            f"/{c.val_fraction:g}/{c.test_fraction:g}, repeated verses kept once, at most "
            f"{caps} examples (seed {c.seed}); trained from scratch with the shared "
            f"backbone, BPE vocab {c.vocab_size} learnt on train, max {c.max_length} tokens",
        )

    def scores(self, predictions: Sequence[float], targets: Sequence[float]) -> dict[str, float]:
        """Accuracy, as SentEval reports for its probing tasks."""
        return compute_metrics("accuracy", predictions, targets)

    def stand_in_rows(self) -> dict[str, list[dict[str, Any]]]:
        c = self.cfg
        table = read_table("bible", c.path, ("ref", "book", "chapter", "verse", "kjv"))
        return bshift_rows(
            table,
            seed=c.seed,
            val_fraction=c.val_fraction,
            test_fraction=c.test_fraction,
            min_words=c.min_words,
            max_words=c.max_words,
            caps={"train": c.n_train, "validation": c.n_val, "test": c.n_test},
            pairs=c.pairs,
            punctuated=c.punctuated,
            perturbation=c.perturbation,
            n_swaps=c.n_swaps,
        )


@register_task
class BibleShuffle(BibleBShift):
    """Offline stand-in for CoLA: is a Bible verse in its original word order (accuracy)?

    ``bible-bshift`` with ``perturbation: shuffle`` by default: half of the verses have
    their movable words randomly permuted (label 1). In BShift's lineage (Conneau et al.
    2018) but plainly easier, since a scrambled verse breaks many word pairs where
    BShift breaks one; the bag of tokens is still the same in both classes, so what a
    model scores above chance it learnt from word order.
    """

    name = "bible-shuffle"
    DataConfig = BibleShuffleData
