"""Long Range Arena data: byte and pixel tokens, grayscale, release-file readers, packed files.

Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient Transformers"
(``google-research/long-range-arena``). Three LRA tasks feed raw bytes or raw pixels to
the model, one token per byte or pixel, so that sequences are long and nothing is
learnt by a tokenizer:

Byte tokens (Text, Retrieval)
    The UTF-8 bytes of a document, each byte ``b`` becoming token ``b + OFFSET``; ids 0
    and 1 are PAD and CLS, so the vocabulary has 258 ids. LRA uses ``tfds``'s
    ``deprecated.text.ByteTextEncoder``, which maps byte ``b`` to ``b + 1`` (id 0 is its
    padding; LRA's CLS is a learnt vector, not an id): the same bytes in the same order,
    every id shifted by one more here. Bytes, not characters: a multibyte UTF-8
    character is several tokens, and truncation to ``max_length`` counts bytes (LRA
    truncates the same way). Decoding inverts it exactly.

Pixel tokens (Image)
    An 8-bit grayscale image read row by row, pixel value ``v`` becoming ``v + OFFSET``
    (the same 258-id vocabulary; LRA feeds the 256 intensities as tokens, not as
    normalised floats).

Grayscale (:func:`rgb_to_gray`)
    LRA converts CIFAR-10 with ``tf.image.rgb_to_grayscale``: channels scaled to [0, 1],
    weighted by (0.2989, 0.5870, 0.1140), scaled back by 255.5 and truncated to uint8::

        gray = ⌊(0.2989·R + 0.5870·G + 0.1140·B) · 255.5 / 255⌋

    This module evaluates that formula exactly in integer arithmetic. TensorFlow
    evaluates it in float32, which (in a numpy float32 emulation of its steps) gives
    237 of the 16,777,216 RGB colours (0.0014 %) one grey level more; the exact form
    does not depend on the platform.

Downsampling (:func:`mean_pool`)
    An optional k×k mean pooling for reduced-length runs (28×28 → 14×14 with k = 2),
    rounded half up in integers; LRA itself never downsamples.

Retrieval release files (:func:`read_pairs_tsv`)
    ``lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv``: no header, one pair per
    line, five tab-separated fields ``label id1 id2 text1 text2`` (LRA's
    ``matching/input_pipeline.py`` reads them with ``make_csv_dataset``, no quoting,
    ``field_delim='\\t'``, a float label). Each text field is a Python bytes literal
    ``b'...'`` as ``repr`` writes it (tabs, newlines and non-ASCII bytes escaped). LRA
    does **not** decode it: its pipeline hands the field's raw bytes, ``b'`` prefix,
    backslash escapes and closing quote included, to the byte encoder
    (``encoder.encode(s.numpy()[:10000])``, then ``[:max_length]``), so ``é`` reaches
    the model as the eight characters ``\\xc3\\xa9``. The reader here does the same: a
    pair's ``text1``/``text2`` are the fields' bytes exactly as they stand in the file
    (:func:`literal_document` gives the document a field denotes, for inspection
    only). Labels ``1``/``0`` (also ``1.0``/``0.0``). :func:`write_pairs_tsv` writes
    the same format (documents as bytes literals), so the offline stand-in goes through
    the very same reader and is fed to the model as LRA feeds AAN.

Packed files (:func:`save_packed`, :func:`load_packed`)
    Prepared splits are stored as one ``.npz`` per split: all sequences' raw values
    (bytes or pixels, uint8) concatenated, their offsets and the labels — a few
    milliseconds to load, no HF import.
"""

from __future__ import annotations

import ast
import itertools
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AAN_SPLIT_FILES",
    "CLS_ID",
    "GRAY_WEIGHTS",
    "OFFSET",
    "PAD_ID",
    "VOCAB_SIZE",
    "PairExample",
    "columns",
    "decode_bytes",
    "decode_pixels",
    "decode_text",
    "encode_bytes",
    "encode_pixels",
    "iter_pairs_tsv",
    "literal_document",
    "load_packed",
    "mean_pool",
    "pack",
    "read_pairs_tsv",
    "require_columns",
    "rgb_to_gray",
    "save_packed",
    "write_pairs_tsv",
]

PAD_ID = 0
CLS_ID = 1
OFFSET = 2  # byte or pixel value v is token v + OFFSET
VOCAB_SIZE = 256 + OFFSET
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale (ITU-R 601 luma)
AAN_SPLIT_FILES: dict[str, str] = {
    "train": "new_aan_pairs.train.tsv",
    "val": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}


# ------------------------------------------------------------------------------ bytes
def encode_bytes(text: str | bytes, max_length: int | None = None) -> np.ndarray:
    """Token ids (uint16) of the UTF-8 bytes of ``text``, the first ``max_length`` bytes."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if max_length is not None:
        data = data[:max_length]
    return np.frombuffer(data, dtype=np.uint8).astype(np.uint16) + OFFSET


def decode_bytes(ids: Iterable[int]) -> bytes:
    """The bytes behind byte tokens; PAD and CLS are not bytes and raise ValueError."""
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
    bad = arr[(arr < OFFSET) | (arr >= VOCAB_SIZE)]
    if bad.size:
        raise ValueError(
            f"token id {bad[0]} is not a byte; byte tokens are {OFFSET}..{VOCAB_SIZE - 1}"
        )
    return (arr - OFFSET).astype(np.uint8).tobytes()


def decode_text(ids: Iterable[int]) -> str:
    """The UTF-8 text behind byte tokens (strict: a cut multibyte character raises)."""
    return decode_bytes(ids).decode("utf-8")


# ----------------------------------------------------------------------------- pixels
def encode_pixels(image: np.ndarray) -> np.ndarray:
    """Token ids (uint16) of an 8-bit grayscale image, row-major: pixel v → v + OFFSET."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"expected a 2-d uint8 grayscale image, got {image.ndim}-d {image.dtype}")
    return image.reshape(-1).astype(np.uint16) + OFFSET


def decode_pixels(ids: Sequence[int] | np.ndarray, side: int) -> np.ndarray:
    """The ``side``×``side`` uint8 image behind pixel tokens (inverse of encode_pixels)."""
    arr = np.asarray(ids, dtype=np.int64)
    if arr.size != side * side:
        raise ValueError(f"{arr.size} pixel tokens do not make a {side}x{side} image")
    return np.frombuffer(decode_bytes(arr), dtype=np.uint8).reshape(side, side).copy()


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """LRA's grayscale (``tf.image.rgb_to_grayscale`` on uint8), evaluated exactly.

    ``gray = ⌊(0.2989·R + 0.5870·G + 0.1140·B) · 255.5 / 255⌋`` for (..., H, W, 3) uint8
    images; integer arithmetic: ``⌊(2989·R + 5870·G + 1140·B) · 2555 / 25,500,000⌋``.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected (..., H, W, 3) uint8 RGB images, got {rgb.shape} {rgb.dtype}")
    c = rgb.astype(np.int64)
    weighted = 2989 * c[..., 0] + 5870 * c[..., 1] + 1140 * c[..., 2]  # weights × 10^4
    return (weighted * 2555 // 25_500_000).astype(np.uint8)  # × 255.5 / 255, floored


def mean_pool(image: np.ndarray, k: int) -> np.ndarray:
    """k×k mean pooling of a 2-d uint8 image, rounded half up (k = 1: unchanged)."""
    image = np.asarray(image)
    h, w = image.shape
    if k < 1 or h % k or w % k:
        raise ValueError(f"pool={k} must be a positive divisor of the image sides {h}x{w}")
    if k == 1:
        return image.copy()
    blocks = image.astype(np.int64).reshape(h // k, k, w // k, k).sum(axis=(1, 3))
    return ((2 * blocks + k * k) // (2 * k * k)).astype(np.uint8)


# ----------------------------------------------------------------- release TSV (Retrieval)
@dataclass(frozen=True, slots=True)
class PairExample:
    """One document pair of the LRA Retrieval format; label 1 = related (AAN: citation).

    Read from a file (:func:`iter_pairs_tsv`), ``text1``/``text2`` are the text fields'
    raw bytes (LRA's model input: the bytes literal as written); given to
    :func:`write_pairs_tsv`, they are the documents, written as bytes literals.
    """

    label: int
    id1: str
    id2: str
    text1: bytes
    text2: bytes


def literal_document(field: bytes) -> bytes:
    """The document a release text field denotes (``b'caf\\xc3\\xa9'`` → ``café``'s bytes).

    For inspection and tests only: LRA feeds the model the field itself, not this.
    ValueError if the field is not a bytes literal.
    """
    try:
        value = ast.literal_eval(field.decode("ascii"))
    except (ValueError, SyntaxError, UnicodeDecodeError):
        raise ValueError(f"not a bytes literal: {field[:40]!r}") from None
    if not isinstance(value, bytes):
        raise ValueError(f"not a bytes literal: {field[:40]!r}")
    return value


def _label_field(field: str, where: str) -> int:
    try:
        value = float(field)
    except ValueError:
        raise ValueError(f"{where}: label {field!r} is not a number; valid: 0, 1") from None
    if value not in (0.0, 1.0):
        raise ValueError(f"{where}: label {field!r}; valid: 0, 1")
    return int(value)


def iter_pairs_tsv(path: str | Path) -> Iterator[PairExample]:
    """Pairs of a Retrieval TSV (an LRA release file or one from :func:`write_pairs_tsv`).

    The text fields are kept as the raw bytes between the tabs, as LRA's pipeline
    byte-encodes them (see the module docstring); the ids are decoded as UTF-8.
    Streams the file (the release's training file is large). Lines end at ``\\n`` (a
    trailing ``\\r`` is dropped); blank lines are skipped. Raises FileNotFoundError for a
    missing file and ValueError naming the file and line for a line without five
    tab-separated fields, ids that are not UTF-8 or a label other than 0/1.
    """
    path = Path(path)
    try:
        f = path.open("rb")  # binary: split at \n only, never inside an escaped text
    except FileNotFoundError:
        raise FileNotFoundError(f"Retrieval data file not found: {path}") from None
    with f:
        for number, raw in enumerate(f, start=1):
            line = raw.removesuffix(b"\n").removesuffix(b"\r")
            if not line.strip():
                continue
            where = f"{path}:{number}"
            fields = line.split(b"\t")
            if len(fields) != 5:
                raise ValueError(
                    f"{where}: expected 5 tab-separated fields (label, id1, id2, text1, text2), "
                    f"got {len(fields)}"
                )
            try:
                label, id1, id2 = (f.decode("utf-8") for f in fields[:3])
            except UnicodeDecodeError:
                raise ValueError(f"{where}: label or ids not valid UTF-8") from None
            yield PairExample(_label_field(label, where), id1, id2, fields[3], fields[4])


def read_pairs_tsv(path: str | Path) -> list[PairExample]:
    """All pairs of a Retrieval TSV as a list (see :func:`iter_pairs_tsv`)."""
    return list(iter_pairs_tsv(path))


def write_pairs_tsv(path: str | Path, examples: Iterable[PairExample]) -> None:
    """Write pairs in the release format, atomically: ``text1``/``text2`` are documents,
    written as their bytes literals (``repr``), as the release stores AAN's papers."""
    path = Path(path)
    lines = []
    for i, ex in enumerate(examples):
        if ex.label not in (0, 1) or any(c in s for s in (ex.id1, ex.id2) for c in "\t\n\r"):
            raise ValueError(f"pair {i}: label must be 0 or 1 and ids free of tabs/newlines")
        lines.append(f"{ex.label}\t{ex.id1}\t{ex.id2}\t{ex.text1!r}\t{ex.text2!r}\n")
    _atomic_write(path, "".join(lines).encode("utf-8"))


# ---------------------------------------------------------------------- packed splits
def pack(sequences: Sequence[bytes | np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate uint8 sequences: (values, offsets) with ``offsets[i]:offsets[i+1]``."""
    arrays = [
        np.frombuffer(s, dtype=np.uint8) if isinstance(s, bytes) else np.asarray(s, np.uint8)
        for s in sequences
    ]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([a.size for a in arrays])
    values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint8)
    return values, offsets


def save_packed(
    path: str | Path, labels: Sequence[int], **columns: Sequence[bytes | np.ndarray]
) -> None:
    """Save labelled examples with one or more uint8 sequence columns to ``path`` (.npz)."""
    arrays: dict[str, np.ndarray] = {"labels": np.asarray(labels, dtype=np.int64)}
    for name, seqs in columns.items():
        if len(seqs) != len(labels):
            raise ValueError(f"column {name}: {len(seqs)} sequences for {len(labels)} labels")
        arrays[f"{name}.values"], arrays[f"{name}.offsets"] = pack(seqs)
    fd, tmp = tempfile.mkstemp(prefix=".packed.", suffix=".npz", dir=Path(path).parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_packed(path: str | Path) -> tuple[list[int], dict[str, list[np.ndarray]]]:
    """Labels and, per column, the token ids (uint16 views, value + OFFSET) of each example."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prepared LRA data file not found: {path}")
    with np.load(path) as data:
        labels = data["labels"].tolist()
        columns: dict[str, list[np.ndarray]] = {}
        for key in data.files:
            if key.endswith(".values"):
                name = key.removesuffix(".values")
                ids = data[key].astype(np.uint16) + OFFSET
                offsets = data[f"{name}.offsets"]
                columns[name] = [ids[a:b] for a, b in itertools.pairwise(offsets)]
    return labels, columns


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------- bundled files
def require_columns(have: Iterable[str], names: Sequence[str], what: str) -> None:
    """ValueError naming ``what``, the missing columns and the ones it has."""
    have = list(have)
    missing = [n for n in names if n not in have]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(have)}")


def columns(table: Any, names: Sequence[str], what: str) -> dict[str, list[Any]]:
    """The named columns of an HF ``Dataset`` (or a dict of columns) as Python lists.

    One bulk conversion: iterating an HF dataset's lazy column element by element is
    about 30x slower.
    """
    require_columns(table if isinstance(table, dict) else table.column_names, names, what)
    if isinstance(table, dict):
        return {n: list(table[n]) for n in names}
    return table.select_columns(list(names)).to_dict()
