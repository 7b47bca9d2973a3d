"""Command line: ``attnbench bench`` (measure variants) and ``attnbench bench-summary``.

``attnbench bench --variant V`` measures one variant and writes one JSON record
(:mod:`attnbench.bench.records`); ``attnbench bench-summary`` reads the records (and
nothing else) and writes the tables and plots (:mod:`attnbench.bench.summary`).

Importing this module loads no torch (``attnbench --help`` builds these parsers):
:func:`main` imports what the commands need when one runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnbench.bench.records import bench_record_path, write_bench_record
from attnbench.config_bench import DTYPES, MODES
from attnbench.records import iter_record_files

DEFAULT_PROFILE = "config/default.yaml"
DESCRIPTION = (
    "Efficiency sweep: time, memory and throughput of every variant versus sequence length."
)


def add_parser(subparsers: Any) -> None:
    """Register ``bench`` and ``bench-summary`` on the ``attnbench`` sub-command parser."""
    p = subparsers.add_parser(
        "bench",
        help="efficiency sweep of variants: time, memory, TFLOP/s versus length (one record each)",
        description=DESCRIPTION,
    )
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile YAML (default: %(default)s)")
    p.add_argument(
        "--variant", nargs="+", required=True, metavar="NAME", help="variant(s) to measure"
    )
    p.add_argument(
        "--out", help="record path, one variant only (default: "
        "<output_dir>/bench/<profile>/records/<variant>.json)",
    )  # fmt: skip
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="(default: the profile's)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the profile's `threads`)")
    grid = p.add_argument_group("grid overrides (default: the profile's bench.cpu / bench.cuda)")
    grid.add_argument("--modes", nargs="+", choices=MODES)
    grid.add_argument("--lengths", nargs="+", type=int, metavar="L")
    grid.add_argument("--long-lengths", nargs="*", type=int, metavar="L")
    grid.add_argument("--train-step-lengths", nargs="+", type=int, metavar="L")
    grid.add_argument("--batch", nargs="+", type=int, metavar="B")
    grid.add_argument("--heads", nargs="+", type=int, metavar="H")
    grid.add_argument("--head-dim", nargs="+", type=int, metavar="D")
    grid.add_argument("--causal", choices=("false", "true", "both"))
    grid.add_argument("--dtype", choices=DTYPES)
    grid.add_argument("--warmup", type=int)
    grid.add_argument("--repeats", type=int)
    grid.add_argument("--memory-cap-mib", type=float)
    p.add_argument("--quiet", action="store_true", help="no per-point lines on stderr")
    p.set_defaults(func=main, bench_command="run")

    s = subparsers.add_parser(
        "bench-summary", help="tables (Markdown + CSV) and plots from bench records"
    )
    s.add_argument("--profile", default=DEFAULT_PROFILE, help="profile YAML (default: %(default)s)")
    s.add_argument("--records", nargs="*", help="record files (default: the profile's records)")
    s.add_argument("--out-dir", help="output directory (default: <output_dir>/bench/<profile>)")
    s.add_argument("--reference", help="variant the relative table divides by (default: records')")
    s.add_argument("--no-plots", action="store_true", help="tables only")
    s.set_defaults(func=main, bench_command="summary")


def _grid_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "modes",
        "lengths",
        "long_lengths",
        "train_step_lengths",
        "batch",
        "heads",
        "head_dim",
        "dtype",
        "warmup",
        "repeats",
        "memory_cap_mib",
    )
    out = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if args.causal is not None:
        out["causal"] = {"false": [False], "true": [True], "both": [False, True]}[args.causal]
    return out


def main(args: argparse.Namespace) -> int:
    """Entry point of both sub-commands; bad input raises ``ValueError`` (one line)."""
    # loaded here, not at the top: building the parsers must stay free of torch
    from attnbench.bench.summary import build_summary
    from attnbench.config import load_profile

    profile = load_profile(args.profile)
    if args.bench_command == "summary":
        base = Path(profile["output_dir"]) / "bench" / profile["profile"]
        files = (
            [Path(f) for f in args.records]
            if args.records
            else list(iter_record_files(base / "records"))
        )
        out_dir = Path(args.out_dir) if args.out_dir else base
        result = build_summary(files, out_dir, reference=args.reference, plots=not args.no_plots)
        print(
            f"bench summary: {result.n_records} record(s), {len(result.skipped)} skipped "
            f"→ {out_dir / 'summary.md'}"
        )
        return 0

    import torch

    from attnbench.attention import get_variant
    from attnbench.bench.sweep import run_variant
    from attnbench.config import bench_task, resolve_bench_config
    from attnbench.provenance import resolve_device

    for name in args.variant:
        get_variant(name)  # unknown names fail now, listing the valid ones
    if args.out and len(args.variant) > 1:
        raise ValueError("--out takes one variant; give one --variant or leave --out out")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    device = resolve_device(args.device or profile.get("device", "auto"))
    kind = "cuda" if device.type == "cuda" else "cpu"
    cfg = resolve_bench_config(profile, {kind: _grid_overrides(args)})
    bench_task(profile, cfg)
    torch.set_num_threads(args.threads or profile.get("threads", 1))

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for name in args.variant:
        out = (
            Path(args.out)
            if args.out
            else bench_record_path(profile["output_dir"], profile["profile"], name)
        )
        record = run_variant(profile, name, device, cfg, log=None if args.quiet else log)
        write_bench_record(out, record)
        counts: dict[str, int] = {}
        for p in record["points"]:
            counts[p["status"]] = counts.get(p["status"], 0) + 1
        tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        print(f"bench {name}: {tally} in {record['wall_time_s']:.1f} s; record: {out}")
    return 0
