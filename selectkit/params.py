"""Typed parameters for methods and solvers: dataclasses filled from ``key=value`` strings."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

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
    """Instantiate ``params_cls`` from values, converting strings to the declared types.

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
    except (TypeError, ValueError) as exc:
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
                "default": None if default is dataclasses.MISSING else default,
                "help": f.metadata.get("help", ""),
            }
        )
    return rows


def params_to_dict(params: Any) -> dict[str, Any]:
    return dataclasses.asdict(params)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, label: str) -> Any:
    if not isinstance(value, str):
        return value
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
