"""Write config/mad.yaml: the MAD benchmark (Poli et al. 2024) as one attnbench profile.

Every MAD task at its baseline setting and at each value of its one-factor sweeps
(:data:`attnbench.data.mad.MAD_TASKS`, from mad-lab's ``configs/tasks/*.yml``) becomes a
task entry of its own (``tasks.<name>.task`` names the registered task), and every
variant trains each entry at every point of mad-lab's grid (``make_benchmark_mad_configs``:
lr ∈ {1e-4, 5e-4, 1e-3} × weight decay ∈ {0, 0.1}), the best on validation reported.

    python scripts/make_mad_profile.py            # rewrites config/mad.yaml
    python scripts/make_mad_profile.py --check    # exit 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnbench.data.mad import MAD_TASKS

OUT = Path(__file__).resolve().parents[1] / "config" / "mad.yaml"
BATCH, EPOCHS = 128, 200  # mad-lab MADConfig: batch_size 128, epochs 200

HEADER = """\
# MAD (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures"): the six
# synthetic tasks at mad-lab's baseline settings and one-factor sweeps, every variant at
# the best point of mad-lab's learning-rate x weight-decay grid. A GPU profile, generated
# by scripts/make_mad_profile.py (do not edit by hand; CI checks it is up to date).
#   run it:      snakemake --cores all --configfile config/mad.yaml
#   one job:     attnbench prepare --profile config/mad.yaml --task mad-compression &&
#                attnbench train --profile config/mad.yaml --task mad-compression --variant vanilla
# A task's MAD score is the mean over its settings of the best run: the leaderboard's
# capacity section shows it ("mean"), with a figure per task and knob.
# As mad-lab (mad/configs.py, configs/tasks/*.yml at the December 2024 fix): 12,800
# training / 1,280 test examples (memorisation: 256 training examples), batch 128, 200
# epochs (the steps below), AdamW with cosine decay to 1e-6, width 128, two mixer blocks
# each followed by an MLP. Differences: validation is a held-out split drawn like the test
# split (mad-lab has none and reports test accuracy); our backbone is pre-LN with learned
# positions and a GELU MLP (mad-lab's configurable; SwiGLU in its hybrid blocks).
"""


def _entries() -> list[tuple[str, str, dict, int]]:
    """(entry name, registered task, data values, training examples) per setting."""
    out = []
    for name, task in MAD_TASKS.items():
        base = task.config()
        out.append((name, name, {}, base.n_train))
        for knob, values in task.sweeps.items():
            for value in values:
                out.append(
                    (
                        f"{name}-{knob.replace('_', '-')}-{value}",
                        name,
                        {knob: value},
                        value if knob == "n_train" else base.n_train,
                    )
                )
    return out


def render() -> str:
    lines = [HEADER.rstrip("\n"), "profile: mad", "description: >-"]
    lines += [
        "  MAD's six synthetic tasks at their baseline settings and one-factor sweeps, every",
        "  variant at the best of mad-lab's 3 learning rates x 2 weight decays (GPU).",
        "output_dir: results/mad  # its own leaderboard, beside the default profile's results/",
        "seeds: [0]",
        "reference: {variant: vanilla, seeds: [0, 1, 2]}",
        "device: auto",
        "threads: 4",
        "offline: true",
        "group_tasks: false",
        "",
        "variants:",
        "  include: canonical",
        "  exclude: []",
        "",
        "model: {d_model: 128, n_heads: 4, n_layers: 2, d_ff: 512, dropout: 0.0,",
        "        attention_dropout: 0.0, positions: learned, norm_first: true}",
        "",
        "train: {optimizer: adamw, betas: [0.9, 0.98], eps: 1.0e-8, batch_size: 128,",
        "        eval_batch_size: 256, warmup_steps: 0, schedule: cosine, min_lr_ratio: 0.001,",
        "        grad_clip: 1.0, precision: auto}",
        "",
        "# mad-lab's make_benchmark_mad_configs grid",
        "tune: {lr: [0.0001, 0.0005, 0.001], weight_decay: [0.0, 0.1]}",
        "",
        "tasks:",
    ]
    for entry, task, data, n_train in _entries():
        steps = max(1, EPOCHS * -(-n_train // BATCH))
        lines.append(f"  {entry}:")
        if entry != task:
            lines.append(f"    task: {task}")
        if data:
            values = ", ".join(f"{k}: {v}" for k, v in data.items())
            lines.append(f"    data: {{{values}}}")
        lines.append(f"    train: {{steps: {steps}, eval_every: {max(1, steps // 20)}}}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if config/mad.yaml differs")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/make_mad_profile.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(_entries())} task entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
