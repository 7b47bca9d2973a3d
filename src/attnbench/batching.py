"""Which examples go together in a batch: the one batching rule every task shares.

Training batches are **length-bucketed** (as in fairseq and tensor2tensor): the split
is shuffled by a generator seeded with (seed, epoch), cut into windows of
``window`` batches, each window is sorted by length (stable, so ties keep the shuffled
order) and cut into batches, and the batches are shuffled by the same generator. A
batch then holds examples of similar length and is padded little, while which
examples meet and in which order the batches come is still random; the whole order
is a pure function of (seed, epoch), so a resumed run skips to exactly the batch an
uninterrupted one would have drawn. The batches do not depend on how a task pads
them (a fixed-length variant's batches are padded to ``pad_to`` but hold the same
examples), so every variant trains on the same sequence of examples.

Evaluation batches come in split order, or longest first with ``by_length`` (the
batch's ``index`` says which examples it holds, so predictions keep their place).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

BUCKET_WINDOW = 50  # training batches sorted by length together


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator behind an epoch's data order (one stream per (seed, epoch))."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def batch_groups(
    lengths: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool = False,
    epoch: int = 0,
    seed: int = 0,
    by_length: bool = False,
    window: int = BUCKET_WINDOW,
) -> list[list[int]]:
    """Example indices of each batch, in the order the batches are drawn.

    ``lengths[i]`` is example ``i``'s length (the width it forces on its batch).
    ``shuffle``: training order, length-bucketed within windows of ``window`` batches
    (``window=1`` is plain random batching). Otherwise split order, or with
    ``by_length`` longest first (ties in split order). Every index appears exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    n = len(lengths)
    if not shuffle:
        order = list(range(n))
        if by_length:
            order.sort(key=lambda i: -lengths[i])
        return [order[s : s + batch_size] for s in range(0, n, batch_size)]
    gen = epoch_generator(seed, epoch)
    order = torch.randperm(n, generator=gen).tolist()
    span = batch_size * window
    groups: list[list[int]] = []
    for w in range(0, n, span):
        part = sorted(order[w : w + span], key=lengths.__getitem__)
        groups += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    return [groups[g] for g in torch.randperm(len(groups), generator=gen).tolist()]


def padding_fraction(lengths: Sequence[int], groups: Sequence[Sequence[int]]) -> float:
    """Share of a padded batch's positions that are padding, over all ``groups``."""
    real = padded = 0
    for idx in groups:
        widths = [lengths[i] for i in idx]
        real += sum(widths)
        padded += max(widths, default=0) * len(widths)
    return 1.0 - real / padded if padded else 0.0
