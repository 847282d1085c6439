"""The built-in file formats and the built-in ``selectkit_load_records`` hook.

Each format yields :class:`RawRow` objects numbered so that errors can point at them: the 1-based
line where the row starts in text formats (JSONL, JSON, CSV, TXT) and the 1-based row number in
columnar ones (Parquet, saved Hugging Face datasets). Heavy libraries (pyarrow) are imported only
when a file that needs them is read.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from selectkit.data.formats import Format, LoadOptions, OnError, RawRow
from selectkit.errors import FormatError, RecordError
from selectkit.hookspecs import hookimpl


class Rows(list[RawRow]):
    """The rows read from a source, with where they came from.

    A plain list to the hook contract; the extra attributes tell the loader which format read
    the rows, the path they came from, and the errors of rows that were skipped.
    """

    def __init__(
        self,
        rows: list[RawRow],
        *,
        path: str | None = None,
        format: str | None = None,
        errors: list[RecordError] | None = None,
    ) -> None:
        super().__init__(rows)
        self.path = path
        self.format = format
        self.errors = list(errors or [])


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


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


def _kind(value: Any) -> str:
    """A JSON-ish name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class JsonlFormat(Format):
    """One JSON object per line; blank lines are ignored."""

    name = "jsonl"
    suffixes = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = _decode_line(raw, path, number)
                except RecordError as err:
                    on_error(err)
                    continue
                if not text.strip():
                    continue
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    on_error(
                        RecordError(
                            f"not valid JSON: {exc.msg} (column {exc.colno})",
                            path=str(path),
                            line=number,
                        )
                    )
                    continue
                if not isinstance(value, dict):
                    on_error(
                        RecordError(
                            f"expected a JSON object, got {_kind(value)}",
                            path=str(path),
                            line=number,
                        )
                    )
                    continue
                yield RawRow(number, value)


_WHITESPACE = " \t\n\r"


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


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

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        with _open_binary(path) as handle:
            data = handle.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise RecordError("not valid UTF-8", path=str(path), line=line) from None
        decoder = json.JSONDecoder()
        lines = _LineCounter(text)
        pos = _skip_ws(text, 0)
        try:
            if text.startswith("[", pos):
                yield from self._array(text, pos, decoder, lines, path, on_error)
            elif text.startswith("{", pos):
                start = self._list_field(text, pos, decoder, path)
                yield from self._array(text, start, decoder, lines, path, on_error)
            elif pos == len(text):
                return
            else:
                raise RecordError(
                    "expected a JSON array of objects, or an object with one list of objects",
                    path=str(path),
                    line=lines.at(pos),
                )
        except json.JSONDecodeError as exc:
            raise RecordError(
                f"not valid JSON: {exc.msg} (column {exc.colno}); a JSON file cannot be read "
                "past a syntax error, so fix it (or convert the file to JSONL to skip bad lines)",
                path=str(path),
                line=exc.lineno,
            ) from None

    def _array(
        self,
        text: str,
        pos: int,
        decoder: json.JSONDecoder,
        lines: _LineCounter,
        path: Path,
        on_error: OnError,
    ) -> Iterator[RawRow]:
        """Walk the array starting at ``text[pos] == "["``, yielding each element with the line
        it starts on."""
        pos = _skip_ws(text, pos + 1)
        if text.startswith("]", pos):
            return
        while True:
            value, end = decoder.raw_decode(text, pos)
            line = lines.at(pos)
            if isinstance(value, dict):
                yield RawRow(line, value)
            else:
                on_error(
                    RecordError(
                        f"expected a JSON object, got {_kind(value)}", path=str(path), line=line
                    )
                )
            pos = _skip_ws(text, end)
            if text.startswith(",", pos):
                pos = _skip_ws(text, pos + 1)
            elif text.startswith("]", pos):
                return
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)

    def _list_field(self, text: str, pos: int, decoder: json.JSONDecoder, path: Path) -> int:
        """The position of the one list value of the object starting at ``text[pos]``."""
        lists: list[tuple[str, int]] = []
        pos = _skip_ws(text, pos + 1)
        while not text.startswith("}", pos):
            key, pos = decoder.raw_decode(text, pos)
            if not isinstance(key, str):
                raise json.JSONDecodeError("Expecting property name", text, pos)
            pos = _skip_ws(text, pos)
            if not text.startswith(":", pos):
                raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
            start = _skip_ws(text, pos + 1)
            value, pos = decoder.raw_decode(text, start)
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
        return lists[0][1]


class CsvFormat(Format):
    """Comma-separated values with a header row; every value is a string. Each row's line is
    where the record starts (quoted values may span lines)."""

    name = "csv"
    suffixes = (".csv", ".csv.gz")
    delimiter = ","

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        with _open_binary(path) as raw, io.TextIOWrapper(raw, "utf-8-sig", newline="") as text:
            reader = csv.reader(text, delimiter=self.delimiter)
            header: list[str] | None = None
            previous = 0
            while True:
                start = previous + 1
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except (csv.Error, UnicodeDecodeError) as exc:
                    raise RecordError(
                        f"unreadable {self.name.upper()}: {exc}", path=str(path), line=start
                    ) from None
                previous = reader.line_num
                if not values:
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


class TsvFormat(CsvFormat):
    """Tab-separated values with a header row."""

    name = "tsv"
    suffixes = (".tsv", ".tsv.gz")
    delimiter = "\t"


class TxtFormat(Format):
    """Plain text, one record per non-empty line, read as ``{"text": line}``."""

    name = "txt"
    suffixes = (".txt", ".txt.gz")

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = _decode_line(raw, path, number).rstrip("\r\n")
                except RecordError as err:
                    on_error(err)
                    continue
                if text.strip():
                    yield RawRow(number, {"text": text})


def _arrow_rows(batches: Iterator[Any], first: int) -> Iterator[RawRow]:
    number = first
    for batch in batches:
        for row in batch.to_pylist():
            yield RawRow(number, row)
            number += 1


class ParquetFormat(Format):
    """Apache Parquet, read with pyarrow in batches; a row's line is its 1-based row number."""

    name = "parquet"
    suffixes = (".parquet", ".pq")

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(str(path))
        except (pa.ArrowException, OSError) as exc:
            raise FormatError(f"{path}: not a readable Parquet file: {exc}") from None
        with contextlib.closing(parquet):
            yield from _arrow_rows(parquet.iter_batches(batch_size=4096), 1)


class HfDatasetFormat(Format):
    """A directory written by ``datasets.Dataset.save_to_disk``: ``state.json`` lists the Arrow
    files in order and ``dataset_info.json`` describes them. Read with pyarrow alone (the
    ``datasets`` package is not needed); a row's line is its 1-based row number."""

    name = "hf"
    suffixes = ()

    def detect(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        if (path / "dataset_dict.json").is_file():
            return True
        return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        import pyarrow as pa

        if (path / "dataset_dict.json").is_file() and not (path / "state.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if (p / "state.json").is_file())
            hint = f"; read one split, e.g. {path / splits[0]}" if splits else ""
            raise FormatError(
                f"{path} is a saved DatasetDict with splits {', '.join(splits) or 'none'}{hint}"
            )
        try:
            state = json.loads((path / "state.json").read_text("utf-8"))
            files = [entry["filename"] for entry in state["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FormatError(
                f"{path}: state.json does not list the dataset's Arrow files ({exc})"
            ) from None
        first = 1
        for filename in files:
            file_path = path / filename
            if not file_path.is_file():
                raise FormatError(f"{path}: state.json lists {filename}, which is missing")
            with pa.memory_map(str(file_path)) as source:
                try:
                    reader = pa.ipc.open_stream(source)
                except pa.ArrowInvalid:
                    source.seek(0)
                    try:
                        reader = pa.ipc.open_file(source)
                    except pa.ArrowInvalid as exc:
                        raise FormatError(f"{file_path}: not an Arrow file: {exc}") from None
                    batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
                else:
                    batches = iter(reader)
                count = 0
                for row in _arrow_rows(batches, first):
                    count += 1
                    yield row
                first += count


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
    kind = "directory" if path.is_dir() else "file"
    raise FormatError(
        f"cannot tell the format of {kind} {path}; pass --format with one of: {_known(formats)}"
    )


def read_rows(path: Path, options: LoadOptions, formats: dict[str, type[Format]]) -> Rows:
    """Read every row of ``path``; bad rows raise or, when ``options.on_error`` is "skip",
    are left out and kept on ``Rows.errors``."""
    if not path.exists():
        raise FormatError(f"no such file or directory: {path}")
    fmt = choose_format(path, options, formats)
    errors: list[RecordError] = []

    def on_error(err: RecordError) -> None:
        if options.on_error != "skip":
            raise err
        errors.append(err)

    try:
        rows = list(fmt.read(path, on_error))
    except IsADirectoryError:
        raise FormatError(f"{path} is a directory, which format '{fmt.name}' cannot read") from None
    return Rows(rows, path=str(path), format=fmt.name, errors=errors)


@hookimpl(trylast=True)
def selectkit_load_records(
    source: str, options: LoadOptions, formats: dict[str, type[Format]]
) -> list[RawRow] | None:
    """Read a local file or directory with the first registered format that fits it."""
    path = Path(os.path.expanduser(source))
    return read_rows(path, options, formats)
