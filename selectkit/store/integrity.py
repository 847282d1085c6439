"""Checking a feature-store entry and repairing it: files, sizes, the recorded SHA-256 of
the small files and, on demand, every row against its checksum; then putting what can be
pinpointed back to pending for the next run to compute again."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import selectkit.store.npyfiles as npyfiles
from selectkit import locks
from selectkit.errors import StoreError
from selectkit.publish import clear_stale, is_temporary
from selectkit.store.entry import FeatureSet
from selectkit.store.layout import CHECKSUMS, RowStatus, key_id
from selectkit.store.problems import UNREADABLE, reason, sample, writing

#: Rows per piece when a whole entry is checked against its checksums.
CHECK_ROWS = 4096


@dataclass
class Check:
    """What :func:`check_entry` found: ``problems`` (one line each, as ``cache verify``
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


def check_entry(features: FeatureSet, rows: bool = False) -> Check:
    """What is wrong on disk, cheaply: the manifest and key, every file's presence, header
    and size, what dead writers left in the folder, and the recorded SHA-256 of the small
    files (of ``order.npy`` always, of the others once the entry is complete). With
    ``rows``, every recorded row is also checked against its checksum (a read of the whole
    entry), which pinpoints the rows behind a changed small file.
    """
    found = Check()
    try:
        manifest = features.manifest()
    except UNREADABLE as exc:
        found.rebuild = f"manifest.json: unreadable ({reason(exc)})"
        found.problems.append(found.rebuild)
        return found
    try:
        stored = json.loads((features.path / "key.json").read_text("utf-8"))
        if key_id(stored) != features.id:
            found.rebuild = "key.json: does not hash to the entry id (edited or corrupted)"
    except (*UNREADABLE, StoreError) as exc:
        found.rebuild = f"key.json: unreadable ({reason(exc)})"
    if found.rebuild:
        found.problems.append(found.rebuild)
    found.complete = bool(manifest.get("complete"))
    _check_files(features, found)
    if found.rebuild:
        return found
    _check_sums(features, found, manifest.get("sha256"))
    if found.rebuild:
        return found
    status = _status_or_pending(features)
    found.pending = int((status == RowStatus.PENDING).sum())
    if rows:
        _check_rows_on_disk(features, found, status)
    if found.changed and found.rows_checked and not found.rows.size and not found.pending:
        found.rebuild = f"{', '.join(found.changed)} changed, and no row's checksum says which rows"
        found.problems.append(f"cannot pinpoint the damage: {found.rebuild}")
    elif found.reopen:
        found.problems.append(
            f"{found.pending} of {features.num_rows} rows pending although the manifest says "
            "complete"
        )
    elif found.incomplete:
        found.problems.append(
            f"incomplete: {found.pending} of {features.num_rows} rows pending; rerun the "
            "featurizer to finish it"
        )
    elif found.unfinalized:
        found.problems.append("not finalized: every row is recorded but no checksums were taken")
    return found


def _check_files(features: FeatureSet, found: Check) -> None:
    """Presence, header and size of every file, and the dead writers' leftovers."""
    for name, (shape, dtype) in features.specs.items():
        problem = npyfiles.check(features.path / name, shape, dtype)
        if problem is None:
            continue
        found.problems.append(f"{name}: {problem}")
        if name == "order.npy":  # the blocks are defined by it: nothing can be pinpointed
            found.rebuild = f"order.npy: {problem}"
        else:
            found.recreate.append(name)
    if not (features.path / "locks").is_dir():
        found.problems.append("locks/: missing")
        found.recreate.append("locks")
    try:
        names = sorted(os.listdir(features.path))
    except OSError:
        names = []
    for name in names:
        path = features.path / name
        if is_temporary(name) and not locks.is_held(path):
            found.leftovers.append(path)
            found.problems.append(
                f"{name}: left over by a killed process (`selectkit cache verify --repair` "
                "removes it)"
            )


def _check_sums(features: FeatureSet, found: Check, sums: Any) -> None:
    """Compare the small files with the SHA-256 recorded for them."""
    sums = sums if isinstance(sums, dict) else {}
    for name in features.small_files:
        if name in found.recreate:
            continue
        if name != "order.npy" and not found.complete:
            continue  # recorded when the entry is finalized
        recorded = sums.get(name)
        try:
            actual = npyfiles.sha256(features.path / name)
        except OSError as exc:
            actual = reason(exc)
        if actual == recorded:
            continue
        since = "created" if name == "order.npy" else "finalized"
        found.problems.append(f"{name}: sha256 mismatch (changed since the entry was {since})")
        if name == "order.npy":
            found.rebuild = "order.npy changed, so its blocks are unknown"
        else:
            found.changed.append(name)


def _status_or_pending(features: FeatureSet) -> np.ndarray:
    """The status codes, or all pending when ``status.npy`` cannot be read."""
    try:
        return features.status()
    except StoreError:
        return np.zeros(features.num_rows, np.uint8)


def _check_rows_on_disk(features: FeatureSet, found: Check, status: np.ndarray) -> None:
    """Every recorded row against its checksum; rows of files about to be made again
    are left out (they go back to pending anyway)."""
    found.rows_checked = True
    per_row = {"status.npy", CHECKSUMS, *(f"col-{c}.npy" for c in features.layout.columns)}
    if per_row & set(found.recreate):
        return  # every row goes back to pending
    bad = []
    for number, name in enumerate(features.data_files):
        if name in found.recreate:
            continue
        first = number * features.file_rows
        last = min(first + features.file_rows, features.num_rows)
        for start in range(first, last, CHECK_ROWS):
            stop = min(start + CHECK_ROWS, last)
            try:
                side = features.read_side(start, stop)
                rows = features.read_stored(start, stop)
            except (OSError, EOFError):
                continue  # a file that cannot be read was reported by the file checks
            bad.append(start + features.failed_rows(rows, *side))
    found.rows = np.concatenate(bad) if bad else np.zeros(0, np.int64)
    if found.rows.size:
        found.problems.append(
            f"{found.rows.size} row(s) fail their checksum (pool rows {sample(found.rows)})"
        )


def repair_entry(features: FeatureSet, found: Check) -> list[str]:
    """Repair what :func:`check_entry` found, short of a rebuild (``FeatureStore.repair`` removes
    what must be rebuilt): remove dead writers' leftovers, make missing or misshapen files
    again, put the rows they held and the rows that fail their checksum back to pending, and
    reopen the entry so the next run computes them again. Returns what was done, one phrase
    each."""
    if found.rebuild:
        raise StoreError(
            f"feature set {features.id[:12]} must be rebuilt ({found.rebuild}); use "
            "FeatureStore.repair"
        )
    done = []
    with writing(features.path.parent, f"feature set {features.id[:12]} must be repaired"):
        cleared = clear_stale(features.path)
        if cleared:
            done.append(f"removed {', '.join(p.name for p in cleared)}")
        if "locks" in found.recreate:
            (features.path / "locks").mkdir(exist_ok=True)
        with locks.exclusive(features.lock_path("entry")):
            done += _reset(features, found)
        if found.unfinalized and not found.damaged and features.finalize():
            done.append("finalized")
    return done


def _reset(features: FeatureSet, found: Check) -> list[str]:
    """Make damaged files again, put rows back to pending, reopen the manifest."""
    done = []
    files = [name for name in found.recreate if name != "locks"]
    for name in files:
        (features.path / name).unlink(missing_ok=True)
        shape, dtype = features.specs[name]
        npyfiles.create(features.path / name, shape, dtype)
    if files:
        done.append(f"made {', '.join(files)} again")
    pending = np.zeros(features.num_rows, bool)
    pending[found.rows] = True
    for name in files:
        if name.startswith("rows-"):
            first = features.data_files.index(name) * features.file_rows
            pending[first : first + features.specs[name][0][0]] = True
        else:  # status, side columns or checksums: every row must be computed again
            pending[:] = True
    if pending.any():
        status = features.status()
        status[pending] = RowStatus.PENDING
        fd = os.open(features.path / "status.npy", os.O_WRONLY)
        try:
            npyfiles.pwrite_all(fd, status, features.header["status.npy"])
            os.fsync(fd)
        finally:
            os.close(fd)
    manifest = features.manifest()
    status = features.status()
    pending_now = int((status == RowStatus.PENDING).sum())
    if pending_now and manifest.get("complete"):
        manifest["complete"] = False
        manifest["sha256"] = {
            k: v for k, v in manifest.get("sha256", {}).items() if k == "order.npy"
        }
        features.write_manifest(manifest)
    if pending_now:
        done.append(
            f"{pending_now} of {features.num_rows} rows are pending: rerun the command that made "
            "these features (or `selectkit featurize`) to compute them again"
        )
    return done


def verify_entry(features: FeatureSet) -> list[str]:
    """Every problem found on disk, rows against their checksums included; ``[]`` = OK."""
    return check_entry(features, rows=True).problems
