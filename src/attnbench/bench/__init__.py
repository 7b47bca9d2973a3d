"""Efficiency sweep: time, memory and throughput of every variant versus sequence length.

``attnbench bench --variant V`` measures one variant and writes one JSON record;
``attnbench bench-summary`` reads the records (and nothing else) and writes the
tables and plots. The workflow runs one ``bench`` job per variant
(``workflow/rules/bench.smk``).

Why: the efficient-attention papers sell speed and memory, and the one shared
comparison, Long Range Arena's efficiency table (Tay et al. 2021, "Long Range
Arena: A Benchmark for Efficient Transformers", Table 3: steps/s and peak memory
relative to the Transformer at 1K–4K tokens), was measured once, on TPUs, in JAX.
This package measures every registered variant through the same interface and
records how it was measured, so the numbers can be redone and compared.

Modules:

* :mod:`~attnbench.bench.measure` — one point: FLOP convention, live-tensor memory
  tracker, timing, failure classification, scaling-exponent fit;
* :mod:`~attnbench.bench.sweep` — the modes' steps (one layer; one optimiser step of
  the task model), the series' skip rules, one variant's sweep and its record;
* :mod:`~attnbench.bench.records` — the record layout, validation, reading, writing;
* :mod:`~attnbench.bench.summary` and :mod:`~attnbench.bench.plots` — tables and
  plots from records alone;
* :mod:`~attnbench.bench.cli` — the two commands.

The profile's ``bench:`` section (grids, reference, exact variants) is resolved by
:mod:`attnbench.config` (dataclasses in :mod:`attnbench.config_bench`).

The older ``results/bench/cpu_attention_1k_4k.{md,json}`` were written by the
first version of ``scripts/bench_attention.py`` (commit 8c08b11): one layer's
forward + backward, memory as the rise of a fresh process's peak RSS
(``ru_maxrss``), so their memory column is not comparable with this package's.

The modules' public names (listed in ``_MODULES``) are importable from
``attnbench.bench`` itself; each loads its module on first use, so that importing
the package (``attnbench --help`` builds the parsers) loads no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "attnbench.bench.measure": (
        "LiveTensorTracker",
        "MemoryCapExceeded",
        "attention_flops",
        "classify_failure",
        "fit_exponent",
        "measure_point",
        "quantile",
        "time_summary",
        "timed_ms",
    ),
    "attnbench.bench.sweep": (
        "layer_step",
        "point_line",
        "project_seconds",
        "run_series",
        "run_variant",
        "series_settings",
        "synthetic_batch",
        "synthetic_batch_reason",
        "train_step",
    ),
    "attnbench.bench.records": (
        "MEMORY_DEFINITIONS",
        "RECORD_KIND",
        "SCHEMA_VERSION",
        "STATUSES",
        "Setting",
        "bench_record_path",
        "empty_point",
        "read_bench_record",
        "validate_bench_record",
        "write_bench_record",
    ),
    "attnbench.bench.summary": (
        "SummaryResult",
        "build_summary",
        "group_series",
        "point_rows",
        "relative_markdown",
        "relative_rows",
        "scaling_rows",
        "series_label",
        "series_slug",
        "summary_markdown",
    ),
    "attnbench.bench.cli": ("add_parser", "main"),
    # resolved by the profile code; still importable from here (workflow/rules/bench.smk)
    "attnbench.config": ("bench_job_config",),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
