"""The import layers of the package, checked on the source and in fresh interpreters.

Lowest first, a module may import its own layer and the layers listed as below it:

- ``foundation``: records, options, the registry, provenance, text, metrics, n-grams,
  batching, trivial baselines, the bench grid settings, GPU slots, data readers;
- ``reporting``: significance, verdicts, the leaderboard, figures, the report — built
  from records alone, so beside the training stack and free of torch;
- ``model``: the attention interface, the variants, the shared model, decoding;
- ``tasks``: the tasks, the trainer, distributed helpers;
- ``assembly``: profile resolution (``config``) and the one assembly path (``job``);
- ``jobs``: the job runner, head ablation, the efficiency sweep;
- ``interface``: the command line.

An import that breaks this (or any import cycle, function-local imports included) fails
here with the module and the import named, so a new module has to say where it belongs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": (
        "attnbench.records",
        "attnbench.options",
        "attnbench.registry",
        "attnbench.provenance",
        "attnbench.text",
        "attnbench.metrics",
        "attnbench.ngram",
        "attnbench.batching",
        "attnbench.baselines",
        "attnbench.config_bench",
        "attnbench.gpu_slots",
        "attnbench.tuning",
        "attnbench.data",
    ),
    "reporting": (
        "attnbench.capacity",
        "attnbench.significance",
        "attnbench.verdicts",
        "attnbench.leaderboard",
        "attnbench.figures",
        "attnbench.report",
    ),
    "model": (
        "attnbench.attention",
        "attnbench.variants",
        "attnbench.model",
        "attnbench.blocksparse",
        "attnbench.decoding",
    ),
    "tasks": ("attnbench.tasks", "attnbench.train", "attnbench.distributed"),
    "assembly": ("attnbench.config", "attnbench.job"),
    "jobs": ("attnbench.runner", "attnbench.ablation", "attnbench.bench", "attnbench.datacheck"),
    "interface": ("attnbench.cli",),
}
TRAINING_STACK = ("foundation", "model", "tasks", "assembly", "jobs")
ALLOWED: dict[str, set[str]] = {
    "foundation": {"foundation"},
    "reporting": {"foundation", "reporting"},
    **{layer: set(TRAINING_STACK[: i + 1]) for i, layer in enumerate(TRAINING_STACK)},
    "interface": set(LAYERS),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "attnbench").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The attnbench module that ``name`` (a module or a name inside one) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name if name.startswith("attnbench") else None


def imports_of(module: str) -> dict[str, int]:
    """{imported attnbench module: line} of every import in ``module``, however nested."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names = [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.setdefault(target, node.lineno)
    return found


def layer_of(module: str) -> str:
    for layer, prefixes in LAYERS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    raise AssertionError(
        f"{module} belongs to no layer: add it to LAYERS in tests/test_layers.py "
        "(and keep its imports within the layers below it)"
    )


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        if module != "attnbench":
            layer_of(module)


def violations(module: str, imports: dict[str, int]) -> list[str]:
    """One line per import of ``module`` that reaches above its layer."""
    layer = layer_of(module)
    return [
        f"{MODULES[module]}:{line}: {module} ({layer}) imports {target} "
        f"({layer_of(target)}); {layer} may import only {sorted(ALLOWED[layer])}"
        for target, line in imports.items()
        if layer_of(target) not in ALLOWED[layer]
    ]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (its nodes in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])) is not None:
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])) is not None:
            return cycle
    return None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "attnbench"))
def test_imports_stay_within_the_layers_below(module: str) -> None:
    problems = violations(module, imports_of(module))
    assert not problems, "\n".join(problems)


def test_no_import_cycles_even_through_function_local_imports() -> None:
    cycle = find_cycle({m: set(imports_of(m)) for m in MODULES})
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_checks_catch_what_they_guard_against() -> None:
    """Not vacuous: an upward import and a cycle are reported, real edges are seen."""
    assert "attnbench.job" in imports_of("attnbench.runner")
    assert violations("attnbench.tasks.base", {"attnbench.runner": 7})
    assert violations("attnbench.leaderboard.table", {"attnbench.tasks.base": 3})
    assert not violations("attnbench.runner", {"attnbench.tasks.base": 1})
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize(
    ("module", "must_not_load"),
    [
        ("attnbench.report", ("torch", "attnbench.runner", "attnbench.tasks.base")),
        ("attnbench.records", ("torch", "numpy")),
        ("attnbench.config", ("attnbench.bench", "attnbench.runner", "attnbench.job")),
        ("attnbench.tasks.base", ("attnbench.config", "attnbench.job", "attnbench.runner")),
        ("attnbench.job", ("attnbench.runner", "attnbench.bench", "attnbench.leaderboard")),
        ("attnbench.runner", ("attnbench.bench", "attnbench.leaderboard")),
    ],
)
def test_a_layer_imported_alone_loads_nothing_above_it(module: str, must_not_load) -> None:
    code = (
        f"import sys, {module}\n"
        f"print(' '.join(m for m in {list(must_not_load)!r} if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert proc.stdout.strip() == "", f"importing {module} loads {proc.stdout.strip()}"
