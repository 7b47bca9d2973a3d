"""Assembling one job: the task, built and loaded once, and the model it trains.

Every caller that runs a (task, variant) pair — the job runner, head ablation, the
efficiency sweep's ``train_step`` mode and the tests — goes through :func:`build_job`, so
"build the task, then the model" is written once. What a variant needs from a task (a
fixed padding length, the length of a recurrent memory, who does cross-attention)
travels as :class:`attnbench.tasks.base.TaskSetup`, derived here from what the variant
declares; the task never learns a variant's name or option names, and nothing changes
the task after it is built.

The model's position scheme (``model.positions``) is part of what the task needs from
the variant: :func:`job_requirements` adds it to the task's requirements, so a variant
that does not declare the scheme, or NoPE on a model with a bidirectional stack, is an
``n/a`` pair with its reason like any other capability.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from attnbench.attention import (
    VARIANTS,
    AttentionDims,
    Requirements,
    VariantSpec,
    check_support,
    get_variant,
)
from attnbench.config import data_config_hash
from attnbench.model import ModelConfig
from attnbench.records import DEFAULT_REFERENCE
from attnbench.tasks.base import Task, TaskSetup, get_task, make_data_config

PREPARED_MARKER = "prepared.json"
STATE_ELEMENT_BYTES = 4  # states and caches are counted in float32, the parameters' dtype
SPLITS = ("train", "val", "test")  # every task has these, none of them empty
# Task heads (Task.head) whose model is one causal stack; every other head reads its input
# with a bidirectional encoder (attnbench.model.Encoder), translation's included
DECODER_ONLY_HEADS = frozenset({"lm"})


class JobError(ValueError):
    """A job cannot run as asked (bad data, unsupported pair, no GPU); one-line message."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, for one-line errors."""
    text = (str(exc).strip().splitlines() or [""])[0][:limit]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def compatible_variants(req: Requirements) -> list[str]:
    """The registered variants that can run a task with requirements ``req``."""
    return [
        name for name, spec in VARIANTS.items() if check_support(spec.capabilities, req) is None
    ]


def job_requirements(task: Task, model: ModelConfig) -> Requirements:
    """What the job needs from the variant: the task's requirements, under the model's
    position scheme, and whether the task's model has a bidirectional stack (a task
    may say so itself; otherwise its head decides, see :data:`DECODER_ONLY_HEADS`)."""
    req = task.requirements()
    bidirectional = req.bidirectional or not req.causal or task.head not in DECODER_ONLY_HEADS
    return dataclasses.replace(req, position_scheme=model.positions, bidirectional=bidirectional)


def task_setup(
    spec: VariantSpec, options: dict[str, Any], model: ModelConfig, reference: str | None
) -> TaskSetup:
    """What the task must know about this variant, from the variant's declarations.

    Fixed padding when its capabilities exclude variable lengths; its recurrent memory
    (``Attention.memory_len`` of its options); cross-attention by the variant itself
    when its capabilities allow it, else by ``reference`` (the profile's reference).
    """
    caps = spec.capabilities
    return TaskSetup(
        pad_to=None if caps.variable_length else model.max_len,
        memory_len=spec.memory_len(options) if caps.recurrent else 0,
        n_layers=model.n_layers,
        cross_attention=spec.name if caps.cross_attention else reference,
    )


@dataclass(frozen=True)
class Job:
    """A (task, variant) pair ready to run. ``na_reason``: why it cannot (then the task
    has no data loaded and the job only yields an ``n/a`` record)."""

    cfg: dict[str, Any]  # the job config (attnbench.config.job_config)
    task: Task
    variant: VariantSpec
    model_config: ModelConfig
    na_reason: str | None = None

    def build_model(self) -> nn.Module:
        """A fresh model; seed the random generators first (weights are drawn here)."""
        return self.task.build_model(self.model_config, self.variant, self.cfg["variant_options"])

    def requirements(self) -> Requirements:
        """What this job needs from a variant (:func:`job_requirements`): the task's
        requirements under the model's position scheme, as ``na_reason`` was decided."""
        return job_requirements(self.task, self.model_config)

    def _dims(self) -> AttentionDims:
        return model_dims(self.model_config)

    def state_bytes_per_layer(self) -> int | None:
        """Bytes of the recurrent state one layer carries per sequence (float32 elements;
        ``Attention.state_size``), or None for a variant without one."""
        elements = self.variant.state_size(self._dims(), self.cfg["variant_options"])
        return None if elements is None else elements * STATE_ELEMENT_BYTES

    def kv_cache_bytes_per_token(self) -> int | None:
        """Bytes all layers cache per decoded token (float32; ``Attention.kv_cache_size``),
        or None for a variant that declares no cache."""
        elements = self.variant.kv_cache_size(self._dims(), self.cfg["variant_options"])
        if elements is None:
            return None
        return elements * STATE_ELEMENT_BYTES * self.model_config.n_layers


def model_dims(m: ModelConfig) -> AttentionDims:
    """The attention dimensions of a model config (what variants declare against)."""
    assert m.head_dim is not None
    return AttentionDims(
        d_model=m.d_model,
        n_heads=m.n_heads,
        head_dim=m.head_dim,
        max_len=m.max_len,
        n_layers=m.n_layers,
    )


def build_job(
    cfg: dict[str, Any],
    data_dir: Path | None,
    *,
    profile: dict[str, Any] | None = None,
    model_overrides: dict[str, Any] | None = None,
) -> Job:
    """Build the task of job config ``cfg`` with its setup, and load its data.

    ``data_dir``: the prepared data (checked against ``profile``'s data settings when a
    profile is given), or None for a task without data (the efficiency sweep feeds it
    synthetic batches). ``model_overrides`` change the model config (the sweep's lengths).
    An unsupported pair gives a job with ``na_reason`` and no data read; bad or missing
    data raise :class:`JobError`.
    """
    spec = get_variant(cfg["variant"])
    model_cfg = ModelConfig(**{**cfg["model"], **(model_overrides or {})})
    # job configs of records written before the reference was a profile key lack it
    reference = cfg.get("reference_variant", DEFAULT_REFERENCE)
    setup = task_setup(spec, cfg["variant_options"], model_cfg, reference)
    task_cls = get_task(cfg.get("task_kind", cfg["task"]))
    task = task_cls(make_data_config(task_cls, cfg["data"]), setup)
    reason = check_support(spec.capabilities, job_requirements(task, model_cfg))
    if reason is None:
        reason = spec.unsupported_dims(model_dims(model_cfg), cfg["variant_options"])
    if reason is None and data_dir is not None:
        if profile is not None:
            check_prepared(profile, cfg["task"], data_dir)
        load_data(task, data_dir)
    return Job(cfg, task, spec, model_cfg, reason)


def check_prepared(profile: dict[str, Any], task_name: str, data_dir: Path) -> None:
    """The data in ``data_dir`` were prepared with the settings ``profile`` asks for."""
    marker_path = data_dir / PREPARED_MARKER
    if not marker_path.exists():
        raise JobError(
            f"data for task {task_name!r} is not prepared in {data_dir}; "
            f"run: attnbench prepare --profile <profile> --task {task_name}"
        )
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobError(
            f"corrupt data marker {marker_path} ({first_line(exc)}); "
            f"prepare again: attnbench prepare --profile <profile> --task {task_name}"
        ) from None
    if not isinstance(marker, dict) or marker.get("data_hash") != data_config_hash(
        profile, task_name
    ):
        raise JobError(
            f"data in {data_dir} was prepared with other settings than profile "
            f"{profile['profile']!r} now asks for; rerun attnbench prepare for task {task_name!r}"
        )


def load_data(task: Task, data_dir: Path) -> None:
    """Read the prepared splits (part of building the task); any failure is bad data,
    reported in one line."""
    try:
        task.load(data_dir)
    except Exception as exc:
        raise JobError(
            f"cannot read the prepared data of task {task.name!r} in {data_dir} "
            f"({first_line(exc)}); prepare it again: "
            f"attnbench prepare --profile <profile> --task {task.name}"
        ) from None
    for split in SPLITS:
        if task.split_size(split) == 0:
            raise JobError(
                f"task {task.name!r}: the {split} split in {data_dir} is empty; every split "
                f"needs at least one example (check tasks.{task.name}.data and prepare again)"
            )
