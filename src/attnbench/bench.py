"""Efficiency sweep: time, memory and throughput of every variant versus sequence length.

``attnbench bench --variant V`` measures one variant and writes one JSON record;
``attnbench bench-summary`` reads the records (and nothing else) and writes the
tables and plots. The workflow runs one ``bench`` job per variant
(``workflow/rules/bench.smk``).

Why: the efficient-attention papers sell speed and memory, and the one shared
comparison, Long Range Arena's efficiency table (Tay et al. 2021, "Long Range
Arena: A Benchmark for Efficient Transformers", Table 3: steps/s and peak memory
relative to the Transformer at 1K–4K tokens), was measured once, on TPUs, in JAX.
This module measures every registered variant through the same interface and
records how it was measured, so the numbers can be redone and compared.

What one point measures (a *point* = variant × mode × length × batch × heads ×
head dim × causal × dtype):

* **modes** — ``fwd``: one attention layer (``variant.build(AttentionDims(d_model =
  heads·head_dim, …, max_len = length))``, training mode) called under
  ``torch.no_grad()``; ``fwd_bwd``: the same layer, forward then
  ``out.sum().backward()`` with the input requiring a gradient; ``train_step``: one
  optimiser step of the task model (the profile's model and optimiser for
  ``bench.task``, ``max_len`` = length): forward, loss, backward, gradient
  clipping, AdamW, on a synthetic full-length batch. Heads and head dim of a
  ``train_step`` come from the task model, causal masking from the task.
* **dtype** — ``fp32``; ``bf16`` = ``torch.autocast(bfloat16)`` with fp32 parameters,
  as :mod:`attnbench.train` trains on CUDA (pure-bf16 modules break variants
  that call fp32-only routines).
* **time** — ``warmup`` untimed steps, then up to ``repeats`` timed steps, stopping
  early once ``point_budget_s`` seconds were timed (at least one). On CUDA each
  step is timed with CUDA events; on CPU with ``time.perf_counter``. Reported:
  the median and the inter-quartile range (linear-interpolation quartiles) of the
  timed steps, steps/s = 1 / median, tokens/s = batch · length / median.
* **memory** — CUDA: ``torch.cuda.max_memory_allocated()`` over the timed steps
  (after ``reset_peak_memory_stats``) minus what was allocated before them.
  CPU: :class:`LiveTensorTracker` on the last warm-up step: the peak, over the
  step's operations, of the bytes of tensor storages created during the step
  and still alive (activations saved for backward, score matrices, gradients).
  Both count tensors only — parameters, inputs and optimiser state that exist
  before the step are excluded (each step frees its gradients at its end), the
  interpreter and allocator caches are not counted — so the CPU figure is
  comparable with the CUDA one in kind, unlike a process's peak RSS. It
  misses scratch memory allocated inside a single fused kernel (e.g. SDPA's CPU
  kernel's per-thread blocks), which is small next to the tensors it returns.
  For ``train_step`` the warm-up has at least two steps so that AdamW's state
  exists before the measured one.
* **TFLOP/s** — :func:`attention_flops`, the FlashAttention convention (Dao et al.
  2022, "FlashAttention: Fast and Memory-Efficient Exact Attention with
  IO-Awareness"): 4·B·T²·H·d for the forward, halved when causal, 2.5× for the
  backward, 3.5× for forward + backward. Only the attention core is counted
  (not the Q/K/V/output projections). For the variants listed in
  ``bench.exact_variants`` (exact softmax attention) the figure is a FLOP rate
  (``flops_kind: "exact"``); for every other variant it is the *equivalent* rate
  of exact attention at that size (``"equivalent"``: exact attention's FLOPs
  divided by this variant's time), which compares wall time on a familiar
  scale, not work done. ``train_step`` points have none.
* **failures** — an out-of-memory error (``torch.OutOfMemoryError``,
  ``MemoryError``, a RuntimeError saying "out of memory" / "can't allocate", or
  a peak above ``memory_cap_mib``) is recorded as status ``OOM`` and the sweep
  goes on; longer lengths of that series are recorded as ``skipped``. So are
  lengths whose projected step time (from the last two measured lengths)
  exceeds ``time_cap_s`` (a wall-clock rule: a busy machine skips more). Any
  other exception is recorded as ``error`` with its message. A setting the
  variant cannot run (causal masking it does not support, a length beyond its
  ``max_length``; :func:`attnbench.attention.check_support`) is ``n/a`` with the
  reason.
* **long lengths** — ``long_lengths`` (e.g. 32768 on GPU) run only for series whose
  memory grows sub-quadratically: the fitted memory exponent over the main
  lengths is at most ``bench.subquadratic_max_exponent``; otherwise they are
  ``skipped`` with the measured exponent as the reason.

Grids (profile keys ``bench.cpu`` / ``bench.cuda``, :class:`GridConfig`; the device
decides which one runs): by default one layer's forward + backward at 256–2048 tokens,
batch 1, 4 heads × 64, fp32 on CPU (sized for all variants in ~3 minutes on 2 cores);
on CUDA all three modes at 512–16384 (+ 32768), batch 4, 8 heads × 64, causal and
not, bf16.

Record layout (``kind: attnbench-bench``, ``schema_version`` 1), one file per
variant at ``<output_dir>/bench/<profile>/records/<variant>.json``::

    {"kind": "attnbench-bench", "schema_version": 1, "profile": ..., "variant": ...,
     "variant_paper": ..., "variant_options": {...}, "capabilities": {...},
     "device": provenance.device_info(...), "host": CPU facts, "grid": "cpu" | "cuda",
     "memory_kind": "cpu_live_tensor_peak" | "cuda_max_memory_allocated",
     "git_commit": ..., "versions": {...}, "config_hash": ..., "config": {...},
     "started_at": ..., "finished_at": ..., "wall_time_s": ...,
     "points": [{"mode", "length", "batch", "heads", "head_dim", "causal", "dtype",
                 "status", "reason", "times_ms", "warmup_ms", "median_ms", "q1_ms",
                 "q3_ms", "iqr_ms", "steps_per_s", "tokens_per_s",
                 "peak_memory_bytes", "flops", "tflops", "flops_kind"}, ...]}

Summary outputs (``<output_dir>/bench/<profile>/``): ``summary.md`` (device,
definitions, fitted scaling exponents, LRA-style relative tables), ``points.csv``
(one row per point), ``scaling.csv``, ``relative.md`` / ``relative.csv``, and
``plots/{time,memory}-<series>.{png,svg}`` (log–log, one line per variant).

The older ``results/bench/cpu_attention_1k_4k.{md,json}`` were written by the
first version of ``scripts/bench_attention.py`` (commit 8c08b11): one layer's
forward + backward, memory as the rise of a fresh process's peak RSS
(``ru_maxrss``), so their memory column is not comparable with this module's.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench.options import build_options
from attnbench.records import atomic_write_text, iter_record_files, read_checked_json

if TYPE_CHECKING:  # torch and the modules importing it load on first use: the CLI stays quick
    import torch

    from attnbench.attention import Requirements, VariantSpec

MODES = ("fwd", "fwd_bwd", "train_step")
DTYPES = ("fp32", "bf16")
STATUSES = ("ok", "OOM", "n/a", "error", "skipped")
SCHEMA_VERSION = 1
RECORD_KIND = "attnbench-bench"
MIB = 2**20
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")
FLOP_FACTORS = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}  # FlashAttention's convention
MEMORY_DEFINITIONS = {
    "cpu_live_tensor_peak": (
        "peak bytes of tensor storages created during one step and alive at the same time "
        "(attnbench.bench.LiveTensorTracker on the last warm-up step; parameters, inputs and "
        "optimiser state that exist before the step are not counted)"
    ),
    "cuda_max_memory_allocated": (
        "torch.cuda.max_memory_allocated() over the timed steps, after "
        "reset_peak_memory_stats(), minus memory_allocated() before them"
    ),
}


# ---------------------------------------------------------------------------------------
# Configuration (the profile's `bench:` section)
# ---------------------------------------------------------------------------------------
@dataclass
class GridConfig:
    """The sweep on one kind of device: ``bench.cpu`` or ``bench.cuda`` in a profile."""

    modes: list[str] = field(default_factory=lambda: ["fwd", "fwd_bwd", "train_step"])
    lengths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])
    long_lengths: list[int] = field(default_factory=list)  # sub-quadratic series only
    train_step_lengths: list[int] | None = None  # None: `lengths`
    batch: list[int] = field(default_factory=lambda: [1])
    heads: list[int] = field(default_factory=lambda: [4])
    head_dim: list[int] = field(default_factory=lambda: [64])
    causal: list[bool] = field(default_factory=lambda: [False])
    dtype: str = "fp32"  # "fp32" | "bf16" (autocast, fp32 parameters)
    warmup: int = 1  # untimed steps before the timed ones (CPU: the last one is tracked)
    repeats: int = 3  # at most this many timed steps ...
    point_budget_s: float = 1.0  # ... stopping once this many seconds were timed (≥ 1 step)
    time_cap_s: float | None = None  # skip lengths whose projected step time exceeds this
    memory_cap_mib: float | None = None  # a step needing more is recorded as OOM

    def __post_init__(self) -> None:
        where = "bench grid"
        for name in ("lengths", "long_lengths", "batch", "heads", "head_dim"):
            _positive_ints(getattr(self, name), f"{where}.{name}", allow_empty=name != "lengths")
        if self.train_step_lengths is not None:
            _positive_ints(self.train_step_lengths, f"{where}.train_step_lengths")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"{where}.modes={self.modes!r}; valid choices: {', '.join(MODES)}")
        if not self.causal or any(not isinstance(c, bool) for c in self.causal):
            raise ValueError(f"{where}.causal must be a non-empty list of booleans")
        if self.dtype not in DTYPES:
            raise ValueError(f"{where}.dtype={self.dtype!r}; valid choices: {', '.join(DTYPES)}")
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError(f"{where} needs warmup >= 0 and repeats >= 1")
        for name in ("point_budget_s", "time_cap_s", "memory_cap_mib"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{where}.{name} must be positive, got {value}")


def _positive_ints(values: Any, where: str, allow_empty: bool = False) -> None:
    if not isinstance(values, list) or (not values and not allow_empty):
        raise ValueError(f"{where} must be a {'' if allow_empty else 'non-empty '}list")
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
        raise ValueError(f"{where} must hold positive integers, got {values!r}")


# The CPU default fits the default profile's budget (all variants in ≤ 3 min on 2 cores):
# one layer's forward + backward only. `train_step` is one list entry away, but costs every
# job ~2 s of CPU more (torch.optim's first use imports torch._dynamo) plus its steps.
CPU_GRID = GridConfig(
    modes=["fwd_bwd"],
    lengths=[256, 512, 1024, 2048],
    train_step_lengths=[1024],
    warmup=1,
    repeats=3,
    point_budget_s=0.5,
    time_cap_s=3.0,
    memory_cap_mib=4096.0,
)
CUDA_GRID = GridConfig(
    modes=["fwd", "fwd_bwd", "train_step"],
    lengths=[512, 1024, 2048, 4096, 8192, 16384],
    long_lengths=[32768],
    train_step_lengths=[1024, 2048, 3072, 4096],
    batch=[4],
    heads=[8],
    head_dim=[64],
    causal=[False, True],
    dtype="bf16",
    warmup=3,
    repeats=10,
    point_budget_s=2.0,
    time_cap_s=10.0,
)
GRID_DEFAULTS = {"cpu": CPU_GRID, "cuda": CUDA_GRID}


@dataclass
class BenchConfig:
    """The profile's ``bench:`` section: what every grid shares, and the two grids."""

    task: str | None = None  # task model of the train_step mode (None: first task)
    reference: str = "vanilla"  # the relative table divides by this variant
    exact_variants: list[str] = field(default_factory=lambda: ["vanilla", "fused"])
    relative_lengths: list[int] = field(default_factory=lambda: [1024, 2048, 3072, 4096])
    subquadratic_max_exponent: float = 1.5  # long_lengths run if memory ~ L^x with x ≤ this
    cpu: GridConfig = field(default_factory=lambda: dataclasses.replace(CPU_GRID))
    cuda: GridConfig = field(default_factory=lambda: dataclasses.replace(CUDA_GRID))

    def __post_init__(self) -> None:
        _positive_ints(self.relative_lengths, "bench.relative_lengths")
        if self.subquadratic_max_exponent <= 0:
            raise ValueError("bench.subquadratic_max_exponent must be positive")

    def grid(self, kind: str) -> GridConfig:
        return self.cuda if kind == "cuda" else self.cpu


def resolve_bench_config(
    profile: dict[str, Any], grid_overrides: dict[str, dict[str, Any]] | None = None
) -> BenchConfig:
    """The profile's ``bench`` section with defaults filled; ``ValueError`` on bad values.

    ``grid_overrides`` ({"cpu": {...}, "cuda": {...}}) replace grid keys (command-line use).
    """
    values = dict(profile.get("bench") or {})
    # the relative table divides by the profile's reference variant unless bench sets one
    values.setdefault("reference", (profile.get("reference") or {}).get("variant") or "vanilla")
    grids = {}
    for kind, default in GRID_DEFAULTS.items():
        given = {**(values.pop(kind, None) or {}), **((grid_overrides or {}).get(kind) or {})}
        merged = {**dataclasses.asdict(default), **given}
        grids[kind] = _build(GridConfig, merged, f"bench.{kind}")
    cfg = _build(BenchConfig, values, "bench")
    cfg.cpu, cfg.cuda = grids["cpu"], grids["cuda"]
    return cfg


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    try:
        return build_options(cls, values, where)
    except ValueError as exc:
        message = str(exc)
        if message.startswith("bench grid"):
            message = where + message[len("bench grid") :]
        raise ValueError(message) from None


def bench_task(profile: dict[str, Any], cfg: BenchConfig) -> str:
    from attnbench.config import selected_tasks

    name = cfg.task or selected_tasks(profile)[0]
    if name not in profile["tasks"]:
        raise ValueError(
            f"bench.task {name!r} is not configured in profile {profile['profile']!r}; "
            f"its tasks: {', '.join(profile['tasks'])}"
        )
    return name


def bench_job_config(
    profile: dict[str, Any], variant: str, cfg: BenchConfig | None = None
) -> dict[str, Any]:
    """Everything that determines a variant's bench record (its hash reruns the job)."""
    from attnbench.config import job_config

    cfg = cfg or resolve_bench_config(profile)
    task = bench_task(profile, cfg)
    job = job_config(profile, task, variant)
    return {
        "profile": profile["profile"],
        "variant": variant,
        "variant_options": job["variant_options"],
        "bench": dataclasses.asdict(cfg),
        "train_step": {"task": task, "model": job["model"], "train": job["train"]},
        "device": profile.get("device", "auto"),
        "threads": profile.get("threads", 1),
    }


def bench_record_path(output_dir: str | Path, profile: str, variant: str) -> Path:
    return Path(output_dir) / "bench" / profile / "records" / f"{variant}.json"


# ---------------------------------------------------------------------------------------
# Measuring: FLOPs, memory, time, failures
# ---------------------------------------------------------------------------------------
def attention_flops(
    batch: int, length: int, heads: int, head_dim: int, *, causal: bool, mode: str
) -> float:
    """Exact attention's FLOPs by the FlashAttention convention (Dao et al. 2022).

    Forward: 4·B·T²·H·d (QKᵀ and PV, 2·B·H·T²·d each), halved when causal;
    ``bwd`` 2.5×, ``fwd_bwd`` 3.5× the forward.
    """
    if mode not in FLOP_FACTORS:
        raise ValueError(f"no FLOP count for mode {mode!r}; valid: {', '.join(FLOP_FACTORS)}")
    forward = 4.0 * batch * length**2 * heads * head_dim
    return forward * FLOP_FACTORS[mode] * (0.5 if causal else 1.0)


class MemoryCapExceeded(MemoryError):
    """A step needed more tensor memory than the configured cap (recorded as OOM)."""


class LiveTensorTracker:
    """Peak bytes of tensor storages created inside the ``with`` block and alive together.

    Every operation's outputs pass through a ``TorchDispatchMode``; an output whose
    storage is neither an input's (views, in-place ops) nor already tracked is a
    new allocation and is held by a weak reference. Before new outputs are added,
    storages that died since the last operation are dropped, so ``current`` is the
    bytes alive right after each operation and ``peak`` its maximum. Backward ops
    run through the same mode (the autograd engine carries it over on CPU).
    ``cap_bytes``: raise :class:`MemoryCapExceeded` as soon as ``current`` exceeds it.
    """

    def __init__(self, cap_bytes: int | None = None) -> None:
        self.cap_bytes = cap_bytes
        self.live: dict[int, tuple[Any, int]] = {}  # storage id → (weak ref, bytes)
        self.current = 0
        self.peak = 0
        self._mode: Any = None

    def __enter__(self) -> LiveTensorTracker:
        self._mode = _dispatch_mode_class()(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)
        self._mode = None

    def observe(self, inputs: Any, outputs: Any) -> None:
        """Account for one operation's ``outputs`` (``inputs``: its arguments)."""
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._pytree import tree_leaves

        seen = {t.untyped_storage()._cdata for t in tree_leaves(inputs) if _dense(t)}
        for key, (ref, nbytes) in list(self.live.items()):
            if ref.expired():
                del self.live[key]
                self.current -= nbytes
        for t in tree_leaves(outputs):
            if not _dense(t):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in seen or key in self.live:
                continue
            self.live[key] = (StorageWeakRef(storage), storage.nbytes())
            self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        if self.cap_bytes is not None and self.current > self.cap_bytes:
            raise MemoryCapExceeded(
                f"out of memory: tensors alive reached {self.current / MIB:.1f} MiB, "
                f"over the cap of {self.cap_bytes / MIB:.1f} MiB (memory_cap_mib)"
            )


@cache
def _dispatch_mode_class() -> type:
    """The ``TorchDispatchMode`` behind :class:`LiveTensorTracker` (built once torch is needed)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Observe(TorchDispatchMode):
        def __init__(self, tracker: LiveTensorTracker) -> None:
            super().__init__()
            self.tracker = tracker

        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            # torch wraps a mode's __torch_dispatch__ in dynamo.disable unless this says no;
            # the wrapper imports torch._dynamo (seconds of CPU) and nothing here is compiled.
            return False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.tracker.observe((args, kwargs), out)
            return out

    return _Observe


def _dense(t: Any) -> bool:
    import torch

    return isinstance(t, torch.Tensor) and t.layout == torch.strided and t.device.type != "meta"


def classify_failure(exc: BaseException) -> str:
    """``"OOM"`` for out-of-memory failures (of any device or of the cap), else ``"error"``."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return "OOM"
    if isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MESSAGES):
        return "OOM"
    return "error"


def timed_ms(fn: Callable[[], None], device: torch.device) -> float:
    """Milliseconds one call of ``fn`` takes: CUDA events on GPU, perf_counter on CPU."""
    import torch

    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def time_summary(times_ms: list[float]) -> dict[str, float]:
    """Median and quartiles (linear interpolation between order statistics) of the timed steps."""
    q1, median, q3 = (quantile(times_ms, q) for q in (0.25, 0.5, 0.75))
    return {"median_ms": median, "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1}


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation (NumPy's default ``linear`` method)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def fit_exponent(lengths: Iterable[float], values: Iterable[float | None]) -> float | None:
    """Least-squares slope of log(value) on log(length): value ∝ length^slope.

    Points with a missing or non-positive value are left out; ``None`` if fewer than
    two distinct lengths remain.
    """
    pairs = [(x, y) for x, y in zip(lengths, values, strict=True) if y is not None and y > 0]
    if len({x for x, _ in pairs}) < 2:
        return None
    logx = [math.log(x) for x, _ in pairs]
    logy = [math.log(y) for _, y in pairs]
    mx, my = sum(logx) / len(logx), sum(logy) / len(logy)
    sxx = sum((x - mx) ** 2 for x in logx)
    sxy = sum((x - mx) * (y - my) for x, y in zip(logx, logy, strict=True))
    return sxy / sxx


# ---------------------------------------------------------------------------------------
# One point
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """The coordinates of one point."""

    mode: str
    length: int
    batch: int
    heads: int
    head_dim: int
    causal: bool
    dtype: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Builds the model and inputs of one setting and returns its step: one call runs one
# forward (fwd), forward + backward (fwd_bwd) or optimiser step (train_step).
StepFactory = Callable[[Setting], Callable[[], None]]


def empty_point(s: Setting, status: str = "ok", reason: str | None = None) -> dict[str, Any]:
    return {
        **s.as_dict(),
        "status": status,
        "reason": reason,
        "times_ms": [],
        "warmup_ms": [],
        "median_ms": None,
        "q1_ms": None,
        "q3_ms": None,
        "iqr_ms": None,
        "steps_per_s": None,
        "tokens_per_s": None,
        "peak_memory_bytes": None,
        "flops": None,
        "tflops": None,
        "flops_kind": None,
    }


def autocast(device: torch.device, dtype: str):
    import torch

    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def layer_step(
    spec: VariantSpec, options: dict[str, Any] | None, s: Setting, device: torch.device
) -> Callable[[], None]:
    """One attention layer at setting ``s``: forward under no_grad, or forward + backward."""
    import torch

    from attnbench.attention import AttentionContext, AttentionDims, AttentionMask

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
    import torch

    from attnbench.tasks.base import CLS_ID, Batch, SequenceClassificationTask

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
    from attnbench.tasks.base import SequenceClassificationTask

    if callable(getattr(task, "synthetic_batch", None)):
        return None
    if isinstance(task, SequenceClassificationTask):
        return None
    return f"task {task.name!r} has no synthetic_batch(batch, length, generator) method"


def train_step(
    spec: VariantSpec,
    options: dict[str, Any] | None,
    s: Setting,
    device: torch.device,
    job: dict[str, Any],
) -> Callable[[], None]:
    """One optimiser step of the task model (as :func:`attnbench.train.train` does it)."""
    import torch

    from attnbench.model import ModelConfig
    from attnbench.tasks.base import get_task, make_data_config
    from attnbench.train import (
        TrainConfig,
        make_optimizer,
        make_scheduler,
        optimizer_step,
    )

    task_cls = get_task(job["task"])
    task = task_cls(make_data_config(task_cls, job["data"]))
    torch.manual_seed(0)
    model_cfg = ModelConfig(**{**job["model"], "max_len": s.length})
    model = task.build_model(model_cfg, spec, options).to(device).train()
    train_cfg = TrainConfig(**job["train"])
    optimizer = make_optimizer(model, train_cfg)
    scheduler = make_scheduler(optimizer, train_cfg)
    data = synthetic_batch(task, s.batch, s.length, torch.Generator().manual_seed(0)).to(device)

    def step() -> None:
        with autocast(device, s.dtype):
            loss, _ = task.loss(model, data)
        optimizer_step(loss, model, optimizer, scheduler, train_cfg.grad_clip)

    return step


def measure(
    make_step: StepFactory, s: Setting, device: torch.device, grid: GridConfig, exact: bool
) -> dict[str, Any]:
    """Build, warm up, measure memory and time one point; never raises."""
    import torch

    point = empty_point(s)
    cap = None if grid.memory_cap_mib is None else int(grid.memory_cap_mib * MIB)
    try:
        step = make_step(s)
        n_warmup = max(grid.warmup, 2 if s.mode == "train_step" else 1)
        for i in range(n_warmup):
            if device.type == "cpu" and i == n_warmup - 1:
                tracker = LiveTensorTracker(cap)
                with tracker:
                    point["warmup_ms"].append(timed_ms(step, device))
                point["peak_memory_bytes"] = tracker.peak
            else:
                point["warmup_ms"].append(timed_ms(step, device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        spent = 0.0
        while len(point["times_ms"]) < grid.repeats and (
            not point["times_ms"] or spent < grid.point_budget_s * 1000.0
        ):
            point["times_ms"].append(timed_ms(step, device))
            spent += point["times_ms"][-1]
        if device.type == "cuda":
            point["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device) - before
            if cap is not None and point["peak_memory_bytes"] > cap:
                raise MemoryCapExceeded(
                    f"out of memory: peak {point['peak_memory_bytes'] / MIB:.1f} MiB, "
                    f"over the cap of {cap / MIB:.1f} MiB (memory_cap_mib)"
                )
    except Exception as exc:  # OOM and any other failure become the point's status
        status = classify_failure(exc)
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        point = empty_point(s, status, message)
    finally:
        step = None  # free the model and activations before the next point
        if point["status"] != "ok" or device.type == "cuda":
            gc.collect()  # a traceback's reference cycles may hold tensors (slow: ~0.4 s)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if point["status"] == "ok":
        point |= time_summary(point["times_ms"])
        seconds = point["median_ms"] / 1000.0
        point["steps_per_s"] = 1.0 / seconds
        point["tokens_per_s"] = s.batch * s.length / seconds
        if s.mode in FLOP_FACTORS:
            point["flops"] = attention_flops(
                s.batch, s.length, s.heads, s.head_dim, causal=s.causal, mode=s.mode
            )
            point["tflops"] = point["flops"] / seconds / 1e12
            point["flops_kind"] = "exact" if exact else "equivalent"
    return point


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
        from attnbench.attention import Requirements, check_support

        if s.mode == "train_step" and self.train_step_na is not None:
            return self.emit(empty_point(s, "n/a", self.train_step_na))
        if s.mode == "train_step":
            req = dataclasses.replace(self.task_req, max_len=s.length)
        else:
            req = Requirements(causal=s.causal, max_len=s.length)
        reason = check_support(self.spec.capabilities, req)
        if reason is not None:
            return self.emit(empty_point(s, "n/a", f"the setting {reason}"))
        exact = self.variant in self.cfg.exact_variants
        return self.emit(measure(self.make_step, s, self.device, self.grid, exact))

    def make_step(self, s: Setting) -> Callable[[], None]:
        if s.mode == "train_step":
            return train_step(self.spec, self.options, s, self.device, self.task_job)
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
    import torch

    from attnbench.attention import get_variant
    from attnbench.config import config_hash, job_config
    from attnbench.provenance import device_info, git_commit, library_versions, now
    from attnbench.tasks.base import get_task, make_data_config

    wall0 = time.perf_counter()
    spec = get_variant(variant)
    kind = "cuda" if device.type == "cuda" else "cpu"
    grid = cfg.grid(kind)
    job = bench_job_config(profile, variant, cfg)
    options = job["variant_options"]
    ts = job["train_step"]
    task_job = {**job_config(profile, ts["task"], variant), "task": ts["task"]}
    task_cls = get_task(ts["task"])
    task = task_cls(make_data_config(task_cls, task_job["data"]))
    task_req = task.requirements()
    record: dict[str, Any] = {
        "kind": RECORD_KIND,
        "schema_version": SCHEMA_VERSION,
        "profile": profile["profile"],
        "variant": variant,
        "variant_paper": spec.paper,
        "variant_options": options,
        "capabilities": spec.capabilities.as_dict(),
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
    run = _VariantRun(variant, spec, options, device, grid, cfg, task_job, task_req, na, log)
    for template in series_settings(grid, job["train_step"]["model"], task_req.causal):
        record["points"].extend(run.series(template))
    record["finished_at"] = now()
    record["wall_time_s"] = time.perf_counter() - wall0
    problem = validate_bench_record(record)
    if problem:  # pragma: no cover - a bug in this module
        raise RuntimeError(f"bench record of {variant!r} is invalid: {problem}")
    return record


def point_line(variant: str, p: dict[str, Any]) -> str:
    head = (
        f"[bench] {variant} {p['mode']} L={p['length']} B={p['batch']} H={p['heads']} "
        f"d={p['head_dim']}{' causal' if p['causal'] else ''} {p['dtype']}: "
    )
    if p["status"] != "ok":
        return head + f"{p['status']} ({p['reason']})"
    mem = p["peak_memory_bytes"]
    return head + f"{p['median_ms']:.2f} ms, {mem / MIB:.1f} MiB, {len(p['times_ms'])} timed"


# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------
RECORD_KEYS = (
    "kind",
    "schema_version",
    "profile",
    "variant",
    "device",
    "grid",
    "memory_kind",
    "git_commit",
    "versions",
    "config_hash",
    "config",
    "points",
)
POINT_KEYS = tuple(empty_point(Setting("fwd", 1, 1, 1, 1, False, "fp32")))


def validate_bench_record(record: Any) -> str | None:
    """Why ``record`` is not a valid bench record, or ``None`` if it is."""
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        return "missing keys: " + ", ".join(missing)
    if record["kind"] != RECORD_KIND:
        return f"kind {record['kind']!r}, expected {RECORD_KIND!r}"
    if record["schema_version"] != SCHEMA_VERSION:
        return f"schema_version {record['schema_version']!r}, expected {SCHEMA_VERSION}"
    if record["memory_kind"] not in MEMORY_DEFINITIONS:
        return f"memory_kind {record['memory_kind']!r}; valid: {', '.join(MEMORY_DEFINITIONS)}"
    if not isinstance(record["points"], list):
        return "points is not a list"
    for i, p in enumerate(record["points"]):
        problem = _point_problem(p)
        if problem:
            return f"point {i}: {problem}"
    return None


def _point_problem(p: Any) -> str | None:
    if not isinstance(p, dict):
        return "not a JSON object"
    missing = [key for key in POINT_KEYS if key not in p]
    if missing:
        return "missing keys: " + ", ".join(missing)
    if p["mode"] not in MODES:
        return f"mode {p['mode']!r}; valid: {', '.join(MODES)}"
    if p["status"] not in STATUSES:
        return f"status {p['status']!r}; valid: {', '.join(STATUSES)}"
    if p["status"] != "ok":
        return None if p["reason"] else f"status {p['status']!r} without a reason"
    if not p["times_ms"] or not isinstance(p["median_ms"], int | float) or p["median_ms"] <= 0:
        return "status 'ok' without timed steps and a positive median"
    if not isinstance(p["peak_memory_bytes"], int) or p["peak_memory_bytes"] < 0:
        return "status 'ok' without peak_memory_bytes"
    return None


def write_bench_record(path: str | Path, record: dict[str, Any]) -> None:
    """Validate and atomically write one bench record."""
    problem = validate_bench_record(record)
    if problem:
        raise ValueError(f"refusing to write an invalid bench record to {path}: {problem}")
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_bench_record(path: str | Path) -> dict[str, Any]:
    """Read one bench record; ``ValueError`` naming the file if unreadable or invalid."""
    return read_checked_json(path, validate_bench_record, kind="bench record", flaw="invalid")


# ---------------------------------------------------------------------------------------
# Summary: tables and plots built from records alone
# ---------------------------------------------------------------------------------------
SERIES_KEYS = ("mode", "batch", "heads", "head_dim", "causal", "dtype")
POINT_COLUMNS = (
    "variant",
    *SERIES_KEYS,
    "length",
    "status",
    "reason",
    "median_ms",
    "q1_ms",
    "q3_ms",
    "iqr_ms",
    "n_timed",
    "steps_per_s",
    "tokens_per_s",
    "peak_memory_bytes",
    "memory_kind",
    "tflops",
    "flops_kind",
    "device",
    "git_commit",
)


def series_label(key: tuple) -> str:
    """A readable name of a series, e.g. ``fwd_bwd B=1 H=4 d=64 non-causal fp32``."""
    mode, batch, heads, head_dim, causal, dtype = key
    return f"{mode} B={batch} H={heads} d={head_dim} {'causal' if causal else 'non-causal'} {dtype}"


def series_slug(key: tuple) -> str:
    mode, batch, heads, head_dim, causal, dtype = key
    return f"{mode}-b{batch}-h{heads}-d{head_dim}-{'causal' if causal else 'noncausal'}-{dtype}"


def point_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per point, in record order (the tidy ``points.csv``)."""
    rows = []
    for r in records:
        device = r["device"].get("name", r["device"].get("type"))
        for p in r["points"]:
            row = {k: p.get(k) for k in POINT_COLUMNS if k in p}
            row |= {
                "variant": r["variant"],
                "n_timed": len(p["times_ms"]),
                "memory_kind": r["memory_kind"],
                "device": device,
                "git_commit": r["git_commit"],
            }
            rows.append(row)
    return rows


def group_series(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, list[dict[str, Any]]]]:
    """{series key: {variant: [rows sorted by length]}}, keys in a stable order."""
    groups: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        key = tuple(row[k] for k in SERIES_KEYS)
        groups.setdefault(key, {}).setdefault(row["variant"], []).append(row)
    for by_variant in groups.values():
        for series in by_variant.values():
            series.sort(key=lambda r: r["length"])
    order = {m: i for i, m in enumerate(MODES)}
    return dict(sorted(groups.items(), key=lambda kv: (order[kv[0][0]], *map(str, kv[0][1:]))))


def scaling_rows(groups: dict[tuple, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Fitted time and memory exponents per (series, variant) over its ``ok`` points."""
    rows = []
    for key, by_variant in groups.items():
        for variant in sorted(by_variant):
            ok = [r for r in by_variant[variant] if r["status"] == "ok"]
            lengths = [r["length"] for r in ok]
            rows.append(
                {
                    "variant": variant,
                    **dict(zip(SERIES_KEYS, key, strict=True)),
                    "n_lengths": len(set(lengths)),
                    "min_length": min(lengths) if lengths else None,
                    "max_length": max(lengths) if lengths else None,
                    "time_exponent": fit_exponent(lengths, [r["median_ms"] for r in ok]),
                    "memory_exponent": fit_exponent(lengths, [r["peak_memory_bytes"] for r in ok]),
                }
            )
    return rows


def relative_rows(
    groups: dict[tuple, dict[str, list[dict[str, Any]]]], reference: str, lengths: list[int]
) -> list[dict[str, Any]]:
    """LRA-style comparison: steps/s and peak memory of each variant ÷ the reference's.

    One row per (series, variant, length) for the lengths in ``lengths`` that the
    series measured; the ratio is ``None`` where either point is not ``ok``.
    """
    rows = []
    for key, by_variant in groups.items():
        measured = {r["length"] for series in by_variant.values() for r in series}
        ref = {r["length"]: r for r in by_variant.get(reference, [])}
        for variant in sorted(by_variant):
            mine = {r["length"]: r for r in by_variant[variant]}
            for length in [n for n in lengths if n in measured]:
                p, q = mine.get(length), ref.get(length)
                both = p is not None and q is not None and p["status"] == q["status"] == "ok"
                rows.append(
                    {
                        "variant": variant,
                        **dict(zip(SERIES_KEYS, key, strict=True)),
                        "length": length,
                        "status": p["status"] if p is not None else "missing",
                        "steps_per_s": p["steps_per_s"] if p is not None else None,
                        "peak_memory_bytes": p["peak_memory_bytes"] if p is not None else None,
                        "relative_speed": p["steps_per_s"] / q["steps_per_s"] if both else None,
                        "relative_memory": (
                            p["peak_memory_bytes"] / q["peak_memory_bytes"]
                            if both and q["peak_memory_bytes"]
                            else None
                        ),
                    }
                )
    return rows


def _fmt(value: Any, spec: str = ".2f", none: str = "—") -> str:
    return none if value is None else format(value, spec)


def _length_label(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def relative_markdown(rows: list[dict[str, Any]], reference: str) -> str:
    """Per series, two tables like LRA's Table 3: steps/s and memory relative to the reference."""
    out: list[str] = []
    by_series: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        by_series.setdefault(tuple(row[k] for k in SERIES_KEYS), []).append(row)
    for key, series in by_series.items():
        lengths = sorted({r["length"] for r in series})
        cells: dict[str, dict[int, dict[str, Any]]] = {}
        for r in series:
            cells.setdefault(r["variant"], {})[r["length"]] = r
        heads = " | ".join(_length_label(n) for n in lengths)
        rule = "|---|" + "---:|" * len(lengths)
        for what, field_, absolute in (
            ("steps/s", "relative_speed", lambda r: f"{_fmt(r['steps_per_s'])} steps/s"),
            (
                "peak memory",
                "relative_memory",
                lambda r: f"{_fmt(_mib(r['peak_memory_bytes']), '.1f')} MiB",
            ),
        ):
            out += [f"#### {series_label(key)}: {what} relative to `{reference}`", ""]
            out += [f"| variant | {heads} |", rule]
            for variant, by_length in cells.items():
                row = []
                for n in lengths:
                    r = by_length.get(n)
                    if r is None or r["status"] == "missing":
                        row.append("—")
                    elif r["status"] != "ok":
                        row.append(r["status"])
                    elif variant == reference:
                        row.append(absolute(r))
                    else:  # "—" where the reference has no ok point to divide by
                        row.append("—" if r[field_] is None else f"{r[field_]:.2f}×")
                out.append(f"| `{variant}` | " + " | ".join(row) + " |")
            out.append("")
    return "\n".join(out)


def _mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / MIB


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] | list[str]):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    atomic_write_text(path, buffer.getvalue())


@dataclass
class SummaryResult:
    n_records: int
    skipped: list[tuple[Path, str]]
    files: list[Path]


def build_summary(
    record_files: Iterable[str | Path],
    out_dir: str | Path,
    *,
    reference: str | None = None,
    relative_lengths: list[int] | None = None,
    plots: bool = True,
) -> SummaryResult:
    """Tables and plots from bench records alone (unreadable records are listed, not used)."""
    out_dir = Path(out_dir)
    records, skipped = [], []
    for path in record_files:
        try:
            records.append(read_bench_record(path))
        except ValueError as exc:
            skipped.append((Path(path), str(exc).split(": ", 1)[-1]))
    records.sort(key=lambda r: r["variant"])
    first = records[0]["config"]["bench"] if records else {}
    reference = reference or first.get("reference", "vanilla")
    relative_lengths = relative_lengths or first.get("relative_lengths", [1024, 2048, 3072, 4096])
    rows = point_rows(records)
    groups = group_series(rows)
    scaling = scaling_rows(groups)
    relative = relative_rows(groups, reference, relative_lengths)
    files = [out_dir / "points.csv", out_dir / "scaling.csv", out_dir / "relative.csv"]
    _write_csv(files[0], rows, POINT_COLUMNS)
    _write_csv(files[1], scaling, list(scaling[0]) if scaling else ["variant"])
    _write_csv(files[2], relative, list(relative[0]) if relative else ["variant"])
    relative_md = relative_markdown(relative, reference)
    files.append(out_dir / "relative.md")
    atomic_write_text(files[-1], _relative_header(reference, relative_lengths) + relative_md)
    plot_files: list[Path] = []
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)  # the workflow's output directory
    if plots:
        from attnbench.bench_plots import plot_series

        for key, by_variant in groups.items():
            plot_files += plot_series(by_variant, series_label(key), series_slug(key), out_dir)
    files.append(out_dir / "summary.md")
    text = summary_markdown(records, skipped, scaling, relative_md, plot_files, out_dir, reference)
    atomic_write_text(files[-1], text)
    return SummaryResult(len(records), skipped, files + plot_files)


def _relative_header(reference: str, lengths: list[int]) -> str:
    return (
        f"# Relative efficiency (× `{reference}`)\n\n"
        "After Long Range Arena's Table 3 (Tay et al. 2021): steps/s (higher is faster) and "
        f"peak memory (lower is smaller) of each variant divided by `{reference}`'s at the same "
        f"setting and length; `{reference}`'s own row gives its absolute values. Asked-for "
        f"lengths: {', '.join(_length_label(n) for n in lengths)}; columns appear where the "
        "sweep measured that length.\n\n"
    )


def summary_markdown(
    records: list[dict[str, Any]],
    skipped: list[tuple[Path, str]],
    scaling: list[dict[str, Any]],
    relative_md: str,
    plot_files: list[Path],
    out_dir: Path,
    reference: str,
) -> str:
    """The human-readable report: device, definitions, exponents, relative tables, plots."""
    lines = ["# Efficiency sweep", ""]
    if not records:
        lines += ["No readable bench records.", ""]
    devices = sorted({json.dumps(r["device"], sort_keys=True) for r in records})
    for text in devices:
        d = json.loads(text)
        lines.append(f"- device: {_device_line(d)}")
    if len(devices) > 1:
        lines.append("- **records come from more than one device: compare within a device**")
    if records:
        r0 = records[0]
        host = r0.get("host", {})
        lines += [
            f"- host CPU: {host.get('name')} ({host.get('cpu_count')} CPUs)",
            f"- memory: {MEMORY_DEFINITIONS[r0['memory_kind']]}",
            "- TFLOP/s: FlashAttention convention (4·B·T²·H·d forward, ½ causal, 3.5× fwd+bwd); "
            "exact for "
            + ", ".join(f"`{v}`" for v in r0["config"]["bench"]["exact_variants"])
            + ", the equivalent rate of exact attention for the others",
            f"- git commits: {', '.join(sorted({r['git_commit'] for r in records}))}",
            f"- records: {len(records)} (skipped {len(skipped)})",
            "",
        ]
    for path, why in skipped:
        lines.append(f"- skipped record `{path}`: {why}")
    lines += [
        "## Scaling exponents",
        "",
        "Least-squares slope of log(median time) and log(peak memory) on log(length) over "
        "each series' `ok` points (2 = quadratic, 1 = linear).",
        "",
        "| series | variant | lengths | time exponent | memory exponent |",
        "|---|---|---|---:|---:|",
    ]
    for row in scaling:
        key = tuple(row[k] for k in SERIES_KEYS)
        span = (
            f"{row['min_length']}–{row['max_length']} ({row['n_lengths']})"
            if row["n_lengths"]
            else "—"
        )
        lines.append(
            f"| {series_label(key)} | `{row['variant']}` | {span} | "
            f"{_fmt(row['time_exponent'])} | {_fmt(row['memory_exponent'])} |"
        )
    lines += ["", f"## Relative to `{reference}`", "", relative_md, "## Not measured", ""]
    for r in records:
        for p in r["points"]:
            if p["status"] != "ok":
                key = tuple(p[k] for k in SERIES_KEYS)
                lines.append(
                    f"- `{r['variant']}` {series_label(key)} L={p['length']}: "
                    f"{p['status']} — {p['reason']}"
                )
    lines += ["", "## Plots", ""]
    lines += [f"- [{p.name}]({p.relative_to(out_dir)})" for p in plot_files if p.suffix == ".png"]
    return "\n".join(lines) + "\n"


def _device_line(d: dict[str, Any]) -> str:
    if d.get("type") == "cuda":
        return (
            f"{d.get('name')} (CUDA {d.get('cuda')}, driver {d.get('driver')}, "
            f"torch {d.get('torch')})"
        )
    return f"CPU {d.get('name')}, {d.get('threads')} thread(s), torch {d.get('torch')}"


# ---------------------------------------------------------------------------------------
# Command line (`attnbench bench`, `attnbench bench-summary`)
# ---------------------------------------------------------------------------------------
DEFAULT_PROFILE = "config/default.yaml"


def add_parser(subparsers: Any) -> None:
    """Register ``bench`` and ``bench-summary`` on the ``attnbench`` sub-command parser."""
    p = subparsers.add_parser(
        "bench",
        help="efficiency sweep of variants: time, memory, TFLOP/s versus length (one record each)",
        description=(__doc__ or "").split("\n\n", 1)[0],
    )
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile YAML (default: %(default)s)")
    p.add_argument(
        "--variant", nargs="+", required=True, metavar="NAME", help="variant(s) to measure"
    )
    p.add_argument(
        "--out", help="record path, one variant only (default: "
        "<output_dir>/bench/<profile>/records/<variant>.json)",
    )  # fmt: skip
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="(default: the profile's)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the profile's `threads`)")
    grid = p.add_argument_group("grid overrides (default: the profile's bench.cpu / bench.cuda)")
    grid.add_argument("--modes", nargs="+", choices=MODES)
    grid.add_argument("--lengths", nargs="+", type=int, metavar="L")
    grid.add_argument("--long-lengths", nargs="*", type=int, metavar="L")
    grid.add_argument("--train-step-lengths", nargs="+", type=int, metavar="L")
    grid.add_argument("--batch", nargs="+", type=int, metavar="B")
    grid.add_argument("--heads", nargs="+", type=int, metavar="H")
    grid.add_argument("--head-dim", nargs="+", type=int, metavar="D")
    grid.add_argument("--causal", choices=("false", "true", "both"))
    grid.add_argument("--dtype", choices=DTYPES)
    grid.add_argument("--warmup", type=int)
    grid.add_argument("--repeats", type=int)
    grid.add_argument("--memory-cap-mib", type=float)
    p.add_argument("--quiet", action="store_true", help="no per-point lines on stderr")
    p.set_defaults(func=main, bench_command="run")

    s = subparsers.add_parser(
        "bench-summary", help="tables (Markdown + CSV) and plots from bench records"
    )
    s.add_argument("--profile", default=DEFAULT_PROFILE, help="profile YAML (default: %(default)s)")
    s.add_argument("--records", nargs="*", help="record files (default: the profile's records)")
    s.add_argument("--out-dir", help="output directory (default: <output_dir>/bench/<profile>)")
    s.add_argument("--reference", help="variant the relative table divides by (default: records')")
    s.add_argument("--no-plots", action="store_true", help="tables only")
    s.set_defaults(func=main, bench_command="summary")


def _grid_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "modes",
        "lengths",
        "long_lengths",
        "train_step_lengths",
        "batch",
        "heads",
        "head_dim",
        "dtype",
        "warmup",
        "repeats",
        "memory_cap_mib",
    )
    out = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if args.causal is not None:
        out["causal"] = {"false": [False], "true": [True], "both": [False, True]}[args.causal]
    return out


def main(args: argparse.Namespace) -> int:
    """Entry point of both sub-commands; bad input raises ``ValueError`` (one line)."""
    from attnbench.config import load_profile

    profile = load_profile(args.profile)
    if args.bench_command == "summary":
        base = Path(profile["output_dir"]) / "bench" / profile["profile"]
        files = (
            [Path(f) for f in args.records]
            if args.records
            else list(iter_record_files(base / "records"))
        )
        out_dir = Path(args.out_dir) if args.out_dir else base
        result = build_summary(files, out_dir, reference=args.reference, plots=not args.no_plots)
        print(
            f"bench summary: {result.n_records} record(s), {len(result.skipped)} skipped "
            f"→ {out_dir / 'summary.md'}"
        )
        return 0

    import torch

    from attnbench.attention import get_variant
    from attnbench.provenance import resolve_device

    for name in args.variant:
        get_variant(name)  # unknown names fail now, listing the valid ones
    if args.out and len(args.variant) > 1:
        raise ValueError("--out takes one variant; give one --variant or leave --out out")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    device = resolve_device(args.device or profile.get("device", "auto"))
    kind = "cuda" if device.type == "cuda" else "cpu"
    cfg = resolve_bench_config(profile, {kind: _grid_overrides(args)})
    bench_task(profile, cfg)
    torch.set_num_threads(args.threads or profile.get("threads", 1))

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for name in args.variant:
        out = (
            Path(args.out)
            if args.out
            else bench_record_path(profile["output_dir"], profile["profile"], name)
        )
        record = run_variant(profile, name, device, cfg, log=None if args.quiet else log)
        write_bench_record(out, record)
        counts: dict[str, int] = {}
        for p in record["points"]:
            counts[p["status"]] = counts.get(p["status"], 0) + 1
        tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        print(f"bench {name}: {tally} in {record['wall_time_s']:.1f} s; record: {out}")
    return 0
