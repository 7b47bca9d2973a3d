"""The bundled offline corpora: checksums, known content, the verified access path, and
the pure functions of ``scripts/build_bundled_data.py`` on constructed inputs.

Known content is checked against independent references: printed verses of the three
Bible translations, the published size of the KJV versification (66 books, 1,189
chapters, 31,102 verses) and of WordNet 3.0 (82,115 noun, 13,767 verb, 18,156 adjective
and 3,621 adverb synsets; Princeton's wnstats(7WN)), and Fashion-MNIST's class layout.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import struct
import sys
import zlib
from collections import Counter
from pathlib import Path
from types import ModuleType

import pyarrow.parquet as pq
import pytest

from attnbench.data import bundled

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_bundled_data.py"
NAMES = ("bible", "novels", "wordnet", "fashion_mnist")
COLUMNS = {
    "bible": ["ref", "book", "book_index", "chapter", "verse", "kjv", "web", "rv1909"],
    "novels": ["author", "title", "position", "text"],
    "wordnet": ["synset", "pos", "lexname", "lemmas", "definition"],
    "fashion_mnist": ["split", "label", "pixels"],
}


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_bundled_data", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _table(name: str) -> dict[str, list]:
    return pq.read_table(bundled.bundled_path(name)).to_pydict()


# --- the shipped files --------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_file_matches_provenance(name: str) -> None:
    entry = bundled.provenance()["files"][name]
    path = bundled.bundled_path(name)  # raises unless the sha256 matches
    meta = pq.read_metadata(path)
    assert meta.num_rows == entry["rows"]
    assert meta.schema.to_arrow_schema().names == COLUMNS[name]
    assert path.stat().st_size == entry["bytes"]
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_content_checksum_matches_rows(script: ModuleType) -> None:
    # The writer-independent checksum is what a rebuild with another pyarrow must match.
    for name in ("bible", "fashion_mnist"):
        table = pq.read_table(bundled.bundled_path(name))
        assert script.content_sha256(table) == bundled.provenance()["files"][name]["content_sha256"]


def test_total_size_near_10_mb() -> None:
    total = sum(f["bytes"] for f in bundled.provenance()["files"].values())
    assert 8e6 < total < 12e6


def test_provenance_records_sources() -> None:
    prov = bundled.provenance()
    assert prov["build_command"].startswith("python scripts/build_bundled_data.py")
    for name in NAMES:
        entry = prov["files"][name]
        assert entry["licence"] and entry["works"] and entry["sources"]
        for package, version in entry["sources"].items():
            assert prov["packages"][package]["version"] == version
    assert "rule" in prov["files"]["fashion_mnist"]["facts"]


KNOWN_VERSES = {
    "Gen.1.1": (
        "In the beginning God created the heaven and the earth.",
        "In the beginning, God created the heavens and the earth.",
        "EN el principio crió Dios los cielos y la tierra.",
    ),
    "John.3.16": (
        "For God so loved the world, that he gave his only begotten Son, that whosoever "
        "believeth in him should not perish, but have everlasting life.",
        "For God so loved the world, that he gave his only born Son, that whoever believes "
        "in him should not perish, but have eternal life.",
        "Porque de tal manera amó Dios al mundo, que ha dado á su Hijo unigénito, para que "
        "todo aquel que en él cree, no se pierda, mas tenga vida eterna.",
    ),
    "Rev.22.21": (
        "The grace of our Lord Jesus Christ be with you all. Amen.",
        "The grace of the Lord Jesus Christ be with all the saints. Amen.",
        "La gracia de nuestro Señor Jesucristo sea con todos vosotros. Amén.",
    ),
}


def test_bible_known_verses_and_versification() -> None:
    t = _table("bible")
    row = {ref: i for i, ref in enumerate(t["ref"])}
    for ref, (kjv, web, rv) in KNOWN_VERSES.items():
        i = row[ref]
        assert (t["kjv"][i], t["web"][i], t["rv1909"][i]) == (kjv, web, rv)
    assert len(row) == len(t["ref"]) == 31102
    assert len(set(t["book"])) == 66 and len(set(zip(t["book"], t["chapter"], strict=True))) == 1189
    assert t["book_index"][0] == 0 and t["book_index"][-1] == 65
    assert t["book_index"] == sorted(t["book_index"])
    assert max(t["verse"][i] for i in range(len(t["ref"])) if t["book"][i] == "Ps") == 176
    assert all(t["kjv"]) and not any("<" in s or "¶" in s for s in t["kjv"])
    # The WEB glossary sits after Rev 22:21 in the module and must not leak into it.
    assert all(len(s) < 1000 for s in t["web"] if s)


def test_novels() -> None:
    t = _table("novels")
    books = Counter(zip(t["author"], t["title"], strict=True))
    assert len(books) == 10 and sum(1 for a, _ in books if a == "Jane Austen") == 6
    start: dict[str, int] = {}
    for i, (title, pos) in enumerate(zip(t["title"], t["position"], strict=True)):
        start.setdefault(title, i)
        assert pos == i - start[title]  # reading order, contiguous per book
    assert any(p.startswith("It is a truth universally acknowledged") for p in t["text"])
    assert not any("Project Gutenberg" in p for p in t["text"] if "Moby" in p)
    assert all(p == p.strip() and "\n" not in p for p in t["text"])


def test_wordnet() -> None:
    t = _table("wordnet")
    pos = Counter(t["pos"])
    assert (pos["n"], pos["v"], pos["a"] + pos["s"], pos["r"]) == (82115, 13767, 18156, 3621)
    assert len(set(t["lexname"])) == 45
    i = t["synset"].index("02084071-n")
    assert t["lexname"][i] == "noun.animal" and t["lemmas"][i].startswith("dog, domestic dog")
    assert '"' not in t["definition"][i] and t["definition"][i].startswith("a member of")


def test_fashion_mnist_is_stratified() -> None:
    t = _table("fashion_mnist")
    counts = Counter(zip(t["split"], t["label"], strict=True))
    assert counts == {(s, c): n for s, n in (("train", 400), ("test", 100)) for c in range(10)}
    assert all(len(p) == 784 and any(p) for p in t["pixels"])


def test_read_table_returns_dataset() -> None:
    ds = bundled.read_table("fashion_mnist")
    assert ds.num_rows == 5000 and ds.column_names == COLUMNS["fashion_mnist"]
    assert isinstance(ds[0]["pixels"], bytes)


# --- the verified access path -------------------------------------------------------


@pytest.fixture
def tmp_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(bundled.BUNDLED_DIR / "PROVENANCE.json", tmp_path)
    shutil.copy(bundled.BUNDLED_DIR / "fashion_mnist.parquet", tmp_path)
    monkeypatch.setattr(bundled, "BUNDLED_DIR", tmp_path)
    return tmp_path


def test_intact_copy_passes(tmp_bundle: Path) -> None:
    assert bundled.bundled_path("fashion_mnist") == tmp_bundle / "fashion_mnist.parquet"
    assert bundled.bundled_path("fashion_mnist.parquet").parent == tmp_bundle


def test_corrupt_copy_fails_with_one_line(tmp_bundle: Path) -> None:
    path = tmp_bundle / "fashion_mnist.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as err:
        bundled.bundled_path("fashion_mnist")
    msg = str(err.value)
    assert "\n" not in msg and "fashion_mnist.parquet" in msg and "sha256" in msg
    assert "scripts/build_bundled_data.py" in msg


def test_missing_file_fails_with_one_line(tmp_bundle: Path) -> None:
    with pytest.raises(ValueError, match=r"bible\.parquet is missing.*build_bundled_data") as e:
        bundled.bundled_path("bible")
    assert "\n" not in str(e.value)


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: bible, fashion_mnist, novels, wordnet"):
        bundled.bundled_path("imdb")


# --- the build script's pure functions on constructed inputs ------------------------


def _ztext(entries: list[str], per_block: int) -> tuple[bytes, bytes, bytes]:
    """A zText testament holding ``entries``, ``per_block`` entries to a zlib block."""
    bzs, bzv, bzz = bytearray(), bytearray(), bytearray()
    for b, first in enumerate(range(0, len(entries), per_block)):
        block = b""
        for text in entries[first : first + per_block]:
            raw = text.encode()
            bzv += struct.pack("<IIH", b, len(block), len(raw))
            block += raw
        packed = zlib.compress(block)
        bzs += struct.pack("<III", len(bzz), len(packed), len(block))
        bzz += packed
    return bytes(bzs), bytes(bzv), bytes(bzz)


def _book(osis: str) -> str:
    return f'<div canonical="true" osisID="{osis}" sID="b{osis}" type="book"/>'


def _chap(osis: str, n: int) -> str:
    return f'<chapter n="{n}" osisID="{osis}.{n}" sID="{osis}.{n}"/>'


def test_decode_ztext_roundtrip(script: ModuleType) -> None:
    entries = ["", "héllo", "", "wörld " * 50, "x"]
    assert script.decode_ztext(*_ztext(entries, per_block=2)) == entries
    bzs, bzv, bzz = _ztext(entries, per_block=2)
    with pytest.raises(ValueError, match="corrupt zText"):
        script.decode_ztext(bzs[:-1], bzv, bzz)


def test_ztext_layout(script: ModuleType) -> None:
    entries = [
        "",  # module heading
        "<milestone/>",  # testament heading
        _book("Gen"),
        _chap("Gen", 1),
        "g1.1",
        "g1.2",
        _chap("Gen", 2),
        "",  # an empty verse still takes its entry
        _book("Extra") + _chap("Extra", 1) + "a" + _chap("Extra", 2) + "b",  # stuffed book
        _chap("Exod", 1),
        "e1.1",
    ]
    decoded = script.decode_ztext(*_ztext(entries, per_block=3))
    got = [(v.book, v.chapter, v.verse, v.entry) for v in script.ztext_layout(decoded)]
    assert got == [("Gen", 1, 1, 4), ("Gen", 1, 2, 5), ("Gen", 2, 1, 7), ("Exod", 1, 1, 10)]
    with pytest.raises(ValueError, match="expected 2"):
        script.ztext_layout(["", "", _book("Gen"), _chap("Gen", 1), "a", _chap("Gen", 3), "b"])


def test_strip_osis(script: ModuleType) -> None:
    raw = (
        '<title type="psalm" canonical="true">A Psalm of David.</title> '
        '<title type="section">Heading</title>¶ <w lemma="strong:H1">LORD</w>'
        '<w lemma="strong:H2">how</w><note placement="foot">a note</note> '
        '<transChange type="added">are</transChange> they “ <q>increased</q> ” &amp; '
        '\\nd more<w>!</w> <chapter eID="Ps.3"/>'
        '<div canonical="true" eID="x" osisID="Ps" type="book"/> Glossary text'
    )
    assert script.strip_osis(raw) == "A Psalm of David. LORD how are they “increased” & more!"
    assert script.strip_osis("dijo: <w>¿</w> <w>Conque</w> (<w>no</w>)") == "dijo: ¿Conque (no)"


def test_parse_wordnet_line(script: ModuleType) -> None:
    assert script.parse_wordnet_line("  1 This software and database is ...", "n") is None
    adj = (
        "00002312 00 s 02 abaxial(p) 0 dorsal 4 002 ;c 06037666 n 0000 ! 00002527 a 0101 "
        '| facing away from the axis; of a leaf; "the abaxial surface"; "x"  '
    )
    assert script.parse_wordnet_line(adj, "a") == {
        "synset": "00002312-a",
        "pos": "s",
        "lexname": "adj.all",
        "lemmas": "abaxial, dorsal",
        "definition": "facing away from the axis; of a leaf",
    }
    words = " ".join(f"w_{k} {k % 10}" for k in range(10))  # w_cnt is hexadecimal: 0a = 10
    verb = f"00001740 29 v 0a {words} 000 01 + 02 00 | wash; scrub  "
    row = script.parse_wordnet_line(verb, "v")
    assert row["lexname"] == "verb.body" and row["lemmas"].split(", ")[9] == "w 9"
    assert row["definition"] == "wash; scrub"
    assert len(script.LEXNAMES) == 45 and script.LEXNAMES[5] == "noun.animal"
    assert script.LEXNAMES[44] == "adj.ppl"


def test_paragraphs_and_gutenberg(script: ModuleType) -> None:
    assert script.paragraphs(["a  b", " c", "", "", "d", "  "]) == ["a b c", "d"]
    text = (
        "header\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n\nProduced by Someone\n"
        "and Others\n\nCHAPTER 1\n\nText.\n\nEnd of Project Gutenberg's X\n\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nlicence"
    )
    assert script.paragraphs(script.strip_gutenberg(text).split("\n")) == ["CHAPTER 1", "Text."]
    with pytest.raises(ValueError, match="START/END"):
        script.strip_gutenberg("no markers")


def test_idx_and_stratified_sample(script: ModuleType, tmp_path: Path) -> None:
    import numpy as np

    labels = np.arange(60, dtype=np.uint8) % 10
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">HBBI", 0, 8, 1, 60) + labels.tobytes()))
    assert (script.read_idx(path) == labels).all()
    picks = script.stratified_indices(labels, 4, np.random.default_rng(0))
    assert list(picks) == sorted(picks) and Counter(labels[picks].tolist()) == dict.fromkeys(
        range(10), 4
    )
    again = script.stratified_indices(labels, 4, np.random.default_rng(0))
    assert (picks == again).all()


@pytest.mark.slow
def test_rebuild_is_byte_identical(script: ModuleType, tmp_path: Path) -> None:
    """Rebuild from ATTNBENCH_BUNDLED_SRC (a --source-dir with debs/ and root/)."""
    source = os.environ.get("ATTNBENCH_BUNDLED_SRC")
    if not source:
        pytest.skip("set ATTNBENCH_BUNDLED_SRC to a --source-dir of the Debian packages")
    script.main(["--source-dir", source, "--out-dir", str(tmp_path)])
    new = json.loads((tmp_path / "PROVENANCE.json").read_text())["files"]
    old = bundled.provenance()["files"]
    assert {k: v["content_sha256"] for k, v in new.items()} == {
        k: v["content_sha256"] for k, v in old.items()
    }
    assert {k: v["sha256"] for k, v in new.items()} == {k: v["sha256"] for k, v in old.items()}
