"""Multi-query associative recall (MQAR), generated with a seed.

Arora, Eyuboglu, Timalsina, Johnson, Poli, Zou, Rudra and Ré 2023, "Zoology: Measuring
and Improving Recall in Efficient Language Models" (ICLR 2024); the definition follows
the generator of their repository (HazyResearch/zoology, ``zoology/data/multiquery_ar.py``).

One example of length ``L`` with ``K`` pairs over a vocabulary of ``V`` ids:

* keys are drawn from ``[1, V/2)`` and values from ``[V/2, V)``, ``K`` distinct keys
  and ``K`` distinct values per example, paired in order;
* the first ``2K`` positions hold ``k₁ v₁ k₂ v₂ … k_K v_K``;
* the remaining ``L − 2K`` positions form ``(L − 2K) / 2`` query slots, one slot every
  other position; every key is queried once, in a slot drawn without replacement with
  probability ∝ ``a·g^(a−1)`` for slot ``g = 1, 2, …`` (a power law: most queries come
  soon after the context, as repeated bigrams do in text; ``a = 0.01`` as in Zoology);
* every other query-region position holds the filler id 0 (Zoology's figure-2 setting,
  ``random_non_queries=False``), or with ``random_fill`` a uniformly drawn id;
* the target at a query's position is the value paired with its key; every other
  position is :data:`IGNORE` (not scored).

Differences from the Zoology generator, on purpose: every draw comes from the
``numpy.random.Generator`` passed in (Zoology seeds NumPy's global generator), and
``random_fill`` draws filler ids from that generator instead of ``torch.randint``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = -100  # target of a position that is not scored
FILLER = 0  # the id between queries (Zoology: 0, outside the key range)
POWER_A = 0.01  # Zoology's train_power_a / test_power_a


@dataclass(frozen=True)
class Setting:
    """One (sequence length, number of key–value pairs) setting."""

    length: int
    pairs: int

    @property
    def label(self) -> str:
        return f"L{self.length}-K{self.pairs}"


def check_setting(setting: Setting, vocab_size: int, where: str) -> None:
    """Raise ``ValueError`` (one line naming ``where``) if the setting cannot be generated."""
    length, pairs = setting.length, setting.pairs
    if pairs < 1:
        raise ValueError(f"{where}: pairs must be >= 1, got {pairs}")
    if length % 2:
        raise ValueError(f"{where}: length must be even (queries every other slot), got {length}")
    if 4 * pairs > length:
        raise ValueError(
            f"{where}: length {length} leaves room for {(length - 2 * pairs) // 2} query "
            f"slots, fewer than {pairs} pairs (need length >= 4 x pairs)"
        )
    if pairs > vocab_size // 2 - 1:
        raise ValueError(
            f"{where}: {pairs} distinct keys need vocab_size >= {2 * (pairs + 1)}, got {vocab_size}"
        )


def gap_probabilities(slots: int, power_a: float = POWER_A) -> np.ndarray:
    """P(query slot g) ∝ a·g^(a−1), g = 1 … ``slots`` (Zoology's power law)."""
    g = np.arange(1, slots + 1, dtype=np.float64)
    p = power_a * g ** (power_a - 1)
    return p / p.sum()


def generate(
    rng: np.random.Generator,
    n: int,
    vocab_size: int,
    setting: Setting,
    *,
    power_a: float = POWER_A,
    random_fill: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` MQAR examples: ``inputs`` and ``targets``, both (n, L) int64 (module docstring)."""
    check_setting(setting, vocab_size, "mqar setting")
    length, pairs = setting.length, setting.pairs
    half = vocab_size // 2
    context = 2 * pairs
    slots = (length - context) // 2
    p = gap_probabilities(slots, power_a)
    inputs = np.full((n, length), FILLER, dtype=np.int64)
    targets = np.full((n, length), IGNORE, dtype=np.int64)
    for i in range(n):
        keys = rng.choice(np.arange(1, half), size=pairs, replace=False)
        values = rng.choice(np.arange(half, vocab_size), size=pairs, replace=False)
        inputs[i, 0:context:2] = keys
        inputs[i, 1:context:2] = values
        if random_fill:
            inputs[i, context:] = rng.integers(0, vocab_size, size=length - context)
        gaps = rng.choice(slots, size=pairs, replace=False, p=p)
        where = context + 2 * gaps
        inputs[i, where] = keys
        targets[i, where] = values
    return inputs, targets
