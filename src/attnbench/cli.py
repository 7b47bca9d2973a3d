"""``attnbench`` command line: list variants and tasks, prepare data, train, build the leaderboard.

Bad input ends with one line ``attnbench: error: ...`` on stderr and exit code 2;
nothing is written in that case. A training run that raises (not bad input) ends
with one such line and exit code 1, or, with ``--record-failures`` (the workflow's
choice), writes a ``failed`` record and exits 0 so that the rest of the suite runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_PROFILE = "config/default.yaml"


def _profile(path: str) -> dict[str, Any]:
    from attnbench.config import load_profile

    return load_profile(path)


def _task_entry(profile: dict[str, Any], task: str) -> None:
    from attnbench.tasks.base import get_task

    if task not in profile["tasks"]:
        get_task(task)  # unknown task names fail with the valid choices
        raise ValueError(
            f"task {task!r} is not configured in profile {profile['profile']!r}; "
            f"its tasks: {', '.join(profile['tasks'])}"
        )


def data_dir_for(profile: dict[str, Any], task: str) -> Path:
    return Path(profile["output_dir"]) / "data" / profile["profile"] / task


# ---------------------------------------------------------------------------------------
def cmd_variants(args: argparse.Namespace) -> int:
    from attnbench.attention import VARIANTS

    rows = []
    for name, spec in VARIANTS.items():
        caps = spec.capabilities
        rows.append(
            {
                "name": name,
                "paper": spec.paper,
                "summary": spec.summary,
                "canonical": spec.canonical,
                "preset_of": spec.preset_of,
                "options": spec.resolved_options(),
                "capabilities": caps.as_dict(),
                "defined_in": VARIANTS.origin(name),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    yes = {True: "yes", False: "no"}
    if args.markdown:
        columns = ("variant", "preset of", "paper", "causal", "encoder", "cross", "pad mask")
        columns += ("positions", "schemes", "time", "memory")
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for r in rows:
            c = r["capabilities"]
            cells = (
                f"`{r['name']}`",
                f"`{r['preset_of']}`" if r["preset_of"] else "canonical",
                r["paper"].replace("|", "\\|"),
                yes[c["causal"]],
                yes[c["bidirectional"]],
                yes[c["cross_attention"]],
                yes[c["padding_mask"]],
                c["positions"] + (", recurrent" if c["recurrent"] else ""),
                ", ".join(c["position_schemes"] or []),
                c["time_complexity"],
                c["memory_complexity"],
            )
            print("| " + " | ".join(cells) + " |")
        return 0
    header = (
        "variant",
        "preset of",
        "causal",
        "cross",
        "pad-mask",
        "positions",
        "recurrent",
        "time",
        "memory",
        "paper",
    )
    table = [header]
    for r in rows:
        c = r["capabilities"]
        table.append(
            (
                r["name"],
                r["preset_of"] or "canonical",
                yes[c["causal"]],
                yes[c["cross_attention"]],
                yes[c["padding_mask"]],
                c["positions"],
                yes[c["recurrent"]],
                c["time_complexity"],
                c["memory_complexity"],
                r["paper"],
            )
        )
    _print_table(table)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from attnbench.tasks.base import TASKS

    rows = []
    for name, cls in TASKS.items():
        rows.append(
            {
                "name": name,
                "family": cls.family,
                "head": cls.head,
                "metric": cls.metric,
                "higher_is_better": cls.higher_is_better,
                "summary": (cls.__doc__ or "").strip().splitlines()[0],
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("task", "family", "head", "metric", "summary")]
    for r in rows:
        arrow = "↑" if r["higher_is_better"] else "↓"
        table.append((r["name"], r["family"], r["head"], f"{r['metric']} {arrow}", r["summary"]))
    _print_table(table)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from attnbench.config import reference_variant, run_seeds, selected_tasks, selected_variants

    profile = _profile(args.profile)
    variants = selected_variants(profile)
    reference = reference_variant(profile)
    n_runs = sum(len(run_seeds(profile, v)) for v in variants) * len(selected_tasks(profile))
    print(
        f"profile {profile['profile']!r} is valid: {len(selected_tasks(profile))} task(s) × "
        f"{len(variants)} variant(s) × {len(profile['seeds'])} seed(s), reference "
        f"{reference!r} with {len(run_seeds(profile, reference))} seed(s): {n_runs} runs"
    )
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    """One line per task: is its data here (or reachable), with the published row counts?

    Exits 0 whatever the verdicts (they are findings, not errors); a bad profile is
    bad input (exit 2).
    """
    from attnbench.datacheck import check_profile, report

    profile = _profile(args.profile)
    report(check_profile(profile, lambda task: data_dir_for(profile, task)))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from attnbench.runner import prepare_data

    profile = _profile(args.profile)
    _task_entry(profile, args.task)
    out = Path(args.out) if args.out else data_dir_for(profile, args.task)
    if prepare_data(profile, args.task, out, force=args.force):
        print(f"prepared {args.task} in {out}")
    else:
        print(f"{args.task} is already prepared in {out} with these settings; left as it is")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from attnbench.attention import get_variant
    from attnbench.records import record_path
    from attnbench.runner import run_job

    profile = _profile(args.profile)
    tasks = [t for t in args.task.split(",") if t]
    if not tasks:
        raise ValueError("--task needs a task name (see `attnbench tasks`)")
    for task in tasks:
        _task_entry(profile, task)
    get_variant(args.variant)
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    if len(tasks) > 1 and (args.out or args.data):
        raise ValueError("--out and --data need a single --task; several tasks use the defaults")
    # Several tasks run one after another in this process: the Python and PyTorch start-up
    # (several CPU-seconds) is paid once, which matters for many small CPU jobs.
    for task in tasks:
        out = (
            Path(args.out)
            if args.out
            else record_path(
                profile["output_dir"], profile["profile"], task, args.variant, args.seed
            )
        )
        data = Path(args.data) if args.data else data_dir_for(profile, task)
        record = run_job(
            profile,
            task,
            args.variant,
            args.seed,
            data_dir=data,
            record_file=out,
            na_ok=args.na_ok,
            progress=not args.no_progress,
            threads=args.threads,
            record_failures=args.record_failures,
        )
        summary = record["status"]
        if record["status"] == "ok":
            name = record["metric"]["name"]
            metrics = record["metrics"]
            summary += (
                f": test {name} = {metrics['test'][name]:.4f} (best step {metrics['best_step']})"
            )
        elif record.get("reason"):
            summary += f": {record['reason']}"
        print(f"{task} × {args.variant} seed {args.seed} — {summary}; record: {out}", flush=True)
    return 0


def cmd_ablate_heads(args: argparse.Namespace) -> int:
    from attnbench.ablation import write_head_ablation

    record = Path(args.record)
    if not record.exists():
        raise FileNotFoundError(f"record not found: {record}")
    out = Path(args.out) if args.out else record.with_name(record.stem + ".head_ablation.json")
    result = write_head_ablation(
        record, Path(args.data), out, split=args.split, progress=not args.no_progress
    )
    worst = min(
        (
            (d, layer, head)
            for layer, row in enumerate(result["delta_per_head"])
            for head, d in enumerate(row)
        ),
        default=(0.0, -1, -1),
    )
    print(
        f"head ablation of {result['task']} × {result['variant']}: base {result['base']:.4f} "
        f"(record {result['recorded']}); largest drop {worst[0]:+.4f} at layer {worst[1]} "
        f"head {worst[2]} → {out}"
    )
    return 0


#: What `attnbench leaderboard` writes when no output is named (--md, --csv, --html, ...).
_LEADERBOARD_DEFAULTS = {"md": "results/leaderboard.md", "csv": "results/leaderboard.csv"}


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Build the outputs that were named (all of them, or else the default Markdown and CSV).

    An empty record set is refused (exit 2, nothing written): a leaderboard of no runs
    would only overwrite a good one.
    """
    from attnbench.records import file_lock, iter_record_files
    from attnbench.report import build_report

    names = ("md", "csv", "html", "manifest", "plots")
    outputs = {name: getattr(args, name) for name in names}
    if not any(outputs.values()):
        outputs |= _LEADERBOARD_DEFAULTS
    if args.records is not None:
        files = [Path(f) for f in args.records]
        if not files:
            raise ValueError("--records names no record files: nothing to build")
    else:
        files = list(iter_record_files(args.runs))
        if not files:
            missing = "" if Path(args.runs).is_dir() else " (no such directory)"
            raise ValueError(f"no run records under {args.runs}{missing}: nothing to build")
    paths = {name: Path(value) if value else None for name, value in outputs.items()}
    analysis = sorted(Path(args.analysis).rglob("*.json")) if args.analysis else []
    # Two builds writing the same leaderboard wait for each other instead of interleaving.
    first = next(path for path in paths.values() if path is not None)
    with file_lock(first.with_name(f".{first.name}.lock")):
        result = build_report(
            files,
            paths["md"],
            paths["csv"],
            out_html=paths["html"],
            plots_dir=paths["plots"],
            manifest_json=paths["manifest"],
            analysis_files=analysis,
            significance=not args.no_significance,
            bench_dir=Path(args.bench) if args.bench else None,
        )
    written = [str(outputs[name]) for name in ("md", "csv", "html", "manifest") if outputs[name]]
    if outputs["plots"]:
        written.append(f"figures in {outputs['plots']}")
    print(
        f"leaderboard: {result.n_records} record(s), {result.n_skipped} skipped "
        f"→ {', '.join(written)}"
    )
    return 0


# ---------------------------------------------------------------------------------------
def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnbench",
        description="A reproducibility benchmark suite for attention mechanisms. "
        "The full pipeline runs with `snakemake --cores all`; these commands are its steps.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("variants", help="list registered attention variants and their capabilities")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--markdown", action="store_true", help="a Markdown table (as in the README)")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("tasks", help="list registered tasks")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("check", help="validate a profile YAML file against the schema")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile YAML (default: %(default)s)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("data", help="inspect the data a profile needs")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    q = data_sub.add_parser(
        "check",
        help="per task: are its data here (local files, HF cache, prepared) or reachable, "
        "and do their rows per split match the published counts",
        description="One line per task with a verdict: ok, missing, size mismatch or "
        "not checkable offline. Nothing is downloaded. Exit 0 whatever the verdicts; "
        "2 for a bad profile.",
    )
    q.add_argument("--profile", default=DEFAULT_PROFILE, help="profile YAML (default: %(default)s)")
    q.set_defaults(func=cmd_data_check)

    p = sub.add_parser("prepare", help="generate or read one task's data into the data directory")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile YAML (default: %(default)s)")
    p.add_argument("--task", required=True, help="task name (see `attnbench tasks`)")
    p.add_argument("--out", help="data directory (default: <output_dir>/data/<profile>/<task>)")
    p.add_argument(
        "--force",
        action="store_true",
        help="prepare anew even when the data there were prepared with these settings",
    )
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train one (task, variant, seed) and write its JSON record")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile YAML (default: %(default)s)")
    p.add_argument(
        "--task",
        required=True,
        metavar="TASK[,TASK...]",
        help="task name (see `attnbench tasks`); a comma-separated list trains them one after "
        "another in this process, each with its default data and record paths",
    )
    p.add_argument("--variant", required=True, help="variant name (see `attnbench variants`)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument(
        "--data", help="prepared data directory (default: <output_dir>/data/<profile>/<task>)"
    )
    p.add_argument(
        "--out",
        help="record path (default: <output_dir>/runs/<profile>/<task>/<variant>/seed<S>.json)",
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: the profile's `threads`)")
    p.add_argument(
        "--na-ok",
        action="store_true",
        help="if the variant cannot run the task, write an `n/a` record with the reason "
        "instead of failing (the workflow uses this)",
    )
    p.add_argument(
        "--record-failures",
        action="store_true",
        help="if the run raises, write a `failed` record with the reason and exit 0 "
        "instead of exit 1 (the workflow uses this; bad input still exits 2)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "ablate-heads",
        help="re-evaluate a trained run with each head (and each layer's heads) disabled",
    )
    p.add_argument("--record", required=True, help="run record (its .best.pt checkpoint is used)")
    p.add_argument("--data", required=True, help="the task's prepared data directory")
    p.add_argument(
        "--split", default="test", choices=("val", "test"), help="(default: %(default)s)"
    )
    p.add_argument("--out", help="output JSON (default: <record>.head_ablation.json beside it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_ablate_heads)

    p = sub.add_parser(
        "leaderboard",
        help="build the leaderboard (Markdown, CSV, HTML, figures, manifest) from run records",
        description="Writes only the outputs named; with none named, the Markdown and the "
        "CSV at their default paths.",
    )
    p.add_argument(
        "--runs",
        default="results/runs",
        help="directory searched for records (default: %(default)s)",
    )
    p.add_argument("--records", nargs="*", help="explicit record files (instead of --runs)")
    p.add_argument(
        "--md",
        help=f"Markdown output (when no output is named: {_LEADERBOARD_DEFAULTS['md']})",
    )
    p.add_argument(
        "--csv", help=f"tidy CSV output (when no output is named: {_LEADERBOARD_DEFAULTS['csv']})"
    )
    p.add_argument("--html", help="write the self-contained HTML page here")
    p.add_argument("--plots", help="draw the figures (PNG + SVG) into this directory")
    p.add_argument("--manifest", help="write the reproducibility manifest (JSON) here")
    p.add_argument(
        "--analysis", help="directory of analysis outputs (head ablation) to plot, if any"
    )
    p.add_argument(
        "--bench", help="efficiency-sweep summary folder whose scaling plots join the HTML"
    )
    p.add_argument(
        "--no-significance",
        action="store_true",
        help="skip the paired bootstrap tests against the reference variant",
    )
    p.set_defaults(func=cmd_leaderboard)

    from attnbench.bench import add_parser as add_bench_parsers  # imports no torch

    add_bench_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from attnbench.records import JobFailed

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        # ConfigError, JobError, unknown names, bad data: one line, exit 2
        print(f"attnbench: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except JobFailed as exc:  # the run itself raised: one line, exit 1
        print(f"attnbench: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else exc.__class__.__name__


if __name__ == "__main__":
    sys.exit(main())
