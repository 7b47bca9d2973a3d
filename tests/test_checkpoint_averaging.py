"""Checkpoint averaging (``train.average_checkpoints``): the tested model is the mean of the
last k evaluation checkpoints' parameters; with k = 1 nothing changes (the best
validation checkpoint is tested, and the record says nothing new)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from attnbench.attention import get_variant
from attnbench.model import ModelConfig
from attnbench.tasks.base import get_task, make_data_config
from attnbench.train import TrainConfig, average_state_dicts, train

DATA = {"n_train": 48, "n_val": 16, "n_test": 16, "min_length": 4, "max_length": 24}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("listops")
    cls = get_task("listops")
    cls(make_data_config(cls, DATA)).prepare(out)
    return out


def _run(data_dir: Path, **train_cfg: Any) -> tuple[Any, Any, Any, list[tuple[str, dict]]]:
    """Train a tiny model on ListOps, recording the parameters at every evaluation."""
    cls = get_task("listops")
    task = cls(make_data_config(cls, DATA))
    task.load(data_dir)
    seen: list[tuple[str, dict]] = []
    evaluate = task.evaluate

    def spy(model, split, *args, **kwargs):
        seen.append((split, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return evaluate(model, split, *args, **kwargs)

    task.evaluate = spy  # the trainer evaluates through the task object
    cfg = TrainConfig(
        **({"steps": 8, "eval_every": 2, "warmup_steps": 1, "batch_size": 8} | train_cfg)
    )
    torch.manual_seed(0)
    mcfg = ModelConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=task.max_len())
    model = task.build_model(mcfg, get_variant("vanilla"), {})
    result = train(task, model, cfg, seed=0, device=torch.device("cpu"), progress=False)
    return task, model, result, seen


def test_average_is_the_elementwise_mean_and_one_state_is_unchanged() -> None:
    gen = torch.Generator().manual_seed(0)
    states = [
        {
            "w": torch.randn(3, 4, generator=gen),
            "b": torch.randn(4, generator=gen).to(torch.bfloat16),
            "steps": torch.tensor([i]),  # an integer buffer: taken from the last state
        }
        for i in range(3)
    ]
    mean = average_state_dicts(states)
    assert torch.allclose(mean["w"], (states[0]["w"] + states[1]["w"] + states[2]["w"]) / 3)
    assert mean["b"].dtype == torch.bfloat16
    expected_b = torch.stack([s["b"].double() for s in states]).mean(0).to(torch.bfloat16)
    assert torch.equal(mean["b"], expected_b)
    assert torch.equal(mean["steps"], torch.tensor([2]))
    one = average_state_dicts(states[:1])
    assert all(torch.equal(one[k], states[0][k]) for k in states[0])
    with pytest.raises(ValueError, match="at least one"):
        average_state_dicts([])


def test_the_tested_model_is_the_mean_of_the_last_k_evaluation_checkpoints(
    listops_dir: Path,
) -> None:
    task, model, result, seen = _run(listops_dir, average_checkpoints=3)
    during = [state for split, state in seen[:4]]  # the evaluations at steps 2, 4, 6, 8
    assert [split for split, _ in seen] == ["val"] * 5 + ["test"]  # + the average's val
    final = model.state_dict()
    for key, value in final.items():
        if torch.is_floating_point(value):
            mean = torch.stack([s[key] for s in during[1:]]).mean(0)
            assert torch.allclose(value, mean, atol=1e-6), key
    tested = seen[-1][1]  # the parameters the test split was evaluated with
    assert all(torch.equal(tested[k], final[k]) for k in final)
    info = result.test_evaluation.info
    assert info["averaged_steps"] == [4, 6, 8] and info["average_checkpoints"] == 3
    assert info["checkpoint"] == "average of the last 3 evaluation checkpoints"
    assert 2 <= info["best_validation_step"] <= 8
    assert result.best_step == 8  # the newest averaged checkpoint
    # the validation metrics reported are the averaged model's
    assert result.val == task.evaluate(model, "val", 128, torch.device("cpu")).metrics


def test_with_k_equal_one_nothing_changes(listops_dir: Path) -> None:
    _, model, result, seen = _run(listops_dir, average_checkpoints=1)
    _, default_model, default, _ = _run(listops_dir)
    assert [split for split, _ in seen] == ["val"] * 4 + ["test"]  # no extra evaluation
    best = seen[result.best_step // 2 - 1][1]  # the best validation checkpoint ...
    final = model.state_dict()
    assert all(torch.equal(final[k], best[k]) for k in final)  # ... is the one tested
    assert result.test_evaluation.info == {}  # and the record says nothing new
    assert result.test == default.test and result.best_step == default.best_step
    assert all(torch.equal(final[k], default_model.state_dict()[k]) for k in final)


def test_average_checkpoints_must_be_positive() -> None:
    with pytest.raises(ValueError, match="average_checkpoints"):
        TrainConfig(average_checkpoints=0)
