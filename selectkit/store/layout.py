"""How a feature-store entry lies on disk: where the store is, how an entry is named (the
SHA-256 of its key), its files (:func:`file_specs`) and the blocks its rows are written in
(:class:`Layout`), and what each row's status byte means."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from selectkit.errors import StoreError

#: The entry layout written and read by this version; entries of another format are never
#: read (``cache ls`` lists them as broken, ``cache verify --repair`` removes them).
ENTRY_FORMAT = 2
DTYPES = ("float16", "float32")
CHECKSUMS = "checksums.npy"
_COLUMN = re.compile(r"[A-Za-z0-9_.-]+")


class RowStatus(IntEnum):
    """What ``status.npy`` records for each pool row."""

    PENDING = 0
    DONE = 1
    SKIPPED_EMPTY = 2  # no response token, so no gradient
    SKIPPED_NONFINITE = 3  # NaN or Inf gradient


def canonical_key(key: Mapping[str, Any]) -> str:
    """The one JSON text of ``key`` that its id hashes: sorted keys, no spaces, UTF-8."""
    if not isinstance(key, Mapping):
        raise StoreError(f"a feature-set key must be a mapping, got {type(key).__name__}")
    try:
        return json.dumps(
            dict(key), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"a feature-set key must hold plain JSON values (str, int, finite float, bool, None, "
            f"lists and dicts of them): {exc}"
        ) from exc


def key_id(key: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the key's canonical JSON: the name of its entry's directory."""
    return hashlib.sha256(canonical_key(key).encode("utf-8")).hexdigest()


@dataclass(frozen=True, eq=False)
class Layout:
    """The shape of an entry and its blocks (the unit the featurizer computes and writes).

    Block ``b`` covers pool rows ``order[b * block_rows:(b + 1) * block_rows]``; ``order``
    (default: pool order) lets the featurizer batch examples of similar length. ``columns``
    names per-row float32 side values such as ``("loss", "grad_norm")``. ``dim`` 0 makes an
    entry of columns only, with no feature row (per-record statistics of a forward pass).
    """

    num_rows: int
    dim: int
    dtype: str
    block_rows: int
    order: np.ndarray | None = None
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("num_rows", "dim", "block_rows"):
            value = getattr(self, name)
            least = 0 if name == "dim" else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                kind = "a whole number >= 0" if name == "dim" else "a positive integer"
                raise StoreError(f"layout {name} must be {kind}, got {value!r}")
            object.__setattr__(self, name, int(value))
        try:
            dtype = np.dtype(self.dtype).name
        except TypeError:
            dtype = None
        if dtype not in DTYPES:
            raise StoreError(f"layout dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        object.__setattr__(self, "dtype", dtype)
        order = np.arange(self.num_rows) if self.order is None else np.asarray(self.order)
        if (
            order.shape != (self.num_rows,)
            or order.dtype.kind not in "iu"
            or not np.array_equal(np.sort(order), np.arange(self.num_rows))
        ):
            raise StoreError(f"layout order must be a permutation of range({self.num_rows})")
        order = order.astype(np.int64)
        order.setflags(write=False)
        object.__setattr__(self, "order", order)
        if isinstance(self.columns, str):
            raise StoreError(f"layout columns must be a tuple of names, got {self.columns!r}")
        columns = tuple(self.columns)
        bad = [c for c in columns if not isinstance(c, str) or not _COLUMN.fullmatch(c)]
        if bad or len(set(columns)) != len(columns):
            raise StoreError(
                f"layout columns must be distinct names of letters, digits, '_', '.', '-': "
                f"got {columns!r}"
            )
        if self.dim == 0 and not columns:
            raise StoreError("a layout of dim 0 (no feature rows) must have columns")
        object.__setattr__(self, "columns", columns)

    @property
    def num_blocks(self) -> int:
        return -(-self.num_rows // self.block_rows)

    @property
    def row_bytes(self) -> int:
        return self.dim * np.dtype(self.dtype).itemsize

    def block_rows_of(self, block: int) -> np.ndarray:
        """The pool indices of block ``block``, in the order its rows are written."""
        if not 0 <= block < self.num_blocks:
            raise StoreError(f"block {block} does not exist: blocks are 0..{self.num_blocks - 1}")
        return self.order[block * self.block_rows : (block + 1) * self.block_rows]

    def differences(self, other: Layout) -> list[str]:
        """What differs from ``other``, as ``field: self != other`` phrases."""
        found = [
            f"{name}: {getattr(self, name)!r} != {getattr(other, name)!r}"
            for name in ("num_rows", "dim", "dtype", "block_rows", "columns")
            if getattr(self, name) != getattr(other, name)
        ]
        if not np.array_equal(self.order, other.order):
            found.append("order: the block order differs")
        return found


def file_specs(layout: Layout, file_rows: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every ``.npy`` file of an entry with its shape and dtype."""
    n = layout.num_rows
    specs = {"order.npy": ((n,), "int64"), "status.npy": ((n,), "uint8")}
    for number, start in enumerate(range(0, n, file_rows)):
        specs[f"rows-{number:05d}.npy"] = ((min(file_rows, n - start), layout.dim), layout.dtype)
    for column in layout.columns:
        specs[f"col-{column}.npy"] = ((n,), "float32")
    specs[CHECKSUMS] = ((n,), "uint64")
    return specs


def contiguous_runs(rows: np.ndarray, file_rows: int) -> list[tuple[np.ndarray, int]]:
    """Split pool indices into runs of consecutive rows within one data file.

    Returns ``(positions in rows, first pool row)`` per run, so each run is one write.
    """
    positions = np.argsort(rows, kind="stable")
    ordered = rows[positions]
    cuts = np.flatnonzero((np.diff(ordered) != 1) | (np.diff(ordered // file_rows) != 0)) + 1
    return [
        (part, int(first[0]))
        for part, first in zip(np.split(positions, cuts), np.split(ordered, cuts), strict=True)
    ]


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    index, count = (int(v) for v in shard)
    if not 0 <= index < count:
        raise StoreError(f"shard must be (i, n) with 0 <= i < n, got {tuple(shard)}")
    return index, count
