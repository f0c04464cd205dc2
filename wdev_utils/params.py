"""Checks of notebook parameters: unknown or ill-typed values stop a notebook at once."""
from __future__ import annotations

import types
import typing

from .errors import ConfigError


def _type_name(spec) -> str:
    return getattr(spec, "__name__", None) if typing.get_origin(spec) is None else str(spec).replace("typing.", "")


def _matches(value, spec) -> bool:
    origin = typing.get_origin(spec)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, s) for s in typing.get_args(spec))
    if spec is type(None) or spec is None:
        return value is None
    if origin in (list, tuple):
        (item,) = typing.get_args(spec)[:1] or (object,)
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if spec is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, spec)


def check_parameters(namespace: dict, before: set, schema: dict) -> dict:
    """Validate a notebook's parameters against `schema` and return them as a dict.

    `namespace` is the notebook's globals() after papermill's injection, `before`
    the set of global names that existed before the parameters cell, and `schema`
    maps each declared parameter to its type (e.g. ``{"widths": list[int]}``).
    """
    unknown = sorted(n for n in namespace if n not in before and n not in schema and not n.startswith("_"))
    problems = [f"unknown parameter {n!r} (this notebook takes: {', '.join(schema)})" for n in unknown]
    missing = [n for n in schema if n not in namespace]
    problems += [f"parameter {n!r} is not defined: keep it in the parameters cell" for n in missing]
    for name, spec in schema.items():
        if name in namespace and not _matches(namespace[name], spec):
            value = namespace[name]
            problems.append(
                f"parameter {name!r} must be {_type_name(spec)}, got {type(value).__name__} {value!r}"
            )
    if problems:
        raise ConfigError("bad notebook parameters:\n  " + "\n  ".join(problems))
    return {n: namespace[n] for n in schema}
