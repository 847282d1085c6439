"""The columnar formats: Parquet files and saved Hugging Face datasets, read with pyarrow.

A row's line is its 1-based row number. Values become JSON by the rule of
:mod:`selectkit.data.values`; which columns need converting is decided per batch, with pyarrow
(text, integer and boolean columns never do; float columns only when they hold NaN or an
infinity), so a plain table costs no more than pyarrow's own conversion. Nesting needs no
check of ours: pyarrow reads no Parquet schema deeper than 100 levels and no Arrow data deeper
than 64, both within :data:`~selectkit.data.values.MAX_DEPTH`. A file that cannot be read
(corrupt pages, a truncated or garbage Arrow file, damaged offsets, which every batch is
validated against before its rows are converted) is a :class:`FormatError` naming it and the
row it could not be read past.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from selectkit.data.formats import FILE_ERRORS, Format, OnError, RawRow, brief, unreadable
from selectkit.data.values import json_fields
from selectkit.errors import FormatError, RecordError


def arrow_errors() -> tuple[type[BaseException], ...]:
    """:data:`~selectkit.data.formats.FILE_ERRORS`, pyarrow's own errors, and the
    UnicodeDecodeError of a damaged file's column names."""
    import pyarrow as pa

    return (*FILE_ERRORS, pa.ArrowException, UnicodeDecodeError)


def _needs_converting(array: Any) -> bool:
    """Whether pyarrow's Python values of ``array`` may not all be JSON: a type JSON does
    not have (timestamps, bytes, decimals, maps...), or a float that is NaN or infinite."""
    import pyarrow.compute as pc
    import pyarrow.types as t

    kind = array.type
    if t.is_string(kind) or t.is_large_string(kind) or t.is_integer(kind):
        return False
    if t.is_boolean(kind) or t.is_null(kind):
        return False
    if t.is_float32(kind) or t.is_float64(kind):
        return bool(pc.any(pc.invert(pc.is_finite(array))).as_py())
    if t.is_struct(kind):
        return any(_needs_converting(array.field(i)) for i in range(kind.num_fields))
    if t.is_list(kind) or t.is_large_list(kind) or t.is_fixed_size_list(kind):
        return _needs_converting(array.flatten())
    if t.is_dictionary(kind):
        return _needs_converting(array.dictionary)
    return True


def _batch_rows(batch: Any, first: int, label: Path, on_error: OnError) -> list[Any]:
    """A batch as Python rows; a row pyarrow cannot convert (a date out of Python's range,
    an unknown time zone) is a bad record, with ``None`` in its place."""
    try:
        return batch.to_pylist()
    except Exception:  # any failure here is about the data: find the row it is in
        rows: list[Any] = []
        for offset in range(batch.num_rows):
            try:
                rows.extend(batch.slice(offset, 1).to_pylist())
            except Exception as exc:
                rows.append(None)
                on_error(
                    RecordError(
                        f"has a value Python cannot hold ({brief(exc)})",
                        path=str(label),
                        line=first + offset,
                    )
                )
        return rows


def _arrow_rows(
    batches: Iterator[Any], first: int, path: Path, on_error: OnError, label: Path
) -> Generator[RawRow, None, int]:
    """Rows of record batches numbered from ``first``, as JSON values; returns how many. A
    batch that cannot be read is a :class:`FormatError` naming ``path``; a row that is not
    JSON is a bad record at ``label`` (the source the user named)."""
    errors = arrow_errors()
    number = first
    while True:
        try:
            batch = next(batches)
            batch.validate(full=True)  # damaged offsets would crash the conversion below
            names = batch.schema.names
            convert = [
                name
                for name, column in zip(names, batch.columns, strict=True)
                if _needs_converting(column)
            ]
        except StopIteration:
            return number - first
        except errors as exc:
            raise unreadable(path, exc, number - 1, "row") from None
        if len(set(names)) != len(names):  # a row would keep only one of them
            twice = next(name for name in names if names.count(name) > 1)
            raise FormatError(f"{path}: has the column '{twice}' twice; rename one of them")
        for row in _batch_rows(batch, number, label, on_error):
            if row is not None and convert:
                try:
                    json_fields(row, convert)
                except RecordError as err:
                    on_error(RecordError(err.reason, path=str(label), line=number, field=err.field))
                    row = None
            if row is not None:
                yield RawRow(number, row)
            number += 1


class ParquetFormat(Format):
    """Apache Parquet, read with pyarrow in batches; a row's line is its 1-based row number.
    Values that are not JSON become JSON by the rule of :mod:`selectkit.data.values`."""

    name = "parquet"
    suffixes = (".parquet", ".pq")
    json_values = True

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(str(path))
        except arrow_errors() as exc:
            raise FormatError(f"{path}: not a readable Parquet file: {brief(exc)}") from None
        with contextlib.closing(parquet):
            batches = parquet.iter_batches(batch_size=4096)
            yield from _arrow_rows(batches, 1, path, on_error, path)


class HfDatasetFormat(Format):
    """A directory written by ``datasets.Dataset.save_to_disk``: ``state.json`` lists the Arrow
    files in order and ``dataset_info.json`` describes them. Read with pyarrow alone (the
    ``datasets`` package is not needed); a row's line is its 1-based row number, counted
    across the files. Values that are not JSON become JSON by the rule of
    :mod:`selectkit.data.values`."""

    name = "hf"
    suffixes = ()
    json_values = True

    def detect(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        if (path / "dataset_dict.json").is_file():
            return True
        return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()

    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        if (path / "dataset_dict.json").is_file() and not (path / "state.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if (p / "state.json").is_file())
            hint = f"; read one split, e.g. {path / splits[0]}" if splits else ""
            raise FormatError(
                f"{path} is a saved DatasetDict with splits {', '.join(splits) or 'none'}{hint}"
            )
        first = 1
        for file_path in self._files(path):
            first += yield from self._read_file(file_path, first, path, on_error)

    def _files(self, path: Path) -> list[Path]:
        """The Arrow files ``state.json`` lists, in order, each a regular file in ``path``."""
        try:
            state = json.loads((path / "state.json").read_text("utf-8"))
            names = [entry["filename"] for entry in state["_data_files"]]
        except (*FILE_ERRORS, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise FormatError(
                f"{path}: state.json does not list the dataset's Arrow files ({brief(exc)})"
            ) from None
        files = []
        for name in names:
            if not isinstance(name, str) or not name or Path(name).name != name:
                raise FormatError(f"{path}: state.json lists {name!r}, which is not a file name")
            if not (path / name).is_file():
                raise FormatError(
                    f"{path}: state.json lists {name}, which is missing or not a regular file"
                )
            files.append(path / name)
        return files

    def _read_file(
        self, file_path: Path, first: int, label: Path, on_error: OnError
    ) -> Generator[RawRow, None, int]:
        """One Arrow file (stream or file layout) of the dataset; returns its row count."""
        import pyarrow as pa

        errors = arrow_errors()
        try:
            source = pa.memory_map(str(file_path))
        except errors as exc:
            raise unreadable(file_path, exc) from None
        with source:
            try:
                reader: Any = pa.ipc.open_stream(source)
                batches: Iterator[Any] = iter(reader)
            except errors:
                source.seek(0)
                try:
                    reader = pa.ipc.open_file(source)
                except errors as exc:
                    raise FormatError(
                        f"{file_path}: not an Arrow file ({brief(exc)}); recreate the dataset"
                    ) from None
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            return (yield from _arrow_rows(batches, first, file_path, on_error, label))
