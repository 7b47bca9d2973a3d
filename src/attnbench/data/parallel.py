"""Parallel text for the translation task: hub rows or the bundled Bible, as sentence pairs.

The hub path reads the HuggingFace translation schema (``{"translation": {lang: text}}``,
splits train / validation / test); the bundled path turns the shipped Bible's aligned
verses (King James Version → Reina-Valera 1909) into rows of that schema, split by a
stable hash of the chapter, so both go through the same reader.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
