"""Tests for length-bucketed batching (attnbench.batching) and the tasks that use it.

The properties: the order is a pure function of (seed, epoch); every example appears
exactly once per epoch; bucketing pads less than random batching; ``window=1`` is plain
random batching (the consecutive slices of the epoch's permutation); evaluation in
length order gives the same metrics and predictions as scoring each example alone.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from attnbench.attention import get_variant
from attnbench.batching import BUCKET_WINDOW, batch_groups, epoch_generator, padding_fraction
from attnbench.model import ModelConfig
from attnbench.tasks.base import (
    SequenceClassificationTask,
    TaskSetup,
    get_task,
    make_data_config,
)
from attnbench.train import TrainStream


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: tiny models run ~20x faster on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lengths(n: int = 700, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(20, 100) for _ in range(n)]


def _flat(groups: Sequence[Sequence[int]]) -> list[int]:
    return [i for g in groups for i in g]


# ------------------------------------------------------------------------- batch_groups
@pytest.mark.parametrize("by_length", [False, True])
def test_same_seed_and_epoch_give_the_same_batches(by_length: bool) -> None:
    lengths = _lengths()
    a = batch_groups(lengths, 16, shuffle=True, epoch=3, seed=7, by_length=by_length)
    assert a == batch_groups(lengths, 16, shuffle=True, epoch=3, seed=7, by_length=by_length)
    assert a != batch_groups(lengths, 16, shuffle=True, epoch=4, seed=7)
    assert a != batch_groups(lengths, 16, shuffle=True, epoch=3, seed=8)


@pytest.mark.parametrize(
    ("n", "batch_size", "window"), [(700, 16, BUCKET_WINDOW), (700, 16, 3), (37, 8, 2), (5, 8, 50)]
)
def test_every_example_appears_once_per_epoch(n: int, batch_size: int, window: int) -> None:
    lengths = _lengths(n)
    for kwargs in ({"shuffle": True, "epoch": 1, "seed": 2}, {}, {"by_length": True}):
        groups = batch_groups(lengths, batch_size, window=window, **kwargs)
        assert sorted(_flat(groups)) == list(range(n))
        assert all(1 <= len(g) <= batch_size for g in groups)
        # only the last window can leave a batch short, so at most one is
        assert sum(len(g) < batch_size for g in groups) <= 1
        assert len(groups) == -(-n // batch_size)


def test_window_one_is_plain_random_batching() -> None:
    lengths = _lengths()
    groups = batch_groups(lengths, 16, shuffle=True, epoch=2, seed=5, window=1)
    perm = torch.randperm(len(lengths), generator=epoch_generator(5, 2)).tolist()
    expected = {frozenset(perm[s : s + 16]) for s in range(0, len(perm), 16)}
    assert {frozenset(g) for g in groups} == expected


def test_buckets_hold_similar_lengths_and_pad_less_than_random_batches() -> None:
    lengths = _lengths(1600)
    bucketed = batch_groups(lengths, 16, shuffle=True, epoch=0, seed=0)
    random_ = batch_groups(lengths, 16, shuffle=True, epoch=0, seed=0, window=1)
    assert padding_fraction(lengths, bucketed) < padding_fraction(lengths, random_) / 4
    # one window holding the whole split: the batches tile the sorted lengths
    whole = batch_groups(lengths, 16, shuffle=True, epoch=0, seed=0, window=100)
    spans = sorted((min(lengths[i] for i in g), max(lengths[i] for i in g)) for g in whole)
    assert all(hi <= lo for (_, hi), (lo, _) in itertools.pairwise(spans))
    # ... and the batch order is still shuffled, not sorted
    firsts = [min(lengths[i] for i in g) for g in whole]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)


def test_evaluation_order_is_split_order_or_longest_first() -> None:
    lengths = [3, 9, 9, 1, 5]
    assert batch_groups(lengths, 2) == [[0, 1], [2, 3], [4]]
    assert batch_groups(lengths, 2, by_length=True) == [[1, 2], [4, 0], [3]]


def test_padding_fraction_counts_positions_beyond_each_row() -> None:
    assert padding_fraction([2, 4, 4], [[0, 1], [2]]) == pytest.approx(2 / 12)
    assert padding_fraction([], []) == 0.0
    with pytest.raises(ValueError, match="batch_size"):
        batch_groups([1], 0)


# ------------------------------------------------------------------------------- tasks
class _Toy(SequenceClassificationTask):
    """A variable-length classification task on hand-made data (label: first token odd)."""

    name = "toy"
    n_classes = 2

    def __init__(self, n: int = 300, seed: int = 0, setup: TaskSetup | None = None) -> None:
        super().__init__(None, setup)
        rng = random.Random(seed)
        for split, size in (("train", n), ("val", 40), ("test", 57)):
            rows = []
            for _ in range(size):
                ids = [rng.randint(2, 9) for _ in range(rng.randint(3, 30))]
                rows.append((ids, ids[0] % 2))
            self.splits[split] = rows

    def vocab_size(self) -> int:
        return 10

    def max_len(self) -> int:
        return 31


def test_task_batches_pad_to_their_longest_row_and_keep_pad_to() -> None:
    task = _Toy()
    examples = task.splits["train"]
    real = padded = 0
    seen: list[int] = []
    for batch in task.batches("train", 16, shuffle=True, epoch=1, seed=3):
        idx = batch.index.tolist()
        seen += idx
        ids, padding = batch.inputs["ids"], batch.inputs["key_padding"]
        assert ids.shape[1] == 1 + max(len(examples[i][0]) for i in idx)
        for j, i in enumerate(idx):
            assert ids[j][padding[j]].tolist() == [1, *examples[i][0]]
        assert batch.targets.tolist() == [examples[i][1] for i in idx]
        real, padded = real + batch.n_tokens, padded + ids.numel()
    assert sorted(seen) == list(range(len(examples)))
    random_batches = batch_groups([len(e[0]) + 1 for e in examples], 16, shuffle=True, window=1)
    assert 1 - real / padded < padding_fraction([len(e[0]) + 1 for e in examples], random_batches)
    # a fixed-length variant: the same examples per batch, every batch max_len wide
    task = _Toy(setup=TaskSetup(pad_to=task.max_len()))
    fixed = list(task.batches("train", 16, shuffle=True, epoch=1, seed=3))
    assert [b.index.tolist() for b in fixed] == [
        b.index.tolist() for b in _Toy().batches("train", 16, shuffle=True, epoch=1, seed=3)
    ]
    assert {b.inputs["ids"].shape[1] for b in fixed} == {31}


def test_resumed_stream_continues_with_the_same_batches() -> None:
    task = _Toy(n=100)
    whole = TrainStream(task, 16, seed=4)
    expected = [next(whole).index.tolist() for _ in range(17)]  # crosses into epoch 2
    resumed = TrainStream(task, 16, seed=4, epoch=1, index=3)
    assert [next(resumed).index.tolist() for _ in range(7)] == expected[10:]


def _per_example_reference(model: torch.nn.Module, examples: list) -> tuple[list[int], float]:
    """Predictions and mean loss with every example scored alone (no padding at all)."""
    preds, losses = [], []
    with torch.no_grad():
        rows = [
            (model(ids=torch.tensor([[1, *ids]])).logits.float(), label) for ids, label in examples
        ]
    for logits, label in rows:
        losses.append(float(torch.nn.functional.cross_entropy(logits, torch.tensor([label]))))
        preds.append(int(logits.argmax(-1)))
    return preds, sum(losses) / len(losses)


@pytest.mark.parametrize("variant", ["vanilla", "fused", "entmax15"])
def test_evaluation_in_length_order_keeps_metrics_and_prediction_order(variant: str) -> None:
    task = _Toy()
    torch.manual_seed(0)
    spec = get_variant(variant)
    cfg = ModelConfig(d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.1, max_len=31)
    model = task.build_model(cfg, spec, spec.resolved_options()).eval()
    evaluation = task.evaluate(model, "test", 8, torch.device("cpu"))
    metrics, predictions = evaluation.metrics, evaluation.predictions
    examples = task.splits["test"]
    preds, loss = _per_example_reference(model, examples)
    assert [p["index"] for p in predictions] == list(range(len(examples)))
    assert [p["prediction"] for p in predictions] == preds
    assert [p["target"] for p in predictions] == [label for _, label in examples]
    assert metrics["accuracy"] == pytest.approx(
        np.mean([p == y for p, (_, y) in zip(preds, examples, strict=True)])
    )
    assert metrics["loss"] == pytest.approx(loss, rel=1e-5)


def _retrieval(pairs: list[tuple[Any, Any, int]]) -> Any:
    cls = get_task("retrieval")
    task = cls(make_data_config(cls, {"source": "bundled", "max_length": 40}))
    for split in ("train", "val", "test"):
        task.splits[split] = pairs
    return task


def test_retrieval_batches_bucket_pairs_by_their_longer_document() -> None:
    rng = np.random.default_rng(0)
    pairs = [
        (rng.integers(5, 50, rng.integers(2, 40)), rng.integers(5, 50, rng.integers(2, 40)), i % 2)
        for i in range(200)
    ]
    task = _retrieval(pairs)
    a = list(task.batches("train", 8, shuffle=True, epoch=2, seed=1))
    b = list(task.batches("train", 8, shuffle=True, epoch=2, seed=1))
    assert [x.index.tolist() for x in a] == [x.index.tolist() for x in b]
    assert sorted(torch.cat([x.index for x in a]).tolist()) == list(range(200))
    longer = [max(len(p[0]), len(p[1])) for p in pairs]
    expected = batch_groups(longer, 8, shuffle=True, epoch=2, seed=1)
    assert [x.index.tolist() for x in a] == expected
    for batch in a:
        idx = batch.index.tolist()
        assert batch.inputs["ids_a"].shape[1] == 1 + max(len(pairs[i][0]) for i in idx)
        assert batch.inputs["ids_b"].shape[1] == 1 + max(len(pairs[i][1]) for i in idx)
    real = sum(int(x.inputs["padding_a"].sum() + x.inputs["padding_b"].sum()) for x in a)
    assert real == sum(x.n_tokens for x in a) == sum(len(p[0]) + len(p[1]) + 2 for p in pairs)
