"""Building a pool from rows: shaped, identified, grouped and costed, a block at a time, into
a sink (a list of records for an in-memory :class:`Pool`, or a columnar file: see
:mod:`selectkit.data.columnar`), so a pool never has to fit in memory as rows.

Which error a file with several problems reports does not depend on the blocks: the reader's
own errors first (the rest of the file is read before a record error is raised), then the
records' (shape, id, group, duplicate id) in file order, then the cost tokenizer's, as when
every row was read, then shaped, then tokenized.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

from selectkit.data.fields import MISSING, field_names, get_field, is_empty, kind, text_value
from selectkit.data.formats import LoadOptions, RawRow
from selectkit.data.ids import IdIndex
from selectkit.data.pool import Pool, Record
from selectkit.data.shapes import Shape, detect_shape
from selectkit.data.values import json_row
from selectkit.errors import FormatError, RecordError, SelectkitError

if TYPE_CHECKING:
    from selectkit.host import Host

#: Rows shaped before their ids are checked together (and their records costed and stored).
BLOCK_ROWS = 4096


def rows_digest(rows: Sequence[Any]) -> str:
    """SHA-256 of the rows' JSON, one line each; a row JSON cannot write (too deep, keys of
    mixed types) counts by its position: the loader refuses or skips it anyway."""
    digest = hashlib.sha256()
    for position, row in enumerate(rows, start=1):
        try:
            line = json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode()
        except (RecursionError, TypeError, ValueError):  # ValueError: lone surrogates
            line = f"<row {position}: not JSON>".encode()
        digest.update(line)
        digest.update(b"\n")
    return digest.hexdigest()


def _located(err: RecordError, path: str | None, line: int | None) -> RecordError:
    """``err`` with the path and line filled in where the raiser could not know them."""
    if err.path is not None and err.line is not None:
        return err
    located = RecordError(
        err.reason,
        path=err.path if err.path is not None else path,
        line=err.line if err.line is not None else line,
        field=err.field,
    )
    located.__cause__ = err.__cause__
    return located


def _record_id(data: Mapping[str, Any], options: LoadOptions, position: int) -> str:
    value = get_field(data, options.id_field) if options.id_field else MISSING
    if value is MISSING:
        return str(position)
    text = text_value(value)
    if text is None or is_empty(text):
        what = "empty" if text is not None or value is None else kind(value)
        raise RecordError(
            f"the id is {what}; ids must be non-empty text or numbers (or drop the field to "
            "number records by position)",
            field=options.id_field,
        )
    return text


def _group(data: Mapping[str, Any], options: LoadOptions) -> str | None:
    name = options.group_field
    if not name:
        return None
    value = get_field(data, name)
    if value is MISSING:
        raise RecordError(
            f"missing (the group field); this row has: {', '.join(field_names(data))}",
            field=name,
        )
    text = text_value(value)
    if text is None or is_empty(text):
        what = "empty" if text is not None or value is None else kind(value)
        raise RecordError(
            f"the group is {what}; groups must be non-empty text or numbers", field=name
        )
    return text


def _no_shape(data: Mapping[str, Any], shapes: Mapping[str, type[Shape]]) -> RecordError:
    have = ", ".join(field_names(data)) or "no fields"
    return RecordError(
        f"no record shape fits this row, which has: {have}. Name the shape with --shape "
        f"({', '.join(shapes)}) and --field SHAPE_FIELD=YOUR_FIELD, or give --text-field "
        "NAME to train on one text field"
    )


class Sink(Protocol):
    """Where :func:`build` puts the records it keeps, a block at a time, in pool order."""

    def add(
        self, records: list[Record], costs: list[int] | None, response_costs: list[int] | None
    ) -> None:
        """Keep ``records``; their costs in tokens, or ``None`` for words."""

    def finish(self, cost_unit: str, origin: dict[str, Any], errors: list[RecordError]) -> Any:
        """Every record is in: what :func:`build` returns."""


class MemorySink:
    """The records in a list, made into an in-memory :class:`Pool`."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.costs: list[int] = []
        self.response_costs: list[int] = []

    def add(
        self, records: list[Record], costs: list[int] | None, response_costs: list[int] | None
    ) -> None:
        self.records.extend(records)
        if costs is not None and response_costs is not None:
            self.costs.extend(costs)
            self.response_costs.extend(response_costs)

    def finish(self, cost_unit: str, origin: dict[str, Any], errors: list[RecordError]) -> Pool:
        tokens = cost_unit == "tokens"
        return Pool(
            self.records,
            self.costs if tokens else None,
            response_costs=self.response_costs if tokens else None,
            cost_unit=cost_unit,
            origin=origin,
            skipped=[str(e) for e in errors],
        )


def _drain(rows: Iterator[Any]) -> None:
    """Read what is left of the rows, so that the reader's own error (a bad line, a truncated
    file) is raised before a record's, as when every row was read before any was shaped."""
    for _ in rows:
        pass


def build(
    rows: Iterable[Any],
    options: LoadOptions,
    host: Host,
    path: str | None,
    origin: dict[str, Any],
    sink: Sink,
    tokenizer: Any = None,
) -> Any:
    """Shape, identify, group and cost the rows into ``sink``: the one code path of every
    loader. ``tokenizer`` is ``options.tokenizer`` already loaded, if it is."""
    skip = options.on_error == "skip"
    convert = not getattr(rows, "json_values", False)
    iterator = iter(rows)
    record_errors: list[RecordError] = []

    def fail(err: RecordError, line: int | None) -> None:
        located = _located(err, path, line)
        if not skip:
            _drain(iterator)
            raise located from None
        record_errors.append(located)

    shapes = host.shapes
    shape: Shape | None = shapes[options.shape]() if options.shape else None
    ids = IdIndex()
    costs = _Costs(options, host, path, tokenizer)
    position = 0
    while block := list(islice(iterator, BLOCK_ROWS)):
        outcomes: list[tuple[int | None, Any]] = []
        for row in block:
            if isinstance(row, RawRow):
                line, data = row.line, row.data
            else:  # a plugin that returned plain dicts: number them by position
                line, data = position + 1, row
            try:
                if not isinstance(data, Mapping):
                    raise RecordError(f"expected an object with fields, got {type(data).__name__}")
                if convert:  # a plugin's or an in-memory row: JSON values only (values.py)
                    data = json_row(data)
                if shape is None:
                    shape = detect_shape(data, options, shapes)
                    if shape is None:
                        raise _no_shape(data, shapes)
                parsed = shape.parse(data, options)
                record = Record(
                    id=_record_id(data, options, position),
                    prompt=parsed.prompt,
                    response=parsed.response,
                    group=_group(data, options),
                    messages=parsed.messages,
                    raw=dict(data),
                    source=path,
                    line=line,
                )
                outcomes.append((line, record))
            except RecordError as err:
                outcomes.append((line, err))
            position += 1
        kept = [r for _, r in outcomes if isinstance(r, Record)]
        first_lines = iter(ids.check([r.id for r in kept], [r.line for r in kept]))
        records = []
        for line, outcome in outcomes:
            if isinstance(outcome, RecordError):
                fail(outcome, line)
                continue
            seen = next(first_lines)
            if seen is not False:
                fail(
                    RecordError(
                        f"duplicate id '{outcome.id}' (first used at line {seen}); ids must be "
                        "unique",
                        field=options.id_field,
                    ),
                    line,
                )
                continue
            records.append(outcome)
        costs.add(records, sink, skip)
    costs.finish()
    origin["shape"] = shape.name if shape is not None else options.shape
    if options.tokenizer is not None and len(ids):
        origin["tokenizer"] = _tokenizer_name(options.tokenizer)

    errors = [*getattr(rows, "errors", []), *record_errors, *costs.errors]
    errors.sort(key=lambda e: (e.line is None, e.line or 0))
    if not costs.kept:
        where = path or "the list of rows"
        if not errors:
            raise FormatError(f"{where} has no records")
        raise FormatError(
            f"{where}: no usable records, all {len(errors)} failed; the first: {errors[0]}"
        )
    return sink.finish(cost_unit(options), origin, errors)


def cost_unit(options: LoadOptions) -> str:
    """What a pool's costs count under ``options``: tokens with a cost tokenizer, else words."""
    return "tokens" if options.tokenizer is not None else "words"


def _tokenizer_name(tokenizer: Any) -> str:
    if isinstance(tokenizer, str):
        return tokenizer
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


class _Costs:
    """Each block's records on their way to the sink, with their token counts (templated
    example and response) when there is a cost tokenizer, which is loaded for the first block.

    Token problems come after every record problem, as when the whole file was shaped before
    anything was tokenized: a record that cannot be tokenized is skipped, or, when records are
    not skipped, the first one is raised once the file has been shaped; an error of the
    tokenizer itself (it cannot be loaded, it has no chat template) likewise. From the first
    such error on, nothing more goes to the sink.
    """

    def __init__(self, options: LoadOptions, host: Host, path: str | None, tokenizer: Any) -> None:
        self._options = options
        self._host = host
        self._path = path
        self._tokenizer = tokenizer if tokenizer is not None else options.tokenizer
        self._fatal: SelectkitError | None = None
        self._first: RecordError | None = None
        self.errors: list[RecordError] = []
        self.kept = 0

    def add(self, records: list[Record], sink: Sink, skip: bool) -> None:
        if not records:
            return
        if self._options.tokenizer is None:
            self.kept += len(records)
            sink.add(records, None, None)
            return
        if self._fatal is not None:
            return
        try:
            results = self._tokenize(records)
        except RecordError:
            raise
        except SelectkitError as exc:
            self._fatal = exc
            return
        kept: list[Record] = []
        costs: list[int] = []
        response_costs: list[int] = []
        for record, result in zip(records, results, strict=True):
            if isinstance(result, RecordError):
                located = _located(result, self._path, record.line)
                if skip:
                    self.errors.append(located)
                elif self._first is None:
                    self._first = located
                continue
            kept.append(record)
            costs.append(len(result.input_ids))
            response_costs.append(result.response_length)
        if self._first is None:
            self.kept += len(kept)
            sink.add(kept, costs, response_costs)

    def _tokenize(self, records: list[Record]) -> list[Any]:
        from selectkit.data.examples import tokenize_many

        if isinstance(self._tokenizer, str):
            self._tokenizer = self._host.load_tokenizer(
                self._tokenizer, trust_remote_code=self._options.trust_remote_code
            )
        options = self._options
        return tokenize_many(
            records,
            self._tokenizer,
            template=options.template,
            max_length=options.max_length,
            truncation=options.truncation,
        )

    def finish(self) -> None:
        """Raise the tokenizer's error, or the first record it could not tokenize."""
        if self._fatal is not None:
            raise self._fatal
        if self._first is not None:
            raise self._first
