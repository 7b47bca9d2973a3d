"""Tests for the LRA Text, Retrieval and Image tasks and their data (attnbench.data.lra).

Real-benchmark loaders run on small local files in the real schema (IMDb and CIFAR-10
as HF parquet, AAN as release-format TSV); the offline stand-ins on small fixtures
with the bundled tables' columns. Nothing touches the network.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from attnbench.config import load_profile, validate_profile
from attnbench.data import lra
from attnbench.data.bundled import bundled_path
from attnbench.runner import prepare_data, run_job
from attnbench.tasks.base import TaskSetup, get_task, make_data_config
from attnbench.tasks.lra_retrieval import bible_chapter_pairs
from attnbench.tasks.lra_text import SPLITS, novel_chunks

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ fixtures
def _words(rng: random.Random, n: int, vocab: list[str]) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n))


@pytest.fixture(scope="module")
def novels_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three books by two authors, with multibyte characters, one row per paragraph."""
    rng = random.Random(0)
    books = [
        ("Ann Author", "Alpha", ["alpha", "élan", "river", "Änne"]),
        ("Ann Author", "Beta", ["beta", "naïve", "stone", "Bö"]),
        ("Bob Writer", "Gamma", ["gamma", "café", "cloud", "日本"]),
    ]
    cols: dict[str, list] = {"author": [], "title": [], "position": [], "text": []}
    for author, title, vocab in books:
        for position in range(40):
            cols["author"].append(author)
            cols["title"].append(title)
            cols["position"].append(position)
            cols["text"].append(_words(rng, 20, vocab))
    path = tmp_path_factory.mktemp("novels") / "novels.parquet"
    pq.write_table(pa.table(cols), path)
    return path


def _bible_table(n_books: int = 2, n_chapters: int = 12, n_verses: int = 5) -> dict[str, list]:
    cols: dict[str, list] = {
        k: [] for k in ("ref", "book", "book_index", "chapter", "verse", "kjv", "web", "rv1909")
    }
    for b in range(n_books):
        book = f"Bk{b}"
        for c in range(1, n_chapters + 1):
            for v in range(1, n_verses + 1):
                cols["ref"].append(f"{book}.{c}.{v}")
                cols["book"].append(book)
                cols["book_index"].append(b)
                cols["chapter"].append(c)
                cols["verse"].append(v)
                cols["kjv"].append(f"And {book} {c}:{v} saith unto thee")
                web = f"{book} {c}:{v} says to you"
                if (b, c) == (0, 3) or (v == 2 and c % 4 == 0):
                    web = None  # chapter Bk0.3 has no WEB text at all: it is dropped
                cols["web"].append(web)
                cols["rv1909"].append(f"Y {book} {c}:{v} dice")
    return cols


@pytest.fixture(scope="module")
def bible_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bible") / "bible.parquet"
    pq.write_table(pa.table(_bible_table()), path)
    return path


@pytest.fixture(scope="module")
def fashion_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    cols: dict[str, list] = {"split": [], "label": [], "pixels": []}
    for split, n in (("train", 50), ("test", 20)):
        for i in range(n):
            cols["split"].append(split)
            cols["label"].append(i % 10)
            cols["pixels"].append(rng.integers(0, 256, 784, dtype=np.uint8).tobytes())
    path = tmp_path_factory.mktemp("fashion") / "fashion_mnist.parquet"
    table = pa.table(
        cols,
        schema=pa.schema([("split", pa.string()), ("label", pa.int64()), ("pixels", pa.binary())]),
    )
    pq.write_table(table, path)
    return path


def _prepared(task_name: str, data: dict, out: Path):
    task_cls = get_task(task_name)
    task = task_cls(make_data_config(task_cls, data))
    task.prepare(out)
    task.load(out)
    return task


# ------------------------------------------------------------------------ byte tokens
@pytest.mark.parametrize(
    "text",
    ["plain ASCII", "héllo wörld — naïve café", "日本語のテキスト 🙂 ok", "tab\tnew\nline", ""],
)
def test_byte_tokens_round_trip_exactly(text: str) -> None:
    ids = lra.encode_bytes(text)
    data = text.encode("utf-8")
    assert len(ids) == len(data)  # one token per byte, not per character
    assert [int(i) for i in ids] == [b + 2 for b in data]  # PAD=0, CLS=1, byte b -> b + 2
    assert lra.decode_bytes(ids) == data and lra.decode_text(ids) == text


def test_byte_truncation_counts_bytes_and_specials_are_not_bytes() -> None:
    ids = lra.encode_bytes("ééé", max_length=3)  # 6 bytes, cut inside the second character
    assert lra.decode_bytes(ids) == "éé".encode()[:3]
    with pytest.raises(UnicodeDecodeError):
        lra.decode_text(ids)
    with pytest.raises(ValueError, match="not a byte"):
        lra.decode_bytes([lra.CLS_ID, 70])
    assert lra.VOCAB_SIZE == 258


# ----------------------------------------------------------------------- pixel tokens
def test_pixel_tokens_preserve_every_pixel() -> None:
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every 8-bit value once
    ids = lra.encode_pixels(image)
    assert ids.tolist() == [v + 2 for v in range(256)]  # row-major, v -> v + 2
    assert np.array_equal(lra.decode_pixels(ids, 16), image)


def _gray_reference(r: int, g: int, b: int) -> int:
    """tf.image.rgb_to_grayscale on uint8: scale to [0, 1], weigh, × 255.5, truncate."""
    return math.floor((0.2989 * r / 255 + 0.5870 * g / 255 + 0.1140 * b / 255) * 255.5)


def test_grayscale_matches_the_reference_formula() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image[0, :5] = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
    gray = lra.rgb_to_gray(image)
    assert gray.dtype == np.uint8 and gray.shape == (8, 8)
    assert gray[0, :5].tolist() == [0, 255, 76, 149, 29]  # worked by hand
    expected = [[_gray_reference(*map(int, px)) for px in row] for row in image]
    assert gray.tolist() == expected


def test_mean_pool_rounds_half_up() -> None:
    image = np.array([[1, 2, 0, 0], [2, 2, 0, 2], [0, 0, 9, 9], [1, 0, 9, 9]], dtype=np.uint8)
    # block means 1.75, 0.5, 0.25, 9
    assert lra.mean_pool(image, 2).tolist() == [[2, 1], [0, 9]]
    assert np.array_equal(lra.mean_pool(image, 1), image)
    with pytest.raises(ValueError, match="divisor"):
        lra.mean_pool(image, 3)


# --------------------------------------------------------------- HF loaders (real path)
def _imdb_dir(tmp_path: Path) -> tuple[Path, dict[str, list]]:
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    rows = {
        "train": {
            "text": [f"review {i}: {'great ' * i}films — très bien 🙂" for i in range(20)],
            "label": [i % 2 for i in range(20)],
        },
        "test": {
            "text": [f"test {i} <br />{'bad ' * i}ü" for i in range(10)],
            "label": [(i + 1) % 2 for i in range(10)],
        },
    }
    root = tmp_path / "imdb"
    root.mkdir()
    for split, cols in rows.items():
        datasets.Dataset.from_dict(cols, features=features).to_parquet(root / f"{split}.parquet")
    return root, rows


def _docs(task, split: str) -> list[tuple[bytes, int]]:
    return [(lra.decode_bytes(ids), label) for ids, label in task.splits[split]]


def test_imdb_validation_is_held_out_of_training_by_default(tmp_path: Path) -> None:
    root, rows = _imdb_dir(tmp_path)
    want = {
        split: [(t.encode()[:40], y) for t, y in zip(*rows[split].values(), strict=True)]
        for split in ("train", "test")
    }
    task = _prepared("text", {"hf_path": str(root), "max_length": 40}, tmp_path / "p")
    assert task.cfg.val_from == "train"
    info = task.dataset_info()
    assert info.stand_in is False and len(task.class_names) == 2
    train, val, test = (_docs(task, s) for s in ("train", "val", "test"))
    assert test == want["test"]
    assert len(val) == 2 and len(train) == 18  # 10 % of the 20 training reviews, seeded
    assert sorted(train + val) == sorted(want["train"])  # a partition of the training set
    assert not {d for d, _ in val} & ({d for d, _ in train} | {d for d, _ in test})
    assert train == [row for row in want["train"] if row not in val]  # order kept
    again = _prepared("text", {"hf_path": str(root), "max_length": 40}, tmp_path / "again")
    assert _docs(again, "val") == val  # the data seed fixes the hold-out
    other = _prepared("text", {"hf_path": str(root), "max_length": 40, "seed": 1}, tmp_path / "s")
    assert _docs(other, "val") != val
    assert info.name == "imdb-bytes" and "held out" in info.description
    record = task.record_info()
    assert record["val_from"] == "train" and "disjoint" in record["validation"]
    held = _prepared("text", {"hf_path": str(root), "max_length": 40, "n_val": 5}, tmp_path / "q")
    train5 = {d for d, _ in _docs(held, "train")}
    val5 = {d for d, _ in _docs(held, "val")}
    assert len(train5) == 15 and len(val5) == 5 and not train5 & val5


def test_imdb_lra_compatibility_validates_on_test_and_says_so(tmp_path: Path) -> None:
    root, rows = _imdb_dir(tmp_path)
    data = {"hf_path": str(root), "max_length": 40, "val_from": "test"}
    task = _prepared("text", data, tmp_path / "p")
    for split, source in (("train", "train"), ("test", "test"), ("val", "test")):
        want = [(t.encode()[:40], y) for t, y in zip(*rows[source].values(), strict=True)]
        assert _docs(task, split) == want  # LRA: all training reviews; validation = test
    info = task.dataset_info()
    assert info.name == "imdb-bytes-val-on-test"
    assert "test split (LRA compatibility" in info.description
    record = task.record_info()
    assert record["val_from"] == "test" and "chosen on test" in record["validation"]


def test_cifar10_loader_reads_pil_images_as_gray_pixel_tokens(tmp_path: Path) -> None:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(2)
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    arrays = {
        s: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        for s, n in (("train", 20), ("test", 6))
    }
    root = tmp_path / "cifar10"
    root.mkdir()
    for split, imgs in arrays.items():
        cols = {
            "img": [Image.fromarray(a) for a in imgs],
            "label": [i % 10 for i in range(len(imgs))],
        }
        datasets.Dataset.from_dict(cols, features=features).to_parquet(root / f"{split}.parquet")
    task = _prepared("image", {"hf_path": str(root)}, tmp_path / "p")
    assert task.max_len() == 1025 and task.dataset_info().stand_in is False
    # LRA's split: train[:90%] for training, train[90%:] for validation
    expected = {"train": arrays["train"][:18], "val": arrays["train"][18:], "test": arrays["test"]}
    for split, imgs in expected.items():
        assert len(task.splits[split]) == len(imgs)
        for (ids, _), rgb in zip(task.splits[split], imgs, strict=True):
            want = [[_gray_reference(*map(int, px)) for px in row] for row in rgb]
            assert np.array_equal(lra.decode_pixels(ids, 32), np.array(want, dtype=np.uint8))
    assert [label for _, label in task.splits["val"]] == [8, 9]


# ------------------------------------------------------------------ Retrieval release TSV
def test_release_tsv_reader_on_a_constructed_file(tmp_path: Path) -> None:
    text1 = "A paper\twith a tab,\na newline, 'quotes' \"both\" and caf\u00e9".encode()
    lines = [
        f"1.0\taan/P01-1001\taan/P02-2002\t{text1!r}\t{b'second paper'!r}",
        "0\taan/P03-3003\taan/P04-4004\tplain text \u00e9\tb'\\xc3\\xa9t\\xc3\\xa9'",
        "",
    ]
    path = tmp_path / "new_aan_pairs.test.tsv"
    path.write_bytes("\r\n".join(lines).encode())
    pairs = lra.read_pairs_tsv(path)
    # the text fields as they stand in the file (LRA byte-encodes the literal, undecoded)
    assert pairs == [
        lra.PairExample(
            1, "aan/P01-1001", "aan/P02-2002", repr(text1).encode(), b"b'second paper'"
        ),
        lra.PairExample(
            0,
            "aan/P03-3003",
            "aan/P04-4004",
            "plain text é".encode(),
            b"b'\\xc3\\xa9t\\xc3\\xa9'",
        ),
    ]
    assert lra.literal_document(pairs[0].text1) == text1  # what the literal denotes
    assert lra.literal_document(pairs[1].text2) == "été".encode()
    with pytest.raises(ValueError, match="not a bytes literal"):
        lra.literal_document(pairs[1].text1)
    documents = [
        lra.PairExample(p.label, p.id1, p.id2, lra.literal_document(p.text1), b"x")
        for p in pairs[:1]
    ]
    copy = tmp_path / "copy.tsv"
    lra.write_pairs_tsv(copy, documents)  # documents are written as bytes literals
    assert lra.read_pairs_tsv(copy) == [
        lra.PairExample(1, "aan/P01-1001", "aan/P02-2002", repr(text1).encode(), b"b'x'")
    ]
    assert copy.read_text().count("\n") == 1  # escaped: one line per pair

    for bad, message in (("1\ta\tb\tc", "5 tab-separated"), ("2\ta\tb\tc\td", "label")):
        path.write_text(bad + "\n")
        with pytest.raises(ValueError, match=message) as info:
            lra.read_pairs_tsv(path)
        assert f"{path}:1" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError):
        lra.read_pairs_tsv(tmp_path / "missing.tsv")


def _tfds_byte_encode(s: bytes) -> list[int]:
    """tfds.deprecated.text.ByteTextEncoder().encode, as LRA calls it (no extra tokens).

    ``pad_incr(list(bytearray(tf.compat.as_bytes(s))))``: each byte + 1 (0 = padding).
    """
    return [b + 1 for b in bytearray(s)]


def test_retrieval_feeds_the_release_literal_bytes_as_lra_does(tmp_path: Path) -> None:
    """A line in the release layout: the ids are the raw field's bytes, as LRA's pipeline
    (make_csv_dataset, no quoting; ByteTextEncoder on ``s.numpy()[:10000]``; then
    ``[:max_length]``) gives them, shifted by one more id (0 PAD, 1 CLS here)."""
    field1 = repr('Café\'s "paper":\nline two\tend'.encode())  # as the release writes it
    assert field1 == r"""b'Caf\xc3\xa9\'s "paper":\nline two\tend'"""
    field2 = repr(b"it's")
    assert field2 == """b"it's\""""
    line = f"1.0\taan/P01-1001\taan/P02-2002\t{field1}\t{field2}\n"
    release = tmp_path / "tsv_data"
    release.mkdir()
    for file in lra.AAN_SPLIT_FILES.values():
        (release / file).write_bytes((line * 2).encode("utf-8"))
    for max_length in (4000, 13):
        task = _prepared(
            "retrieval",
            {"path": str(release), "max_length": max_length},
            tmp_path / f"{max_length}",
        )
        a, b, label = task.splits["test"][0]
        lra_ids1 = _tfds_byte_encode(field1.encode("utf-8")[:10000])[:max_length]
        lra_ids2 = _tfds_byte_encode(field2.encode("utf-8")[:10000])[:max_length]
        assert (a - 1).tolist() == lra_ids1 and (b - 1).tolist() == lra_ids2  # ids: byte + 2
        assert a.tolist() == [x + lra.OFFSET for x in field1.encode("utf-8")[:max_length]]
        assert lra.decode_bytes(a) == field1.encode()[:max_length] and label == 1
    assert lra.decode_bytes(a) == b"b'Caf\\xc3\\xa9"  # the escape, not the character é
    assert len(field1.encode()) > 13 and lra.literal_document(field1.encode()).startswith(
        "Café".encode()
    )


def test_retrieval_reads_release_directory_and_subsamples(tmp_path: Path) -> None:
    release = tmp_path / "tsv_data"
    pairs = {
        split: [
            lra.PairExample(
                i % 2, f"{split}{i}a", f"{split}{i}b", f"doc {split} {i} é".encode() * 3, b"other"
            )
            for i in range(n)
        ]
        for split, n in (("train", 12), ("val", 6), ("test", 6))
    }
    for split, file in lra.AAN_SPLIT_FILES.items():
        lra.write_pairs_tsv(release / file, pairs[split])
    task = _prepared(
        "retrieval", {"path": str(release), "max_length": 10, "n_train": 8}, tmp_path / "p"
    )
    assert task.dataset_info().source == "lra-release" and task.max_len() == 11
    assert len(task.splits["train"]) == 8
    for (a, b, label), want in zip(task.splits["test"], pairs["test"], strict=True):
        assert lra.decode_bytes(a) == repr(want.text1).encode()[:10]  # the literal, as LRA
        assert lra.decode_bytes(b) == b"b'other'" and label == want.label


# ------------------------------------------------------------- Bible chapter pairs
def test_bible_pairs_are_balanced_same_chapter_positives_and_disjoint_splits() -> None:
    table = _bible_table()
    pairs = bible_chapter_pairs(table, None, 4, 6, seed=3)
    kjv: dict[str, str] = {}
    web: dict[str, str] = {}
    for book, c, v, k, w in zip(
        table["book"], table["chapter"], table["verse"], table["kjv"], table["web"], strict=True
    ):
        kjv.setdefault(f"{book}.{c}", "")
        kjv[f"{book}.{c}"] += ("" if v == 1 else " ") + k
        if w is not None:
            web[f"{book}.{c}"] = (web.get(f"{book}.{c}", "") + " " + w).strip()
    chapters_of = {}
    for split, examples in pairs.items():
        labels = Counter(e.label for e in examples)
        assert labels[0] == labels[1] == len(examples) // 2  # balanced
        names = set()
        for e in examples:
            a, b = e.id1.removeprefix("kjv:"), e.id2.removeprefix("web:")
            assert e.text1 == kjv[a].encode() and e.text2 == web[b].encode()
            assert (a == b) == (e.label == 1)  # positive iff the same chapter
            names |= {a, b}
        # every chapter's two documents appear once in a positive and once in a negative
        assert set(Counter(e.id1 for e in examples).values()) == {2}
        assert set(Counter(e.id2 for e in examples).values()) == {2}
        chapters_of[split] = names
    assert len(pairs["val"]) == 4 and len(pairs["test"]) == 6
    assert len(pairs["train"]) == 2 * (23 - 2 - 3)  # Bk0.3 has no WEB text
    assert "Bk0.3" not in set().union(*chapters_of.values())
    assert not chapters_of["train"] & chapters_of["val"]
    assert not chapters_of["train"] & chapters_of["test"]
    assert not chapters_of["val"] & chapters_of["test"]
    assert bible_chapter_pairs(table, None, 4, 6, seed=3) == pairs  # deterministic
    assert bible_chapter_pairs(table, None, 4, 6, seed=4) != pairs
    with pytest.raises(ValueError, match="chapters"):
        bible_chapter_pairs(table, 100, 4, 6, seed=3)


def test_retrieval_stand_in_writes_release_tsv_read_by_the_same_reader(
    bible_file: Path, tmp_path: Path
) -> None:
    data = {"source": "bundled", "path": str(bible_file), "max_length": 16, "n_val": 4, "n_test": 4}
    task = _prepared("retrieval", data, tmp_path)
    info = task.dataset_info()
    assert info.stand_in and info.source == "bundled" and "bible" in info.name
    for split, file in (("train", "bible_pairs.train.tsv"), ("val", "bible_pairs.eval.tsv")):
        pairs = lra.read_pairs_tsv(tmp_path / file)
        got = [(lra.decode_bytes(a), lra.decode_bytes(b), y) for a, b, y in task.splits[split]]
        assert got == [(p.text1[:16], p.text2[:16], p.label) for p in pairs]
        assert all(a.startswith((b"b'", b'b"')) for a, _, _ in got)  # literals, as in AAN


def test_retrieval_batches_pad_both_towers(bible_file: Path, tmp_path: Path) -> None:
    data = {"source": "bundled", "path": str(bible_file), "max_length": 40, "n_val": 4, "n_test": 4}
    task = _prepared("retrieval", data, tmp_path)
    batch = next(task.batches("val", 4))
    assert set(batch.inputs) == {"ids_a", "ids_b", "padding_a", "padding_b"}
    for tower in ("a", "b"):
        ids, pad = batch.inputs[f"ids_{tower}"], batch.inputs[f"padding_{tower}"]
        assert (ids[:, 0] == lra.CLS_ID).all() and torch.equal(pad, ids != lra.PAD_ID)
    task = type(task)(task.cfg, TaskSetup(pad_to=task.max_len()))
    task.load(tmp_path)
    batch = next(task.batches("val", 4))
    assert batch.inputs["ids_a"].shape == batch.inputs["ids_b"].shape == (4, task.max_len())
    assert batch.n_tokens == int(batch.inputs["padding_a"].sum() + batch.inputs["padding_b"].sum())


# --------------------------------------------------------------------- novels chunks
def test_novel_chunks_are_exact_slices_of_each_book(novels_file: Path) -> None:
    table = pq.read_table(novels_file).to_pydict()
    chunks = novel_chunks(table, 50, "title")
    assert sorted(chunks) == ["Alpha", "Beta", "Gamma"]
    for title, parts in chunks.items():
        book = "\n".join(
            t for t, ti in zip(table["text"], table["title"], strict=True) if ti == title
        ).encode()
        assert all(len(c) == 50 for c in parts) and b"".join(parts) == book[: 50 * len(parts)]
    assert sorted(novel_chunks(table, 50, "author")) == ["Ann Author", "Bob Writer"]


@pytest.mark.parametrize("label", ["title", "author"])
def test_text_stand_in_is_balanced_and_splits_share_no_chunk(
    novels_file: Path, tmp_path: Path, label: str
) -> None:
    data = {
        "source": "bundled",
        "path": str(novels_file),
        "max_length": 50,
        "label": label,
        "n_train": 24,
        "n_val": 6,
        "n_test": 6,
    }
    task = _prepared("text", data, tmp_path)
    k = 3 if label == "title" else 2
    assert len(task.class_names) == k and task.dataset_info().stand_in
    seen: set[bytes] = set()
    for split, n in (("train", 24), ("val", 6), ("test", 6)):
        counts = Counter(y for _, y in task.splits[split])
        assert sum(counts.values()) == n and set(counts.values()) == {n // k}
        chunks = {lra.decode_bytes(ids) for ids, _ in task.splits[split]}
        assert len(chunks) == n and not chunks & seen
        seen |= chunks
    with pytest.raises(ValueError, match="balanced chunks"):
        _prepared("text", {**data, "n_train": 10_000}, tmp_path / "big")


def _library(path: Path, books_per_author: dict[str, int], paragraphs: int = 30) -> Path:
    """A novels table whose every book has its own vocabulary (so a chunk names its book)."""
    rng = random.Random(0)
    cols: dict[str, list] = {"author": [], "title": [], "position": [], "text": []}
    for a, (author, n_books) in enumerate(books_per_author.items()):
        for b in range(n_books):
            vocab = [f"w{a}x{b}y{i}" for i in range(4)]
            for position in range(paragraphs):
                cols["author"].append(author)
                cols["title"].append(f"Book {a}.{b}")
                cols["position"].append(position)
                cols["text"].append(_words(rng, 12, vocab))
    pq.write_table(pa.table(cols), path)
    return path


def _book_of(chunk: bytes) -> str:
    """The book a chunk comes from: its words are w<author>x<book>y<i>."""
    books = {w[1:].split("y")[0] for w in chunk.decode().split() if w.startswith("w") and "y" in w}
    assert len(books) == 1, books
    a, b = books.pop().split("x")
    return f"Book {a}.{b}"


@pytest.mark.parametrize("n_books", [2, 3])
def test_split_by_book_keeps_test_books_out_of_training(tmp_path: Path, n_books: int) -> None:
    authors = {"Ann": n_books, "Bob": n_books + 1, "Cy": n_books}
    path = _library(tmp_path / "novels.parquet", authors)
    data = {"source": "bundled", "path": str(path), "max_length": 64, "split_by": "book"}
    task = _prepared("text", data, tmp_path / "p")
    books = {s: {_book_of(lra.decode_bytes(ids)) for ids, _ in task.splits[s]} for s in SPLITS}
    assert books["train"] and books["test"] and not books["train"] & books["test"]
    if n_books >= 3:  # every author has 3 books: validation books of its own
        assert not books["val"] & (books["train"] | books["test"])
    else:  # validation chunks come from the training books, not from training chunks
        assert books["val"] <= books["train"]
        train = {lra.decode_bytes(ids) for ids, _ in task.splits["train"]}
        assert not train & {lra.decode_bytes(ids) for ids, _ in task.splits["val"]}
    for split in SPLITS:  # one test book per author; balanced; labels are the authors
        counts = Counter(y for _, y in task.splits[split])
        assert set(counts) == {0, 1, 2} and len(set(counts.values())) == 1
        for ids, label in task.splits[split]:
            book = _book_of(lra.decode_bytes(ids))
            assert book.split()[1].split(".")[0] == str(label)  # Book <author>.<book>
    assert len(books["test"]) == 3
    record = task.record_info()
    assert record["split_by"] == "book"
    assert {b.split(": ")[1] for b in record["books"]["test"]} == books["test"]
    assert "by-book" in task.dataset_info().name
    chunked = _prepared("text", {**data, "split_by": "chunk"}, tmp_path / "c")
    shared = {s: {_book_of(lra.decode_bytes(i)) for i, _ in chunked.splits[s]} for s in SPLITS}
    assert shared["train"] & shared["test"]  # the default draws chunks across all books


def test_bundled_novels_cannot_be_split_by_book(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2 books per author") as info:
        _prepared("text", {"source": "bundled", "split_by": "book"}, tmp_path)
    for author in ("Charles Dickens (1)", "H. G. Wells (1)", "Herman Melville (1)"):
        assert author in str(info.value)
    assert "Jane Austen" not in str(info.value)


# ------------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    ("task", "data", "message"),
    [
        ("text", {"source": "imdb"}, "valid choices: huggingface, bundled"),
        ("text", {"source": "bundled", "val_from": "test"}, "val_from"),
        ("text", {"val_from": "test", "n_val": 10}, "val_from: train"),
        ("text", {"val_from": "val"}, "valid choices: train, test"),
        ("text", {"source": "bundled", "split_by": "page"}, "valid choices: chunk, book"),
        ("text", {"split_by": "book"}, "split_by=book needs source bundled"),
        ("text", {"source": "bundled", "label": "title", "split_by": "book"}, "label author"),
        ("text", {"label": "genre"}, "author, title"),
        ("retrieval", {}, "path is required"),
        ("retrieval", {"source": "bundled", "n_val": 5}, "even"),
        ("image", {"pool": 3}, "valid: 1, 2, 4, 8, 16, 32"),
        ("image", {"source": "bundled", "pool": 5}, "valid: 1, 2, 4, 7, 14, 28"),
        ("image", {"n_test": 0}, "positive"),
    ],
)
def test_bad_data_knobs_give_one_line_errors(task: str, data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        make_data_config(get_task(task), data)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------- end to end
def _tiny_profile(out: Path, task: str, data: dict) -> dict:
    return validate_profile(
        {
            "profile": "tiny-lra",
            "output_dir": str(out),
            "model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32},
            "train": {"steps": 4, "batch_size": 8, "eval_every": 2, "warmup_steps": 1},
            "variants": {"include": ["vanilla"]},
            "tasks": {task: {"data": data}},
        }
    )


@pytest.mark.parametrize("task", ["text", "retrieval", "image"])
def test_tiny_end_to_end_run_writes_a_record(
    task: str, novels_file: Path, bible_file: Path, fashion_file: Path, tmp_path: Path
) -> None:
    data = {
        "text": {
            "source": "bundled",
            "path": str(novels_file),
            "max_length": 40,
            "n_train": 30,
            "n_val": 9,
            "n_test": 9,
        },
        "retrieval": {
            "source": "bundled",
            "path": str(bible_file),
            "max_length": 24,
            "n_val": 4,
            "n_test": 6,
        },
        "image": {"source": "bundled", "path": str(fashion_file), "pool": 2},
    }[task]
    profile = _tiny_profile(tmp_path, task, data)
    data_dir = tmp_path / "data"
    prepare_data(profile, task, data_dir)
    record_file = tmp_path / "runs" / "seed0.json"
    record = run_job(
        profile, task, "vanilla", 0, data_dir=data_dir, record_file=record_file, progress=False
    )
    assert record_file.exists() and record["status"] == "ok"
    assert record["dataset"]["stand_in"] is True and record["task_family"] == "lra"
    test = record["metrics"]["test"]
    assert 0.0 <= test["accuracy"] <= 1.0 and math.isfinite(test["loss"])
    assert "majority_class" in record["metrics"]["baselines"]
    assert record["attention"]["available"]
    lines = (tmp_path / "runs" / "seed0.predictions.jsonl").read_text().splitlines()
    assert len(lines) == {"text": 9, "retrieval": 6, "image": 20}[task]


def test_image_stand_in_pools_fashion_pixels(fashion_file: Path, tmp_path: Path) -> None:
    task = _prepared("image", {"source": "bundled", "path": str(fashion_file)}, tmp_path / "a")
    pooled = _prepared(
        "image", {"source": "bundled", "path": str(fashion_file), "pool": 2}, tmp_path / "b"
    )
    table = pq.read_table(fashion_file).to_pydict()
    train = [p for p, s in zip(table["pixels"], table["split"], strict=True) if s == "train"]
    assert task.max_len() == 785 and pooled.max_len() == 197
    for (ids, _), (pids, _), raw in zip(
        task.splits["train"], pooled.splits["train"], train, strict=False
    ):
        image = np.frombuffer(raw, dtype=np.uint8).reshape(28, 28)
        assert np.array_equal(lra.decode_pixels(ids, 28), image)  # tokens keep every pixel
        assert np.array_equal(lra.decode_pixels(pids, 14), lra.mean_pool(image, 2))
    assert len(task.splits["train"]) == 45 and len(task.splits["val"]) == 5


def test_lra_profile_validates() -> None:
    profile = load_profile(ROOT / "config" / "lra.yaml")
    assert set(profile["tasks"]) == {"listops", "text", "retrieval", "image", "pathfinder", "pathx"}


def test_stand_ins_prepare_from_the_shipped_files(tmp_path: Path) -> None:
    """The default profile's sources: the bundled corpora (sha256-checked), no path given."""
    text = _prepared(
        "text",
        {"source": "bundled", "max_length": 96, "n_train": 50, "n_val": 10, "n_test": 10},
        tmp_path / "text",
    )
    assert len(text.class_names) == 5 and "Jane Austen" in text.class_names
    retrieval = _prepared(
        "retrieval",
        {"source": "bundled", "max_length": 48, "n_train": 100, "n_val": 20, "n_test": 20},
        tmp_path / "retrieval",
    )
    assert [len(retrieval.splits[s]) for s in ("train", "val", "test")] == [100, 20, 20]
    table = pq.read_table(bundled_path("bible")).to_pydict()
    pairs = bible_chapter_pairs(table, None, 200, 400, seed=0)
    assert len(pairs["train"]) == 2 * 1189 - 600  # KJV versification: 1,189 chapters, all kept
    image = _prepared("image", {"source": "bundled", "pool": 4, "n_test": 100}, tmp_path / "image")
    assert image.max_len() == 50 and len(image.splits["val"]) > 0
    assert Counter(y for _, y in image.splits["val"]).keys() == set(range(10))
