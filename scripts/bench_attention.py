#!/usr/bin/env python
"""Thin wrapper: ``python scripts/bench_attention.py ARGS`` runs ``attnbench bench ARGS``.

The sweep itself lives in :mod:`attnbench.bench` (``attnbench bench --help``), e.g.::

    python scripts/bench_attention.py --variant vanilla fused --lengths 1024 4096 --repeats 3
    python scripts/bench_attention.py bench-summary      # tables and plots from the records

``results/bench/cpu_attention_1k_4k.{md,json}`` were written by this script's first
version (commit 8c08b11, ``git show 8c08b11:scripts/bench_attention.py``): one attention
layer's forward + backward on CPU, median of 2 steps after one warm-up, and peak memory
as the rise of a fresh subprocess's peak RSS (``ru_maxrss``) during the first step. That
memory column counts allocator and library overhead too, so it is not comparable with
``attnbench bench``'s figures (live tensor bytes on CPU, ``max_memory_allocated`` on CUDA).
"""

from __future__ import annotations

import argparse
import sys

from attnbench.bench.cli import add_parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("bench", "bench-summary"):
        argv = ["bench", *argv]
    parser = argparse.ArgumentParser(prog="bench_attention.py")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"bench_attention.py: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
