"""Profiles: YAML files validated by a JSON schema, resolved into one config per job.

A *profile* (``config/default.yaml``, ``config/standard.yaml`` …) says which
variants and tasks to run, at which sizes, with which seeds. :func:`job_config`
resolves it for one (task, variant): global ``model``/``train`` sections
overridden by the task's own, the task's data knobs and the variant's options,
all filled with defaults. That resolved dict goes into the run record, and its
hash decides whether Snakemake must rerun a job.

The efficiency sweep's ``bench:`` section resolves here too
(:func:`resolve_bench_config`, :func:`bench_job_config`); its dataclasses and default
grids are in :mod:`attnbench.config_bench`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from attnbench.attention import get_variant, variant_names
from attnbench.config_bench import GRID_DEFAULTS, BenchConfig, GridConfig
from attnbench.model import ModelConfig
from attnbench.options import build_options
from attnbench.records import DEFAULT_REFERENCE
from attnbench.tasks.base import Task, get_task, make_data_config, task_names
from attnbench.train import TrainConfig
from attnbench.tuning import resolve_tune


class ConfigError(ValueError):
    """A profile is missing, malformed or invalid; the message is one line for the user."""


@cache
def profile_schema() -> dict[str, Any]:
    text = resources.files("attnbench").joinpath("schemas/profile.schema.yaml").read_text()
    return yaml.safe_load(text)


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read and validate a profile YAML (or JSON) file, defaults filled in."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"profile file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read profile {path}: {exc.strerror}") from None
    if path.suffix == ".json":  # the workflow's resolved profile (PyYAML misreads 1e-09)
        try:
            return validate_profile(json.loads(text), source=str(path))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"malformed JSON in {path} at line {exc.lineno}: {exc.msg}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML in {path}{where}: {problem}") from None
    return validate_profile(data, source=str(path))


def validate_profile(data: Any, source: str = "profile") -> dict[str, Any]:
    """Validate a profile dict against the schema and the registries; return it with defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a profile must be a YAML mapping, got {type(data).__name__}")
    validator = jsonschema.Draft202012Validator(profile_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{source}: invalid value at {where}: {err.message}")
    profile = _fill_defaults(copy.deepcopy(data))
    for name, spec in profile["tasks"].items():
        kind = spec.get("task", name)
        if kind not in task_names():
            where = f"tasks.{name}.task" if "task" in spec else "tasks"
            raise ConfigError(
                f"{source}: unknown task {kind!r} under {where}; "
                f"valid choices: {', '.join(task_names())}"
            )
    sel = profile["variants"]
    listed = [
        *sel["exclude"],
        *sel["options"],
        *([] if isinstance(sel["include"], str) else sel["include"]),  # "all" | "canonical"
    ]
    for name in listed:
        if name not in variant_names():
            raise ConfigError(
                f"{source}: unknown variant {name!r} under variants; "
                f"valid choices: {', '.join(variant_names())}"
            )
    ref = profile["reference"]["variant"]
    if ref not in variant_names():
        raise ConfigError(
            f"{source}: unknown variant {ref!r} under reference.variant; "
            f"valid choices: {', '.join(variant_names())}"
        )
    if ref not in selected_variants(profile):
        raise ConfigError(
            f"{source}: reference.variant {ref!r} is not among the profile's variants; "
            "include it, or choose one of: " + ", ".join(selected_variants(profile))
        )
    try:  # the efficiency sweep's settings fail here too, not halfway through a run
        bench_task(profile, resolve_bench_config(profile))
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    gpus = profile["gpus_per_job"]
    if gpus > 1 and profile["device"] == "cpu":
        raise ConfigError(
            f"{source}: gpus_per_job={gpus} needs GPUs but device is 'cpu'; "
            "valid: gpus_per_job: 1, or device: auto or cuda"
        )
    # Resolve every job once so that type/range errors surface before any training starts.
    for task in selected_tasks(profile):
        for variant in selected_variants(profile):
            try:
                cfg = job_config(profile, task, variant)
            except ValueError as exc:
                raise ConfigError(f"{source}: {exc}") from None
            batch = cfg["train"]["batch_size"]
            if batch % gpus:
                raise ConfigError(
                    f"{source}: task {task!r}: train.batch_size={batch} (the global batch) "
                    f"is not divisible by gpus_per_job={gpus}; valid: a multiple of {gpus}"
                )
    return profile


def _fill_defaults(data: dict[str, Any]) -> dict[str, Any]:
    schema = profile_schema()["properties"]
    for key, spec in schema.items():
        if "default" in spec and key not in data:
            data[key] = copy.deepcopy(spec["default"])
    variants = data.setdefault("variants", {})
    for key, spec in schema["variants"]["properties"].items():
        variants.setdefault(key, copy.deepcopy(spec["default"]))
    reference = data.setdefault("reference", {})
    for key, spec in schema["reference"]["properties"].items():
        reference.setdefault(key, copy.deepcopy(spec["default"]))
    data.setdefault("model", {})
    data.setdefault("train", {})
    for task in data["tasks"].values():
        task.setdefault("enabled", True)
    return data


def profile_task(profile: dict[str, Any], name: str) -> type[Task]:
    """The registered task class behind the profile's task ``name``: ``tasks.<name>.task``
    when the entry names one (a second setting of a registered task under a name of its
    own, e.g. ``mqar-L256-K16: {task: mqar, data: ...}``), else ``name`` itself."""
    spec = profile["tasks"].get(name)
    if spec is None:
        raise ValueError(
            f"task {name!r} is not in profile {profile['profile']!r}; "
            f"its tasks: {', '.join(profile['tasks'])}"
        )
    return get_task(spec.get("task", name))


def selected_tasks(profile: dict[str, Any]) -> list[str]:
    return [name for name, spec in profile["tasks"].items() if spec.get("enabled", True)]


def selected_variants(profile: dict[str, Any]) -> list[str]:
    """The profile's variants: ``variants.include`` less ``variants.exclude``.

    ``include`` is ``"all"`` (every registered variant, presets included),
    ``"canonical"`` (every variant's canonical registration — one per class — including
    ones dropped in through ``ATTNBENCH_VARIANT_PATH`` or entry points; no presets) or
    a list of names.
    """
    sel = profile.get("variants", {})
    include = sel.get("include", "all")
    if include == "all":
        names = variant_names()
    elif include == "canonical":
        names = [name for name in variant_names() if get_variant(name).canonical]
    else:
        names = list(include)
    excluded = set(sel.get("exclude", []))
    return [n for n in names if n not in excluded]


def reference_variant(profile: dict[str, Any]) -> str:
    """The variant every other one is compared with (profile key ``reference.variant``,
    :data:`attnbench.records.DEFAULT_REFERENCE` when the profile names none)."""
    return str(profile.get("reference", {}).get("variant") or DEFAULT_REFERENCE)


def run_seeds(profile: dict[str, Any], variant: str) -> list[int]:
    """Training seeds of ``variant``: the profile's, plus ``reference.seeds`` for the reference."""
    seeds = list(profile["seeds"])
    if variant == reference_variant(profile):
        extra = profile.get("reference", {}).get("seeds") or []
        seeds += [s for s in extra if s not in seeds]
    return seeds


def job_config(profile: dict[str, Any], task: str, variant: str) -> dict[str, Any]:
    """The fully resolved configuration of one (task, variant) job (seed excluded).

    Raises ``ValueError`` with a one-line message on a bad value.
    """
    task_cls = profile_task(profile, task)
    task_spec = profile["tasks"][task]
    spec = get_variant(variant)
    data_cfg = make_data_config(task_cls, task_spec.get("data"))
    model_values = {**profile.get("model", {}), **task_spec.get("model", {})}
    train_values = {**profile.get("train", {}), **task_spec.get("train", {})}
    task_obj = task_cls(data_cfg)
    model_cfg = ModelConfig(**model_values, max_len=task_obj.max_len())
    train_cfg = TrainConfig(**train_values)
    options = spec.resolved_options(profile.get("variants", {}).get("options", {}).get(variant))
    tune = resolve_tune(
        {**(profile.get("tune") or {}), **(task_spec.get("tune") or {})}, f"tasks.{task}.tune"
    )
    cfg = {
        "profile": profile["profile"],
        "task": task,
        "variant": variant,
        "data": dataclasses.asdict(data_cfg),
        "model": dataclasses.asdict(model_cfg),
        "train": dataclasses.asdict(train_cfg),
        "variant_options": options,
        "device": profile.get("device", "auto"),
        "threads": profile.get("threads", 1),
        "deterministic": profile.get("deterministic", False),
        "offline": profile.get("offline", True),
        "reference_variant": reference_variant(profile),
    }
    # only when set, so that the hashes of jobs without them stay put
    if task_cls.name != task:
        cfg["task_kind"] = task_cls.name
    if tune is not None:
        cfg["tune"] = tune
    return cfg


# Model settings a profile may vary across entries of one registered task; the leaderboard
# then shows them in the row label (``vanilla · rope``) under one column (``lm``).
ROW_AXES: tuple[str, ...] = ("positions",)


def _without_row_axes(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` less what tells its entry apart from its siblings: the entry's name and
    the model's :data:`ROW_AXES`."""
    rest = {k: v for k, v in cfg.items() if k not in ("task", "task_kind")}
    rest["model"] = {k: v for k, v in cfg["model"].items() if k not in ROW_AXES}
    return rest


def row_setting(profile: dict[str, Any], task: str, variant: str) -> dict[str, Any] | None:
    """How the leaderboard shows entry ``task`` when the profile varies a row axis.

    When the profile has several entries of one registered task that differ only in
    :data:`ROW_AXES` (``config/positions.yaml``: ``lm-learned``, ``lm-rope``,
    ``lm-alibi``), each with a setting of its own, the records of these entries share
    one column (the registered task's name) and the setting moves into the row label.
    Returns ``{"column", "setting", "reference_setting"}``: the reference row is the
    reference variant under the profile's top-level setting (when an entry has it, else
    the first entry's). ``None`` when the profile varies nothing there.
    """
    kind = profile_task(profile, task).name
    siblings = [n for n in selected_tasks(profile) if profile_task(profile, n).name == kind]
    if task not in siblings or len(siblings) < 2:
        return None
    cfgs = {name: job_config(profile, name, variant) for name in siblings}
    mine = _without_row_axes(cfgs[task])
    if any(_without_row_axes(cfg) != mine for cfg in cfgs.values()):
        return None

    def setting(cfg: dict[str, Any]) -> dict[str, Any]:
        return {axis: cfg["model"][axis] for axis in ROW_AXES}

    settings = [setting(cfg) for cfg in cfgs.values()]
    if any(settings.count(s) > 1 for s in settings):
        return None  # two entries with one setting: they differ in nothing shown
    top = {axis: profile.get("model", {}).get(axis) for axis in ROW_AXES}
    return {
        "column": kind,
        "setting": setting(cfgs[task]),
        "reference_setting": top if top in settings else settings[0],
    }


def data_config_hash(profile: dict[str, Any], task: str) -> str:
    """Hash of what determines a task's prepared data (its data knobs)."""
    task_cls = profile_task(profile, task)
    data_cfg = make_data_config(task_cls, profile["tasks"][task].get("data"))
    return config_hash(
        {
            "task": task,
            "data": dataclasses.asdict(data_cfg),
            "data_version": task_cls.data_version,
        }
    )


def config_hash(cfg: dict[str, Any]) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# The efficiency sweep's `bench:` section
# ---------------------------------------------------------------------------------------
def resolve_bench_config(
    profile: dict[str, Any], grid_overrides: dict[str, dict[str, Any]] | None = None
) -> BenchConfig:
    """The profile's ``bench`` section with defaults filled; ``ValueError`` on bad values.

    ``grid_overrides`` ({"cpu": {...}, "cuda": {...}}) replace grid keys (command-line use).
    ``exact_variants`` stays ``None`` unless the profile sets it (see :func:`bench_is_exact`).
    """
    values = dict(profile.get("bench") or {})
    # the relative table divides by the profile's reference variant unless bench sets one
    values.setdefault("reference", reference_variant(profile))
    grids = {}
    for kind, default in GRID_DEFAULTS.items():
        given = {**(values.pop(kind, None) or {}), **((grid_overrides or {}).get(kind) or {})}
        merged = {**dataclasses.asdict(default), **given}
        grids[kind] = _build_bench(GridConfig, merged, f"bench.{kind}")
    cfg = _build_bench(BenchConfig, values, "bench")
    cfg.cpu, cfg.cuda = grids["cpu"], grids["cuda"]
    return cfg


def _build_bench(cls: type, values: dict[str, Any], where: str) -> Any:
    try:
        return build_options(cls, values, where)
    except ValueError as exc:
        message = str(exc)
        if message.startswith("bench grid"):  # GridConfig's own checks name no grid
            message = where + message[len("bench grid") :]
        raise ValueError(message) from None


def bench_is_exact(cfg: BenchConfig, variant: str) -> bool:
    """Whether the sweep's TFLOP/s of ``variant`` is a FLOP rate (else the equivalent rate).

    ``bench.exact_variants``, when the profile sets it, lists the exact variants;
    otherwise a variant is exact iff its capabilities declare ``exact_softmax``.
    """
    if cfg.exact_variants is not None:
        return variant in cfg.exact_variants
    return get_variant(variant).capabilities.exact_softmax


def bench_task(profile: dict[str, Any], cfg: BenchConfig) -> str:
    """The task whose model the ``train_step`` mode times (``bench.task``, else the first)."""
    name = cfg.task or selected_tasks(profile)[0]
    if name not in profile["tasks"]:
        raise ValueError(
            f"bench.task {name!r} is not configured in profile {profile['profile']!r}; "
            f"its tasks: {', '.join(profile['tasks'])}"
        )
    return name


def bench_job_config(
    profile: dict[str, Any], variant: str, cfg: BenchConfig | None = None
) -> dict[str, Any]:
    """Everything that determines a variant's bench record (its hash reruns the job)."""
    cfg = cfg or resolve_bench_config(profile)
    task = bench_task(profile, cfg)
    job = job_config(profile, task, variant)
    return {
        "profile": profile["profile"],
        "variant": variant,
        "variant_options": job["variant_options"],
        "exact_flops": bench_is_exact(cfg, variant),
        "bench": dataclasses.asdict(cfg),
        "train_step": {"task": task, "model": job["model"], "train": job["train"]},
        "device": profile.get("device", "auto"),
        "threads": profile.get("threads", 1),
    }
