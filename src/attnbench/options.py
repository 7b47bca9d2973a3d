"""Build a knobs dataclass (variant options, task data settings) from untyped profile values.

Profiles are YAML, so values arrive untyped; this checks names and types against the
dataclass's annotations and raises a one-line ``ValueError`` naming the valid keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "None": lambda v: v is None,
}


def matches_type(value: Any, annotation: Any) -> bool:
    """Loose runtime check of ``value`` against a simple annotation (``int | None`` etc.).

    Annotations other than unions of int/float/bool/str/None are not interpreted
    (the dataclass itself validates those).
    """
    if isinstance(annotation, str):
        text = annotation
    elif isinstance(annotation, type):
        text = annotation.__name__
    else:
        text = str(annotation).replace("NoneType", "None")
    allowed = {part.strip() for part in text.split("|")}
    if not allowed <= set(_CHECKS):
        return True
    return any(_CHECKS[a](value) for a in allowed)


def build_options(cls: type, values: dict[str, Any] | None, where: str, noun: str = "key") -> Any:
    """``cls(**values)`` after checking every name and type.

    ``where`` prefixes messages; ``noun`` names the entries ("key", "option").
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown {noun}(s) {', '.join(unknown)}; "
            f"valid {noun}s: {', '.join(sorted(fields)) or '(none)'}"
        )
    for key, value in values.items():
        if not matches_type(value, fields[key].type):
            raise ValueError(
                f"{where}: {noun} {key}={value!r} should be of type {fields[key].type}"
            )
    try:
        return cls(**values)
    except TypeError as exc:  # a __post_init__ comparing a value of a type we do not check
        raise ValueError(f"{where}: {exc}") from None
