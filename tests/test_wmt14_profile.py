"""config/wmt14.yaml, the Transformer-base WMT14 En→De protocol: the workflow schedules it,
and its translation protocol runs end to end at toy sizes on the hub-layout WMT14 copy in
``tests/fixtures/`` (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import huggingface_hub
import pytest
import sacrebleu
import torch
import yaml
from test_workflow import job_counts, snakemake, workdir  # noqa: F401  (workdir: a fixture)

from attnbench import ablation, records
from attnbench.config import load_profile, validate_profile
from attnbench.runner import prepare_data, run_job

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / "wmt14.yaml"


def test_wmt14_profile_is_the_papers_setting() -> None:
    profile = load_profile(PROFILE)
    data = profile["tasks"]["translation"]["data"]
    assert (data["hf_path"], data["hf_name"], data["src_lang"], data["tgt_lang"]) == (
        "wmt14", "de-en", "en", "de"
    )  # fmt: skip
    base = {"d_model": 512, "n_heads": 8, "n_layers": 6, "d_ff": 2048, "norm_first": False}
    assert profile["model"].items() >= base.items()
    assert profile["train"]["average_checkpoints"] == 5 and data["max_tokens"] == 50_000
    run_it = "#   run it:   snakemake --cores all --configfile config/wmt14.yaml"
    assert run_it in PROFILE.read_text().splitlines()[:5]  # the header says how to run it


def test_wmt14_profile_dry_run(workdir: Path) -> None:  # noqa: F811
    proc = snakemake(workdir, "-n", "--configfile", "config/wmt14.yaml")
    counts = job_counts(proc.stdout)
    assert counts["prepare_data"] == 1 and counts["train"] == counts["bench"] > 1


def test_wmt14_profile_runs_end_to_end_on_the_hub_layout_fixture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config/wmt14.yaml's translation protocol (token batches, the last checkpoints
    averaged, beam search) at toy sizes, reading the WMT14 fixture laid out as the hub's
    wmt/wmt14 repository, offline; the record says which parameters were tested."""
    root = ROOT
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    raw = yaml.safe_load(PROFILE.read_text())
    data = raw["tasks"]["translation"]["data"]
    data |= {
        "hf_path": str(root / "tests" / "fixtures" / "hf" / "wmt" / "wmt14"),
        "vocab_size": 300,
        "max_length": 64,
        "max_tokens": 400,
        "beam_size": 2,
        "max_len_b": 3,
        "bootstrap": 0,
    }
    raw |= {"output_dir": str(tmp_path), "device": "cpu", "threads": 1, "offline": True}
    raw["variants"] = {"include": ["vanilla"]}
    raw["model"] |= {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32}
    raw["train"] |= {"steps": 6, "warmup_steps": 2, "eval_every": 2, "average_checkpoints": 2}
    profile = validate_profile(raw)
    data_dir = tmp_path / "data"
    prepare_data(profile, "translation", data_dir)
    stats = json.loads((data_dir / "stats.json").read_text())
    assert {s: stats[s]["available"] for s in ("train", "val", "test")} == {
        "train": 40, "val": 6, "test": 8
    }  # fmt: skip
    record_file = tmp_path / "runs" / "seed0.json"
    record = run_job(
        profile, "translation", "vanilla", 0, data_dir=data_dir, record_file=record_file,
        progress=False,
    )  # fmt: skip
    assert records.validate_record(record) is None and record["status"] == "ok"
    assert record["dataset"]["stand_in"] is False and record["dataset"]["name"] == "de-en"
    assert record["config"]["train"]["average_checkpoints"] == 2
    evaluation = record["task_info"]["evaluation"]
    assert (
        evaluation["averaged_steps"] == [4, 6]
        and "average of the last 2" in (evaluation["checkpoint"])
    )
    assert record["metrics"]["best_step"] == 6
    assert "at most 400 source + target positions" in record["task_info"]["training_batches"]
    test = record["metrics"]["test"]
    bleu = sacrebleu.BLEU()
    bleu.corpus_score(["a"], [["a"]])  # the signature is known once something is scored
    assert test["bleu_signature"] == str(bleu.get_signature())  # 13a, detokenized, as ever
    # the saved checkpoint is the averaged model: it reproduces the test score
    _, task, model = ablation.load_trained(record_file, data_dir)
    assert task.evaluate(model, "test", 16, torch.device("cpu")).metrics["bleu"] == test["bleu"]
