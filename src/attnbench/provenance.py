"""Facts about the environment a run ran in, and the switches that fix it.

Provenance for every record (git commit, library versions, device, peak memory, time
stamps) and the run-wide settings a job enters first (offline mode, determinism, seeds,
device). Imported by the job runner and the efficiency sweep alike, and importing
nothing of attnbench itself, so that any layer may use it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import random
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Libraries whose versions every record carries (the leaderboard's provenance lists them).
LIBRARIES = (
    "torch",
    "numpy",
    "datasets",
    "sacrebleu",
    "pandas",
    "matplotlib",
    "entmax",
    "snakemake",
)


class DeviceError(ValueError):
    """The profile asks for a device this machine lacks; one-line message."""


# ---------------------------------------------------------------------------------------
def set_offline(offline: bool) -> None:
    """Make the HuggingFace libraries refuse network access (offline profiles).

    The libraries read these variables when they are imported, so a library that is
    already imported (a task module may import it at the top) is told directly too.
    """
    if not offline:
        return
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        datasets_config = sys.modules["datasets"].config
        datasets_config.HF_HUB_OFFLINE = datasets_config.HF_DATASETS_OFFLINE = True


@contextlib.contextmanager
def determinism(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms for one job (``deterministic: true``), restored afterwards.

    ``torch.use_deterministic_algorithms`` makes every op pick a deterministic kernel
    or raise, cuDNN stops auto-tuning (benchmark mode picks kernels by timing), and
    cuBLAS gets the fixed workspace it needs for reproducible GEMMs (the variable must
    be set before the first CUDA matrix product, so the runner enters this early). On CPU
    PyTorch's kernels are deterministic already for a fixed thread count.
    """
    if not enabled:
        yield
        return
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        enabled_before, warn_only, cudnn_det, cudnn_bench, workspace = previous
        torch.use_deterministic_algorithms(enabled_before, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "the profile asks for device 'cuda' but no CUDA GPU is available; "
            "valid choices here: auto, cpu"
        )
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "torch": torch.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_bytes": props.total_memory,
            "cuda": torch.version.cuda,
            "driver": _nvidia_driver(),
        }
    else:
        info |= {
            "name": _cpu_model(),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        }
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str:
    """Commit of the attnbench source tree (``+dirty`` if it has uncommitted changes)."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                *("git", "--no-optional-locks", "-C", str(src), "status", "--porcelain"),
                *("--untracked-files=no", "--", "."),
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout; attnbench " + _version("attnbench") + ")"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "attnbench": _version("attnbench")}
    versions |= {lib: _version(lib) for lib in LIBRARIES}
    return versions


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak memory of this run and what it measures.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, after a reset at start).
    CPU: the process's peak resident set size (``ru_maxrss``), which includes the
    Python interpreter and libraries, so compare it between variants, not with GPU figures.
    """
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_max_rss"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
