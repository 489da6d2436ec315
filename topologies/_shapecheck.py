"""Type checks of spec objects against their annotations, for validation's last word.

Validation checks what a topology means; it assumes each field holds the kind of value
its annotation says. When a field holds something else (a list for a tuple, a dict for a
name), validation falls back on these checks, which name every such field with its path
and the kind of value it needs, so a malformed spec still gets tether's own error.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal, Union, get_args, get_origin

CHECKED_MODULES = ("tether.topologies.", "tether.agents.model")
"""Dataclasses from these modules are checked field by field; others only by class."""


def type_problems(value: Any, annotation: Any, path: str) -> list[str]:
    """Where ``value`` does not have the type ``annotation`` says, each with its path."""
    if _fits(value, annotation):
        if dataclasses.is_dataclass(value) and _checked(type(value)):
            return _fields(value, path)
        if isinstance(value, tuple) and get_origin(annotation) is tuple:
            item = get_args(annotation)[0] if get_args(annotation) else Any
            return [x for i, v in enumerate(value) for x in type_problems(v, item, f"{path}[{i}]")]
        return []
    return [f"{path}: must be {describe(annotation)}, got {_shown(value)}"]


def _fields(value: Any, path: str) -> list[str]:
    hints = typing.get_type_hints(type(value))
    return [
        p
        for f in dataclasses.fields(value)
        if f.name in hints
        for p in type_problems(getattr(value, f.name), hints[f.name], f"{path}.{f.name}")
    ]


def _fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is of the kind ``annotation`` names (one level deep)."""
    origin = get_origin(annotation)
    if annotation is Any:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in get_args(annotation))
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(annotation))
    if origin is tuple:
        return isinstance(value, tuple)
    if origin is dict:
        return isinstance(value, dict)
    if origin is type:
        return isinstance(value, type)
    if origin is Callable or annotation is Callable:
        return callable(value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is Decimal:
        return isinstance(value, Decimal | int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        try:
            return isinstance(value, annotation)
        except TypeError:
            return True  # (a protocol that cannot be checked at run time)
    return True  # an annotation this check does not know: validation decides


def describe(annotation: Any) -> str:
    """An annotation in words: ``a tuple of Grant``, ``a str or None``."""
    origin = get_origin(annotation)
    if annotation is None or annotation is type(None):
        return "None"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if origin is tuple:
        args = get_args(annotation)
        return f"a tuple of {describe(args[0])}" if args else "a tuple"
    if origin is Callable or annotation is Callable:
        return "a function"
    if origin is dict:
        return "a dict"
    name = getattr(annotation, "__name__", str(annotation))
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _checked(cls: type) -> bool:
    return cls.__module__.startswith(CHECKED_MODULES)


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"
