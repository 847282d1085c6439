"""What can go wrong with a feature-store entry, said the same way everywhere: damage that
names the entry and the command that repairs it, a store that cannot be written, files that
cannot be read."""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from selectkit.cachedirs import default_root
from selectkit.errors import StoreError

UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
#: Unreadable JSON, ``.npy`` or values: what reading a damaged entry's files can raise.
UNREADABLE = (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, RecursionError)


def repair_hint(root: Path, ident: str) -> str:
    """What to run to repair entry ``ident`` of the store in ``root``."""
    where = "" if root == default_root() else f" --cache-dir {shlex.quote(str(root))}"
    return f"run `selectkit cache verify --repair {ident[:12]}{where}`, then rerun the command"


def not_writable(root: Path, what: str, exc: OSError) -> StoreError:
    return StoreError(
        f"the feature store {root} is not writable ({exc.strerror or exc}) and {what}; set "
        "SELECTKIT_CACHE_DIR (or --cache-dir, or a method's cache_dir=) to a writable folder"
    )


@contextlib.contextmanager
def writing(root: Path, what: str) -> Iterator[None]:
    """Turn a refused write inside the ``with`` body into a :class:`StoreError` that says the
    store is not writable and what to do."""
    try:
        yield
    except OSError as exc:
        if exc.errno in UNWRITABLE:
            raise not_writable(root, what, exc) from exc
        raise


def writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def reason(exc: BaseException) -> str:
    """A short description of why a file could not be read."""
    if isinstance(exc, OSError):
        name = Path(os.fsdecode(exc.filename)).name if exc.filename else "a file"
        return f"{name}: {exc.strerror or exc}"
    if isinstance(exc, EOFError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def sample(rows: np.ndarray, limit: int = 5) -> str:
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
