"""Profiles: loading, validation, per-job resolution and hashing, and CLI error handling."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from attnbench.attention import get_variant, variant_names
from attnbench.config import (
    ConfigError,
    bench_is_exact,
    bench_job_config,
    config_hash,
    job_config,
    load_profile,
    resolve_bench_config,
    selected_tasks,
    selected_variants,
    validate_profile,
)
from attnbench.config_bench import CPU_GRID, MODES
from attnbench.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROFILE = ROOT / "config" / "default.yaml"

BASE = """\
profile: tiny
train: {steps: 50, lr: 0.001}
tasks:
  listops:
    data: {n_train: 10, n_val: 5, n_test: 5, min_length: 5, max_length: 30}
"""


def write(tmp_path: Path, text: str, name: str = "profile.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_profile(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# ---------------------------------------------------------------------------------------
# The shipped default profile and job resolution
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_profile() -> dict:
    return load_profile(DEFAULT_PROFILE)


def test_default_profile_loads(default_profile: dict) -> None:
    assert default_profile["profile"] == "default"
    assert "listops" in selected_tasks(default_profile)
    assert "vanilla" in selected_variants(default_profile)
    assert default_profile["seeds"] == [0]
    assert default_profile["tasks"]["listops"]["enabled"] is True  # default filled in


def test_job_config_for_listops_vanilla(default_profile: dict) -> None:
    cfg = job_config(default_profile, "listops", "vanilla")
    assert {"data", "model", "train", "variant_options"} <= set(cfg)
    assert cfg["task"] == "listops" and cfg["variant"] == "vanilla"
    assert cfg["profile"] == "default"
    raw = yaml.safe_load(DEFAULT_PROFILE.read_text())
    assert cfg["data"]["n_train"] == raw["tasks"]["listops"]["data"]["n_train"]
    assert cfg["data"]["max_length"] == 100
    assert cfg["data"]["max_args"] == 10
    assert cfg["model"]["d_model"] == 64 and cfg["model"]["head_dim"] == 16
    assert cfg["model"]["max_len"] == 101  # the task's longest input: max_length + [CLS]
    # the task's own train section overrides the global one, key by key
    expected = {**raw["train"], **raw["tasks"]["listops"].get("train", {})}
    assert cfg["train"]["steps"] == expected["steps"] and cfg["train"]["lr"] == expected["lr"]
    assert cfg["train"]["min_lr_ratio"] == TrainConfig().min_lr_ratio  # a default filled in
    assert cfg["variant_options"] == {}


def test_config_hash_is_stable_and_sensitive(default_profile: dict) -> None:
    first = config_hash(job_config(default_profile, "listops", "vanilla"))
    again = config_hash(job_config(load_profile(DEFAULT_PROFILE), "listops", "vanilla"))
    assert first == again
    assert len(first) == 16
    changed = copy.deepcopy(default_profile)
    changed["train"]["lr"] = 0.003
    assert config_hash(job_config(changed, "listops", "vanilla")) != first
    changed = copy.deepcopy(default_profile)
    changed["tasks"]["listops"]["data"]["seed"] = 1
    assert config_hash(job_config(changed, "listops", "vanilla")) != first


def test_config_hash_ignores_key_order() -> None:
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash(
        {"b": {"d": 3, "c": 2}, "a": 1}
    )
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_task_level_overrides_win(tmp_path: Path) -> None:
    profile = load_profile(
        write(
            tmp_path,
            BASE.replace("    data:", "    train: {steps: 7}\n    model: {n_layers: 1}\n    data:"),
        )
    )
    cfg = job_config(profile, "listops", "vanilla")
    assert cfg["train"]["steps"] == 7  # task-level
    assert cfg["train"]["lr"] == 0.001  # global, not overridden
    assert cfg["model"]["n_layers"] == 1
    assert profile["train"]["steps"] == 50  # the global section itself is untouched


def test_job_config_for_a_task_not_in_the_profile(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, BASE))
    profile["tasks"] = {"other": {}}
    with pytest.raises(ValueError, match="not in profile"):
        job_config(profile, "listops", "vanilla")


def test_validate_profile_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        validate_profile(["a", "list"])


# ---------------------------------------------------------------------------------------
# Bad profiles: one-line ConfigError naming the problem
# ---------------------------------------------------------------------------------------
def test_malformed_yaml(tmp_path: Path) -> None:
    message = config_error(tmp_path, "profile: tiny\ntasks:\n  listops: {data: [1, 2}\n")
    assert "malformed" in message.lower()
    assert "line 3" in message
    assert "profile.yaml" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as info:
        load_profile(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


def test_json_profile(tmp_path: Path, default_profile: dict) -> None:
    """The workflow's resolved profile is JSON; it loads to the same jobs, 1e-09 included."""
    path = tmp_path / "resolved.json"
    path.write_text(json.dumps(default_profile))
    assert '"eps": 1e-09' in path.read_text()
    loaded = load_profile(path)
    assert job_config(loaded, "listops", "vanilla") == job_config(
        default_profile, "listops", "vanilla"
    )
    (tmp_path / "bad.json").write_text('{"profile": "x",\n "tasks": }\n')
    with pytest.raises(ConfigError, match=r"malformed JSON.*line 2") as info:
        load_profile(tmp_path / "bad.json")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        pytest.param(
            ("train: {steps: 50", "train: {steps: -5"), ["steps", "-5"], id="negative-steps"
        ),
        pytest.param(
            ("train: {steps: 50", 'train: {steps: "ten"'), ["steps", "ten"], id="steps-type"
        ),
        pytest.param(
            ("profile: tiny", "profile: tiny\nmodel: {n_heads: 0}"), ["n_heads"], id="zero-heads"
        ),
        pytest.param(
            ("profile: tiny", "profile: tiny\nmodel: {d_model: 30, n_heads: 4}"),
            ["divisible", "30", "4"],
            id="head-dim",
        ),
        pytest.param(
            ("profile: tiny", "profile: tiny\nmodel: {pooling: max}"), ["pooling"], id="pooling"
        ),
        pytest.param(
            ("    data:", "    model: {n_heads: 0}\n    data:"), ["n_heads"], id="task-zero-heads"
        ),
        pytest.param(
            ("  listops:", "  nope: {}\n  listops:"),
            ["unknown task", "'nope'", "listops"],
            id="unknown-task",
        ),
        pytest.param(
            ("profile: tiny", "profile: tiny\nvariants: {include: [vanilla, nope]}"),
            ["unknown variant", "'nope'", "vanilla"],
            id="unknown-variant-include",
        ),
        pytest.param(
            ("profile: tiny", "profile: tiny\nvariants: {exclude: [nope]}"),
            ["unknown variant", "'nope'", "vanilla"],
            id="unknown-variant-exclude",
        ),
        pytest.param(
            ("profile: tiny", "profile: tiny\nvariants: {options: {vanilla: {k: 1}}}"),
            ["vanilla", "unknown option", "k"],
            id="unknown-variant-option",
        ),
        pytest.param(
            ("profile: tiny", "profile: tiny\ncolour: red"), ["colour"], id="top-level-key"
        ),
        pytest.param(("train: {", "train: {colour: red, "), ["colour"], id="train-key"),
        pytest.param(
            ("n_train: 10", "n_train: 10, colour: red"),
            ["colour", "valid keys", "n_train", "max_length"],
            id="data-key",
        ),
        pytest.param(
            ("min_length: 5", "min_length: 50"), ["min_length", "max_length"], id="data-range"
        ),
        pytest.param(("profile: tiny", "profile: tiny\nseeds: []"), ["seeds"], id="no-seeds"),
        pytest.param(("profile: tiny", "profile: 'a b'"), ["profile"], id="profile-name"),
    ],
)
def test_bad_profile(tmp_path: Path, edit: tuple[str, str], words: list[str]) -> None:
    old, new = edit
    assert old in BASE
    message = config_error(tmp_path, BASE.replace(old, new, 1))
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_missing_tasks(tmp_path: Path) -> None:
    assert "tasks" in config_error(tmp_path, "profile: tiny\n")


def test_wrong_type_in_data_is_a_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, BASE.replace("n_train: 10", 'n_train: "ten"'))
    assert "n_train" in message


def test_base_profile_is_valid(tmp_path: Path) -> None:
    """Guard for the cases above: the unedited profile passes."""
    profile = load_profile(write(tmp_path, BASE))
    assert selected_tasks(profile) == ["listops"]


# ---------------------------------------------------------------------------------------
# The CLI: exit 2, one stderr line, nothing written
# ---------------------------------------------------------------------------------------
@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    cwd: Path


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Each command in its own empty working directory, all started at once."""
    bad = tmp_path_factory.mktemp("bad") / "malformed.yaml"
    bad.write_text("profile: x\n  tasks: {}\n")  # a mapping where none may start
    profile = str(DEFAULT_PROFILE)
    commands = {
        "unknown-variant": [
            "train",
            "--profile",
            profile,
            "--task",
            "listops",
            "--variant",
            "nope",
        ],
        "unknown-task": ["train", "--profile", profile, "--task", "nope", "--variant", "vanilla"],
        "malformed": ["check", "--profile", str(bad)],
        "valid": ["check", "--profile", profile],
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNBENCH_")}
    procs = {}
    for case, args in commands.items():
        cwd = tmp_path_factory.mktemp(case)
        proc = subprocess.Popen(
            [sys.executable, "-m", "attnbench.cli", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs[case] = (proc, cwd)
    runs = {}
    for case, (proc, cwd) in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        runs[case] = Run(proc.returncode, stdout, stderr, cwd)
    return runs


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("unknown-variant", ["'nope'", "valid choices", "vanilla"]),
        ("unknown-task", ["'nope'", "valid choices", "listops"]),
        ("malformed", ["malformed", "line 2", "malformed.yaml"]),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    cli_runs: dict[str, Run], case: str, words: list[str]
) -> None:
    run = cli_runs[case]
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("attnbench: error: ")
    for word in words:
        assert word in lines[0]
    assert run.stdout == ""
    assert list(run.cwd.rglob("*")) == []  # no record (nor results/ directory) written


def test_cli_check_valid_profile(cli_runs: dict[str, Run]) -> None:
    run = cli_runs["valid"]
    assert run.returncode == 0, run.stderr
    assert "'default' is valid" in run.stdout
    assert run.stderr == ""


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "config").glob("*.yaml")), ids=str
)
def test_every_shipped_profile_validates(path: Path) -> None:
    """Paper-scale profiles cannot run here, but they must stay valid as the code moves."""
    from attnbench.config import load_profile

    profile = load_profile(path)
    assert profile["profile"] == path.stem


# ---------------------------------------------------------------------------------------
# gpus_per_job (multi-GPU training jobs in the workflow)
# ---------------------------------------------------------------------------------------
def test_gpus_per_job_defaults_to_one(tmp_path: Path) -> None:
    assert load_profile(write(tmp_path, BASE))["gpus_per_job"] == 1


def test_gpus_per_job_needs_a_gpu_device(tmp_path: Path) -> None:
    message = config_error(tmp_path, BASE + "device: cpu\ngpus_per_job: 2\n")
    assert "gpus_per_job=2 needs GPUs but device is 'cpu'" in message
    assert "valid: gpus_per_job: 1, or device: auto or cuda" in message


def test_gpus_per_job_must_divide_every_global_batch(tmp_path: Path) -> None:
    ok = BASE.replace("lr: 0.001", "lr: 0.001, batch_size: 12") + "gpus_per_job: 4\n"
    assert load_profile(write(tmp_path, ok))["gpus_per_job"] == 4
    # a task-level batch size is checked too
    odd = ok.replace("max_length: 30}\n", "max_length: 30}\n    train: {batch_size: 6}\n")
    message = config_error(tmp_path, odd)
    assert "task 'listops': train.batch_size=6 (the global batch) is not divisible by " in message
    assert "gpus_per_job=4; valid: a multiple of 4" in message


def test_gpus_per_job_below_one_is_rejected(tmp_path: Path) -> None:
    message = config_error(tmp_path, BASE + "gpus_per_job: 0\n")
    assert "invalid value at gpus_per_job: 0 is less than the minimum of 1" in message


# ---------------------------------------------------------------------------------------
# Seeds and the reference variant
# ---------------------------------------------------------------------------------------
def test_duplicate_seeds_are_rejected(tmp_path: Path) -> None:
    message = config_error(tmp_path, BASE + "seeds: [0, 1, 0]\n")
    assert "seeds" in message and "non-unique" in message


def test_duplicate_reference_seeds_are_rejected(tmp_path: Path) -> None:
    message = config_error(tmp_path, BASE + "reference: {seeds: [3, 3]}\n")
    assert "reference.seeds" in message and "non-unique" in message


def test_reference_variant_gets_its_extra_seeds(tmp_path: Path) -> None:
    from attnbench.config import reference_variant, run_seeds

    profile = load_profile(
        write(tmp_path, BASE + "seeds: [0]\nreference: {variant: fused, seeds: [0, 1, 2]}\n")
    )
    assert reference_variant(profile) == "fused"
    assert run_seeds(profile, "fused") == [0, 1, 2]
    assert run_seeds(profile, "vanilla") == [0]
    assert job_config(profile, "listops", "linear")["reference_variant"] == "fused"


def test_reference_defaults_to_vanilla_with_the_profile_seeds(tmp_path: Path) -> None:
    from attnbench.config import reference_variant, run_seeds

    profile = load_profile(write(tmp_path, BASE + "seeds: [4, 5]\n"))
    assert reference_variant(profile) == "vanilla"
    assert run_seeds(profile, "vanilla") == [4, 5]
    assert profile["reference"] == {"variant": "vanilla", "seeds": None}


def test_unknown_or_unselected_reference_is_one_line_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, BASE + "reference: {variant: nope}\n")
    assert "reference.variant" in message and "vanilla" in message
    message = config_error(
        tmp_path, BASE + "variants: {include: [linear]}\nreference: {variant: vanilla}\n"
    )
    assert "not among the profile's variants" in message and "linear" in message


def test_data_hash_follows_the_tasks_data_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Data prepared by an older generator is not reused after a generator fix."""
    from attnbench.config import data_config_hash
    from attnbench.tasks.base import get_task

    profile = load_profile(DEFAULT_PROFILE)
    before = data_config_hash(profile, "listops")
    monkeypatch.setattr(get_task("listops"), "data_version", 99)
    assert data_config_hash(profile, "listops") != before
    assert get_task("pathfinder").data_version >= 2  # the marker-cue fix


# ---------------------------------------------------------------------------------------
# The efficiency sweep's `bench:` section
# ---------------------------------------------------------------------------------------
def test_default_grids_follow_the_issue() -> None:
    cfg = resolve_bench_config({"profile": "p", "tasks": {}})
    assert cfg.cpu.lengths == [256, 512, 1024, 2048] and cfg.cpu.dtype == "fp32"
    assert cfg.cuda.lengths[0] == 512 and cfg.cuda.lengths[-1] == 16384
    assert cfg.cuda.long_lengths == [32768] and cfg.cuda.dtype == "bf16"
    assert cfg.cuda.causal == [False, True] and set(cfg.cuda.modes) == set(MODES)
    assert cfg.grid("cuda") is cfg.cuda and cfg.grid("cpu") is cfg.cpu


def test_profile_bench_section_overrides_and_validates() -> None:
    profile = {"profile": "p", "bench": {"reference": "fused", "cpu": {"lengths": [64, 128]}}}
    cfg = resolve_bench_config(profile)
    assert cfg.reference == "fused" and cfg.cpu.lengths == [64, 128]
    assert cfg.cpu.repeats == CPU_GRID.repeats  # unspecified keys keep the defaults
    bad = copy.deepcopy(profile)
    bad["bench"]["cpu"]["modez"] = ["fwd"]
    with pytest.raises(ValueError, match=r"bench\.cpu: unknown key\(s\) modez; valid keys"):
        resolve_bench_config(bad)
    bad = {"profile": "p", "bench": {"cuda": {"modes": ["backward"]}}}
    with pytest.raises(ValueError, match="valid choices: fwd, fwd_bwd, train_step"):
        resolve_bench_config(bad)
    with pytest.raises(ValueError, match=r"bench: unknown key\(s\) lengths"):
        resolve_bench_config({"profile": "p", "bench": {"lengths": [1]}})


def test_exact_variants_default_to_the_exact_softmax_capability(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, BASE))
    cfg = resolve_bench_config(profile)
    assert cfg.exact_variants is None  # not set in the profile: the variants' metadata decides
    exact = {name for name in variant_names() if bench_is_exact(cfg, name)}
    declared = {name for name in variant_names() if get_variant(name).capabilities.exact_softmax}
    assert exact == declared and {"vanilla", "fused"} <= exact
    assert bench_job_config(profile, "fused", cfg)["exact_flops"] is True
    assert bench_job_config(profile, "linear", cfg)["exact_flops"] is False
    # the profile key stays an explicit override
    override = resolve_bench_config({**profile, "bench": {"exact_variants": ["linear"]}})
    assert {name for name in variant_names() if bench_is_exact(override, name)} == {"linear"}


def test_bench_reference_defaults_to_the_profile_reference(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, BASE + "reference: {variant: fused}\n"))
    assert resolve_bench_config(profile).reference == "fused"
    assert bench_job_config(profile, "linear")["bench"]["reference"] == "fused"
    own = {**profile, "bench": {"reference": "linear"}}
    assert resolve_bench_config(own).reference == "linear"


def test_importing_config_leaves_the_bench_package_unloaded() -> None:
    """config resolves the bench section itself: no import cycle config → bench → config."""
    code = "import attnbench.config, sys; assert 'attnbench.bench' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
