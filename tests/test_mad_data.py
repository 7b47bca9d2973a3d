"""MAD synthetic tasks (attnbench.data.mad): each task's defining rules, checked on samples.

Every rule is recomputed here by a plain Python walk over the generated tokens (the task
layouts of athms/mad-lab, mad/data/instances.py) and compared with the generator's
arrays, so a wrong layout, a wrong scored position or a broken mapping fails.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any

import numpy as np
import pytest

from attnbench.data import mad
from attnbench.data.mad import IGNORE, MAD_TASKS

SMALL = {"n_train": 48, "n_val": 24, "n_test": 40}
TASKS = list(MAD_TASKS)


def small(task: str, **overrides: Any) -> Any:
    return MAD_TASKS[task].config(**{**SMALL, **overrides})


@cache
def splits(task: str, cfg: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return mad.generate_splits(task, cfg)


# ---------------------------------------------------------------------------------------
# naive re-computations of the rules


def check_recall(inp: np.ndarray, tgt: np.ndarray, cfg: Any, training: bool) -> int:
    """Walk one (noisy) recall example pair by pair; return the number of noise pairs."""
    mq = cfg.multi_query
    vocab = cfg.vocab_size
    n_noise = getattr(cfg, "noise_vocab_size", 0)
    n_regular = vocab - (0 if mq else 1) - n_noise
    n_keys = n_regular // 2
    stream = [int(x) for x in inp] + [int(tgt[-1])]  # the shift cut the probe value
    assert len(stream) == cfg.seq_len + (0 if mq else 1)
    expected = [IGNORE] * len(stream)
    seen: dict[int, int] = {}
    body_end = len(stream) - 2 - (0 if mq else 1)
    noise_pairs = 0
    for p in range(0, body_end, 2):
        a, b = stream[p], stream[p + 1]
        if n_noise and a >= n_regular:
            assert n_regular <= a < vocab and n_regular <= b < vocab  # a noise pair
            noise_pairs += 1
            continue
        assert 0 <= a < n_keys, "key outside the key range"
        assert n_keys <= b < n_regular, "value outside the value range"
        if a in seen:
            assert seen[a] == b, "a key changed its value within a sequence"
            if mq:
                expected[p + 1] = b
        seen[a] = b
    if not mq:
        assert stream[body_end] == vocab - 1  # copy prefix before the probe
    probe_key, probe_value = stream[-2], stream[-1]
    assert probe_key in seen, "the probe key never occurred"
    assert seen[probe_key] == probe_value
    expected[-1] = probe_value
    if training:
        assert list(tgt) == stream[1:]
    else:
        assert list(tgt) == expected[1:]
    return noise_pairs


def runs(tokens: list[int], lo: int, hi: int) -> list[tuple[int, ...]]:
    """Split ``tokens`` into maximal runs of key tokens (< lo) and value tokens."""
    out: list[list[int]] = []
    for t in tokens:
        kind = t < lo
        assert 0 <= t < hi
        if out and (out[-1][0] < lo) == kind:
            out[-1].append(t)
        else:
            out.append([t])
    return [tuple(r) for r in out]


def check_fuzzy(inp: np.ndarray, tgt: np.ndarray, cfg: mad.FuzzyRecallConfig, training: bool):
    """Parse one fuzzy recall example into (key, value) tuples; return their lengths."""
    mq = cfg.multi_query
    vocab = cfg.vocab_size
    n_regular = vocab - (1 if mq else 2)
    n_keys = n_regular // 2
    pad = n_regular
    stream = [int(x) for x in inp] + [int(tgt[-1])]
    assert len(stream) == cfg.seq_len + 1
    n_pad = 0
    while stream[n_pad] == pad:
        n_pad += 1
    assert n_pad >= 1
    rest = stream[n_pad:]
    if mq:
        body, final = rest, []
    else:
        cut = rest.index(vocab - 1)  # the copy prefix, once, before the final pair
        assert (vocab - 1) not in rest[cut + 1 :]
        body, final = rest[:cut], rest[cut + 1 :]
    pieces = runs(body, n_keys, n_regular) + runs(final, n_keys, n_regular)
    assert len(pieces) % 2 == 0 and pieces[0][0] < n_keys, "not key/value alternating"
    pairs = list(zip(pieces[0::2], pieces[1::2], strict=True))

    expected = [IGNORE] * len(stream)
    seen: dict[tuple[int, ...], tuple[int, ...]] = {}
    pos = n_pad
    key_lengths, value_lengths = [], []
    for i, (key, value) in enumerate(pairs):
        if not mq and i == len(pairs) - 1:
            pos += 1  # the copy prefix
        assert len(set(key)) == len(key) and len(set(value)) == len(value)  # permutations
        if training:
            assert 1 <= len(key) <= cfg.k_motif_size
        else:
            assert len(key) == cfg.k_motif_size  # held-out keys: maximal size only
        assert 1 <= len(value) <= cfg.v_motif_size
        key_lengths.append(len(key))
        value_lengths.append(len(value))
        start = pos + len(key)
        final_pair = i == len(pairs) - 1
        if final_pair:
            assert key in seen, "the final query's key never occurred (unanswerable)"
        if key in seen:
            assert seen[key] == value, "a key changed its value within a sequence"
            if mq or final_pair:
                expected[start : start + len(value)] = list(value)
        seen[key] = value
        pos = start + len(value)
    assert pos == len(stream)
    if training:
        assert list(tgt) == stream[1:]
    else:
        assert list(tgt) == expected[1:]
    return key_lengths, value_lengths


# ---------------------------------------------------------------------------------------
# in-context recall


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_in_context_recall_rule(split: str) -> None:
    cfg = small("mad-in-context-recall")
    inputs, targets = splits("mad-in-context-recall", cfg)[split]
    for inp, tgt in zip(inputs, targets, strict=True):
        check_recall(inp, tgt, cfg, training=split == "train")
    if split != "train":
        # multi-query: several repeated keys are scored, not only the probe
        assert ((targets != IGNORE).sum(axis=1) > 1).all()


def test_in_context_recall_single_query_scores_only_the_probe() -> None:
    cfg = small("mad-in-context-recall", multi_query=False, vocab_size=20, seq_len=64)
    inputs, targets = splits("mad-in-context-recall", cfg)["test"]
    assert inputs.shape[1] == 64
    assert ((targets != IGNORE).sum(axis=1) == 1).all()
    for inp, tgt in zip(inputs, targets, strict=True):
        check_recall(inp, tgt, cfg, training=False)


def test_in_context_recall_mappings_differ_between_sequences() -> None:
    cfg = small("mad-in-context-recall")
    inputs, _ = splits("mad-in-context-recall", cfg)["test"]
    maps = {tuple(sorted(dict(zip(r[0::2], r[1::2], strict=False)).items())) for r in inputs}
    assert len(maps) == len(inputs)


def test_recall_checker_catches_a_wrong_value() -> None:
    cfg = small("mad-in-context-recall")
    inputs, targets = splits("mad-in-context-recall", cfg)["test"]
    inp, tgt = inputs[0].copy(), targets[0].copy()
    scored = np.flatnonzero(tgt != IGNORE)
    tgt[scored[0]] = cfg.vocab_size - 1 if tgt[scored[0]] != cfg.vocab_size - 1 else 8
    with pytest.raises(AssertionError):
        check_recall(inp, tgt, cfg, training=False)


# ---------------------------------------------------------------------------------------
# fuzzy recall


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_fuzzy_recall_rule(split: str) -> None:
    cfg = small("mad-fuzzy-recall")
    inputs, targets = splits("mad-fuzzy-recall", cfg)[split]
    keys, values = [], []
    for inp, tgt in zip(inputs, targets, strict=True):
        k, v = check_fuzzy(inp, tgt, cfg, training=split == "train")
        keys += k
        values += v
    assert set(values) == {1, 2, 3}  # multi-token values of every size up to v_motif_size
    if split == "train":
        assert set(keys) == {1, 2, 3}  # training keys have 1..k_motif_size tokens
    else:
        assert set(keys) == {3}


def test_fuzzy_recall_final_query_is_always_answerable() -> None:
    # mad-lab can leave the probe pair out of the body (about 2.5% of its test sequences)
    cfg = small("mad-fuzzy-recall", k_motif_size=2, v_motif_size=3, seq_len=48)
    inputs, targets = mad.generate_fuzzy_recall(cfg, 300, np.random.default_rng(7))
    for inp, tgt in zip(inputs, targets, strict=True):
        check_fuzzy(inp, tgt, cfg, training=False)


def test_fuzzy_recall_single_query() -> None:
    cfg = small("mad-fuzzy-recall", multi_query=False, vocab_size=20)
    inputs, targets = splits("mad-fuzzy-recall", cfg)["test"]
    for inp, tgt in zip(inputs, targets, strict=True):
        _, values = check_fuzzy(inp, tgt, cfg, training=False)
        assert (tgt != IGNORE).sum() == values[-1]  # only the probe value is scored


# ---------------------------------------------------------------------------------------
# noisy recall


@pytest.mark.parametrize("frac_noise", [0.2, 0.8])
def test_noisy_recall_rule(frac_noise: float) -> None:
    cfg = small("mad-noisy-recall", frac_noise=frac_noise)
    n_regular = cfg.vocab_size - cfg.noise_vocab_size
    noise_pairs = slots = 0
    for split in ("train", "val", "test"):
        inputs, targets = splits("mad-noisy-recall", cfg)[split]
        for inp, tgt in zip(inputs, targets, strict=True):
            noise_pairs += check_recall(inp, tgt, cfg, training=split == "train")
            slots += cfg.seq_len // 2 - 1
            if split != "train":
                # noise is never scored: no noise target, IGNORE wherever the input is noise
                assert not ((tgt >= n_regular) & (tgt != IGNORE)).any()
                assert (tgt[inp >= n_regular] == IGNORE).all()
    # each body slot is noise with probability frac_noise (one slot is kept as a pair)
    assert abs(noise_pairs / slots - frac_noise) < 0.04


def test_noisy_recall_noise_range_is_the_top_of_the_vocabulary() -> None:
    cfg = small("mad-noisy-recall", vocab_size=48, noise_vocab_size=16)
    inputs, _ = splits("mad-noisy-recall", cfg)["test"]
    noise = inputs[inputs >= 32]
    assert noise.size and noise.min() >= 32 and noise.max() <= 47
    assert len(np.unique(noise)) > 8


# ---------------------------------------------------------------------------------------
# selective copying


def check_selective_copy(inp: np.ndarray, tgt: np.ndarray, cfg: mad.SelectiveCopyConfig):
    m, vocab = cfg.num_tokens_to_copy, cfg.vocab_size
    blank, copy_token = vocab - 2, vocab - 1
    assert len(inp) == len(tgt) == cfg.seq_len
    copies = [i for i, t in enumerate(inp) if t == copy_token]
    assert copies == [cfg.seq_len - m - 1]
    c = copies[0]
    content = [int(t) for t in inp[:c] if t != blank]
    assert len(content) == m and all(0 <= t < vocab - 2 for t in content)
    assert sum(1 for t in inp[:c] if t == blank) == cfg.seq_len - 2 * m - 1
    assert all(t == blank for t in inp[c + 1 :])
    assert [int(t) for t in tgt if t != IGNORE] == content  # the tokens, in their order
    assert all(t == IGNORE for t in tgt[: c + 1]) and all(t != IGNORE for t in tgt[c + 1 :])
    assert inp[c - 1] != blank  # mad-lab: no blanks between the last token and the copy token


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_selective_copy_rule(split: str) -> None:
    cfg = small("mad-selective-copy")
    inputs, targets = splits("mad-selective-copy", cfg)[split]
    for inp, tgt in zip(inputs, targets, strict=True):
        check_selective_copy(inp, tgt, cfg)
    # the tokens to copy really are scattered: their first position varies
    first = (inputs != cfg.vocab_size - 2).argmax(axis=1)
    assert len(set(first.tolist())) > 3


@pytest.mark.parametrize(
    ("seq_len", "num_tokens_to_copy"), [(256, 16), (300, 16), (256, 32), (512, 96)]
)
def test_selective_copy_honours_length_and_count(seq_len: int, num_tokens_to_copy: int) -> None:
    # mad-lab bug 1: num_tokens_to_copy never reached the generator (always 16)
    cfg = small("mad-selective-copy", seq_len=seq_len, num_tokens_to_copy=num_tokens_to_copy)
    inputs, targets = mad.generate_selective_copy(cfg, 6, np.random.default_rng(0))
    assert inputs.shape == targets.shape == (6, seq_len)
    assert ((targets != IGNORE).sum(axis=1) == num_tokens_to_copy).all()
    for inp, tgt in zip(inputs, targets, strict=True):
        check_selective_copy(inp, tgt, cfg)


def test_selective_copy_positions_come_from_the_seed_only() -> None:
    # mad-lab bug 2: blank positions came from np.random's global state
    cfg = small("mad-selective-copy")
    np.random.seed(1)
    a = mad.generate_splits("mad-selective-copy", cfg)
    np.random.seed(2)
    b = mad.generate_splits("mad-selective-copy", cfg)
    for split in a:
        assert np.array_equal(a[split][0], b[split][0])
        assert np.array_equal(a[split][1], b[split][1])
    c = mad.generate_splits("mad-selective-copy", dataclasses.replace(cfg, seed=1))
    blank = cfg.vocab_size - 2
    assert not np.array_equal(a["train"][0] == blank, c["train"][0] == blank)


# ---------------------------------------------------------------------------------------
# compression


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_compression_rule(split: str) -> None:
    cfg = small("mad-compression")
    inputs, targets = splits("mad-compression", cfg)[split]
    token = cfg.vocab_size - 1
    for inp, tgt in zip(inputs, targets, strict=True):
        # one compression token, at the end; the rest is what must be reconstructed
        assert [i for i, t in enumerate(inp) if t == token] == [cfg.seq_len - 1]
        assert all(0 <= t < token for t in inp[:-1])
        # every position's target is that position's input: the whole sequence, decoded
        # from the compression token's encoding (auto-encoder backbone)
        assert [int(t) for t in tgt] == [int(t) for t in inp]
    assert MAD_TASKS["mad-compression"].backbone == "autoencoder"
    assert len(np.unique(inputs[:, :-1])) == cfg.vocab_size - 1


# ---------------------------------------------------------------------------------------
# memorization


def test_memorization_dictionary_is_fixed_across_splits_and_examples() -> None:
    cfg = small("mad-memorization", n_train=256)
    insert = cfg.vocab_size - 1
    n_keys = (cfg.vocab_size - 1) // 2
    facts: dict[int, int] = {}
    for inputs, targets in splits("mad-memorization", cfg).values():
        for inp, tgt in zip(inputs, targets, strict=True):
            for p in range(0, cfg.seq_len, 2):
                key, value = int(inp[p]), int(tgt[p + 1])
                assert inp[p + 1] == insert and tgt[p] == IGNORE
                assert 0 <= key < n_keys and n_keys <= value < insert
                assert facts.setdefault(key, value) == value, "a key changed its value"
    assert len(facts) == n_keys  # 256 x 16 draws cover all 127 keys
    assert len(set(facts.values())) == n_keys  # injective, as mad-lab's zip of shuffles
    kv_map = mad.memorization_kv_map(cfg)
    assert all(kv_map[k] == v for k, v in facts.items())
    # any generator and any call reuse the seed's dictionary
    inputs, targets = mad.generate_memorization(cfg, 20, np.random.default_rng(123))
    assert all(
        facts[int(k)] == int(v)
        for k, v in zip(inputs[:, 0::2].ravel(), targets[:, 1::2].ravel(), strict=True)
    )


def test_memorization_dictionary_depends_on_the_seed() -> None:
    a = mad.memorization_kv_map(small("mad-memorization"))
    b = mad.memorization_kv_map(small("mad-memorization", seed=1))
    assert a.shape == b.shape == (127,)
    assert not np.array_equal(a, b)


# ---------------------------------------------------------------------------------------
# every task


@pytest.mark.parametrize("task", TASKS)
def test_shapes_ids_and_counts(task: str) -> None:
    entry = MAD_TASKS[task]
    cfg = small(task)
    data = splits(task, cfg)
    assert list(data) == ["train", "val", "test"]
    vocab, length = entry.vocab_size(cfg), entry.length(cfg)
    for split, (inputs, targets) in data.items():
        n = getattr(cfg, f"n_{split}")
        assert inputs.shape == targets.shape == (n, length)
        assert inputs.dtype == targets.dtype == np.int64
        assert inputs.min() >= 0 and inputs.max() < vocab
        scored = targets[targets != IGNORE]
        assert scored.size and scored.min() >= 0 and scored.max() < vocab
    expected_length = cfg.seq_len - 1 if getattr(cfg, "multi_query", False) else cfg.seq_len
    if task == "mad-fuzzy-recall":
        expected_length = cfg.seq_len  # left-padded to seq_len + 1, then shifted
    assert length == expected_length
    empty = entry.generate(cfg, 0, np.random.default_rng(0))
    assert empty[0].shape == empty[1].shape == (0, length)


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_bytes_other_seed_other_data(task: str) -> None:
    cfg = small(task)
    a = mad.generate_splits(task, cfg)
    b = mad.generate_splits(task, cfg)
    for split in a:
        assert a[split][0].tobytes() == b[split][0].tobytes()
        assert a[split][1].tobytes() == b[split][1].tobytes()
    c = mad.generate_splits(task, dataclasses.replace(cfg, seed=1))
    for split in a:
        assert not np.array_equal(a[split][0], c[split][0])
    # the splits are distinct draws, not copies of each other
    assert not np.array_equal(a["val"][0], a["test"][0][: cfg.n_val])


@pytest.mark.parametrize("task", TASKS)
def test_no_global_numpy_random_state(task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the global numpy random state was used")

    for name in ("randint", "random", "rand", "randn", "choice", "shuffle", "permutation"):
        monkeypatch.setattr(np.random, name, forbidden)
    cfg = small(task)
    np.random.seed(5)
    data = mad.generate_splits(task, cfg)
    assert data["test"][0].shape[0] == cfg.n_test


BAD_CONFIGS: dict[str, list[tuple[str, Any]]] = {
    "mad-in-context-recall": [
        ("vocab_size", 1),
        ("seq_len", 127),
        ("seq_len", 2),
        ("multi_query", 1),
        ("seed", -1),
        ("n_train", 0),
        ("n_val", 0),
        ("n_test", 2.5),
    ],
    "mad-fuzzy-recall": [
        ("vocab_size", 6),  # 3-token keys need 3 key ids: N // 2 >= 3, N = V - 1
        ("seq_len", 12),
        ("k_motif_size", 0),
        ("v_motif_size", 0),
        ("multi_query", "yes"),
        ("n_train", -5),
    ],
    "mad-noisy-recall": [
        ("vocab_size", 17),
        ("noise_vocab_size", 0),
        ("frac_noise", 1.0),
        ("frac_noise", -0.1),
        ("frac_noise", float("nan")),
        ("seq_len", 129),
        ("n_test", 0),
    ],
    "mad-selective-copy": [
        ("vocab_size", 2),
        ("seq_len", 33),
        ("num_tokens_to_copy", 0),
        ("seed", True),
    ],
    "mad-compression": [("vocab_size", 1), ("seq_len", 1), ("n_val", 0)],
    "mad-memorization": [("vocab_size", 2), ("seq_len", 31), ("seq_len", 0), ("seed", -3)],
}


@pytest.mark.parametrize(
    ("task", "field", "value"),
    [(t, f, v) for t, cases in BAD_CONFIGS.items() for f, v in cases],
)
def test_bad_config_names_the_field(task: str, field: str, value: Any) -> None:
    with pytest.raises(ValueError) as info:
        MAD_TASKS[task].config(**{field: value})
    message = str(info.value)
    assert message.startswith(f"tasks.{task}.data.{field}=")
    assert "\n" not in message and " must be " in message


def test_bad_config_messages_state_the_valid_range() -> None:
    with pytest.raises(ValueError, match=r"seq_len=33 must be > 2 \* num_tokens_to_copy \+ 1 = 33"):
        mad.SelectiveCopyConfig(seq_len=33)
    with pytest.raises(ValueError, match=r"frac_noise=1.0 must be a number in \[0, 1\)"):
        mad.NoisyRecallConfig(frac_noise=1.0)
    with pytest.raises(ValueError, match=r"vocab_size=17 must be >= 18"):
        mad.NoisyRecallConfig(vocab_size=17)
    with pytest.raises(ValueError, match=r"seq_len=127 must be an even integer >= 4"):
        mad.InContextRecallConfig(seq_len=127)


def test_configs_carry_their_task_name() -> None:
    for name, entry in MAD_TASKS.items():
        assert entry.name == name
        assert name == entry.config.TASK


BASELINES = {
    "mad-in-context-recall": {"vocab_size": 16, "seq_len": 128, "multi_query": True},
    "mad-fuzzy-recall": {
        "vocab_size": 16,
        "seq_len": 128,
        "k_motif_size": 3,
        "v_motif_size": 3,
        "multi_query": True,
    },
    "mad-noisy-recall": {
        "vocab_size": 32,
        "seq_len": 128,
        "noise_vocab_size": 16,
        "frac_noise": 0.2,
        "multi_query": True,
    },
    "mad-selective-copy": {"vocab_size": 16, "seq_len": 256, "num_tokens_to_copy": 16},
    "mad-compression": {"vocab_size": 16, "seq_len": 32},
    "mad-memorization": {"vocab_size": 256, "seq_len": 32, "n_train": 256},
}
SWEEPS = {
    "mad-in-context-recall": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024]},
    "mad-fuzzy-recall": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024]},
    "mad-noisy-recall": {
        "vocab_size": [48, 80, 144],
        "seq_len": [256, 512, 1024],
        "frac_noise": [0.4, 0.6, 0.8],
    },
    "mad-selective-copy": {
        "vocab_size": [32, 64, 128],
        "seq_len": [512, 1024],
        "num_tokens_to_copy": [32, 64, 96],
    },
    "mad-compression": {"vocab_size": [32, 64, 128], "seq_len": [64, 128, 256]},
    "mad-memorization": {"vocab_size": [512, 1024, 2048, 4096, 8192]},
}


@pytest.mark.parametrize("task", TASKS)
def test_baseline_defaults_and_sweeps_are_mads(task: str) -> None:
    entry = MAD_TASKS[task]
    cfg = entry.config()
    for knob, value in BASELINES[task].items():
        assert getattr(cfg, knob) == value, knob
    assert cfg.n_train == BASELINES[task].get("n_train", 12_800)
    assert cfg.n_val == cfg.n_test == 1_280
    assert cfg.seed == 0
    expected = dict(SWEEPS[task])
    if task != "mad-memorization":
        expected["n_train"] = [6400, 3200, 1600, 800]
    assert entry.sweeps == expected
    assert "configs/tasks/" in entry.paper_setting
    line = entry.description(cfg)
    assert "\n" not in line and str(cfg.vocab_size) in line and str(cfg.seq_len) in line


@pytest.mark.parametrize("task", TASKS)
def test_every_sweep_point_is_valid_and_generates(task: str) -> None:
    entry = MAD_TASKS[task]
    base = small(task)
    for knob, values in entry.sweeps.items():
        for value in values:
            cfg = dataclasses.replace(base, **{knob: value})
            inputs, targets = entry.generate(cfg, 2, np.random.default_rng(0))
            assert inputs.shape == targets.shape == (2, entry.length(cfg))
            assert inputs.max() < entry.vocab_size(cfg)


def test_generate_splits_rejects_unknown_task_and_wrong_config() -> None:
    with pytest.raises(ValueError, match="unknown MAD task"):
        mad.generate_splits("mad-nope", mad.CompressionConfig())
    with pytest.raises(TypeError):
        mad.generate_splits("mad-compression", mad.MemorizationConfig())
