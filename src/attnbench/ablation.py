"""Head ablation: re-evaluate a trained model with heads disabled.

Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?";
Kovaleva, Romanov, Rogers & Rumshisky 2019, "Revealing the Dark Secrets of BERT".

Each head's contribution to the multi-head output is scaled by a gate ξ_h ∈ {0, 1}
(``AttentionContext.head_mask``, applied by every variant before W_O). For a
finished run this module reloads its best checkpoint, checks that the metric
with no head disabled reproduces the record exactly, then disables each head of
each layer in turn, and each layer's heads all together (only the residual path
remains), and writes the metric change for every case.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from attnbench import records
from attnbench.job import build_job
from attnbench.tasks.base import Task


def load_trained(record_file: Path, data_dir: Path) -> tuple[dict[str, Any], Task, torch.nn.Module]:
    """The record, its task with data loaded, and the model at its best checkpoint (CPU)."""
    record = records.read_record(record_file)
    if record["status"] != "ok":
        raise ValueError(f"{record_file}: status {record['status']!r}, there is no trained model")
    cfg = record["config"]
    checkpoint = record_file.with_name(record["artifacts"]["checkpoint"])
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # OSError, RuntimeError (bad zip), UnpicklingError (not a checkpoint)
        first = (str(exc).splitlines() or [""])[0][:200]
        raise ValueError(
            f"cannot load checkpoint {checkpoint} ({type(exc).__name__}: {first}); "
            f"retrain: delete {record_file} and run attnbench train again"
        ) from None
    job = build_job(cfg, data_dir)
    torch.manual_seed(record["seed"])  # variants that draw buffers at construction
    model = job.build_model()
    model.load_state_dict(state["model"])
    return record, job.task, model.eval()


def head_ablation(
    record_file: Path, data_dir: Path, *, split: str = "test", progress: bool = True
) -> dict[str, Any]:
    """Metric with each head, and each layer's heads, disabled; see the module docstring."""
    record, task, model = load_trained(record_file, data_dir)
    cfg = record["config"]
    n_layers, n_heads = cfg["model"]["n_layers"], cfg["model"]["n_heads"]
    batch = cfg["train"]["eval_batch_size"]
    device = torch.device("cpu")
    name = task.metric

    def score(mask: torch.Tensor | None) -> float:
        kwargs = {} if mask is None else {"head_mask": mask}
        return task.evaluate(model, split, batch, device, **kwargs).metrics[name]

    base = score(None)
    recorded = record["metrics"][split][name] if split in record["metrics"] else None
    heads = [[0.0] * n_heads for _ in range(n_layers)]
    layers = [0.0] * n_layers
    cases = [(layer, head) for layer in range(n_layers) for head in [*range(n_heads), None]]
    for layer, head in tqdm(cases, desc="head ablation", disable=not progress, leave=False):
        mask = torch.ones(n_layers, n_heads)
        if head is None:
            mask[layer] = 0.0
            layers[layer] = score(mask) - base
        else:
            mask[layer, head] = 0.0
            heads[layer][head] = score(mask) - base
    return {
        "task": record["task"],
        "variant": record["variant"],
        "seed": record["seed"],
        "profile": record["profile"],
        "split": split,
        "metric": record["metric"],
        "base": base,
        "recorded": recorded,
        "reproduces_record": recorded is None or base == recorded,
        "all_ones_mask": score(torch.ones(n_layers, n_heads)),
        "delta_per_head": heads,  # [layer][head]: metric(head off) − base
        "delta_per_layer": layers,  # [layer]: metric(all heads of the layer off) − base
        "record": str(record_file),
        "config_hash": record["config_hash"],
    }


def write_head_ablation(record_file: Path, data_dir: Path, out_file: Path, **kwargs: Any) -> dict:
    result = head_ablation(record_file, data_dir, **kwargs)
    records.atomic_write_text(out_file, json.dumps(result, indent=2) + "\n")
    return result
