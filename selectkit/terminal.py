"""Printing untrusted text: record values, file and field names, plugin messages.

A record's group name or id can hold terminal escape sequences (``ESC[2J`` clears the screen,
``ESC]8;`` makes links) or Unicode direction overrides that make text read differently from
what it is. Everything selectkit prints goes through :func:`printable`, which shows such
characters as escapes instead of sending them to the terminal, and keeps each line one line.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls (tab included: it would misalign columns), DEL, C1 controls, and the Unicode
# bidirectional controls behind "Trojan Source" (CVE-2021-42574), line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# What json.dumps leaves raw inside strings (it escapes C0 controls itself); structural
# newlines and indentation are C0 and must stay.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: Any) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``, ``\\n``, ``\\u202e``),
    so it prints as one line and cannot drive the terminal."""
    return _UNSAFE.sub(_escape, str(text))


def printable_json(value: Any, **kwargs: Any) -> str:
    """JSON text of ``value`` that is safe on a terminal: ``json.dumps`` escapes C0 controls
    itself; the C1 and direction controls it leaves raw are written as ``\\uXXXX`` escapes,
    which JSON readers decode back to the same string."""
    text = json.dumps(value, ensure_ascii=False, **kwargs)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def echo(text: Any, *, err: bool = False) -> None:
    """Print one line of text that may hold untrusted parts, escaped (:func:`printable`)."""
    import click

    click.echo(printable(text), err=err)
