"""The variant registry: registration, lookup, presets, option checks, discovery, support."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from torch import Tensor

from attnbench.attention import (
    VARIANTS,
    AttentionContext,
    AttentionDims,
    Capabilities,
    MultiHeadAttention,
    Requirements,
    VariantSpec,
    check_support,
    get_variant,
    register_preset,
    register_variant,
    variant_names,
)
from attnbench.registry import ModuleImportError, Registry, RegistryError, UnknownNameError


def fresh_registry() -> Registry[str]:
    # a package with no modules, a group nobody provides, an unset variable: nothing discovered
    return Registry("widget", "attnbench.variants", "attnbench.tests-none", "ATTNBENCH_TEST_NONE")


@pytest.fixture
def cleanup_variants() -> Iterator[list[str]]:
    """Names registered into the global VARIANTS during a test are removed afterwards."""
    variant_names()  # discover first, so that discovery does not run during the test
    before = set(VARIANTS._entries)
    added: list[str] = []
    try:
        yield added
    finally:
        for name in set(VARIANTS._entries) - before:
            VARIANTS._entries.pop(name, None)
            VARIANTS._origins.pop(name, None)


# ---------------------------------------------------------------------------------------
# Registration and lookup
# ---------------------------------------------------------------------------------------
def test_duplicate_registration_names_both_origins() -> None:
    reg = fresh_registry()
    reg.add("thing", "first", "pkg.first_module:10")
    with pytest.raises(RegistryError) as info:
        reg.add("thing", "second", "pkg.second_module:20")
    message = str(info.value)
    assert "'thing'" in message and "twice" in message
    assert "pkg.first_module:10" in message and "pkg.second_module:20" in message
    assert reg.get("thing") == "first"  # the first definition stays


def test_duplicate_variant_through_decorator(cleanup_variants: list[str]) -> None:
    with pytest.raises(RegistryError) as info:

        @register_variant("vanilla", paper="a copy")
        class Copy(MultiHeadAttention):
            pass

    message = str(info.value)
    assert "attnbench.variants.vanilla" in message  # the original
    assert __name__ in message  # this test module
    assert get_variant("vanilla").cls.__name__ == "Vanilla"


@pytest.mark.parametrize("bad", ["", " x", "a b", "a/b", "a\\b"])
def test_invalid_names_are_rejected(bad: str) -> None:
    with pytest.raises(RegistryError, match="invalid widget name"):
        fresh_registry().add(bad, "x", "here:1")


def test_unknown_name_lists_valid_choices() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_variant("no-such-variant")
    message = str(info.value)
    assert "no-such-variant" in message
    assert "valid choices" in message and "vanilla" in message
    assert not message.startswith(('"', "'"))  # not KeyError's quoted repr
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_registry_lookup_protocol() -> None:
    reg = fresh_registry()
    reg.add("b", "B", "here:1")
    reg.add("a", "A", "here:2")
    assert reg.names() == ["a", "b"]
    assert list(reg.items()) == [("a", "A"), ("b", "B")]
    assert "a" in reg and "c" not in reg
    assert len(reg) == 2
    assert reg.origin("b") == "here:1"
    with pytest.raises(UnknownNameError, match="valid choices: a, b"):
        reg.get("c")


def test_vanilla_is_registered_with_its_paper() -> None:
    assert "vanilla" in variant_names()
    spec = get_variant("vanilla")
    assert "Vaswani" in spec.paper
    assert VARIANTS.origin("vanilla").startswith("attnbench.variants.vanilla:")


# ---------------------------------------------------------------------------------------
# Options and presets
# ---------------------------------------------------------------------------------------
@dataclass
class TinyOptions:
    k: int = 4  # an int knob
    temperature: float = 1.0
    mode: str = "soft"
    cap: int | None = None


class Tiny(MultiHeadAttention):
    """A test variant with options."""

    Options = TinyOptions

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext
    ) -> tuple[Tensor, Tensor | None]:
        return v[..., : q.shape[-2], :], None


def tiny_spec(**defaults: object) -> VariantSpec:
    return VariantSpec("tiny", Tiny, "test", "", dict(defaults))


def test_options_defaults_and_overrides() -> None:
    spec = tiny_spec(k=8)
    assert spec.options() == TinyOptions(k=8)
    assert spec.options({"k": 2, "mode": "hard"}) == TinyOptions(k=2, mode="hard")
    assert spec.options({"temperature": 2}).temperature == 2  # an int is a fine float
    assert spec.options({"cap": None}).cap is None
    assert spec.options({"cap": 3}).cap == 3
    assert spec.resolved_options({"k": 1}) == {
        "k": 1,
        "temperature": 1.0,
        "mode": "soft",
        "cap": None,
    }


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        ({"k": "8"}, "k"),
        ({"k": 2.5}, "k"),
        ({"k": True}, "k"),
        ({"mode": 3}, "mode"),
        ({"temperature": "hot"}, "temperature"),
        ({"cap": "x"}, "cap"),
    ],
)
def test_options_reject_wrong_types(overrides: dict[str, object], option: str) -> None:
    with pytest.raises(ValueError, match=rf"option {option}=") as info:
        tiny_spec().options(overrides)
    assert "'tiny'" in str(info.value)


def test_options_reject_unknown_names_listing_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown option") as info:
        tiny_spec().options({"kk": 1})
    assert "kk" in str(info.value)
    assert "valid options: cap, k, mode, temperature" in str(info.value)


def test_build_passes_options_to_the_module() -> None:
    dims = AttentionDims(d_model=8, n_heads=2, head_dim=4, max_len=16)
    module = tiny_spec(k=3).build(dims, {"mode": "hard"})
    assert isinstance(module, Tiny)
    assert module.options == TinyOptions(k=3, mode="hard")
    assert module.dims is dims


def test_preset_of_vanilla(cleanup_variants: list[str]) -> None:
    spec = register_preset("vanilla-test-preset", "vanilla", summary="the same, renamed")
    assert "vanilla-test-preset" in variant_names()
    assert get_variant("vanilla-test-preset") is spec
    assert spec.cls is get_variant("vanilla").cls
    assert spec.paper == get_variant("vanilla").paper
    assert spec.resolved_options() == {}
    assert VARIANTS.origin("vanilla-test-preset").startswith(__name__ + ":")


def test_preset_of_vanilla_with_unknown_option(cleanup_variants: list[str]) -> None:
    with pytest.raises(ValueError, match=r"unknown option.*bogus.*valid options: \(none\)"):
        register_preset("vanilla-test-bad", "vanilla", bogus=1)
    assert "vanilla-test-bad" not in variant_names()


def test_presets_of_a_variant_with_options(cleanup_variants: list[str]) -> None:
    register_variant("tiny-test", paper="test")(Tiny)
    preset = register_preset("tiny-test-8", "tiny-test", k=8)
    assert preset.options() == TinyOptions(k=8)
    assert preset.options({"mode": "hard"}) == TinyOptions(k=8, mode="hard")
    with pytest.raises(ValueError, match="valid options: cap, k, mode, temperature"):
        register_preset("tiny-test-bad", "tiny-test", width=8)
    with pytest.raises(ValueError, match="option k="):
        register_preset("tiny-test-str", "tiny-test", k="8")
    with pytest.raises(RegistryError, match="not registered"):
        register_preset("orphan", "no-such-base")
    assert set(variant_names()) >= {"tiny-test", "tiny-test-8"}
    assert not {"tiny-test-bad", "tiny-test-str", "orphan"} & set(variant_names())


def test_register_variant_checks_class_and_defaults(cleanup_variants: list[str]) -> None:
    with pytest.raises(RegistryError, match="not a subclass of Attention"):
        register_variant("not-attention", paper="x")(int)
    with pytest.raises(ValueError, match="option k="):
        register_variant("tiny-bad-default", paper="x", k="eight")(Tiny)
    assert "tiny-bad-default" not in variant_names()


# ---------------------------------------------------------------------------------------
# Discovery (in subprocesses: discovery runs once per process)
# ---------------------------------------------------------------------------------------
TMP_VARIANT = '''
from attnbench.attention import register_variant
from attnbench.variants.vanilla import Vanilla


@register_variant("{name}", paper="test")
class Copy(Vanilla):
    """A copy of vanilla under another name."""
'''


def start_listing(
    extra_env: dict[str, str], cwd: Path, command: str = "variants"
) -> subprocess.Popen[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ATTNBENCH_VARIANT_PATH", "ATTNBENCH_TASK_PATH", "PYTHONPATH")
    }
    env.update(extra_env)
    return subprocess.Popen(
        [sys.executable, "-m", "attnbench.cli", command, "--json"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Listing:
    returncode: int
    stdout: str
    stderr: str

    def rows(self) -> dict[str, dict]:
        assert self.returncode == 0, self.stderr
        return {row["name"]: row for row in json.loads(self.stdout)}


# Modules that do not import, each in a directory of its own: (file, source, command).
BROKEN = {
    "broken": ("broken.py", "raise RuntimeError('broken plugin')\n", "variants"),
    "broken_syntax": ("syntax.py", "import os\n\ndef f(:\n    pass\n", "variants"),
    "broken_task": ("badtask.py", "import os\nimport attnbench_no_such_module\n", "tasks"),
}


@pytest.fixture(scope="module")
def listings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Listing]:
    """``attnbench variants --json`` (``tasks --json``) run several ways, concurrently
    (each imports torch)."""
    plugin_dir = tmp_path_factory.mktemp("variant_path")
    (plugin_dir / "tmpvariant.py").write_text(TMP_VARIANT.format(name="tmpvariant"))
    (plugin_dir / "_private.py").write_text(
        "raise RuntimeError('files starting with _ are skipped')\n"
    )

    ep_dir = tmp_path_factory.mktemp("entry_point")
    (ep_dir / "tmp_plugin.py").write_text(TMP_VARIANT.format(name="epvariant"))
    dist = ep_dir / "tmp_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tmp-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[attnbench.variants]\nepvariant = tmp_plugin\n")

    cwd = tmp_path_factory.mktemp("cwd")
    procs = {
        "plain": start_listing({}, cwd),
        "path": start_listing({"ATTNBENCH_VARIANT_PATH": str(plugin_dir)}, cwd),
        "entry_point": start_listing({"PYTHONPATH": str(ep_dir)}, cwd),
    }
    for case, (name, source, command) in BROKEN.items():
        broken_dir = tmp_path_factory.mktemp(case)
        (broken_dir / name).write_text(source)
        variable = "ATTNBENCH_TASK_PATH" if command == "tasks" else "ATTNBENCH_VARIANT_PATH"
        procs[case] = start_listing({variable: str(broken_dir)}, cwd, command)
    out = {}
    for case, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[case] = Listing(proc.returncode, stdout, stderr)
    return out


def test_discovery_through_variant_path(listings: dict[str, Listing]) -> None:
    rows = listings["path"].rows()
    assert "tmpvariant" in rows and "vanilla" in rows
    assert rows["tmpvariant"]["defined_in"].startswith("_attnbench_plugin_variant_tmpvariant:")
    assert rows["tmpvariant"]["capabilities"] == rows["vanilla"]["capabilities"]
    assert rows["tmpvariant"]["summary"] == "A copy of vanilla under another name."


def test_without_the_variant_path_it_is_not_listed(listings: dict[str, Listing]) -> None:
    rows = listings["plain"].rows()
    assert "vanilla" in rows
    assert "tmpvariant" not in rows
    assert "epvariant" not in rows


def test_discovery_through_entry_point(listings: dict[str, Listing]) -> None:
    rows = listings["entry_point"].rows()
    assert "epvariant" in rows and "vanilla" in rows
    assert rows["epvariant"]["defined_in"].startswith("tmp_plugin:")
    assert "tmpvariant" not in rows


@pytest.mark.parametrize(
    ("case", "kind", "cause"),
    [
        ("broken", "variant", r"RuntimeError line 1: broken plugin"),
        ("broken_syntax", "variant", r"SyntaxError line 3: \S.*"),
        (
            "broken_task",
            "task",
            r"ModuleNotFoundError line 2: No module named "
            r"'attnbench_no_such_module'",
        ),
    ],
)
def test_module_that_does_not_import_is_a_one_line_error(
    listings: dict[str, Listing], case: str, kind: str, cause: str
) -> None:
    """A plugin that does not import is an error, not a silently missing variant or task:
    exit 2 and one line naming the file and the cause, no traceback."""
    listing = listings[case]
    assert listing.returncode == 2, listing.stderr
    assert listing.stdout == ""
    assert "Traceback" not in listing.stderr
    lines = listing.stderr.splitlines()
    assert len(lines) == 1, listing.stderr
    prefix = f"attnbench: error: cannot import {kind} module "
    assert lines[0].startswith(prefix), lines[0]
    path, _, rest = lines[0].removeprefix(prefix).partition(".py: ")
    assert Path(path + ".py").is_absolute() and Path(path + ".py").name == BROKEN[case][0]
    assert Path(path + ".py").is_file()
    assert re.fullmatch(cause, rest), rest


def test_import_error_names_the_file_line_and_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "bad.py"
    file.write_text("x = 1\n\nraise RuntimeError('first line\\nsecond line')\n")
    monkeypatch.setenv("ATTNBENCH_TEST_NONE", str(tmp_path))
    reg = fresh_registry()
    for _ in range(2):  # discovery is tried again on the next lookup, and fails alike
        with pytest.raises(ModuleImportError) as info:
            reg.names()
        assert str(info.value) == (
            f"cannot import widget module {file.resolve()}: RuntimeError line 3: first line"
        )
        assert isinstance(info.value, RegistryError) and isinstance(info.value, ValueError)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert "_attnbench_plugin_widget_bad" not in sys.modules

    file.write_text("x = 1\n")  # fixed: discovery goes through
    assert reg.names() == []


def test_syntax_error_in_a_module_it_imports_names_both_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper = tmp_path / "helpers" / "widget_helper_with_syntax_error.py"
    helper.parent.mkdir()
    helper.write_text("ok = 1\ndef f(:\n")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "uses_helper.py").write_text("import widget_helper_with_syntax_error\n")
    monkeypatch.syspath_prepend(str(helper.parent))
    monkeypatch.setenv("ATTNBENCH_TEST_NONE", str(tmp_path / "plugins"))
    with pytest.raises(ModuleImportError) as info:
        fresh_registry().names()
    assert re.fullmatch(
        rf"cannot import widget module {re.escape(str(tmp_path.resolve()))}/plugins/"
        rf"uses_helper.py: SyntaxError in \S*widget_helper_with_syntax_error.py line 2: \S.*",
        str(info.value),
    ), str(info.value)


# ---------------------------------------------------------------------------------------
# Variant × task support
# ---------------------------------------------------------------------------------------
def test_check_support_causal() -> None:
    reason = check_support(Capabilities(causal=False), Requirements(causal=True))
    assert reason is not None and "causal" in reason
    assert check_support(Capabilities(causal=False), Requirements(causal=False)) is None


def test_check_support_max_length() -> None:
    caps = Capabilities(max_length=128)
    reason = check_support(caps, Requirements(max_len=129))
    assert reason is not None and "129" in reason and "128" in reason
    assert check_support(caps, Requirements(max_len=128)) is None
    assert check_support(Capabilities(), Requirements(max_len=10**6)) is None  # no limit


@pytest.mark.parametrize(
    ("caps", "req", "word"),
    [
        (Capabilities(cross_attention=False), Requirements(cross_attention=True), "cross"),
        (Capabilities(padding_mask=False), Requirements(padding_mask=True), "padding"),
        (Capabilities(variable_length=False), Requirements(variable_length=True), "variable"),
    ],
)
def test_check_support_other_requirements(caps: Capabilities, req: Requirements, word: str) -> None:
    reason = check_support(caps, req)
    assert reason is not None and word in reason


def test_check_support_all_ok() -> None:
    req = Requirements(
        causal=True, cross_attention=True, padding_mask=True, variable_length=True, max_len=4096
    )
    assert check_support(Capabilities(), req) is None
    assert check_support(get_variant("vanilla").capabilities, req) is None


def test_no_two_registered_names_run_the_same_setting() -> None:
    """A preset that repeats another name's class and options would run twice for nothing."""
    from attnbench.attention import VARIANTS

    seen: dict[tuple, str] = {}
    for name, spec in VARIANTS.items():
        key = (spec.cls, repr(sorted(spec.resolved_options().items())))
        assert key not in seen, f"{name!r} repeats {seen[key]!r}"
        seen[key] = name
