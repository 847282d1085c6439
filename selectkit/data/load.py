"""Loading a pool: rows from a source, shaped into records with ids, groups and costs.

Every error about a record names the file, the line (or row) and the field, and either stops the
load (``on_error="raise"``, the default) or leaves the record out and is kept on
``Pool.skipped`` (``on_error="skip"``), so a long run never fails late on a record it could have
rejected up front. A record's ``raw`` holds JSON values only (:mod:`selectkit.data.values`),
so every record that loads can be written back.

Rows are shaped as they are read (:mod:`selectkit.data.build`), into an in-memory pool or, for
pools larger than memory, a columnar file cached by content (:mod:`selectkit.data.poolcache`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selectkit.data.build import MemorySink, build, rows_digest
from selectkit.data.formats import LoadOptions, RawRow, brief
from selectkit.data.pool import Pool
from selectkit.data.readers import Rows
from selectkit.errors import FormatError, ParamError

if TYPE_CHECKING:
    from selectkit.host import Host

_CHUNK = 1 << 20


def load_pool(
    source: str | os.PathLike[str],
    options: LoadOptions | None = None,
    *,
    host: Host,
    columnar: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    **option_overrides: Any,
) -> Pool:
    """Read ``source`` (a file, a saved dataset directory, or anything a plugin reads) into a
    :class:`Pool`.

    ``option_overrides`` replace fields of ``options`` (``load_pool(path, shape="alpaca")``).
    Rows come from the ``selectkit_load_records`` hook, so plugins can add sources; the
    built-in reader picks the format by ``options.format`` or by the file's name. Costs are
    words, or tokens of the templated example when ``options.tokenizer`` is set (a spec for
    the ``selectkit_load_tokenizer`` hook, or, from Python, a tokenizer object).

    ``columnar`` reads the records into a columnar file in the cache beside the feature store
    whose folder is ``cache_dir`` (default: ``SELECTKIT_CACHE_DIR`` or the user cache), once
    per input content and reading options, and returns a
    :class:`~selectkit.data.columnar.ColumnarPool` over it, which reads texts on demand: for
    pools larger than memory. The records, ids, costs and fingerprints are those of the
    in-memory pool. When the file is not cached yet and the cache cannot be written (a
    read-only shared cache), the pool is read into memory instead.
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
    if columnar:
        from selectkit.data.poolcache import columnar_pool

        pool = columnar_pool(rows, options, host, path, origin, cache_dir)
        if pool is not None:
            return pool
    return build(rows, options, host, path, origin, MemorySink())


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
    origin: dict[str, Any] = {"path": None, "sha256": rows_digest(rows), "format": "list"}
    return build(raw, options, host, None, origin, MemorySink())


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
