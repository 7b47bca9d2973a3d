"""scripts/bench_attention.py: a smoke run, its JSON, and failures recorded, not raised."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from attnbench.attention import Capabilities, get_variant

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_attention.py"
RECORD_FIELDS = {
    "variant",
    "length",
    "batch",
    "status",
    "time_ms",
    "times_ms",
    "warmup_ms",
    "peak_mem_mib",
    "memory_exact",
    "threads",
    "error",
}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_attention", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_attention"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()  # main(--threads) must not leak into other tests
    yield
    torch.set_num_threads(threads)


def run_main(bench: ModuleType, tmp_path: Path, *args: str) -> tuple[dict[str, Any], int]:
    out = tmp_path / "bench.json"
    code = bench.main([*args, "--repeats", "1", "--threads", "1", "--json", str(out)])
    return json.loads(out.read_text()), code


def test_smoke_run_writes_json_and_table(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--variants", "vanilla", "fused", "--lengths", "64", "128", "--isolation", "inprocess")
    data, code = run_main(bench, tmp_path, *args)
    assert code == 0
    assert set(data) == {"device", "settings", "memory_definition", "records"}
    for key in ("cpu_model", "torch_threads", "torch_version", "device", "python_version"):
        assert key in data["device"]
    assert data["device"]["torch_version"] == torch.__version__
    assert data["settings"]["d_model"] == 256 and data["settings"]["n_heads"] == 4
    assert "ru_maxrss" in data["memory_definition"]
    records = data["records"]
    assert [(r["variant"], r["length"]) for r in records] == [
        ("vanilla", 64),
        ("vanilla", 128),
        ("fused", 64),
        ("fused", 128),
    ]
    for r in records:
        assert set(r) == RECORD_FIELDS
        assert r["status"] == "ok", r["error"]
        assert len(r["times_ms"]) == 1 and r["time_ms"] == r["times_ms"][0] > 0
        assert r["warmup_ms"] > 0 and r["peak_mem_mib"] >= 0 and r["batch"] == 1
        assert r["threads"] == 1
    table = capsys.readouterr().out
    assert "| variant | length |" in table and "| fused | 128 | 1 | ok |" in table


def test_subprocess_point_measures_memory(bench: ModuleType, tmp_path: Path) -> None:
    data, _ = run_main(bench, tmp_path, "--variants", "vanilla", "--lengths", "256")
    (record,) = data["records"]
    assert record["status"] == "ok", record["error"]
    assert isinstance(record["memory_exact"], bool)
    # the 4 heads' 256×256 fp32 scores alone take 1 MiB; the step needs more than that
    assert record["peak_mem_mib"] > 1.0
    assert data["settings"]["isolation"] == "subprocess"


def test_out_of_memory_is_told_from_other_failures(bench: ModuleType) -> None:
    assert bench.classify_failure(torch.OutOfMemoryError("CUDA out of memory")) == "OOM"
    assert bench.classify_failure(RuntimeError("out of memory")) == "OOM"
    cpu = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
    assert bench.classify_failure(cpu) == "OOM"
    assert bench.classify_failure(MemoryError()) == "OOM"
    assert bench.classify_failure(RuntimeError("shape mismatch")) == "error"
    assert bench.classify_failure(ValueError("out of memory")) == "error"  # not a RuntimeError


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "OOM"),
        (RuntimeError("out of memory"), "OOM"),
        (RuntimeError("shape mismatch"), "error"),
    ],
)
def test_failures_are_recorded_not_raised(
    bench: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    status: str,
) -> None:
    cls = get_variant("fused").cls

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr(cls, "forward", broken)
    args = ("--variants", "fused", "vanilla", "--lengths", "32", "--isolation", "inprocess")
    data, code = run_main(bench, tmp_path, *args)
    assert code == 0
    failed, fine = data["records"]
    assert failed["status"] == status and failed["time_ms"] is None
    assert type(exc).__name__ in failed["error"]
    assert fine["status"] == "ok"  # the run went on
    assert f"| fused | 32 | 1 | {status}" in capsys.readouterr().out


def test_unsupported_point_is_na(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_variant("fused").cls, "capabilities", Capabilities(causal=False))
    args = ("--variants", "fused", "--lengths", "16", "--causal", "--isolation", "inprocess")
    data, _ = run_main(bench, tmp_path, *args)
    assert data["records"][0]["status"] == "n/a"
    assert "causal" in data["records"][0]["error"]


@pytest.mark.parametrize(
    ("returncode", "stderr", "status"),
    [(-signal.SIGKILL, "", "OOM"), (1, "Traceback\nImportError: no torch", "error")],
)
def test_crashed_worker_is_recorded(
    bench: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    returncode: int,
    stderr: str,
    status: str,
) -> None:
    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert "--worker" in cmd
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    point = {"variant": "vanilla", "length": 8, "batch": 1, "threads": None}
    record = bench.run_point_subprocess(point, timeout=10)
    assert record["status"] == status
    if status == "error":
        assert "ImportError" in record["error"]

    def too_slow(cmd: list[str], **kwargs: Any) -> Any:
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(bench.subprocess, "run", too_slow)
    assert bench.run_point_subprocess(point, timeout=10)["status"] == "timeout"


def test_help_documents_the_options(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        bench.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for word in ("--variants", "--lengths", "--repeats", "--threads", "--json", "ru_maxrss"):
        assert word in text
    with pytest.raises(SystemExit):
        bench.main(["--variants", "no-such-variant", "--lengths", "8"])
