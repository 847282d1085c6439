"""Claims on featurize requests, taken before anything loads, so an identical second run is
refused at once rather than after it has loaded a model."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from selectkit import locks
from selectkit.errors import OutputError, StoreError
from selectkit.publish import atomic_writer
from selectkit.store.problems import UNREADABLE, UNWRITABLE

#: The folder of the store's root that holds the claims.
CLAIMS = ".claims"
_ID = re.compile(r"[0-9a-f]{64}")


def _is_complete(path: Path) -> bool:
    """Whether the entry folder ``path`` has a manifest that says complete."""
    try:
        return json.loads((path / "manifest.json").read_text("utf-8"))["complete"] is True
    except (*UNREADABLE, StoreError):
        return False


class RequestClaim:
    """A claim on one featurize request (pool, model, adapter, settings, shard), taken before
    anything loads, so an identical second run is refused at once rather than after loading
    the model; see :meth:`FeatureStore.claim_request`. Use it as a context manager, and
    :meth:`record` the entries the request resolved to."""

    def __init__(self, root: Path, digest: str, label: str) -> None:
        self.root = root
        self.label = label
        self._lock = root / CLAIMS / f"{digest}.lock"
        self._record = root / CLAIMS / f"{digest}.json"
        self._fd: int | None = None

    def __enter__(self) -> RequestClaim:
        try:
            self._lock.parent.mkdir(parents=True, exist_ok=True)
            self._fd = locks.try_lock(self._lock)
        except OSError as exc:
            if exc.errno in UNWRITABLE:
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
        except (*UNREADABLE, StoreError):
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
