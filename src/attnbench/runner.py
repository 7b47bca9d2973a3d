"""Run one job — (profile, task, variant, seed) — and write its record.

This is what ``attnbench prepare`` / ``attnbench train`` (and so every Snakemake
job) call. Everything a reader needs to trust or redo a number goes into the
record: the resolved config and its hash, the git commit, library versions, the
device, and timings.

Failure modes are kept apart. Bad input (a profile, data or pair that cannot run)
raises :class:`JobError` before anything is written. A job killed at any moment
resumes from its checkpoint when run again (:mod:`attnbench.train`). A NaN loss
gives a ``diverged`` record. Any other exception during the run raises
:class:`JobFailed`, or, with ``record_failures`` (what the workflow asks for),
gives a ``failed`` record so that the rest of the suite goes on and the
leaderboard shows it.

Under ``torchrun`` (:mod:`attnbench.distributed`) every rank runs this with the same
arguments; rank 0 alone writes the record and its files, then hands it to the others,
which return it too. A failure (other than divergence, which every rank sees
at the same step) is never a ``failed`` record there: the rank raises, torchrun stops
the others, and the job fails with its resume checkpoint kept for a rerun.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnbench import distributed, records
from attnbench.baselines import save_baselines, task_baselines
from attnbench.config import (
    config_hash,
    data_config_hash,
    job_config,
    profile_task,
    row_setting,
)
from attnbench.distributed import SINGLE, DistContext
from attnbench.job import (
    PREPARED_MARKER,
    SPLITS,
    Job,
    JobError,
    build_job,
    check_prepared,
    compatible_variants,
    first_line,
    load_data,
)
from attnbench.model import count_parameters
from attnbench.provenance import (
    DeviceError,
    determinism,
    device_info,
    git_commit,
    library_versions,
    now,
    peak_memory,
    resolve_device,
    seed_everything,
    set_offline,
)
from attnbench.records import JobFailed
from attnbench.tasks.base import Task, make_data_config
from attnbench.train import Diverged, Resume, ResumeError, TrainConfig, TrainResult, train
from attnbench.tuning import best_point, grid_points


# ---------------------------------------------------------------------------------------
# Data preparation
# ---------------------------------------------------------------------------------------
def prepare_data(
    profile: dict[str, Any], task_name: str, data_dir: Path, *, force: bool = False
) -> bool:
    """Create a task's data once; a marker file records the settings it was made with.

    Data already prepared with the same settings (the marker's data hash) that load are
    left as they are, files and times, so nothing downstream reruns; ``force`` prepares
    them anew. Returns whether it prepared.

    The task prepares into a staging directory inside ``data_dir``; only when that
    succeeded and every split loads non-empty are the files moved into place (the old
    marker first removed, the new one written last). A failed preparation leaves the
    data that was there untouched.
    """
    set_offline(profile.get("offline", True))
    task_cls = profile_task(profile, task_name)
    data_cfg = make_data_config(task_cls, profile["tasks"][task_name].get("data"))
    task = task_cls(data_cfg)
    if data_dir.exists() and not data_dir.is_dir():
        raise JobError(f"the data directory {data_dir} is a file; give a directory path")
    if not force and _prepared_already(profile, task_cls(data_cfg), data_dir):
        return False
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=data_dir))
    try:
        task.prepare(staging)
        check = task_cls(data_cfg)
        check.load(staging)
        for split in SPLITS:
            if check.split_size(split) == 0:
                raise JobError(
                    f"task {task_name!r}: preparation produced an empty {split} split; "
                    f"every split needs at least one example (check tasks.{task_name}.data)"
                )
        save_baselines(check, staging)  # once per data set, not once per run
        marker = {
            "task": task_name,
            "data_hash": data_config_hash(profile, task_name),
            "data": profile["tasks"][task_name].get("data", {}),
            "dataset": task.dataset_info().__dict__,
            "prepared_at": now(),
        }
        records.atomic_write_text(staging / PREPARED_MARKER, json.dumps(marker, indent=2) + "\n")
        _install(staging, data_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                data_dir.rmdir()  # only if still empty
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return True


def _prepared_already(profile: dict[str, Any], task: Task, data_dir: Path) -> bool:
    """Whether ``data_dir`` holds data prepared with the profile's settings that load."""
    try:
        check_prepared(profile, task.name, data_dir)
        load_data(task, data_dir)
    except JobError:
        return False
    return True


def _install(staging: Path, data_dir: Path) -> None:
    """Move prepared files from ``staging`` into ``data_dir``, the marker last."""
    (data_dir / PREPARED_MARKER).unlink(missing_ok=True)  # no marker while files change
    for item in sorted(staging.iterdir()):
        if item.name == PREPARED_MARKER:
            continue
        target = data_dir / item.name
        if target.is_dir() and not target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{item.name}.old-", dir=data_dir))
            target.rename(old / item.name)
            item.rename(target)
            shutil.rmtree(old)
        else:
            os.replace(item, target)
    os.replace(staging / PREPARED_MARKER, data_dir / PREPARED_MARKER)


# ---------------------------------------------------------------------------------------
# One training job
# ---------------------------------------------------------------------------------------
def _base_record(job: Job, seed: int) -> dict[str, Any]:
    cfg, task, spec = job.cfg, job.task, job.variant
    state = job.state_bytes_per_layer()
    return {
        "schema_version": records.SCHEMA_VERSION,
        "status": "ok",
        "reason": None,
        "task": cfg["task"],
        "task_family": task.family,
        # the registered task behind cfg["task"] (a profile may name a second setting)
        "task_kind": task.name,
        # the published averages the task counts toward: [[label, tasks in it], ...]
        "task_averages": [list(average) for average in task.averages],
        "dataset": task.dataset_info().__dict__,
        "variant": cfg["variant"],
        "variant_paper": spec.paper,
        "variant_options": cfg["variant_options"],
        "capabilities": spec.capabilities.as_dict(),
        # why the variant is dense attention at the task's length (None: it is not)
        "dense_at_length": spec.dense_reason(task.max_len(), cfg["variant_options"]),
        # bytes of recurrent state per sequence, per layer and in all layers (None: none)
        "state_bytes_per_layer": state,
        "state_bytes": None if state is None else state * job.model_config.n_layers,
        # bytes of keys and values all layers cache per decoded token (None: no cache)
        "kv_cache_bytes_per_token": job.kv_cache_bytes_per_token(),
        "seed": seed,
        "profile": cfg["profile"],
        # the variant the leaderboard compares this run with (profile key reference.variant)
        "reference_variant": cfg["reference_variant"],
        "metric": {"name": task.metric, "higher_is_better": task.higher_is_better},
        "metrics": {},
        "n_params": 0,
        "wall_time_s": 0.0,
        "train_time_s": 0.0,
        "tokens_per_s": None,
        "peak_memory_bytes": None,
        "peak_memory_kind": None,
        "git_commit": git_commit(),
        "config_hash": config_hash(cfg),
        "config": cfg,
        "versions": library_versions(),
        "started_at": now(),
    }


@contextlib.contextmanager
def _job_lock(record_file: Path) -> Iterator[None]:
    """Keep a second process (an orphan of a killed workflow, say) off the same run."""
    lock = record_file.with_name(f".{record_file.name}.lock")
    try:
        with records.file_lock(lock, wait=False):
            yield
    except records.LockedError:
        raise JobError(
            f"another attnbench process is running the job of {record_file} (lock {lock}); "
            "wait for it to finish"
        ) from None


def _remove_stale_temporaries(record_file: Path) -> None:
    """Temporary files of this run left by a killed process (we hold the run's lock)."""
    stem = glob.escape(record_file.with_suffix("").name)
    for tmp in record_file.parent.glob(f".{stem}.*.tmp"):
        tmp.unlink(missing_ok=True)


def run_job(
    profile: dict[str, Any],
    task_name: str,
    variant: str,
    seed: int,
    *,
    data_dir: Path,
    record_file: Path,
    na_ok: bool = False,
    progress: bool = True,
    threads: int | None = None,
    record_failures: bool = False,
) -> dict[str, Any]:
    """Train one (task, variant, seed) and write its record atomically; return the record.

    Bad input raises :class:`JobError` with nothing written. A run killed earlier
    continues from ``<record stem>.resume.pt``. An exception during the run raises
    :class:`JobFailed`, or with ``record_failures`` writes a ``failed`` record.
    Launched by torchrun, only rank 0 writes; every rank returns rank 0's record.
    """
    wall0 = time.perf_counter()
    cfg = job_config(profile, task_name, variant)
    set_offline(cfg["offline"])
    if record_file.suffix != ".json":
        raise JobError(f"the record file must be a .json path, got {record_file}")
    if record_file.is_dir():
        raise JobError(f"the record file {record_file} is a directory; give a .json file path")
    try:
        parallel = distributed.context_from_env()
        if parallel.enabled:
            distributed.check_batch_size(cfg["train"]["batch_size"], parallel.world_size)
    except distributed.DistributedError as exc:
        raise JobError(str(exc)) from None
    try:
        device = resolve_device(cfg["device"])
    except DeviceError as exc:
        raise JobError(str(exc)) from None
    job = build_job(cfg, data_dir, profile=profile)
    reason = job.na_reason
    if reason is not None and not na_ok:
        can = compatible_variants(job.task.requirements())
        raise JobError(
            f"variant {variant!r} cannot run task {task_name!r}: it {reason}; "
            f"variants that can: {', '.join(can) or '(none)'}"
        )

    try:
        parallel, device = distributed.setup(parallel, device)
    except distributed.DistributedError as exc:
        raise JobError(str(exc)) from None
    main = parallel.is_main
    lock = _job_lock(record_file) if main else contextlib.nullcontext()
    with lock, determinism(cfg["deterministic"]):
        if main:
            _remove_stale_temporaries(record_file)
        torch.set_num_threads(threads or cfg["threads"])
        record = _base_record(job, seed)
        row = row_setting(profile, task_name, variant)
        if row is not None:  # the leaderboard's column and row label (see row_setting)
            record["row"] = row
        identity = {"config_hash": record["config_hash"], "seed": seed}
        if parallel.enabled:  # a checkpoint resumes only at the same world size
            identity["world_size"] = parallel.world_size
        resume = Resume(records.resume_path(record_file), identity, writer=main)
        if reason is not None:
            record |= {"status": "n/a", "reason": reason}
        else:
            failure = _run(
                record,
                job,
                seed,
                device,
                resume,
                record_file,
                progress,
                parallel,
                data_dir=data_dir,
            )
            if failure is not None and parallel.enabled:
                raise JobFailed(
                    f"{task_name} × {variant} seed {seed} failed on rank {parallel.rank}: "
                    f"{record['reason']}"
                ) from failure
            if failure is not None:
                if not record_failures:
                    raise JobFailed(
                        f"{task_name} × {variant} seed {seed} failed: {record['reason']}"
                    ) from failure
                print(record["traceback"], file=sys.stderr, end="", flush=True)  # the job log
        if main:
            record["resumed_from"] = resume.resumed_from
            record["peak_memory_bytes"], record["peak_memory_kind"] = peak_memory(device)
            record["device"] = device_info(device)  # rank 0's, in a distributed run
            record["distributed"] = parallel.as_record()
            record["finished_at"] = now()
            record["wall_time_s"] = time.perf_counter() - wall0 + resume.prior_wall_s
            records.write_record(record_file, record)
            resume.path.unlink(missing_ok=True)
            if cfg.get("tune"):
                for index in range(len(grid_points(cfg["tune"]))):
                    records.resume_path(record_file, point=index).unlink(missing_ok=True)
    # The other ranks wait here until rank 0 has written everything, and return its record.
    return distributed.broadcast(record, parallel)


@dataclass
class GridOutcome:
    """What :func:`_train_grid` returns: the selected point's model and result (None if
    every point diverged), the divergences, the grid's record entry and its total cost."""

    model: torch.nn.Module
    result: TrainResult | None
    diverged: list[Diverged]
    tuning: dict[str, Any] | None
    train_time_s: float
    eval_time_s: float
    train_tokens: int


def _train_grid(
    job: Job,
    seed: int,
    device: torch.device,
    resume: Resume,
    record_file: Path,
    progress: bool,
    parallel: DistContext,
) -> GridOutcome:
    """Train the job once per point of its tuning grid (once without one) and select the
    point with the best validation score (:mod:`attnbench.tuning`).

    Each point starts from the same seed, so it gets the same initial weights and data
    order, and keeps its own resume checkpoint (``records.resume_path(..., point=i)``).
    Without a grid this is one plain run with ``resume``; a divergence then raises.
    """
    task, cfg = job.task, job.cfg
    tune = cfg.get("tune")
    points = grid_points(tune)
    rows: list[dict[str, Any]] = []
    scores: list[float | None] = []
    kept: tuple[torch.nn.Module, TrainResult] | None = None
    diverged: list[Diverged] = []
    train_time = eval_time = 0.0
    tokens = 0
    select = task.selection_metric or task.metric
    higher = task.selection_higher_is_better
    higher = task.higher_is_better if higher is None else higher
    model: torch.nn.Module | None = None
    for index, point in enumerate(points):
        seed_everything(seed)
        model = job.build_model()
        if parallel.enabled:
            seed_everything(seed + parallel.rank)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        point_resume = resume
        if tune is not None:
            point_resume = Resume(
                records.resume_path(record_file, point=index),
                {**resume.identity, "grid_point": point},
                writer=resume.writer,
            )
        try:
            result = train(
                task,
                model,
                TrainConfig(**{**cfg["train"], **point}),
                seed=seed,
                device=device,
                progress=progress,
                resume=point_resume,
                parallel=parallel,
            )
        except Diverged as exc:
            if tune is None:
                raise
            diverged.append(exc)
            scores.append(None)
            rows.append({**point, "status": "diverged", "reason": str(exc)})
            continue
        finally:
            if point_resume is not resume:
                resume.resumed_from += point_resume.resumed_from
                resume.prior_wall_s += point_resume.prior_wall_s
        train_time += result.train_time_s
        eval_time += result.eval_time_s
        tokens += result.train_tokens
        score = result.val.get(select) if parallel.is_main else None
        scores.append(None if score is None else float(score))
        rows.append(
            {
                **point,
                "status": "ok",
                "best_step": result.best_step,
                "val": result.val,
                "test": result.test,
                "train_time_s": result.train_time_s,
            }
        )
        best = best_point(scores, higher)
        if best == index or kept is None:
            kept = (model, result)
    assert model is not None
    tuning = None
    selected = best_point(scores, higher)
    if tune is not None:
        tuning = {
            "grid": tune,
            "selected": points[selected] if selected is not None else None,
            "selection": f"best validation {select} ({'max' if higher else 'min'})",
            "points": rows,
        }
    if not parallel.is_main:  # the other ranks report no validation: the last model
        assert kept is not None
        return GridOutcome(kept[0], kept[1], diverged, tuning, train_time, eval_time, tokens)
    if selected is None:
        return GridOutcome(model, None, diverged, tuning, train_time, eval_time, tokens)
    assert kept is not None and kept[1] is not None
    return GridOutcome(kept[0], kept[1], diverged, tuning, train_time, eval_time, tokens)


def _run(
    record: dict[str, Any],
    job: Job,
    seed: int,
    device: torch.device,
    resume: Resume,
    record_file: Path,
    progress: bool,
    parallel: DistContext = SINGLE,
    *,
    data_dir: Path,
) -> Exception | None:
    """Build, train, test and write the artifacts; fill ``record`` with the outcome.

    The trivial baselines come from ``data_dir`` when saved there with the data
    (:func:`attnbench.baselines.task_baselines`).

    Returns the exception of a failed run (``record`` then has status ``failed``).
    Distributed: every rank builds the same model (same seed; DDP also broadcasts rank
    0's weights), then draws dropout and other forward-pass randomness from ``seed +
    rank``; ranks other than 0 stop after training.
    """
    task, cfg = job.task, job.cfg
    try:
        outcome = _train_grid(job, seed, device, resume, record_file, progress, parallel)
        model, result = outcome.model, outcome.result
        record["n_params"] = count_parameters(model)
        if outcome.tuning is not None:
            record["tuning"] = outcome.tuning
        if result is None:  # every grid point diverged: report the first
            first = outcome.diverged[0]
            record |= {"status": "diverged", "reason": str(first), "diverged_at_step": first.step}
            with contextlib.suppress(Exception):
                record["task_info"] = task.record_info()
            return None
        if not parallel.is_main:
            return None
        record["metrics"] = {
            "val": result.val,
            "test": result.test,
            "best_step": result.best_step,
            "baselines": task_baselines(task, data_dir),
        }
        record["history"] = result.history
        record["attention"] = task.attention_analysis(model, device)
        attention_maps = record["attention"].pop("maps", None)
        # the whole grid's cost (one point's without a grid); tokens/s is the selected run's
        record["train_time_s"] = outcome.train_time_s
        record["eval_time_s"] = outcome.eval_time_s
        record["train_tokens"] = outcome.train_tokens
        record["tokens_per_s"] = result.train_tokens / max(result.train_time_s, 1e-9)
        stem = record_file.with_suffix("")
        evaluation = result.test_evaluation
        assert evaluation is not None
        lines = "".join(json.dumps(p) + "\n" for p in evaluation.predictions)
        records.atomic_write_text(stem.with_name(stem.name + ".predictions.jsonl"), lines)
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "config": cfg, "seed": seed}, buffer)
        records.atomic_write_bytes(stem.with_name(stem.name + ".best.pt"), buffer.getvalue())
        record["artifacts"] = {
            "predictions": stem.name + ".predictions.jsonl",
            "checkpoint": stem.name + ".best.pt",
            **task.write_artifacts(stem, evaluation),
        }
        if attention_maps is not None:  # the first analysis example, for the report's gallery
            maps_buffer = io.BytesIO()
            np.savez_compressed(maps_buffer, weights=attention_maps)
            records.atomic_write_bytes(
                stem.with_name(stem.name + ".attention.npz"), maps_buffer.getvalue()
            )
            record["artifacts"]["attention_maps"] = stem.name + ".attention.npz"
        record["task_info"] = task.record_info(evaluation)
        return None
    except Diverged as exc:
        record |= {"status": "diverged", "reason": str(exc), "diverged_at_step": exc.step}
        with contextlib.suppress(Exception):
            record["task_info"] = task.record_info()
        return None
    except ResumeError as exc:
        raise JobError(str(exc)) from None
    except Exception as exc:
        record |= {
            "status": "failed",
            "reason": first_line(exc),
            "traceback": "".join(traceback.format_exception(exc))[-20_000:],
            "metrics": {},
        }
        return exc
