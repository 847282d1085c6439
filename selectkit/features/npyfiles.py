"""Plain ``.npy`` files written and read in place: headers, preallocation, positioned I/O,
header and size checks, checksums. The feature store keeps every array in such a file, so
``np.load`` opens any of them."""

from __future__ import annotations

import hashlib
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from selectkit.errors import StoreError


def header_bytes(shape: tuple[int, ...], dtype: str) -> bytes:
    """The version 1.0 ``.npy`` header of a C-order array; its length is the data offset."""
    buffer = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    fields = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, fields)
    return buffer.getvalue()


def file_size(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of the whole file: header plus data."""
    return len(header_bytes(shape, dtype)) + math.prod(shape) * np.dtype(dtype).itemsize


def pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write an array's raw bytes at ``offset``, however many calls it takes."""
    view = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def pread_into(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` with the bytes at ``offset``, without an intermediate copy."""
    while view:
        got = os.preadv(fd, [view], offset)
        if got == 0:
            raise StoreError(
                f"a feature file ends early at byte {offset}; run `selectkit cache verify`"
            )
        view, offset = view[got:], offset + got


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(1 << 20))
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(buffer):
            digest.update(buffer[:got])
    return digest.hexdigest()


def create(path: Path, shape: tuple[int, ...], dtype: str, data: Any = None) -> None:
    """A new ``.npy`` file of zeros (or ``data``), its full size allocated now so that a full
    disk fails here rather than halfway through a run."""
    header = header_bytes(shape, dtype)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, file_size(shape, dtype))
        else:
            os.ftruncate(fd, file_size(shape, dtype))
        pwrite_all(fd, np.frombuffer(header, np.uint8), 0)
        if data is not None:
            pwrite_all(fd, data, len(header))
        os.fsync(fd)
    finally:
        os.close(fd)


def check(path: Path, shape: tuple[int, ...], dtype: str) -> str | None:
    """What is wrong with a ``.npy`` file's header or size, or ``None``."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version != (1, 0):
                return f"unexpected .npy format version {version}"
            got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(handle)
            offset, size = handle.tell(), os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as exc:
        return f"not a valid .npy file ({exc})"
    if got_shape != shape or fortran or got_dtype != np.dtype(dtype):
        return f"header says {got_dtype} {got_shape}, expected {dtype} {shape}"
    expected = offset + math.prod(shape) * np.dtype(dtype).itemsize
    return None if size == expected else f"size is {size} bytes, expected {expected}"
