"""Typed parameters for methods and solvers: dataclasses filled from ``key=value`` strings
(the command line) or Python values, both checked against the declared types."""

from __future__ import annotations

import dataclasses
import numbers
import os
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from selectkit.errors import ParamError


@dataclasses.dataclass(frozen=True)
class NoParams:
    """For methods and solvers that take no parameters."""


def parse_assignments(pairs: Iterable[str]) -> dict[str, str]:
    """``["buckets=10000", "ngrams=2"]`` -> ``{"buckets": "10000", "ngrams": "2"}``."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"parameter '{pair}' must be written key=value")
        result[key.strip()] = value.strip()
    return result


def build_params(params_cls: type, values: Mapping[str, Any], owner: str) -> Any:
    """Instantiate ``params_cls`` from values: strings are converted to the declared types
    (``"10"`` for an int), other values are checked against them the same way (an int is not
    a bool, a float field takes an int, a Literal takes one of its values, a tuple field takes
    a list or tuple of the right items, Optional takes None).

    ``owner`` names the method or solver in error messages.
    """
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ParamError(f"{owner} has no parameter {unknown}; its parameters are: {known}")
    hints = typing.get_type_hints(params_cls)
    converted = {}
    for key, value in values.items():
        converted[key] = _convert(value, hints[key], f"{owner} parameter '{key}'")
    try:
        return params_cls(**converted)
    except (TypeError, ValueError, ParamError) as exc:
        raise ParamError(f"{owner}: {exc}") from None


def describe_params(params_cls: type) -> list[dict[str, Any]]:
    """Name, type, default and help of each parameter, for listings and docs."""
    hints = typing.get_type_hints(params_cls)
    rows = []
    for f in dataclasses.fields(params_cls):
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        rows.append(
            {
                "name": f.name,
                "type": _type_name(hints[f.name]),
                "choices": choices(hints[f.name]),
                "default": None if default is dataclasses.MISSING else default,
                "help": f.metadata.get("help", ""),
            }
        )
    return rows


def choices(tp: Any) -> list[Any] | None:
    """The values a ``Literal`` (or optional ``Literal``) type allows, else None."""
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [choices(arg) for arg in typing.get_args(tp) if arg is not type(None)]
        if len(inner) == 1 and inner[0] is not None:
            return inner[0]
    return None


def params_to_dict(params: Any) -> dict[str, Any]:
    return dataclasses.asdict(params)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is None and isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, label: str) -> Any:
    if not isinstance(value, str):
        return _check(value, tp, label)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and value.lower() in ("none", "null", ""):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, label)
            except ParamError:
                continue
        raise ParamError(f"{label}: cannot read '{value}' as {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ParamError(f"{label} must be one of {list(args)}, not '{value}'")
    if origin in (tuple, list):
        inner = args[0] if args else str
        items = [_convert(v.strip(), inner, label) for v in value.split(",") if v.strip()]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ParamError(f"{label} must be true or false, not '{value}'")
    if tp in (int, float):
        try:
            return tp(value)
        except ValueError:
            raise ParamError(f"{label} must be {tp.__name__}, not '{value}'") from None
    return value


def _check(value: Any, tp: Any, label: str) -> Any:
    """A Python value checked against type ``tp`` (and normalized: numpy scalars to Python
    numbers, a list for a tuple field to a tuple); :class:`ParamError` naming ``label``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, label)
            except ParamError:
                continue
        raise _mismatch(value, tp, label)
    if origin is typing.Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise ParamError(f"{label} must be one of {list(args)}, not {value!r}")
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _mismatch(value, tp, label)
        kinds = [args[0] if args else Any] * len(value)
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[int, str]: fixed
            if len(value) != len(args):
                raise ParamError(f"{label} must hold {len(args)} items, not {len(value)}")
            kinds = list(args)
        items = [_convert(v, kinds[i], f"{label} item {i}") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is not None:  # dict[...], frozenset[...]: the container's type, items unchecked
        if isinstance(origin, type) and not isinstance(value, origin):
            raise _mismatch(value, tp, label)
        return value
    if tp is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise ParamError(f"{label} must be true or false, not {value!r}")
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
            return int(value)
        raise _mismatch(value, tp, label)
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            try:
                return float(value)
            except OverflowError:
                raise ParamError(f"{label} is too large for a float") from None
        raise _mismatch(value, tp, label)
    if tp is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _mismatch(value, tp, label)
    return value


def _mismatch(value: Any, tp: Any, label: str) -> ParamError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ParamError(f"{label} must be {_type_name(tp)}, not {shown} ({type(value).__name__})")
