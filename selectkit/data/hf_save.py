"""Records written as a saved Hugging Face dataset, with pyarrow alone.

The layout is that of ``datasets.Dataset.save_to_disk`` (which ``datasets.load_from_disk`` and
:class:`~selectkit.data.arrow.HfDatasetFormat` read): one Arrow file in the IPC stream format,
``data-00000-of-00001.arrow``; ``state.json``, which lists it; and ``dataset_info.json``, whose
features are left for ``datasets`` to infer from the Arrow schema. The ``datasets`` package is
not needed.

A dataset column has one type, so the schema is found first, by a pass over the records in
batches: the fields in the order they first appear, each with the type of all its values
(pyarrow's inference per batch, unified across batches; integers and floats together become
floats, a field missing from a record is null). A field whose values cannot share a type
(text in one record, a number in another) is an :class:`~selectkit.errors.OutputError` that
names it. A second pass converts and writes the records, a batch at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from selectkit.errors import OutputError

#: The one data file of a dataset written here.
DATA_FILE = "data-00000-of-00001.arrow"
#: Records converted at a time.
BATCH_RECORDS = 4096


def _batches(lines: Iterable[str]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for line in lines:
        batch.append(json.loads(line))
        if len(batch) == BATCH_RECORDS:
            yield batch
            batch = []
    if batch:
        yield batch


def _batch_schema(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    names = list(dict.fromkeys(name for row in rows for name in row))
    fields = []
    for name in names:
        try:
            kind = pa.array([row.get(name) for row in rows]).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise _mixed(name, exc) from None
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def _mixed(name: str | None, exc: BaseException) -> OutputError:
    reason = " ".join(str(exc).split())[:160]
    which = f"field '{name}'" if name is not None else "a field"
    return OutputError(
        f"--out as a Hugging Face dataset: {which} holds values that do not share one type "
        f"({reason}); a dataset column has one type: make the field one type in the input, or "
        "write JSONL"
    )


def dataset_schema(lines: Iterable[str]) -> Any:
    """The Arrow schema that holds every record of ``lines`` (JSON objects, one per line)."""
    import pyarrow as pa

    schema = pa.schema([])
    for batch in _batches(lines):
        found = _batch_schema(batch)
        try:
            schema = pa.unify_schemas([schema, found], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            clash = (f.name for f in found if f.name in schema.names)
            name = next((n for n in clash if found.field(n).type != schema.field(n).type), None)
            raise _mixed(name, exc) from None
    return schema


def write_dataset(folder: Path, lines: Callable[[], Iterable[str]]) -> int:
    """Write the records ``lines()`` gives (called twice: the schema, then the data) as a saved
    dataset into ``folder`` (which exists); returns how many were written."""
    import pyarrow as pa

    schema = dataset_schema(lines())
    count = 0
    digest = hashlib.sha256()
    with pa.OSFile(str(folder / DATA_FILE), "wb") as sink, pa.ipc.new_stream(sink, schema) as out:
        for batch in _batches(lines()):
            try:
                table = pa.Table.from_pylist(batch, schema=schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise _mixed(None, exc) from None
            for record_batch in table.to_batches():
                out.write_batch(record_batch)
            count += len(batch)
    with open(folder / DATA_FILE, "rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    state = {
        "_data_files": [{"filename": DATA_FILE}],
        "_fingerprint": digest.hexdigest()[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    info = {"citation": "", "description": "", "features": None, "homepage": "", "license": ""}
    for name, content in (("state.json", state), ("dataset_info.json", info)):
        with open(folder / name, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2)
            handle.write("\n")
    return count
