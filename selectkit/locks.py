"""Advisory file locks (``fcntl.flock``): feature-store entries and shards, retraining runs,
and the temporaries of outputs being written.

A flock belongs to one open file description, so two handles in the same process exclude each
other just as two processes do, and the kernel drops the lock when its holder dies: a killed
process never leaves a stale lock behind. The holder writes its pid into a lock file so that
whoever is refused can say who holds it. The same lock on a temporary file or folder being
written tells a live writer's from a dead one's (:func:`hold`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the ``with`` body, waiting for it if need be."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def try_lock(path: Path) -> int | None:
    """Take an exclusive lock on ``path`` without waiting and record this process's pid in it.

    Returns the descriptor holding the lock (give it to :func:`release`), or ``None`` when
    someone else holds it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release(fd: int) -> None:
    """Give up a lock taken with :func:`try_lock`."""
    os.close(fd)


def holder(path: Path) -> int | None:
    """The pid recorded in a lock file, or ``None`` when none is recorded."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_held(path: Path) -> bool:
    """Whether some open handle (in any process) holds a lock on ``path`` right now."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def hold(path: Path) -> int | None:
    """An exclusive lock on the existing file or folder ``path``, taken without waiting.

    Returns the descriptor holding it (give it to :func:`release`), or ``None`` when another
    handle holds it or ``path`` is gone. Once locked, ``path`` is checked to still name the
    locked file, so one removed or renamed meanwhile is never taken for the one asked for.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        now, locked = os.stat(path), os.fstat(fd)
        if (now.st_dev, now.st_ino) != (locked.st_dev, locked.st_ino):
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd
