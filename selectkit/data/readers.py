"""The built-in file formats and the built-in ``selectkit_load_records`` hook.

Each format yields :class:`RawRow` objects numbered so that errors can point at them: the 1-based
line where the row starts in text formats (JSONL, JSON, CSV, TXT, here) and the 1-based row
number in columnar ones (Parquet, saved Hugging Face datasets: :mod:`selectkit.data.arrow`).
Heavy libraries (pyarrow) are imported only when a file that needs them is read.

A bad row is a :class:`RecordError` that ``--skip-bad`` may skip; a file that cannot be read
(not gzip, truncated, corrupt pages, unreadable, not a regular file) is a :class:`FormatError`
naming it and, where it is known, the line or row it could not be read past. No library
exception escapes for a bad file. Rows hold JSON values only (:mod:`selectkit.data.values`).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import io
import json
import math
import os
import re
import stat
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, Any

from selectkit.data.arrow import HfDatasetFormat, ParquetFormat, arrow_errors
from selectkit.data.fields import kind
from selectkit.data.formats import (
    FILE_ERRORS,
    Format,
    LoadOptions,
    OnError,
    RawRow,
    brief,
    unreadable,
)
from selectkit.data.values import MAX_DEPTH, TOO_DEEP, json_row
from selectkit.errors import FormatError, RecordError
from selectkit.markers import hookimpl

#: CSV fields may be as long as a file holds (the csv module's default stops at 128 KiB).
_CSV_FIELD_LIMIT = 2**31 - 1


class Rows(list[RawRow]):
    """The rows read from a source, with where they came from.

    A plain list to the hook contract; the extra attributes tell the loader which format read
    the rows, the path they came from, the errors of rows that were skipped, and whether the
    rows already hold JSON values only (the built-in formats' promise).
    """

    def __init__(
        self,
        rows: list[RawRow],
        *,
        path: str | None = None,
        format: str | None = None,
        errors: list[RecordError] | None = None,
        json_values: bool = False,
    ) -> None:
        super().__init__(rows)
        self.path = path
        self.format = format
        self.errors = list(errors or [])
        self.json_values = json_values


@contextlib.contextmanager
def _open_binary(path: Path) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed when its name ends in ``.gz``; :class:`FormatError`
    for UTF-16 and UTF-32 text, which would otherwise fail line by line."""
    gz = path.name.lower().endswith(".gz")
    with gzip.open(path, "rb") if gz else open(path, "rb") as handle:
        head = handle.peek(4)[:4]
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)):
            raise FormatError(
                f"{path}: is UTF-16 or UTF-32 text (it starts with a byte-order mark); "
                "selectkit reads UTF-8: convert it, e.g. iconv -f UTF-16 -t UTF-8"
            )
        yield handle


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The file's lines with their 1-based numbers; a file that cannot be read (to the end)
    is a :class:`FormatError` saying how far it was read."""
    number = 0
    try:
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                yield number, raw
    except FILE_ERRORS as exc:
        raise unreadable(path, exc, number) from None


def _decode_line(raw: bytes, path: Path, line: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(
            f"not valid UTF-8 (byte {exc.start + 1} of the line)", path=str(path), line=line
        ) from None
    if line == 1 and text.startswith("\ufeff"):
        text = text[1:]
    return text


class _Unparsable(Exception):
    """A JSON value Python cannot parse (too deep, or an integer too long) starting at
    ``pos``: its extent is unknown, so a reader cannot step past it."""

    def __init__(self, reason: str, pos: int) -> None:
        super().__init__(reason)
        self.pos = pos


#: JSON's whitespace, and the escape of a UTF-16 surrogate (``\ud800``), paired or not.
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _StrictJson:
    """Python's JSON decoder held to the JSON standard: ``NaN``, ``Infinity`` and numbers too
    large for a float (which Python reads as infinity) are noted as a problem instead of
    becoming floats that no JSON writer accepts; values nested more than ``MAX_DEPTH``
    levels and text with a lone surrogate escape are noted too. The hooks run only for floats
    and constants, so plain text rows cost nothing extra."""

    def __init__(self) -> None:
        self._problem: str | None = None
        self._decoder = json.JSONDecoder(parse_constant=self._constant, parse_float=self._float)

    def _note(self, problem: str) -> None:
        if self._problem is None:
            self._problem = problem

    def _constant(self, name: str) -> None:
        self._note(f"not JSON: {name} is not a JSON value; write null for a missing number")

    def _float(self, text: str) -> float | None:
        value = float(text)
        if math.isinf(value):
            self._note(f"the number {text[:40]} is too large for JSON readers; write it as text")
            return None
        return value

    def raw_decode(self, text: str, pos: int) -> tuple[Any, int, RecordError | None]:
        """The value starting at ``text[pos]``, where it ends, and what is wrong with it as a
        record (or ``None``); raises ``json.JSONDecodeError`` or :class:`_Unparsable`."""
        self._problem = None
        try:
            value, end = self._decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            raise
        except RecursionError:
            raise _Unparsable(TOO_DEEP, pos) from None
        except ValueError as exc:
            if "integer string conversion" in str(exc):
                reason = (
                    "holds an integer with thousands of digits, too long to read; write it as text"
                )
            else:
                reason = f"not readable as JSON: {brief(exc)}"
            raise _Unparsable(reason, pos) from None
        if self._problem is not None:
            return value, end, RecordError(self._problem)
        if isinstance(value, dict) and (
            _SURROGATE_ESCAPE.search(text, pos, end)
            or text.count("{", pos, end) + text.count("[", pos, end) > MAX_DEPTH
        ):  # cheap scans that few rows pass (long code, escaped emoji): walk those
            try:
                json_row(value)
            except RecordError as err:
                return value, end, err
        return value, end, None

    def decode(self, text: str) -> tuple[Any, RecordError | None]:
        """:meth:`raw_decode` of a whole text (one JSONL line) that holds one value."""
        value, end, problem = self.raw_decode(text, _skip_ws(text, 0))
        end = _skip_ws(text, end)
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
        return value, problem


def _at(err: RecordError, path: Path, line: int) -> RecordError:
    """``err`` (raised without a place) at ``path``, ``line``."""
    return RecordError(err.reason, path=str(path), line=line, field=err.field)


def _not_an_object(value: Any, path: Path, line: int) -> RecordError:
    return RecordError(f"expected a JSON object, got {kind(value)}", path=str(path), line=line)


class JsonlFormat(Format):
    """One JSON object per line; blank lines are ignored."""

    name = "jsonl"
    suffixes = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
    json_values = True

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        decoder = _StrictJson()
        for number, raw in _numbered_lines(path):
            try:
                text = _decode_line(raw, path, number)
            except RecordError as err:
                on_error(err)
                continue
            if not text.strip():
                continue
            try:
                value, problem = decoder.decode(text)
            except json.JSONDecodeError as exc:
                problem = RecordError(f"not valid JSON: {exc.msg} (column {exc.colno})")
            except _Unparsable as exc:
                problem = RecordError(str(exc))
            if problem is None and not isinstance(value, dict):
                problem = _not_an_object(value, path, number)
            if problem is not None:
                on_error(_at(problem, path, number))
                continue
            yield RawRow(number, value)


def _skip_ws(text: str, pos: int) -> int:
    """The position of the first character at or after ``pos`` that is not JSON whitespace."""
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


class _LineCounter:
    """Line numbers of increasing positions in a text, counted incrementally."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


class JsonFormat(Format):
    """A JSON array of objects, or an object with exactly one list field holding them
    (``{"canary": "...", "examples": [...]}``). Each row's line is where its object starts."""

    name = "json"
    suffixes = (".json", ".json.gz")
    json_values = True

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        try:
            with _open_binary(path) as handle:
                data = handle.read()
        except FILE_ERRORS as exc:
            raise unreadable(path, exc) from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise RecordError("not valid UTF-8", path=str(path), line=line) from None
        del data
        decoder = _StrictJson()
        lines = _LineCounter(text)
        pos = _skip_ws(text, 0)
        try:
            if text.startswith("[", pos):
                end = yield from self._array(text, pos, decoder, lines, path, on_error)
            elif text.startswith("{", pos):
                start, end = self._list_field(text, pos, decoder, path)
                yield from self._array(text, start, decoder, lines, path, on_error)
            elif pos == len(text):
                return
            else:
                raise RecordError(
                    "expected a JSON array of objects, or an object with one list of objects",
                    path=str(path),
                    line=lines.at(pos),
                )
            end = _skip_ws(text, end)
            if end != len(text):
                raise json.JSONDecodeError("Extra data after the records", text, end)
        except json.JSONDecodeError as exc:
            raise RecordError(
                f"not valid JSON: {exc.msg} (column {exc.colno}); a JSON file cannot be read "
                "past a syntax error, so fix it (or convert the file to JSONL to skip bad lines)",
                path=str(path),
                line=exc.lineno,
            ) from None
        except _Unparsable as exc:
            raise RecordError(
                f"{exc}; a JSON file cannot be read past it, so fix it (or convert the file to "
                "JSONL to skip bad lines)",
                path=str(path),
                line=text.count("\n", 0, exc.pos) + 1,
            ) from None

    def _array(
        self,
        text: str,
        pos: int,
        decoder: _StrictJson,
        lines: _LineCounter,
        path: Path,
        on_error: OnError,
    ) -> Generator[RawRow, None, int]:
        """Walk the array starting at ``text[pos] == "["``, yielding each element with the line
        it starts on; returns the position after the array."""
        pos = _skip_ws(text, pos + 1)
        if text.startswith("]", pos):
            return pos + 1
        while True:
            line = lines.at(pos)
            value, end, problem = decoder.raw_decode(text, pos)
            if problem is None and not isinstance(value, dict):
                problem = _not_an_object(value, path, line)
            if problem is None:
                yield RawRow(line, value)
            else:
                on_error(_at(problem, path, line))
            pos = _skip_ws(text, end)
            if text.startswith(",", pos):
                pos = _skip_ws(text, pos + 1)
            elif text.startswith("]", pos):
                return pos + 1
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)

    def _list_field(self, text: str, pos: int, decoder: _StrictJson, path: Path) -> tuple[int, int]:
        """The position of the one list value of the object starting at ``text[pos]``, and
        the position after the object."""
        lists: list[tuple[str, int]] = []
        pos = _skip_ws(text, pos + 1)
        while not text.startswith("}", pos):
            key, pos, _ = decoder.raw_decode(text, pos)
            if not isinstance(key, str):
                raise json.JSONDecodeError("Expecting property name", text, pos)
            pos = _skip_ws(text, pos)
            if not text.startswith(":", pos):
                raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
            start = _skip_ws(text, pos + 1)
            value, pos, _ = decoder.raw_decode(text, start)
            if isinstance(value, list):
                lists.append((key, start))
            pos = _skip_ws(text, pos)
            if text.startswith(",", pos):
                pos = _skip_ws(text, pos + 1)
            elif not text.startswith("}", pos):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        if len(lists) != 1:
            found = ", ".join(f"'{k}'" for k, _ in lists) or "none"
            raise FormatError(
                f"{path}: a JSON object file must hold its records in exactly one list field; "
                f"list fields found: {found}. Write the records as a JSON array or as JSONL."
            )
        return lists[0][1], pos + 1


class CsvFormat(Format):
    """Comma-separated values with a header row; every value is a string. Each row's line is
    where the record starts (quoted values may span lines). Bytes that are not UTF-8 make
    their row a bad record (decoded with ``surrogateescape`` to find which row)."""

    name = "csv"
    suffixes = (".csv", ".csv.gz")
    delimiter = ","
    json_values = True

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)
        try:
            with (
                _open_binary(path) as raw,
                io.TextIOWrapper(raw, "utf-8-sig", "surrogateescape", newline="") as text,
            ):
                yield from self._rows(csv.reader(text, delimiter=self.delimiter), path, on_error)
        except FILE_ERRORS as exc:  # opening, or closing; reading reports its line itself
            raise unreadable(path, exc) from None

    def _rows(self, reader: Any, path: Path, on_error: OnError) -> Iterator[RawRow]:
        header: list[str] | None = None
        previous = 0
        while True:
            start = previous + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise RecordError(
                    f"unreadable {self.name.upper()}: {brief(exc)}", path=str(path), line=start
                ) from None
            except FILE_ERRORS as exc:
                raise unreadable(path, exc, previous) from None
            previous = reader.line_num
            if not values:
                continue
            bad = _undecoded(values)
            if bad is not None:
                where = f"column '{header[bad]}'" if header and bad < len(header) else "the header"
                err = RecordError(f"not valid UTF-8 (in {where})", path=str(path), line=start)
                if header is None:
                    raise err
                on_error(err)
                continue
            if header is None:
                header = self._header(values, path, start)
                continue
            if len(values) != len(header):
                on_error(
                    RecordError(
                        f"has {len(values)} values but the header has {len(header)} columns",
                        path=str(path),
                        line=start,
                    )
                )
                continue
            yield RawRow(start, dict(zip(header, values, strict=True)))

    def _header(self, values: list[str], path: Path, line: int) -> list[str]:
        names = [v.strip() for v in values]
        seen: set[str] = set()
        for name in names:
            if not name or name in seen:
                what = "an empty column name" if not name else f"column '{name}' twice"
                raise FormatError(f"{path}:{line}: the header row has {what}")
            seen.add(name)
        return names


#: What ``surrogateescape`` decoding makes of bytes that are not UTF-8.
_UNDECODED = re.compile("[\udc80-\udcff]")


def _undecoded(values: list[str]) -> int | None:
    """The index of the first value holding bytes that were not UTF-8, or ``None`` (ASCII
    values are checked in constant time)."""
    for index, value in enumerate(values):
        if not value.isascii() and _UNDECODED.search(value):
            return index
    return None


class TsvFormat(CsvFormat):
    """Tab-separated values with a header row."""

    name = "tsv"
    suffixes = (".tsv", ".tsv.gz")
    delimiter = "\t"


class TxtFormat(Format):
    """Plain text, one record per non-empty line, read as ``{"text": line}``."""

    name = "txt"
    suffixes = (".txt", ".txt.gz")
    json_values = True

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        for number, raw in _numbered_lines(path):
            try:
                text = _decode_line(raw, path, number).rstrip("\r\n")
            except RecordError as err:
                on_error(err)
                continue
            if text.strip():
                yield RawRow(number, {"text": text})


@hookimpl
def selectkit_register_formats() -> list[type[Format]]:
    """The formats selectkit reads out of the box, in detection order."""
    return [
        JsonlFormat,
        JsonFormat,
        CsvFormat,
        TsvFormat,
        ParquetFormat,
        HfDatasetFormat,
        TxtFormat,
    ]


def _known(formats: dict[str, type[Format]]) -> str:
    parts = []
    for name, cls in formats.items():
        hint = ", ".join(cls.suffixes) if cls.suffixes else "detected by layout"
        parts.append(f"{name} ({hint})")
    return "; ".join(parts) or "none"


def choose_format(path: Path, options: LoadOptions, formats: dict[str, type[Format]]) -> Format:
    """The format named by ``options.format``, else the first whose ``detect`` accepts
    ``path``; :class:`FormatError` listing the known formats when there is none."""
    if options.format is not None:
        if options.format not in formats:
            raise FormatError(f"no format named '{options.format}'; known: {_known(formats)}")
        return formats[options.format]()
    for cls in formats.values():
        fmt = cls()
        if fmt.detect(path):
            return fmt
    what = "directory" if path.is_dir() else "file"
    raise FormatError(
        f"cannot tell the format of {what} {path}; pass --format with one of: {_known(formats)}"
    )


def _check_source(path: Path) -> None:
    """Refuse what cannot be read as records before choosing a format: a missing path, one
    that cannot be reached (a symbolic-link loop, a folder without permission), and what is
    neither a regular file nor a folder (a device such as /dev/zero, a pipe, a socket),
    which could be read forever and cannot be hashed."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FormatError(f"no such file or directory: {path}") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot be read: {exc.strerror or brief(exc)}") from None
    except ValueError as exc:  # a NUL byte in the name
        raise FormatError(f"{path!r} is not a usable path ({brief(exc)})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise FormatError(
            f"{path} is not a regular file or a folder (a device, pipe or socket); save the "
            "records to a file and read that"
        )


class RowStream:
    """The rows of a local file, read as they are iterated: what the built-in hook returns, so
    a pool is built without ever holding every row. Like :class:`Rows` it tells which format
    read the rows, their path, whether they hold JSON values only, and (once iterated) the
    errors of the rows that were skipped. Iterating again reads the file again."""

    def __init__(self, path: Path, fmt: Format, options: LoadOptions) -> None:
        self._path = path
        self._fmt = fmt
        self._skip = options.on_error == "skip"
        self.path = str(path)
        self.format = fmt.name
        self.json_values = fmt.json_values
        self.errors: list[RecordError] = []

    def __repr__(self) -> str:
        return f"<{self.format} rows, read as the pool is built>"

    def __iter__(self) -> Iterator[RawRow]:
        errors = self.errors = []

        def on_error(err: RecordError) -> None:
            if not self._skip:
                raise err
            errors.append(err)

        path, fmt = self._path, self._fmt
        file_errors = arrow_errors() if "pyarrow" in sys.modules else FILE_ERRORS
        rows = fmt.read(path, on_error)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except IsADirectoryError:
                raise FormatError(
                    f"{path} is a directory, which format '{fmt.name}' cannot read"
                ) from None
            except file_errors as exc:
                raise unreadable(path, exc) from None
            yield row


def stream_rows(path: Path, options: LoadOptions, formats: dict[str, type[Format]]) -> RowStream:
    """The rows of ``path``, read when iterated; what cannot be read at all (a missing path, a
    device, an unknown format) is a :class:`FormatError` now, the rest as the rows are read."""
    _check_source(path)
    return RowStream(path, choose_format(path, options, formats), options)


def read_rows(path: Path, options: LoadOptions, formats: dict[str, type[Format]]) -> Rows:
    """Read every row of ``path``; bad rows raise or, when ``options.on_error`` is "skip",
    are left out and kept on ``Rows.errors``. A file that cannot be read is a
    :class:`FormatError` naming it, whatever library failed."""
    stream = stream_rows(path, options, formats)
    rows = list(stream)
    return Rows(
        rows,
        path=stream.path,
        format=stream.format,
        errors=stream.errors,
        json_values=stream.json_values,
    )


@hookimpl(trylast=True)
def selectkit_load_records(
    source: str, options: LoadOptions, formats: dict[str, type[Format]]
) -> RowStream | None:
    """Read a local file or directory with the first registered format that fits it, as the
    loader iterates the rows (:class:`RowStream`)."""
    path = Path(os.path.expanduser(source))
    return stream_rows(path, options, formats)
