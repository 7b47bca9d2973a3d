"""Measuring one point: FLOPs, tensor memory, time, failures, and the scaling-exponent fit.

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
  (not the Q/K/V/output projections). For exact softmax attention (variants
  whose capabilities declare ``exact_softmax``, or those listed in
  ``bench.exact_variants`` when the profile sets it) the figure is a FLOP rate
  (``flops_kind: "exact"``); for every other variant it is the *equivalent* rate
  of exact attention at that size (``"equivalent"``: exact attention's FLOPs
  divided by this variant's time), which compares wall time on a familiar
  scale, not work done. ``train_step`` points have none.
* **failures** — an out-of-memory error (``torch.OutOfMemoryError``,
  ``MemoryError``, a RuntimeError saying "out of memory" / "can't allocate", or
  a peak above ``memory_cap_mib``) is recorded as status ``OOM``
  (:func:`classify_failure`); any other exception as ``error`` with its message.
  What the sweep does next is :func:`attnbench.bench.sweep.run_series`'s rule.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from attnbench.bench.records import Setting, empty_point
from attnbench.config_bench import GridConfig

MIB = 2**20
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")
FLOP_FACTORS = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}  # FlashAttention's convention

# Builds the model and inputs of one setting and returns its step: one call runs one
# forward (fwd), forward + backward (fwd_bwd) or optimiser step (train_step).
StepFactory = Callable[[Setting], Callable[[], None]]


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
        self._mode: _Observe | None = None

    def __enter__(self) -> LiveTensorTracker:
        self._mode = _Observe(self)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._mode is not None
        self._mode.__exit__(*exc)
        self._mode = None

    def observe(self, inputs: Any, outputs: Any) -> None:
        """Account for one operation's ``outputs`` (``inputs``: its arguments)."""
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


class _Observe(TorchDispatchMode):
    """The ``TorchDispatchMode`` behind :class:`LiveTensorTracker`."""

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


def _dense(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.layout == torch.strided and t.device.type != "meta"


def classify_failure(exc: BaseException) -> str:
    """``"OOM"`` for out-of-memory failures (of any device or of the cap), else ``"error"``."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return "OOM"
    if isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MESSAGES):
        return "OOM"
    return "error"


def timed_ms(fn: Callable[[], None], device: torch.device) -> float:
    """Milliseconds one call of ``fn`` takes: CUDA events on GPU, perf_counter on CPU."""
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


def measure_point(
    make_step: StepFactory, s: Setting, device: torch.device, grid: GridConfig, exact: bool
) -> dict[str, Any]:
    """Build, warm up, measure memory and time one point; never raises.

    ``exact``: the variant computes exact softmax attention (its TFLOP/s is a FLOP rate).
    """
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
