"""Scaling out (issue #10): GPU slots for local runs, and the workflow profiles.

``attnbench.gpu_slots`` is tested on its defining properties with a pretend GPU count
(``ATTNBENCH_GPU_COUNT``): concurrent jobs get distinct ``CUDA_VISIBLE_DEVICES``, one job
more waits for a free GPU, a job killed with SIGKILL frees its GPU, and without a GPU the
command runs unchanged. The profiles under ``workflow/profiles/`` are checked by dry runs
(no cluster needed), and the cluster submission path runs end to end on a simulated
cluster (``cluster-sim``: Snakemake's cluster-generic executor with local submit and
status scripts). A test whose executor plugin is not installed is skipped, saying which
package it needs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_workflow import (  # noqa: F401  (workdir: a fixture)
    job_counts,
    snakemake,
    workdir,
    workflow_profile,
)

from attnbench import gpu_slots

PROFILES = Path("workflow") / "profiles"  # relative to the workflow copy
# these rules declare `resources: gpu`
GPU_RULES = ("train", "head_ablation", "bench")
NO_GPU_RESOURCE = "GPU rules must declare `resources: gpu=...` (workflow/rules/*.smk)"
WRAPPER = [sys.executable, "-m", "attnbench.gpu_slots"]

# A job that reports the GPU it was given, then holds it until told to finish.
HOLDER = (
    "import os, pathlib, sys, time\n"
    "out, go = map(pathlib.Path, sys.argv[1:3])\n"
    "tmp = out.with_suffix('.tmp')\n"
    "tmp.write_text(os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>'))\n"
    "os.replace(tmp, out)\n"
    "while not go.exists():\n"
    "    time.sleep(0.02)\n"
)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def slot_env(count: int | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != gpu_slots.ENV_COUNT}
    if count is not None:
        env[gpu_slots.ENV_COUNT] = str(count)
    return env | extra


class Holder:
    """One `python -m attnbench.gpu_slots -- <HOLDER>` process and its files."""

    def __init__(self, tmp: Path, name: str, lock_dir: Path, env: dict[str, str]) -> None:
        self.out, self.go, self.err = tmp / f"{name}.out", tmp / f"{name}.go", tmp / f"{name}.err"
        with self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [*WRAPPER, "--lock-dir", str(lock_dir), "--", *self.command()],
                env=env,
                stderr=err,
            )

    def command(self) -> list[str]:
        return [sys.executable, "-c", HOLDER, str(self.out), str(self.go)]

    @property
    def device(self) -> str | None:
        return self.out.read_text() if self.out.exists() else None

    def waiting(self) -> bool:
        return "busy; waiting" in self.err.read_text()

    def finish(self) -> None:
        self.go.touch()
        assert self.proc.wait(timeout=30) == 0, self.err.read_text()


# --- which GPUs exist ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ATTNBENCH_GPU_COUNT": "3"}, ["0", "1", "2"]),
        ({"ATTNBENCH_GPU_COUNT": "0", "CUDA_VISIBLE_DEVICES": "4,5"}, []),  # override wins
        ({"CUDA_VISIBLE_DEVICES": "2,3"}, ["2", "3"]),
        ({"CUDA_VISIBLE_DEVICES": " 1 , GPU-8f2e-aa "}, ["1", "GPU-8f2e-aa"]),
        ({"CUDA_VISIBLE_DEVICES": ""}, []),  # empty: every GPU hidden
        ({"CUDA_VISIBLE_DEVICES": "0,-1,2"}, ["0"]),  # CUDA stops at an invalid index
    ],
)
def test_visible_gpus_read_like_cuda(env: dict[str, str], expected: list[str]) -> None:
    assert gpu_slots.visible_gpus({"PATH": "", **env}) == expected
    assert gpu_slots.gpu_count({"PATH": "", **env}) == len(expected)


def test_gpu_count_from_nvidia_smi_counts_gpus_not_mig_instances(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)"\n'
        'echo "  MIG 3g.40gb     Device  0: (UUID: MIG-bbbb)"\n'
        'echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)"\n'
    )
    fake.chmod(0o755)
    assert gpu_slots.visible_gpus({"PATH": str(tmp_path)}) == ["0", "1"]
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")  # driver gone
    assert gpu_slots.gpu_count({"PATH": str(tmp_path)}) == 0
    assert gpu_slots.gpu_count({"PATH": str(tmp_path / "none")}) == 0  # no nvidia-smi


def test_bad_gpu_count_is_a_one_line_error() -> None:
    with pytest.raises(gpu_slots.GpuSlotError, match=r"ATTNBENCH_GPU_COUNT='two'.*valid"):
        gpu_slots.visible_gpus({"ATTNBENCH_GPU_COUNT": "two"})
    bad = [(["--", "true"], slot_env(-1)), (["--gpus", "-1", "--", "true"], slot_env(1))]
    for args, env in bad:
        proc = subprocess.run([*WRAPPER, *args], env=env, capture_output=True, text=True)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_count_prints_what_the_profile_uses() -> None:
    """`--resources gpu=$(python -m attnbench.gpu_slots --count)` counts like the locks do."""
    for env, expected in ((slot_env(3), "3"), (slot_env(None, CUDA_VISIBLE_DEVICES="4,6"), "2")):
        proc = subprocess.run([*WRAPPER, "--count"], env=env, capture_output=True, text=True)
        assert (proc.returncode, proc.stdout) == (0, f"{expected}\n")


def test_default_lock_dir_is_local_and_per_slurm_allocation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert gpu_slots.default_lock_dir({"XDG_RUNTIME_DIR": str(run)}) == (
        run / "attnbench-gpu-locks"
    )
    # Slurm numbers each job's GPUs from 0: two jobs on one node must not share "gpu-0".
    a = gpu_slots.default_lock_dir({"XDG_RUNTIME_DIR": str(run), "SLURM_JOB_ID": "11"})
    b = gpu_slots.default_lock_dir({"XDG_RUNTIME_DIR": str(run), "SLURM_JOB_ID": "12"})
    assert a != b and a.parent == b.parent == run / "attnbench-gpu-locks"
    explicit = {"ATTNBENCH_GPU_LOCK_DIR": str(tmp_path / "x"), "SLURM_JOB_ID": "11"}
    assert gpu_slots.default_lock_dir(explicit) == tmp_path / "x"


# --- holding GPUs --------------------------------------------------------------------------


def test_acquire_gives_distinct_gpus_all_or_nothing(tmp_path: Path) -> None:
    gpus = ["0", "1", "2"]
    with gpu_slots.acquire(1, devices=gpus, lock_dir=tmp_path) as first:
        with gpu_slots.acquire(2, devices=gpus, lock_dir=tmp_path) as pair:
            assert first == ["0"] and pair == ["1", "2"]
            with (
                pytest.raises(TimeoutError),
                gpu_slots.acquire(1, devices=gpus, lock_dir=tmp_path, timeout=0.2),
            ):
                pass
        # One GPU free is not two: a 2-GPU job takes none rather than half.
        with (
            pytest.raises(TimeoutError),
            gpu_slots.acquire(3, devices=gpus, lock_dir=tmp_path, timeout=0.2),
        ):
            pass
        with gpu_slots.acquire(2, devices=gpus, lock_dir=tmp_path, timeout=0.2) as again:
            assert again == ["1", "2"]
    with gpu_slots.acquire(0, devices=gpus, lock_dir=tmp_path) as none:
        assert none == []
    with (
        pytest.raises(gpu_slots.GpuSlotError, match="asks for 4 GPU"),
        gpu_slots.acquire(4, devices=gpus, lock_dir=tmp_path),
    ):
        pass


def test_concurrent_jobs_get_distinct_gpus_and_one_more_waits(tmp_path: Path) -> None:
    locks, env = tmp_path / "locks", slot_env(2)
    first, second = (Holder(tmp_path, name, locks, env) for name in ("a", "b"))
    wait_for(lambda: first.device is not None and second.device is not None, "two jobs")
    assert {first.device, second.device} == {"0", "1"}

    third = Holder(tmp_path, "c", locks, env)
    wait_for(third.waiting, "the third job to find every GPU busy")
    time.sleep(0.5)
    assert third.device is None and third.proc.poll() is None  # still waiting
    freed = second.device
    second.finish()
    wait_for(lambda: third.device is not None, "the third job to get the freed GPU")
    assert third.device == freed
    first.finish()
    third.finish()


def test_killed_job_frees_its_gpu(tmp_path: Path) -> None:
    locks, env = tmp_path / "locks", slot_env(1)
    holder = Holder(tmp_path, "holder", locks, env)
    wait_for(lambda: holder.device is not None, "the first job")
    waiter = Holder(tmp_path, "waiter", locks, env)
    # The wrapper exec'd the job: the lock is held by the job's own process now.
    wait_for(waiter.waiting, "the second job to wait")
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait(timeout=30)
    wait_for(lambda: waiter.device is not None, "the waiting job to get the GPU")
    assert waiter.device == "0"
    waiter.finish()


def test_pin_holds_its_gpu_until_the_process_ends(tmp_path: Path) -> None:
    """`pin()` is for a command that pins itself: it sets CUDA_VISIBLE_DEVICES in-process
    and keeps the slot for the life of the process."""
    script = (
        "import os, sys\n"
        "from attnbench import gpu_slots\n"
        "lock_dir = sys.argv[1]\n"
        "print(gpu_slots.pin(lock_dir=lock_dir), os.environ['CUDA_VISIBLE_DEVICES'])\n"
        "try:\n"
        "    with gpu_slots.acquire(1, lock_dir=lock_dir, timeout=0.2):\n"
        "        print('free')\n"
        "except TimeoutError:\n"
        "    print('held')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=slot_env(1),
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.splitlines() == ["['0'] 0", "held"]
    with gpu_slots.acquire(1, devices=["0"], lock_dir=tmp_path, timeout=0.2) as got:
        assert got == ["0"]  # released when that process ended
    env = slot_env(0, CUDA_VISIBLE_DEVICES="7")
    proc = subprocess.run(
        [sys.executable, "-c", script.split("try:")[0], str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.splitlines() == ["None 7"]  # no GPU: nothing changed


@pytest.mark.parametrize("case", ["cuda-hidden", "no-nvidia-smi", "zero-gpus-asked"])
def test_without_gpu_the_command_runs_unchanged(tmp_path: Path, case: str) -> None:
    script = "import os, sys; print(os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')); "
    script += "print(sys.argv[1:]); sys.exit(3)"
    env = slot_env(None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    gpus = ["--gpus", "1"]
    if case == "cuda-hidden":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif case == "no-nvidia-smi":
        env["PATH"] = str(tmp_path / "empty")
    else:
        env[gpu_slots.ENV_COUNT], gpus = "2", ["--gpus", "0"]
    command = [sys.executable, "-c", script, "a b", "--gpus", "--"]
    proc = subprocess.run(
        [*WRAPPER, *gpus, "--lock-dir", str(tmp_path / "l"), "--", *command],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3, proc.stderr  # the command's own exit status
    expected_cvd = "" if case == "cuda-hidden" else "<unset>"
    assert proc.stdout.splitlines() == [expected_cvd, "['a b', '--gpus', '--']"]
    assert not (tmp_path / "l").exists()  # no lock taken


def test_job_asking_more_gpus_than_exist_fails_with_one_line() -> None:
    proc = subprocess.run(
        [*WRAPPER, "--gpus", "2", "--", "true"],
        env=slot_env(1),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "python -m attnbench.gpu_slots: error: the job asks for 2 GPU(s) but 1 visible (0); "
        "valid: --gpus 0..1"
    ]


# --- profiles -------------------------------------------------------------------------------


def tiny_workflow_profile(out_dir: Path) -> dict:
    """The end-to-end test's tiny profile (1 task, 4 steps) with 2 variants, one job each."""
    profile = workflow_profile(out_dir)
    profile["variants"] = {"include": ["vanilla", "linear"]}
    profile["group_tasks"] = False
    return profile


def assert_tiny_jobs(counts: dict[str, int]) -> None:
    wanted = {"prepare_data": 1, "train": 2, "leaderboard": 1}
    assert {rule: counts.get(rule) for rule in wanted} == wanted, counts


def write_tiny(root: Path) -> str:
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_workflow_profile(root / "results")))
    return str(path)


def jobs(output: str) -> list[dict]:
    """The jobs of a dry run (`-p`): rule, resources and shell command of each."""
    found: list[dict] = []
    for line in output.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            found.append({"rule": match.group(1), "resources": {}, "shell": None})
        elif found and (match := re.match(r"^\s+resources: (.*)$", line)):
            pairs = (item.split("=", 1) for item in match.group(1).split(", "))
            found[-1]["resources"] = {key: value for key, value in pairs}
        elif found and line.startswith("Shell command: "):
            found[-1]["shell"] = line.removeprefix("Shell command: ")
    return found


def plugin_missing(*modules: str) -> str | None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    names = ", ".join(m.replace("_", "-") for m in missing)
    return f"needs {names} (pip install -e '.[test]' with the cluster extras)"


def test_default_profile_limits_gpu_jobs_to_the_gpus_present(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The profile computes `--resources gpu=N` when Snakemake reads it (YTE)."""
    from snakemake.profiles import ProfileConfigFileParser

    path = Path(__file__).resolve().parents[1] / PROFILES / "default" / "config.yaml"
    for count in ("3", "0"):
        monkeypatch.setenv(gpu_slots.ENV_COUNT, count)
        with path.open() as handle:
            parsed = ProfileConfigFileParser().parse(handle)
        assert parsed["resources"] == [f"gpu={count}"]


def test_default_profile_wraps_gpu_jobs_and_frees_cpu_runs(workdir: Path) -> None:  # noqa: F811
    """GPU jobs declare `gpu` and run under gpu_slots. On a machine without a GPU the
    profile's limit is gpu=0, Snakemake lowers each job's gpu to it, and the jobs run
    unpinned and side by side (the simulated cluster run checks gpu=1 and the pinning)."""
    proc = snakemake(
        workdir,
        *("-n", "-p", "--workflow-profile", str(PROFILES / "default")),
        *("--configfile", write_tiny(workdir)),
        env={gpu_slots.ENV_COUNT: "0"},
    )
    assert "workflow specific profile workflow/profiles/default" in proc.stderr
    assert_tiny_jobs(job_counts(proc.stdout))
    for job in jobs(proc.stdout):
        if job["rule"] in GPU_RULES:
            assert job["resources"].get("gpu") == "0", NO_GPU_RESOURCE
            assert job["shell"].startswith("python -m attnbench.gpu_slots --gpus 0 -- attnbench ")
        else:
            assert "gpu" not in job["resources"]
            assert "gpu_slots" not in (job["shell"] or "")


CLUSTER_PROFILES = {
    # profile: (plugin modules, extra arguments, resources every train job must carry)
    "slurm": (
        ["snakemake_executor_plugin_slurm"],
        [],
        {"runtime": "1440", "mem_mb": "16000"},
    ),
    "kubernetes": (
        ["snakemake_executor_plugin_kubernetes", "snakemake_storage_plugin_fs"],
        # pods share no file system: a storage provider is required (a local one here)
        ["--default-storage-provider", "fs", "--default-storage-prefix", "storage"],
        {"gpu_manufacturer": "nvidia", "scale": "0", "mem_mb": "16000"},
    ),
    "cluster-sim": (["snakemake_executor_plugin_cluster_generic"], [], {}),
}


@pytest.mark.parametrize("name", sorted(CLUSTER_PROFILES))
def test_cluster_profile_dry_run(workdir: Path, name: str) -> None:  # noqa: F811
    modules, extra, train_resources = CLUSTER_PROFILES[name]
    if reason := plugin_missing(*modules):
        pytest.skip(reason)
    tiny = write_tiny(workdir)
    proc = snakemake(workdir, "-n", "--profile", str(PROFILES / name), "--configfile", tiny, *extra)
    assert f"Using profile {PROFILES / name}" in proc.stderr
    assert_tiny_jobs(job_counts(proc.stdout))
    trains = [job for job in jobs(proc.stdout) if job["rule"] == "train"]
    assert len(trains) == 2
    for job in trains:
        assert train_resources.items() <= job["resources"].items(), job["resources"]


@pytest.mark.e2e
def test_simulated_cluster_runs_jobs_through_submission(workdir: Path) -> None:  # noqa: F811
    """Data preparation and two training jobs, each submitted, run and polled as on a
    cluster; the training jobs ask for a GPU and are pinned to one of two pretend GPUs."""
    if reason := plugin_missing("snakemake_executor_plugin_cluster_generic"):
        pytest.skip(reason)
    spool = workdir / "spool"
    env = {
        "ATTNBENCH_SIM_SPOOL": str(spool),
        gpu_slots.ENV_COUNT: "2",
        gpu_slots.ENV_LOCK_DIR: str(workdir / "gpu-locks"),
    }
    tiny = write_tiny(workdir)
    snakemake(
        workdir,
        *("--profile", str(PROFILES / "cluster-sim"), "--configfile", tiny, "--until", "train"),
        env=env,
    )

    records = sorted((workdir / "results" / "runs" / "tiny").rglob("seed*.json"))
    assert [r.parent.name for r in records] == ["linear", "vanilla"]
    assert all(json.loads(r.read_text())["status"] == "ok" for r in records)

    # Every job went through submit.py, ran in the background, and status.py saw it succeed.
    submitted = [json.loads(p.read_text()) for p in sorted(spool.glob("*.json"))]
    assert sorted(job["rule"] for job in submitted) == ["prepare_data", "train", "train"]
    for job in submitted:
        assert (spool / f"{job['id']}.exit").read_text().strip() == "0"
        assert "1 of 1 steps (100%) done" in (spool / f"{job['id']}.log").read_text()
    trains = [job for job in submitted if job["rule"] == "train"]
    assert sorted(job["wildcards"]["variant"] for job in trains) == ["linear", "vanilla"]
    assert all(job["resources"].get("gpu") == 1 for job in trains), NO_GPU_RESOURCE
    logs = sorted((workdir / "results" / "logs" / "tiny" / "train").rglob("seed0.log"))
    assert len(logs) == 2
    for log in logs:
        assert re.search(r"pinned to CUDA_VISIBLE_DEVICES=[01]\n", log.read_text())


@pytest.mark.parametrize("group", [False, True])
def test_multi_gpu_training_jobs_run_under_torchrun(workdir: Path, group: bool) -> None:  # noqa: F811
    """gpus_per_job: N > 1 gives each training job N GPUs and launches it with torchrun
    (data-parallel over the same global batch); the sweep keeps one GPU per job."""
    profile = tiny_workflow_profile(workdir / "results")
    profile.update(device="auto", gpus_per_job=2, group_tasks=group)
    profile["train"]["batch_size"] = 4
    (workdir / "multi.yaml").write_text(yaml.safe_dump(profile))
    proc = snakemake(
        workdir, "-n", "-p", "--resources", "gpu=4", "--configfile", str(workdir / "multi.yaml")
    )
    found = jobs(proc.stdout)
    trains = [job for job in found if job["rule"] == "train"]
    assert len(trains) == 2
    for job in trains:
        assert job["resources"]["gpu"] == "2"
        assert job["shell"].startswith(
            "python -m attnbench.gpu_slots --gpus 2 -- "
            "torchrun --standalone --nproc_per_node 2 -m attnbench.cli train --profile "
        ), job["shell"]
    benches = [job for job in found if job["rule"] == "bench"]
    assert len(benches) == (1 if group else 2)
    assert benches and all(job["resources"]["gpu"] == "1" for job in benches)
    assert all("torchrun" not in job["shell"] for job in benches)
