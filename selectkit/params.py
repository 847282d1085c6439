"""Typed parameters for methods and solvers: dataclasses filled from ``key=value`` strings
(the command line) or Python values, both checked against the declared types."""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from selectkit.errors import ParamError


def help_text(text: str) -> dict[str, str]:
    """A field's metadata with its help, which listings, generated options and the
    conformance suite read: ``field(default=8, metadata=help_text("rank of the adapter"))``."""
    return {"help": text}


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

    A field whose type is itself a dataclass is a group (``lora``, ``warmup``): it takes an
    instance, a mapping of its own fields, or dotted keys (``lora.r=16``), the one spelling
    of a nested setting everywhere (``-p``, run files, Python). ``owner`` names the method or
    solver in error messages.
    """
    return _build(params_cls, _nest(values, owner), owner, "")


def _nest(values: Mapping[str, Any], owner: str, prefix: str = "") -> dict[str, Any]:
    """Dotted keys as nested mappings, ``{"lora.r": 8}`` -> ``{"lora": {"r": 8}}``, merged at
    every depth with each other and with the mappings given (``finetune.lora.r`` beside
    ``finetune.lora.alpha``, or ``{"finetune": {"lora": {...}}}``), in new dicts."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        head, dot, rest = key.partition(".")
        if dot:
            value = {rest: value}
        if isinstance(value, Mapping):
            value = _nest(value, owner, f"{prefix}{head}.")
        nested = _merge(nested, {head: value}, owner, prefix)
    return nested


def _merge(into: dict[str, Any], more: dict[str, Any], owner: str, prefix: str) -> dict[str, Any]:
    """Two nested mappings as one; a setting given in both is refused."""
    merged = dict(into)
    for key, value in more.items():
        name = prefix + key
        if key not in merged:
            merged[key] = value
        elif isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = _merge(merged[key], value, owner, f"{name}.")
        elif isinstance(merged[key], dict) or isinstance(value, dict):
            raise ParamError(f"{owner}: '{name}' is given both whole and setting by setting")
        else:
            raise ParamError(f"{owner}: parameter '{name}' is given twice")
    return merged


def _build(params_cls: type, values: Mapping[str, Any], owner: str, prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise _unknown(params_cls, [prefix + name for name in unknown], owner, prefix)
    hints = typing.get_type_hints(params_cls)
    converted = {}
    for key, value in values.items():
        tp, name = hints[key], prefix + key
        if is_group(tp) and isinstance(value, Mapping):
            converted[key] = _build(tp, value, owner, f"{name}.")
        elif is_group(tp) and not isinstance(value, tp):
            raise ParamError(
                f"{owner} parameter '{name}' is a group: give its settings as {name}.<field>="
            )
        else:
            converted[key] = convert(value, tp, f"{owner} parameter '{name}'")
    try:
        return params_cls(**converted)
    except (TypeError, ValueError, ParamError) as exc:
        group = prefix.rstrip(".")
        text = str(exc).removeprefix(f"{group.rpartition('.')[2]}: ")  # no "warmup: warmup:"
        raise ParamError(f"{owner} {group}: {text}" if group else f"{owner}: {text}") from None


def _unknown(params_cls: type, names: list[str], owner: str, prefix: str) -> ParamError:
    """The error for unknown parameters, with a hint: the new name of a renamed one (the
    class's ``former_names``), else the closest known name."""
    known = [row["name"] for row in describe_params(params_cls)]
    renamed = getattr(params_cls, "former_names", {}).get(names[0].removeprefix(prefix))
    close = (
        [prefix + renamed]
        if renamed in known
        else difflib.get_close_matches(
            names[0].replace("_", ".", 1) if "." not in names[0] else names[0],
            [prefix + k for k in known],
            n=1,
        )
    )
    hint = f" (did you mean {close[0]}?)" if close else ""
    listed = ", ".join(prefix + k for k in known) or "none"
    return ParamError(f"{owner} has no parameter {names}{hint}; its parameters are: {listed}")


def is_group(tp: Any) -> bool:
    """Whether a field of this type is a group of settings (a dataclass)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def describe_params(params_cls: type) -> list[dict[str, Any]]:
    """Name (dotted inside groups), type, default and help of each setting, for listings,
    docs and generated command-line options."""
    hints = typing.get_type_hints(params_cls)
    rows = []
    for f in dataclasses.fields(params_cls):
        if is_group(hints[f.name]):
            for row in describe_params(hints[f.name]):
                rows.append({**row, "name": f"{f.name}.{row['name']}"})
            continue
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        rows.append(
            {
                "name": f.name,
                "type": _type_name(hints[f.name]),
                "hint": hints[f.name],
                "choices": choices(hints[f.name]),
                "default": None if default is dataclasses.MISSING else default,
                "help": f.metadata.get("help", ""),
            }
        )
    return rows


def leaves(params: Any) -> dict[str, Any]:
    """Every setting of a parameters instance by its dotted name: ``{"lora.r": 8, ...}``."""
    found = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            found.update({f"{f.name}.{k}": v for k, v in leaves(value).items()})
        else:
            found[f.name] = value
    return found


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


def convert(value: Any, tp: Any, label: str) -> Any:
    """``value`` (a string as typed, or a Python value) as type ``tp``; a
    :class:`ParamError` naming ``label`` when it cannot be."""
    if not isinstance(value, str):
        return _check(value, tp, label)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and value.lower() in ("none", "null", ""):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(value, arg, label)
            except ParamError:
                continue
        raise ParamError(f"{label}: cannot read '{value}' as {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ParamError(f"{label} must be one of {list(args)}, not '{value}'")
    if origin in (tuple, list):
        inner = args[0] if args else str
        parts = [v.strip() for v in value.split(",")] if value.strip() else []
        if "" in parts:  # an item left out, more likely than an empty one meant
            raise ParamError(f"{label}: '{value}' has an empty item (a doubled or end comma)")
        items = [convert(v, inner, label) for v in parts]
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
        items = [convert(v, kinds[i], f"{label} item {i}") for i, v in enumerate(value)]
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
