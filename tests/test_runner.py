"""One job end to end in-process: records, determinism, n/a pairs, data checks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from attn_cases import tiny_profile

from attnbench import records
from attnbench.attention import VARIANTS, Capabilities, register_variant
from attnbench.config import validate_profile
from attnbench.runner import JobError, prepare_data, run_job
from attnbench.variants.vanilla import Vanilla

VOLATILE = {
    "wall_time_s",
    "train_time_s",
    "eval_time_s",
    "tokens_per_s",
    "peak_memory_bytes",
    "started_at",
    "finished_at",
    "_path",
}


def tiny(out: Path) -> dict:
    return validate_profile(tiny_profile(out))


@pytest.fixture
def prepared(tmp_path: Path) -> tuple[dict, Path]:
    profile = tiny(tmp_path)
    data = tmp_path / "data"
    prepare_data(profile, "listops", data)
    return profile, data


def _train(profile: dict, data: Path, out: Path, **kw) -> dict:
    return run_job(
        profile, "listops", "vanilla", 0, data_dir=data, record_file=out, progress=False, **kw
    )


def test_record_is_complete_and_identical_for_the_same_seed(prepared, tmp_path: Path) -> None:
    profile, data = prepared
    a = _train(profile, data, tmp_path / "a" / "seed0.json")
    b = _train(profile, data, tmp_path / "b" / "seed0.json")
    assert records.validate_record(a) is None
    for key in (
        "task",
        "variant",
        "seed",
        "profile",
        "metrics",
        "n_params",
        "wall_time_s",
        "tokens_per_s",
        "peak_memory_bytes",
        "device",
        "git_commit",
        "config_hash",
        "versions",
        "status",
        "config",
        "state_bytes",
        "task_averages",
    ):
        assert key in a, key
    assert a["status"] == "ok" and a["n_params"] > 0 and a["tokens_per_s"] > 0
    assert a["state_bytes"] is None and a["state_bytes_per_layer"] is None  # softmax: no state
    assert a["versions"]["torch"] == torch.__version__
    # Same seed → identical records apart from timings.
    on_disk_a = records.read_record(tmp_path / "a" / "seed0.json")
    on_disk_b = records.read_record(tmp_path / "b" / "seed0.json")
    strip = lambda r: {k: v for k, v in r.items() if k not in VOLATILE}  # noqa: E731
    assert strip(on_disk_a) == strip(on_disk_b)
    assert strip(a) == strip(b)
    # The artifacts written beside the record.
    predictions = (tmp_path / "a" / "seed0.predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 16
    accuracy = sum(json.loads(p)["prediction"] == json.loads(p)["target"] for p in predictions) / 16
    assert accuracy == pytest.approx(a["metrics"]["test"]["accuracy"])
    state = torch.load(tmp_path / "a" / "seed0.best.pt", weights_only=True)
    assert "model" in state


def test_different_seed_changes_the_run(prepared, tmp_path: Path) -> None:
    profile, data = prepared
    a = _train(profile, data, tmp_path / "a.json")
    b = run_job(
        profile,
        "listops",
        "vanilla",
        1,
        data_dir=data,
        record_file=tmp_path / "b.json",
        progress=False,
    )
    assert a["history"] != b["history"]


def test_unsupported_pair_gives_na_record_or_error(prepared, tmp_path: Path) -> None:
    profile, data = prepared

    @register_variant("nopad-test", paper="(test)")
    class NoPad(Vanilla):
        capabilities = Capabilities(padding_mask=False)

    try:
        with pytest.raises(JobError, match=r"cannot run task 'listops'.*padding"):
            run_job(
                profile,
                "listops",
                "nopad-test",
                0,
                data_dir=data,
                record_file=tmp_path / "x.json",
                progress=False,
            )
        assert not (tmp_path / "x.json").exists()
        record = run_job(
            profile,
            "listops",
            "nopad-test",
            0,
            data_dir=data,
            record_file=tmp_path / "x.json",
            na_ok=True,
            progress=False,
        )
        assert record["status"] == "n/a" and "padding" in record["reason"]
        assert records.read_record(tmp_path / "x.json")["status"] == "n/a"
    finally:
        VARIANTS._entries.pop("nopad-test", None)
        VARIANTS._origins.pop("nopad-test", None)


def test_unprepared_or_mismatched_data_is_a_clear_error(prepared, tmp_path: Path) -> None:
    profile, data = prepared
    with pytest.raises(JobError, match="not prepared"):
        _train(profile, tmp_path / "nowhere", tmp_path / "r.json")
    other = json.loads(json.dumps(profile))
    other["tasks"]["listops"]["data"]["n_train"] = 40
    with pytest.raises(JobError, match="other settings"):
        _train(validate_profile(other), data, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_cuda_requested_without_gpu(prepared, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    profile, data = prepared
    profile = {**profile, "device": "cuda"}
    with pytest.raises(JobError, match="no CUDA GPU"):
        _train(profile, data, tmp_path / "r.json")


def test_cli_train_writes_the_record_and_leaderboard(prepared, tmp_path: Path) -> None:
    profile, data = prepared
    profile_file = tmp_path / "tiny.json"
    profile_file.write_text(json.dumps(profile))
    out = tmp_path / "runs" / "seed0.json"
    cli = [sys.executable, "-m", "attnbench.cli"]
    proc = subprocess.run(
        [
            *cli,
            "train",
            "--profile",
            str(profile_file),
            "--task",
            "listops",
            "--variant",
            "vanilla",
            "--data",
            str(data),
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout
    assert records.read_record(out)["status"] == "ok"
    md, csv = tmp_path / "lb.md", tmp_path / "lb.csv"
    proc = subprocess.run(
        [*cli, "leaderboard", "--runs", str(tmp_path / "runs"), "--md", str(md), "--csv", str(csv)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "`vanilla`" in md.read_text()


def test_fixed_length_variant_gets_batches_padded_to_max_len(prepared, tmp_path: Path) -> None:
    profile, data = prepared
    seen: list[int] = []

    @register_variant("fixedlen-test", paper="(test)")
    class FixedLength(Vanilla):
        capabilities = Capabilities(variable_length=False)

        def attend(self, q, k, v, ctx):
            seen.append(k.shape[-2])
            return super().attend(q, k, v, ctx)

    try:
        record = run_job(
            profile,
            "listops",
            "fixedlen-test",
            0,
            data_dir=data,
            record_file=tmp_path / "f.json",
            progress=False,
        )
        assert record["status"] == "ok"
        assert set(seen) == {record["config"]["model"]["max_len"]}
    finally:
        VARIANTS._entries.pop("fixedlen-test", None)
        VARIANTS._origins.pop("fixedlen-test", None)


def test_attention_statistics_on_constructed_weights() -> None:
    from attnbench.tasks.base import attention_statistics

    w = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])[None, None]  # (1,1,3,3)
    allowed = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    allowed[..., 2, 2] = False  # one masked entry: not counted
    stats = attention_statistics([w, w], allowed)
    assert stats["available"] and len(stats["layers"]) == 2
    assert stats["layers"][0]["sparsity"] == pytest.approx(3 / 8)
    entropy_rows = [-2 * 0.5 * math.log(0.5), 0.0, -(0.2 * math.log(0.2) + 0.3 * math.log(0.3))]
    assert stats["layers"][0]["entropy"] == pytest.approx(sum(entropy_rows) / 3)
    assert attention_statistics([None], allowed)["available"] is False
    signed = attention_statistics([w, w - 0.25], allowed)  # retention, differential maps
    assert signed["available"] is False and "signed" in signed["reason"]


def test_head_diversity_is_jensen_shannon_distance() -> None:
    from attnbench.tasks.base import attention_statistics, head_diversity

    rows = torch.ones(1, 2, 1, dtype=torch.bool)
    same = torch.tensor([0.2, 0.3, 0.5]).expand(1, 2, 1, 3)
    assert head_diversity(same, rows) == pytest.approx(0.0, abs=1e-6)
    disjoint = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[None, :, None, :]  # (1, 2, 1, 2)
    assert head_diversity(disjoint, rows) == pytest.approx(1.0)
    # against a direct computation: JSD in bits of two fixed distributions
    a, b = torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.1, 0.1, 0.8])
    m = (a + b) / 2

    def kl(p: torch.Tensor, q: torch.Tensor) -> float:
        keep = p > 0
        return float((p[keep] * (p[keep] / q[keep]).log2()).sum())

    expected = math.sqrt(0.5 * kl(a, m) + 0.5 * kl(b, m))
    pair = torch.stack([a, b])[None, :, None, :]
    assert head_diversity(pair, rows) == pytest.approx(expected, rel=1e-5)
    one_head = attention_statistics([pair[:, :1]], torch.ones(1, 1, 1, 3, dtype=torch.bool))
    assert one_head["layers"][0]["head_diversity"] is None


def test_record_carries_attention_statistics(prepared, tmp_path: Path) -> None:
    profile, data = prepared
    record = _train(profile, data, tmp_path / "r.json")
    stats = record["attention"]
    assert stats["available"] and len(stats["layers"]) == profile["model"]["n_layers"]
    assert 0 < stats["layers"][0]["entropy"] <= math.log(25)


def test_record_names_the_profiles_reference_variant(prepared, tmp_path: Path) -> None:
    """The leaderboard reads the reference from the records: the profile's, not a name."""
    profile, data = prepared
    profile = {**profile, "reference": {"variant": "fused", "seeds": None}}
    record = _train(profile, data, tmp_path / "r" / "seed0.json")
    assert record["reference_variant"] == "fused"
    from attnbench.significance import reference_variant

    assert reference_variant([record]) == "fused"


def _snapshot(folder: Path) -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_preparing_unchanged_data_again_leaves_every_file_untouched(prepared) -> None:
    """Re-preparing with the same settings keeps files and times (so no job reruns);
    other settings, or ``force``, prepare anew."""
    profile, data = prepared
    before = _snapshot(data)
    assert prepare_data(profile, "listops", data) is False
    assert _snapshot(data) == before
    assert prepare_data(profile, "listops", data, force=True) is True
    assert _snapshot(data) != before  # the marker's time stamp at least
    changed = json.loads(json.dumps(profile))
    changed["tasks"]["listops"]["data"]["n_train"] += 1
    assert prepare_data(changed, "listops", data) is True
    # data that no longer load are prepared anew, however the marker reads
    (data / "basic_train.tsv").write_text("not a ListOps file\n")
    assert prepare_data(changed, "listops", data) is True
