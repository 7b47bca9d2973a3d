"""scripts/bench_backbone.py compares like with like: its reference model, given the
weights of attnbench's SequenceClassifier, computes the same logits (so the timing
ratio measures overhead, not a different model), and the script runs end to end.
No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from attnbench.attention import get_variant
from attnbench.model import ModelConfig

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_backbone.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[object]:
    spec = importlib.util.spec_from_file_location("bench_backbone", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_backbone"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_backbone"]


def _copy_weights(ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    """attnbench's parameter names → the reference's."""
    enc = ours.encoder
    with torch.no_grad():
        ref.tokens.weight.copy_(enc.embed.tokens.weight)
        ref.positions.weight.copy_(enc.embed.positions.weight)
        for layer, block in zip(enc.stack.layers, ref.blocks, strict=True):
            attn = layer.self_attn
            pairs = [
                (attn.q_proj, block.q),
                (attn.k_proj, block.k),
                (attn.v_proj, block.v),
                (attn.out_proj, block.o),
                (layer.norm1, block.norm1),
                (layer.norm3, block.norm2),
                (layer.ff.fc1, block.fc1),
                (layer.ff.fc2, block.fc2),
            ]
            for src, dst in pairs:
                dst.load_state_dict(src.state_dict())
        ref.norm.load_state_dict(enc.stack.final_norm.state_dict())
        ref.head.load_state_dict(ours.classifier.state_dict())


@pytest.mark.parametrize("variant", ["vanilla", "fused"])
@pytest.mark.parametrize("padded", [False, True])
def test_reference_model_computes_what_the_task_model_computes(
    bench: object, variant: str, padded: bool
) -> None:
    cfg = ModelConfig(d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0, max_len=24)
    torch.manual_seed(0)
    ours = bench._Synthetic(24).build_model(cfg, get_variant(variant), {}).double().eval()
    ref = bench.ReferenceClassifier(cfg, bench.VOCAB, bench.CLASSES).double().eval()
    _copy_weights(ours, ref)
    batch = bench.synthetic_batch(5, 24, padded, seed=3)
    if padded:
        assert not batch.inputs["key_padding"].all()
    with torch.no_grad():
        want = ours(**batch.inputs).logits
        got = ref(**batch.inputs)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    # the reference is not trivially equal: other weights give other logits
    with torch.no_grad():
        ref.blocks[0].q.weight.mul_(2.0)
        assert (ref(**batch.inputs) - want).abs().max() > 1e-4


def test_script_runs_and_reports_one_ratio_per_model(
    bench: object, capsys: pytest.CaptureFixture[str]
) -> None:
    threads = torch.get_num_threads()
    try:
        args = ["--variant", "vanilla", "--repeats", "2", "--warmup", "1", "--length", "16"]
        assert bench.main([*args, "--batch", "2", "--padding", "--dropout", "0.1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(("reference", "vanilla"))]
    assert [r[0] for r in rows] == ["reference", "vanilla"] and rows[0][2] == "1.00"
    assert float(rows[1][2]) > 0
