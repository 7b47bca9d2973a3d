"""No canonical variant is dense attention at a task length of the default profile.

A sparse or compressed variant whose pattern covers the whole sequence (``dense_reason``)
computes dense attention there, so its result would say nothing about its mechanism. The
default profile's lengths and variant options must keep every canonical variant out of
that regime on every task it runs (presets are settings chosen for longer inputs and may
fall into it; their records carry ``dense_at_length``).
"""

from __future__ import annotations

from pathlib import Path

from attnbench.attention import check_support, get_variant, variant_names
from attnbench.config import job_config, load_profile, selected_tasks
from attnbench.tasks.base import get_task, make_data_config

DEFAULT_PROFILE = Path(__file__).resolve().parents[1] / "config" / "default.yaml"


def first_sparse_length(name: str, options: dict, n: int, limit: int = 1 << 16) -> int | None:
    """The smallest length > n at which the variant is no longer dense (None: up to limit)."""
    spec = get_variant(name)
    for m in range(n + 1, limit):
        if spec.dense_reason(m, options) is None:
            return m
    return None


def test_no_canonical_variant_is_dense_at_a_default_task_length() -> None:
    profile = load_profile(DEFAULT_PROFILE)
    canonical = [name for name in variant_names() if get_variant(name).canonical]
    degenerate = []
    for task in selected_tasks(profile):
        task_cls = get_task(task)
        task_obj = task_cls(make_data_config(task_cls, profile["tasks"][task].get("data")))
        for name in canonical:
            spec = get_variant(name)
            if check_support(spec.capabilities, task_obj.requirements()) is not None:
                continue  # the pair is not run (an n/a record)
            cfg = job_config(profile, task, name)
            n, options = cfg["model"]["max_len"], cfg["variant_options"]
            why = spec.dense_reason(n, options)
            if why is not None:
                sparse_from = first_sparse_length(name, options, n)
                degenerate.append(
                    f"{name} × {task} (n = {n}, options {options}): {why}; "
                    f"not dense from n = {sparse_from} on"
                )
    assert not degenerate, "dense at the default profile's lengths:\n" + "\n".join(degenerate)


def test_the_check_can_fail() -> None:
    """The rule fires for a canonical variant at a short enough length."""
    assert get_variant("local").dense_reason(4, None) is not None
    assert get_variant("topk-8").dense_reason(8, None) is not None


ABLATIONS_PROFILE = DEFAULT_PROFILE.with_name("ablations.yaml")


def test_no_preset_is_dense_in_the_ablations_profile() -> None:
    """config/ablations.yaml runs presets beside their canonical variants at lengths where
    every one of them, presets included, is itself and not dense attention."""
    profile = load_profile(ABLATIONS_PROFILE)
    from attnbench.config import selected_variants

    degenerate = []
    for task in selected_tasks(profile):
        for name in selected_variants(profile):
            cfg = job_config(profile, task, name)
            why = get_variant(name).dense_reason(cfg["model"]["max_len"], cfg["variant_options"])
            if why is not None:
                degenerate.append(f"{name} × {task}: {why}")
    assert not degenerate, "dense in config/ablations.yaml:\n" + "\n".join(degenerate)


def test_the_ablations_profile_runs_every_preset_beside_its_canonical_variant() -> None:
    from attnbench.config import selected_variants

    selected = set(selected_variants(load_profile(ABLATIONS_PROFILE)))
    presets = [n for n in variant_names() if not get_variant(n).canonical]
    assert set(presets) <= selected, sorted(set(presets) - selected)
    assert {get_variant(n).preset_of for n in presets} <= selected
