"""Loading a pool: rows from a source, shaped into records with ids, groups and costs.

Every error about a record names the file, the line (or row) and the field, and either stops the
load (``on_error="raise"``, the default) or leaves the record out and is kept on
``Pool.skipped`` (``on_error="skip"``), so a long run never fails late on a record it could have
rejected up front. A record's ``raw`` holds JSON values only (:mod:`selectkit.data.values`),
so every record that loads can be written back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selectkit.data.fields import MISSING, field_names, get_field, is_empty, kind, text_value
from selectkit.data.formats import LoadOptions, RawRow, brief
from selectkit.data.pool import Pool, Record
from selectkit.data.readers import Rows
from selectkit.data.shapes import Shape, detect_shape
from selectkit.data.values import json_row
from selectkit.errors import FormatError, ParamError, RecordError

if TYPE_CHECKING:
    from selectkit.host import Host

_CHUNK = 1 << 20


def load_pool(
    source: str | os.PathLike[str],
    options: LoadOptions | None = None,
    *,
    host: Host,
    **option_overrides: Any,
) -> Pool:
    """Read ``source`` (a file, a saved dataset directory, or anything a plugin reads) into a
    :class:`Pool`.

    ``option_overrides`` replace fields of ``options`` (``load_pool(path, shape="alpaca")``).
    Rows come from the ``selectkit_load_records`` hook, so plugins can add sources; the
    built-in reader picks the format by ``options.format`` or by the file's name. Costs are
    words, or tokens of the templated example when ``options.tokenizer`` is set (a spec for
    the ``selectkit_load_tokenizer`` hook, or, from Python, a tokenizer object).
    """
    options = _options(options, option_overrides, host)
    label = os.fspath(source)
    rows = host.load_records(label, options)
    if rows is None:
        raise FormatError(f"no reader for {label}: it is not a local file and no plugin reads it")
    path = getattr(rows, "path", None) or label
    local = Path(path).expanduser()
    try:
        origin: dict[str, Any] = {
            "path": str(local.resolve()) if local.exists() else path,
            "sha256": hash_path(local) if local.exists() else None,
            "format": getattr(rows, "format", None) or options.format,
        }
    except OSError as exc:
        raise FormatError(
            f"{path}: cannot be read to fingerprint it: {exc.strerror or brief(exc)}"
        ) from None
    return _build(rows, options, host, path, origin, list(getattr(rows, "errors", [])))


def load_records_from_list(
    rows: Sequence[Mapping[str, Any]],
    options: LoadOptions | None = None,
    *,
    host: Host,
    **option_overrides: Any,
) -> Pool:
    """A pool from in-memory rows (dicts), checked and shaped exactly like a file's rows.

    Errors name the row by its 1-based position; ``origin["sha256"]`` hashes the rows' JSON.
    """
    options = _options(options, option_overrides, host)
    raw = Rows([RawRow(index, row) for index, row in enumerate(rows, start=1)], format="list")  # type: ignore[arg-type]
    origin: dict[str, Any] = {"path": None, "sha256": _rows_digest(rows), "format": "list"}
    return _build(raw, options, host, None, origin, [])


def _rows_digest(rows: Sequence[Any]) -> str:
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


def hash_path(path: Path) -> str:
    """SHA-256 of a file's bytes; for a directory, of each file's relative name and hash, in
    name order, so renaming, adding or changing any file changes it."""
    if path.is_file():
        return _hash_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(child.relative_to(path).as_posix().encode())
        digest.update(b"\0")
        digest.update(_hash_file(child).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _options(options: LoadOptions | None, overrides: dict[str, Any], host: Host) -> LoadOptions:
    """``options`` with ``overrides`` applied, checked for values that cannot work."""
    options = options if options is not None else LoadOptions()
    if overrides:
        known = {f.name for f in dataclasses.fields(LoadOptions)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ParamError(
                f"unknown load option {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        options = dataclasses.replace(options, **overrides)
    if options.on_error not in ("raise", "skip"):
        raise ParamError(f"on_error must be 'raise' or 'skip', not '{options.on_error}'")
    if options.template not in ("auto", "chat", "plain"):
        raise ParamError(f"template must be auto, chat or plain, not '{options.template}'")
    if options.truncation not in ("left", "right"):
        raise ParamError(f"truncation must be left or right, not '{options.truncation}'")
    if options.max_length is not None and options.max_length < 1:
        raise ParamError(f"max_length must be a positive number of tokens: {options.max_length}")
    shapes = host.shapes
    if options.shape is not None and options.shape not in shapes:
        raise ParamError(f"no shape named '{options.shape}'; known: {', '.join(shapes) or 'none'}")
    canonical = {name for cls in shapes.values() for name in getattr(cls, "fields", ())}
    for key, value in options.field_map.items():
        if key not in canonical:
            hint = f"; did you mean {value}={key}?" if value in canonical else ""
            raise ParamError(
                f"field map entry '{key}={value}': '{key}' is not a shape field. The map goes "
                f"from a shape field ({', '.join(sorted(canonical))}) to the name in your "
                f"data{hint}"
            )
        if not isinstance(value, str) or not value:
            raise ParamError(f"field map entry '{key}' must name a field in the data")
    return options


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


def _build(
    rows: Sequence[Any],
    options: LoadOptions,
    host: Host,
    path: str | None,
    origin: dict[str, Any],
    errors: list[RecordError],
) -> Pool:
    """Shape, identify, group and cost the rows: the one code path of every loader."""
    skip = options.on_error == "skip"
    convert = not getattr(rows, "json_values", False)

    def fail(err: RecordError, line: int | None) -> None:
        located = _located(err, path, line)
        if not skip:
            raise located from None
        errors.append(located)

    shapes = host.shapes
    shape: Shape | None = shapes[options.shape]() if options.shape else None
    records: list[Record] = []
    first_line: dict[str, int | None] = {}
    for position, row in enumerate(rows):
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
            record_id = _record_id(data, options, position)
            group = _group(data, options)
        except RecordError as err:
            fail(err, line)
            continue
        if record_id in first_line:
            seen = first_line[record_id]
            fail(
                RecordError(
                    f"duplicate id '{record_id}' (first used at line {seen}); ids must be unique",
                    field=options.id_field,
                ),
                line,
            )
            continue
        first_line[record_id] = line
        records.append(
            Record(
                id=record_id,
                prompt=parsed.prompt,
                response=parsed.response,
                group=group,
                messages=parsed.messages,
                raw=dict(data),
                source=path,
                line=line,
            )
        )
    origin["shape"] = shape.name if shape is not None else options.shape

    costs = response_costs = None
    cost_unit = "words"
    if options.tokenizer is not None and records:
        records, costs, response_costs = _token_costs(records, options, host, fail)
        cost_unit = "tokens"
        origin["tokenizer"] = _tokenizer_name(options.tokenizer)

    errors.sort(key=lambda e: (e.line is None, e.line or 0))
    if not records:
        where = path or "the list of rows"
        if not errors:
            raise FormatError(f"{where} has no records")
        raise FormatError(
            f"{where}: no usable records, all {len(errors)} failed; the first: {errors[0]}"
        )
    return Pool(
        records,
        costs,
        response_costs=response_costs,
        cost_unit=cost_unit,
        origin=origin,
        skipped=[str(e) for e in errors],
    )


def _tokenizer_name(tokenizer: Any) -> str:
    if isinstance(tokenizer, str):
        return tokenizer
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def _token_costs(
    records: list[Record], options: LoadOptions, host: Host, fail: Any
) -> tuple[list[Record], list[int], list[int]]:
    """Token counts of each kept record's templated example and of its response."""
    from selectkit.data.examples import tokenize_many

    tokenizer: Any = options.tokenizer
    if isinstance(tokenizer, str):
        tokenizer = host.load_tokenizer(tokenizer, trust_remote_code=options.trust_remote_code)
    results = tokenize_many(
        records,
        tokenizer,
        template=options.template,
        max_length=options.max_length,
        truncation=options.truncation,
    )
    kept: list[Record] = []
    costs: list[int] = []
    response_costs: list[int] = []
    for record, result in zip(records, results, strict=True):
        if isinstance(result, RecordError):
            fail(result, record.line)
            continue
        kept.append(record)
        costs.append(len(result.input_ids))
        response_costs.append(result.response_length)
    return kept, costs, response_costs
