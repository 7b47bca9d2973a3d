"""End-to-end: the Snakemake pipeline on a tiny profile, and dropping in a new variant.

The small end-to-end run is marked ``e2e`` and runs in CI; the full default
profile is marked ``slow`` (``pytest -m slow``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from attn_cases import tiny_profile

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

NEW_VARIANT = '''
"""A drop-in test variant: vanilla attention with a temperature of 2."""
from attnbench.attention import Capabilities, MultiHeadAttention, masked_softmax, register_variant


@register_variant("dropin", paper="(test) none")
class DropIn(MultiHeadAttention):
    """softmax(QKᵀ/(2√d))V."""

    capabilities = Capabilities()

    def attend(self, q, k, v, ctx):
        scores = (q @ k.transpose(-2, -1)) / (2.0 * q.shape[-1] ** 0.5)
        probs = masked_softmax(scores, ctx.mask.allowed(q.shape[-2], k.shape[-2], q.device))
        return probs @ v, probs
'''


def workflow_profile(out_dir: Path) -> dict:
    """The tiny profile with every variant but vanilla excluded by name, so a newly
    dropped-in variant is still run."""
    from attnbench.attention import variant_names

    profile = tiny_profile(out_dir, steps=4, eval_every=2)
    profile["threads"] = 1
    profile["bench"] = {"cpu": {"modes": ["fwd_bwd"], "lengths": [16, 32], "repeats": 1}}
    profile["variants"] = {
        "include": "all",
        "exclude": [v for v in variant_names() if v != "vanilla"],
    }
    return profile


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of the workflow (Snakefile, rules, profiles) in a temporary directory."""
    for item in ("Snakefile", "workflow", "config"):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, tmp_path / item, symlinks=False)
        else:
            shutil.copy(src, tmp_path / item)
    return tmp_path


def snakemake(
    workdir: Path, *args: str, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*SNAKEMAKE, "--cores", "2", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        # the rules call `attnbench`: make sure this interpreter's scripts are found first
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
        },
        timeout=3600,
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table from a dry run."""
    counts: dict[str, int] = {}
    block = output.split("Job stats:", 1)
    if len(block) < 2:
        return counts
    for line in block[1].splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


@pytest.mark.e2e
def test_pipeline_end_to_end_and_drop_in_variant(workdir: Path, tmp_path: Path) -> None:
    profile_file = workdir / "tiny.yaml"
    profile_file.write_text(yaml.safe_dump(workflow_profile(workdir / "results")))
    snakemake(workdir, "--configfile", str(profile_file))

    board = workdir / "results" / "leaderboard.md"
    assert board.exists()
    records = sorted((workdir / "results" / "runs" / "tiny").rglob("seed*.json"))
    assert [r.parent.name for r in records] == ["vanilla"]
    record = json.loads(records[0].read_text())
    assert record["status"] == "ok" and record["task"] == "listops"
    assert "`vanilla`" in board.read_text()
    csv = (workdir / "results" / "leaderboard.csv").read_text().splitlines()
    assert len(csv) == 2  # header + one record
    html = (workdir / "results" / "leaderboard.html").read_text()
    assert "<table>" in html and "plots/task_tiny_listops.png" in html
    assert (workdir / "results" / "plots" / "task_tiny_listops.svg").is_file()
    manifest = json.loads((workdir / "results" / "manifest.json").read_text())
    assert manifest["profiles"]["tiny"]["records"] == 1
    bench = json.loads(
        (workdir / "results" / "bench" / "tiny" / "records" / "vanilla.json").read_text()
    )
    assert bench["variant"] == "vanilla"

    # Nothing to do on a second run.
    proc = snakemake(workdir, "--configfile", str(profile_file), "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr

    # Drop one new variant module in (outside the package, through ATTNBENCH_VARIANT_PATH):
    # exactly its jobs and the leaderboard are scheduled.
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "dropin.py").write_text(NEW_VARIANT)
    env = {"ATTNBENCH_VARIANT_PATH": str(plugin_dir)}
    listed = subprocess.run(
        [sys.executable, "-m", "attnbench.cli", "variants"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    assert "dropin" in listed.stdout
    proc = snakemake(workdir, "--configfile", str(profile_file), "-n", env=env)
    assert job_counts(proc.stdout) == {
        "train": 1,
        "bench": 1,
        "bench_summary": 1,
        "leaderboard": 1,
        "all": 1,
        "total": 5,
    }
    assert "variant=dropin" in proc.stdout or "runs/tiny/listops/dropin/seed0.json" in proc.stdout

    # Run it: the leaderboard now has both rows and vanilla's record is untouched.
    before = records[0].read_bytes()
    snakemake(workdir, "--configfile", str(profile_file), env=env)
    assert records[0].read_bytes() == before
    text = board.read_text()
    assert "`vanilla`" in text and "dropin" in text

    # A training setting changes each job's resolved config: training reruns, data does not.
    profile = workflow_profile(workdir / "results")
    profile["train"]["steps"] = 3
    profile_file.write_text(yaml.safe_dump(profile))
    proc = snakemake(workdir, "--configfile", str(profile_file), "-n", env=env)
    counts = job_counts(proc.stdout)
    assert counts.get("train") == 2 and "prepare_data" not in counts
    # A data setting reruns data preparation too.
    profile["tasks"]["listops"]["data"]["n_train"] = 40
    profile_file.write_text(yaml.safe_dump(profile))
    proc = snakemake(workdir, "--configfile", str(profile_file), "-n", env=env)
    assert job_counts(proc.stdout).get("prepare_data") == 1


def test_default_profile_dry_run_schedules_every_pair(workdir: Path) -> None:
    from attnbench.config import load_profile, run_seeds, selected_tasks, selected_variants

    profile = load_profile(REPO / "config" / "default.yaml")
    proc = snakemake(workdir, "-n")
    counts = job_counts(proc.stdout)
    variants = selected_variants(profile)
    # every variant trains the profile's seeds, the reference also reference.seeds
    n_runs = sum(len(run_seeds(profile, v)) for v in variants)
    assert n_runs > len(variants) * len(profile["seeds"])  # the reference has more seeds
    if profile["group_tasks"]:  # one job per (variant, seed) trains all of its tasks
        assert counts["train"] == n_runs
        assert counts["bench"] == 1  # and one job measures every variant
    else:
        assert counts["train"] == len(selected_tasks(profile)) * n_runs
        assert counts["bench"] == len(variants)
    assert counts["prepare_data"] == len(selected_tasks(profile))
    assert counts["leaderboard"] == 1


@pytest.mark.e2e
def test_a_fresh_clone_with_committed_results_runs_the_sweep_again(workdir: Path) -> None:
    """The committed leaderboard and sweep summary, without their records (git-ignored),
    must not make Snakemake skip the sweep: its records are the leaderboard's inputs."""
    committed = REPO / "results"
    for item in ("bench", "plots"):
        if (committed / item).is_dir():
            shutil.copytree(committed / item, workdir / "results" / item)
    for item in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "manifest.json"):
        if (committed / item).is_file():
            shutil.copy(committed / item, workdir / "results" / item)
    assert (workdir / "results" / "bench" / "default" / "summary.md").is_file()
    counts = job_counts(snakemake(workdir, "-n").stdout)
    assert counts.get("bench", 0) >= 1 and counts["bench_summary"] == 1


def test_an_existing_leaderboard_does_not_stop_missing_runs(workdir: Path, tmp_path: Path) -> None:
    """Snakemake does not rerun a job for missing inputs when its outputs exist; the run
    records are targets of their own, so a profile whose output_dir already holds a
    leaderboard (and no head ablation) still trains every missing run and rebuilds it."""
    out = tmp_path / "out"
    profile = two_task_profile(out, group=False)
    profile_file = tmp_path / "two.yaml"
    profile_file.write_text(yaml.safe_dump(profile))
    out.mkdir()
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "manifest.json"):
        (out / name).write_text("from another profile\n")
    (out / "plots").mkdir()
    counts = job_counts(snakemake(workdir, "--configfile", str(profile_file), "-n").stdout)
    assert counts["train"] == 4 and counts["leaderboard"] == 1  # 2 tasks × 2 variants


def two_task_profile(out_dir: Path, group: bool) -> dict:
    """The workflow profile with two tasks and two variants (for dry runs only)."""
    profile = workflow_profile(out_dir)
    profile["variants"] = {"include": ["vanilla", "linear"]}
    profile["tasks"]["bible-shuffle"] = {
        "data": {"max_words": 12, "n_train": 48, "n_val": 16, "n_test": 16, "max_length": 16}
    }
    profile["group_tasks"] = group
    return profile


def dry_run_jobs(output: str) -> list[dict]:
    """The jobs of a dry run with -p: the rule, outputs and shell command of each."""
    found: list[dict] = []
    for line in output.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            found.append({"rule": match.group(1), "output": [], "shell": None})
        elif found and (match := re.match(r"^\s+output: (.*)$", line)):
            found[-1]["output"] = match.group(1).split(", ")
        elif found and line.startswith("Shell command: "):
            found[-1]["shell"] = line.removeprefix("Shell command: ")
    return found


@pytest.mark.parametrize("group", [False, True])
def test_both_groupings_run_the_same_rules_and_a_dry_run_writes_nothing(
    workdir: Path, tmp_path: Path, group: bool
) -> None:
    """group_tasks changes how many jobs train and measure, never the rules: one `train`
    and one `bench` rule either way, with the same records. A dry run writes nothing in
    the output directory (the resolved profile included)."""
    out = tmp_path / "out"
    profile_file = tmp_path / "two.yaml"
    profile_file.write_text(yaml.safe_dump(two_task_profile(out, group)))

    listed = snakemake(workdir, "--list-rules", "--configfile", str(profile_file))
    assert set(listed.stdout.split()) == {
        "all",
        "prepare_data",
        "train",
        "head_ablation",
        "bench",
        "bench_summary",
        "leaderboard",
    }

    proc = snakemake(workdir, "-n", "-p", "--configfile", str(profile_file))
    counts = job_counts(proc.stdout)
    assert {rule: counts.get(rule) for rule in ("train", "bench", "prepare_data")} == (
        {"train": 2, "bench": 1, "prepare_data": 2}  # per variant; all variants
        if group
        else {"train": 4, "bench": 2, "prepare_data": 2}  # per (task, variant); per variant
    )
    found = dry_run_jobs(proc.stdout)
    trains = [job for job in found if job["rule"] == "train"]
    records = sorted(f for job in trains for f in job["output"])
    assert records == sorted(
        f"{out}/runs/tiny/{task}/{variant}/seed0.json"
        for task in ("bible-shuffle", "listops")
        for variant in ("linear", "vanilla")
    )
    for job in trains:
        # the same commands as ever: under group_tasks one process trains both tasks,
        # each record at its default path; else one task, its data and record given
        tasks = re.search(r" --task (\S+) --variant ", job["shell"]).group(1).split(",")
        if group:
            assert sorted(tasks) == ["bible-shuffle", "listops"]
            assert "--out" not in job["shell"] and "--data" not in job["shell"]
        else:
            assert tasks == [job["output"][0].split("/")[-3]]
            assert f" --out {job['output'][0]} " in job["shell"]
    benches = [job for job in found if job["rule"] == "bench"]
    assert sorted(f for job in benches for f in job["output"]) == [
        f"{out}/bench/tiny/records/{variant}.json" for variant in ("linear", "vanilla")
    ]
    assert not out.exists()  # nothing written, not even the resolved profile


def test_variant_module_that_does_not_import_stops_the_workflow_with_one_line(
    workdir: Path, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text("import os\n\ndef f(:\n    pass\n")
    out = tmp_path / "out"
    profile_file = tmp_path / "tiny.yaml"
    profile_file.write_text(yaml.safe_dump(workflow_profile(out)))
    proc = snakemake(
        workdir,
        *("-n", "--configfile", str(profile_file)),
        env={"ATTNBENCH_VARIANT_PATH": str(plugins)},
        check=False,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and 'File "' not in output, output
    expected = f"attnbench: error: cannot import variant module {plugins / 'broken.py'}: "
    errors = [line for line in proc.stderr.splitlines() if line.startswith("attnbench: error:")]
    assert len(errors) == 1 and errors[0].startswith(expected + "SyntaxError line 3: "), output
    assert not out.exists()


@pytest.mark.slow
def test_default_profile_full_run_beats_majority_baseline(workdir: Path) -> None:
    snakemake(workdir)
    record = json.loads(
        (
            workdir / "results" / "runs" / "default" / "listops" / "vanilla" / "seed0.json"
        ).read_text()
    )
    assert record["status"] == "ok"
    accuracy = record["metrics"]["test"]["accuracy"]
    assert accuracy > record["metrics"]["baselines"]["majority_class"] + 0.05
