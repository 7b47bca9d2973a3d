"""Name → definition registries, filled by importing modules, never by editing a list.

Two registries use this: attention variants (:mod:`attnbench.variants`) and
tasks (:mod:`attnbench.tasks`). Each is filled from three places, in order:

1. every module inside the package (``attnbench/variants/*.py``) — found with
   :func:`pkgutil.iter_modules`, so a new file is picked up with no other edit;
2. modules named by the entry-point group (``attnbench.variants`` /
   ``attnbench.tasks``) of any installed distribution — for third-party packages;
3. ``*.py`` files in the directories listed in an environment variable
   (``ATTNBENCH_VARIANT_PATH`` / ``ATTNBENCH_TASK_PATH``, ``os.pathsep``-separated)
   — for a variant kept outside any package.

Registering the same name twice is an error that names both definitions.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """A registry lookup or registration failed; the message names the valid choices."""


class UnknownNameError(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0])


class Registry(Generic[T]):
    """A name → entry mapping that discovers its entries lazily on first use."""

    def __init__(self, kind: str, package: str, entry_point_group: str, path_env: str) -> None:
        self.kind = kind  # "variant" or "task", used in messages
        self.package = package
        self.entry_point_group = entry_point_group
        self.path_env = path_env
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._discovered = False
        self._discovering = False

    # -- registration -------------------------------------------------------------
    def add(self, name: str, entry: T, origin: str) -> T:
        if not name or name != name.strip() or any(c in name for c in " /\\\t"):
            raise RegistryError(f"invalid {self.kind} name {name!r}: use letters, digits, - and _")
        if name in self._entries:
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice: "
                f"in {self._origins[name]} and in {origin}"
            )
        self._entries[name] = entry
        self._origins[name] = origin
        return entry

    # -- lookup ---------------------------------------------------------------------
    def get(self, name: str) -> T:
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self._entries[name]

    def origin(self, name: str) -> str:
        self.discover()
        return self._origins[name]

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

    def __len__(self) -> int:
        self.discover()
        return len(self._entries)

    # -- discovery ------------------------------------------------------------------
    def discover(self) -> None:
        """Import every module that can register entries (once)."""
        if self._discovered or self._discovering:
            return
        self._discovering = True
        try:
            package = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{info.name}")
            for ep in importlib.metadata.entry_points(group=self.entry_point_group):
                try:
                    ep.load()
                except Exception as exc:
                    raise RegistryError(
                        f"entry point {ep.name!r} ({ep.value}) of group "
                        f"{self.entry_point_group!r} failed to import: {exc}"
                    ) from exc
            for directory in filter(None, os.environ.get(self.path_env, "").split(os.pathsep)):
                for file in sorted(Path(directory).glob("*.py")):
                    if not file.name.startswith("_"):
                        _import_file(file, f"_attnbench_plugin_{self.kind}_{file.stem}")
            self._discovered = True
        finally:
            self._discovering = False


def _import_file(file: Path, module_name: str) -> None:
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise RegistryError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[module_name]
        raise


def caller_origin(depth: int = 2) -> str:
    """``module:line`` of the code that called the registering function (for messages)."""
    frame = sys._getframe(depth)
    return f"{frame.f_globals.get('__name__', '?')}:{frame.f_lineno}"
