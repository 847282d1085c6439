"""File formats: how rows come out of a file. Each format is a small plugin-registered class.

A format reports a bad row through ``on_error`` (a :class:`RecordError` that ``--skip-bad`` may
skip) and a file it cannot read as a :class:`FormatError` naming it (:func:`unreadable`).
"""

from __future__ import annotations

import gzip
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from selectkit.errors import FormatError, RecordError

OnError = Callable[[RecordError], None]

#: What reading a damaged or unreadable file raises (pyarrow's errors are added where it is used).
FILE_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, MemoryError)


@dataclass(frozen=True)
class RawRow:
    """One row as read from a source, with its 1-based line (text files) or row number."""

    line: int
    data: dict[str, Any]


@dataclass(frozen=True)
class LoadOptions:
    """How to read a pool: every choice the user can make about records, in one place.

    Field names may be dotted paths into nested objects (``metadata.pile_set_name``).
    ``tokenizer`` is a spec for the ``selectkit_load_tokenizer`` hook or, from Python, a
    tokenizer object. ``convert_values`` reads numbers and booleans found where text is
    expected (prompt, response, instruction, input, text, message content) as text (``42``,
    ``true``); without it they are bad records, so a column of numbers is never trained on
    as words by accident. NaN and infinities are never text.
    """

    format: str | None = None
    shape: str | None = None
    id_field: str = "id"
    group_field: str | None = None
    text_field: str | None = None
    field_map: dict[str, str] = field(default_factory=dict)
    on_error: Literal["raise", "skip"] = "raise"
    tokenizer: Any = None
    template: Literal["auto", "chat", "plain"] = "auto"
    max_length: int | None = None
    truncation: Literal["left", "right"] = "left"
    trust_remote_code: bool = False
    convert_values: bool = False


class Format(ABC):
    """A file format. ``name`` is what users pass to ``--format``; ``suffixes`` are matched
    against the file name when they do not."""

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`read` yields only JSON values nested at most
    #: :data:`~selectkit.data.values.MAX_DEPTH` levels (the built-in formats do). When false,
    #: the loader converts each row by the rule of :mod:`selectkit.data.values`.
    json_values: ClassVar[bool] = False

    def detect(self, path: Path) -> bool:
        """Whether this format can read ``path`` by its name (or layout, for directories)."""
        name = path.name.lower()
        return path.is_file() and any(name.endswith(suffix) for suffix in self.suffixes)

    @abstractmethod
    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        """Yield rows in file order. For a malformed row call ``on_error`` with a
        :class:`RecordError` naming the path and line, then go on: ``on_error`` raises when the
        user did not ask to skip bad records. A file that cannot be read is a
        :class:`~selectkit.errors.FormatError` naming it (library errors such as ``OSError``
        are turned into one by the loader)."""


def brief(exc: BaseException) -> str:
    """A library error's message on one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def unreadable(path: Path, exc: BaseException, past: int = 0, unit: str = "line") -> FormatError:
    """The :class:`FormatError` for a file that raised ``exc`` (one of :data:`FILE_ERRORS`, or
    a pyarrow error) while being read, after ``past`` good lines (or rows)."""
    where = f" past {unit} {past}" if past else ""
    if isinstance(exc, gzip.BadGzipFile):
        what, fix = "it is not gzip data, though its name ends in .gz", "decompress or rename it"
    elif isinstance(exc, EOFError):
        what, fix = "its compressed data ends early (the file is truncated)", "recreate it"
    elif isinstance(exc, zlib.error):
        what, fix = f"its compressed data is corrupt ({brief(exc)})", "recreate it"
    elif isinstance(exc, IsADirectoryError):
        what, fix = "it is a folder, which this format does not read", "give a file"
    elif isinstance(exc, MemoryError):
        what, fix = "it does not fit in memory", "split it, or use a machine with more memory"
    elif isinstance(exc, OSError) and exc.strerror:
        what, fix = exc.strerror, "check that it is a readable file"
    else:
        what, fix = f"it is damaged ({brief(exc)})", "recreate it"
    return FormatError(f"{path}: cannot be read{where}: {what}; {fix}")
