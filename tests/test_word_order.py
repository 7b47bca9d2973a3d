"""``bible-bshift`` / ``bible-shuffle`` (attnbench.tasks.word_order): word order on KJV verses.

The generator's rules are checked against the verses' own text, recomputed here
without the module's helpers: an inverted verse differs from its original in exactly
one adjacent pair of words (a shuffled one in the order of its alphabetic non-initial
words only), an unchanged one not at all, and the bag of words (and of BPE tokens) is
the same in both classes, so a bag-of-tokens model scores chance.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attnbench.config import validate_profile
from attnbench.data.bundled import read_table
from attnbench.runner import prepare_data, run_job
from attnbench.tasks.base import get_task, make_data_config
from attnbench.tasks.word_order import (
    BibleBShiftData,
    BibleShuffleData,
    bshift_rows,
    movable_positions,
    perturb,
    swappable_positions,
)
from attnbench.text import SubwordTokenizer

KNOBS: dict[str, Any] = {"val_fraction": 0.1, "test_fraction": 0.1, "min_words": 6, "max_words": 24}


@functools.cache
def bible() -> dict[str, list[Any]]:
    """The bundled Bible's columns (read once)."""
    return read_table("bible", None, ("ref", "book", "chapter", "verse", "kjv"))


@functools.cache
def rows(
    seed: int = 0, perturbation: str = "bigram_shift", n_swaps: int = 3, **caps: int
) -> dict[str, list[dict[str, Any]]]:
    return bshift_rows(
        bible(), seed=seed, **KNOBS, caps=dict(caps), perturbation=perturbation, n_swaps=n_swaps
    )


@functools.cache
def originals() -> dict[str, str]:
    return {ref: " ".join(t.split()) for ref, t in zip(bible()["ref"], bible()["kjv"], strict=True)}


def test_swappable_positions_follow_the_rules() -> None:
    verse = "In the beginning God created the the heaven, and Earth earth"
    words = verse.split()
    # not 0 (first word), not 5 (identical pair), not 6/7 (comma), not 9 (case-insensitive)
    assert swappable_positions(words) == [1, 2, 3, 4, 8]
    assert swappable_positions(["Amen."]) == []


def test_rows_invert_exactly_one_adjacent_pair_or_nothing() -> None:
    data = rows()
    source = originals()
    verse_texts = set(source.values())
    kept = [r for split in data.values() for r in split]
    assert len(kept) > 10_000
    starts: Counter[int] = Counter()
    for r in kept:
        original, words = source[r["ref"]].split(), r["sentence"].split()
        assert 6 <= len(original) <= 24
        assert sorted(words) == sorted(original)  # the same multiset of words
        differ = [i for i, (a, b) in enumerate(zip(words, original, strict=True)) if a != b]
        if r["label"] == 0:
            assert differ == [] and r["swap"] == -1
            continue
        assert len(differ) == 2 and differ[1] == differ[0] + 1 == r["swap"] + 1
        i = differ[0]
        assert (words[i], words[i + 1]) == (original[i + 1], original[i])
        assert i >= 1 and original[i].isalpha() and original[i + 1].isalpha()
        assert original[i].lower() != original[i + 1].lower()
        assert r["sentence"] not in verse_texts  # no inversion is another verse
        starts[i] += 1
    assert len(starts) >= 15  # inversions all over the verse, not at one place


def test_classes_balanced_and_splits_disjoint() -> None:
    data = rows()
    for split in data.values():
        labels = Counter(r["label"] for r in split)
        assert 0 <= labels[1] - labels[0] <= 1
        assert [r["idx"] for r in split] == list(range(len(split)))
    refs = {s: {r["ref"] for r in data[s]} for s in data}
    texts = {s: {originals()[r["ref"]] for r in data[s]} for s in data}
    chapters = {s: {ref.rsplit(".", 1)[0] for ref in refs[s]} for s in data}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not refs[a] & refs[b]
        assert not texts[a] & texts[b]  # a repeated verse is kept once
        assert not chapters[a] & chapters[b]
    n = sum(len(v) for v in data.values())
    assert 0.05 < len(data["test"]) / n < 0.15


def test_same_seed_same_data_and_caps() -> None:
    fresh = bshift_rows(bible(), seed=0, **KNOBS, caps={})
    assert fresh == rows()
    other = rows(1)
    assert [r["sentence"] for r in other["train"]] != [r["sentence"] for r in fresh["train"]]
    capped = rows(0, train=101, validation=10, test=20)
    assert [len(capped[s]) for s in ("train", "validation", "test")] == [101, 10, 20]
    assert Counter(r["label"] for r in capped["train"]) == {1: 51, 0: 50}


def test_inversions_keep_the_bag_of_bpe_tokens() -> None:
    data = rows(0, train=2000)
    source = originals()
    tok = SubwordTokenizer.train((r["sentence"] for r in data["train"]), 600)
    inverted = [r for r in data["train"] if r["label"] == 1]
    ids = tok.encode_batch([r["sentence"] for r in inverted])
    ids0 = tok.encode_batch([source[r["ref"]] for r in inverted])
    assert all(Counter(a) == Counter(b) for a, b in zip(ids, ids0, strict=True))
    assert sum(a != b for a, b in zip(ids, ids0, strict=True)) == len(inverted)


def test_data_config_checks() -> None:
    with pytest.raises(ValueError, match="max_words"):
        BibleBShiftData(min_words=8, max_words=6)
    with pytest.raises(ValueError, match="test_fraction"):
        BibleBShiftData(val_fraction=0.5, test_fraction=0.5)
    cls = get_task("bible-bshift")
    task = cls(make_data_config(cls, {"max_words": 18}))
    info = task.dataset_info()
    assert info.stand_in and "BShift" in info.description and "6–18" in info.description
    assert task.family == "glue" and task.metric == "accuracy"


def test_end_to_end_record_and_chance_baselines(tmp_path: Path) -> None:
    """Prepare + run_job: an ok record; the bag-of-tokens baseline is at chance."""
    data = {"n_train": 3000, "n_val": 200, "n_test": 1200, "vocab_size": 500, "max_length": 48}
    profile = validate_profile(
        {
            "profile": "tiny",
            "output_dir": str(tmp_path / "out"),
            "model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32},
            "train": {"steps": 4, "batch_size": 8, "eval_every": 2, "warmup_steps": 1},
            "tasks": {"bible-bshift": {"data": data}},
            "analysis": {},
        }
    )
    prepare_data(profile, "bible-bshift", tmp_path / "data")
    record_file = tmp_path / "out" / "seed0.json"
    record = run_job(
        profile,
        "bible-bshift",
        "vanilla",
        0,
        data_dir=tmp_path / "data",
        record_file=record_file,
        progress=False,
    )
    assert record["status"] == "ok"
    assert json.loads(record_file.read_text())["metrics"] == record["metrics"]
    assert record["metric"]["name"] == "accuracy"
    assert math.isfinite(record["metrics"]["test"]["accuracy"])
    assert record["dataset"]["stand_in"]
    baselines = record["metrics"]["baselines"]
    assert baselines["majority_class"] == pytest.approx(0.5)
    # 1200 balanced test examples: chance ± 0.045 is over 3 standard errors (0.0144)
    assert abs(baselines["bag_of_tokens"] - 0.5) < 0.045


def test_pairs_and_punctuated_knobs() -> None:
    verse = "And God said, Let there be light: and"
    # only "Let there" and "there be" are unpunctuated; punctuated: every non-initial pair
    assert swappable_positions(verse.split()) == [3, 4]
    assert swappable_positions(verse.split(), punctuated=True) == [1, 2, 3, 4, 5, 6]
    paired = bshift_rows(bible(), seed=0, **KNOBS, caps={"test": 40}, pairs=True)["test"]
    assert [r["label"] for r in paired] == [1, 0] * 20
    assert all(a["ref"] == b["ref"] for a, b in zip(paired[::2], paired[1::2], strict=True))


# ---------------------------------------------------------------------------------------
# perturbation: shuffle / swaps (bible-shuffle)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("perturbation", "n_swaps"), [("shuffle", 3), ("swaps", 3), ("swaps", 1)])
def test_perturbed_rows_change_only_the_order_of_movable_words(
    perturbation: str, n_swaps: int
) -> None:
    """Label 1 ⇔ the order differs; same words; first and punctuated words stay put."""
    data = rows(0, perturbation, n_swaps)
    source = originals()
    verse_texts = set(source.values())
    kept = [r for split in data.values() for r in split]
    assert len(kept) == sum(len(v) for v in rows().values())  # the same verses as BShift
    moved: list[int] = []
    for r in kept:
        original, words = source[r["ref"]].split(), r["sentence"].split()
        assert sorted(words) == sorted(original)  # the same multiset of words
        differ = [i for i, (a, b) in enumerate(zip(words, original, strict=True)) if a != b]
        assert r["moved"] == len(differ)
        assert bool(r["label"]) == ([w.lower() for w in words] != [w.lower() for w in original])
        if r["label"] == 0:
            assert differ == [] and r["swap"] == -1
            continue
        assert r["sentence"] not in verse_texts
        # only alphabetic words after the first move, and only among such slots
        assert all(i >= 1 and original[i].isalpha() and words[i].isalpha() for i in differ)
        moved.append(len(differ))
        if perturbation == "swaps":  # k adjacent inversions displace at most 2k words
            assert len(differ) <= 2 * n_swaps
    mean = sum(moved) / len(moved)
    if perturbation == "shuffle":  # a permutation of the 5–15 movable words, not one pair
        assert mean > 6
    elif n_swaps == 1:  # one inversion: exactly BShift's change
        assert set(moved) == {2}
    else:
        assert 2 < mean < 2 * n_swaps


def test_shuffle_permutations_vary_and_keep_the_bag_of_bpe_tokens() -> None:
    data = rows(0, "shuffle", train=2000)
    source = originals()
    shuffled = [r for r in data["train"] if r["label"] == 1]
    # a verse's shuffles differ across seeds: permutations are drawn, not fixed
    other = {r["ref"]: r["sentence"] for r in rows(5, "shuffle")["train"] if r["label"] == 1}
    common = [r for r in shuffled if r["ref"] in other]
    assert len(common) > 100
    assert sum(other[r["ref"]] != r["sentence"] for r in common) > 0.9 * len(common)
    tok = SubwordTokenizer.train((r["sentence"] for r in data["train"]), 600)
    ids = tok.encode_batch([r["sentence"] for r in shuffled])
    ids0 = tok.encode_batch([source[r["ref"]] for r in shuffled])
    assert all(Counter(a) == Counter(b) for a, b in zip(ids, ids0, strict=True))
    assert sum(a != b for a, b in zip(ids, ids0, strict=True)) == len(shuffled)


def test_shuffle_is_deterministic_balanced_and_default_is_bigram_shift() -> None:
    fresh = bshift_rows(bible(), seed=0, **KNOBS, caps={}, perturbation="shuffle")
    assert fresh == rows(0, "shuffle")
    assert bshift_rows(bible(), seed=0, **KNOBS, caps={}) == rows(0, "bigram_shift")
    capped = rows(0, "shuffle", train=101, validation=10, test=20)
    assert [len(capped[s]) for s in ("train", "validation", "test")] == [101, 10, 20]
    assert Counter(r["label"] for r in capped["train"]) == {1: 51, 0: 50}
    for split in rows(0, "shuffle").values():
        labels = Counter(r["label"] for r in split)
        assert 0 <= labels[1] - labels[0] <= 1
    # the same verses are chosen and labelled whatever the perturbation
    shuffled, shifted = rows(0, "shuffle")["test"], rows(0, "bigram_shift")["test"]
    assert [(r["ref"], r["label"]) for r in shuffled] == [(r["ref"], r["label"]) for r in shifted]


def test_perturb_draws_only_valid_orders_and_falls_back() -> None:
    rng = np.random.default_rng(0)
    # two movable words: the only other order is their inversion
    for _ in range(20):
        assert perturb(["And", "b", "c"], [1], rng, perturbation="shuffle") == (
            ["And", "c", "b"],
            -1,
        )
    # "b"/"B" differ only in case: a valid shuffle moves "c"
    words = ["And", "b", "B", "c"]
    assert movable_positions(words) == [1, 2, 3]
    seen = set()
    for _ in range(100):
        out, _ = perturb(words, [2], rng, perturbation="shuffle")
        assert out[0] == "And" and out.index("c") != 3
        seen.add(" ".join(out))
    assert len(seen) == 4  # c first or second, b/B in either order
    # two swaps of a lone pair restore the verse: fall back to one admissible inversion
    out, swap = perturb(["And", "b", "c"], [1], rng, perturbation="swaps", n_swaps=2)
    assert (out, swap) == (["And", "c", "b"], 1)
    # every other order is a verse text: the redraws end (the fallback is the caller's)
    words = ["And", "b", "c", "d"]
    texts = {" ".join(["And", *p]) for p in itertools.permutations("bcd")} - {"And b c d"}
    out, swap = perturb(words, [2], rng, perturbation="shuffle", texts=texts)
    assert (out, swap) == (["And", "b", "d", "c"], 2)
    with pytest.raises(ValueError, match="perturbation"):
        perturb(words, [1], rng, perturbation="reverse")
    with pytest.raises(ValueError, match="admissible"):
        perturb(words, [], rng, perturbation="shuffle")


def test_bible_shuffle_task_and_perturbation_knob() -> None:
    with pytest.raises(ValueError, match="perturbation"):
        BibleBShiftData(perturbation="reverse")
    with pytest.raises(ValueError, match="n_swaps"):
        BibleShuffleData(perturbation="swaps", n_swaps=0)
    with pytest.raises(ValueError, match=r"tasks\.bible-shuffle\.data\.max_words"):
        BibleShuffleData(min_words=8, max_words=6)
    assert BibleBShiftData().perturbation == "bigram_shift"
    cls = get_task("bible-shuffle")
    task = cls(make_data_config(cls, {"max_words": 16}))
    assert task.cfg.perturbation == "shuffle" and isinstance(task.cfg, BibleShuffleData)
    info = task.dataset_info()
    assert info.name == "bible-shuffle" and info.stand_in
    assert "BShift" in info.description and "easier" in info.description
    assert task.family == "glue" and task.metric == "accuracy"
    swaps = cls(make_data_config(cls, {"perturbation": "swaps", "n_swaps": 4})).dataset_info()
    assert "4 successive" in swaps.description
    with pytest.raises(ValueError, match="perturbation"):
        make_data_config(cls, {"perturbation": 3})
