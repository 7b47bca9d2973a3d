"""An equal tuning budget: one grid of learning rates and weight decays for every variant.

Zoology (Arora et al. 2023) reports each mixer at the best of four learning rates and MAD
(Poli et al. 2024) at the best point of a learning-rate × weight-decay grid, because some
mixers train only in a narrow learning-rate window: a single shared learning rate ranks
the learning rate as much as the mixer. A profile may give the grid once (top-level
``tune``) or per task (``tasks.<task>.tune``, which replaces the top-level one key by key):

    tune: {lr: [1.0e-4, 4.6e-4, 2.2e-3, 1.0e-2], weight_decay: [0.0, 0.1]}

Every variant of the task then trains once per grid point (the same seed, data order and
steps); the point with the best validation score (the task's selection metric, at its
best checkpoint) is the run's result, and the record keeps every point
(``record["tuning"]``). A point that diverges is kept as such and never selected.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

TUNABLE = ("lr", "weight_decay")  # train keys a grid may vary


def resolve_tune(values: dict[str, Any] | None, where: str) -> dict[str, list[float]] | None:
    """The validated grid ``{key: [values]}`` in :data:`TUNABLE` order, or None if empty.

    Raises ``ValueError`` with one line naming ``where`` and the valid keys.
    """
    if not values:
        return None
    unknown = sorted(set(values) - set(TUNABLE))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(TUNABLE)}"
        )
    grid: dict[str, list[float]] = {}
    for key in TUNABLE:
        if key not in values:
            continue
        items = values[key]
        if not isinstance(items, list) or not items:
            raise ValueError(f"{where}.{key} must be a non-empty list of numbers, got {items!r}")
        numbers = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise ValueError(f"{where}.{key}: {item!r} is not a number")
            low_ok = item > 0 if key == "lr" else item >= 0
            if not low_ok or not math.isfinite(item):
                bound = "> 0" if key == "lr" else ">= 0"
                raise ValueError(f"{where}.{key}: {item!r} is out of range (must be {bound})")
            numbers.append(float(item))
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"{where}.{key} repeats a value: {items!r}")
        grid[key] = numbers
    return grid


def grid_points(tune: dict[str, list[float]] | None) -> list[dict[str, float]]:
    """The grid's points as train overrides, in a fixed order (``[{}]`` without a grid)."""
    if not tune:
        return [{}]
    keys = list(tune)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*tune.values())]


def point_label(point: dict[str, float]) -> str:
    """``lr=0.001 weight_decay=0`` (for logs and records)."""
    return " ".join(f"{k}={v:g}" for k, v in point.items()) or "(no grid)"


def best_point(scores: list[float | None], higher_is_better: bool) -> int | None:
    """Index of the best validation score (None entries: diverged); ties go to the first."""
    best, best_index = -math.inf, None
    sign = 1.0 if higher_is_better else -1.0
    for index, score in enumerate(scores):
        if score is None or not math.isfinite(score):
            continue
        if sign * score > best:
            best, best_index = sign * score, index
    return best_index
