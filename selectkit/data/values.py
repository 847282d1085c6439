"""What a record may hold: JSON values only, so that every record that loads can be written back.

``selectkit select`` writes the selected records back unchanged, as JSON lines. A row is therefore
made, at load time, of JSON values only: objects with text keys, lists, text, finite numbers,
booleans and null, nested at most :data:`MAX_DEPTH` levels (the row itself is level 1).

The JSON readers produce such values directly (they refuse ``NaN``, ``Infinity`` and numbers too
large for a float as "not JSON"). Values that are not JSON, from columnar files (Parquet, saved
Hugging Face datasets), plugins or in-memory rows, become JSON values by one rule
(:func:`json_row`):

- timestamps, dates and times: ISO 8601 text (``2024-05-01T12:00:00+00:00``);
- durations: a number of seconds;
- decimals: their exact text (``"12.50"``), since a float would round them;
- bytes: standard base64 text, as in the Protocol Buffers JSON mapping;
- tuples (Arrow maps, as ``[key, value]`` pairs, and intervals): lists;
- numpy scalars and arrays: the Python numbers and lists they hold.

NaN and infinite numbers, object keys that are not text, text with a lone UTF-16 surrogate
(which UTF-8 cannot encode), values of any other type and rows nested deeper than
:data:`MAX_DEPTH` are bad records (:class:`~selectkit.errors.RecordError`
naming the field), never written as something JSON readers reject.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any, Final

import numpy as np

from selectkit.errors import RecordError

#: The deepest nesting of objects and lists a row may have, counting the row itself.
MAX_DEPTH: Final = 100

#: Why a row nested deeper than :data:`MAX_DEPTH` is refused.
TOO_DEEP: Final = (
    f"nested more than {MAX_DEPTH} levels deep; selectkit reads at most {MAX_DEPTH} levels of "
    "objects and lists, so that every record it reads can be written back"
)

#: Why text holding a lone UTF-16 surrogate (from a JSON escape such as ``\ud800``) is refused.
LONE_SURROGATE: Final = (
    "holds a lone UTF-16 surrogate (an escape such as \\ud800 without its pair), which is not "
    "text and cannot be written as UTF-8; fix the escape"
)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class _Bad(Exception):
    """A value that is not JSON, with the path to it (innermost key first) and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


def _record_error(bad: _Bad) -> RecordError:
    return RecordError(bad.reason, field=".".join(reversed(bad.path)) or None)


def json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` made of JSON values by the module's rule; :class:`RecordError` naming the
    field of the first value that cannot be."""
    try:
        return _object(row, 1)
    except _Bad as bad:
        raise _record_error(bad) from None


def json_fields(row: dict[str, Any], names: Collection[str]) -> dict[str, Any]:
    """:func:`json_row` for just the top-level fields ``names`` of ``row`` (the others are
    known to be JSON already), updating ``row`` in place."""
    try:
        for name in names:
            try:
                row[name] = _value(row[name], 1)
            except _Bad as bad:
                _inside(bad, name)
                raise
    except _Bad as bad:
        raise _record_error(bad) from None
    return row


def _inside(bad: _Bad, key: str) -> None:
    """Add the key that ``bad`` was found under to its path; a row too deep is named by its
    top-level field alone, not by a hundred keys."""
    if bad.reason == TOO_DEEP and bad.path:
        bad.path[:] = [key]
    else:
        bad.path.append(key)


def _object(value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise _Bad(TOO_DEEP)
    out: dict[str, Any] = {}
    for key, child in value.items():
        if not isinstance(key, str):
            raise _Bad(f"has the key {key!r} ({type(key).__name__}); JSON object keys are text")
        if not key.isascii() and _SURROGATE.search(key):
            raise _Bad(LONE_SURROGATE)
        try:
            out[key] = _value(child, depth)
        except _Bad as bad:
            _inside(bad, key)
            raise
    return out


def _list(values: Iterator[Any], depth: int) -> list[Any]:
    if depth > MAX_DEPTH:
        raise _Bad(TOO_DEEP)
    out = []
    for index, child in enumerate(values):
        try:
            out.append(_value(child, depth))
        except _Bad as bad:
            _inside(bad, str(index))
            raise
    return out


def _value(value: Any, depth: int) -> Any:
    """A JSON value for ``value``, which sits inside a container at level ``depth``."""
    if isinstance(value, str):
        if not value.isascii() and _SURROGATE.search(value):
            raise _Bad(LONE_SURROGATE)
        return value
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        what = "NaN" if math.isnan(value) else "infinite"
        raise _Bad(f"is {what}, which JSON cannot hold; write null for a missing number")
    if isinstance(value, Mapping):
        return _object(value, depth + 1)
    if isinstance(value, (list, tuple)):
        return _list(iter(value), depth + 1)
    return _converted(value, depth)


def _converted(value: Any, depth: int) -> Any:
    """The JSON form of a value of a type JSON does not have."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise _Bad(f"is the decimal {value}, which JSON cannot hold")
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, np.ndarray):
        return _value(value.tolist(), depth)
    if isinstance(value, np.generic):
        return _value(value.item(), depth)
    raise _Bad(
        f"holds a value of type {type(value).__name__}, which JSON cannot hold; convert it to "
        "text, a number, a list or an object"
    )
