"""One entry of the feature store: its key, layout and meta; block writes that keep resume
exact; finalizing; and streaming reads, each row checked against its checksum."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import selectkit.store.npyfiles as npyfiles
from selectkit import locks
from selectkit.errors import StoreError
from selectkit.provenance import jsonable
from selectkit.publish import atomic_writer
from selectkit.store.layout import (
    CHECKSUMS,
    ENTRY_FORMAT,
    Layout,
    RowStatus,
    check_shard,
    contiguous_runs,
    file_specs,
)
from selectkit.store.problems import (
    UNREADABLE,
    BrokenEntry,
    reason,
    repair_hint,
    sample,
    writing,
)


def plain_meta(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as plain JSON (numpy numbers become Python ones), or a clear error."""
    values = jsonable(dict(values))
    try:
        json.dumps(values, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"feature-set meta must be plain JSON: {exc}") from exc
    return values


class FeatureSet:
    """One entry of the store: its key, layout and meta; block writes; checks; streaming reads."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.id = self.path.name
        try:
            manifest = self.manifest()
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
                f"({reason(exc)}); check the store's permissions"
            ) from exc
        except (*UNREADABLE, StoreError) as exc:
            raise BrokenEntry(self.path, reason(exc)) from exc
        self.meta: dict[str, Any] = manifest.get("meta", {})
        self.created: str | None = manifest.get("created")
        self.specs = file_specs(self.layout, self.file_rows)
        self.header = {name: len(npyfiles.header_bytes(*s)) for name, s in self.specs.items()}
        self.data_files = [name for name in self.specs if name.startswith("rows-")]
        self.small_files = [name for name in self.specs if not name.startswith("rows-")]

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
            return bool(self.manifest().get("complete"))
        except UNREADABLE as exc:
            raise self.damage(reason(exc)) from exc

    def manifest(self) -> dict[str, Any]:
        manifest = json.loads((self.path / "manifest.json").read_text("utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("manifest.json does not hold a JSON object")
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        with atomic_writer(self.path / "manifest.json") as handle:
            json.dump(manifest, handle, indent=2, ensure_ascii=False, allow_nan=False)
            handle.write("\n")

    def lock_path(self, name: str) -> Path:
        return self.path / "locks" / f"{name}.lock"

    def damage(self, what: str) -> StoreError:
        return StoreError(
            f"feature set {self.id[:12]} in {self.path.parent} is damaged ({what}); "
            f"{repair_hint(self.path.parent, self.id)}"
        )

    def status(self) -> np.ndarray:
        """One :class:`RowStatus` value per pool row, read fresh from disk."""
        try:
            return np.load(self.path / "status.npy", allow_pickle=False)
        except UNREADABLE as exc:
            raise self.damage(reason(exc)) from exc

    def pending_blocks(self, shard: tuple[int, int] = (0, 1)) -> list[int]:
        """Blocks ``b`` with ``b % n == i`` that still have a PENDING row."""
        index, count = check_shard(shard)
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
        index, count = check_shard(shard)
        path = self.lock_path(f"shard-{index}-of-{count}")
        with writing(self.path.parent, f"feature set {self.id[:12]} has rows to extract"):
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
                writing(self.path.parent, f"{where} must be written"),
                locks.exclusive(self.lock_path("entry")),
            ):
                on_disk = np.load(self.path / "status.npy", mmap_mode="r", allow_pickle=False)
                if not (on_disk[pool_rows] == RowStatus.PENDING).any():
                    return False
                runs = contiguous_runs(pool_rows, self.file_rows)
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
                write(name, data[positions], self.header[name] + local * self.layout.row_bytes)
                for column, array in values.items():
                    name = f"col-{column}.npy"
                    write(name, array[positions], self.header[name] + first * 4)
                write(CHECKSUMS, sums[positions], self.header[CHECKSUMS] + first * 8)

    def _write_status(self, runs: list[tuple[np.ndarray, int]], codes: np.ndarray) -> None:
        with self._writer() as write:
            for positions, first in runs:
                write("status.npy", codes[positions], self.header["status.npy"] + first)

    def update_meta(self, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into the recorded meta (atomically, under the entry lock)."""
        values = plain_meta(values)
        with (
            writing(self.path.parent, f"feature set {self.id[:12]} must be updated"),
            locks.exclusive(self.lock_path("entry")),
        ):
            manifest = self.manifest()
            manifest["meta"] = {**manifest.get("meta", {}), **values}
            self.write_manifest(manifest)
        self.meta = manifest["meta"]

    def finalize(self) -> bool:
        """If no row is pending, record completeness and the SHA-256 of every small file
        (order, status, side columns, checksums) in the manifest.

        Idempotent; returns whether the entry is complete.
        """
        with (
            writing(self.path.parent, f"feature set {self.id[:12]} must be finalized"),
            locks.exclusive(self.lock_path("entry")),
        ):
            manifest = self.manifest()
            if manifest.get("complete"):
                return True
            if (self.status() == RowStatus.PENDING).any():
                return False
            manifest["sha256"] = {
                name: npyfiles.sha256(self.path / name) for name in self.small_files
            }
            manifest["complete"] = True
            self.write_manifest(manifest)
        return True

    def failed_rows(
        self, rows: np.ndarray, status: np.ndarray, sums: np.ndarray, columns: list[np.ndarray]
    ) -> np.ndarray:
        """Positions (in ``rows``) of recorded rows whose checksum differs."""
        recorded = status != RowStatus.PENDING
        actual = npyfiles.row_checksums(rows, [*columns, status])
        return np.flatnonzero(recorded & (actual != sums))

    # --- reading ----------------------------------------------------------------------------

    def read_side(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Status codes, checksums and side columns of rows ``start:stop``; the status first,
        so a row recorded by then has its features and checksum on disk (they are synced
        before the status is written)."""
        status = self._slice("status.npy", start, stop)
        sums = self._slice(CHECKSUMS, start, stop)
        columns = [self._slice(f"col-{c}.npy", start, stop) for c in self.layout.columns]
        return status, sums, columns

    def _slice(self, name: str, start: int, stop: int) -> np.ndarray:
        return npyfiles.read_slice(
            self.path / name, self.header[name], self.specs[name][1], start, stop
        )

    def read_stored(self, start: int, stop: int) -> np.ndarray:
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
                offset = self.header[name] + (row - number * self.file_rows) * size
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
            status, sums, columns = self.read_side(start, stop)
            out = self.read_stored(start, stop)
        except (OSError, EOFError) as exc:
            raise self.damage(reason(exc)) from exc
        pending = np.flatnonzero(status == RowStatus.PENDING)
        if pending.size:
            raise StoreError(
                f"feature set {self.id[:12]} in {self.path.parent} is not complete: pool rows "
                f"{sample(start + pending)} are not extracted yet; rerun the command that "
                "extracts them (or `selectkit featurize`) to finish it"
            )
        bad = self.failed_rows(out, status, sums, columns)
        if bad.size:
            raise self.damage(
                f"{bad.size} row(s) fail their checksum (pool rows {sample(start + bad)})"
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
            manifest = self.manifest()
            values = np.load(io.BytesIO(data), allow_pickle=False)
        except UNREADABLE as exc:
            raise self.damage(reason(exc)) from exc
        recorded = manifest.get("sha256", {}).get(file) if manifest.get("complete") else None
        if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
            raise self.damage(f"{file} changed since the entry was finalized")
        if values.shape != (self.num_rows,) or values.dtype != np.float32:
            raise self.damage(f"{file} holds {values.dtype} {values.shape}")
        return values

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: id, key, layout, row counts, size, completeness, meta."""
        counts = np.bincount(self.status(), minlength=len(RowStatus))
        try:
            manifest = self.manifest()
        except UNREADABLE as exc:
            raise self.damage(reason(exc)) from exc
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
