"""The feature store as a whole: a folder of entries, one per key; opening (checked and
repaired), creating (built aside and renamed into place), finding, listing and removing them,
and clearing what killed processes left."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import selectkit.store.npyfiles as npyfiles
from selectkit import __version__, locks
from selectkit.cachedirs import default_root
from selectkit.errors import StoreError
from selectkit.provenance import jsonable
from selectkit.publish import atomic_writer, clear_stale, fsync_path
from selectkit.resources import human_bytes
from selectkit.store.claims import CLAIMS, RequestClaim
from selectkit.store.entry import FeatureSet, plain_meta
from selectkit.store.integrity import Check, check_entry, repair_entry
from selectkit.store.layout import (
    ENTRY_FORMAT,
    Layout,
    canonical_key,
    check_shard,
    file_specs,
    key_id,
)
from selectkit.store.problems import (
    UNWRITABLE,
    BrokenEntry,
    not_writable,
    writable,
    writing,
)

#: One block as a featurizer computes it: its rows, their status codes, and the layout's columns.
Block = tuple[np.ndarray, np.ndarray, Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class FillRequest:
    """One entry of :meth:`FeatureStore.fill_together`: its key, layout and creation meta."""

    key: Mapping[str, Any]
    layout: Layout
    meta: Mapping[str, Any] | None = None


FILE_BYTES = 1 << 30
_ID = re.compile(r"[0-9a-f]{64}")
_LEFTOVER = (".tmp-", ".rm-")


def build_entry(
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
    for name, (shape, dtype) in file_specs(layout, file_rows).items():
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
        "checksum": "xxh3_64 of each row's bytes, seeded by xxh3_64 of its side values and status",
        "sha256": {"order.npy": npyfiles.sha256(path / "order.npy")},
        "meta": dict(meta),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "selectkit_version": __version__,
        "complete": False,
    }
    with atomic_writer(path / "manifest.json") as handle:
        json.dump(manifest, handle, indent=2, ensure_ascii=False, allow_nan=False)
        handle.write("\n")


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
        """Rows per data file for ``layout``: whole blocks, about ``file_bytes`` each (one
        file when rows have no bytes: an entry of columns only)."""
        per_block = layout.block_rows * layout.row_bytes
        blocks = min(max(1, self.file_bytes // max(1, per_block)), layout.num_blocks)
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

        An existing entry is checked cheaply (:func:`check_entry`: files, sizes, the small
        files' checksums; every row when those point at damage) and repaired: rows that
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
            self._create(key, layout, plain_meta(meta or {}))
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

    def fill(
        self,
        key: Mapping[str, Any],
        layout: Layout,
        compute: Callable[[Layout, int], Block],
        *,
        meta: Mapping[str, Any] | None = None,
        shard: tuple[int, int] = (0, 1),
        progress: bool | Callable[[int], None] = False,
    ) -> FeatureSet:
        """The entry for ``key`` with every block of ``shard`` stored: the store's one write
        operation, and the unit a distributed run schedules (any number of processes, any
        shards, in any order, end with the same bytes).

        The entry is opened as :meth:`open` does (created, or checked and repaired; its block
        size kept); a complete entry is only read. Otherwise the shard is claimed (a second
        writer of the same shard is refused), ``compute(layout, block)`` gives each pending
        block's ``(rows, status, columns)``, each block is written as it comes (a killed run
        resumes from the next one), the shard's time is recorded and the entry finalized.

        ``progress``: a bar of the shard's blocks, or a callable told how many of the shard's
        rows are done (those found done at once, then each block's as it is written), for one
        bar over many shards and processes.
        """
        (features,) = self.fill_together(
            [FillRequest(key, layout, meta)],
            lambda layout, block, wanted: [compute(layout, block)],
            shard=shard,
            progress=progress,
        )
        return features

    def fill_together(
        self,
        requests: Sequence[FillRequest],
        compute: Callable[[Layout, int, list[int]], Sequence[Block]],
        *,
        shard: tuple[int, int] = (0, 1),
        progress: bool | Callable[[int], None] = False,
    ) -> list[FeatureSet]:
        """:meth:`fill` for several entries whose rows come from one computation per block
        (views of one pass: gradient types, projections). ``compute(layout, block, wanted)``
        gives the blocks of the requests at positions ``wanted``, in that order; each block is
        computed once for every entry that still needs it. The requests' layouts must share
        the row order (their pass's); entries made earlier with another block size are filled
        in a pass of their own. ``progress`` counts rows of every entry."""
        from tqdm.auto import tqdm

        entries = [self.open(r.key, r.layout, meta=r.meta, keep_block_rows=True) for r in requests]
        report = progress if callable(progress) else None
        passes: dict[int, list[int]] = {}
        for index, features in enumerate(entries):
            if features.complete:
                if report:
                    report(shard_row_count(features.layout, shard))
            else:
                passes.setdefault(features.layout.block_rows, []).append(index)
        for members in passes.values():
            layout = entries[members[0]].layout
            with contextlib.ExitStack() as held:
                for index in members:
                    held.enter_context(entries[index].claim(shard))
                pending = {index: set(entries[index].pending_blocks(shard)) for index in members}
                if report:
                    for index in members:
                        waiting = sum(len(layout.block_rows_of(b)) for b in pending[index])
                        report(shard_row_count(layout, shard) - waiting)
                blocks = sorted(set().union(*pending.values()))
                started = time.perf_counter()
                label = f"features {entries[members[0]].id[:12]} shard {shard[0]}/{shard[1]}"
                for block in tqdm(blocks, desc=label, unit="block", disable=progress is not True):
                    wanted = [index for index in members if block in pending[index]]
                    for index, computed in zip(wanted, compute(layout, block, wanted), strict=True):
                        entries[index].write_block(block, *computed)
                    if report:
                        report(len(layout.block_rows_of(block)) * len(wanted))
                elapsed = round(time.perf_counter() - started, 3)
                for index in members:
                    if pending[index]:
                        entries[index].update_meta(
                            {f"seconds_shard_{shard[0]}_of_{shard[1]}": elapsed}
                        )
                    entries[index].finalize()
        return entries

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
        check = check_entry(found)
        if check.changed and not check.rebuild:
            check = check_entry(found, rows=True)
        if check.rebuild:
            self._remove_damaged(ident, check.rebuild)
            return None
        self._check_key(found, key)
        if check.damaged:
            repair_entry(found, check)
        elif check.leftovers and writable(found.path):
            clear_stale(found.path)
        return found

    def repair(self, features: FeatureSet, found: Check) -> list[str]:
        """Repair what ``found`` (from ``check_entry(features, rows=True)``) says is wrong: rebuild
        means remove (the next run that needs these features extracts them again); the rest
        is :func:`~selectkit.store.integrity.repair_entry`. Returns what was done."""
        if found.rebuild:
            self._remove_damaged(features.id, found.rebuild)
            return [
                "removed it (it cannot be repaired in place); the next run that needs these "
                "features extracts them again"
            ]
        return repair_entry(features, found)

    def remove_broken(self, error: BrokenEntry) -> list[str]:
        """Remove an entry that cannot be read at all; returns what was done."""
        self._remove_damaged(error.ident, error.reason)
        return ["removed it; the next run that needs these features extracts them again"]

    def _remove_damaged(self, ident: str, why: str) -> None:
        """Remove an entry that cannot be trusted, so that it is made again."""
        try:
            self.remove(ident)
        except OSError as exc:
            if exc.errno in UNWRITABLE:
                raise not_writable(
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
        with writing(self.root, f"feature set {ident[:12]} must be created"):
            self.root.mkdir(parents=True, exist_ok=True)
        needed = sum(npyfiles.file_size(*spec) for spec in file_specs(layout, file_rows).values())
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
            build_entry(temp, key, layout, meta, file_rows)
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
        fsync_path(self.root)

    def _temp_folder(self, ident: str) -> tuple[Path, int]:
        """A new folder to build entry ``ident`` in, and the descriptor of the lock held on
        it: the lock tells :meth:`clear_leftovers` that its builder is alive."""
        for _ in range(8):
            temp = self.root / f".tmp-{ident[:12]}-{os.getpid()}-{secrets.token_hex(4)}"
            with writing(self.root, f"feature set {ident[:12]} must be created"):
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
        if not self.root.is_dir() or not writable(self.root):
            return []
        cleared = clear_stale(self.root / CLAIMS) if (self.root / CLAIMS).is_dir() else []
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
        index, count = check_shard(shard)
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


def shard_row_count(layout: Layout, shard: tuple[int, int]) -> int:
    """How many rows the blocks of ``shard`` (``b % n == i``) hold."""
    return shard_rows(layout.num_rows, layout.block_rows, shard)


def shard_rows(rows: int, block_rows: int, shard: tuple[int, int]) -> int:
    """How many of ``rows`` rows, in blocks of ``block_rows``, the blocks of ``shard``
    (``b % n == i``) hold: every block is full but the last."""
    index, count = check_shard(shard)
    blocks = -(-rows // block_rows)
    full = len(range(index, blocks - 1, count))
    last = (blocks - 1) % count == index
    return full * block_rows + (rows - (blocks - 1) * block_rows if last else 0)
