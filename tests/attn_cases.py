"""Shared inputs and masks for the per-variant tests (float64, dropout off).

A test file makes one :class:`Cases` with its sizes and uses its helpers; the dense
``allowed`` masks are built here independently of :class:`AttentionMask.allowed`, so
they can serve as references.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from attnbench.attention import Attention, AttentionDims, AttentionMask, get_variant


def padding(lengths: list[int] | tuple[int, ...], total: int) -> Tensor:
    """(B, total) bool, True for the first ``lengths[b]`` positions of row b."""
    return torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]


@dataclass(frozen=True)
class Cases:
    B: int = 3  # batch
    T: int = 7  # query length
    S: int = 5  # source length (cross-attention)
    D: int = 16  # d_model
    H: int = 4  # heads
    max_len: int = 32
    scale: float = 1.0  # inputs are scale · N(0, 1)
    self_lengths: tuple[int, ...] = (7, 4, 0)  # real tokens per row with padding (0: empty row)
    cross_lengths: tuple[int, ...] = (5, 2, 3)

    @property
    def DH(self) -> int:
        return self.D // self.H

    def build(self, name: str, seed: int = 0, **overrides) -> Attention:
        torch.manual_seed(seed)
        dims = AttentionDims(
            d_model=self.D, n_heads=self.H, head_dim=self.DH, max_len=self.max_len, dropout=0.0
        )
        return get_variant(name).build(dims, overrides or None).double().eval()

    def inputs(self, length: int | None = None, seed: int = 1) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        shape = (self.B, length or self.T, self.D)
        return self.scale * torch.randn(*shape, generator=gen, dtype=torch.float64)

    def heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.H, self.DH).transpose(1, 2)  # (B, H, n, dh)

    def case_setup(self, case: str) -> tuple[Tensor, Tensor | None, AttentionMask, Tensor]:
        """(x, source, the module's mask, the dense allowed mask (B|1, 1, T, S) built here).

        Cases: ``none``, ``causal``, ``causal+padding``, ``cross+padding``.
        """
        t = self.T
        x = self.inputs()
        if case == "none":
            return x, None, AttentionMask(), torch.ones(1, 1, t, t, dtype=torch.bool)
        causal = torch.ones(t, t, dtype=torch.bool).tril()[None, None]
        if case == "causal":
            return x, None, AttentionMask(causal=True), causal
        if case == "causal+padding":
            pad = padding(self.self_lengths, t)
            return x, None, AttentionMask(causal=True, key_padding=pad), causal & pad[:, None, None]
        assert case == "cross+padding", case
        source = self.inputs(self.S, seed=2)
        pad = padding(self.cross_lengths, self.S)
        return x, source, AttentionMask(key_padding=pad), pad[:, None, None, :]


class LargestTensor(TorchFunctionMode):
    """Records the element count of the largest tensor any torch call returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func: Callable, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        items = result if isinstance(result, tuple | list) else (result,)
        for item in items:
            if isinstance(item, Tensor):
                self.largest = max(self.largest, item.numel())
        return result


class LargestAllocation(TorchDispatchMode):
    """Records the largest storage (bytes) of any tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, Tensor):
                self.largest = max(self.largest, leaf.untyped_storage().nbytes())
        return out


def tiny_profile(
    out_dir: Path, *, n_layers: int = 1, n_test: int = 16, steps: int = 6, eval_every: int = 3
) -> dict[str, Any]:
    """A raw (unvalidated) profile: ListOps with a few dozen short examples, a tiny model."""
    return {
        "profile": "tiny",
        "output_dir": str(out_dir),
        "model": {"d_model": 16, "n_heads": 2, "n_layers": n_layers, "d_ff": 32},
        "train": {"steps": steps, "batch_size": 8, "eval_every": eval_every, "warmup_steps": 1},
        "tasks": {
            "listops": {
                "data": {
                    "n_train": 48,
                    "n_val": 16,
                    "n_test": n_test,
                    "min_length": 4,
                    "max_length": 24,
                }
            }
        },
    }
