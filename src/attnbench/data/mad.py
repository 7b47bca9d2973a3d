"""The six MAD synthetic token-manipulation tasks: seeded generators, configs, registry.

MAD is the task suite of Poli, Thomas, Nguyen, Ponnusamy, Deiseroth, Kersting, Suzuki,
Hie, Ermon, Ré, Zhang and Massaroli, "Mechanistic Design and Scaling of Hybrid
Architectures", ICML 2024 (arXiv:2403.17844); reference code ``athms/mad-lab``
(https://github.com/athms/mad-lab): generators in ``mad/data/instances.py``, baseline
settings and one-factor sweeps in ``configs/tasks/*.yml``, split sizes in
``mad/configs.py`` (``MADConfig``). This module is an independent re-implementation of
those definitions; the token layouts, vocabulary partitions and scored positions are
mad-lab's.

Array convention
    ``generate(cfg, n, rng)`` returns ``inputs`` and ``targets``, both ``(n, T)`` int64.
    ``targets[i, t]`` is what the model must output at position ``t`` (for the causal
    tasks: the next token), :data:`IGNORE` (-100) where nothing is scored. ``T`` is
    ``MAD_TASKS[name].length(cfg)``; it equals ``seq_len`` except for multi-query
    (noisy) in-context recall, where mad-lab builds ``seq_len`` tokens and drops the
    last one in the autoregressive shift, so ``T = seq_len - 1`` (mad-lab's own test
    accepts ``seq_len - 1 <= T <= seq_len``).

Train versus held-out targets (mirrors mad-lab's ``is_training`` flag)
    For the three recall tasks mad-lab's *training* targets are the whole sequence
    shifted by one (plain next-token prediction, every position in the loss), while its
    *test* targets score only the recall positions. ``generate(..., training=True)``
    gives the former; :func:`generate_splits` uses it for "train" and the scored-only
    targets for "val" and "test". Fuzzy recall also *draws* its test data differently:
    training keys have 1..``k_motif_size`` tokens, test (and here val) keys always have
    exactly ``k_motif_size``. The other three tasks have one target layout.

Tasks (``V`` = ``vocab_size``; ids ``0..V-1``; "mq" = ``multi_query``, MAD's setting)
    mad-in-context-recall
        Key/value pairs ``k v k v ...`` then a final probe ``k* v*`` whose key occurred
        earlier. Keys are ``[0, K)``, values ``[K, N)`` with ``N = V`` (mq) or ``V - 1``
        (the last id is then a copy prefix put before the probe) and ``K = N // 2``. A key
        keeps one value within a sequence; mappings differ between sequences. Scored: the
        probe value and, with mq, every value whose key already occurred.
    mad-fuzzy-recall
        As recall, but keys are 1..``k_motif_size`` and values 1..``v_motif_size``
        distinct adjacent tokens (``N = V - 1``, last id = left padding; without mq
        ``N = V - 2`` and ``V - 1`` is the copy prefix). The probe pair is placed at a
        random point of the body; sequences are left-padded to the length. Scored: whole
        values of repeated keys (mq) and the final probe value.
    mad-noisy-recall
        In-context recall where each non-final pair slot is, with probability
        ``frac_noise``, two noise tokens from ``[N, N + noise_vocab_size)`` (``N`` =
        ``V - noise_vocab_size``, minus one without mq). Noise is never scored.
    mad-selective-copy
        ``num_tokens_to_copy`` tokens from ``[0, V - 2)`` scattered among blanks
        (``V - 2``), then the copy token ``V - 1`` and ``num_tokens_to_copy`` blanks;
        the targets of those last blanks are the copied tokens in order. As in mad-lab
        the blanks fall in the gaps *before* each token to copy (uniformly), never after
        the last one.
    mad-compression
        ``seq_len - 1`` tokens from ``[0, V - 1)`` then the compression token ``V - 1``;
        targets equal the inputs at every position. mad-lab trains this with an
        auto-encoder backbone (``MadTask.backbone``): the encoder's output at the
        compression token (the last position) alone is decoded, per position, back into
        the whole sequence.
    mad-memorization
        Pairs ``k INS`` (``INS`` = ``V - 1``) with keys drawn from ``[0, K)``,
        ``K = (V - 1) // 2``; the target at each ``INS`` is the key's value from one
        fixed dictionary (an injective map into ``[K, V - 1)``), derived from
        ``cfg.seed`` and shared by every split: :func:`memorization_kv_map`.

Splits
    :func:`generate_splits` draws "train", then "val", then "test" from one
    ``np.random.default_rng(cfg.seed)`` (mad-lab, too, draws its test set after the
    training set from the same generator); memorization first draws its dictionary from
    that generator. mad-lab has no validation split; "val" is a held-out set drawn like
    "test" (default size: mad-lab's test size, 1280).

Deliberate differences from mad-lab
    1. Selective copying: before mad-lab's fix of December 2024 (PR #8, commit 35772e8)
       ``MADConfig.instance_fn_kwargs`` did not pass ``num_tokens_to_copy`` on, so the
       generator always copied its default 16 tokens whatever the configuration (the
       sweep over 32/64/96 tokens was silently the baseline). Every knob here reaches
       the generator.
    2. Selective copying: mad-lab drew the blank positions from NumPy's global state
       (``np.random.randint``) instead of the seeded generator. Here every random draw
       comes from the ``np.random.Generator`` passed in (memorization's dictionary from
       one seeded by ``cfg.seed``); the global state is never read.
    3. Fuzzy recall: mad-lab inserts the probe pair once the body has reached a random
       offset, but the body can end before that offset, so some of its test
       sequences end with a query whose key never occurred (unanswerable; about 2.5% at
       the baseline setting, measured on mad-lab's generator). Here the probe
       is inserted at the same random offset or, failing that, in the last body step
       that can still hold it.
    4. (In-context) recall: the slot guaranteed to hold a key/value pair is drawn among
       the body slots (mad-lab's draw can hit the final slot, which is not part of the
       body, so a very noisy sequence could have no pair at all and crash).
    5. The noise knobs of mad-lab's compression, memorization and fuzzy-recall
       generators (zero in MAD's benchmark) are not offered; mad-lab's compression
       targets also ignore its own noise masking.
    Random streams are not mad-lab's (draws are vectorised and ordered differently), so
    arrays are not bit-identical to mad-lab's; the distributions are the same.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "IGNORE",
    "MAD_TASKS",
    "CompressionConfig",
    "FuzzyRecallConfig",
    "InContextRecallConfig",
    "MadTask",
    "MemorizationConfig",
    "NoisyRecallConfig",
    "SelectiveCopyConfig",
    "generate_compression",
    "generate_fuzzy_recall",
    "generate_in_context_recall",
    "generate_memorization",
    "generate_noisy_recall",
    "generate_selective_copy",
    "generate_splits",
    "memorization_kv_map",
]

IGNORE = -100

# mad-lab MADConfig (mad/configs.py): num_train_examples / num_test_examples defaults.
_MAD_N_TRAIN = 12_800
_MAD_N_TEST = 1_280


# ---------------------------------------------------------------------------------------
# validation helpers


def _where(cfg: Any, name: str) -> str:
    return f"tasks.{cfg.TASK}.data.{name}"


def _int(cfg: Any, name: str, lo: int, hint: str | None = None) -> int:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{_where(cfg, name)}={value!r} must be an integer >= {lo}")
    if value < lo:
        raise ValueError(f"{_where(cfg, name)}={value!r} must be {hint or f'>= {lo}'}")
    return int(value)


def _bool(cfg: Any, name: str) -> bool:
    value = getattr(cfg, name)
    if not isinstance(value, bool):
        raise ValueError(f"{_where(cfg, name)}={value!r} must be true or false")
    return value


def _fraction(cfg: Any, name: str) -> float:
    value = getattr(cfg, name)
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{_where(cfg, name)}={value!r} must be a number in [0, 1)")
    return float(value)


def _common(cfg: Any) -> None:
    _int(cfg, "seed", 0)
    for name in ("n_train", "n_val", "n_test"):
        _int(cfg, name, 1)


def _even_seq_len(cfg: Any, lo: int) -> None:
    seq_len = _int(cfg, "seq_len", lo, f"an even integer >= {lo}")
    if seq_len % 2:
        raise ValueError(f"{_where(cfg, 'seq_len')}={seq_len} must be an even integer >= {lo}")


def _min_vocab(cfg: Any, minimum: int, why: str) -> None:
    _int(cfg, "vocab_size", minimum, f">= {minimum} ({why})")


# ---------------------------------------------------------------------------------------
# configs (defaults: mad-lab configs/tasks/<task>.yml "baseline", MADConfig split sizes)


@dataclass(frozen=True)
class InContextRecallConfig:
    """``tasks.mad-in-context-recall.data``; defaults: configs/tasks/in-context-recall.yml."""

    TASK: ClassVar[str] = "mad-in-context-recall"

    vocab_size: int = 16
    seq_len: int = 128  # tokens before the shift; inputs have seq_len - 1 with multi_query
    multi_query: bool = True  # score every repeated key's value, not only the probe
    seed: int = 0
    n_train: int = _MAD_N_TRAIN
    n_val: int = _MAD_N_TEST
    n_test: int = _MAD_N_TEST

    def __post_init__(self) -> None:
        _common(self)
        mq = _bool(self, "multi_query")
        _even_seq_len(self, 4)
        _min_vocab(self, 2 if mq else 3, "one key, one value" + ("" if mq else ", copy prefix"))


@dataclass(frozen=True)
class FuzzyRecallConfig:
    """``tasks.mad-fuzzy-recall.data``; defaults: configs/tasks/fuzzy-in-context-recall.yml."""

    TASK: ClassVar[str] = "mad-fuzzy-recall"

    vocab_size: int = 16
    seq_len: int = 128
    k_motif_size: int = 3  # keys have 1..k tokens in training, exactly k in val/test
    v_motif_size: int = 3  # values have 1..v tokens
    multi_query: bool = True
    seed: int = 0
    n_train: int = _MAD_N_TRAIN
    n_val: int = _MAD_N_TEST
    n_test: int = _MAD_N_TEST

    def __post_init__(self) -> None:
        _common(self)
        mq = _bool(self, "multi_query")
        k = _int(self, "k_motif_size", 1)
        v = _int(self, "v_motif_size", 1)
        # keys are k distinct tokens of N // 2, values v distinct tokens of N - N // 2
        n_special = 1 if mq else 2
        need = n_special + max(2 * k, 2 * v - 1)
        _min_vocab(self, need, f"k_motif_size={k} distinct key and v_motif_size={v} value tokens")
        min_len = 2 * (k + v) + 1
        _int(self, "seq_len", min_len, f">= 2 * (k_motif_size + v_motif_size) + 1 = {min_len}")


@dataclass(frozen=True)
class NoisyRecallConfig:
    """``tasks.mad-noisy-recall.data``; defaults: configs/tasks/noisy-in-context-recall.yml."""

    TASK: ClassVar[str] = "mad-noisy-recall"

    vocab_size: int = 32  # includes the noise vocabulary
    seq_len: int = 128  # tokens before the shift; inputs have seq_len - 1 with multi_query
    noise_vocab_size: int = 16
    frac_noise: float = 0.2  # probability that a non-final pair slot holds two noise tokens
    multi_query: bool = True
    seed: int = 0
    n_train: int = _MAD_N_TRAIN
    n_val: int = _MAD_N_TEST
    n_test: int = _MAD_N_TEST

    def __post_init__(self) -> None:
        _common(self)
        mq = _bool(self, "multi_query")
        _even_seq_len(self, 4)
        noise = _int(self, "noise_vocab_size", 1)
        _fraction(self, "frac_noise")
        need = noise + (2 if mq else 3)
        _min_vocab(self, need, f"one key, one value and noise_vocab_size={noise} noise tokens")


@dataclass(frozen=True)
class SelectiveCopyConfig:
    """``tasks.mad-selective-copy.data``; defaults: configs/tasks/selective-copying.yml."""

    TASK: ClassVar[str] = "mad-selective-copy"

    vocab_size: int = 16
    seq_len: int = 256
    num_tokens_to_copy: int = 16
    seed: int = 0
    n_train: int = _MAD_N_TRAIN
    n_val: int = _MAD_N_TEST
    n_test: int = _MAD_N_TEST

    def __post_init__(self) -> None:
        _common(self)
        _min_vocab(self, 3, "one token to copy, blank, copy token")
        m = _int(self, "num_tokens_to_copy", 1)
        lo = 2 * m + 2
        _int(self, "seq_len", lo, f"> 2 * num_tokens_to_copy + 1 = {lo - 1}")


@dataclass(frozen=True)
class CompressionConfig:
    """``tasks.mad-compression.data``; defaults: configs/tasks/compression.yml."""

    TASK: ClassVar[str] = "mad-compression"

    vocab_size: int = 16
    seq_len: int = 32
    seed: int = 0
    n_train: int = _MAD_N_TRAIN
    n_val: int = _MAD_N_TEST
    n_test: int = _MAD_N_TEST

    def __post_init__(self) -> None:
        _common(self)
        _min_vocab(self, 2, "one content token, compression token")
        _int(self, "seq_len", 2)


@dataclass(frozen=True)
class MemorizationConfig:
    """``tasks.mad-memorization.data``; defaults: configs/tasks/memorization.yml."""

    TASK: ClassVar[str] = "mad-memorization"

    vocab_size: int = 256
    seq_len: int = 32
    seed: int = 0  # also fixes the key -> value dictionary
    n_train: int = 256
    n_val: int = _MAD_N_TEST
    n_test: int = _MAD_N_TEST

    def __post_init__(self) -> None:
        _common(self)
        _min_vocab(self, 3, "one key, one value, insert token")
        _even_seq_len(self, 2)


# ---------------------------------------------------------------------------------------
# generators


def _check_call(cfg: Any, cls: type, n: int, rng: np.random.Generator) -> None:
    if not isinstance(cfg, cls):
        raise TypeError(f"expected a {cls.__name__}, got {type(cfg).__name__}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n={n!r} must be a non-negative integer")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def _stack(rows: list[tuple[np.ndarray, np.ndarray]], length: int) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        empty = np.zeros((0, length), dtype=np.int64)
        return empty, empty.copy()
    inputs = np.stack([r[0] for r in rows]).astype(np.int64, copy=False)
    targets = np.stack([r[1] for r in rows]).astype(np.int64, copy=False)
    return inputs, targets


def _recall_sequence(
    vocab_size: int,
    seq_len: int,
    multi_query: bool,
    noise_vocab_size: int,
    frac_noise: float,
    training: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One (noisy) in-context recall example, mad-lab's layout (see the module docstring)."""
    n_regular = vocab_size - (0 if multi_query else 1) - noise_vocab_size
    n_keys = n_regular // 2
    copy_prefix = vocab_size - 1
    n_slots = seq_len // 2 - 1  # body pair slots; the last pair is the probe

    keep = rng.integers(n_slots)  # this slot holds a key/value pair whatever the noise
    is_noise = np.zeros(n_slots, dtype=bool)
    if frac_noise > 0:
        is_noise = rng.random(n_slots) < frac_noise
        is_noise[keep] = False
    keys = rng.integers(0, n_keys, size=n_slots)
    fresh_values = rng.integers(n_keys, n_regular, size=n_slots)

    pair_slots = np.flatnonzero(~is_noise)
    pair_keys = keys[pair_slots]
    # a key keeps the value drawn at its first occurrence in the sequence
    distinct, first, which = np.unique(pair_keys, return_index=True, return_inverse=True)
    first_of_each = first[which]
    pair_values = fresh_values[pair_slots][first_of_each]
    repeated = first_of_each != np.arange(pair_slots.size)

    body = np.empty((n_slots, 2), dtype=np.int64)
    body[pair_slots, 0] = pair_keys
    body[pair_slots, 1] = pair_values
    noise_slots = np.flatnonzero(is_noise)
    if noise_slots.size:
        body[noise_slots] = rng.integers(
            n_regular, n_regular + noise_vocab_size, size=(noise_slots.size, 2)
        )
    body_targets = np.full((n_slots, 2), IGNORE, dtype=np.int64)
    if multi_query:
        body_targets[pair_slots[repeated], 1] = pair_values[repeated]

    # probe: uniform over the distinct keys shown in the body (as mad-lab)
    j = rng.integers(distinct.size)
    probe_key = int(distinct[j])
    probe_value = int(fresh_values[pair_slots][first[j]])

    prefix = [] if multi_query else [copy_prefix]
    tail = np.array([*prefix, probe_key, probe_value], dtype=np.int64)
    tail_targets = np.array([IGNORE] * len(prefix) + [IGNORE, probe_value], dtype=np.int64)
    stream = np.concatenate([body.ravel(), tail])
    targets = np.concatenate([body_targets.ravel(), tail_targets])
    if training:
        return stream[:-1], stream[1:]
    return stream[:-1], targets[1:]


def _recall_length(seq_len: int, multi_query: bool) -> int:
    return seq_len - 1 if multi_query else seq_len


def generate_in_context_recall(
    cfg: InContextRecallConfig, n: int, rng: np.random.Generator, *, training: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` in-context recall examples; ``training`` gives next-token targets everywhere."""
    _check_call(cfg, InContextRecallConfig, n, rng)
    rows = [
        _recall_sequence(cfg.vocab_size, cfg.seq_len, cfg.multi_query, 0, 0.0, training, rng)
        for _ in range(n)
    ]
    return _stack(rows, _recall_length(cfg.seq_len, cfg.multi_query))


def generate_noisy_recall(
    cfg: NoisyRecallConfig, n: int, rng: np.random.Generator, *, training: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy in-context recall examples; ``training`` as for in-context recall."""
    _check_call(cfg, NoisyRecallConfig, n, rng)
    rows = [
        _recall_sequence(
            cfg.vocab_size,
            cfg.seq_len,
            cfg.multi_query,
            cfg.noise_vocab_size,
            cfg.frac_noise,
            training,
            rng,
        )
        for _ in range(n)
    ]
    return _stack(rows, _recall_length(cfg.seq_len, cfg.multi_query))


def _fuzzy_sequence(
    cfg: FuzzyRecallConfig, training: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One fuzzy recall example, mad-lab's layout (see the module docstring)."""
    n_special = 1 if cfg.multi_query else 2
    n_regular = cfg.vocab_size - n_special
    pad = n_regular  # V - 1 with multi_query, else V - 2 (V - 1 is the copy prefix)
    copy_prefix = cfg.vocab_size - 1
    n_keys = n_regular // 2
    n_values = n_regular - n_keys
    k_max, v_max = cfg.k_motif_size, cfg.v_motif_size

    def key_size() -> int:
        return int(rng.integers(1, k_max + 1)) if training else k_max

    def value_size() -> int:
        return int(rng.integers(1, v_max + 1))

    def motif(size: int, count: int, offset: int) -> tuple[int, ...]:
        # an ordered draw of distinct tokens: uniform over mad-lab's permutation list
        return tuple(int(t) + offset for t in rng.choice(count, size=size, replace=False))

    probe_key = motif(key_size(), n_keys, 0)
    probe_value = motif(value_size(), n_values, n_keys)
    probe_len = len(probe_key) + len(probe_value)
    probe_at = int(rng.integers(cfg.seq_len - 2 * probe_len))
    body_limit = cfg.seq_len - probe_len - (k_max + v_max)
    last_chance = body_limit - (k_max + v_max)  # past this the body may end: insert now

    stream: list[int] = []
    targets: list[int] = []
    values: dict[tuple[int, ...], tuple[int, ...]] = {}
    probe_added = False
    while len(stream) < body_limit:
        k_size, v_size = key_size(), value_size()
        if not probe_added and len(stream) >= min(probe_at, last_chance):
            stream += probe_key + probe_value
            targets += [IGNORE] * probe_len
            values[probe_key] = probe_value
            probe_added = True
            continue
        key = motif(k_size, n_keys, 0)
        seen = key in values
        if seen:
            value = values[key]
        elif key == probe_key:
            value = probe_value
        else:
            value = motif(v_size, n_values, n_keys)
        values[key] = value
        probe_added = probe_added or key == probe_key
        stream += key + value
        targets += [IGNORE] * len(key)
        targets += list(value) if (seen and cfg.multi_query) else [IGNORE] * len(value)

    if not cfg.multi_query:
        stream.append(copy_prefix)
        targets.append(IGNORE)
    stream += probe_key + probe_value
    targets += [IGNORE] * len(probe_key) + list(probe_value)

    n_pad = cfg.seq_len + 1 - len(stream)  # >= 1 by construction
    full = np.array([pad] * n_pad + stream, dtype=np.int64)
    full_targets = np.array([IGNORE] * n_pad + targets, dtype=np.int64)
    if training:
        return full[:-1], full[1:]
    return full[:-1], full_targets[1:]


def generate_fuzzy_recall(
    cfg: FuzzyRecallConfig, n: int, rng: np.random.Generator, *, training: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fuzzy recall examples; ``training``: variable key sizes, next-token targets."""
    _check_call(cfg, FuzzyRecallConfig, n, rng)
    rows = [_fuzzy_sequence(cfg, training, rng) for _ in range(n)]
    return _stack(rows, cfg.seq_len)


def generate_selective_copy(
    cfg: SelectiveCopyConfig, n: int, rng: np.random.Generator, *, training: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` selective copying examples (``training`` changes nothing, as in mad-lab)."""
    del training
    _check_call(cfg, SelectiveCopyConfig, n, rng)
    m, length = cfg.num_tokens_to_copy, cfg.seq_len
    blank, copy_token = cfg.vocab_size - 2, cfg.vocab_size - 1
    n_blanks = length - 2 * m - 1
    to_copy = rng.integers(0, cfg.vocab_size - 2, size=(n, m))
    # each blank goes into one of the m gaps in front of a token to copy
    gaps = rng.integers(0, m, size=(n, n_blanks))
    per_gap = np.zeros((n, m), dtype=np.int64)
    np.add.at(per_gap, (np.arange(n)[:, None], gaps), 1)
    positions = np.cumsum(per_gap, axis=1) + np.arange(m)

    inputs = np.full((n, length), blank, dtype=np.int64)
    inputs[np.arange(n)[:, None], positions] = to_copy
    inputs[:, length - m - 1] = copy_token
    targets = np.full((n, length), IGNORE, dtype=np.int64)
    targets[:, length - m :] = to_copy
    return inputs, targets


def generate_compression(
    cfg: CompressionConfig, n: int, rng: np.random.Generator, *, training: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` compression examples: targets are the inputs (``training`` changes nothing)."""
    del training
    _check_call(cfg, CompressionConfig, n, rng)
    tokens = rng.integers(0, cfg.vocab_size - 1, size=(n, cfg.seq_len - 1))
    inputs = np.concatenate([tokens, np.full((n, 1), cfg.vocab_size - 1)], axis=1, dtype=np.int64)
    return inputs, inputs.copy()


def memorization_kv_map(
    cfg: MemorizationConfig, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The fixed dictionary: ``kv_map[key]`` is the value id of key ``0..K-1``.

    Drawn from ``rng`` when given (``generate_splits`` passes its generator, before any
    example), else from a fresh ``np.random.default_rng(cfg.seed)``, which gives the same
    map. mad-lab pairs shuffled keys with shuffled values (``generate_kv_map``): a
    uniformly random injection of the ``K`` keys into the ``V - 1 - K`` values.
    """
    if not isinstance(cfg, MemorizationConfig):
        raise TypeError(f"expected a MemorizationConfig, got {type(cfg).__name__}")
    if rng is None:
        rng = np.random.default_rng(cfg.seed)
    n_regular = cfg.vocab_size - 1
    n_keys = n_regular // 2
    return (n_keys + rng.permutation(n_regular - n_keys)[:n_keys]).astype(np.int64)


def generate_memorization(
    cfg: MemorizationConfig,
    n: int,
    rng: np.random.Generator,
    *,
    training: bool = False,
    kv_map: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` memorization examples over the dictionary ``kv_map`` (default: from the seed)."""
    del training
    _check_call(cfg, MemorizationConfig, n, rng)
    if kv_map is None:
        kv_map = memorization_kv_map(cfg)
    n_pairs = cfg.seq_len // 2
    keys = rng.integers(0, kv_map.size, size=(n, n_pairs))
    inputs = np.empty((n, cfg.seq_len), dtype=np.int64)
    inputs[:, 0::2] = keys
    inputs[:, 1::2] = cfg.vocab_size - 1  # insert token: "output the value now"
    targets = np.full((n, cfg.seq_len), IGNORE, dtype=np.int64)
    targets[:, 1::2] = kv_map[keys]
    return inputs, targets


# ---------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class MadTask:
    """One MAD task: its config class, generator and what a model needs to know."""

    name: str
    config: type
    generate: Callable[..., tuple[np.ndarray, np.ndarray]]
    vocab_size: Callable[[Any], int]  # embedding size covering every input and target id
    length: Callable[[Any], int]  # T, the second dimension of inputs and targets
    description: Callable[[Any], str]
    sweeps: dict[str, list[Any]] = field(default_factory=dict)  # MAD's one-factor changes
    paper_setting: str = ""
    backbone: str = "language-model"  # mad-lab's model backbone for the task


def _splits(cfg: Any) -> str:
    return f"{cfg.n_train}/{cfg.n_val}/{cfg.n_test} examples, seed {cfg.seed}"


def _mq(cfg: Any) -> str:
    return "multi-query" if cfg.multi_query else "single-query"


_SETTING = (
    "MAD baseline of athms/mad-lab configs/tasks/{yml} (Poli et al. 2024); "
    "train/test sizes from mad/configs.py MADConfig; n_val = mad-lab's test size"
)
_COMMON_SWEEPS: dict[str, list[Any]] = {"n_train": [6400, 3200, 1600, 800]}

MAD_TASKS: dict[str, MadTask] = {
    "mad-in-context-recall": MadTask(
        name="mad-in-context-recall",
        config=InContextRecallConfig,
        generate=generate_in_context_recall,
        vocab_size=lambda c: c.vocab_size,
        length=lambda c: _recall_length(c.seq_len, c.multi_query),
        description=lambda c: (
            f"MAD in-context recall ({_mq(c)}), vocab {c.vocab_size}, length {c.seq_len}, "
            f"{_splits(c)}"
        ),
        sweeps={
            "vocab_size": [32, 64, 128],
            "seq_len": [256, 512, 1024],
            **_COMMON_SWEEPS,
        },
        paper_setting=_SETTING.format(yml="in-context-recall.yml"),
    ),
    "mad-fuzzy-recall": MadTask(
        name="mad-fuzzy-recall",
        config=FuzzyRecallConfig,
        generate=generate_fuzzy_recall,
        vocab_size=lambda c: c.vocab_size,
        length=lambda c: c.seq_len,
        description=lambda c: (
            f"MAD fuzzy in-context recall ({_mq(c)}), vocab {c.vocab_size}, length "
            f"{c.seq_len}, keys <= {c.k_motif_size} and values <= {c.v_motif_size} tokens, "
            f"{_splits(c)}"
        ),
        sweeps={
            "vocab_size": [32, 64, 128],
            "seq_len": [256, 512, 1024],
            **_COMMON_SWEEPS,
        },
        paper_setting=_SETTING.format(yml="fuzzy-in-context-recall.yml"),
    ),
    "mad-noisy-recall": MadTask(
        name="mad-noisy-recall",
        config=NoisyRecallConfig,
        generate=generate_noisy_recall,
        vocab_size=lambda c: c.vocab_size,
        length=lambda c: _recall_length(c.seq_len, c.multi_query),
        description=lambda c: (
            f"MAD noisy in-context recall ({_mq(c)}), vocab {c.vocab_size} incl. "
            f"{c.noise_vocab_size} noise tokens, length {c.seq_len}, noise fraction "
            f"{c.frac_noise:g}, {_splits(c)}"
        ),
        sweeps={
            "vocab_size": [48, 80, 144],  # mad-lab: 32/64/128 plus the 16 noise tokens
            "seq_len": [256, 512, 1024],
            **_COMMON_SWEEPS,
            "frac_noise": [0.4, 0.6, 0.8],
        },
        paper_setting=_SETTING.format(yml="noisy-in-context-recall.yml"),
    ),
    "mad-selective-copy": MadTask(
        name="mad-selective-copy",
        config=SelectiveCopyConfig,
        generate=generate_selective_copy,
        vocab_size=lambda c: c.vocab_size,
        length=lambda c: c.seq_len,
        description=lambda c: (
            f"MAD selective copying, vocab {c.vocab_size}, length {c.seq_len}, "
            f"{c.num_tokens_to_copy} tokens to copy, {_splits(c)}"
        ),
        sweeps={
            "vocab_size": [32, 64, 128],
            "seq_len": [512, 1024],
            **_COMMON_SWEEPS,
            "num_tokens_to_copy": [32, 64, 96],
        },
        paper_setting=_SETTING.format(yml="selective-copying.yml"),
    ),
    "mad-compression": MadTask(
        name="mad-compression",
        config=CompressionConfig,
        generate=generate_compression,
        vocab_size=lambda c: c.vocab_size,
        length=lambda c: c.seq_len,
        description=lambda c: (
            f"MAD compression (auto-encoder), vocab {c.vocab_size}, length {c.seq_len}, "
            f"{_splits(c)}"
        ),
        sweeps={
            "vocab_size": [32, 64, 128],
            "seq_len": [64, 128, 256],
            **_COMMON_SWEEPS,
        },
        paper_setting=_SETTING.format(yml="compression.yml"),
        backbone="autoencoder",
    ),
    "mad-memorization": MadTask(
        name="mad-memorization",
        config=MemorizationConfig,
        generate=generate_memorization,
        vocab_size=lambda c: c.vocab_size,
        length=lambda c: c.seq_len,
        description=lambda c: (
            f"MAD memorization, vocab {c.vocab_size} ({(c.vocab_size - 1) // 2} fixed "
            f"key-value facts), length {c.seq_len}, {_splits(c)}"
        ),
        sweeps={"vocab_size": [512, 1024, 2048, 4096, 8192]},
        paper_setting=(
            _SETTING.format(yml="memorization.yml") + " (the yml sets num_train_examples: 256)"
        ),
    ),
}


def generate_splits(task_name: str, cfg: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The "train", "val" and "test" splits of ``task_name``, drawn in order from one rng.

    The generator is ``np.random.default_rng(cfg.seed)``, so the same ``cfg`` gives
    byte-identical arrays. "train" has mad-lab's training targets, "val" and "test" its
    test targets (they differ for the recall tasks; see the module docstring). For
    memorization the dictionary is drawn first and shared by all three splits.
    """
    if task_name not in MAD_TASKS:
        raise ValueError(f"unknown MAD task {task_name!r}; valid: {', '.join(MAD_TASKS)}")
    task = MAD_TASKS[task_name]
    if not isinstance(cfg, task.config):
        raise TypeError(f"{task_name} needs a {task.config.__name__}, got {type(cfg).__name__}")
    rng = np.random.default_rng(cfg.seed)
    extra: dict[str, Any] = {}
    if isinstance(cfg, MemorizationConfig):
        extra["kv_map"] = memorization_kv_map(cfg, rng)
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    return {
        split: task.generate(cfg, n, rng, training=split == "train", **extra)
        for split, n in sizes.items()
    }
