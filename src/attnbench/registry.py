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

Registering the same name twice is an error that names both definitions. A module that
fails to import (a syntax error, a missing dependency, any exception it raises) is a
:class:`ModuleImportError` whose one-line message names the file and the cause.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """A registry lookup or registration failed; the message names the valid choices."""


class UnknownNameError(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0])


class ModuleImportError(RegistryError):
    """A module that could register entries failed to import.

    The message is one line, e.g. ``cannot import variant module /abs/x.py: SyntaxError
    line 1: invalid syntax``; the original exception is the ``__cause__``.
    """

    def __init__(self, kind: str, module: str, exc: BaseException) -> None:
        self.kind = kind
        self.module = module  # the file's absolute path, or the module's name if unknown
        super().__init__(
            f"cannot import {kind} module {module}: {describe_import_error(exc, module)}"
        )


def describe_import_error(exc: BaseException, file: str | None = None) -> str:
    """``Type line N: first line of the message`` for an exception raised by an import.

    The line is the SyntaxError's own, or for any other exception the last line of
    ``file`` in the traceback (omitted when unknown); a SyntaxError in another file than
    ``file`` names that file too.
    """
    where = ""
    if isinstance(exc, SyntaxError):
        message = exc.msg or ""
        if exc.filename and file and _same_file(exc.filename, file) is False:
            where += f" in {exc.filename}"
        if exc.lineno:
            where += f" line {exc.lineno}"
    else:
        message = str(exc)
        if file:
            lines = [
                frame.lineno
                for frame in traceback.extract_tb(exc.__traceback__)
                if _same_file(frame.filename, file)
            ]
            if lines and lines[-1] is not None:
                where = f" line {lines[-1]}"
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}{where}" + (f": {first}" if first else "")


def _same_file(a: str, b: str) -> bool | None:
    """Whether two paths name one file (None when either is not a real path)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return None


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
        """Import every module that can register entries (once).

        A module that fails to import raises :class:`ModuleImportError` (one line: the
        file and the cause); discovery is tried again on the next lookup.
        """
        if self._discovered or self._discovering:
            return
        self._discovering = True
        try:
            package = self._import(self.package, lambda: importlib.import_module(self.package))
            for info in pkgutil.iter_modules(package.__path__):
                if not info.name.startswith("_"):
                    name = f"{self.package}.{info.name}"
                    self._import(name, lambda name=name: importlib.import_module(name))
            for ep in importlib.metadata.entry_points(group=self.entry_point_group):
                self._import(ep.module, ep.load)
            for directory in filter(None, os.environ.get(self.path_env, "").split(os.pathsep)):
                for file in sorted(Path(directory).glob("*.py")):
                    if not file.name.startswith("_"):
                        module_name = f"_attnbench_plugin_{self.kind}_{file.stem}"
                        self._import(
                            str(file.resolve()), lambda f=file, m=module_name: _import_file(f, m)
                        )
            self._discovered = True
        finally:
            self._discovering = False

    def _import(self, module: str, load: Callable[[], Any]) -> Any:
        """``load()``, turning any exception into a one-line :class:`ModuleImportError`
        naming ``module``'s file (``module``: a module name or a file path)."""
        try:
            return load()
        except ModuleImportError:
            raise  # from a nested discovery: it names the module at fault already
        except Exception as exc:
            raise ModuleImportError(self.kind, _module_file(module), exc) from exc


def _module_file(module: str) -> str:
    """The absolute path of a module's file, given its name or path (its name if unknown)."""
    if os.path.isabs(module):
        return module
    try:
        spec = importlib.util.find_spec(module)
    except Exception:  # its parent package does not import, say
        spec = None
    if spec is not None and spec.origin and os.path.isfile(spec.origin):
        return str(Path(spec.origin).resolve())
    return module


def _import_file(file: Path, module_name: str) -> None:
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ImportError("no loader for this file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise


def caller_origin(depth: int = 2) -> str:
    """``module:line`` of the code that called the registering function (for messages)."""
    frame = sys._getframe(depth)
    return f"{frame.f_globals.get('__name__', '?')}:{frame.f_lineno}"
