"""The profile's ``bench:`` section: the efficiency sweep's grids and shared settings.

:mod:`attnbench.config` resolves a profile's section into a :class:`BenchConfig`
(``resolve_bench_config``, which also fills the defaults that depend on the profile
and the variant registry). This module holds the dataclasses, their checks and the
default grids; it imports no torch, so that the ``attnbench bench`` parser can read
its choices (:data:`MODES`, :data:`DTYPES`) without loading a model library.

Grids (profile keys ``bench.cpu`` / ``bench.cuda``, :class:`GridConfig`; the device
decides which one runs): by default one layer's forward + backward at 256–2048
tokens, batch 1, 4 heads × 64, fp32 on CPU (sized for all variants in ~3 minutes on
2 cores); on CUDA all three modes at 512–16384 (+ 32768), batch 4, 8 heads × 64,
causal and not, bf16.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MODES = ("fwd", "fwd_bwd", "train_step")
DTYPES = ("fp32", "bf16")


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
            positive_ints(getattr(self, name), f"{where}.{name}", allow_empty=name != "lengths")
        if self.train_step_lengths is not None:
            positive_ints(self.train_step_lengths, f"{where}.train_step_lengths")
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


def positive_ints(values: Any, where: str, allow_empty: bool = False) -> None:
    """``ValueError`` unless ``values`` is a list of positive integers (empty if allowed)."""
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
    """The profile's ``bench:`` section: what every grid shares, and the two grids.

    ``reference`` and ``exact_variants`` left at ``None`` are decided from the profile
    and the variant registry: :func:`attnbench.config.resolve_bench_config` sets the
    reference to the profile's ``reference.variant``, and with no ``exact_variants``
    a variant counts as exact iff its capabilities declare ``exact_softmax``
    (:func:`attnbench.config.bench_is_exact`).
    """

    task: str | None = None  # task model of the train_step mode (None: first task)
    reference: str | None = None  # the relative table divides by this variant
    exact_variants: list[str] | None = None  # explicit override of Capabilities.exact_softmax
    relative_lengths: list[int] = field(default_factory=lambda: [1024, 2048, 3072, 4096])
    subquadratic_max_exponent: float = 1.5  # long_lengths run if memory ~ L^x with x ≤ this
    cpu: GridConfig = field(default_factory=lambda: dataclasses.replace(CPU_GRID))
    cuda: GridConfig = field(default_factory=lambda: dataclasses.replace(CUDA_GRID))

    def __post_init__(self) -> None:
        positive_ints(self.relative_lengths, "bench.relative_lengths")
        if self.subquadratic_max_exponent <= 0:
            raise ValueError("bench.subquadratic_max_exponent must be positive")

    def grid(self, kind: str) -> GridConfig:
        return self.cuda if kind == "cuda" else self.cpu
