"""Pools in columnar storage: one Arrow IPC file per pool, read a column set at a time.

The file holds every kept record in batches of :data:`BATCH_ROWS` rows: id, group, prompt,
response, messages (JSON), the record as it was read (``raw``: the exact JSON line ``--out``
writes), its line, and its costs. A JSON file beside it holds what the pool is as a whole
(record count, cost unit, both fingerprints, the detected shape, the skipped records).

:class:`ColumnarPool` keeps in memory, once asked for them, the costs (two int64 arrays), the ids
(in Arrow) and the group codes; texts and records are read on demand, a batch at a time,
with ``pread`` into buffers that are freed after use rather than through a memory map, whose
pages would count toward the process's memory as a pass reads the whole file. Reading only
the columns a question needs (the ids, or the texts) reads only their bytes.

A pickled :class:`ColumnarPool` is a reference (the file's path and fingerprint, a few hundred
bytes): a worker process or Ray actor reopens the file, which must be on a filesystem it sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from selectkit.data.arrow import arrow_errors
from selectkit.data.formats import brief
from selectkit.data.ids import id_hashes
from selectkit.data.pool import Pool, Record, fingerprint_row, record_line, word_count
from selectkit.errors import FormatError, RecordError

#: The layout of the files; a change here makes every cached pool be rebuilt.
LAYOUT = 1
#: Rows per record batch: a record read alone reads its batch, so batches stay small.
BATCH_ROWS = 1024
#: Batches of ids copied into one compact array at a time.
_COPY_BATCHES = 8
_TEXT_COLUMNS = ("prompt", "response", "messages", "raw")


def _schema() -> Any:
    import pyarrow as pa

    # pyarrow reads a batch's body from its start to the end of the last column asked for, so
    # the small columns come first: reading the costs reads nothing of the texts.
    return pa.schema(
        [
            ("id", pa.string()),
            ("group", pa.string()),
            ("line", pa.int64()),
            ("cost", pa.int64()),
            ("response_cost", pa.int64()),
            ("prompt", pa.large_string()),
            ("response", pa.large_string()),
            ("messages", pa.large_string()),
            ("raw", pa.large_string()),
        ],
        metadata={"selectkit.pool.layout": str(LAYOUT)},
    )


def meta_path(arrow_path: Path) -> Path:
    """The JSON file that describes the pool in ``arrow_path``."""
    return arrow_path.with_suffix(".json")


class ColumnarWriter:
    """Writes a pool's records into an Arrow file in batches of :data:`BATCH_ROWS`, with their
    costs (words when no tokenizer gave them) and both fingerprints, computed as the records
    go by; :meth:`finish` writes the description beside it. A sink for
    :func:`selectkit.data.build.build`."""

    def __init__(
        self, arrow_path: Path, description_path: Path, cost_unit: str, source: str | None
    ) -> None:
        import pyarrow as pa

        self._arrow_path = arrow_path
        self._description_path = description_path
        self._source = source
        self._columns: dict[str, list[Any]] = {name: [] for name in _schema().names}
        self._fingerprint = hashlib.sha256(cost_unit.encode())
        self._content = hashlib.sha256()
        self._file = pa.OSFile(str(arrow_path), "wb")
        self._writer = pa.ipc.new_file(self._file, _schema())
        self.count = 0

    def add(
        self, records: list[Record], costs: list[int] | None, response_costs: list[int] | None
    ) -> None:
        if costs is None or response_costs is None:
            costs = [word_count(r.text) for r in records]
            response_costs = [word_count(r.response) for r in records]
        columns = self._columns
        for record, cost, response_cost in zip(records, costs, response_costs, strict=True):
            full, content = fingerprint_row(
                record.id, record.group, record.prompt, record.response, record.messages, cost
            )
            self._fingerprint.update(full.encode())
            self._fingerprint.update(b"\n")
            self._content.update(content.encode())
            self._content.update(b"\n")
            messages = record.messages
            columns["id"].append(record.id)
            columns["group"].append(record.group)
            columns["prompt"].append(record.prompt)
            columns["response"].append(record.response)
            columns["messages"].append(
                None if messages is None else json.dumps(list(messages), ensure_ascii=False)
            )
            columns["raw"].append(record_line(record))
            columns["line"].append(record.line)
            columns["cost"].append(cost)
            columns["response_cost"].append(response_cost)
            if len(columns["id"]) == BATCH_ROWS:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._columns["id"]:
            return
        batch = pa.RecordBatch.from_pydict(self._columns, schema=_schema())
        self._writer.write_batch(batch)
        self.count += batch.num_rows
        for values in self._columns.values():
            values.clear()

    def finish(
        self, cost_unit: str, origin: dict[str, Any], errors: list[RecordError]
    ) -> dict[str, Any]:
        """Close the file and write its description; returns the description."""
        self._flush()
        self._writer.close()
        self._file.close()
        description = {
            "layout": LAYOUT,
            "records": self.count,
            "batch_rows": BATCH_ROWS,
            "arrow_bytes": self._arrow_path.stat().st_size,
            "cost_unit": cost_unit,
            "fingerprint": self._fingerprint.hexdigest(),
            "content_fingerprint": self._content.hexdigest(),
            "origin": {k: origin[k] for k in ("shape", "tokenizer") if k in origin},
            "skipped": [_error_data(e, self._source) for e in errors],
        }
        with open(self._description_path, "w", encoding="utf-8") as handle:
            json.dump(description, handle, ensure_ascii=False)
        return description

    def close(self) -> None:
        """Release the file after a failure (the caller removes it)."""
        try:
            self._writer.close()
        except arrow_errors():
            pass
        self._file.close()


def _error_data(err: RecordError, source: str | None) -> dict[str, Any]:
    """A skipped record's error as data; a path in the source is kept relative to it (the
    same content may be read from another path next time, and errors name that one)."""
    path, inside = err.path, None
    if path is not None and source is not None:
        if path == source:
            path, inside = None, ""
        elif path.startswith(source + os.sep):
            path, inside = None, path[len(source) :]
    return {
        "reason": err.reason,
        "path": path,
        "inside": inside,
        "line": err.line,
        "field": err.field,
    }


def _error_text(data: Mapping[str, Any], source: str | None) -> str:
    path = data["path"]
    if data["inside"] is not None:
        path = (source or "") + data["inside"]
    return str(RecordError(data["reason"], path=path, line=data["line"], field=data["field"]))


def read_description(arrow_path: Path) -> dict[str, Any] | None:
    """The description of the pool in ``arrow_path``, or ``None`` when it is missing, not
    this layout's, or does not match the file (another run's leftovers, a damaged copy)."""
    try:
        description = json.loads(meta_path(arrow_path).read_text("utf-8"))
        size = arrow_path.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(description, dict) or description.get("layout") != LAYOUT:
        return None
    if description.get("arrow_bytes") != size:
        return None
    return description


class ColumnarPool(Pool):
    """A pool read on demand from its Arrow file (see the module's docstring).

    ``source`` names the input in the records and errors (the path the user gave, which may
    differ from where the cached file was first made from); ``origin`` is the manifest's
    description of the input. The costs, fingerprints and records are exactly those of the
    in-memory :class:`Pool` of the same input.
    """

    by_reference = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        source: str | None = None,
        origin: Mapping[str, Any] | None = None,
    ) -> None:
        self._path = Path(path).absolute()  # workers may run elsewhere in the tree
        description = read_description(self._path)
        if description is None:
            raise FormatError(
                f"{self._path}: not a complete columnar pool (its description is missing or "
                "does not match it); delete it, and selectkit makes it again from the input"
            )
        self._source = source
        self._size = int(description["records"])
        self._batch_rows = int(description["batch_rows"])
        self.cost_unit = description["cost_unit"]
        self.origin = {**(origin or {}), **description["origin"]}
        self.skipped = [_error_text(e, source) for e in description["skipped"]]
        self._fingerprint = description["fingerprint"]
        self._content_fingerprint = description["content_fingerprint"]
        self._readers: dict[tuple[str, ...], Any] = {}
        self._ids: Any = None
        self._codes: tuple[np.ndarray, list[str]] | None = None
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None
        self._last: tuple[int, list[Record]] | None = None
        self._costs: tuple[np.ndarray, np.ndarray] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """A reference, not the rows: the worker reopens the file and checks it is the same."""
        return (_reopen, (str(self._path), self._source, self.origin, self._fingerprint))

    @property
    def path(self) -> Path:
        """The Arrow file the pool reads."""
        return self._path

    @property
    def costs(self) -> np.ndarray:  # type: ignore[override]
        return self._both_costs()[0]

    @property
    def response_costs(self) -> np.ndarray:  # type: ignore[override]
        return self._both_costs()[1]

    def _both_costs(self) -> tuple[np.ndarray, np.ndarray]:
        """Both cost columns, read the first time either is asked for (a reopened pool that
        only reads texts never reads them)."""
        if self._costs is None:
            costs = np.empty(self._size, dtype=np.int64)
            response_costs = np.empty(self._size, dtype=np.int64)
            rows = self._batch_rows
            for number in self._batches():
                batch = self._batch(number, ("cost", "response_cost"))
                costs[number * rows : number * rows + batch.num_rows] = batch.column(0)
                response_costs[number * rows : number * rows + batch.num_rows] = batch.column(1)
            self._costs = (costs, response_costs)
        return self._costs

    # -- reading ------------------------------------------------------------------------

    def _damaged(self, exc: BaseException) -> FormatError:
        return FormatError(
            f"{self._path}: the columnar pool cannot be read ({brief(exc)}); delete it, and "
            "selectkit makes it again from the input"
        )

    def _reader(self, columns: tuple[str, ...]) -> Any:
        """A file reader that reads only ``columns`` (one per set, kept open)."""
        reader = self._readers.get(columns)
        if reader is None:
            import pyarrow as pa

            names = _schema().names
            options = pa.ipc.IpcReadOptions(included_fields=[names.index(c) for c in columns])
            try:
                reader = pa.ipc.open_file(pa.OSFile(str(self._path)), options=options)
            except arrow_errors() as exc:
                raise self._damaged(exc) from None
            if reader.num_record_batches != -(-self._size // self._batch_rows):
                raise self._damaged(ValueError("it holds another number of batches"))
            self._readers[columns] = reader
        return reader

    def _batch(self, number: int, columns: tuple[str, ...]) -> Any:
        try:
            batch = self._reader(columns).get_batch(number)
            batch.validate()
        except arrow_errors() as exc:
            raise self._damaged(exc) from None
        return batch

    def _batches(self) -> range:
        return range(-(-self._size // self._batch_rows))

    def _column(self, name: str) -> Iterator[Any]:
        """Column ``name``, one batch's Arrow array at a time. pyarrow reads a batch into one
        buffer of the whole batch's size (filling only the columns asked for), which the
        arrays keep alive: use each and let it go, or copy it (:meth:`_id_array`)."""
        for number in self._batches():
            yield self._batch(number, (name,)).column(0)

    def _records(self, number: int) -> list[Record]:
        """The records of batch ``number``."""
        if self._last is not None and self._last[0] == number:
            return self._last[1]
        columns = ("id", "group", "prompt", "response", "messages", "raw", "line")
        data = self._batch(number, columns).to_pydict()
        records = [
            Record(
                id=record_id,
                prompt=prompt,
                response=response,
                group=group,
                messages=None if messages is None else tuple(json.loads(messages)),
                raw=json.loads(raw),
                source=self._source,
                line=line,
            )
            for record_id, group, prompt, response, messages, raw, line in zip(
                *(data[c] for c in columns), strict=True
            )
        ]
        self._last = (number, records)
        return records

    # -- the Pool interface ---------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._size))]
        index = int(index)
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError(f"pool index {index} out of range for {self._size} records")
        return self._records(index // self._batch_rows)[index % self._batch_rows]

    def __iter__(self) -> Iterator[Record]:
        for number in self._batches():
            yield from self._records(number)

    def _id_array(self) -> Any:
        """Every id, as one chunked Arrow array (read once)."""
        if self._ids is None:
            import pyarrow as pa

            chunks: list[Any] = []
            pending: list[Any] = []
            for array in self._column("id"):
                pending.append(array)
                if len(pending) == _COPY_BATCHES:  # copied out of the batches' buffers
                    chunks.append(pa.concat_arrays(pending))
                    pending = []
            if pending:
                chunks.append(pa.concat_arrays(pending))
            self._ids = pa.chunked_array(chunks, type=pa.string())
        return self._ids

    @property
    def ids(self) -> list[str]:
        return self._id_array().to_pylist()

    def ids_of(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        import pyarrow as pa

        positions = np.asarray(indices, dtype=np.int64)
        if len(positions) and (positions.min() < 0 or positions.max() >= self._size):
            raise IndexError(f"pool positions out of range for {self._size} records")
        return self._id_array().take(pa.array(positions)).to_pylist()

    @property
    def texts(self) -> TextColumn:
        return TextColumn(self)

    def texts_of(self, start: int, stop: int) -> list[str]:
        start, stop, _ = slice(start, stop).indices(self._size)
        if start >= stop:
            return []
        rows = self._batch_rows
        texts: list[str] = []
        for number in range(start // rows, (stop - 1) // rows + 1):
            data = self._batch(number, ("prompt", "response")).to_pydict()
            first = number * rows
            low, high = max(start - first, 0), min(stop - first, rows)
            texts.extend(
                f"{prompt}\n{response}" if prompt else response
                for prompt, response in zip(
                    data["prompt"][low:high], data["response"][low:high], strict=True
                )
            )
        return texts

    @property
    def groups(self) -> list[str | None]:
        codes, names = self._group_codes()
        table: list[str | None] = [*names, None]
        return [table[c] for c in codes.tolist()]

    def group_codes(self) -> tuple[np.ndarray, list[str]]:
        codes, names = self._group_codes()
        return codes.copy(), list(names)

    def _group_codes(self) -> tuple[np.ndarray, list[str]]:
        if self._codes is None:
            import pyarrow as pa
            import pyarrow.compute as pc

            found = {g for a in self._column("group") for g in pc.unique(a).to_pylist()}
            names = sorted(g for g in found if g is not None)
            values = pa.array(names, type=pa.string())
            codes = np.empty(self._size, dtype=np.int32)
            offset = 0
            for array in self._column("group"):
                found = pc.fill_null(pc.index_in(array, value_set=values), -1)
                codes[offset : offset + len(array)] = found.to_numpy()
                offset += len(array)
            self._codes = (codes, names)
        return self._codes

    @property
    def id_positions(self) -> Mapping[str, int]:
        return _Positions(self)

    def position(self, record_id: str) -> int:
        """The index of a record id; KeyError names the id when it is not in the pool. The
        first call builds a compact index (16 bytes per record)."""
        if self._lookup is None:
            hashes = np.concatenate([id_hashes(a.to_pylist()) for a in self._column("id")])
            order = np.argsort(hashes, kind="stable")
            self._lookup = (hashes[order], order)
        hashes, order = self._lookup
        key = id_hashes([record_id])
        left, right = (
            np.searchsorted(hashes, key[0], "left"),
            np.searchsorted(hashes, key[0], "right"),
        )
        for position in order[left:right].tolist():
            if self._id_array()[position].as_py() == record_id:
                return int(position)
        raise KeyError(f"no record with id '{record_id}' in the pool")

    def json_lines(self, indices: Sequence[int] | np.ndarray) -> Iterator[str]:
        """The records at ``indices``, in that order, as they were read (one JSON line each).

        One pass over the file in pool order copies the selected lines to an unnamed
        temporary file (in ``TMPDIR``); they are then read back in the order asked. Memory
        holds two numbers per selected record, whatever the selection's size or order."""
        import pyarrow as pa

        positions = np.asarray(indices, dtype=np.int64)
        if not len(positions):
            return
        if positions.min() < 0 or positions.max() >= self._size:
            raise IndexError(f"pool positions out of range for {self._size} records")
        order = np.argsort(positions, kind="stable")
        ordered = positions[order]
        starts = np.empty(len(positions), dtype=np.int64)
        lengths = np.empty(len(positions), dtype=np.int64)
        with tempfile.TemporaryFile() as spill:  # in TMPDIR: the cache may be read-only
            numbers = ordered // self._batch_rows
            bounds = np.flatnonzero(np.diff(numbers)) + 1
            offset = 0
            for part in np.split(np.arange(len(ordered)), bounds):
                number = int(numbers[part[0]])
                local = ordered[part] - number * self._batch_rows
                raw = self._batch(number, ("raw",)).column(0).take(pa.array(local))
                data = [line.encode() for line in raw.to_pylist()]
                sizes = np.fromiter(map(len, data), dtype=np.int64, count=len(data))
                lengths[order[part]] = sizes
                starts[order[part]] = offset + np.cumsum(sizes) - sizes
                spill.write(b"".join(data))
                offset += int(sizes.sum())
            spill.flush()
            descriptor = spill.fileno()
            for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
                yield os.pread(descriptor, length, start).decode()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def content_fingerprint(self) -> str:
        return self._content_fingerprint


def _reopen(
    path: str, source: str | None, origin: Mapping[str, Any], fingerprint: str
) -> ColumnarPool:
    """A pickled :class:`ColumnarPool` reopened: the same file, with the same content."""
    pool = ColumnarPool(path, source=source, origin=origin)
    if pool.fingerprint != fingerprint:
        raise FormatError(
            f"{path}: the columnar pool changed since it was sent to this worker (its "
            "fingerprint differs); run again"
        )
    return pool


class _Positions(Mapping[str, int]):
    """A columnar pool's ids to positions, looked up in its compact index."""

    def __init__(self, pool: ColumnarPool) -> None:
        self._pool = pool

    def __getitem__(self, record_id: str) -> int:
        return self._pool.position(record_id)

    def __contains__(self, record_id: object) -> bool:
        if not isinstance(record_id, str):
            return False
        try:
            self._pool.position(record_id)
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._pool.ids)

    def __len__(self) -> int:
        return len(self._pool)


class TextColumn(Sequence[str]):
    """A columnar pool's texts (:attr:`Record.text`), read a batch at a time as they are
    iterated: a sequence as long as the pool that is never in memory whole."""

    def __init__(self, pool: ColumnarPool) -> None:
        self._pool = pool

    def __len__(self) -> int:
        return len(self._pool)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self._pool))
            if step == 1:
                return self._pool.texts_of(start, stop)
            return [self[i] for i in range(start, stop, step)]
        index = int(index)
        if index < 0:
            index += len(self._pool)
        if not 0 <= index < len(self._pool):
            raise IndexError(f"text index {index} out of range for {len(self._pool)} records")
        return self._pool.texts_of(index, index + 1)[0]

    def __iter__(self) -> Iterator[str]:
        rows = BATCH_ROWS
        for start in range(0, len(self._pool), rows):
            yield from self._pool.texts_of(start, start + rows)
