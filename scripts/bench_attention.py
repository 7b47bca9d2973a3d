#!/usr/bin/env python
"""Time and peak memory of ONE attention layer's forward + backward, per variant and length.

Run from the repository root (CPU, fp32, 2 threads, both default lengths)::

    python scripts/bench_attention.py --variants vanilla fused --lengths 1024 4096 \\
        --repeats 3 --threads 2 --json bench_attention.json

With no ``--variants`` every registered variant (presets included) is measured.
This is a quick report, not the full ``attnbench bench``.

What is measured, for each (variant, length L):

* the layer: ``get_variant(name).build(AttentionDims(d_model=256, n_heads=4,
  head_dim=64, max_len=L))`` in training mode, input ``x`` of shape (batch, L, 256)
  with ``requires_grad``, no mask (``--causal``: a causal mask), self-attention;
* one step = ``attn(x, None, ctx).out.sum().backward()``;
* time: the first step is a warm-up (and the memory measurement, below); then
  ``--repeats`` steps are timed (``time.perf_counter`` on CPU, CUDA events on GPU)
  and the median is reported, in milliseconds;
* peak memory, on CPU: each point runs in a FRESH Python subprocess; a tiny
  unrelated step first starts the thread pool, autograd engine and kernels (so their
  one-time allocations are not charged to the layer); just before the layer's first
  step the process's current RSS (``/proc/self/statm``) is read, and the
  reported figure is ``ru_maxrss`` (``resource.getrusage``, the process's peak RSS)
  after that step minus that RSS: the growth of resident memory the step needed
  (activations, the score matrix, gradients), in MiB. If the step did not raise the
  process's previous peak (left by importing torch and building the layer), the
  figure is only an upper bound and the record says ``memory_exact: false``
  (the table marks it ``≤``). With ``--isolation inprocess`` points share one
  process, earlier points hide later peaks, and the figure is not comparable;
* peak memory, on CUDA: the same tiny step, then ``torch.cuda.reset_peak_memory_stats()``
  before the layer's first step, ``max_memory_allocated() − memory_allocated()`` (bytes allocated by
  PyTorch's caching allocator beyond what was live before the step).

A point that runs out of memory (``torch.OutOfMemoryError``, ``MemoryError``, a
RuntimeError saying it cannot allocate, or a worker killed by SIGKILL — what the
kernel's OOM killer does) is recorded as ``OOM``; any other failure as ``error``
with its message; a variant that cannot run the point (``--causal`` on a variant
without causal support, a length over its ``max_length``) as ``n/a``. Nothing
crashes the run.

Output: a Markdown table on stdout (device line first), progress on stderr, and
with ``--json PATH`` a JSON file ``{"device": {...}, "settings": {...},
"memory_definition": str, "records": [...]}``; each record has ``variant, length,
batch, status, time_ms (median), times_ms, warmup_ms, peak_mem_mib,
memory_exact, threads, error``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

try:
    import attnbench  # noqa: F401
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from attnbench.attention import (
    AttentionContext,
    AttentionDims,
    AttentionMask,
    get_variant,
    variant_names,
)

SCRIPT = Path(__file__).resolve()
RESULT_TAG = "BENCH_RESULT "
MIB = 1024.0**2
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")

CPU_MEMORY = (
    "CPU peak memory = ru_maxrss after the first (warm-up) forward+backward minus the "
    "process's RSS just before it, each point in a fresh subprocess; '≤' marks an upper "
    "bound (the step did not exceed the process's earlier peak)"
)
CUDA_MEMORY = (
    "CUDA peak memory = torch.cuda.max_memory_allocated() during the first forward+backward "
    "(after reset_peak_memory_stats) minus memory_allocated() just before it"
)


# ---------------------------------------------------------------------------------------
# One point, measured in the current process
# ---------------------------------------------------------------------------------------
def classify_failure(exc: BaseException) -> str:
    """``"OOM"`` for out-of-memory failures, ``"error"`` for anything else."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return "OOM"
    text = str(exc).lower()
    if isinstance(exc, RuntimeError) and any(m in text for m in OOM_MESSAGES):
        return "OOM"
    return "error"


def current_rss_bytes() -> int | None:
    """Resident set size now (Linux ``/proc/self/statm``), or None where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int:
    """``ru_maxrss`` of this process in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def unsupported_reason(name: str, length: int, causal: bool) -> str | None:
    caps = get_variant(name).capabilities
    if causal and not caps.causal:
        return f"{name} declares causal=False"
    if caps.max_length is not None and length > caps.max_length:
        return f"{name} supports length ≤ {caps.max_length}"
    return None


def measure_point(point: dict[str, Any]) -> dict[str, Any]:
    """Build one layer and measure it as the module docstring says; never raises."""
    record: dict[str, Any] = {
        "variant": point["variant"],
        "length": point["length"],
        "batch": point["batch"],
        "status": "ok",
        "time_ms": None,
        "times_ms": [],
        "warmup_ms": None,
        "peak_mem_mib": None,
        "memory_exact": None,
        "threads": torch.get_num_threads(),
        "error": None,
    }
    reason = unsupported_reason(point["variant"], point["length"], point["causal"])
    if reason is not None:
        return {**record, "status": "n/a", "error": reason}
    device = torch.device(point["device"])
    try:
        run_measurement(point, device, record)
    except Exception as exc:  # OOM and any other failure become a record
        record["status"] = classify_failure(exc)
        record["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return record


def run_measurement(point: dict[str, Any], device: torch.device, record: dict[str, Any]) -> None:
    """Fill ``record`` with the warm-up/memory step and the timed steps (may raise)."""
    torch.manual_seed(point["seed"])
    dtype = getattr(torch, point["dtype"])
    dims = AttentionDims(
        d_model=point["d_model"],
        n_heads=point["n_heads"],
        head_dim=point["d_model"] // point["n_heads"],
        max_len=point["length"],
    )
    layer = get_variant(point["variant"]).build(dims).to(device=device, dtype=dtype).train()
    x = torch.randn(point["batch"], point["length"], dims.d_model, device=device, dtype=dtype)
    x.requires_grad_(True)
    ctx = AttentionContext(mask=AttentionMask(causal=point["causal"]))

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x, None, ctx).out.sum().backward()

    warm_runtime(device, dtype)
    gc.collect()
    # --- the first step: warm-up and memory ------------------------------------------
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        record["warmup_ms"] = timed(step, device)
        record["peak_mem_mib"] = (torch.cuda.max_memory_allocated(device) - before) / MIB
        record["memory_exact"] = True
    else:
        peak_before = peak_rss_bytes()
        rss_before = current_rss_bytes()
        baseline = rss_before if rss_before is not None else peak_before
        record["warmup_ms"] = timed(step, device)
        peak_after = peak_rss_bytes()
        record["peak_mem_mib"] = max(peak_after - baseline, 0) / MIB
        record["memory_exact"] = peak_after > peak_before
    # --- the timed steps ----------------------------------------------------------------
    record["times_ms"] = [timed(step, device) for _ in range(point["repeats"])]
    record["time_ms"] = statistics.median(record["times_ms"])


def warm_runtime(device: torch.device, dtype: torch.dtype) -> None:
    """Start the thread pool, autograd engine and GEMM/softmax kernels with a tiny step.

    Their one-time allocations (several MiB on CPU) would otherwise be charged to
    whichever layer runs first.
    """
    w = torch.randn(64, 64, device=device, dtype=dtype, requires_grad=True)
    a = torch.randn(2, 4, 32, 64, device=device, dtype=dtype)
    b = torch.nn.functional.linear(a, w)
    (torch.softmax(b @ b.transpose(-2, -1), dim=-1) @ b).sum().backward()


def timed(fn: Any, device: torch.device) -> float:
    """Milliseconds ``fn()`` takes (CUDA events on GPU, perf_counter on CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


# ---------------------------------------------------------------------------------------
# One point in a fresh subprocess
# ---------------------------------------------------------------------------------------
def run_point_subprocess(point: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run :func:`measure_point` in a fresh interpreter; a crash becomes a record."""
    cmd = [sys.executable, str(SCRIPT), "--worker", json.dumps(point)]
    failed: dict[str, Any] = {
        "variant": point["variant"],
        "length": point["length"],
        "batch": point["batch"],
        "status": "error",
        "time_ms": None,
        "times_ms": [],
        "warmup_ms": None,
        "peak_mem_mib": None,
        "memory_exact": None,
        "threads": point["threads"],
        "error": None,
    }
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**failed, "status": "timeout", "error": f"no result within {timeout:g} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    if proc.returncode == -signal.SIGKILL:
        return {**failed, "status": "OOM", "error": "worker killed by SIGKILL (OOM killer?)"}
    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])[:300]
    return {**failed, "error": f"worker exited with {proc.returncode}: {tail}"}


def worker(point_json: str) -> int:
    point = json.loads(point_json)
    if point["threads"]:
        torch.set_num_threads(point["threads"])
    print(RESULT_TAG + json.dumps(measure_point(point)), flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device.type,
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda_version"] = torch.version.cuda
    return info


def format_table(records: list[dict[str, Any]], repeats: int) -> str:
    head = [
        f"| variant | length | batch | status | fwd+bwd ms (median of {repeats}) | peak mem MiB |",
        "|---|---:|---:|---|---:|---:|",
    ]
    rows = []
    for r in records:
        time_ms = f"{r['time_ms']:.1f}" if r["time_ms"] is not None else "–"
        mem = "–"
        if r["peak_mem_mib"] is not None:
            mem = ("" if r["memory_exact"] else "≤") + f"{r['peak_mem_mib']:.1f}"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error']}"
        rows.append(
            f"| {r['variant']} | {r['length']} | {r['batch']} | {status} | {time_ms} | {mem} |"
        )
    return "\n".join(head + rows)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="bench_attention.py",
        description=doc.split("\n\n", 1)[0],
        epilog=doc.split("\n\n", 1)[1] if "\n\n" in doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--variants", nargs="+", metavar="NAME", help="variants to measure (default: all)"
    )
    parser.add_argument(
        "--lengths", nargs="+", type=int, default=[1024, 4096], metavar="L",
        help="sequence lengths; max_len = L for each (default: 1024 4096)",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed steps after 1 warm-up (default: 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto",
        help="auto: cuda when available, else cpu (default: auto)",
    )  # fmt: skip
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32",
        help="layer and input dtype (default: float32)",
    )  # fmt: skip
    parser.add_argument("--causal", action="store_true", help="use a causal mask")
    parser.add_argument("--d-model", type=int, default=256, help="d_model (default: 256)")
    parser.add_argument(
        "--heads", type=int, default=4, help="heads; head_dim = d_model / heads (default: 4)"
    )
    parser.add_argument("--seed", type=int, default=0, help="torch seed (default: 0)")
    parser.add_argument(
        "--isolation", choices=["subprocess", "inprocess"], default="subprocess",
        help="subprocess: each point in a fresh interpreter (needed for the CPU memory "
        "figure; default); inprocess: faster, memory figures not comparable",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=3600.0,
        help="seconds per point in subprocess mode, then 'timeout' (default: 3600)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write records as JSON")
    parser.add_argument("--worker", metavar="POINT_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        for name in ("batch", "repeats", "d_model", "heads"):
            if getattr(args, name) <= 0:
                parser.error(f"--{name.replace('_', '-')} must be positive")
        if any(length <= 0 for length in args.lengths):
            parser.error("--lengths must be positive")
        if args.d_model % args.heads:
            parser.error("--d-model must be divisible by --heads")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    names = args.variants or variant_names()
    try:
        for name in names:
            get_variant(name)  # unknown names fail now, listing the valid ones
    except KeyError as exc:
        raise SystemExit(f"bench_attention.py: error: {exc}") from None
    memory_definition = CUDA_MEMORY if device.type == "cuda" else CPU_MEMORY
    if args.isolation == "inprocess" and device.type == "cpu":
        memory_definition += " [inprocess: points share one process; not comparable]"
    records = []
    for name in names:
        for length in args.lengths:
            point = {
                "variant": name,
                "length": length,
                "batch": args.batch,
                "repeats": args.repeats,
                "device": args.device,
                "dtype": args.dtype,
                "causal": args.causal,
                "threads": args.threads,
                "seed": args.seed,
                "d_model": args.d_model,
                "n_heads": args.heads,
            }
            print(f"[bench] {name} L={length} ...", file=sys.stderr, flush=True)
            if args.isolation == "subprocess":
                record = run_point_subprocess(point, args.timeout)
            else:
                record = measure_point(point)
            print(f"[bench]   {record['status']} {record['time_ms']}", file=sys.stderr)
            records.append(record)
    info = device_info(device)
    settings = {
        "d_model": args.d_model,
        "n_heads": args.heads,
        "head_dim": args.d_model // args.heads,
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup": 1,
        "dtype": args.dtype,
        "causal": args.causal,
        "isolation": args.isolation,
        "step": "attn(x, None, ctx).out.sum().backward(), training mode",
    }
    gpu = f", {info['gpu']}" if "gpu" in info else ""
    print(
        f"Device: {device.type}{gpu}; CPU {info['cpu_model']} "
        f"({info.get('usable_cpus', info['logical_cpus'])} usable CPUs), "
        f"torch {info['torch_version']}, {info['torch_threads']} threads, {args.dtype}, "
        f"batch {args.batch}, d_model {args.d_model}, {args.heads} heads"
        f"{', causal' if args.causal else ''}"
    )
    print(f"Memory: {memory_definition}.\n")
    print(format_table(records, args.repeats))
    if args.json is not None:
        payload = {
            "device": info,
            "settings": settings,
            "memory_definition": memory_definition,
            "records": records,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
