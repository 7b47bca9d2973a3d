"""One variant's sweep: the settings of the grid, each point's step, the series rules.

What one point runs (its coordinates: :class:`attnbench.bench.records.Setting`):

* **modes** — ``fwd``: one attention layer (``variant.build(AttentionDims(d_model =
  heads·head_dim, …, max_len = length))``, training mode) called under
  ``torch.no_grad()``; ``fwd_bwd``: the same layer, forward then
  ``out.sum().backward()`` with the input requiring a gradient (:func:`layer_step`);
  ``train_step``: one optimiser step of the task model (the profile's model and
  optimiser for ``bench.task``, ``max_len`` = length): forward, loss, backward,
  gradient clipping, AdamW, on a synthetic full-length batch (:func:`train_step`,
  through the trainer's own ``make_optimizer`` / ``make_scheduler`` /
  ``optimizer_step``). Heads and head dim of a ``train_step`` come from the task
  model, causal masking from the task.
* **dtype** — ``fp32``; ``bf16`` = ``torch.autocast(bfloat16)`` with fp32 parameters,
  as :mod:`attnbench.train` trains on CUDA (pure-bf16 modules break variants
  that call fp32-only routines).

How a series (one setting at every length, :func:`run_series`) goes on:

* **failures** — after an ``OOM`` point the longer lengths of that series are
  recorded as ``skipped``. So are lengths whose projected step time (from the
  last two measured lengths) exceeds ``time_cap_s`` (a wall-clock rule: a busy
  machine skips more). A failure of another kind (``error``) does not stop the
  series. A setting the variant cannot run (causal masking it does not support, a
  length beyond its ``max_length``; :func:`attnbench.attention.check_support`) is
  ``n/a`` with the reason.
* **long lengths** — ``long_lengths`` (e.g. 32768 on GPU) run only for series whose
  memory grows sub-quadratically: the fitted memory exponent over the main
  lengths is at most ``bench.subquadratic_max_exponent``; otherwise they are
  ``skipped`` with the measured exponent as the reason.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any

import torch
from torch import nn

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    Requirements,
    VariantSpec,
    check_support,
    get_variant,
)
from attnbench.bench.measure import MIB, fit_exponent, measure_point
from attnbench.bench.records import (
    RECORD_KIND,
    SCHEMA_VERSION,
    Setting,
    empty_point,
    validate_bench_record,
)
from attnbench.config import BenchConfig, GridConfig, bench_job_config, config_hash, job_config
from attnbench.job import build_job
from attnbench.provenance import device_info, git_commit, library_versions, now
from attnbench.tasks.base import (
    CLS_ID,
    Batch,
    SequenceClassificationTask,
    Task,
)
from attnbench.train import TrainConfig, make_optimizer, make_scheduler, optimizer_step


# ---------------------------------------------------------------------------------------
# One point's step
# ---------------------------------------------------------------------------------------
def autocast(device: torch.device, dtype: str):
    """The autocast context of ``dtype``: bfloat16 for ``bf16``, disabled for ``fp32``."""
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def layer_step(
    spec: VariantSpec, options: dict[str, Any] | None, s: Setting, device: torch.device
) -> Callable[[], None]:
    """One attention layer at setting ``s``: forward under no_grad, or forward + backward."""
    torch.manual_seed(0)
    dims = AttentionDims(
        d_model=s.heads * s.head_dim,
        n_heads=s.heads,
        head_dim=s.head_dim,
        max_len=s.length,
        is_causal=s.causal,
    )
    layer = spec.build(dims, options).to(device).train()
    x = torch.randn(s.batch, s.length, dims.d_model, device=device)
    ctx = AttentionContext(
        mask=AttentionMask(causal=s.causal), positions=torch.arange(s.length, device=device)
    )
    if s.mode == "fwd":

        def forward() -> None:
            with torch.no_grad(), autocast(device, s.dtype):
                layer(x, None, ctx)

        return forward

    x.requires_grad_(True)

    def forward_backward() -> None:
        with autocast(device, s.dtype):
            out = layer(x, None, ctx).out
        out.float().sum().backward()
        # nothing of this step outlives it, so the next one starts from the same memory
        layer.zero_grad(set_to_none=True)
        x.grad = None

    return forward_backward


def synthetic_batch(task: Any, batch: int, length: int, gen: torch.Generator) -> Any:
    """A full-length batch of random inputs for ``task`` (the model's cost, not the data's).

    Uses the task's own ``synthetic_batch(batch, length, generator)`` if it has one;
    single-sequence classification tasks get ``[CLS]`` + random non-special tokens,
    no padding, random labels. Other tasks raise ``ValueError`` (→ ``n/a``).
    """
    own = getattr(task, "synthetic_batch", None)
    if callable(own):
        return own(batch, length, gen)
    reason = synthetic_batch_reason(task)
    if reason is not None:
        raise ValueError(reason)
    assert isinstance(task, SequenceClassificationTask)
    ids = torch.randint(CLS_ID + 1, task.vocab_size(), (batch, length), generator=gen)
    ids[:, 0] = CLS_ID
    targets = torch.randint(0, task.n_classes, (batch,), generator=gen)
    padding = torch.ones(batch, length, dtype=torch.bool)
    return Batch({"ids": ids, "key_padding": padding}, targets, batch * length)


def synthetic_batch_reason(task: Any) -> str | None:
    """Why :func:`synthetic_batch` cannot serve ``task`` (its train_step is n/a), or None."""
    if callable(getattr(task, "synthetic_batch", None)):
        return None
    if isinstance(task, SequenceClassificationTask):
        return None
    return f"task {task.name!r} has no synthetic_batch(batch, length, generator) method"


def _task_and_model(job: dict[str, Any], length: int) -> tuple[Task, nn.Module]:
    """The task of job config ``job`` (no data: batches are synthetic) and its model, built
    by :func:`attnbench.job.build_job` as a training run builds them, for ``length`` tokens."""
    built = build_job(job, None, model_overrides={"max_len": length})
    torch.manual_seed(0)
    return built.task, built.build_model()


def train_step(s: Setting, device: torch.device, job: dict[str, Any]) -> Callable[[], None]:
    """One optimiser step of the task model (as :func:`attnbench.train.train` does it);
    ``job``: the job config of the task and variant."""
    task, model = _task_and_model(job, s.length)
    model = model.to(device).train()
    train_cfg = TrainConfig(**job["train"])
    optimizer = make_optimizer(model, train_cfg)
    scheduler = make_scheduler(optimizer, train_cfg)
    data = synthetic_batch(task, s.batch, s.length, torch.Generator().manual_seed(0)).to(device)

    def step() -> None:
        with autocast(device, s.dtype):
            loss, _ = task.loss(model, data)
        optimizer_step(loss, model, optimizer, scheduler, train_cfg.grad_clip)

    return step


# ---------------------------------------------------------------------------------------
# One series (a setting at every length) and one variant's sweep
# ---------------------------------------------------------------------------------------
def run_series(
    measure_at: Callable[[int], dict[str, Any]],
    skipped_at: Callable[[int, str], dict[str, Any]],
    lengths: list[int],
    long_lengths: list[int],
    grid: GridConfig,
    max_exponent: float,
) -> list[dict[str, Any]]:
    """Measure one series over its lengths, shortest first, with the skip rules.

    After an OOM the longer lengths are ``skipped``; a length whose step time,
    projected from the last two measured lengths (log–log slope clamped to [1, 3],
    2 with one measured length), exceeds ``time_cap_s`` is ``skipped`` with the
    longer ones; ``long_lengths`` run only if the memory exponent fitted on the
    main lengths is at most ``max_exponent``.
    """
    points: list[dict[str, Any]] = []
    stop: str | None = None

    def run(length: int) -> None:
        nonlocal stop
        if stop is None and grid.time_cap_s is not None:
            projected = project_seconds(points, length)
            if projected is not None and projected > grid.time_cap_s:
                stop = (
                    f"projected step time {projected:.1f} s at length {length} exceeds "
                    f"time_cap_s = {grid.time_cap_s:g} s"
                )
        if stop is not None:
            points.append(skipped_at(length, stop))
            return
        point = measure_at(length)
        points.append(point)
        if point["status"] == "OOM":
            stop = f"out of memory at length {length}"

    for length in sorted(lengths):
        run(length)
    extra = sorted(set(long_lengths) - set(lengths))
    if extra:
        ok = [p for p in points if p["status"] == "ok"]
        exponent = fit_exponent([p["length"] for p in ok], [p["peak_memory_bytes"] for p in ok])
        unsupported = all(p["status"] == "n/a" for p in points)  # the long ones are n/a too
        if stop is None and not unsupported and (exponent is None or exponent > max_exponent):
            if exponent is None:
                reason = "long lengths need a memory exponent; too few measured lengths"
            else:
                reason = (
                    f"memory grows as length^{exponent:.2f} (> {max_exponent:g}); "
                    "long lengths are for sub-quadratic variants"
                )
            points.extend(skipped_at(length, reason) for length in extra)
        else:
            for length in extra:
                run(length)
    return points


def project_seconds(points: list[dict[str, Any]], length: int) -> float | None:
    """Step time at ``length`` extrapolated from the longest measured lengths."""
    ok = [p for p in points if p["status"] == "ok" and p["length"] < length]
    if not ok:
        return None
    last = ok[-1]
    slope = 2.0
    if len(ok) >= 2:
        prev = ok[-2]
        slope = math.log(last["median_ms"] / prev["median_ms"]) / math.log(
            last["length"] / prev["length"]
        )
        slope = min(max(slope, 1.0), 3.0)
    return last["median_ms"] / 1000.0 * (length / last["length"]) ** slope


def series_settings(
    grid: GridConfig, model: dict[str, Any], task_causal: bool
) -> Iterator[Setting]:
    """Every series of the grid, as a setting with ``length`` 0, in the grid's order.

    ``train_step`` series vary the batch only: heads and head dim are the task
    model's (``model``), causal masking the task's.
    """
    for mode in grid.modes:
        if mode == "train_step":
            for batch in grid.batch:
                yield Setting(
                    mode, 0, batch, model["n_heads"], model["head_dim"], task_causal, grid.dtype
                )
        else:
            for batch, heads, head_dim, causal in product(
                grid.batch, grid.heads, grid.head_dim, grid.causal
            ):
                yield Setting(mode, 0, batch, heads, head_dim, causal, grid.dtype)


@dataclass
class _VariantRun:
    """What every series of one variant's sweep shares."""

    variant: str
    spec: VariantSpec
    options: dict[str, Any]
    device: torch.device
    grid: GridConfig
    cfg: BenchConfig
    exact: bool  # exact softmax attention: its TFLOP/s is a FLOP rate
    task_job: dict[str, Any]  # job_config of the train_step task, plus "task"
    task_req: Requirements
    train_step_na: str | None  # why the task's model cannot be timed, if it cannot
    log: Callable[[str], None] | None

    def series(self, template: Setting) -> list[dict[str, Any]]:
        lengths, long_lengths = self.grid.lengths, self.grid.long_lengths
        if template.mode == "train_step":
            lengths, long_lengths = self.grid.train_step_lengths or lengths, []
        return run_series(
            lambda n: self.measure_at(dataclasses.replace(template, length=n)),
            lambda n, why: self.emit(
                empty_point(dataclasses.replace(template, length=n), "skipped", why)
            ),
            lengths,
            long_lengths,
            self.grid,
            self.cfg.subquadratic_max_exponent,
        )

    def measure_at(self, s: Setting) -> dict[str, Any]:
        if s.mode == "train_step" and self.train_step_na is not None:
            return self.emit(empty_point(s, "n/a", self.train_step_na))
        if s.mode == "train_step":
            req = dataclasses.replace(self.task_req, max_len=s.length)
        else:
            req = Requirements(causal=s.causal, max_len=s.length)
        reason = check_support(self.spec.capabilities, req)
        if reason is not None:
            return self.emit(empty_point(s, "n/a", f"the setting {reason}"))
        return self.emit(measure_point(self.make_step, s, self.device, self.grid, self.exact))

    def make_step(self, s: Setting) -> Callable[[], None]:
        if s.mode == "train_step":
            return train_step(s, self.device, self.task_job)
        return layer_step(self.spec, self.options, s, self.device)

    def emit(self, point: dict[str, Any]) -> dict[str, Any]:
        if self.log is not None:
            self.log(point_line(self.variant, point))
        return point


def run_variant(
    profile: dict[str, Any],
    variant: str,
    device: torch.device,
    cfg: BenchConfig,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``variant``'s whole sweep on ``device``; return its (validated) record."""
    wall0 = time.perf_counter()
    spec = get_variant(variant)
    kind = "cuda" if device.type == "cuda" else "cpu"
    grid = cfg.grid(kind)
    job = bench_job_config(profile, variant, cfg)
    options = job["variant_options"]
    ts = job["train_step"]
    task_job = {**job_config(profile, ts["task"], variant), "task": ts["task"]}
    task_built = build_job(task_job, None)
    task = task_built.task
    state = task_built.state_bytes_per_layer()
    task_req = task.requirements()
    record: dict[str, Any] = {
        "kind": RECORD_KIND,
        "schema_version": SCHEMA_VERSION,
        "profile": profile["profile"],
        "variant": variant,
        "variant_paper": spec.paper,
        "variant_options": options,
        "capabilities": spec.capabilities.as_dict(),
        # decoding memory of the train_step task's model (float32, all layers)
        "kv_cache_bytes_per_token": task_built.kv_cache_bytes_per_token(),
        "state_bytes": None if state is None else state * task_built.model_config.n_layers,
        "device": device_info(device),
        "host": device_info(torch.device("cpu")),
        "grid": kind,
        "memory_kind": "cuda_max_memory_allocated" if kind == "cuda" else "cpu_live_tensor_peak",
        "git_commit": git_commit(),
        "versions": library_versions(),
        "config_hash": config_hash(job),
        "config": job,
        "started_at": now(),
        "points": [],
    }
    na = synthetic_batch_reason(task)
    run = _VariantRun(
        variant, spec, options, device, grid, cfg, job["exact_flops"], task_job, task_req, na, log
    )
    for template in series_settings(grid, job["train_step"]["model"], task_req.causal):
        record["points"].extend(run.series(template))
    record["finished_at"] = now()
    record["wall_time_s"] = time.perf_counter() - wall0
    problem = validate_bench_record(record)
    if problem:  # pragma: no cover - a bug in this module
        raise RuntimeError(f"bench record of {variant!r} is invalid: {problem}")
    return record


def point_line(variant: str, p: dict[str, Any]) -> str:
    """One point as a log line: its setting, then its time and memory or its status."""
    head = (
        f"[bench] {variant} {p['mode']} L={p['length']} B={p['batch']} H={p['heads']} "
        f"d={p['head_dim']}{' causal' if p['causal'] else ''} {p['dtype']}: "
    )
    if p["status"] != "ok":
        return head + f"{p['status']} ({p['reason']})"
    mem = p["peak_memory_bytes"]
    return head + f"{p['median_ms']:.2f} ms, {mem / MIB:.1f} MiB, {len(p['times_ms'])} timed"
