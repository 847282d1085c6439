"""The gradient-feature store: content-addressed, memory-mappable, resumable, sharded, checked.

An entry is the directory ``<root>/<key_id>/``, named by the SHA-256 of its key (everything that
determines the features: model, data fingerprint, projection, ...). It holds ``key.json``;
``manifest.json`` (entry format, layout, meta, the SHA-256 of ``order.npy`` and, once finalized,
completeness and the SHA-256 of every small file); ``order.npy`` (the block order);
``status.npy`` (one :class:`RowStatus` byte per pool row); ``rows-00000.npy``, ... (the features
in pool order, split every ``file_rows`` rows); ``col-<name>.npy`` (float32 side columns);
``checksums.npy`` (one CRC-32 per row, of its features, side values and status byte), all plain
``.npy`` files; and ``locks/``.

Resuming gives the same bytes as an uninterrupted run: the files are preallocated with zeros
when the entry is created, the featurizer writes whole blocks deterministically, and a block's
features, side values and checksums are on disk (fsync) before its status bytes are written, so
a row is never marked done too early. A killed run leaves blocks with PENDING rows, perhaps
partly written; the rerun recomputes those whole blocks and overwrites them with the same bytes.

Sharding never corrupts: a writer claims shard ``i/n`` (blocks ``b % n == i``) and a second
claimant of the same shard is refused. Claims with different ``n`` may overlap; they only waste
work, because every block write holds the entry-wide lock, skips a block already recorded in
full, and would write identical bytes anyway. :meth:`FeatureStore.claim_request` refuses an
identical second run earlier still, before it loads a model.

Damage is never used silently: every read of rows checks each row against its checksum, and a
writer opening an entry checks it cheaply (files, sizes, the small files' SHA-256) and repairs
it: rows it can pinpoint go back to pending and are computed again, anything else is rebuilt.
A killed process's leftovers (a half-built entry folder, a manifest's temporary) are told from
a live one's by the flock their creator holds, and removed by the next writer. Reading a
complete entry needs no write access.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shlex
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from selectkit import __version__
from selectkit.errors import OutputError, StoreError
from selectkit.features import locks, npyfiles
from selectkit.manifest import jsonable
from selectkit.publish import atomic_writer, clear_stale, is_temporary

#: The entry layout written and read by this version; entries of another format are never
#: read (``cache ls`` lists them as broken, ``cache verify --repair`` removes them).
ENTRY_FORMAT = 2
DTYPES = ("float16", "float32")
FILE_BYTES = 1 << 30
CHECKSUMS = "checksums.npy"
#: Rows per piece when a whole entry is checked against its checksums.
CHECK_ROWS = 4096
_ID = re.compile(r"[0-9a-f]{64}")
_COLUMN = re.compile(r"[A-Za-z0-9_.-]+")
_LEFTOVER = (".tmp-", ".rm-")
_CLAIMS = ".claims"
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
#: Unreadable JSON, ``.npy`` or values: what reading a damaged entry's files can raise.
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, RecursionError)


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


def repair_hint(root: Path, ident: str) -> str:
    """What to run to repair entry ``ident`` of the store in ``root``."""
    where = "" if root == default_root() else f" --cache-dir {shlex.quote(str(root))}"
    return f"run `selectkit cache verify --repair {ident[:12]}{where}`, then rerun the command"


def _not_writable(root: Path, what: str, exc: OSError) -> StoreError:
    return StoreError(
        f"the feature store {root} is not writable ({exc.strerror or exc}) and {what}; set "
        "SELECTKIT_CACHE_DIR (or --cache-dir, or a method's cache_dir=) to a writable folder"
    )


@contextlib.contextmanager
def _writing(root: Path, what: str) -> Iterator[None]:
    """Turn a refused write inside the ``with`` body into a :class:`StoreError` that says the
    store is not writable and what to do."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _UNWRITABLE:
            raise _not_writable(root, what, exc) from exc
        raise


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _reason(exc: BaseException) -> str:
    """A short description of why a file could not be read."""
    if isinstance(exc, OSError):
        name = Path(os.fsdecode(exc.filename)).name if exc.filename else "a file"
        return f"{name}: {exc.strerror or exc}"
    if isinstance(exc, EOFError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _sample(rows: np.ndarray, limit: int = 5) -> str:
    """``"3, 17, 40"`` or ``"3, 17, 40, 41, 52 and 9 more"``."""
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


class BrokenEntry(StoreError):
    """An entry folder that cannot be read at all: unreadable manifest, key or block order, or
    another entry format. Nothing in it can be trusted; it is rebuilt when next needed."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.ident = path.name
        self.reason = reason
        super().__init__(
            f"feature set {path.name[:12]} in {path.parent} is broken ({reason}); "
            f"{repair_hint(path.parent, path.name)}"
        )


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
    specs[CHECKSUMS] = ((n,), "uint32")
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


@dataclass
class Check:
    """What :meth:`FeatureSet.check` found: ``problems`` (one line each, as ``cache verify``
    prints them) and what a repair does about them.

    ``rebuild`` says why the entry must be made again (damage that cannot be pinpointed);
    ``recreate`` lists files that are missing or misshapen (made again with zeros, their rows
    back to pending); ``rows`` the pool rows that fail their checksum (back to pending);
    ``changed`` the small files whose SHA-256 differs from the recorded one (a check of every
    row pinpoints the damage behind them); ``leftovers`` what dead writers left in the folder.
    """

    problems: list[str] = field(default_factory=list)
    rebuild: str | None = None
    recreate: list[str] = field(default_factory=list)
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    changed: list[str] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)
    pending: int = 0
    complete: bool = False
    rows_checked: bool = False

    @property
    def reopen(self) -> bool:
        """The manifest says complete, yet rows are pending: it must be finished again."""
        return self.complete and self.pending > 0

    @property
    def damaged(self) -> bool:
        """Whether something must be repaired before the entry can be trusted."""
        return bool(self.rebuild or self.recreate or self.rows.size or self.changed or self.reopen)

    @property
    def incomplete(self) -> bool:
        """Rows are still to be extracted (a run was stopped, or other shards are pending)."""
        return not self.complete and self.pending > 0

    @property
    def unfinalized(self) -> bool:
        """Every row is recorded, but the checksums of the small files were never taken."""
        return not self.complete and self.pending == 0


class FeatureSet:
    """One entry of the store: its key, layout and meta; block writes; checks; streaming reads."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.id = self.path.name
        try:
            manifest = self._manifest()
            version = manifest.get("format")
            if version != ENTRY_FORMAT:
                raise BrokenEntry(
                    self.path,
                    f"it has entry format {version!r}, this selectkit reads format "
                    f"{ENTRY_FORMAT}; it was made by another version",
                )
            self.key = json.loads((self.path / "key.json").read_text("utf-8"))
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
        except BrokenEntry:
            raise
        except PermissionError as exc:  # not damage: nothing may be removed for it
            raise StoreError(
                f"cannot read feature set {self.id[:12]} in {self.path.parent} "
                f"({_reason(exc)}); check the store's permissions"
            ) from exc
        except (*_UNREADABLE, StoreError) as exc:
            raise BrokenEntry(self.path, _reason(exc)) from exc
        self.meta: dict[str, Any] = manifest.get("meta", {})
        self.created: str | None = manifest.get("created")
        self._specs = _file_specs(self.layout, self.file_rows)
        self._header = {name: len(npyfiles.header_bytes(*s)) for name, s in self._specs.items()}
        self.data_files = [name for name in self._specs if name.startswith("rows-")]
        self.small_files = [name for name in self._specs if not name.startswith("rows-")]

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
        try:
            return bool(self._manifest().get("complete"))
        except _UNREADABLE as exc:
            raise self._damaged(_reason(exc)) from exc

    def _manifest(self) -> dict[str, Any]:
        manifest = json.loads((self.path / "manifest.json").read_text("utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("manifest.json does not hold a JSON object")
        return manifest

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        with atomic_writer(self.path / "manifest.json") as handle:
            json.dump(manifest, handle, indent=2, ensure_ascii=False, allow_nan=False)
            handle.write("\n")

    def _lock(self, name: str) -> Path:
        return self.path / "locks" / f"{name}.lock"

    def _damaged(self, what: str) -> StoreError:
        return StoreError(
            f"feature set {self.id[:12]} in {self.path.parent} is damaged ({what}); "
            f"{repair_hint(self.path.parent, self.id)}"
        )

    def status(self) -> np.ndarray:
        """One :class:`RowStatus` value per pool row, read fresh from disk."""
        try:
            return np.load(self.path / "status.npy", allow_pickle=False)
        except _UNREADABLE as exc:
            raise self._damaged(_reason(exc)) from exc

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
        with _writing(self.path.parent, f"feature set {self.id[:12]} has rows to extract"):
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

        SKIPPED rows are stored as zeros. Features, side values and checksums are synced to
        disk before the status bytes are written. A block already recorded in full (by an
        overlapping claim) is left untouched; returns whether the block was written.
        """
        pool_rows = self.layout.block_rows_of(block)
        where = f"block {block} of feature set {self.id[:12]}"
        data, codes = self._check_rows(where, pool_rows, rows, status)
        values = self._check_columns(where, len(pool_rows), columns)
        sums = npyfiles.row_checksums(data, [*values.values(), codes])
        try:
            with (
                _writing(self.path.parent, f"{where} must be written"),
                locks.exclusive(self._lock("entry")),
            ):
                on_disk = np.load(self.path / "status.npy", mmap_mode="r", allow_pickle=False)
                if not (on_disk[pool_rows] == RowStatus.PENDING).any():
                    return False
                runs = _runs(pool_rows, self.file_rows)
                self._write_rows(runs, data, values, sums)
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
    def _writer(self) -> Iterator[Callable[[str, np.ndarray, int], None]]:
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
        self,
        runs: list[tuple[np.ndarray, int]],
        data: np.ndarray,
        values: dict[str, np.ndarray],
        sums: np.ndarray,
    ) -> None:
        with self._writer() as write:
            for positions, first in runs:
                name = self.data_files[first // self.file_rows]
                local = first % self.file_rows
                write(name, data[positions], self._header[name] + local * self.layout.row_bytes)
                for column, array in values.items():
                    name = f"col-{column}.npy"
                    write(name, array[positions], self._header[name] + first * 4)
                write(CHECKSUMS, sums[positions], self._header[CHECKSUMS] + first * 4)

    def _write_status(self, runs: list[tuple[np.ndarray, int]], codes: np.ndarray) -> None:
        with self._writer() as write:
            for positions, first in runs:
                write("status.npy", codes[positions], self._header["status.npy"] + first)

    def update_meta(self, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the recorded meta (atomically, under the entry lock)."""
        values = _plain_meta(values)
        with (
            _writing(self.path.parent, f"feature set {self.id[:12]} must be updated"),
            locks.exclusive(self._lock("entry")),
        ):
            manifest = self._manifest()
            manifest["meta"] = {**manifest.get("meta", {}), **values}
            self._write_manifest(manifest)
        self.meta = manifest["meta"]

    def finalize(self) -> bool:
        """If no row is pending, record completeness and the SHA-256 of every small file
        (order, status, side columns, checksums) in the manifest.

        Idempotent; returns whether the entry is complete.
        """
        with (
            _writing(self.path.parent, f"feature set {self.id[:12]} must be finalized"),
            locks.exclusive(self._lock("entry")),
        ):
            manifest = self._manifest()
            if manifest.get("complete"):
                return True
            if (self.status() == RowStatus.PENDING).any():
                return False
            manifest["sha256"] = {
                name: npyfiles.sha256(self.path / name) for name in self.small_files
            }
            manifest["complete"] = True
            self._write_manifest(manifest)
        return True

    # --- checking and repairing -------------------------------------------------------------

    def check(self, rows: bool = False) -> Check:
        """What is wrong on disk, cheaply: the manifest and key, every file's presence, header
        and size, what dead writers left in the folder, and the recorded SHA-256 of the small
        files (of ``order.npy`` always, of the others once the entry is complete). With
        ``rows``, every recorded row is also checked against its checksum (a read of the whole
        entry), which pinpoints the rows behind a changed small file.
        """
        found = Check()
        try:
            manifest = self._manifest()
        except _UNREADABLE as exc:
            found.rebuild = f"manifest.json: unreadable ({_reason(exc)})"
            found.problems.append(found.rebuild)
            return found
        try:
            stored = json.loads((self.path / "key.json").read_text("utf-8"))
            if key_id(stored) != self.id:
                found.rebuild = "key.json: does not hash to the entry id (edited or corrupted)"
        except (*_UNREADABLE, StoreError) as exc:
            found.rebuild = f"key.json: unreadable ({_reason(exc)})"
        if found.rebuild:
            found.problems.append(found.rebuild)
        found.complete = bool(manifest.get("complete"))
        self._check_files(found)
        if found.rebuild:
            return found
        self._check_sums(found, manifest.get("sha256"))
        if found.rebuild:
            return found
        status = self._status_or_pending()
        found.pending = int((status == RowStatus.PENDING).sum())
        if rows:
            self._check_rows_on_disk(found, status)
        if found.changed and found.rows_checked and not found.rows.size and not found.pending:
            found.rebuild = (
                f"{', '.join(found.changed)} changed, and no row's checksum says which rows"
            )
            found.problems.append(f"cannot pinpoint the damage: {found.rebuild}")
        elif found.reopen:
            found.problems.append(
                f"{found.pending} of {self.num_rows} rows pending although the manifest says "
                "complete"
            )
        elif found.incomplete:
            found.problems.append(
                f"incomplete: {found.pending} of {self.num_rows} rows pending; rerun the "
                "featurizer to finish it"
            )
        elif found.unfinalized:
            found.problems.append(
                "not finalized: every row is recorded but no checksums were taken"
            )
        return found

    def _check_files(self, found: Check) -> None:
        """Presence, header and size of every file, and the dead writers' leftovers."""
        for name, (shape, dtype) in self._specs.items():
            problem = npyfiles.check(self.path / name, shape, dtype)
            if problem is None:
                continue
            found.problems.append(f"{name}: {problem}")
            if name == "order.npy":  # the blocks are defined by it: nothing can be pinpointed
                found.rebuild = f"order.npy: {problem}"
            else:
                found.recreate.append(name)
        if not (self.path / "locks").is_dir():
            found.problems.append("locks/: missing")
            found.recreate.append("locks")
        try:
            names = sorted(os.listdir(self.path))
        except OSError:
            names = []
        for name in names:
            path = self.path / name
            if is_temporary(name) and not locks.is_held(path):
                found.leftovers.append(path)
                found.problems.append(
                    f"{name}: left over by a killed process (`selectkit cache verify --repair` "
                    "removes it)"
                )

    def _check_sums(self, found: Check, sums: Any) -> None:
        """Compare the small files with the SHA-256 recorded for them."""
        sums = sums if isinstance(sums, dict) else {}
        for name in self.small_files:
            if name in found.recreate:
                continue
            if name != "order.npy" and not found.complete:
                continue  # recorded when the entry is finalized
            recorded = sums.get(name)
            try:
                actual = npyfiles.sha256(self.path / name)
            except OSError as exc:
                actual = _reason(exc)
            if actual == recorded:
                continue
            since = "created" if name == "order.npy" else "finalized"
            found.problems.append(f"{name}: sha256 mismatch (changed since the entry was {since})")
            if name == "order.npy":
                found.rebuild = "order.npy changed, so its blocks are unknown"
            else:
                found.changed.append(name)

    def _status_or_pending(self) -> np.ndarray:
        """The status codes, or all pending when ``status.npy`` cannot be read."""
        try:
            return self.status()
        except StoreError:
            return np.zeros(self.num_rows, np.uint8)

    def _check_rows_on_disk(self, found: Check, status: np.ndarray) -> None:
        """Every recorded row against its checksum; rows of files about to be made again
        are left out (they go back to pending anyway)."""
        found.rows_checked = True
        per_row = {"status.npy", CHECKSUMS, *(f"col-{c}.npy" for c in self.layout.columns)}
        if per_row & set(found.recreate):
            return  # every row goes back to pending
        bad = []
        for number, name in enumerate(self.data_files):
            if name in found.recreate:
                continue
            first = number * self.file_rows
            last = min(first + self.file_rows, self.num_rows)
            for start in range(first, last, CHECK_ROWS):
                stop = min(start + CHECK_ROWS, last)
                try:
                    side = self._read_side(start, stop)
                    rows = self._read_rows(start, stop)
                except (OSError, EOFError):
                    continue  # a file that cannot be read was reported by the file checks
                bad.append(start + self._mismatches(rows, *side))
        found.rows = np.concatenate(bad) if bad else np.zeros(0, np.int64)
        if found.rows.size:
            found.problems.append(
                f"{found.rows.size} row(s) fail their checksum (pool rows {_sample(found.rows)})"
            )

    def _mismatches(
        self, rows: np.ndarray, status: np.ndarray, sums: np.ndarray, columns: list[np.ndarray]
    ) -> np.ndarray:
        """Positions (in ``rows``) of recorded rows whose checksum differs."""
        recorded = status != RowStatus.PENDING
        actual = npyfiles.row_checksums(rows, [*columns, status])
        return np.flatnonzero(recorded & (actual != sums))

    def repair(self, found: Check) -> list[str]:
        """Repair what :meth:`check` found, short of a rebuild (see
        :meth:`FeatureStore.repair`): remove dead writers' leftovers, make missing or
        misshapen files again, put the rows they held and the rows that fail their checksum
        back to pending, and reopen the entry so the next run computes them again. Returns what
        was done, one phrase each."""
        if found.rebuild:
            raise StoreError(
                f"feature set {self.id[:12]} must be rebuilt ({found.rebuild}); use "
                "FeatureStore.repair"
            )
        done = []
        with _writing(self.path.parent, f"feature set {self.id[:12]} must be repaired"):
            cleared = clear_stale(self.path)
            if cleared:
                done.append(f"removed {', '.join(p.name for p in cleared)}")
            if "locks" in found.recreate:
                (self.path / "locks").mkdir(exist_ok=True)
            with locks.exclusive(self._lock("entry")):
                done += self._reset(found)
            if found.unfinalized and not found.damaged and self.finalize():
                done.append("finalized")
        return done

    def _reset(self, found: Check) -> list[str]:
        """Make damaged files again, put rows back to pending, reopen the manifest."""
        done = []
        files = [name for name in found.recreate if name != "locks"]
        for name in files:
            (self.path / name).unlink(missing_ok=True)
            shape, dtype = self._specs[name]
            npyfiles.create(self.path / name, shape, dtype)
        if files:
            done.append(f"made {', '.join(files)} again")
        pending = np.zeros(self.num_rows, bool)
        pending[found.rows] = True
        for name in files:
            if name.startswith("rows-"):
                first = self.data_files.index(name) * self.file_rows
                pending[first : first + self._specs[name][0][0]] = True
            else:  # status, side columns or checksums: every row must be computed again
                pending[:] = True
        if pending.any():
            status = self.status()
            status[pending] = RowStatus.PENDING
            fd = os.open(self.path / "status.npy", os.O_WRONLY)
            try:
                npyfiles.pwrite_all(fd, status, self._header["status.npy"])
                os.fsync(fd)
            finally:
                os.close(fd)
        manifest = self._manifest()
        status = self.status()
        pending_now = int((status == RowStatus.PENDING).sum())
        if pending_now and manifest.get("complete"):
            manifest["complete"] = False
            manifest["sha256"] = {
                k: v for k, v in manifest.get("sha256", {}).items() if k == "order.npy"
            }
            self._write_manifest(manifest)
        if pending_now:
            done.append(
                f"{pending_now} of {self.num_rows} rows are pending: rerun the command that made "
                "these features (or `selectkit featurize`) to compute them again"
            )
        return done

    def verify(self) -> list[str]:
        """Every problem found on disk, rows against their checksums included; ``[]`` = OK."""
        return self.check(rows=True).problems

    # --- reading ----------------------------------------------------------------------------

    def _read_side(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Status codes, checksums and side columns of rows ``start:stop``; the status first,
        so a row recorded by then has its features and checksum on disk (they are synced
        before the status is written)."""
        status = self._slice("status.npy", start, stop)
        sums = self._slice(CHECKSUMS, start, stop)
        columns = [self._slice(f"col-{c}.npy", start, stop) for c in self.layout.columns]
        return status, sums, columns

    def _slice(self, name: str, start: int, stop: int) -> np.ndarray:
        return npyfiles.read_slice(
            self.path / name, self._header[name], self._specs[name][1], start, stop
        )

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as stored, unchecked, read with ``preadv``."""
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
                part = view[(row - start) * size : (end - start) * size]
                npyfiles.pread_into(fd, part, offset, name)
            finally:
                os.close(fd)
            row = end
        return out

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` in pool order, as a fresh array of the stored dtype, each row
        checked against its checksum: damage is a :class:`StoreError` that names the rows and
        how to repair the entry, never wrong numbers.

        Read with ``preadv`` rather than a memory map, so streaming a store larger than memory
        keeps the process's memory bounded by the chunk size.
        """
        if not 0 <= start <= stop <= self.num_rows:
            raise StoreError(f"rows {start}:{stop} are outside 0:{self.num_rows}")
        try:
            status, sums, columns = self._read_side(start, stop)
            out = self._read_rows(start, stop)
        except (OSError, EOFError) as exc:
            raise self._damaged(_reason(exc)) from exc
        pending = np.flatnonzero(status == RowStatus.PENDING)
        if pending.size:
            raise StoreError(
                f"feature set {self.id[:12]} in {self.path.parent} is not complete: pool rows "
                f"{_sample(start + pending)} are not extracted yet; rerun the command that "
                "extracts them (or `selectkit featurize`) to finish it"
            )
        bad = self._mismatches(out, status, sums, columns)
        if bad.size:
            raise self._damaged(
                f"{bad.size} row(s) fail their checksum (pool rows {_sample(start + bad)})"
            )
        return out

    def iter_chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows)`` for consecutive chunks of up to ``chunk_rows`` rows, in pool order,
        each checked as by :meth:`read`."""
        if chunk_rows < 1:
            raise StoreError(f"chunk_rows must be at least 1, got {chunk_rows}")
        for start in range(0, self.num_rows, chunk_rows):
            yield start, self.read(start, min(start + chunk_rows, self.num_rows))

    def memmap(self) -> list[np.memmap]:
        """A read-only memory map per data file (``rows-00000.npy``, ...), for interactive use.

        Not checked against the checksums: :meth:`read` is, and ``selectkit cache verify``
        checks a whole entry."""
        return [
            np.load(self.path / name, mmap_mode="r", allow_pickle=False) for name in self.data_files
        ]

    def column(self, name: str) -> np.ndarray:
        """The float32 side column ``name``, one value per pool row; in a complete entry it
        is checked against the SHA-256 recorded when the entry was finalized."""
        if name not in self.layout.columns:
            raise StoreError(
                f"feature set {self.id[:12]} has no column '{name}'; "
                f"it has: {', '.join(self.layout.columns) or 'none'}"
            )
        file = f"col-{name}.npy"
        try:
            data = (self.path / file).read_bytes()
            manifest = self._manifest()
            values = np.load(io.BytesIO(data), allow_pickle=False)
        except _UNREADABLE as exc:
            raise self._damaged(_reason(exc)) from exc
        recorded = manifest.get("sha256", {}).get(file) if manifest.get("complete") else None
        if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
            raise self._damaged(f"{file} changed since the entry was finalized")
        if values.shape != (self.num_rows,) or values.dtype != np.float32:
            raise self._damaged(f"{file} holds {values.dtype} {values.shape}")
        return values

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: id, key, layout, row counts, size, completeness, meta."""
        counts = np.bincount(self.status(), minlength=len(RowStatus))
        try:
            manifest = self._manifest()
        except _UNREADABLE as exc:
            raise self._damaged(_reason(exc)) from exc
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
        "format": ENTRY_FORMAT,
        "layout": {
            "num_rows": layout.num_rows,
            "dim": layout.dim,
            "dtype": layout.dtype,
            "block_rows": layout.block_rows,
            "columns": list(layout.columns),
            "file_rows": file_rows,
        },
        "checksum": "crc32 of each row's bytes, then its side values and status byte",
        "sha256": {"order.npy": npyfiles.sha256(path / "order.npy")},
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


def _is_complete(path: Path) -> bool:
    """Whether the entry folder ``path`` has a manifest that says complete."""
    try:
        return json.loads((path / "manifest.json").read_text("utf-8"))["complete"] is True
    except (*_UNREADABLE, StoreError):
        return False


class RequestClaim:
    """A claim on one featurize request (pool, model, adapter, settings, shard), taken before
    anything loads, so an identical second run is refused at once rather than after loading
    the model; see :meth:`FeatureStore.claim_request`. Use it as a context manager, and
    :meth:`record` the entries the request resolved to."""

    def __init__(self, root: Path, digest: str, label: str) -> None:
        self.root = root
        self.label = label
        self._lock = root / _CLAIMS / f"{digest}.lock"
        self._record = root / _CLAIMS / f"{digest}.json"
        self._fd: int | None = None

    def __enter__(self) -> RequestClaim:
        try:
            self._lock.parent.mkdir(parents=True, exist_ok=True)
            self._fd = locks.try_lock(self._lock)
        except OSError as exc:
            if exc.errno in _UNWRITABLE:
                return self  # a read-only store: reads go ahead, a write is refused when it comes
            raise StoreError(f"cannot claim {self.label} in {self.root}: {exc}") from exc
        if self._fd is None and not self._only_reads():
            raise StoreError(
                f"another process (pid {locks.holder(self._lock) or 'unknown'}) is already "
                f"extracting these features ({self.label}) into {self.root}; wait for it to "
                "finish, or stop it"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            locks.release(self._fd)
            self._fd = None

    def _only_reads(self) -> bool:
        """Whether the entries this request resolved to last time are all complete, so the
        run holding the claim (and this one) only read them."""
        try:
            ids = json.loads(self._record.read_text("utf-8"))["entries"]
        except (*_UNREADABLE, StoreError):
            return False
        if not isinstance(ids, list) or not ids:
            return False
        return all(
            isinstance(i, str) and _ID.fullmatch(i) and _is_complete(self.root / i) for i in ids
        )

    def record(self, ids: list[str]) -> None:
        """Remember the entries the request resolved to (when this run holds the claim)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError, OutputError), atomic_writer(self._record) as handle:
            json.dump({"entries": list(ids)}, handle)


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
        """The entry stored under ``key``, or ``None`` (:class:`BrokenEntry` if unreadable)."""
        ident = key_id(key)
        if not (self.root / ident).is_dir():
            return None
        found = FeatureSet(self.root / ident)
        self._check_key(found, key)
        return found

    def _check_key(self, found: FeatureSet, key: Mapping[str, Any]) -> None:
        if canonical_key(found.key) != canonical_key(key):
            raise StoreError(
                f"key collision in {self.root}: entry {found.id[:12]} holds key "
                f"{canonical_key(found.key)} but {canonical_key(key)} has the same id; "
                f"remove the entry with `selectkit cache rm {found.id[:12]}`"
            )

    def open(
        self,
        key: Mapping[str, Any],
        layout: Layout,
        meta: Mapping[str, Any] | None = None,
        *,
        keep_block_rows: bool = False,
    ) -> FeatureSet:
        """The entry for ``key``, created (all files preallocated) if absent.

        An existing entry is checked cheaply (:meth:`FeatureSet.check`: files, sizes, the
        small files' checksums; every row when those point at damage) and repaired: rows that
        can be pinpointed go back to pending for the caller to compute again, anything else is
        rebuilt. What killed processes left is removed first. An intact complete entry is only
        read, so it opens in a read-only store.

        An existing entry must have this exact layout, except its block size when
        ``keep_block_rows`` (a later run adopts the entry's). ``meta`` is recorded only at
        creation; use :meth:`FeatureSet.update_meta` to add to it later. Two processes racing
        to create the same entry both end up with the one that was renamed into place first.
        """
        self.clear_leftovers()
        found = self._existing(key)
        if found is None:
            self._create(key, layout, _plain_meta(meta or {}))
            found = self.find(key)
        if keep_block_rows:
            layout = replace(layout, block_rows=found.layout.block_rows)
        problems = found.layout.differences(layout)
        if problems:
            raise StoreError(
                f"feature set {found.id[:12]} in {self.root} exists with another layout "
                f"(stored != requested: {'; '.join(problems)}); its key should capture "
                f"everything that shapes the features, or remove it with "
                f"`selectkit cache rm {found.id[:12]}`"
            )
        return found

    def _existing(self, key: Mapping[str, Any]) -> FeatureSet | None:
        """The checked, repaired entry of ``key``; ``None`` when there is none (any more)."""
        ident = key_id(key)
        if not (self.root / ident).is_dir():
            return None
        try:
            found = FeatureSet(self.root / ident)
        except BrokenEntry as exc:
            self._remove_damaged(ident, exc.reason)
            return None
        check = found.check()
        if check.changed and not check.rebuild:
            check = found.check(rows=True)
        if check.rebuild:
            self._remove_damaged(ident, check.rebuild)
            return None
        self._check_key(found, key)
        if check.damaged:
            found.repair(check)
        elif check.leftovers and _writable(found.path):
            clear_stale(found.path)
        return found

    def repair(self, features: FeatureSet, found: Check) -> list[str]:
        """Repair what ``found`` (from ``features.check(rows=True)``) says is wrong: rebuild
        means remove (the next run that needs these features extracts them again); the rest
        is :meth:`FeatureSet.repair`. Returns what was done."""
        if found.rebuild:
            self._remove_damaged(features.id, found.rebuild)
            return [
                "removed it (it cannot be repaired in place); the next run that needs these "
                "features extracts them again"
            ]
        return features.repair(found)

    def remove_broken(self, error: BrokenEntry) -> list[str]:
        """Remove an entry that cannot be read at all; returns what was done."""
        self._remove_damaged(error.ident, error.reason)
        return ["removed it; the next run that needs these features extracts them again"]

    def _remove_damaged(self, ident: str, why: str) -> None:
        """Remove an entry that cannot be trusted, so that it is made again."""
        try:
            self.remove(ident)
        except OSError as exc:
            if exc.errno in _UNWRITABLE:
                raise _not_writable(
                    self.root,
                    f"feature set {ident[:12]} is damaged ({why}) and must be rebuilt",
                    exc,
                ) from exc
            raise StoreError(
                f"feature set {ident[:12]} in {self.root} is damaged ({why}) and could not be "
                f"removed to be rebuilt: {exc}"
            ) from exc
        except StoreError as exc:
            raise StoreError(
                f"feature set {ident[:12]} in {self.root} is damaged ({why}) and cannot be "
                f"rebuilt now: {exc}"
            ) from exc

    def _create(self, key: Mapping[str, Any], layout: Layout, meta: Mapping[str, Any]) -> None:
        ident = key_id(key)
        file_rows = self.file_rows(layout)
        with _writing(self.root, f"feature set {ident[:12]} must be created"):
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
        temp, fd = self._temp_folder(ident)
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
        finally:
            locks.release(fd)
        _fsync_dir(self.root)

    def _temp_folder(self, ident: str) -> tuple[Path, int]:
        """A new folder to build entry ``ident`` in, and the descriptor of the lock held on
        it: the lock tells :meth:`clear_leftovers` that its builder is alive."""
        for _ in range(8):
            temp = self.root / f".tmp-{ident[:12]}-{os.getpid()}-{secrets.token_hex(4)}"
            with _writing(self.root, f"feature set {ident[:12]} must be created"):
                temp.mkdir()
            fd = locks.hold(temp)
            if fd is not None:
                return temp, fd
            # A cleaner took it for a dead builder's between mkdir and lock: it removes it.
        raise StoreError(
            f"could not reserve a folder to build feature set {ident[:12]} in {self.root}"
        )

    def clear_leftovers(self) -> list[Path]:
        """Remove what killed processes left in the store: folders of entries they were
        building or removing, and their temporaries among the request claims. A live
        process's are left alone (it holds a lock on them); nothing is done where the store is
        not writable. Returns what was removed."""
        if not self.root.is_dir() or not _writable(self.root):
            return []
        cleared = clear_stale(self.root / _CLAIMS) if (self.root / _CLAIMS).is_dir() else []
        for path in self._leftovers():
            fd = locks.hold(path)
            if fd is None:
                continue  # its builder or remover is alive
            try:
                shutil.rmtree(path)
                cleared.append(path)
            except OSError:
                pass  # reported by `cache verify` as long as it stays
            finally:
                locks.release(fd)
        return cleared

    def _leftovers(self) -> list[Path]:
        return [
            path
            for path in (sorted(self.root.iterdir()) if self.root.is_dir() else [])
            if path.name.startswith(_LEFTOVER) and path.is_dir()
        ]

    def claim_request(self, request: Mapping[str, Any], shard: tuple[int, int]) -> RequestClaim:
        """A claim on a featurize request, for a ``with`` block taken before the model loads.

        ``request`` is what the caller knows before loading anything (the pool's content
        fingerprint, the model spec and options, the adapter, the settings); with ``shard`` it
        names a lock in ``<root>/.claims``. While one process holds it, an identical request
        is refused at once, unless the entries it resolved to last time are all complete (then
        both only read). It is only a fast path: the entry's shard claim
        (:meth:`FeatureSet.claim`) stays the guarantee. In a read-only store no claim is taken.
        """
        index, count = _check_shard(shard)
        digest = key_id({"request": jsonable(dict(request)), "shard": [index, count]})
        return RequestClaim(self.root, digest, f"shard {index}/{count}")

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
            elif path.name.startswith(_LEFTOVER) and path.is_dir() and not locks.is_held(path):
                broken.append(
                    (
                        path,
                        "left over by a killed process; `selectkit cache verify --repair` "
                        "removes it",
                    )
                )
        return entries, broken

    def entries(self) -> list[FeatureSet]:
        """Every readable entry, by id; see :meth:`broken` for the rest."""
        return self._scan()[0]

    def broken(self) -> list[tuple[Path, str]]:
        """Unreadable entries (another entry format included) and what killed processes left,
        each with what is wrong."""
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
        fd = locks.hold(path)
        if fd is None:
            raise StoreError(f"feature set {ident[:12]} is being removed by another process")
        try:
            trash = self.root / f".rm-{ident[:12]}-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(path, trash)
            shutil.rmtree(trash)
        finally:
            locks.release(fd)
        return ident
