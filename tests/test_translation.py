"""Translation task: data paths, length rules, scoring against sacrebleu, one job end to end.

The hub path is exercised on local JSON Lines files in the IWSLT / WMT schema (rows
``{"translation": {"de": ..., "en": ...}}``) and the bundled path on a small synthetic
table with the bible's columns; nothing touches the network.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sacrebleu
import torch

from attnbench import ablation, metrics, records
from attnbench.attention import check_support, get_variant, variant_names
from attnbench.config import validate_profile
from attnbench.data import hf, parallel
from attnbench.job import task_setup
from attnbench.model import ModelConfig
from attnbench.runner import prepare_data, run_job
from attnbench.tasks import translation as tr

EN = "the lord said unto moses and people went into land of god king house water day children"
ES = "el señor dijo á moisés y pueblo fué en tierra de dios rey casa agua día hijos"
LEXICON = dict(zip(EN.split(), ES.split(), strict=True))
MAX_LENGTH = 64  # subwords; the tiny BPE below splits words into ~3 subwords


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread avoids OpenMP thrashing on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _sentence(rng: random.Random, lo: int = 3, hi: int = 9) -> tuple[str, str]:
    words = rng.choices(list(LEXICON), k=rng.randint(lo, hi))
    return " ".join(words).capitalize() + ".", " ".join(
        LEXICON[w] for w in words
    ).capitalize() + "."


def write_bible(path: Path, n_chapters: int = 120, verses: int = 4, seed: int = 0) -> Path:
    """A bible-like table: the bundled columns, word-for-word 'Spanish', a few gaps."""
    rng = random.Random(seed)
    rows: dict[str, list] = {c: [] for c in ("ref", "book", "book_index", "chapter", "verse")}
    rows |= {"kjv": [], "web": [], "rv1909": []}
    for c in range(n_chapters):
        book, chapter = ("Gen", "Exod")[c % 2], c // 2 + 1
        for v in range(1, verses + 1):
            en, es = _sentence(rng)
            rows["ref"].append(f"{book}.{chapter}.{v}")
            rows["book"].append(book)
            rows["book_index"].append(c % 2)
            rows["chapter"].append(chapter)
            rows["verse"].append(v)
            rows["kjv"].append(en)
            rows["web"].append(en)
            rows["rv1909"].append(None if len(rows["ref"]) % 17 == 0 else es)
    pq.write_table(pa.table(rows), path)
    return path


def write_hub_files(root: Path, src: str = "de", tgt: str = "en") -> dict[str, str]:
    """JSON Lines in the hub's translation schema, one file per hub split."""
    rng = random.Random(1)
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", 60), ("validation", 10), ("test", 12)):
        lines = []
        for i in range(n):
            en, es = _sentence(rng)
            lines.append({"translation": {tgt: en, src: es + f" {split}{i}"}})
        if split != "validation":  # one very long pair: dropped in train, kept in test
            en, es = _sentence(rng, 80, 80)
            lines.append({"translation": {tgt: en, src: es}})
        if split == "train":  # a line break inside a sentence and an empty side
            lines.append({"translation": {tgt: "Two\nlines.", src: "Zwei\n  Zeilen."}})
            lines.append({"translation": {tgt: "", src: "Leer."}})
        path = root / f"{split}.jsonl"
        path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
        files[split] = str(path)
    return files


def hub_config(files: dict[str, str], **kw) -> tr.TranslationData:
    values = dict(
        source="huggingface",
        hf_path="json",
        hf_name=None,
        data_files=files,
        vocab_size=300,
        max_length=MAX_LENGTH,
        max_len_b=3,  # untrained models rarely say EOS: keep the decoding budget short
    )
    return tr.TranslationData(**(values | kw))


@pytest.fixture(scope="module")
def hub_task(tmp_path_factory) -> tr.Translation:
    root = tmp_path_factory.mktemp("hub")
    task = tr.Translation(hub_config(write_hub_files(root / "raw")))
    task.prepare(root / "data")
    task.load(root / "data")
    return task


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------
def test_hub_rows_become_pairs_in_the_asked_direction(hub_task: tr.Translation) -> None:
    train = hub_task.splits["train"]
    sources = [p.source for p in train]
    assert [s.rsplit(" ", 1)[1] for s in sources[:60]] == [f"train{i}" for i in range(60)]
    assert "Zwei Zeilen." in sources  # whitespace runs (a newline too) became one space
    assert "Leer." not in sources  # a pair with an empty side is left out
    tok = hub_task.tokenizer
    assert tok is not None
    for pair in train:
        assert (
            tok.decode(pair.src_ids) == pair.source and tok.decode(pair.tgt_ids) == pair.reference
        )
    assert len(hub_task.splits["val"]) == 10


def test_long_pairs_are_dropped_from_training_but_kept_in_test(hub_task: tr.Translation) -> None:
    stats = hub_task.stats
    assert stats["train"]["dropped_too_long"] == 1
    train = hub_task.splits["train"]
    assert all(max(len(p.src_ids), len(p.tgt_ids)) <= MAX_LENGTH for p in train)
    test = hub_task.splits["test"]
    assert len(test) == 13 and stats["test"]["truncated_for_model"] == 1
    long = max(test, key=lambda p: len(p.reference))
    assert len(long.src_ids) == MAX_LENGTH  # the model sees a truncated source ...
    assert len(long.reference.split()) == 80  # ... the reference stays whole for BLEU


@pytest.mark.parametrize(
    ("kw", "call", "source_lang"),
    [
        ({}, ("iwslt2017", "iwslt2017-de-en"), "de"),
        (
            {"hf_path": "wmt16", "hf_name": "de-en", "src_lang": "en", "tgt_lang": "de"},
            ("wmt16", "de-en"),
            "en",
        ),
    ],
)
def test_real_benchmarks_are_read_through_load_hf_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kw: dict, call: tuple, source_lang: str
) -> None:
    """IWSLT 2017 De→En (default) and WMT16 En→De: the hub call, then the same conversion."""
    files = write_hub_files(tmp_path / "raw", src="de", tgt="en")
    real_loader = hf.load_hf_dataset
    calls = []

    def fake_hub(path, name=None, **kwargs):  # the hub, served from local files
        calls.append((path, name))
        return real_loader("json", data_files=files)

    monkeypatch.setattr(hf, "load_hf_dataset", fake_hub)
    task = tr.Translation(tr.TranslationData(vocab_size=300, max_length=MAX_LENGTH, **kw))
    task.prepare(tmp_path / "data")
    task.load(tmp_path / "data")
    assert calls == [call]
    first = task.splits["test"][0]
    german = first.source if source_lang == "de" else first.reference
    assert german.endswith("test0")  # the German side carries the marker
    assert task.dataset_info().stand_in is False


def test_missing_language_is_a_one_line_error(tmp_path: Path) -> None:
    files = write_hub_files(tmp_path / "raw")
    task = tr.Translation(hub_config(files, src_lang="fr"))
    with pytest.raises(ValueError, match=r"languages de, en; need src_lang='fr'") as info:
        task.prepare(tmp_path / "data")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"source": "web"}, "valid choices: huggingface, bundled"),
        (
            {"source": "bundled", "src_lang": "de", "tgt_lang": "en"},
            "the bundled bible has: en, es",
        ),
        ({"src_lang": "en", "tgt_lang": "en"}, "are both 'en'"),
        ({"vocab_size": 100}, "vocab_size must exceed 263"),
        ({"n_test": 0}, "n_test must be positive"),
        ({"label_smoothing": 1.0}, "label_smoothing must be in"),
    ],
)
def test_bad_data_config_is_a_one_line_error(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tr.TranslationData(**kw)


def test_bible_is_split_by_chapter(tmp_path: Path) -> None:
    bible = write_bible(tmp_path / "bible.parquet")
    table = hf.load_hf_dataset("parquet", data_files=str(bible), split="train")
    files = parallel.bible_to_translation_rows(table, tmp_path / "rows")
    chapter_split: dict[str, str] = {}
    n_rows = 0
    for hf_split, file in files.items():
        for line in Path(file).read_text().splitlines():
            row = json.loads(line)
            chapter = row["ref"].rsplit(".", 1)[0]
            assert chapter_split.setdefault(chapter, hf_split) == hf_split  # never straddles
            assert set(row["translation"]) == {"en", "es"}
            n_rows += 1
    assert n_rows == 480 - 480 // 17  # rows without Spanish are left out
    assert set(chapter_split.values()) == {"train", "validation", "test"}
    # Over many chapters the hash buckets give ≈ 5 % / 5 % / 90 %.
    keys = [(f"B{b}", c) for b in range(66) for c in range(1, 31)]
    share = {
        s: sum(parallel.bible_chapter_split(*k) == s for k in keys) / len(keys)
        for s in parallel.SPLITS
    }
    assert abs(share["test"] - 0.05) < 0.015 and abs(share["val"] - 0.05) < 0.015
    digest = hashlib.sha256(b"Gen.1").digest()  # the documented rule, recomputed
    bucket = int.from_bytes(digest[:4], "big") % 1000
    expected = "test" if bucket < 50 else "val" if bucket < 100 else "train"
    assert parallel.bible_chapter_split("Gen", 1) == expected


def test_caps_take_a_stable_sample_in_corpus_order() -> None:
    a = parallel.stable_sample(1000, 50, "test")
    assert a == parallel.stable_sample(1000, 50, "test") and a == sorted(a) and len(set(a)) == 50
    assert a != parallel.stable_sample(1000, 50, "val")
    assert max(a) > 500  # spread over the split, not its first rows
    assert parallel.stable_sample(10, None, "x") == list(range(10))


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------
def _noisy_corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    hyps, refs = [], []
    for _ in range(n):
        _, ref = _sentence(rng, 6, 14)
        words = ref.split()
        hyp = [w if rng.random() < 0.7 else rng.choice(ES.split()) for w in words]
        hyps.append(" ".join(hyp[: max(1, len(hyp) - rng.randint(0, 2))]))
        refs.append(ref)
    return hyps, refs


def test_scores_and_signatures_are_sacrebleus() -> None:
    hyps, refs = _noisy_corpus(60)
    scores = metrics.score_translations(hyps, refs, bootstrap=0)
    assert scores["bleu"] == sacrebleu.corpus_bleu(hyps, [refs]).score
    assert scores["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert scores["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|")
    assert scores["chrf_signature"].endswith(f"version:{sacrebleu.__version__}")
    assert "bleu_ci_low" not in scores


def test_bootstrap_interval_matches_sacrebleus_own_resampling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SACREBLEU_SEED", raising=False)  # sacrebleu's default seed, 12345
    hyps, refs = _noisy_corpus(80)
    for metric_cls in (sacrebleu.BLEU, sacrebleu.CHRF):
        reference = metric_cls().corpus_score(hyps, [refs], n_bootstrap=300)
        low, high = metrics.bootstrap_interval(metric_cls(), hyps, refs, 300, 12345)
        # sacrebleu reports the same order statistics as mean ± half-width
        assert (high - low) / 2 == pytest.approx(reference._ci, abs=1e-9)


def test_bootstrap_interval_contains_the_score_and_narrows_with_more_sentences() -> None:
    widths = []
    for n in (40, 640):
        hyps, refs = _noisy_corpus(n, seed=n)
        scores = metrics.score_translations(hyps, refs, bootstrap=300, seed=7)
        for key in ("bleu", "chrf"):
            assert scores[f"{key}_ci_low"] <= scores[key] <= scores[f"{key}_ci_high"]
        widths.append(scores["bleu_ci_high"] - scores["bleu_ci_low"])
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(n): 16× the sentences, ~1/4 the width


# ---------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------
def _check_variant(task: tr.Translation, name: str) -> None:
    spec = get_variant(name)
    reason = check_support(spec.capabilities, task.requirements())
    if reason is not None:
        assert not spec.capabilities.causal  # the decoder's need; nothing else is required
        return
    cfg = ModelConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=task.max_len())
    options = spec.resolved_options()
    # the task as attnbench.job.build_job builds it for this variant, reference vanilla
    data_dir = task.data_dir
    assert data_dir is not None
    task = tr.Translation(task.cfg, task_setup(spec, options, cfg, "vanilla"))
    assert task.setup.pad_to == (None if spec.capabilities.variable_length else task.max_len())
    task.load(data_dir)
    torch.manual_seed(0)
    model = task.build_model(cfg, spec, options)
    expected_cross = name if spec.capabilities.cross_attention else "vanilla"
    assert task.record_info()["cross_attention"] == expected_cross
    batch = next(task.batches("train", 4, shuffle=True))
    pad_to = task.setup.pad_to
    if pad_to is not None:
        assert batch.inputs["src"].shape[1] == batch.inputs["tgt"].shape[1] == pad_to
    loss, _ = task.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    # Decoding runs the decoder on prefixes: a prefix must score as in the whole sequence.
    inputs, t = batch.inputs, 3
    with torch.no_grad():
        memory = model.encode(inputs["src"], inputs["src_padding"]).hidden
        full = model.decode(inputs["tgt"], memory, inputs["src_padding"], inputs["tgt_padding"])
        prefix, prefix_padding = inputs["tgt"][:, :t], None
        if pad_to is not None:
            prefix = torch.nn.functional.pad(prefix, (0, pad_to - t))
            prefix_padding = (torch.arange(pad_to) < t).expand_as(prefix)
        part = model.decode(prefix, memory, inputs["src_padding"], prefix_padding)
    real = inputs["tgt_padding"][:, :t]
    assert torch.allclose(part.logits[:, :t][real], full.logits[:, :t][real], atol=1e-4)
    hyps = task.translate(model, "val", 8, torch.device("cpu"), beam_size=2)
    assert len(hyps) == len(task.splits["val"])
    analysis = task.attention_analysis(model, torch.device("cpu"))
    assert "available" in analysis


@pytest.mark.parametrize(
    "name", ["vanilla", "bigbird", "transformer-xl", "tupe", "linear", "linformer"]
)
def test_representative_variants_train_and_decode(hub_task: tr.Translation, name: str) -> None:
    """Fixed-length (bigbird), own positions (tupe, transformer-xl), linear, non-causal."""
    _check_variant(hub_task, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", variant_names())
def test_every_variant_trains_and_decodes_or_is_na(hub_task: tr.Translation, name: str) -> None:
    _check_variant(hub_task, name)


def test_attention_analysis_covers_encoder_and_decoder(hub_task: tr.Translation) -> None:
    spec = get_variant("vanilla")
    model = hub_task.build_model(
        ModelConfig(d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=hub_task.max_len()),
        spec,
        {},
    )
    result = hub_task.attention_analysis(model, torch.device("cpu"))
    assert result["available"] and len(result["layers"]) == len(result["decoder_layers"]) == 2


# ---------------------------------------------------------------------------------------
# One job end to end
# ---------------------------------------------------------------------------------------
def test_job_writes_scores_that_sacrebleu_recomputes_from_the_saved_files(
    tmp_path: Path,
) -> None:
    bible = write_bible(tmp_path / "bible.parquet")
    data = {
        "source": "bundled",
        "bible_file": str(bible),
        "src_lang": "en",
        "tgt_lang": "es",
        "vocab_size": 300,
        "max_length": 40,
        "n_val": 8,
        "n_test": 12,
        "beam_size": 2,
        "max_len_b": 3,
        "bootstrap": 200,
    }
    profile = validate_profile(
        {
            "profile": "tiny",
            "output_dir": str(tmp_path),
            "model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32},
            "train": {"steps": 6, "batch_size": 8, "eval_every": 3, "warmup_steps": 1},
            "tasks": {"translation": {"data": data}},
        }
    )
    data_dir = tmp_path / "data"
    prepare_data(profile, "translation", data_dir)
    record_file = tmp_path / "runs" / "seed0.json"
    record = run_job(
        profile,
        "translation",
        "vanilla",
        0,
        data_dir=data_dir,
        record_file=record_file,
        progress=False,
    )
    assert records.validate_record(record) is None and record["status"] == "ok"
    assert record["dataset"]["name"] == "bible-en-es" and record["dataset"]["stand_in"]
    test = record["metrics"]["test"]
    assert test["bleu_ci_low"] <= test["bleu"] <= test["bleu_ci_high"]
    assert test["chrf_ci_low"] <= test["chrf"] <= test["chrf_ci_high"]
    assert "loss" in record["metrics"]["val"] and "bleu" not in record["metrics"]["val"]
    losses = [h["train_loss"] for h in record["history"]]
    assert losses[-1] < losses[0]

    folder = record_file.parent
    art = record["artifacts"]
    hyp_file, ref_file = folder / art["hypotheses"], folder / art["references"]
    assert hyp_file.name == "seed0.hyp.txt" and (folder / art["sources"]).name == "seed0.src.txt"
    hyps = hyp_file.read_text().split("\n")[:-1]
    refs = ref_file.read_text().split("\n")[:-1]
    assert len(hyps) == len(refs) == 12
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    assert test["bleu"] == bleu.corpus_score(hyps, [refs]).score
    assert test["chrf"] == chrf.corpus_score(hyps, [refs]).score
    assert test["bleu_signature"] == str(bleu.get_signature())
    assert test["chrf_signature"] == str(chrf.get_signature())
    cli = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref_file), "-i", str(hyp_file), "-b", "-w", "6"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(cli.stdout) == pytest.approx(test["bleu"], abs=1e-6)

    info = record["task_info"]
    assert info["cross_attention"] == "vanilla" and info["decoding"]["beam_size"] == 2
    tokenizer = Path(info["tokenizer"]["file"])
    assert tokenizer == data_dir / "tokenizer.json"
    assert hashlib.sha256(tokenizer.read_bytes()).hexdigest() == info["tokenizer"]["sha256"]
    assert list(folder.glob("*.json")) == [record_file]  # no artifact looks like a record

    # The saved checkpoint reproduces the test score (what head ablation checks), and a
    # head mask of ones changes nothing.
    _, task, model = ablation.load_trained(record_file, data_dir)
    scores = task.evaluate(model, "test", 16, torch.device("cpu")).metrics
    assert scores["bleu"] == test["bleu"]
    ones = torch.ones(1, 2)
    masked = task.evaluate(model, "test", 16, torch.device("cpu"), head_mask=ones).metrics
    assert masked["bleu"] == test["bleu"]


# ---------------------------------------------------------------------------------------
# Token-based batches (data.max_tokens)
# ---------------------------------------------------------------------------------------
def _lengths(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    src = [rng.randint(2, 60) for _ in range(n)]
    return src, [max(2, s + rng.randint(-8, 8)) for s in src]


@pytest.mark.parametrize("max_tokens", [130, 400, 2000])
def test_token_batches_stay_within_budget_and_cover_each_pair_once(max_tokens: int) -> None:
    src, tgt = _lengths(700)
    for epoch in (0, 1, 2):
        groups = parallel.token_batches(src, tgt, max_tokens, epoch=epoch, seed=7)
        assert sorted(i for g in groups for i in g) == list(range(700))  # each exactly once
        for g in groups:  # padded source + target positions, as defined
            assert len(g) * (max(src[i] for i in g) + max(tgt[i] for i in g)) <= max_tokens
            assert parallel.batch_cost(src, tgt, g) <= max_tokens
        # deterministic: a pure function of the lengths, the budget, seed and epoch
        assert groups == parallel.token_batches(src, tgt, max_tokens, epoch=epoch, seed=7)
    epoch0 = parallel.token_batches(src, tgt, max_tokens, epoch=0, seed=7)
    assert epoch0 != parallel.token_batches(src, tgt, max_tokens, epoch=1, seed=7)
    assert epoch0 != parallel.token_batches(src, tgt, max_tokens, epoch=0, seed=8)


def test_token_batches_are_length_sorted_full_and_in_random_order() -> None:
    src, tgt = _lengths(2000, seed=1)
    groups = parallel.token_batches(src, tgt, 1000, epoch=0, seed=0)
    real = sum(src) + sum(tgt)
    padded = sum(parallel.batch_cost(src, tgt, g) for g in groups)
    assert padded < 1.15 * real  # sorted by length: little padding
    assert real / len(groups) > 0.8 * 1000  # batches filled close to the budget
    firsts = [min(src[i] for i in g) for g in groups]
    assert firsts != sorted(firsts)  # drawn in a shuffled order, not short to long
    with pytest.raises(ValueError, match="below the 62 positions of example"):
        parallel.token_batches([2, 30], [4, 32], 40)


def test_translation_trains_on_token_batches_the_same_for_every_variant(tmp_path: Path) -> None:
    files = write_hub_files(tmp_path / "raw")
    cfg = hub_config(files, max_tokens=600)
    task = tr.Translation(cfg)
    task.prepare(tmp_path / "data")
    task.load(tmp_path / "data")
    train = task.splits["train"]

    def draw(t: tr.Translation, epoch: int) -> list[list[int]]:
        batches = list(t.batches("train", 8, shuffle=True, epoch=epoch, seed=3))
        for b in batches:
            if t.setup.pad_to is None:  # the budget counts the padded source + target
                assert b.inputs["src"].numel() + b.inputs["tgt"].numel() <= 600
        return [b.index.tolist() for b in batches]

    first = draw(task, 0)
    assert sorted(i for idx in first for i in idx) == list(range(len(train)))
    assert any(len(idx) != 8 for idx in first)  # sized by tokens, not by train.batch_size
    assert first == draw(task, 0) and first != draw(task, 1)
    fixed = tr.Translation(cfg, tr.TaskSetup(pad_to=task.max_len()))  # a fixed-length variant
    fixed.load(tmp_path / "data")
    assert draw(fixed, 0) == first  # the same pairs, only padded differently
    assert [len(b.targets) for b in task.batches("val", 4)] == [4, 4, 2]  # eval: sentences
    assert "600 source + target positions" in task.record_info()["training_batches"]
    with pytest.raises(ValueError, match=r"max_tokens=100 cannot hold one pair"):
        hub_config(files, max_tokens=100)


def test_token_batched_run_with_averaging_resumes_to_the_same_model(tmp_path: Path) -> None:
    """Killed mid-run and resumed from its checkpoint, a token-batched run with checkpoint
    averaging ends with the parameters and scores of an uninterrupted one."""
    from attnbench.train import Resume, TrainConfig, train

    class Killed(BaseException):
        pass

    files = write_hub_files(tmp_path / "raw")
    task = tr.Translation(hub_config(files, max_tokens=500, bootstrap=0))
    task.prepare(tmp_path / "data")
    task.load(tmp_path / "data")
    cfg = TrainConfig(
        steps=8, eval_every=2, checkpoint_every=3, warmup_steps=1, average_checkpoints=3
    )
    spec = get_variant("vanilla")
    mcfg = ModelConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=task.max_len())

    def run(resume: Resume | None) -> tuple[dict, object]:
        torch.manual_seed(0)
        model = task.build_model(mcfg, spec, {})
        result = train(task, model, cfg, seed=0, device=torch.device("cpu"), progress=False,
                       resume=resume)  # fmt: skip
        return model.state_dict(), result

    reference_state, reference = run(None)
    resume = Resume(tmp_path / "run.resume.pt", {"config_hash": "x", "seed": 0}, log=lambda m: None)
    calls = [0]
    original = tr.Translation.loss

    def loss(self, model, batch):
        calls[0] += 1
        if calls[0] == 6:  # after the checkpoint at step 4 (an eval) and before step 6's
            raise Killed
        return original(self, model, batch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tr.Translation, "loss", loss)
        with pytest.raises(Killed):
            run(resume)
    assert resume.path.exists()
    state, result = run(resume)
    assert resume.resumed_from == [4]
    assert all(torch.equal(state[k], reference_state[k]) for k in reference_state)
    assert result.test == reference.test and result.val == reference.val
    assert result.best_step == reference.best_step == 8
    info = result.test_evaluation.info
    assert info["averaged_steps"] == [4, 6, 8] and info["average_checkpoints"] == 3
