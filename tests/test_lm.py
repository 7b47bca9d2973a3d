"""Language modelling task: evaluation bookkeeping, metrics, recurrence, data paths, e2e."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from attnbench.attention import get_variant
from attnbench.config import validate_profile
from attnbench.job import task_setup
from attnbench.model import ModelConfig, ModelOutput
from attnbench.runner import prepare_data, run_job
from attnbench.tasks import lm
from attnbench.tasks.base import TaskSetup, make_data_config
from attnbench.text import BOS, SPECIALS, UNK, BPETokenizer, CharTokenizer

WORDS = [
    "the",
    "whale",
    "sea",
    "ship",
    "captain",
    "said",
    "and",
    "of",
    "to",
    "a",
    "in",
    "that",
    "his",
    "it",
    "was",
    "with",
    "Ahab",
    "her",
    "she",
    "Elizabeth",
    "Darcy",
    "letter",
    "morning",
    "house",
    "could",
    "would",
    "not",
    "be",
]


def write_novels(path: Path, books: int = 3, paragraphs: int = 60, seed: int = 0) -> Path:
    """A novels.parquet look-alike: author, title, position, text (one row per paragraph)."""
    rng = random.Random(seed)
    rows: dict[str, list] = {"author": [], "title": [], "position": [], "text": []}
    for b in range(books):
        order = list(range(paragraphs))
        rng.shuffle(order)  # rows out of reading order: the task must sort by position
        for pos in order:
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 20))]
            rows["author"].append(f"Author {b}")
            rows["title"].append(f"Book {b}")
            rows["position"].append(pos)
            rows["text"].append(f"[{b}:{pos}] " + " ".join(words) + ".")
    pq.write_table(pa.table(rows), path)
    return path


def novels_config(novels: Path, **kw) -> lm.LMData:
    values = {
        "source": "novels",
        "path": str(novels),
        "tokenizer": "char",
        "window": 16,
        "stride": 8,
        "max_train_chars": 6000,
        "max_val_chars": 600,
        "max_test_chars": 900,
    }
    return make_data_config(lm.LanguageModelling, values | kw)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny tensors on a shared machine are slower with more."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def novels(tmp_path_factory) -> Path:
    return write_novels(tmp_path_factory.mktemp("novels") / "novels.parquet")


@pytest.fixture(scope="module")
def prepared(novels: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm_data")
    lm.LanguageModelling(novels_config(novels)).prepare(out)
    return out


def loaded(
    prepared: Path, novels: Path, setup: TaskSetup | None = None, **kw
) -> lm.LanguageModelling:
    task = lm.LanguageModelling(novels_config(novels, **kw), setup)
    task.load(prepared)
    return task


class ZeroLM(nn.Module):
    """Logits all zero: the uniform distribution over the vocabulary."""

    causal = True

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, ids, key_padding=None, *, state=None, **kwargs) -> ModelOutput:
        return ModelOutput(torch.zeros(*ids.shape, self.vocab))


def tiny_model_cfg(window: int) -> ModelConfig:
    return ModelConfig(d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=window, dropout=0.0)


# ---------------------------------------------------------------------------------------
# Index bookkeeping
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n_tokens", "window", "stride"),
    [(100, 16, 8), (101, 16, 16), (97, 16, 1), (50, 16, 5), (17, 16, 8), (10, 16, 8), (2, 4, 2)],
)
def test_sliding_windows_score_every_token_once_with_enough_context(n_tokens, window, stride):
    plan = lm.sliding_windows(n_tokens, window, stride)
    scored = []
    for start, length, skip in plan:
        assert start >= 0 and start + length <= n_tokens - 1  # targets stay inside the stream
        assert 0 <= skip < length
        if n_tokens - 1 >= window:
            assert length == window  # fixed-length variants need no padding
        for offset in range(skip, length):
            position = start + offset + 1  # the target's position in the stream
            context = position - start  # earlier tokens this window shows the model
            assert context >= min(position, window - stride)
            scored.append(position)
    assert sorted(scored) == list(range(1, n_tokens))  # each token exactly once


@pytest.mark.parametrize(
    ("n_inputs", "segment", "warmup", "max_rows"),
    [(900, 8, 24, 64), (900, 8, 24, 1), (100, 4, 0, 8), (37, 8, 16, 8), (5000, 32, 160, 256)],
)
def test_recurrent_plan_scores_every_token_once_after_a_full_warmup(
    n_inputs, segment, warmup, max_rows
):
    plan = lm.recurrent_plan(n_inputs, segment, warmup, max_rows)
    assert 1 <= len(plan.starts) <= max_rows
    scored = []
    for b, (start, first) in enumerate(zip(plan.starts, plan.first, strict=True)):
        assert start % segment == 0  # the same segments as one pass over the stream
        assert first - start == (0 if b == 0 else warmup)
        end = min(start + plan.n_segments * segment, n_inputs)
        scored += range(first, end)
    assert sorted(scored) == list(range(n_inputs))


# ---------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------
def test_metrics_from_token_nlls_on_a_constructed_case() -> None:
    nll = np.array([math.log(2), math.log(2), 2 * math.log(2), math.log(8)], dtype=np.float32)
    m = lm.nll_metrics(nll, n_chars=3)  # 1 + 1 + 2 + 3 = 7 bits over 3 characters
    assert m["bpc"] == pytest.approx(7 / 3, rel=1e-6)
    assert m["nll"] == pytest.approx(7 * math.log(2) / 4, rel=1e-6)
    assert m["perplexity"] == pytest.approx(2 ** (7 / 4), rel=1e-6)


@pytest.mark.parametrize("recurrent", [False, True])
def test_uniform_model_scores_the_vocabulary_size(prepared, novels, recurrent) -> None:
    task = loaded(prepared, novels, TaskSetup(memory_len=8 if recurrent else 0, n_layers=2))
    assert task.recurrent == recurrent
    v = task.vocab_size()
    evaluation = task.evaluate(ZeroLM(v), "test", 7, torch.device("cpu"))
    metrics, predictions = evaluation.metrics, evaluation.predictions
    assert metrics["perplexity"] == pytest.approx(v, rel=1e-6)
    assert metrics["bpc"] == pytest.approx(math.log2(v), rel=1e-6)  # char level: 1 token = 1 char
    assert metrics["tokens"] == len(task.splits["test"]) - 1 == metrics["characters"]
    assert sum(p["tokens"] for p in predictions) == metrics["tokens"]


class FixedLengthZeroLM(ZeroLM):
    """A uniform model that, like a fixed-length variant, accepts only full-length inputs."""

    def forward(self, ids, key_padding=None, *, state=None, **kwargs) -> ModelOutput:
        assert ids.shape[1] == 16 and key_padding is not None
        return super().forward(ids)


def test_fixed_length_variants_get_padded_inputs_on_short_splits(prepared, novels) -> None:
    task = loaded(prepared, novels, TaskSetup(pad_to=16))
    task.splits["test"] = task.splits["test"][:10]  # 9 targets, shorter than a window
    v = task.vocab_size()
    metrics = task.evaluate(FixedLengthZeroLM(v), "test", 4, torch.device("cpu")).metrics
    assert metrics["tokens"] == 9 and metrics["perplexity"] == pytest.approx(v, rel=1e-6)
    batch = next(task.batches("test", 4))
    assert batch.inputs["ids"].shape == (1, 16) and batch.inputs["key_padding"][0].sum() == 9
    assert (batch.targets[0, 9:] == lm.IGNORE).all()
    loss, _ = task.loss(FixedLengthZeroLM(v), batch)
    assert float(loss) == pytest.approx(math.log(v), rel=1e-6)  # padding is not scored


def test_bpc_divides_bits_by_characters_not_tokens(tmp_path: Path) -> None:
    """Bytes ≠ characters: bpc of a uniform byte model is bytes · log2 V / characters."""
    rows = {
        "train": ["naïve café\n", " = Überschrift = \n"],
        "validation": ["smörgåsbord\n"],
        "test": [" = Ærø — façade = \n", "", " déjà vu ✓\n"],
    }
    files = write_wikitext_json(tmp_path, rows)
    cfg = make_data_config(
        lm.LanguageModelling,
        {"hf_path": "json", "hf_name": None, "data_files": files, "tokenizer": "byte"},
    )
    task = lm.LanguageModelling(cfg)
    task.prepare(tmp_path / "data")
    task.load(tmp_path / "data")
    text = "".join(rows["test"])
    n_bytes, n_chars, v = len(text.encode()), len(text), len(SPECIALS) + 256
    assert n_bytes > n_chars
    metrics = task.evaluate(ZeroLM(v), "test", 4, torch.device("cpu")).metrics
    assert metrics["tokens"] == n_bytes and metrics["characters"] == n_chars
    assert metrics["bpc"] == pytest.approx(n_bytes * math.log2(v) / n_chars, rel=1e-6)


def test_unigram_baseline_against_a_direct_count(prepared, novels) -> None:
    task = loaded(prepared, novels)
    train, test = task.splits["train"][1:], task.splits["test"][1:]
    v = task.vocab_size()
    counts = {i: 1 for i in range(v)}  # add-one smoothing
    for i in train.tolist():
        counts[i] += 1
    total = sum(counts.values())
    expected = math.exp(-sum(math.log(counts[i] / total) for i in test.tolist()) / len(test))
    base = task.baselines()
    assert base["unigram"] == pytest.approx(expected, rel=1e-5)
    assert base["uniform"] == v
    assert base["unigram"] < v


# ---------------------------------------------------------------------------------------
# Transformer-XL: recurrent evaluation and training
# ---------------------------------------------------------------------------------------
def xl_task(prepared, novels, recurrent: bool = True) -> tuple[lm.LanguageModelling, nn.Module]:
    """The LM task as built for Transformer-XL with an 8-token memory (``recurrent``), or
    as for a variant without one (the same model then reads sliding windows)."""
    spec, options, model_cfg = get_variant("transformer-xl"), {"mem_len": 8}, tiny_model_cfg(16)
    setup = task_setup(spec, options, model_cfg, None)
    assert setup.memory_len == 8 and setup.n_layers == 2  # declared by the variant
    if not recurrent:
        setup = dataclasses.replace(setup, memory_len=0)
    task = loaded(prepared, novels, setup)
    torch.manual_seed(0)
    model = task.build_model(model_cfg, spec, options)
    return task, model.eval()


def test_xl_evaluates_with_its_memory_and_reports_the_context(prepared, novels) -> None:
    task, model = xl_task(prepared, novels)
    cpu = torch.device("cpu")
    assert task.recurrent and task.segment_len == 8
    with_memory = task.evaluate(model, "test", 64, cpu)
    nll_memory = with_memory.extra["token_nll"]
    info = task.record_info(with_memory)["evaluation"]
    assert info["mode"] == "recurrent"
    assert info["memory_used"] == 8
    assert info["context_max_theoretical"] == 8 + 8 * 2  # segment + memory × layers
    # Batched rows with warm-up give exactly the scores of one pass over the split.
    one_row = task.evaluate(model, "test", 1, cpu).extra["token_nll"]
    np.testing.assert_allclose(one_row, nll_memory, rtol=1e-5, atol=1e-5)
    windows, _ = xl_task(prepared, novels, recurrent=False)  # the same model, sliding windows
    without = windows.evaluate(model, "test", 64, cpu)
    assert windows.record_info(without)["evaluation"]["mode"] == "sliding-window"
    perplexity = with_memory.metrics["perplexity"]
    assert perplexity != pytest.approx(without.metrics["perplexity"], rel=1e-4)


def test_a_token_reaches_later_segments_through_the_memory_and_no_further(prepared, novels):
    """Token q changes predictions beyond the window (p > q + L) only with recurrence, and
    then up to the segment that starts ``warmup_len`` after q's (the state's reach)."""
    task, model = xl_task(prepared, novels)
    cpu = torch.device("cpu")
    q, window, seg = 96, 16, 8  # q starts a segment: the farthest reach
    reach = task.warmup_len()
    assert reach == 16  # top memory: 8 layer-1 inputs, each from its segment + 8 memory
    original = task.splits["test"].copy()
    changed = original.copy()
    changed[q] = UNK if changed[q] != UNK else len(SPECIALS)

    windows, _ = xl_task(prepared, novels, recurrent=False)

    def nll(stream: np.ndarray, recurrent: bool) -> np.ndarray:
        reader = task if recurrent else windows
        reader.splits["test"] = stream
        # one row: a single pass over the split
        return reader.evaluate(model, "test", 1, cpu).extra["token_nll"]

    # NLL index i: the prediction from input position i (of token i + 1).
    with_memory = nll(original, True), nll(changed, True)
    without = nll(original, False), nll(changed, False)
    differs = ~np.isclose(*with_memory, rtol=0, atol=1e-6)
    assert not differs[: q - 1].any()  # the past is untouched (q − 1 predicts q itself)
    assert differs[q + reach : q + reach + seg].any()  # the last segment q reaches
    assert not differs[q + reach + seg :].any()  # ... and nothing after it
    # Every sliding window that shows q ends by input q + L − 1; the memory carries it on.
    assert differs[q + window :].any()
    np.testing.assert_allclose(without[0][q + window :], without[1][q + window :], atol=1e-6)


def test_xl_training_reads_each_window_as_two_segments_with_memory(prepared, novels) -> None:
    task, model = xl_task(prepared, novels)
    batch = next(task.batches("train", 4, shuffle=True, seed=1))
    recurrent_loss, _ = task.loss(model, batch)
    ids = batch.inputs["ids"]
    halves = [model(ids[:, :8]).logits, model(ids[:, 8:]).logits]  # no memory
    no_memory = torch.nn.functional.cross_entropy(
        torch.cat(halves, 1).flatten(0, 1), batch.targets.flatten()
    )
    assert not torch.isclose(recurrent_loss, no_memory)
    recurrent_loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------
# Data: HF path, novels, tokenizers, batches
# ---------------------------------------------------------------------------------------
def write_wikitext_json(folder: Path, rows: dict[str, list[str]]) -> dict[str, str]:
    files = {}
    for split, lines in rows.items():
        path = folder / f"wiki.{split}.jsonl"
        path.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
        files[split] = str(path)
    return files


WIKI = {
    "train": ["", " = Valkyria Chronicles = \n", "", " Senjō no Valkyria 3 is a game .\n"] * 3,
    "validation": ["", " = Tower Building = \n", "", " The building was built in 1917 .\n"],
    "test": ["", " = Robert Boulter = \n", "", " Robert Boulter is an English actor .\n"],
}


def test_wikitext_rows_from_local_files_through_the_hf_door(tmp_path: Path) -> None:
    files = write_wikitext_json(tmp_path, WIKI)
    cfg = make_data_config(
        lm.LanguageModelling,
        {"hf_path": "json", "hf_name": None, "data_files": files, "tokenizer": "char"},
    )
    task = lm.LanguageModelling(cfg)
    assert task.dataset_info().stand_in is False
    task.prepare(tmp_path / "data")
    task.load(tmp_path / "data")
    tok = lm.load_tokenizer(tmp_path / "data")
    meta = json.loads((tmp_path / "data" / lm.META_FILE).read_text())
    seen = set("".join(WIKI["train"]))  # the char vocabulary comes from the train split
    for split, hf_split in lm.HF_SPLITS.items():
        text = "".join(WIKI[hf_split])  # raw rows joined as they are
        stream = task.splits[split]
        assert stream[0] == BOS
        assert tok.decode(stream[1:]) == "".join(c if c in seen else "\ufffd" for c in text)
        assert meta["splits"][split]["characters"] == len(text)
        assert meta["splits"][split]["unknown"] == sum(c not in seen for c in text)
    assert meta["splits"]["test"]["unknown"] > 0


def test_real_wikitext_is_requested_by_its_hub_name(tmp_path: Path, monkeypatch) -> None:
    files = write_wikitext_json(tmp_path, WIKI)
    calls = []

    def fake(path, name=None, **kw):
        calls.append((path, name, kw))
        return lm_real_load("json", data_files=files)

    lm_real_load = lm.load_hf_dataset
    monkeypatch.setattr(lm, "load_hf_dataset", fake)
    cfg = make_data_config(
        lm.LanguageModelling,
        {"hf_name": "wikitext-2-raw-v1", "tokenizer": "byte", "max_test_chars": 20},
    )
    task = lm.LanguageModelling(cfg)
    rows = task.read_rows()
    assert calls == [("Salesforce/wikitext", "wikitext-2-raw-v1", {"data_files": None})]
    assert "".join(rows["test"]) == "".join(WIKI["test"])[:20]
    assert task.dataset_info().name == "wikitext-2-raw-v1"


# ---------------------------------------------------------------------------------------
# Word-level perplexity (WikiText)
# ---------------------------------------------------------------------------------------
def test_words_are_whitespace_tokens_plus_one_eos_per_line() -> None:
    # Counted by hand, as Merity et al.'s loader: line.split() + ["<eos>"] for every line.
    rows = WIKI["test"]  # "", " = Robert Boulter = \n", "", " Robert Boulter is ... .\n"
    assert [len(r.split()) for r in rows] == [0, 4, 0, 7]
    assert lm.count_words(rows) == (0 + 1) + (4 + 1) + (0 + 1) + (7 + 1) == 15
    assert lm.count_words(["a  b\tc\n", "d"]) == 4 + 2  # any whitespace; an <eos> per row


class FixedDistributionLM(nn.Module):
    """The same known distribution p over the vocabulary at every position."""

    causal = True

    def __init__(self, p: torch.Tensor) -> None:
        super().__init__()
        self.logp = p.log()

    def forward(self, ids, key_padding=None, *, state=None, **kwargs) -> ModelOutput:
        return ModelOutput(self.logp.expand(*ids.shape, -1).clone())


def wikitext_task(tmp_path: Path, **data) -> lm.LanguageModelling:
    files = write_wikitext_json(tmp_path, WIKI)
    values = {"hf_path": "json", "hf_name": None, "data_files": files, "tokenizer": "char"}
    cfg = make_data_config(lm.LanguageModelling, values | data)
    task = lm.LanguageModelling(cfg)
    task.prepare(tmp_path / "data")
    loaded = lm.LanguageModelling(cfg)
    loaded.load(tmp_path / "data")
    return loaded


def test_word_perplexity_is_the_total_nll_over_the_words(tmp_path: Path) -> None:
    task = wikitext_task(tmp_path)
    assert task.cfg.word_level is True and task.metric == "word_perplexity"
    assert lm.LanguageModelling.metric == "perplexity"  # the class default is per token
    meta = json.loads((tmp_path / "data" / lm.META_FILE).read_text())
    assert meta["splits"]["test"]["words"] == 15
    stream = task.splits["test"]
    v = task.vocab_size()
    p = torch.arange(1, v + 1, dtype=torch.float64)
    p /= p.sum()  # p(token i) = (i + 1) / Σ: the NLL of every target is known
    evaluation = task.evaluate(FixedDistributionLM(p.float()), "test", 4, torch.device("cpu"))
    m = evaluation.metrics
    total = -sum(math.log(p[i]) for i in stream[1:].tolist())  # by hand
    nll = evaluation.extra["token_nll"].astype(np.float64)
    assert nll.sum() == pytest.approx(total, rel=1e-5)
    assert m["n_words"] == 15 and m["tokens"] == len(stream) - 1
    assert m["word_perplexity"] == math.exp(nll.sum() / 15)  # exactly the definition
    assert m["perplexity"] == pytest.approx(math.exp(nll.sum() / m["tokens"]), rel=1e-12)
    assert "bpc" in m
    uniform = task.evaluate(ZeroLM(v), "test", 4, torch.device("cpu")).metrics
    tokens = len(stream) - 1
    assert uniform["word_perplexity"] == pytest.approx(v ** (tokens / 15), rel=1e-5)
    assert uniform["perplexity"] == pytest.approx(v, rel=1e-6)
    # baselines are in the primary metric's units: per word
    base = task.baselines()
    assert base["uniform"] == pytest.approx(v ** (tokens / 15), rel=1e-9)
    unigram = lm.nll_metrics(task._unigram_nll(), 1, 15)["word_perplexity"]
    assert base["unigram"] == unigram
    info = task.record_info()
    assert info["word_level"] is True and "<eos>" in info["words"]
    assert "per word" in task.dataset_info().description


def test_word_level_is_declared_by_the_data_config(tmp_path: Path, novels: Path) -> None:
    per_token = wikitext_task(tmp_path, word_level=False)
    assert per_token.metric == "perplexity"
    metrics = per_token.evaluate(ZeroLM(per_token.vocab_size()), "test", 4, torch.device("cpu"))
    assert "word_perplexity" not in metrics.metrics
    assert per_token.baselines()["uniform"] == per_token.vocab_size()
    assert lm.LanguageModelling(novels_config(novels)).metric == "perplexity"
    words = lm.LanguageModelling(novels_config(novels, word_level=True))
    assert words.metric == "word_perplexity" and words.cfg.word_level is True
    with pytest.raises(ValueError, match="word_level"):
        make_data_config(lm.LanguageModelling, {"word_level": "yes"})


def test_data_prepared_without_word_counts_must_be_prepared_again(tmp_path: Path) -> None:
    task = wikitext_task(tmp_path)
    path = tmp_path / "data" / lm.META_FILE
    meta = json.loads(path.read_text())
    del meta["splits"]["val"]["words"]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="prepare it again"):
        lm.LanguageModelling(task.cfg).load(tmp_path / "data")


def test_run_on_wikitext_records_word_perplexity_as_the_metric(tmp_path: Path) -> None:
    files = write_wikitext_json(tmp_path, WIKI)
    data = {"hf_path": "json", "hf_name": None, "data_files": files, "tokenizer": "char"}
    profile = lm_profile(tmp_path / "out", tmp_path)
    profile["tasks"]["lm"]["data"] = data | {"window": 16, "stride": 8}
    profile = validate_profile(profile)
    prepare_data(profile, "lm", tmp_path / "prepared")
    record = run_job(
        profile,
        "lm",
        "vanilla",
        0,
        data_dir=tmp_path / "prepared",
        record_file=tmp_path / "runs" / "seed0.json",
        progress=False,
    )
    assert record["status"] == "ok"
    assert record["metric"] == {"name": "word_perplexity", "higher_is_better": False}
    test = record["metrics"]["test"]
    assert test["n_words"] == 15 and {"perplexity", "bpc", "word_perplexity"} <= set(test)
    nll = np.load(tmp_path / "runs" / record["artifacts"]["token_nll"]).astype(np.float64)
    assert math.exp(nll.sum() / 15) == pytest.approx(test["word_perplexity"], rel=1e-9)
    tokens = test["tokens"]
    v = record["task_info"]["vocab_size"]
    assert record["metrics"]["baselines"]["uniform"] == pytest.approx(v ** (tokens / 15))


def test_novels_are_cut_per_book_into_contiguous_90_5_5_parts(novels: Path) -> None:
    table = pq.read_table(novels).to_pydict()
    uncapped = {s: None for s in lm.SPLITS}
    rows = lm.novel_rows(table, uncapped)
    for b in range(3):
        heading = f" = Book {b} = \n"
        positions = {}
        for split in lm.SPLITS:
            assert rows[split].count(heading) == 1  # every book in every split
            positions[split] = [
                int(r.split("]")[0].split(":")[1]) for r in rows[split] if r.startswith(f"[{b}:")
            ]
            assert positions[split] == sorted(positions[split])
        joined = positions["train"] + positions["val"] + positions["test"]
        assert joined == list(range(60))  # contiguous parts in reading order
        chars = {s: sum(len(r) for r in rows[s] if r.startswith(f"[{b}:")) for s in lm.SPLITS}
        assert 0.85 < chars["train"] / sum(chars.values()) < 0.95
    capped = lm.novel_rows(table, {"train": None, "val": 300, "test": 90})
    assert len("".join(capped["test"])) == 90
    assert all(sum(r.startswith(f" = Book {b}") for r in capped["test"]) for b in range(3))


def test_bundled_novels_give_every_book_to_every_split() -> None:
    cfg = make_data_config(
        lm.LanguageModelling,
        {"source": "novels", "tokenizer": "char", "max_val_chars": 5000, "max_test_chars": 5000},
    )
    task = lm.LanguageModelling(cfg)
    info = task.dataset_info()
    assert info.stand_in and info.source == "bundled"
    rows = task.read_rows()
    titles = {r for r in rows["test"] if r.startswith(" = ") and r.endswith(" = \n")}
    assert len(titles) == 10 and titles <= set(rows["val"])
    assert len("".join(rows["test"])) <= 5000


def test_char_tokenizer_round_trips_and_maps_unseen_characters_to_unk() -> None:
    text = "Ahab — «whale» ✓ naïve 🐳\n\tend"
    tok = CharTokenizer.train([text])
    ids = tok.encode(text)
    assert len(ids) == len(text) and ids.min() >= len(SPECIALS)
    assert tok.decode(ids) == text
    assert tok.vocab_size == len(SPECIALS) + len(set(text))
    assert tok.encode("Ahab!").tolist()[-1] == UNK


def test_bpe_tokenizer_is_saved_and_decodes_the_split(tmp_path: Path, novels: Path) -> None:
    task = lm.LanguageModelling(novels_config(novels, tokenizer="bpe", vocab_size=300))
    task.prepare(tmp_path)
    task.load(tmp_path)
    tok = lm.load_tokenizer(tmp_path)
    assert isinstance(tok, BPETokenizer) and tok.vocab_size <= 300
    rows = task.read_rows()
    assert tok.decode(task.splits["test"][1:]) == "".join(rows["test"])
    assert task.split_size("test") < len("".join(rows["test"]))  # subwords: fewer tokens


def test_training_batches_are_reproducible_windows_of_next_tokens(prepared, novels) -> None:
    task = loaded(prepared, novels)
    a = list(task.batches("train", 8, shuffle=True, epoch=3, seed=1))
    b = list(task.batches("train", 8, shuffle=True, epoch=3, seed=1))
    c = next(task.batches("train", 8, shuffle=True, epoch=4, seed=1))
    assert all(torch.equal(x.inputs["ids"], y.inputs["ids"]) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0].inputs["ids"], c.inputs["ids"])
    stream = torch.from_numpy(task.splits["train"])
    for batch in a:
        assert batch.inputs["ids"].shape[1] == 16
        assert batch.index is not None
        for row, start in enumerate(batch.index.tolist()):
            assert torch.equal(batch.inputs["ids"][row], stream[start : start + 16])
            assert torch.equal(batch.targets[row], stream[start + 1 : start + 17])


def test_bad_data_settings_fail_in_one_line() -> None:
    for values, word in [
        ({"tokenizer": "word"}, "char, byte, bpe"),
        ({"stride": 600}, "stride"),
        ({"source": "enwik8"}, "wikitext, novels"),
        ({"data_files": {"train": "x"}}, "validation"),
    ]:
        with pytest.raises(ValueError, match=word) as err:
            make_data_config(lm.LanguageModelling, values)
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------
# End to end through the runner
# ---------------------------------------------------------------------------------------
def lm_profile(out: Path, novels: Path) -> dict:
    return validate_profile(
        {
            "profile": "tinylm",
            "output_dir": str(out),
            "model": {"d_model": 16, "n_heads": 2, "n_layers": 2, "d_ff": 32},
            "train": {
                "steps": 4,
                "batch_size": 4,
                "eval_every": 2,
                "warmup_steps": 1,
                "eval_batch_size": 32,
            },
            "tasks": {"lm": {"data": {k: v for k, v in vars(novels_config(novels)).items()}}},
        }
    )


@pytest.fixture(scope="module")
def run_setup(novels: Path, tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("lm_runs")
    profile = lm_profile(root, novels)
    prepare_data(profile, "lm", root / "data")
    return profile, root / "data"


@pytest.mark.parametrize("variant", ["vanilla", "transformer-xl", "bigbird", "linformer"])
def test_run_job_writes_perplexity_bpc_and_token_nlls(tmp_path: Path, run_setup, variant) -> None:
    """Tiny e2e run; bigbird needs fixed-length inputs, linformer cannot be causal."""
    profile, data = run_setup
    out = tmp_path / "runs" / "seed0.json"
    record = run_job(
        profile, "lm", variant, 0, data_dir=data, record_file=out, progress=False, na_ok=True
    )
    if variant == "linformer":  # cannot mask the future
        assert record["status"] == "n/a" and "causal" in record["reason"]
        return
    assert record["status"] == "ok"
    test = record["metrics"]["test"]
    assert {"perplexity", "bpc", "nll"} <= set(test)
    nll = np.load(out.with_name(record["artifacts"]["token_nll"]))
    assert (
        len(nll)
        == test["tokens"]
        == json.loads((data / lm.META_FILE).read_text())["splits"]["test"]["tokens"]
    )
    assert math.exp(nll.astype(np.float64).mean()) == pytest.approx(test["perplexity"], rel=1e-9)
    assert nll.astype(np.float64).sum() / math.log(2) / test["characters"] == pytest.approx(
        test["bpc"], rel=1e-9
    )
    lines = out.with_name("seed0.predictions.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["nll_sum"] for line in lines) == pytest.approx(
        float(nll.astype(np.float64).sum()), rel=1e-9
    )
    mode = record["task_info"]["evaluation"]["mode"]
    assert mode == ("recurrent" if variant == "transformer-xl" else "sliding-window")
    assert record["metrics"]["baselines"]["uniform"] == record["task_info"]["vocab_size"]
