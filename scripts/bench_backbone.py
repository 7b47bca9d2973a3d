#!/usr/bin/env python
"""How fast is attnbench's training step against a minimal fused-attention Transformer?

Times one training step (forward + backward + AdamW step) of the task model that a
run trains — :class:`attnbench.model.SequenceClassifier` built by the task, with its loss
from ``task.loss`` — against :class:`ReferenceClassifier`, a plain ``nn.Module`` of
the same shape written here: token + learned position embeddings, L pre-norm blocks
with ``F.scaled_dot_product_attention`` and a GELU MLP, a final norm, mean pooling over
real tokens and a linear head. Both have separate Q, K, V projections and the same
dropout sites, so the gap is overhead (masks, copies, per-layer Python), not design.

The models step in turn in one process (reference, variant 1, variant 2, …, repeated),
each on the same batch, so a load that comes and goes slows them alike; the report
is the median step time of each and the ratio reference / ours (1.0 = as fast).
Defaults: L = 2, d = 64, 4 heads, d_ff = 128, n = 100, B = 16, dropout 0, one thread::

    python scripts/bench_backbone.py --variant fused vanilla
    python scripts/bench_backbone.py --variant vanilla --dropout 0.1 --padding
    python scripts/bench_backbone.py --variant vanilla --padding --profile 30

``--padding`` gives every row a random real length in [n/5, n] (the rest is padding, as
in a ListOps batch); ``--profile N`` prints torch.profiler's table of our model's
operators over N steps. ``--batching DATA_DIR`` instead compares ListOps training
batches (the default profile's data and batch size) drawn by length bucketing against
plain random batches: padding fraction, and the step time of our model on each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.attention import get_variant
from attnbench.model import ModelConfig
from attnbench.tasks.base import Batch, SequenceClassificationTask
from attnbench.train import TrainConfig, TrainStream, make_optimizer

VOCAB, CLASSES = 20, 10


class ReferenceBlock(nn.Module):
    """Pre-norm block: x + Drop(W_O·SDPA(LN(x))), then x + Drop(MLP(LN(x)))."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.heads, self.p, self.attn_p = heads, dropout, attn_dropout
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, d = x.shape
        h = self.norm1(x)

        def heads(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(
            heads(self.q(h)),
            heads(self.k(h)),
            heads(self.v(h)),
            attn_mask=mask,
            dropout_p=self.attn_p if self.training else 0.0,
        )
        x = x + F.dropout(self.o(a.transpose(1, 2).reshape(b, n, d)), self.p, self.training)
        h = F.dropout(F.gelu(self.fc1(self.norm2(x))), self.p, self.training)
        return x + F.dropout(self.fc2(h), self.p, self.training)


class ReferenceClassifier(nn.Module):
    """Embeddings → L reference blocks → LN → mean over real tokens → linear head."""

    def __init__(self, cfg: ModelConfig, vocab: int, classes: int) -> None:
        super().__init__()
        d = cfg.d_model
        self.scale, self.p = d**0.5, cfg.dropout
        self.tokens, self.positions = nn.Embedding(vocab, d), nn.Embedding(cfg.max_len, d)
        self.blocks = nn.ModuleList(
            ReferenceBlock(d, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.n_layers)
        )
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, ids: Tensor, key_padding: Tensor | None = None) -> Tensor:
        n = ids.shape[1]
        x = self.tokens(ids) * self.scale + self.positions(torch.arange(n, device=ids.device))
        x = F.dropout(x, self.p, self.training)
        mask = None if key_padding is None else key_padding[:, None, None, :]  # (B, 1, 1, n)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        if key_padding is None:
            return self.head(x.mean(dim=1))
        w = key_padding[..., None].to(x.dtype)
        return self.head((x * w).sum(dim=1) / w.sum(dim=1))


class _Synthetic(SequenceClassificationTask):
    """A classification task with no data: builds the model and its loss as a run does."""

    name = "bench-backbone"
    n_classes = CLASSES

    def __init__(self, max_len: int) -> None:
        super().__init__(None)
        self._max_len = max_len

    def vocab_size(self) -> int:
        return VOCAB

    def max_len(self) -> int:
        return self._max_len


def synthetic_batch(batch: int, length: int, padding: bool, seed: int = 0) -> Batch:
    """Random ids ([CLS] first); with ``padding`` each row has a real length in [n/5, n]."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (batch, length), generator=gen)
    ids[:, 0] = 1
    inputs = {"ids": ids}
    if padding:
        real = torch.randint(max(1, length // 5), length + 1, (batch,), generator=gen)
        mask = torch.arange(length)[None, :] < real[:, None]
        ids.masked_fill_(~mask, 0)
        inputs["key_padding"] = mask
    targets = torch.randint(0, CLASSES, (batch,), generator=gen)
    return Batch(inputs, targets, int((ids != 0).sum()))


Step = Callable[[Batch], None]


def make_step(model: nn.Module, loss_fn: Callable[[nn.Module, Batch], Tensor]) -> Step:
    """One training step: zero grads, forward, loss, backward, AdamW (the run's settings)."""
    optimizer = make_optimizer(model, TrainConfig(lr=1e-4))
    model.train()

    def step(batch: Batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        optimizer.step()

    return step


def reference_loss(model: nn.Module, batch: Batch) -> Tensor:
    return F.cross_entropy(model(**batch.inputs), batch.targets)


def build_models(cfg: ModelConfig, variants: list[str], seed: int = 0) -> dict[str, Step]:
    """The reference step first, then one per variant (built by the task, as a run does)."""
    task = _Synthetic(cfg.max_len)
    steps: dict[str, Step] = {}
    torch.manual_seed(seed)
    steps["reference"] = make_step(ReferenceClassifier(cfg, VOCAB, CLASSES), reference_loss)
    for name in variants:
        spec = get_variant(name)
        torch.manual_seed(seed)
        model = task.build_model(cfg, spec, spec.resolved_options())
        steps[name] = make_step(model, lambda m, b: task.loss(m, b)[0])
    return steps


def interleaved_times(
    steps: dict[str, Step], batches: Callable[[int], Batch], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per step of each model, taking turns on the same batch (after warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(warmup + repeats):
        batch = batches(r)
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(batch)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def profile_steps(step: Step, batch: Batch, n: int, rows: int = 25) -> str:
    """torch.profiler's operator table (self CPU time) over ``n`` steps."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        step(batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step(batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def run_backbone(args: argparse.Namespace) -> dict[str, Any]:
    cfg = ModelConfig(
        d_model=args.d_model,
        n_heads=args.heads,
        n_layers=args.layers,
        d_ff=args.d_ff,
        dropout=args.dropout,
        attention_dropout=args.attention_dropout,
        max_len=args.length,
        pooling="mean",
    )
    steps = build_models(cfg, args.variant)
    batch = synthetic_batch(args.batch, args.length, args.padding)
    if args.profile:
        for name in args.variant:
            print(f"--- {name}: {args.profile} steps")
            print(profile_steps(steps[name], batch, args.profile))
        print("--- reference")
        print(profile_steps(steps["reference"], batch, args.profile))
    times = interleaved_times(steps, lambda r: batch, args.repeats, args.warmup)
    medians = {name: statistics.median(t) for name, t in times.items()}
    ref = medians["reference"]
    print(
        f"L={cfg.n_layers} d={cfg.d_model} heads={cfg.n_heads} d_ff={cfg.d_ff} n={args.length} "
        f"B={args.batch} dropout={cfg.dropout} attention_dropout={cfg.attention_dropout} "
        f"padding={args.padding} threads={torch.get_num_threads()} "
        f"repeats={args.repeats} (interleaved)"
    )
    print(f"{'model':<12} {'median ms':>10} {'reference/ours':>15}")
    for name, median in medians.items():
        print(f"{name:<12} {median * 1e3:>10.2f} {ref / median:>15.2f}")
    return {"medians_s": medians, "ratios": {k: ref / v for k, v in medians.items()}}


def run_batching(args: argparse.Namespace) -> dict[str, Any]:
    """A task at a profile's settings: length-bucketed vs plain random training batches.

    Two copies of the task share the loaded data; one draws batches as every run does
    (``bucket_window`` batches sorted by length together), the other with
    ``bucket_window = 1`` (random batches, the old behaviour). One model steps on each
    in turn; the mean step time is what a run's training time follows.
    """
    from attnbench.batching import batch_groups, padding_fraction
    from attnbench.config import job_config, load_profile
    from attnbench.tasks.base import get_task, make_data_config

    profile = load_profile(args.profile_file)
    cfg = job_config(profile, args.task, args.variant[0])
    task_cls = get_task(args.task)
    data_cfg = make_data_config(task_cls, profile["tasks"][args.task].get("data"))
    tasks = {"bucketed": task_cls(data_cfg), "random": task_cls(data_cfg)}
    tasks["bucketed"].load(Path(args.batching))
    tasks["random"].splits = tasks["bucketed"].splits
    tasks["random"].bucket_window = 1
    batch_size = cfg["train"]["batch_size"]
    spec = get_variant(args.variant[0])
    torch.manual_seed(0)
    model = tasks["bucketed"].build_model(ModelConfig(**cfg["model"]), spec, cfg["variant_options"])
    step = make_step(model, lambda m, b: tasks["bucketed"].loss(m, b)[0])
    streams = {k: TrainStream(t, batch_size, seed=0) for k, t in tasks.items()}
    times: dict[str, list[float]] = {k: [] for k in tasks}
    padding: dict[str, list[int]] = {k: [0, 0] for k in tasks}  # real, padded positions
    for r in range(args.warmup + args.repeats):
        for kind, stream in streams.items():
            batch = next(stream)
            t0 = time.perf_counter()
            step(batch)
            if r >= args.warmup:
                times[kind].append(time.perf_counter() - t0)
                padding[kind][0] += batch.n_tokens
                padding[kind][1] += batch.inputs["ids"].numel()
    lengths = [len(ids) + 1 for ids, *_ in tasks["bucketed"].splits["train"]]
    print(
        f"{args.task} ({args.profile_file}): {len(lengths)} train examples, batch {batch_size}, "
        f"variant {args.variant[0]}, {args.repeats} steps each after {args.warmup} "
        f"(interleaved), threads={torch.get_num_threads()}"
    )
    print(f"{'batches':<10} {'pad/epoch':>9} {'pad/timed':>9} {'mean ms':>9} {'median ms':>10}")
    result: dict[str, Any] = {}
    for kind, task in tasks.items():
        groups = batch_groups(lengths, batch_size, shuffle=True, window=task.bucket_window)
        epoch_pad = padding_fraction(lengths, groups)
        timed_pad = 1.0 - padding[kind][0] / padding[kind][1]
        mean, median = statistics.mean(times[kind]), statistics.median(times[kind])
        print(
            f"{kind:<10} {epoch_pad:>9.3f} {timed_pad:>9.3f} {mean * 1e3:>9.2f} "
            f"{median * 1e3:>10.2f}"
        )
        result[kind] = {"padding": epoch_pad, "mean_s": mean, "median_s": median}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_backbone.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", nargs="+", default=["fused", "vanilla"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=128)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--attention-dropout", type=float, default=0.0)
    parser.add_argument("--padding", action="store_true", help="random real lengths in [n/5, n]")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N steps")
    parser.add_argument(
        "--batching", metavar="DATA_DIR", help="compare bucketed and random training batches"
    )
    parser.add_argument("--task", default="listops", help="--batching: the task")
    parser.add_argument("--profile-file", default="config/default.yaml", help="--batching")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.batching:
        run_batching(args)
    else:
        run_backbone(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
