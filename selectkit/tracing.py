"""Tracing hook calls: one abbreviated line per call, so a trace of a large run stays
readable (a list of a million rows shows as ``list of 1000000 RawRow``)."""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any

from selectkit.terminal import printable

#: The longest trace line, before escaping.
TRACE_WIDTH = 300
_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80


def brief(value: Any, width: int = 160) -> str:
    """``value`` in at most ``width`` characters: classes by name, long sequences by length and
    item type (``list of 100 RawRow``), mappings by their first keys, anything else by
    reprlib."""
    text = _brief(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _brief(value: Any) -> str:
    if isinstance(value, type):
        return value.__qualname__
    if isinstance(value, (list, tuple)):
        return _brief_items(value)
    if isinstance(value, Mapping):
        keys = list(value)
        shown = ", ".join(f"{_REPR.repr(k)}: {brief(value[k], 60)}" for k in keys[:4])
        more = f", ... {len(keys)} in all" if len(keys) > 4 else ""
        return f"{{{shown}{more}}}"
    return _REPR.repr(value)


def _brief_items(items: list[Any] | tuple[Any, ...]) -> str:
    kinds = {type(v) for v in items}
    if len(items) > 4 and not all(isinstance(v, type) for v in items):
        what = next(iter(kinds)).__name__ if len(kinds) == 1 else "values"
        return f"{type(items).__name__} of {len(items)} {what}"
    shown = ", ".join(brief(v, 80) for v in items[:6])
    more = f", ... {len(items)} in all" if len(items) > 6 else ""
    return f"[{shown}{more}]"


def trace_line(
    call: str, kwargs: Mapping[str, Any], *, result: Any = None, error: BaseException | None = None
) -> str:
    """One line for a hook call: ``call(args) -> outcome``, at most :data:`TRACE_WIDTH`
    characters before escaping; the outcome is kept whole, the arguments are cut first."""
    args = ", ".join(f"{key}={brief(value)}" for key, value in kwargs.items())
    if error is not None:
        outcome = f"raised {type(error).__name__}: {brief(str(error))}"
    else:
        outcome = brief(result)
    room = max(40, TRACE_WIDTH - len(call) - len(outcome) - 6)
    if len(args) > room:
        args = args[: room - 3] + "..."
    return printable(f"{call}({args}) -> {outcome}"[:TRACE_WIDTH])
