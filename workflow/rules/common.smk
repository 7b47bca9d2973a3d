# Shared setup: load and validate the profile, resolve the job lists from the registries.
import json
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

from attnbench.config import (
    config_hash,
    data_config_hash,
    job_config,
    run_seeds,
    selected_tasks,
    selected_variants,
    validate_profile,
)
from attnbench.records import atomic_write_text, record_path

DEFAULT_PROFILE = "config/default.yaml"

# No --configfile given: run the default profile (keys from --config still override it).
if "profile" not in config:
    with open(DEFAULT_PROFILE, encoding="utf-8") as _handle:
        for _key, _value in yaml.safe_load(_handle).items():
            config.setdefault(_key, _value)

validate(config, "../schemas/config.schema.yaml")
# A bad profile, an unknown name or a variant/task module that does not import stops the
# workflow with the one line the attnbench commands print (no traceback).
try:
    PROFILE = validate_profile(dict(config), source="snakemake config")
    TASKS = selected_tasks(PROFILE)
    VARIANTS = selected_variants(PROFILE)
except ValueError as _exc:
    _line = str(_exc).splitlines()[0] if str(_exc).strip() else type(_exc).__name__
    print(f"attnbench: error: {_line}", file=sys.stderr)
    sys.exit(1)
NAME = PROFILE["profile"]
OUT = PROFILE["output_dir"].rstrip("/")
# group_tasks: one training job per (variant, seed) trains every task, and one sweep job
# measures every variant, each in one process (see train.smk and bench.smk).
GROUPED = PROFILE["group_tasks"]
# GPUs per GPU job; none under a `device: cpu` profile. Snakemake only counts them
# (--resources gpu=N, see workflow/profiles/default); `python -m attnbench.gpu_slots`
# picks which GPUs and sets CUDA_VISIBLE_DEVICES. The efficiency sweep and head ablation
# use one GPU; training uses the profile's gpus_per_job, and above one it runs under
# torchrun as data-parallel training over the same global batch (attnbench.distributed).
GPUS_PER_JOB = 0 if PROFILE["device"] == "cpu" else 1
TRAIN_GPUS = 0 if PROFILE["device"] == "cpu" else PROFILE["gpus_per_job"]
TRAIN_CMD = (
    "attnbench train"
    if TRAIN_GPUS <= 1
    else f"torchrun --standalone --nproc_per_node {TRAIN_GPUS} -m attnbench.cli train"
)

# Jobs read the profile exactly as Snakemake resolved it (including --config overrides).
# The file is not an input, so a change reruns only the jobs whose own resolved config
# (params.cfg_hash) changed. It is written when jobs are about to run (onstart, never by
# a dry run), and only when its content changes.
PROFILE_FILE = f"{OUT}/profiles/{NAME}.json"
PROFILE_TEXT = json.dumps(PROFILE, indent=2, sort_keys=True) + "\n"


def write_profile_file():
    path = Path(PROFILE_FILE)
    if not path.exists() or path.read_text(encoding="utf-8") != PROFILE_TEXT:
        atomic_write_text(PROFILE_FILE, PROFILE_TEXT)


onstart:
    write_profile_file()


# A job that an executor runs in a Snakemake process of its own (a cluster job, a pod)
# runs no onstart and may share no file system with this one: it writes its own copy.
if workflow.remote_exec or workflow.subprocess_exec:
    write_profile_file()


wildcard_constraints:
    task="[A-Za-z0-9_.-]+",
    variant="[A-Za-z0-9_.-]+",
    seed=r"\d+",


def data_marker(task):
    return f"{OUT}/data/{NAME}/{task}/prepared.json"


def run_record(task, variant, seed):
    return str(record_path(OUT, NAME, task, variant, seed))


# Every variant trains the profile's seeds; the reference variant adds reference.seeds
# (the verdicts estimate training-seed noise from them).
ALL_RECORDS = [
    run_record(t, v, s) for t in TASKS for v in VARIANTS for s in run_seeds(PROFILE, v)
]

_ablation = PROFILE.get("analysis", {}).get("head_ablation", {})
HEAD_ABLATIONS = [
    f"{OUT}/analysis/{NAME}/head_ablation/{t}/{v}/seed{s}.json"
    for t in _ablation.get("tasks", [])
    if t in TASKS
    for v in _ablation.get("variants", [])
    if v in VARIANTS
    for s in _ablation.get("seeds", [0])
    if s in run_seeds(PROFILE, v)
]
