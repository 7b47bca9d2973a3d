"""Weight decay skips the structural parameters a variant declares (``decay_exempt``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnbench.attention import VARIANTS, AttentionDims, get_variant
from attnbench.model import ModelConfig, SequenceClassifier
from attnbench.train import TrainConfig, decay_exempt_parameters, make_optimizer


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    # 4 heads: every preset runs (longformer-dilated lists 4 dilations)
    cfg = ModelConfig(d_model=16, n_heads=4, n_layers=1, d_ff=32, max_len=12)
    spec = get_variant(name)
    return SequenceClassifier(10, 2, cfg, spec, spec.resolved_options())


@pytest.mark.parametrize("name", VARIANTS.names())
def test_a_zero_gradient_step_leaves_exempt_parameters_and_decays_the_rest(name: str) -> None:
    model = _model(name)
    optimizer = make_optimizer(model, TrainConfig(lr=0.1, weight_decay=0.5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    exempt = decay_exempt_parameters(model)
    for n, p in model.named_parameters():
        if id(p) in exempt or p.ndim < 2:
            assert torch.equal(p, before[n]), f"{name}: {n} changed without a gradient"
        else:
            assert not torch.equal(p, before[n]), f"{name}: {n} (a matrix) was not decayed"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("transformer-xl", {"u", "v"}),
        ("talking-heads", {"logits_mix", "weights_mix"}),
        ("synthesizer-random", {"r"}),
        ("synthesizer-random-k8", {"r1", "r2"}),
        ("synthesizer-random-fixed", set()),  # R is a buffer there: nothing to train
        ("sparsebert-dam", {"mask_logits"}),
        ("tupe", {"theta"}),
        ("tupe-r", {"theta", "weight"}),  # θ and the TUPE-R bucket embedding
    ],
)
def test_declared_structural_parameters_are_found(name: str, expected: set[str]) -> None:
    model = _model(name)
    exempt = decay_exempt_parameters(model)
    found = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if id(p) in exempt}
    assert found == expected


def test_every_declared_name_is_an_attribute_of_its_module() -> None:
    """A misspelt name would silently exempt nothing: every declared name must exist."""
    dims = AttentionDims(d_model=16, n_heads=4, head_dim=4, max_len=12)
    for name, spec in VARIANTS.items():
        module = spec.build(dims)
        for sub in module.modules():
            for attr in getattr(sub, "decay_exempt", ()):
                assert hasattr(sub, attr), f"{name}: {type(sub).__name__} has no {attr!r}"
