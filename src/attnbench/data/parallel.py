"""Parallel text for the translation task: hub rows, the IWSLT release or the bundled Bible.

The hub path reads the HuggingFace translation schema (``{"translation": {lang: text}}``,
splits train / validation / test); the bundled path turns the shipped Bible's aligned
verses (King James Version → Reina-Valera 1909) into rows of that schema, split by a
stable hash of the chapter, so both go through the same reader. The official IWSLT 2017
release (WIT³ files: ``train.tags.<pair>.<lang>`` and ``IWSLT17.TED.<set>.<pair>.<lang>.xml``)
becomes rows of that schema too (:func:`read_iwslt_release`), exactly as the hub's
loading script made them, so a local copy of the release and the hub's parquet export
give the same rows.

Training batches can be formed by token count (:func:`token_batches`): pairs sorted by
length, cut into batches of at most ``max_tokens`` padded source + target positions, the
batches drawn in a random order that is a pure function of (seed, epoch).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from attnbench.batching import epoch_generator
from attnbench.records import atomic_write_text

SPLITS = ("train", "val", "test")
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}  # hub split names
BIBLE_COLUMNS = {"en": "kjv", "es": "rv1909"}  # bundled bible: language → column
# Bible chapters whose hash bucket (mod 1000) is below 50 go to test, below 100 to val.
BIBLE_TEST_BUCKETS, BIBLE_VAL_BUCKETS = 50, 100


def normalize_whitespace(sentence: str) -> str:
    """One line: every run of whitespace (newlines included) becomes one space."""
    return " ".join(sentence.split())


def parallel_pairs(rows: Iterable[Any], src_lang: str, tgt_lang: str) -> list[tuple[str, str]]:
    """(source, target) texts from hub translation rows ``{lang: text}``; empty sides dropped."""
    pairs = []
    for row in rows:
        if not isinstance(row, dict) or src_lang not in row or tgt_lang not in row:
            found = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
            raise ValueError(
                f"a translation row has languages {found}; need src_lang={src_lang!r} and "
                f"tgt_lang={tgt_lang!r}"
            )
        src = normalize_whitespace(row[src_lang] or "")
        tgt = normalize_whitespace(row[tgt_lang] or "")
        if src and tgt:
            pairs.append((src, tgt))
    return pairs


def read_translation_splits(dataset: Any, src_lang: str, tgt_lang: str) -> dict[str, list]:
    """Our three splits from a ``datasets.DatasetDict`` in the hub's translation schema."""
    available = list(dataset.keys())
    out = {}
    for split, hf_split in HF_SPLITS.items():
        if hf_split not in dataset:
            raise ValueError(
                f"dataset has no {hf_split!r} split; its splits: {', '.join(available)}"
            )
        part = dataset[hf_split]
        if "translation" not in part.column_names:
            raise ValueError(
                f"dataset split {hf_split!r} has no 'translation' column; "
                f"its columns: {', '.join(part.column_names)}"
            )
        rows = part.select_columns(["translation"]).to_dict()["translation"]
        out[split] = parallel_pairs(rows, src_lang, tgt_lang)
    return out


def bible_chapter_split(book: str, chapter: int) -> str:
    """train / val / test of a bible chapter, from a stable hash of ``<book>.<chapter>``."""
    digest = hashlib.sha256(f"{book}.{chapter}".encode()).digest()
    bucket = int.from_bytes(digest[:4], "big") % 1000
    if bucket < BIBLE_TEST_BUCKETS:
        return "test"
    return "val" if bucket < BIBLE_VAL_BUCKETS else "train"


def bible_to_translation_rows(table: Any, out_dir: Path) -> dict[str, str]:
    """Write the bible's verse pairs as hub translation rows, one JSON Lines file per split.

    ``table``: the bible dataset (columns book, chapter, ref and one per language); rows
    missing either language are left out. Returns ``data_files`` for ``load_hf_dataset``.
    """
    needed = ["book", "chapter", "ref", *BIBLE_COLUMNS.values()]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise ValueError(
            f"bible table lacks column(s) {', '.join(missing)}; its columns: "
            f"{', '.join(table.column_names)}"
        )
    columns = table.select_columns(needed).to_dict()  # column lists: fast, unlike row access
    lines: dict[str, list[str]] = {split: [] for split in SPLITS}
    for i, (book, chapter, ref) in enumerate(
        zip(columns["book"], columns["chapter"], columns["ref"], strict=True)
    ):
        texts = {lang: columns[col][i] for lang, col in BIBLE_COLUMNS.items()}
        if any(not t or not t.strip() for t in texts.values()):
            continue
        row = {"translation": texts, "ref": ref}
        lines[bible_chapter_split(book, int(chapter))].append(json.dumps(row, ensure_ascii=False))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, rows in lines.items():
        path = out_dir / f"{HF_SPLITS[split]}.jsonl"
        atomic_write_text(path, "".join(r + "\n" for r in rows))
        files[HF_SPLITS[split]] = str(path)
    return files


def stable_sample(n: int, cap: int | None, salt: str) -> list[int]:
    """Indices of a deterministic sample of ``cap`` of ``n`` items, in increasing order."""
    if cap is None or cap >= n:
        return list(range(n))
    key = lambda i: hashlib.sha256(f"{salt}:{i}".encode()).digest()  # noqa: E731
    return sorted(sorted(range(n), key=key)[:cap])


# ---------------------------------------------------------------------------------------
# The official IWSLT 2017 release (WIT³), read as the hub's loading script read it
# ---------------------------------------------------------------------------------------
# The hub's iwslt2017 script: validation = dev2010, test = tst2010 … tst2015 concatenated
# in this order (bilingual pairs such as de-en), train = the train.tags files.
IWSLT_DEV = "dev2010"
IWSLT_TEST = tuple(f"tst{year}" for year in range(2010, 2016))
_TRAIN_TAGS = re.compile(r"^train\.tags\.([a-z]{2}-[a-z]{2})\.([a-z]{2})$")


def iwslt_release_pairs(directory: Path) -> list[str]:
    """Language pairs (``"de-en"``) whose ``train.tags`` files are in ``directory``."""
    if not directory.is_dir():
        return []
    pairs = set()
    for path in directory.iterdir():
        match = _TRAIN_TAGS.match(path.name)
        if match and match.group(2) in match.group(1).split("-"):
            pairs.add(match.group(1))
    return sorted(pairs)


def _iwslt_rows(src_file: Path, tgt_file: Path, src: str, tgt: str) -> list[dict[str, Any]]:
    """Rows of one pair of release files, line by line as the hub's script read them.

    Both files are read in step; a line is skipped when its source side is a tag
    (``<url>``, ``<talkid>``, ``<doc …>`` …) unless it is a ``<seg id="…">`` line, whose
    text between the tags is kept (entities are left as they are, as there).
    """
    rows = []
    with (
        open(src_file, encoding="utf-8") as src_lines,
        open(tgt_file, encoding="utf-8") as tgt_lines,
    ):
        # zip stops at the shorter file, as the hub's script did
        for src_row, tgt_row in zip(src_lines, tgt_lines, strict=False):
            s, t = src_row.strip(), tgt_row.strip()
            if s.startswith("<"):
                if not s.startswith("<seg"):
                    continue
                s = s.split(">")[1].split("<")[0].strip()
                t = t.split(">")[1].split("<")[0].strip() if ">" in t else t
            rows.append({"translation": {src: s, tgt: t}})
    return rows


def read_iwslt_release(directory: Path, pair: str | None = None) -> dict[str, list[dict]]:
    """Hub rows per hub split (train / validation / test) from an IWSLT 2017 release folder.

    ``directory`` holds one pair's files as unpacked from the release (e.g. ``de-en/``
    of ``2017-01-trnted/texts/de/en/de-en.tgz``): ``train.tags.de-en.de`` / ``.en``,
    ``IWSLT17.TED.dev2010.de-en.de.xml`` / ``.en.xml`` and the ``tst2010`` … ``tst2015``
    XML files. ``pair`` (``"de-en"``; None: the only pair there) orders the languages
    as the hub's configuration ``iwslt2017-<pair>`` does. Test concatenates the test
    sets present, oldest first (the hub's split has all six: 8,079 pairs for de-en).
    """
    directory = Path(directory)
    found = iwslt_release_pairs(directory)
    if pair is None:
        if len(found) != 1:
            raise ValueError(
                f"IWSLT release folder {directory} has train.tags files of "
                f"{len(found)} language pairs ({', '.join(found) or 'none'}); name one"
            )
        pair = found[0]
    if pair not in found:
        raise ValueError(
            f"IWSLT release folder {directory} has no train.tags.{pair}.* files; "
            f"its pairs: {', '.join(found) or 'none'}"
        )
    src, tgt = pair.split("-")

    def files(stem: str) -> tuple[Path, Path] | None:
        paths = (directory / stem.format(lang=src), directory / stem.format(lang=tgt))
        return paths if all(p.is_file() for p in paths) else None

    train = files(f"train.tags.{pair}.{{lang}}")
    dev = files(f"IWSLT17.TED.{IWSLT_DEV}.{pair}.{{lang}}.xml")
    tests = [f for name in IWSLT_TEST if (f := files(f"IWSLT17.TED.{name}.{pair}.{{lang}}.xml"))]
    if train is None or dev is None or not tests:
        missing = "train.tags" if train is None else IWSLT_DEV if dev is None else "tst2010-2015"
        raise ValueError(
            f"IWSLT release folder {directory} lacks the {missing} files of {pair} "
            f"(both languages, {src} and {tgt})"
        )
    return {
        "train": _iwslt_rows(*train, src, tgt),
        "validation": _iwslt_rows(*dev, src, tgt),
        "test": [row for test in tests for row in _iwslt_rows(*test, src, tgt)],
    }


# ---------------------------------------------------------------------------------------
# Token-based batches
# ---------------------------------------------------------------------------------------
def batch_cost(src_lengths: Sequence[int], tgt_lengths: Sequence[int], idx: Sequence[int]) -> int:
    """Source + target positions of a batch padded to its longest source and target."""
    if not idx:
        return 0
    return len(idx) * (max(src_lengths[i] for i in idx) + max(tgt_lengths[i] for i in idx))


def token_batches(
    src_lengths: Sequence[int],
    tgt_lengths: Sequence[int],
    max_tokens: int,
    *,
    epoch: int = 0,
    seed: int = 0,
) -> list[list[int]]:
    """Example indices of each training batch, batches of at most ``max_tokens`` positions.

    ``src_lengths[i]`` / ``tgt_lengths[i]``: the model positions example ``i`` takes on
    each side. A batch's cost is :func:`batch_cost`, its size × (longest source + longest
    target), i.e. the source and target positions including padding. The examples are
    shuffled by the (seed, epoch) generator, sorted stably by (source, target) length
    (fairseq's order: ties in random order), and cut greedily into batches that stay
    within ``max_tokens``; the batches are then shuffled by the same generator. Every
    example is in exactly one batch; an example whose own cost exceeds ``max_tokens``
    is an error. The result is a pure function of (lengths, max_tokens, seed, epoch).
    """
    if len(src_lengths) != len(tgt_lengths):
        raise ValueError(
            f"token_batches: {len(src_lengths)} source but {len(tgt_lengths)} target lengths"
        )
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    n = len(src_lengths)
    too_long = [i for i in range(n) if src_lengths[i] + tgt_lengths[i] > max_tokens]
    if too_long:
        i = too_long[0]
        raise ValueError(
            f"max_tokens={max_tokens} is below the {src_lengths[i] + tgt_lengths[i]} "
            f"positions of example {i} alone; raise it"
        )
    gen = epoch_generator(seed, epoch)
    order = torch.randperm(n, generator=gen).tolist()
    order.sort(key=lambda i: (src_lengths[i], tgt_lengths[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    longest_src = longest_tgt = 0
    for i in order:
        s = max(longest_src, src_lengths[i])
        t = max(longest_tgt, tgt_lengths[i])
        if current and (len(current) + 1) * (s + t) > max_tokens:
            batches.append(current)
            current, s, t = [], src_lengths[i], tgt_lengths[i]
        current.append(i)
        longest_src, longest_tgt = s, t
    if current:
        batches.append(current)
    return [batches[b] for b in torch.randperm(len(batches), generator=gen).tolist()]
