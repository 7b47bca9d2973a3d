"""The trainer: one loop for every task and variant.

AdamW/Adam, linear warm-up then constant / linear / cosine / inverse-square-root
decay, gradient clipping, bf16 autocast on CUDA, periodic validation, and — a
known LRA reproducibility trap — the test split is evaluated at the **best
validation checkpoint**, not at the last step. A NaN or infinite loss stops the
run with status ``diverged`` (the caller writes that record). With
``average_checkpoints: k > 1`` the tested model is instead the parameter average of the
last ``k`` evaluation checkpoints (Vaswani et al. 2017 average the last 5), and the
test evaluation's ``info`` says so (:func:`average_state_dicts`).

A run killed at any moment resumes *exactly*: every ``checkpoint_every`` steps and
at each evaluation the trainer atomically writes a resume checkpoint holding the
model, optimiser, scheduler, running averages, history, best state, timings, the
position in the data stream (epoch, batch) and every random generator (Python,
NumPy, torch CPU and CUDA). Data order is a pure function of (seed, epoch), so a
resumed run draws the same batches with the same dropout masks as an uninterrupted
one and, on CPU, ends with bit-identical metrics. The file is read with
``torch.load(weights_only=True)``: it holds only tensors and plain Python values.

Under ``torchrun`` (:mod:`attnbench.distributed`) every rank trains on its slice of
each global batch inside ``DistributedDataParallel``; rank 0 alone validates, tests
and writes the resume checkpoint, which then holds every rank's random generators.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from attnbench import distributed
from attnbench.distributed import SINGLE, DistContext
from attnbench.tasks.base import Evaluation


@dataclass
class TrainConfig:
    """Optimisation settings; the profile sets them globally and per task."""

    optimizer: str = "adamw"  # "adamw" | "adam"
    lr: float = 1e-3  # peak learning rate
    betas: tuple[float, float] | list[float] = (0.9, 0.98)  # LRA uses (0.9, 0.98)
    eps: float = 1e-9
    weight_decay: float = 0.01
    batch_size: int = 32
    eval_batch_size: int = 128
    steps: int = 1000  # optimiser steps
    warmup_steps: int = 100  # linear warm-up from 0 to lr
    schedule: str = "cosine"  # decay after warm-up: constant | linear | cosine | rsqrt
    min_lr_ratio: float = 0.0  # floor of linear/cosine decay, as a fraction of lr
    grad_clip: float | None = 1.0  # max global grad norm (None: off)
    eval_every: int = 100  # validate every N steps (and at the end)
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    log_every: int = 10  # progress-bar refresh / history interval
    checkpoint_every: int = 500  # write the resume checkpoint every N steps (and at each eval)
    # test the mean parameters of the last k evaluation checkpoints (1: the best validation
    # checkpoint, no averaging)
    average_checkpoints: int = 1

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # YAML gives a list
        checks = {
            "lr": self.lr > 0,
            "eps": self.eps > 0,
            "batch_size": self.batch_size > 0,
            "eval_batch_size": self.eval_batch_size > 0,
            "steps": self.steps > 0,
            "warmup_steps": self.warmup_steps >= 0,
            "eval_every": self.eval_every > 0,
            "log_every": self.log_every > 0,
            "checkpoint_every": self.checkpoint_every > 0,
            "weight_decay": self.weight_decay >= 0,
            "average_checkpoints": self.average_checkpoints >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"train.{name} is out of range: {getattr(self, name)!r}")
        choices = {
            "optimizer": ("adamw", "adam"),
            "schedule": ("constant", "linear", "cosine", "rsqrt"),
            "precision": ("auto", "fp32", "bf16"),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"train.{name}={getattr(self, name)!r}; valid choices: {', '.join(valid)}"
                )


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimiser step ``step`` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "rsqrt":  # LRA / T2T: 1/sqrt(step) after warm-up, continuous at the join
        return math.sqrt(max(cfg.warmup_steps, 1) / (step + 1))
    span = max(cfg.steps - cfg.warmup_steps - 1, 1)  # the last step (steps - 1) hits the floor
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    if cfg.schedule == "linear":
        decay = 1.0 - progress
    else:  # cosine
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay


def decay_exempt_parameters(model: nn.Module) -> set[int]:
    """``id`` of every parameter a module of ``model`` declares exempt from weight decay
    (``decay_exempt``: attribute names; see :class:`attnbench.attention.Attention`)."""
    exempt = set()
    for module in model.modules():
        for name in getattr(module, "decay_exempt", ()):
            value = getattr(module, name, None)  # a parameter, a module, or None (unused)
            if isinstance(value, nn.Parameter):
                exempt.add(id(value))
            elif isinstance(value, nn.Module):
                exempt.update(id(p) for p in value.parameters())
    return exempt


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on matrices only (not on biases, norms or embeddings' bias terms), and
    not on the structural parameters a variant declares exempt (``decay_exempt``)."""
    exempt = decay_exempt_parameters(model)
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and id(p) not in exempt else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


class Diverged(RuntimeError):
    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"loss became {loss} at step {step}")
        self.step = step
        self.loss = loss


class ResumeError(ValueError):
    """A resume checkpoint exists but cannot be used; the message is one line for the user."""


RESUME_FORMAT = 1
_RESUME_KEYS = (
    "format",
    "identity",
    "step",
    "epoch",
    "batch",
    "model",
    "optimizer",
    "scheduler",
    "running",
    "running_aux",
    "history",
    "best",
    "train_tokens",
    "train_time_s",
    "eval_time_s",
    "wall_s",
    "resumed_from",
    "rng",
)
RNG_BY_RANK = "rng_by_rank"  # distributed runs: every rank's generators, in rank order
AVERAGED = "averaged"  # checkpoint averaging: the last k evaluation states and their steps


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Resume:
    """Where the trainer keeps its resume checkpoint, and which run it belongs to.

    A checkpoint is used only if its ``identity`` (the runner passes the job's config
    hash and seed) equals this one; a checkpoint of another configuration is
    discarded, with a line in the log, and the run starts from step 0.
    """

    path: Path
    identity: dict[str, Any]
    log: Callable[[str], None] = _log
    # False on ranks other than 0 of a distributed run: they read the checkpoint but never
    # write, delete or report on it (rank 0 does).
    writer: bool = True
    # Set by train() when it continues a checkpoint (kept here so that a run that then
    # diverges or fails still reports them):
    resumed_from: list[int] = field(default_factory=list)  # steps the run was resumed at
    prior_wall_s: float = 0.0  # wall time spent in train() by interrupted earlier processes


def rng_state() -> dict[str, Any]:
    """Every global random generator, as tensors and plain values (``weights_only``-loadable)."""
    version, keys, gauss = random.getstate()
    name, mt, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": (version, tuple(keys), gauss),
        "numpy": (
            str(name),
            torch.from_numpy(np.asarray(mt, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, mt, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, mt.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def read_resume(resume: Resume) -> dict[str, Any] | None:
    """The saved training state of this run, or ``None`` if there is none to continue from.

    Raises :class:`ResumeError` (one line, naming the file and how to discard it) for a
    file that cannot be read.
    """
    path = resume.path
    if not path.exists():
        return None
    discard = f"delete it to restart this run from step 0: rm {path}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:120]
        raise ResumeError(
            f"corrupt resume checkpoint {path} (torch.load: {type(exc).__name__}: {first}); "
            f"{discard}"
        ) from None
    if not isinstance(state, dict):
        raise ResumeError(f"corrupt resume checkpoint {path} (not a dict); {discard}")
    if state.get("format") != RESUME_FORMAT or state.get("identity") != resume.identity:
        if not resume.writer:
            return None
        resume.log(
            f"discarding resume checkpoint {path}: it belongs to another configuration "
            f"({state.get('identity')} format {state.get('format')}, this run: "
            f"{resume.identity} format {RESUME_FORMAT}); starting from step 0"
        )
        path.unlink(missing_ok=True)
        return None
    missing = [key for key in _RESUME_KEYS if key not in state]
    if missing:
        raise ResumeError(
            f"corrupt resume checkpoint {path} (missing {', '.join(missing)}); {discard}"
        )
    return state


def _write_resume(resume: Resume, state: dict[str, Any]) -> None:
    from attnbench.records import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({"format": RESUME_FORMAT, "identity": resume.identity, **state}, buffer)
    atomic_write_bytes(resume.path, buffer.getvalue())


class TrainStream:
    """Training batches, epoch after epoch, from a resumable position.

    ``(epoch, index)`` is where the next batch comes from: batch ``index`` of epoch
    ``epoch``. The task's order is a pure function of (seed, epoch), so opening epoch
    ``e`` and skipping ``i`` batches lands exactly where an uninterrupted run was.
    """

    def __init__(self, task, batch_size: int, seed: int, epoch: int = 0, index: int = 0) -> None:
        self.task, self.batch_size, self.seed = task, batch_size, seed
        self.epoch, self.index = epoch, 0
        self._batches = self._open()
        for _ in range(index):
            next(self)

    def _open(self) -> Iterator[Any]:
        return iter(
            self.task.batches(
                "train", self.batch_size, shuffle=True, epoch=self.epoch, seed=self.seed
            )
        )

    def __iter__(self) -> TrainStream:
        return self

    def __next__(self) -> Any:
        for _ in range(2):  # the current epoch, then (if it is used up) the next one
            try:
                batch = next(self._batches)
            except StopIteration:
                self.epoch, self.index = self.epoch + 1, 0
                self._batches = self._open()
                continue
            self.index += 1
            return batch
        raise RuntimeError(f"task {self.task.name!r}: the train split yields no batches")


def _read_resume_on_every_rank(
    resume: Resume | None, parallel: DistContext
) -> dict[str, Any] | None:
    """:func:`read_resume` on every rank; all of them must resume at the same step.

    Rank 0 reads last: it may delete a checkpoint of another configuration, which the
    other ranks then have read (and discarded) already.
    """
    if resume is None:
        return None
    if not parallel.enabled:
        return read_resume(resume)
    saved = None if parallel.is_main else read_resume(resume)
    distributed.barrier(parallel)
    if parallel.is_main:
        saved = read_resume(resume)
    steps = distributed.all_gather(None if saved is None else saved["step"], parallel)
    if len(set(steps)) > 1:
        raise ResumeError(
            f"the ranks found different resume checkpoints at {resume.path} (steps {steps}); "
            f"delete it to restart this run from step 0: rm {resume.path}"
        )
    return saved


def _own_rng(saved: dict[str, Any], parallel: DistContext, resume: Resume | None) -> Any:
    """The random state this rank saved: rank 0's is ``rng``, every rank's ``rng_by_rank``."""
    if not parallel.enabled:
        return saved["rng"]
    states = saved.get(RNG_BY_RANK)
    if not isinstance(states, list) or len(states) != parallel.world_size:
        path = resume.path if resume is not None else "(resume checkpoint)"
        raise ResumeError(
            f"resume checkpoint {path} lacks the random state of {parallel.world_size} ranks; "
            f"delete it to restart this run from step 0: rm {path}"
        )
    return states[parallel.rank]


def average_state_dicts(states: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The element-wise mean of state dicts of one model (checkpoint averaging).

    Floating-point entries are averaged (in float64, returned in their own dtype); other
    entries (integer buffers, masks) are taken from the last state. One state comes
    back unchanged.
    """
    if not states:
        raise ValueError("average_state_dicts needs at least one state")
    if len(states) == 1:
        return dict(states[0])
    out = {}
    for key, last in states[-1].items():
        if torch.is_floating_point(last):
            stacked = torch.stack([s[key].to(torch.float64) for s in states])
            out[key] = stacked.mean(dim=0).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then ``cfg.schedule`` decay (:func:`lr_factor`), stepped once per step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))


def optimizer_step(
    loss: Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_clip: float | None,
) -> None:
    """The trainer's update from one batch's loss: backward, clip, step, schedule.

    Gradients are freed at the end (``set_to_none``), so they do not outlive the step;
    the efficiency sweep's ``train_step`` mode times exactly this function.
    """
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass
class TrainResult:
    # The tested checkpoint's step and validation metrics: the best validation checkpoint,
    # or with checkpoint averaging the newest averaged step and the average's metrics.
    best_step: int
    val: dict[str, float]
    test: dict[str, float]
    test_evaluation: Evaluation | None  # the test split's evaluation (None on ranks > 0)
    train_tokens: int
    train_time_s: float
    eval_time_s: float
    history: list[dict[str, Any]] = field(default_factory=list)


def autocast_context(device: torch.device, cfg: TrainConfig):
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def train(
    task,
    model: nn.Module,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    progress: bool = True,
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
    resume: Resume | None = None,
    parallel: DistContext = SINGLE,
) -> TrainResult:
    """Train ``model`` on ``task`` for ``cfg.steps`` steps; test at the best validation step.

    With ``resume``, continue from its checkpoint if there is one of this run, and
    keep it up to date every ``cfg.checkpoint_every`` steps and at each evaluation.
    The caller deletes it once the run's record is written.

    With a distributed ``parallel`` context (process group already set up), every rank
    calls this with the same model, config and seed; the ranks other than 0 return a
    result without validation or test metrics (``best_step`` -1).
    """
    entered = time.perf_counter()
    model.to(device)
    main = parallel.is_main
    # The model that trains (DDP averages gradients); ``model`` itself evaluates on rank 0.
    trained = distributed.wrap(model, parallel, device)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    select = task.selection_metric or task.metric
    higher = task.selection_higher_is_better
    sign = 1.0 if (task.higher_is_better if higher is None else higher) else -1.0
    best_score, best_step, best_state, best_val = -math.inf, -1, None, {}
    history: list[dict[str, Any]] = []
    train_tokens, train_time, eval_time, prior_wall = 0, 0.0, 0.0, 0.0
    running = 0.0
    running_aux: float | None = None
    start, epoch, index, resumed_from = 0, 0, 0, []
    # checkpoint averaging: the last k evaluation states (CPU copies) and their steps
    averaged: dict[str, list[Any]] = {"steps": [], "states": []}

    saved = _read_resume_on_every_rank(resume, parallel)
    if saved is not None:
        assert resume is not None
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            first = (str(exc).splitlines() or [""])[0][:120]
            raise ResumeError(
                f"resume checkpoint {resume.path} does not fit this model ({first}); "
                f"delete it to restart this run from step 0: rm {resume.path}"
            ) from None
        start, epoch, index = saved["step"], saved["epoch"], saved["batch"]
        running, running_aux = saved["running"], saved["running_aux"]
        history = saved["history"]
        best = saved["best"]
        best_score, best_step, best_val, best_state = (
            best["score"],
            best["step"],
            best["val"],
            best["state"],
        )
        train_tokens = saved["train_tokens"]
        train_time, eval_time = saved["train_time_s"], saved["eval_time_s"]
        prior_wall = saved["wall_s"]
        averaged = saved.get(AVERAGED) or averaged
        resumed_from = [*saved["resumed_from"], start]
        resume.resumed_from, resume.prior_wall_s = resumed_from, prior_wall
        if main:
            resume.log(f"resuming {resume.path.name} at step {start} of {cfg.steps}")

    stream = TrainStream(task, cfg.batch_size, seed, epoch, index)
    if saved is not None:  # after skipping to the position, so nothing disturbs them
        set_rng_state(_own_rng(saved, parallel, resume))

    def checkpoint(step: int) -> None:
        assert resume is not None
        rngs = distributed.all_gather(rng_state(), parallel)  # a collective: every rank
        if not main:
            return
        extra = {RNG_BY_RANK: rngs} if parallel.enabled else {}
        _write_resume(
            resume,
            {
                "step": step,
                "epoch": stream.epoch,
                "batch": stream.index,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "running": running,
                "running_aux": running_aux,
                "history": history,
                "best": {
                    "score": best_score,
                    "step": best_step,
                    "val": best_val,
                    "state": best_state,
                },
                "train_tokens": train_tokens,
                "train_time_s": train_time,
                "eval_time_s": eval_time,
                "wall_s": prior_wall + time.perf_counter() - entered,
                "resumed_from": resumed_from,
                "rng": rngs[0],
                **({AVERAGED: averaged} if cfg.average_checkpoints > 1 else {}),
                **extra,
            },
        )

    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc=f"{task.name}",
        disable=not (progress and main),
        leave=False,
        mininterval=2,
    )
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        trained.train()
        global_batch = next(stream)
        batch, scale = distributed.shard(global_batch, parallel)
        batch = batch.to(device)
        with autocast_context(device, cfg):
            loss, aux = task.loss(trained, batch)
        if parallel.enabled:  # the global batch's loss, the same on every rank
            parts = [loss.detach()] + ([] if aux is None else [aux.detach()])
            sums = distributed.all_sum(
                [float(x) * scale / parallel.world_size for x in parts], parallel, device
            )
            value, aux_global = sums[0], sums[-1]
            loss = loss * scale
        else:
            value, aux_global = float(loss.detach()), math.nan
        if not math.isfinite(value):
            bar.close()
            raise Diverged(step, value)
        optimizer_step(loss, model, optimizer, scheduler, cfg.grad_clip)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - t0
        train_tokens += global_batch.n_tokens
        running = value if step == 0 else 0.9 * running + 0.1 * value
        if aux is not None:  # auxiliary losses (sparsity penalties ...) are logged on their own
            aux_value = aux_global if parallel.enabled else float(aux.detach())
            running_aux = aux_value if running_aux is None else 0.9 * running_aux + 0.1 * aux_value
        bar.update(1)
        if (step + 1) % cfg.log_every == 0:
            bar.set_postfix(loss=f"{running:.3f}", refresh=False)

        evaluate = (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps
        if evaluate and main:  # the other ranks wait for rank 0 in the next all-reduce
            t1 = time.perf_counter()
            model.eval()
            with autocast_context(device, cfg):
                val = task.evaluate(model, "val", cfg.eval_batch_size, device).metrics
            eval_time += time.perf_counter() - t1
            entry = {"step": step + 1, "train_loss": running, "lr": scheduler.get_last_lr()[0]}
            if running_aux is not None:
                entry["train_aux_loss"] = running_aux
            history.append({**entry, "val": val})
            score = sign * val[select]
            if score > best_score:  # keep the best checkpoint by validation metric
                best_score, best_step, best_val = score, step + 1, val
                best_state = copy.deepcopy(model.state_dict())
            if cfg.average_checkpoints > 1:
                keep = cfg.average_checkpoints - 1
                averaged = {
                    "steps": [*averaged["steps"][-keep:], step + 1],
                    "states": [*averaged["states"][-keep:], _cpu_state(model)],
                }
            if on_eval is not None:
                on_eval(step + 1, val)
            bar.set_postfix(loss=f"{running:.3f}", val=f"{val[select]:.4f}", refresh=False)
        if resume is not None and (evaluate or (step + 1) % cfg.checkpoint_every == 0):
            checkpoint(step + 1)
    bar.close()

    if not main:
        return TrainResult(-1, {}, {}, None, train_tokens, train_time, eval_time, [])
    assert best_state is not None
    tested: dict[str, Any] | None = None
    if cfg.average_checkpoints > 1:
        # the mean of the last k evaluation checkpoints is tested, and validated again
        model.load_state_dict(average_state_dicts(averaged["states"]))
        model.eval()
        t1 = time.perf_counter()
        with autocast_context(device, cfg):
            best_val = task.evaluate(model, "val", cfg.eval_batch_size, device).metrics
        eval_time += time.perf_counter() - t1
        tested = {
            "checkpoint": f"average of the last {len(averaged['steps'])} evaluation checkpoints",
            "average_checkpoints": cfg.average_checkpoints,
            "averaged_steps": list(averaged["steps"]),
            "best_validation_step": best_step,
        }
        best_step = averaged["steps"][-1]
    else:
        model.load_state_dict(best_state)
    model.eval()
    t1 = time.perf_counter()
    with autocast_context(device, cfg):
        evaluation = task.evaluate(model, "test", cfg.eval_batch_size, device)
    eval_time += time.perf_counter() - t1
    if tested is not None:  # the record says which parameters were tested
        evaluation = dataclasses.replace(evaluation, info={**evaluation.info, **tested})
    return TrainResult(
        best_step=best_step,
        val=best_val,
        test=evaluation.metrics,
        test_evaluation=evaluation,
        train_tokens=train_tokens,
        train_time_s=train_time,
        eval_time_s=eval_time,
        history=history,
    )
