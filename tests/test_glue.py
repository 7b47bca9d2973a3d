"""GLUE tasks and their offline stand-ins (attnbench.tasks.glue).

The real-benchmark path is exercised on small local files in GLUE's own row schema
(read by HF ``datasets``' json builder), never the network.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from attnbench.config import validate_profile
from attnbench.model import ModelOutput
from attnbench.runner import prepare_data, run_job
from attnbench.tasks import glue
from attnbench.tasks import glue_standins as standins
from attnbench.tasks.base import TaskSetup, get_task, make_data_config
from attnbench.text import SEP, SubwordTokenizer

sk = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")

# GLUE's row schema per task (text columns, number of classes; None = STS-B's 0–5 score)
# and its evaluation splits, written out here independently of the module under test.
SCHEMA: dict[str, tuple[tuple[str, ...], int | None]] = {
    "cola": (("sentence",), 2),
    "sst2": (("sentence",), 2),
    "mrpc": (("sentence1", "sentence2"), 2),
    "stsb": (("sentence1", "sentence2"), None),
    "qqp": (("question1", "question2"), 2),
    "mnli": (("premise", "hypothesis"), 3),
    "qnli": (("question", "sentence"), 2),
    "rte": (("sentence1", "sentence2"), 2),
    "wnli": (("sentence1", "sentence2"), 2),
}
EVAL_SPLITS = {"mnli": ("validation_matched", "validation_mismatched")}
PRIMARY = {
    "cola": "mcc",
    "sst2": "accuracy",
    "mrpc": "f1_accuracy",
    "stsb": "pearson_spearman",
    "qqp": "f1_accuracy",
    "mnli": "accuracy_matched",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
}
WORDS = (
    "the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "house", "quickly",
    "slowly", "red", "blue", "big", "small", "man", "woman", "saw", "liked", "river",
    "tree", "stone", "light", "dark", "over", "is", "was", "not", "every", "some", "bird",
)  # fmt: skip


def _sentence(rng: np.random.Generator, low: int = 3, high: int = 12) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high))))


def _label(rng: np.random.Generator, n_classes: int | None) -> float | int:
    if n_classes is None:
        return round(float(rng.integers(0, 26)) * 0.2, 1)  # 0.0, 0.2, …, 5.0
    return int(rng.integers(0, n_classes))


def write_glue_files(task: str, root: Path, n_train: int = 60, n_eval: int = 20) -> dict:
    """JSON-lines files in GLUE's schema (with a hidden-label test split, as on the hub)."""
    fields, n_classes = SCHEMA[task]
    rng = np.random.default_rng(zlib.crc32(task.encode()))
    splits = {"train": n_train, "test": n_eval}
    splits |= {s: n_eval - 3 * i for i, s in enumerate(EVAL_SPLITS.get(task, ("validation",)))}
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in splits.items():
        rows = []
        for idx in range(n):
            row: dict = {f: _sentence(rng) for f in fields}
            row["label"] = -1 if split == "test" else _label(rng, n_classes)
            if split == "test" and n_classes is None:
                row["label"] = -1.0
            row["idx"] = idx
            rows.append(row)
        files[split] = str(root / f"{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return files


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _task(name: str, **data) -> glue.GlueTask:
    cls = get_task(name)
    return cls(make_data_config(cls, data))


def _texts(ids: list[int], tokenizer: SubwordTokenizer) -> tuple[str, ...]:
    """Split an example at [SEP] and decode each part."""
    parts, current = [], []
    for i in ids:
        if i == SEP:
            parts.append(current)
            current = []
        else:
            current.append(i)
    return tuple(tokenizer.decode(p) for p in [*parts, current])


# ---------------------------------------------------------------------------------------
# The nine GLUE tasks on local files in the real schema
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCHEMA))
def test_glue_task_reads_the_real_schema_through_hf(name: str, tmp_path: Path) -> None:
    files = write_glue_files(name, tmp_path / "src")
    fields, n_classes = SCHEMA[name]
    task = _task(name, hf_path="json", data_files=files, val_fraction=0.25, vocab_size=300)
    assert task.metric == PRIMARY[name] and task.family == "glue"
    task.prepare(tmp_path / "data")
    task.load(tmp_path / "data")
    tok = SubwordTokenizer.load(tmp_path / "data" / "tokenizer.json")

    # val is a held-out part of train, disjoint from the rest; test = the validation split
    train_rows = _rows(files["train"])
    assert (len(task.splits["train"]), len(task.splits["val"])) == (45, 15)
    decoded = {
        split: [(_texts(ids, tok), label) for ids, label in task.splits[split]]
        for split in task.splits
    }
    source = [(tuple(r[f] for f in fields), r["label"]) for r in train_rows]
    assert Counter(decoded["train"] + decoded["val"]) == Counter(source)
    assert not set(decoded["train"]) & set(decoded["val"])
    evals = EVAL_SPLITS.get(name, ("validation",))
    for ours, theirs in zip(("test", "test_mismatched"), evals, strict=False):
        assert decoded[ours] == [
            (tuple(r[f] for f in fields), r["label"]) for r in _rows(files[theirs])
        ]
    assert ("test_mismatched" in task.splits) == (name == "mnli")
    # regression targets stay floats, class targets ints
    targets = next(task.batches("test", 8)).targets
    assert targets.dtype == (torch.float32 if n_classes is None else torch.long)
    info = task.dataset_info()
    assert not info.stand_in and info.source == "huggingface"
    assert "hidden" in info.description and "held out" in info.description
    assert "from scratch" in info.description


def test_default_source_is_the_glue_hub_dataset(monkeypatch) -> None:
    calls = []

    class Stop(Exception):
        pass

    def fake(path, name=None, **kwargs):
        calls.append((path, name, kwargs.get("data_files")))
        raise Stop

    monkeypatch.setattr(glue, "load_hf_dataset", fake)
    for name in SCHEMA:
        with pytest.raises(Stop):
            _task(name).prepare(Path("/nonexistent"))
    assert calls == [("nyu-mll/glue", name, None) for name in SCHEMA]


def test_hidden_labels_missing_columns_and_splits_fail_with_one_line(tmp_path: Path) -> None:
    files = write_glue_files("rte", tmp_path / "src")
    wrong = {"train": files["train"], "validation": files["test"]}  # the hidden-label split
    with pytest.raises(ValueError, match="hidden") as err:
        _task("rte", hf_path="json", data_files=wrong, vocab_size=300).prepare(tmp_path / "a")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no 'validation_matched' split; it has: train"):
        _task("mnli", hf_path="json", data_files={"train": files["train"]}).prepare(tmp_path)
    with pytest.raises(ValueError, match=r"missing column.*premise"):  # RTE rows for MNLI
        _task(
            "mnli",
            hf_path="json",
            data_files={
                "train": files["train"],
                "validation_matched": files["validation"],
                "validation_mismatched": files["validation"],
            },
            vocab_size=300,
        ).prepare(tmp_path / "b")


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"vocab_size": 100}, "vocab_size"),
        ({"max_length": 2}, "max_length"),
        ({"max_train": 0}, "max_train"),
        ({"data_files": ["a.json"]}, "data_files"),
        ({"n_test": 5}, "unknown key"),
    ],
)
def test_bad_data_knobs_name_the_key(values: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        make_data_config(get_task("cola"), values)
    assert "\n" not in str(err.value) and "tasks.cola.data" in str(err.value)


def _bert_truncate(a: list[int], b: list[int], budget: int) -> tuple[int, int]:
    """BERT's _truncate_seq_pair, popping list elements (the reference)."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return len(a), len(b)


def test_truncation_is_longest_first_like_bert() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        la, lb, budget = (int(x) for x in rng.integers(0, 40, 3))
        assert glue.truncate_longest_first([la, lb], budget) == list(
            _bert_truncate([0] * la, [0] * lb, budget)
        )
    assert glue.truncate_longest_first([50], 9) == [9]


def test_long_pairs_are_cut_to_max_length(tmp_path: Path) -> None:
    files = write_glue_files("mrpc", tmp_path / "src")
    task = _task("mrpc", hf_path="json", data_files=files, max_length=12, vocab_size=300)
    task.prepare(tmp_path / "data")
    task.load(tmp_path / "data")
    tok = SubwordTokenizer.load(tmp_path / "data" / "tokenizer.json")
    assert task.meta["splits"]["test"]["truncated"] > 0
    for (ids, _), row in zip(task.splits["test"], _rows(files["validation"]), strict=True):
        assert len(ids) + 1 <= 12  # + [CLS]
        assert ids.count(SEP) == 1
        cut = ids.index(SEP)
        full_a, full_b = tok.encode(row["sentence1"]), tok.encode(row["sentence2"])
        kept = glue.truncate_longest_first([len(full_a), len(full_b)], 12 - 2)
        assert ids[:cut] == full_a[: kept[0]] and ids[cut + 1 :] == full_b[: kept[1]]
    batch = next(task.batches("test", 4))
    assert batch.inputs["ids"][:, 0].eq(1).all()  # [CLS] first


def test_special_token_names_in_text_do_not_become_structure() -> None:
    tok = SubwordTokenizer.train(["a b c [SEP] d e", "f g h"] * 20, 300)
    (ids,), _ = glue.encode_rows([["a [SEP] b [CLS]"], ["c"]], tok, 64)
    assert ids.count(SEP) == 1 and 1 not in ids  # one boundary, no stray [CLS]
    assert ids[ids.index(SEP) + 1 :] == tok.encode("c")


class _HashModel(nn.Module):
    """A fixed 'model' whose outputs depend on the input ids only (for evaluation plumbing)."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.n_out = n_out

    def forward(self, ids, key_padding=None, **kwargs) -> ModelOutput:
        s = (ids * key_padding).sum(dim=1).float()
        outs = torch.stack([torch.sin(s * (k + 1)) for k in range(self.n_out)], dim=1)
        return ModelOutput(outs * 2.5 + 2.5 if self.n_out == 1 else outs)


@pytest.mark.parametrize("name", ["cola", "mrpc", "stsb", "mnli"])
def test_evaluate_matches_the_reference_metrics(name: str, tmp_path: Path) -> None:
    files = write_glue_files(name, tmp_path / "src")
    task = _task(name, hf_path="json", data_files=files, vocab_size=300)
    task.prepare(tmp_path / "data")
    task.load(tmp_path / "data")
    n_out = SCHEMA[name][1] or 1
    evaluation = task.evaluate(_HashModel(n_out), "test", 7, torch.device("cpu"))
    scores, preds = evaluation.metrics, evaluation.predictions
    assert [p["index"] for p in preds] == list(range(len(task.splits["test"])))
    assert [p["target"] for p in preds] == [label for _, label in task.splits["test"]]
    p = [x["prediction"] for x in preds]
    t = [x["target"] for x in preds]
    if name == "cola":
        assert scores["mcc"] == pytest.approx(sk.matthews_corrcoef(t, p))
    elif name == "mrpc":
        f1, acc = sk.f1_score(t, p), sk.accuracy_score(t, p)
        assert scores["f1_accuracy"] == pytest.approx((f1 + acc) / 2)
    elif name == "stsb":
        r, rho = stats.pearsonr(p, t)[0], stats.spearmanr(p, t)[0]
        assert scores["pearson_spearman"] == pytest.approx((r + rho) / 2)
    else:
        assert scores["accuracy_matched"] == pytest.approx(sk.accuracy_score(t, p))
        assert set(scores) == {
            "accuracy_matched",
            "accuracy_mismatched",
            "loss",
            "loss_mismatched",
        }
        val_scores = task.evaluate(_HashModel(n_out), "val", 7, torch.device("cpu")).metrics
        assert set(val_scores) == {"accuracy_matched", "loss"}  # selection metric present
    assert math.isfinite(scores["loss"])


@pytest.mark.parametrize("name", ["cola", "mrpc", "stsb"])
def test_baselines_are_majority_class_and_mean_prediction(name: str, tmp_path: Path) -> None:
    files = write_glue_files(name, tmp_path / "src")
    if name == "mrpc":  # make "not a paraphrase" the majority, as in QQP
        rows = _rows(files["train"])
        for i, row in enumerate(rows):
            row["label"] = int(i % 4 == 0)
        Path(files["train"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = _task(name, hf_path="json", data_files=files, vocab_size=300)
    task.prepare(tmp_path / "data")
    task.load(tmp_path / "data")
    train = [y for _, y in task.splits["train"]]
    test = [y for _, y in task.splits["test"]]
    baselines = task.baselines()
    assert math.isfinite(baselines.pop("bag_of_tokens"))  # checked in tests/test_baselines.py
    if name == "stsb":  # a constant has no correlation: 0 by our definition
        assert baselines == {"mean_prediction": 0.0}
        return
    counts = Counter(train)
    majority = max(sorted(counts), key=lambda c: counts[c])  # ties: the smallest label

    def score(constant: int) -> float:
        const = [constant] * len(test)
        if name == "cola":
            return sk.matthews_corrcoef(test, const)
        return (sk.f1_score(test, const, zero_division=0.0) + sk.accuracy_score(test, const)) / 2

    if name == "cola":
        assert baselines == {"majority_class": pytest.approx(score(majority))}
    else:
        assert majority == 0
        assert baselines == {
            "majority_class": pytest.approx(score(0)),
            "constant_positive": pytest.approx(score(1)),
        }


# ---------------------------------------------------------------------------------------
# Stand-in generators
# ---------------------------------------------------------------------------------------
def bible_table(n_books: int = 4, n_chapters: int = 10, n_verses: int = 9) -> dict:
    """Bible-shaped columns: every verse text names its reference, so pairs can be checked."""
    rows: dict[str, list] = {k: [] for k in ("ref", "book", "chapter", "verse", "kjv", "web")}
    for b in range(n_books):
        book = f"Bk{b}"
        for c in range(1, n_chapters + 1):
            verses = 1 if c == n_chapters else n_verses  # a one-verse chapter: no neighbours
            for v in range(1, verses + 1):
                rows["ref"].append(f"{book}.{c}.{v}")
                rows["book"].append(book)
                rows["chapter"].append(c)
                rows["verse"].append(v)
                rows["kjv"].append(f"And it came to pass in {book} {c} {v} that he spake")
                # verse 5 and 6 of chapter 2 share a refrain in WEB: never a negative pair
                refrain = c == 2 and v in (5, 6)
                web = "His loving kindness endures" if refrain else f"It happened {book} {c} {v}"
                rows["web"].append(None if v == 3 and c == 3 else web)  # one verse lacks WEB
    return rows


def _bible_rows(seed: int = 0, **caps) -> dict:
    return standins.bible_paraphrase_rows(
        bible_table(),
        seed=seed,
        val_fraction=0.25,
        test_fraction=0.25,
        max_distance=3,
        caps={"train": None, "validation": None, "test": None} | caps,
    )


def _chapter(ref: str) -> tuple[str, str]:
    book, chapter, _ = ref.split(".")
    return book, chapter


def test_bible_pairs_are_same_verse_or_a_near_neighbour() -> None:
    table = bible_table()
    kjv = dict(zip(table["ref"], table["kjv"], strict=True))
    web = dict(zip(table["ref"], table["web"], strict=True))
    rows = _bible_rows()
    assert all(rows[s] for s in ("train", "validation", "test"))
    for split_rows in rows.values():
        for row in split_rows:
            assert row["sentence1"] == kjv[row["ref1"]] and row["sentence2"] == web[row["ref2"]]
            if row["label"] == 1:
                assert row["ref1"] == row["ref2"]
            else:
                assert row["ref1"] != row["ref2"]
                assert _chapter(row["ref1"]) == _chapter(row["ref2"])
                distance = abs(int(row["ref1"].split(".")[2]) - int(row["ref2"].split(".")[2]))
                assert 1 <= distance <= 3
                assert row["sentence2"] != web[row["ref1"]]  # never the same text (refrains)
            assert web[row["ref1"]] is not None


def test_bible_classes_balanced_and_splits_disjoint_by_chapter() -> None:
    rows = _bible_rows()
    chapters = {}
    for split, split_rows in rows.items():
        labels = Counter(r["label"] for r in split_rows)
        assert 0 <= labels[1] - labels[0] <= 1
        chapters[split] = {_chapter(r["ref1"]) for r in split_rows} | {
            _chapter(r["ref2"]) for r in split_rows
        }
        assert len({r["ref1"] for r in split_rows}) == len(split_rows)  # one example per verse
    assert not chapters["train"] & chapters["validation"]
    assert not chapters["train"] & chapters["test"]
    assert not chapters["validation"] & chapters["test"]
    # the split depends on the chapter only: the same for another seed and under caps
    other = _bible_rows(seed=5, train=10, test=7)
    assert len(other["train"]) == 10 and len(other["test"]) == 7
    for split in rows:
        assert {_chapter(r["ref1"]) for r in other[split]} <= chapters[split]
    assert Counter(r["label"] for r in other["test"]) == {1: 4, 0: 3}
    assert _bible_rows() == rows  # deterministic
    assert _bible_rows(seed=1) != rows


def wordnet_table(n: int = 300) -> dict:
    rng = np.random.default_rng(3)
    lexnames = [standins.LEXNAMES[int(i)] for i in rng.integers(0, 45, n)]
    definitions = [f"{_sentence(rng)} number {i}" for i in range(n)]
    definitions[7] = definitions[8] = "a shared gloss"  # ambiguous: dropped
    return {
        "synset": [f"{i:08d}-n" for i in range(n)][::-1],  # file order must not matter
        "pos": ["n"] * n,
        "lexname": lexnames,
        "lemmas": ["x"] * n,
        "definition": definitions,
    }


def test_wordnet_rows_and_splits() -> None:
    assert len(standins.LEXNAMES) == len(set(standins.LEXNAMES)) == 45
    table = wordnet_table()
    label_of = dict(zip(table["definition"], table["lexname"], strict=True))
    rows = standins.wordnet_lex_rows(table, seed=0, n_train=None, n_val=40, n_test=50)
    assert [len(rows[s]) for s in ("train", "validation", "test")] == [298 - 90, 40, 50]
    synsets = {s: {r["synset"] for r in rows[s]} for s in rows}
    assert not synsets["train"] & synsets["test"]
    assert not synsets["validation"] & (synsets["train"] | synsets["test"])
    for split_rows in rows.values():
        for r in split_rows:
            assert standins.LEXNAMES[r["label"]] == label_of[r["sentence"]]
            assert r["sentence"] != "a shared gloss"
    shuffled = {k: v[::-1] for k, v in table.items()}  # row order of the file is irrelevant
    assert standins.wordnet_lex_rows(shuffled, seed=0, n_train=None, n_val=40, n_test=50) == rows
    capped = standins.wordnet_lex_rows(table, seed=0, n_train=30, n_val=40, n_test=50)
    assert len(capped["train"]) == 30 and capped["test"] == rows["test"]
    other = standins.wordnet_lex_rows(table, seed=1, n_train=None, n_val=40, n_test=50)
    assert other["test"] != rows["test"]
    with pytest.raises(ValueError, match="too few"):
        standins.wordnet_lex_rows(table, seed=0, n_train=None, n_val=200, n_test=100)


def test_stand_ins_on_the_bundled_corpora() -> None:
    bundled = pytest.importorskip("attnbench.data.bundled")
    try:
        wordnet, bible = bundled.read_table("wordnet"), bundled.read_table("bible")
    except ValueError as exc:  # not built in this checkout
        pytest.skip(str(exc))
    rows = standins.wordnet_lex_rows(
        wordnet.select_columns(["synset", "lexname", "definition"]).to_dict(),
        seed=0,
        n_train=2000,
        n_val=300,
        n_test=300,
    )
    assert len({r["label"] for r in rows["train"]}) > 40  # nearly every category
    columns = ["ref", "book", "chapter", "verse", "kjv", "web"]
    pairs = standins.bible_paraphrase_rows(
        bible.select_columns(columns).to_dict(),
        seed=0,
        val_fraction=0.1,
        test_fraction=0.1,
        max_distance=3,
        caps={"train": None, "validation": None, "test": None},
    )
    sizes = {split: len(r) for split, r in pairs.items()}
    assert sum(sizes.values()) > 30_000 and 2_000 < sizes["test"] < 4_500
    for split_rows in pairs.values():
        labels = Counter(r["label"] for r in split_rows)
        assert 0 <= labels[1] - labels[0] <= 1
        assert all((r["ref1"] == r["ref2"]) == (r["label"] == 1) for r in split_rows)
    chapters = {s: {_chapter(r["ref1"]) for r in pairs[s]} for s in pairs}
    assert not chapters["train"] & (chapters["validation"] | chapters["test"])


# ---------------------------------------------------------------------------------------
# End to end: prepare + run_job write a record with the metrics
# ---------------------------------------------------------------------------------------
def _write_parquet(table: dict, path: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), path)
    return str(path)


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("wordnet-lex", None),
        ("bible-paraphrase", "joint"),
        ("bible-paraphrase", "siamese"),
        ("stsb", "joint"),
        ("mnli", "joint"),
    ],
)
def test_end_to_end_record(name: str, encoding: str | None, tmp_path: Path) -> None:
    if name == "wordnet-lex":
        data = {"path": _write_parquet(wordnet_table(), tmp_path / "wn.parquet")}
        data |= {"n_val": 30, "n_test": 30, "n_train": 120}
    elif name == "bible-paraphrase":
        data = {"path": _write_parquet(bible_table(), tmp_path / "bible.parquet")}
        data |= {"val_fraction": 0.25, "test_fraction": 0.25}
    else:
        data = {"hf_path": "json", "data_files": write_glue_files(name, tmp_path / "src")}
    if encoding is not None:
        data["pair_encoding"] = encoding
    profile = validate_profile(
        {
            "profile": "tiny",
            "output_dir": str(tmp_path / "out"),
            "model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32},
            "train": {"steps": 6, "batch_size": 8, "eval_every": 3, "warmup_steps": 1},
            "tasks": {name: {"data": {**data, "vocab_size": 300, "max_length": 40}}},
            "analysis": {},
        }
    )
    prepare_data(profile, name, tmp_path / "data")
    record_file = tmp_path / "out" / "seed0.json"
    record = run_job(
        profile,
        name,
        "vanilla",
        0,
        data_dir=tmp_path / "data",
        record_file=record_file,
        progress=False,
    )
    assert record["status"] == "ok"
    assert json.loads(record_file.read_text())["metrics"] == record["metrics"]
    metric = get_task(name).metric
    assert record["metric"]["name"] == metric
    assert math.isfinite(record["metrics"]["test"][metric])
    assert metric in record["metrics"]["val"]
    assert record["metrics"]["baselines"]
    assert record["dataset"]["stand_in"] == (name in ("wordnet-lex", "bible-paraphrase"))
    assert record["task_info"]["data"]["vocab_size"] <= 300
    if name == "mnli":
        assert "accuracy_mismatched" in record["metrics"]["test"]
        extra = record_file.parent / record["artifacts"]["predictions_mismatched"]
        assert len(extra.read_text().splitlines()) == 17
    if name == "bible-paraphrase":  # the stand-in went through the GLUE-schema files
        assert (tmp_path / "data" / "source" / "test.parquet").exists()
    assert record["attention"]["available"]
    assert ("siamese" in record["dataset"]["description"]) == (encoding == "siamese")


def test_siamese_encoding_splits_each_pair_into_two_sequences(tmp_path: Path) -> None:
    files = write_glue_files("qqp", tmp_path / "src")
    data = {"hf_path": "json", "data_files": files, "vocab_size": 300}
    task = _task("qqp", **data, pair_encoding="siamese")
    task.prepare(tmp_path / "data")
    task.load(tmp_path / "data")
    tok = SubwordTokenizer.load(tmp_path / "data" / "tokenizer.json")
    rows = _rows(files["validation"])
    batch = next(task.batches("test", 6))
    assert set(batch.inputs) == {"ids_a", "ids_b", "padding_a", "padding_b"}
    for j, i in enumerate(batch.index.tolist()):
        for key, field in (("a", "question1"), ("b", "question2")):
            ids = batch.inputs[f"ids_{key}"][j][batch.inputs[f"padding_{key}"][j]].tolist()
            assert ids[0] == 1 and tok.decode(ids[1:]) == rows[i][field]
    assert batch.n_tokens == int(batch.inputs["padding_a"].sum() + batch.inputs["padding_b"].sum())
    # fixed-length variants: both padded to max_len
    task = type(task)(task.cfg, TaskSetup(pad_to=task.max_len()))
    task.load(tmp_path / "data")
    batch = next(task.batches("test", 6))
    assert batch.inputs["ids_a"].shape == batch.inputs["ids_b"].shape == (6, 128)
    # the same order and targets as the joint encoding
    joint = _task("qqp", **data)
    joint.load(tmp_path / "data")
    a = next(task.batches("train", 8, shuffle=True, epoch=2, seed=3))
    b = next(joint.batches("train", 8, shuffle=True, epoch=2, seed=3))
    assert a.index.tolist() == b.index.tolist() and a.targets.tolist() == b.targets.tolist()
    with pytest.raises(ValueError, match="needs a sentence-pair task"):
        _task("sst2", pair_encoding="siamese")
    with pytest.raises(ValueError, match="valid choices: joint, siamese"):
        _task("qqp", pair_encoding="cross")
