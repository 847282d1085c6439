"""The gradient-feature store: content-addressed, memory-mappable, resumable and sharded.

An entry is the directory ``<root>/<key_id>/``, named by the SHA-256 of its key (everything that
determines the features: model, data fingerprint, projection, ...). It holds ``key.json``;
``manifest.json`` (layout, meta and, once finalized, completeness and a SHA-256 per file);
``order.npy`` (the block order); ``status.npy`` (one :class:`RowStatus` byte per pool row);
``rows-00000.npy``, ... (the features in pool order, split every ``file_rows`` rows) and
``col-<name>.npy`` (float32 side columns), all plain ``.npy`` files; and ``locks/``.

Resuming gives the same bytes as an uninterrupted run: the files are preallocated with zeros
when the entry is created, the featurizer writes whole blocks deterministically, and a block's
features are on disk (fsync) before its status bytes are written, so a row is never marked done
too early. A killed run leaves blocks with PENDING rows, perhaps partly written; the rerun
recomputes those whole blocks and overwrites them with the same bytes.

Sharding never corrupts: a writer claims shard ``i/n`` (blocks ``b % n == i``) and a second
claimant of the same shard is refused. Claims with different ``n`` may overlap; they only waste
work, because every block write holds the entry-wide lock, skips a block already recorded in
full, and would write identical bytes anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from selectkit import __version__
from selectkit.errors import StoreError
from selectkit.features import locks, npyfiles
from selectkit.manifest import jsonable
from selectkit.publish import atomic_writer

DTYPES = ("float16", "float32")
FILE_BYTES = 1 << 30
_ID = re.compile(r"[0-9a-f]{64}")
_COLUMN = re.compile(r"[A-Za-z0-9_.-]+")


class RowStatus(IntEnum):
    """What ``status.npy`` records for each pool row."""

    PENDING = 0
    DONE = 1
    SKIPPED_EMPTY = 2  # no response token, so no gradient
    SKIPPED_NONFINITE = 3  # NaN or Inf gradient


def default_root() -> Path:
    """``$SELECTKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/selectkit/features``, else
    ``~/.cache/selectkit/features``."""
    if os.environ.get("SELECTKIT_CACHE_DIR"):
        return Path(os.environ["SELECTKIT_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "selectkit" / "features"


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


def human_bytes(size: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    if size < 1024:
        return f"{int(size)} B"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} TiB"


@dataclass(frozen=True, eq=False)
class Layout:
    """The shape of an entry and its blocks (the unit the featurizer computes and writes).

    Block ``b`` covers pool rows ``order[b * block_rows:(b + 1) * block_rows]``; ``order``
    (default: pool order) lets the featurizer batch examples of similar length. ``columns``
    names per-row float32 side values such as ``("loss", "grad_norm")``.
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
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise StoreError(f"layout {name} must be a positive integer, got {value!r}")
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


def _file_specs(layout: Layout, file_rows: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every ``.npy`` file of an entry with its shape and dtype."""
    n = layout.num_rows
    specs = {"order.npy": ((n,), "int64"), "status.npy": ((n,), "uint8")}
    for number, start in enumerate(range(0, n, file_rows)):
        specs[f"rows-{number:05d}.npy"] = ((min(file_rows, n - start), layout.dim), layout.dtype)
    for column in layout.columns:
        specs[f"col-{column}.npy"] = ((n,), "float32")
    return specs


def _runs(rows: np.ndarray, file_rows: int) -> list[tuple[np.ndarray, int]]:
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


def _plain_meta(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as plain JSON (numpy numbers become Python ones), or a clear error."""
    values = jsonable(dict(values))
    try:
        json.dumps(values, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"feature-set meta must be plain JSON: {exc}") from exc
    return values


def _check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    index, count = (int(v) for v in shard)
    if not 0 <= index < count:
        raise StoreError(f"shard must be (i, n) with 0 <= i < n, got {tuple(shard)}")
    return index, count


class FeatureSet:
    """One entry of the store: its key, layout and meta; block writes; checks; streaming reads."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.id = self.path.name
        try:
            self.key = json.loads((self.path / "key.json").read_text("utf-8"))
            manifest = self._manifest()
            spec = manifest["layout"]
            order = np.load(self.path / "order.npy", allow_pickle=False)
            self.layout = Layout(
                spec["num_rows"],
                spec["dim"],
                spec["dtype"],
                spec["block_rows"],
                order,
                tuple(spec["columns"]),
            )
            self.file_rows = int(spec["file_rows"])
        except (OSError, ValueError, KeyError, TypeError, StoreError) as exc:
            raise StoreError(
                f"feature set {self.id[:12]} in {self.path.parent} is broken ({exc}); "
                f"remove it with `selectkit cache rm --force {self.id[:12]}`"
            ) from exc
        self.meta: dict[str, Any] = manifest.get("meta", {})
        self.created: str | None = manifest.get("created")
        self._specs = _file_specs(self.layout, self.file_rows)
        self._header = {name: len(npyfiles.header_bytes(*s)) for name, s in self._specs.items()}
        self.data_files = [name for name in self._specs if name.startswith("rows-")]

    def __repr__(self) -> str:
        return (
            f"FeatureSet({self.id[:12]}, rows={self.num_rows}, dim={self.dim}, "
            f"dtype={self.dtype}, path={str(self.path)!r})"
        )

    @property
    def num_rows(self) -> int:
        return self.layout.num_rows

    @property
    def dim(self) -> int:
        return self.layout.dim

    @property
    def dtype(self) -> str:
        return self.layout.dtype

    @property
    def complete(self) -> bool:
        """Whether :meth:`finalize` has recorded every row and the checksums (read fresh)."""
        return bool(self._manifest().get("complete"))

    def _manifest(self) -> dict[str, Any]:
        return json.loads((self.path / "manifest.json").read_text("utf-8"))

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        with atomic_writer(self.path / "manifest.json") as handle:
            json.dump(manifest, handle, indent=2, ensure_ascii=False, allow_nan=False)
            handle.write("\n")

    def _lock(self, name: str) -> Path:
        return self.path / "locks" / f"{name}.lock"

    def status(self) -> np.ndarray:
        """One :class:`RowStatus` value per pool row, read fresh from disk."""
        return np.load(self.path / "status.npy", allow_pickle=False)

    def pending_blocks(self, shard: tuple[int, int] = (0, 1)) -> list[int]:
        """Blocks ``b`` with ``b % n == i`` that still have a PENDING row."""
        index, count = _check_shard(shard)
        pending = self.status()[self.layout.order] == RowStatus.PENDING
        blocks = np.unique(np.flatnonzero(pending) // self.layout.block_rows)
        return [int(b) for b in blocks if b % count == index]

    @contextlib.contextmanager
    def claim(self, shard: tuple[int, int] = (0, 1)) -> Iterator[None]:
        """Be the only writer of shard ``i/n`` for the ``with`` body.

        Overlapping claims with a different ``n`` are allowed: they can only write identical
        bytes into a block, one block at a time under the entry lock, so they waste work but
        never corrupt. The kernel releases the claim if the process dies.
        """
        index, count = _check_shard(shard)
        path = self._lock(f"shard-{index}-of-{count}")
        fd = locks.try_lock(path)
        if fd is None:
            raise StoreError(
                f"another process (pid {locks.holder(path) or 'unknown'}) is writing shard "
                f"{index}/{count} of entry {self.id[:12]}; wait for it to finish, or stop it"
            )
        try:
            yield
        finally:
            locks.release(fd)

    def write_block(
        self,
        block: int,
        rows: np.ndarray,
        status: np.ndarray,
        columns: Mapping[str, np.ndarray] | None = None,
    ) -> bool:
        """Store block ``block``: ``rows[j]`` and ``status[j]`` belong to pool row
        ``layout.order[block * block_rows + j]``; ``columns`` gives every layout column.

        SKIPPED rows are stored as zeros. Features are synced to disk before the status bytes
        are written. A block already recorded in full (by an overlapping claim) is left
        untouched; returns whether the block was written.
        """
        pool_rows = self.layout.block_rows_of(block)
        where = f"block {block} of feature set {self.id[:12]}"
        data, codes = self._check_rows(where, pool_rows, rows, status)
        values = self._check_columns(where, len(pool_rows), columns)
        try:
            with locks.exclusive(self._lock("entry")):
                on_disk = np.load(self.path / "status.npy", mmap_mode="r", allow_pickle=False)
                if not (on_disk[pool_rows] == RowStatus.PENDING).any():
                    return False
                runs = _runs(pool_rows, self.file_rows)
                self._write_rows(runs, data, values)
                self._write_status(runs, codes)
        except OSError as exc:
            raise StoreError(
                f"could not write {where} in {self.path}: {exc}; its rows stay pending, so fix "
                f"the cause (e.g. free disk space) and rerun to resume"
            ) from exc
        return True

    def _check_rows(
        self, where: str, pool_rows: np.ndarray, rows: Any, status: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        rows, status = np.asarray(rows), np.asarray(status)
        count = len(pool_rows)
        if rows.shape != (count, self.dim) or rows.dtype.kind not in "fiu":
            raise StoreError(
                f"{where}: rows must be numbers of shape ({count}, {self.dim}), "
                f"got {rows.dtype} {rows.shape}"
            )
        if status.shape != (count,):
            raise StoreError(f"{where}: status must have shape ({count},), got {status.shape}")
        recorded = [RowStatus.DONE, RowStatus.SKIPPED_EMPTY, RowStatus.SKIPPED_NONFINITE]
        valid = np.isin(status, recorded)
        if not valid.all():
            j = int(np.argmin(valid))
            raise StoreError(
                f"{where}: status {status[j]!r} of pool row {pool_rows[j]} is not DONE, "
                f"SKIPPED_EMPTY or SKIPPED_NONFINITE"
            )
        codes = status.astype(np.uint8)
        done = codes == RowStatus.DONE
        bad = done & ~np.isfinite(rows).all(axis=1)
        if bad.any():
            raise StoreError(
                f"{where}: pool row {pool_rows[np.argmax(bad)]} is marked DONE but its features "
                f"are not finite (NaN or Inf); mark it SKIPPED_NONFINITE"
            )
        with np.errstate(over="ignore"):
            data = rows.astype(self.dtype)
        over = done & ~np.isfinite(data).all(axis=1)
        if over.any():
            j = int(np.argmax(over))
            hint = "store this feature set as float32" if self.dtype == "float16" else "scale it"
            raise StoreError(
                f"{where}: pool row {pool_rows[j]} does not fit in {self.dtype} (largest "
                f"magnitude {np.abs(rows[j]).max():.6g}); {hint}"
            )
        data[~done] = 0
        return data, codes

    def _check_columns(
        self, where: str, count: int, columns: Mapping[str, Any] | None
    ) -> dict[str, np.ndarray]:
        given = dict(columns or {})
        expected = set(self.layout.columns)
        if set(given) != expected:
            missing, unknown = sorted(expected - set(given)), sorted(set(given) - expected)
            raise StoreError(
                f"{where}: columns must be exactly {list(self.layout.columns)} "
                f"(missing {missing}, unknown {unknown})"
            )
        values = {}
        for name in self.layout.columns:
            values[name] = np.asarray(given[name], dtype=np.float32)
            if values[name].shape != (count,):
                raise StoreError(
                    f"{where}: column '{name}' must have shape ({count},), got {values[name].shape}"
                )
        return values

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Callable[[str, np.ndarray, int], None]]:
        """A ``write(file, array, offset)`` function; every touched file is synced on success."""
        fds: dict[str, int] = {}

        def write(name: str, array: np.ndarray, offset: int) -> None:
            if name not in fds:
                fds[name] = os.open(self.path / name, os.O_WRONLY)
            npyfiles.pwrite_all(fds[name], array, offset)

        try:
            yield write
            for fd in fds.values():
                os.fsync(fd)
        finally:
            for fd in fds.values():
                os.close(fd)

    def _write_rows(
        self, runs: list[tuple[np.ndarray, int]], data: np.ndarray, values: dict[str, np.ndarray]
    ) -> None:
        with self._writing() as write:
            for positions, first in runs:
                name = self.data_files[first // self.file_rows]
                local = first % self.file_rows
                write(name, data[positions], self._header[name] + local * self.layout.row_bytes)
                for column, array in values.items():
                    name = f"col-{column}.npy"
                    write(name, array[positions], self._header[name] + first * 4)

    def _write_status(self, runs: list[tuple[np.ndarray, int]], codes: np.ndarray) -> None:
        with self._writing() as write:
            for positions, first in runs:
                write("status.npy", codes[positions], self._header["status.npy"] + first)

    def update_meta(self, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the recorded meta (atomically, under the entry lock)."""
        values = _plain_meta(values)
        with locks.exclusive(self._lock("entry")):
            manifest = self._manifest()
            manifest["meta"] = {**manifest.get("meta", {}), **values}
            self._write_manifest(manifest)
        self.meta = manifest["meta"]

    def finalize(self) -> bool:
        """If no row is pending, record completeness and a SHA-256 per file in the manifest.

        Idempotent; returns whether the entry is complete.
        """
        with locks.exclusive(self._lock("entry")):
            manifest = self._manifest()
            if manifest.get("complete"):
                return True
            if (self.status() == RowStatus.PENDING).any():
                return False
            manifest["sha256"] = {name: npyfiles.sha256(self.path / name) for name in self._specs}
            manifest["complete"] = True
            self._write_manifest(manifest)
        return True

    def verify(self) -> list[str]:
        """Problems found on disk (files, headers, sizes, checksums, completeness); ``[]`` = OK."""
        try:
            manifest = self._manifest()
        except (OSError, ValueError) as exc:
            return [f"manifest.json: unreadable ({exc})"]
        problems = []
        try:
            stored = json.loads((self.path / "key.json").read_text("utf-8"))
            if key_id(stored) != self.id:
                problems.append("key.json: does not hash to the entry id (edited or corrupted)")
        except (OSError, ValueError, StoreError) as exc:
            problems.append(f"key.json: unreadable ({exc})")
        for name, (shape, dtype) in self._specs.items():
            problem = npyfiles.check(self.path / name, shape, dtype)
            if problem:
                problems.append(f"{name}: {problem}")
        if problems:
            return problems
        pending = int((self.status() == RowStatus.PENDING).sum())
        if pending:
            claimed = " although the manifest says complete" if manifest.get("complete") else ""
            problems.append(
                f"incomplete: {pending} of {self.num_rows} rows pending{claimed}; "
                f"rerun the featurizer to finish it"
            )
        elif not manifest.get("complete"):
            problems.append("not finalized: every row is recorded but no checksums were taken")
        else:
            sums = manifest.get("sha256", {})
            problems += [
                f"{name}: sha256 mismatch (changed since the entry was finalized)"
                for name in self._specs
                if sums.get(name) != npyfiles.sha256(self.path / name)
            ]
        return problems

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` in pool order, as a fresh array of the stored dtype.

        Read with ``preadv`` rather than a memory map, so streaming a store larger than memory
        keeps the process's memory bounded by the chunk size.
        """
        if not 0 <= start <= stop <= self.num_rows:
            raise StoreError(f"rows {start}:{stop} are outside 0:{self.num_rows}")
        out = np.empty((stop - start, self.dim), self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        size = self.layout.row_bytes
        row = start
        while row < stop:
            number = row // self.file_rows
            end = min(stop, (number + 1) * self.file_rows)
            name = self.data_files[number]
            fd = os.open(self.path / name, os.O_RDONLY)
            try:
                offset = self._header[name] + (row - number * self.file_rows) * size
                npyfiles.pread_into(fd, view[(row - start) * size : (end - start) * size], offset)
            finally:
                os.close(fd)
            row = end
        return out

    def iter_chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows)`` for consecutive chunks of up to ``chunk_rows`` rows, in pool order."""
        if chunk_rows < 1:
            raise StoreError(f"chunk_rows must be at least 1, got {chunk_rows}")
        for start in range(0, self.num_rows, chunk_rows):
            yield start, self.read(start, min(start + chunk_rows, self.num_rows))

    def memmap(self) -> list[np.memmap]:
        """A read-only memory map per data file (``rows-00000.npy``, ...), for interactive use."""
        return [
            np.load(self.path / name, mmap_mode="r", allow_pickle=False) for name in self.data_files
        ]

    def column(self, name: str) -> np.ndarray:
        """The float32 side column ``name``, one value per pool row."""
        if name not in self.layout.columns:
            raise StoreError(
                f"feature set {self.id[:12]} has no column '{name}'; "
                f"it has: {', '.join(self.layout.columns) or 'none'}"
            )
        return np.load(self.path / f"col-{name}.npy", allow_pickle=False)

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: id, key, layout, row counts, size, completeness, meta."""
        counts = np.bincount(self.status(), minlength=len(RowStatus))
        manifest = self._manifest()
        return {
            "id": self.id,
            "path": str(self.path),
            "key": self.key,
            "layout": {
                "num_rows": self.num_rows,
                "dim": self.dim,
                "dtype": self.dtype,
                "block_rows": self.layout.block_rows,
                "num_blocks": self.layout.num_blocks,
                "columns": list(self.layout.columns),
                "file_rows": self.file_rows,
            },
            "rows": {
                "total": self.num_rows,
                "done": int(counts[RowStatus.DONE]),
                "skipped_empty": int(counts[RowStatus.SKIPPED_EMPTY]),
                "skipped_nonfinite": int(counts[RowStatus.SKIPPED_NONFINITE]),
                "pending": int(counts[RowStatus.PENDING]),
            },
            "bytes": sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file()),
            "complete": bool(manifest.get("complete")),
            "created": manifest.get("created"),
            "selectkit_version": manifest.get("selectkit_version"),
            "meta": manifest.get("meta", {}),
        }


def _build_entry(
    path: Path,
    key: Mapping[str, Any],
    layout: Layout,
    meta: Mapping[str, Any],
    file_rows: int,
) -> None:
    """Write a new entry's files into ``path`` (a temporary directory)."""
    (path / "locks").mkdir()
    with atomic_writer(path / "key.json") as handle:
        json.dump(
            json.loads(canonical_key(key)), handle, indent=2, sort_keys=True, ensure_ascii=False
        )
        handle.write("\n")
    for name, (shape, dtype) in _file_specs(layout, file_rows).items():
        npyfiles.create(path / name, shape, dtype, layout.order if name == "order.npy" else None)
    manifest = {
        "format": 1,
        "layout": {
            "num_rows": layout.num_rows,
            "dim": layout.dim,
            "dtype": layout.dtype,
            "block_rows": layout.block_rows,
            "columns": list(layout.columns),
            "file_rows": file_rows,
        },
        "meta": dict(meta),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "selectkit_version": __version__,
        "complete": False,
    }
    with atomic_writer(path / "manifest.json") as handle:
        json.dump(manifest, handle, indent=2, ensure_ascii=False, allow_nan=False)
        handle.write("\n")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FeatureStore:
    """A directory of feature sets, one per key (default root: :func:`default_root`).

    ``file_bytes`` is the target size of each data file; files hold a whole number of blocks.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, file_bytes: int = FILE_BYTES):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.file_bytes = file_bytes

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    def file_rows(self, layout: Layout) -> int:
        """Rows per data file for ``layout``: whole blocks, about ``file_bytes`` each."""
        per_block = layout.block_rows * layout.row_bytes
        blocks = min(max(1, self.file_bytes // per_block), layout.num_blocks)
        return blocks * layout.block_rows

    def find(self, key: Mapping[str, Any]) -> FeatureSet | None:
        """The entry stored under ``key``, or ``None``."""
        ident = key_id(key)
        if not (self.root / ident).is_dir():
            return None
        found = FeatureSet(self.root / ident)
        if canonical_key(found.key) != canonical_key(key):
            raise StoreError(
                f"key collision in {self.root}: entry {ident[:12]} holds key "
                f"{canonical_key(found.key)} but {canonical_key(key)} has the same id; "
                f"remove the entry with `selectkit cache rm {ident[:12]}`"
            )
        return found

    def open(
        self, key: Mapping[str, Any], layout: Layout, meta: Mapping[str, Any] | None = None
    ) -> FeatureSet:
        """The entry for ``key``, created (all files preallocated) if absent.

        An existing entry must have this exact layout. ``meta`` is recorded only at creation;
        use :meth:`FeatureSet.update_meta` to add to it later. Two processes racing to create
        the same entry both end up with the one that was renamed into place first.
        """
        found = self.find(key)
        if found is None:
            self._create(key, layout, _plain_meta(meta or {}))
            found = self.find(key)
        problems = found.layout.differences(layout)
        if problems:
            raise StoreError(
                f"feature set {found.id[:12]} in {self.root} exists with another layout "
                f"(stored != requested: {'; '.join(problems)}); its key should capture "
                f"everything that shapes the features, or remove it with "
                f"`selectkit cache rm {found.id[:12]}`"
            )
        return found

    def _create(self, key: Mapping[str, Any], layout: Layout, meta: Mapping[str, Any]) -> None:
        ident = key_id(key)
        file_rows = self.file_rows(layout)
        self.root.mkdir(parents=True, exist_ok=True)
        needed = sum(npyfiles.file_size(*spec) for spec in _file_specs(layout, file_rows).values())
        free = shutil.disk_usage(self.root).free
        if needed > free:
            raise StoreError(
                f"not enough disk space in {self.root} for {layout.num_rows} x {layout.dim} "
                f"{layout.dtype} features: needs {human_bytes(needed)} ({needed} bytes), "
                f"{human_bytes(free)} ({free} bytes) free; free some space, remove old feature "
                f"sets (`selectkit cache rm`), or set SELECTKIT_CACHE_DIR to a bigger disk"
            )
        temp = self.root / f".tmp-{ident[:12]}-{os.getpid()}-{secrets.token_hex(4)}"
        temp.mkdir()
        try:
            _build_entry(temp, key, layout, meta, file_rows)
            os.rename(temp, self.root / ident)
        except OSError as exc:
            shutil.rmtree(temp, ignore_errors=True)
            if not (self.root / ident).is_dir():
                raise StoreError(
                    f"could not create feature set {ident[:12]} in {self.root}: {exc}"
                ) from exc
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        _fsync_dir(self.root)

    def resolve(self, id_or_prefix: str) -> str:
        """The full id of the one entry whose id starts with ``id_or_prefix``."""
        prefix = id_or_prefix.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{1,64}", prefix):
            raise StoreError(
                f"'{id_or_prefix}' is not a feature-set id (hex digits, as `selectkit cache ls` "
                f"shows them)"
            )
        found = sorted(
            path.name
            for path in (self.root.iterdir() if self.root.is_dir() else [])
            if _ID.fullmatch(path.name) and path.name.startswith(prefix)
        )
        if not found:
            raise StoreError(
                f"no feature set '{prefix}' in {self.root}; `selectkit cache ls` lists them"
            )
        if len(found) > 1:
            raise StoreError(
                f"'{prefix}' is ambiguous in {self.root}: it matches {', '.join(found)}; "
                f"give more digits"
            )
        return found[0]

    def get(self, id_or_prefix: str) -> FeatureSet:
        """The entry whose id is or starts with ``id_or_prefix`` (like git's short ids)."""
        return FeatureSet(self.root / self.resolve(id_or_prefix))

    def _scan(self) -> tuple[list[FeatureSet], list[tuple[Path, str]]]:
        entries, broken = [], []
        for path in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if _ID.fullmatch(path.name) and path.is_dir():
                try:
                    entries.append(FeatureSet(path))
                except StoreError as exc:
                    broken.append((path, str(exc)))
            elif path.name.startswith((".tmp-", ".rm-")):
                broken.append(
                    (
                        path,
                        "left over from an interrupted creation or removal; delete it if no "
                        "selectkit process is running",
                    )
                )
        return entries, broken

    def entries(self) -> list[FeatureSet]:
        """Every readable entry, by id; see :meth:`broken` for the rest."""
        return self._scan()[0]

    def broken(self) -> list[tuple[Path, str]]:
        """Unreadable entries and leftover temporary directories, each with what is wrong."""
        return self._scan()[1]

    def remove(self, id_or_prefix: str, force: bool = False) -> str:
        """Delete an entry (broken ones too) and return its id.

        Refuses while a live process holds a shard claim on it, unless ``force``.
        """
        ident = self.resolve(id_or_prefix)
        path = self.root / ident
        users = [
            f"{lock.stem.replace('-of-', '/').replace('-', ' ')} by pid "
            f"{locks.holder(lock) or 'unknown'}"
            for lock in sorted((path / "locks").glob("shard-*.lock"))
            if locks.is_held(lock)
        ]
        if users and not force:
            raise StoreError(
                f"feature set {ident[:12]} is in use ({', '.join(users)}); stop that process "
                f"first, or force the removal"
            )
        trash = self.root / f".rm-{ident[:12]}-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(path, trash)
        shutil.rmtree(trash)
        return ident
