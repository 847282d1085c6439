"""Field access by dotted path (``metadata.pile_set_name``) into nested rows.

A field that is absent is :data:`MISSING`; a field that is present but null or empty is returned
as it is (``None``, ``""``), so callers can tell "the data has no such field" (usually a wrong
field name) from "the field is there but has no value" (usually a bad record).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final


class _Missing:
    """The type of :data:`MISSING`: falsy, a singleton, and clear in reprs."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def get_field(row: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in ``row``, or :data:`MISSING` when any step is absent.

    A key that itself contains dots (``{"a.b": 1}``) wins over nesting, so flat columns named
    with dots (common in Parquet exports) stay reachable. Integer steps index into lists
    (``messages.0.content``).
    """
    if not path:
        return MISSING
    return _walk(row, path)


def _walk(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        if path in value:
            return value[path]
        head, dot, rest = path.partition(".")
        while dot:
            if head in value:
                found = _walk(value[head], rest)
                if found is not MISSING:
                    return found
            more_head, dot, rest = rest.partition(".")
            head = f"{head}.{more_head}"
        return MISSING
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        head, dot, rest = path.partition(".")
        try:
            item = value[int(head)]
        except (ValueError, IndexError):
            return MISSING
        return _walk(item, rest) if dot else item
    return MISSING


def is_empty(value: Any) -> bool:
    """Whether a present value carries nothing: null, or a string that is only whitespace."""
    return value is None or (isinstance(value, str) and not value.strip())


def field_names(row: Mapping[str, Any], *, depth: int = 2, limit: int = 30) -> list[str]:
    """The dotted names of the fields in ``row`` down to ``depth`` levels, for error messages."""
    names: list[str] = []

    def visit(value: Mapping[str, Any], prefix: str, level: int) -> None:
        for key, child in value.items():
            name = f"{prefix}{key}"
            if isinstance(child, Mapping) and child and level < depth:
                visit(child, f"{name}.", level + 1)
            else:
                names.append(name)

    visit(row, "", 1)
    if len(names) > limit:
        return [*names[:limit], f"... ({len(names) - limit} more)"]
    return names


def kind(value: Any) -> str:
    """A JSON-ish name of a value's type, for messages ("a number", "an object", "NaN")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "an infinite number"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def text_value(value: Any, *, numbers: bool = True) -> str | None:
    """A field value as text: strings as they are and, when ``numbers`` is true, finite
    numbers and booleans printed (``42``, ``1.5``, ``true``); ``None`` for every other value
    (objects, lists, null, NaN and infinities, which are never text)."""
    if isinstance(value, str):
        return value
    if not numbers:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    return None
