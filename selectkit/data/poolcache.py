"""Columnar pools cached by content: each input read once into ``pools/`` beside the store.

The key is a hash of everything that shapes the pool: the input's bytes (its SHA-256, which
the pool's origin records anyway; a plugin's rows, by their JSON), the format and shapes that
read it (names and classes), the reading options, the cost tokenizer's full definition, and
selectkit's version and the file layout. Paths are not in it: the same content read from
another path reuses the file, and its records and errors name the new path.

A pool is written through :class:`~selectkit.publish.Publication`: both files or neither, and
an input that cannot be read leaves nothing behind (not even the folder, when this run made
it). A pool that was read is kept whatever happens next, so a run that fails later (a budget
too large) finds it the next time. Two runs converting the same input at once both do the
work and publish the same bytes, the last rename winning; a reader of the first keeps its
open file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selectkit.cachedirs import beside, default_root
from selectkit.data.build import build, cost_unit, rows_digest
from selectkit.data.columnar import (
    LAYOUT,
    ColumnarPool,
    ColumnarWriter,
    meta_path,
    read_description,
)
from selectkit.data.formats import LoadOptions
from selectkit.publish import Publication

if TYPE_CHECKING:
    from selectkit.host import Host

#: The folder beside the feature store's that holds the columnar pools.
POOLS = "pools"


def pools_folder(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where columnar pools live for the store at ``cache_dir`` (default: the user cache)."""
    root = Path(cache_dir).expanduser() if cache_dir else default_root()
    return beside(root, POOLS)


def columnar_pool(
    rows: Any,
    options: LoadOptions,
    host: Host,
    path: str,
    origin: dict[str, Any],
    cache_dir: str | os.PathLike[str] | None,
) -> ColumnarPool | None:
    """The pool of ``rows`` (read from ``path``) as a :class:`ColumnarPool`: the cached file
    when this content was read with these options before, else a new one; ``None`` when
    there is none and the cache folder cannot be written (a read-only shared cache)."""
    tokenizer = options.tokenizer
    if isinstance(tokenizer, str):  # its definition is part of the key
        tokenizer = host.load_tokenizer(tokenizer, trust_remote_code=options.trust_remote_code)
    key = _key(rows, options, host, origin, tokenizer)
    folder = pools_folder(cache_dir)
    arrow = folder / f"{key}.arrow"
    if read_description(arrow) is None:
        made = _missing_folders(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        if not os.access(folder, os.W_OK | os.X_OK):
            return None
        try:
            _convert(rows, options, host, path, origin, arrow, tokenizer)
        except BaseException:
            _remove_made(made)
            raise
    return ColumnarPool(arrow, source=path, origin=origin)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_made(folders: list[Path]) -> None:
    """Remove the folders this run made, deepest first, if they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _convert(
    rows: Any,
    options: LoadOptions,
    host: Host,
    path: str,
    origin: dict[str, Any],
    arrow: Path,
    tokenizer: Any,
) -> None:
    """Read ``rows`` into ``arrow`` and its description, published together."""
    with Publication() as outputs:
        writer = ColumnarWriter(
            outputs.file(arrow), outputs.file(meta_path(arrow)), cost_unit(options), path
        )
        try:
            build(rows, options, host, path, dict(origin), writer, tokenizer=tokenizer)
        finally:
            writer.close()


def _key(
    rows: Any, options: LoadOptions, host: Host, origin: dict[str, Any], tokenizer: Any
) -> str:
    """The cache key of a pool (see the module's docstring)."""
    from selectkit import __version__
    from selectkit.store.fingerprints import tokenizer_digest

    source = origin.get("sha256") or rows_digest(list(rows))
    format_name = getattr(rows, "format", None) or options.format
    formats = host.formats
    reader = formats.get(format_name) if format_name else None
    settings = {
        name: getattr(options, name)
        for name in (
            "format",
            "shape",
            "id_field",
            "group_field",
            "text_field",
            "on_error",
            "template",
            "max_length",
            "truncation",
            "trust_remote_code",
            "convert_values",
        )
    }
    settings["field_map"] = sorted(options.field_map.items())
    material = {
        "layout": LAYOUT,
        "selectkit": __version__,
        "source": source,
        "format": [format_name, _qualified(reader)],
        "shapes": [[name, _qualified(cls)] for name, cls in host.shapes.items()],
        "options": settings,
        "tokenizer": tokenizer_digest(tokenizer) if tokenizer is not None else None,
    }
    text = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _qualified(cls: Any) -> str | None:
    return None if cls is None else f"{cls.__module__}.{cls.__qualname__}"
