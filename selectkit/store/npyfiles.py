"""Plain ``.npy`` files written and read in place: headers, preallocation, positioned I/O,
header and size checks, checksums. The feature store keeps every array in such a file, so
``np.load`` opens any of them."""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


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


def pread_into(fd: int, view: memoryview, offset: int, name: str = "the file") -> None:
    """Fill ``view`` with the bytes at ``offset``, without an intermediate copy; a file that
    ends first raises :class:`EOFError` (naming it ``name``)."""
    while view:
        got = os.preadv(fd, [view], offset)
        if got == 0:
            raise EOFError(f"{name} ends early, at byte {offset}")
        view, offset = view[got:], offset + got


def read_slice(path: Path, header: int, dtype: str, start: int, stop: int) -> np.ndarray:
    """Items ``start:stop`` of a one-dimensional ``.npy`` file whose data begin at byte
    ``header``, read with ``preadv`` (``OSError``/``EOFError`` when the file cannot give them)."""
    out = np.empty(stop - start, dtype)
    fd = os.open(path, os.O_RDONLY)
    try:
        pread_into(fd, memoryview(out.view(np.uint8)), header + start * out.itemsize, path.name)
    finally:
        os.close(fd)
    return out


def row_checksums(rows: np.ndarray, extras: Sequence[np.ndarray] = ()) -> np.ndarray:
    """One 64-bit checksum per row (``uint64``): XXH3-64 of the row's bytes, seeded with the
    XXH3-64 of its value in each of ``extras`` (one-dimensional arrays with a value per row,
    e.g. side columns and status codes), so damage to any of them changes that row's checksum.

    XXH3 runs at several times memory-read speed on one core (measured beside CRC-32 and a
    numpy word sum in ``benchmarks/bench_scoring.py``), so checking every row that is read
    costs little; any damage goes unnoticed with probability about 2**-64.
    """
    import xxhash

    count = len(rows)
    if count == 0:
        return np.zeros(0, np.uint64)
    data = np.ascontiguousarray(rows).reshape(count, -1).view(np.uint8)
    parts = [np.ascontiguousarray(e).reshape(count, 1).view(np.uint8) for e in extras]
    tail = np.concatenate(parts, axis=1) if parts else np.empty((count, 0), np.uint8)
    digest = xxhash.xxh3_64_intdigest
    sums = [digest(row, seed=digest(side)) for row, side in zip(data, tail, strict=True)]
    return np.array(sums, np.uint64)


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
