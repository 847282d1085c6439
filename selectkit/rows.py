"""Feature rows: where they come from, how they are read, and the in-memory copies the
coverage objectives measure distances on.

A :class:`RowSource` is anything that reads rows of equal dimension by range: the feature
store's ``FeatureSet``, an in-memory array wrapped in :class:`ArrayRows`, or several
checkpoints' sets side by side (:class:`ScaledColumns`). Scoring, the solvers and the method
plugins all read rows through it, a chunk at a time, with chunks sized from a memory limit so a
pool larger than memory is streamed instead of loaded.

k-center and facility location need every row in memory: both read them here, as float32, and
measure on the same copies (:func:`unit_rows` for cosine, :class:`CentredRows` for distances).

A leaf module: it imports nothing from selectkit but its errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from selectkit.errors import ParamError

#: Bytes a chunk of rows may use when the caller does not say.
DEFAULT_MEMORY = 256 << 20


@runtime_checkable
class RowSource(Protocol):
    """Rows of equal dimension that can be read by range: the feature store's ``FeatureSet``,
    :class:`ArrayRows`, or anything with these members. A ``dtype`` attribute, when present,
    tells the memory planner the size of the read buffer (float64 is assumed otherwise)."""

    @property
    def num_rows(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start`` to ``stop`` (exclusive) as a ``(stop - start, dim)`` float array."""
        ...


class ArrayRows:
    """An in-memory 2-D float array as a :class:`RowSource` (for notebooks and tests)."""

    def __init__(self, array: np.ndarray) -> None:
        array = np.asarray(array)
        if array.ndim != 2:
            raise ParamError(f"ArrayRows needs a 2-D array of rows, got shape {array.shape}")
        if array.dtype.kind != "f":
            raise ParamError(f"ArrayRows needs a floating-point array, got dtype {array.dtype}")
        self.array = array

    @property
    def num_rows(self) -> int:
        return self.array.shape[0]

    @property
    def dim(self) -> int:
        return self.array.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]

    def __repr__(self) -> str:
        return f"ArrayRows({self.num_rows} x {self.dim}, {self.dtype})"


def as_rows(features: Any) -> RowSource:
    """``features`` as a row source: a 2-D float array is wrapped, a row source kept."""
    if isinstance(features, np.ndarray):
        return ArrayRows(features)
    if isinstance(features, RowSource):
        return features
    raise ParamError(
        f"features must be a 2-D float array or a row source (num_rows, dim, read), "
        f"not {type(features).__name__}"
    )


class ScaledColumns:
    """Several row sources of the same rows placed side by side, each times its own scale.

    With scales ``sqrt(lr_c)`` the inner product of two combined rows is
    ``Σ_c lr_c <f_c(i), f_c(j)>``: the learning-rate-weighted sum over checkpoints of TracIn.
    """

    def __init__(self, sources: Sequence[RowSource], scales: Sequence[float]) -> None:
        if not sources or len(sources) != len(scales):
            raise ParamError(
                f"ScaledColumns needs one scale per source, got {len(sources)} sources and "
                f"{len(scales)} scales"
            )
        rows = {source.num_rows for source in sources}
        if len(rows) != 1:
            raise ParamError(f"every checkpoint must cover the same rows, got counts {rows}")
        if not all(math.isfinite(s) and s >= 0 for s in scales):
            raise ParamError(f"checkpoint scales must be finite and >= 0, got {list(scales)}")
        self.sources = list(sources)
        self.scales = [float(s) for s in scales]
        self.dtype = np.dtype(np.float32)

    @property
    def num_rows(self) -> int:
        return self.sources[0].num_rows

    @property
    def dim(self) -> int:
        return sum(source.dim for source in self.sources)

    def read(self, start: int, stop: int) -> np.ndarray:
        parts = [
            np.asarray(source.read(start, stop), dtype=np.float32) * np.float32(scale)
            for source, scale in zip(self.sources, self.scales, strict=True)
        ]
        return np.concatenate(parts, axis=1)


def combine_checkpoints(
    feature_sets: Sequence[RowSource], rates: Sequence[float], mode: str
) -> RowSource:
    """One row source from per-checkpoint sets: the last checkpoint's (``last``), or all of
    them side by side, each scaled by the square root of its learning rate (``all``)."""
    if not feature_sets:
        raise ParamError("there are no feature sets to combine: no checkpoint was featurized")
    if mode == "last":
        return feature_sets[-1]
    if mode == "all":
        return ScaledColumns(feature_sets, [math.sqrt(max(rate, 0.0)) for rate in rates])
    raise ParamError(f"checkpoints_used must be 'last' or 'all', not '{mode}'")


def chunk_rows(rows: RowSource, memory_limit: int) -> int:
    """Rows per chunk so that a chunk and its float32 copy fit in ``memory_limit`` bytes."""
    itemsize = np.dtype(getattr(rows, "dtype", np.float64)).itemsize
    return max(1, int(memory_limit) // max(1, rows.dim * (itemsize + 4)))


def iter_chunks(rows: RowSource, memory_limit: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, float32 rows)`` over the source, one chunk in memory at a time."""
    step = chunk_rows(rows, memory_limit)
    for start in range(0, rows.num_rows, step):
        stop = min(start + step, rows.num_rows)
        yield start, read_rows(rows, start, stop)


def read_rows(rows: RowSource, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` as float32, checking the shape the source returned."""
    out = rows.read(start, stop)
    if out.shape != (stop - start, rows.dim) or out.dtype.kind != "f":
        raise ParamError(
            f"read({start}, {stop}) returned {out.dtype} rows of shape {out.shape}, "
            f"expected floating-point rows of shape ({stop - start}, {rows.dim})"
        )
    return np.asarray(out, dtype=np.float32)


def check_finite(values: np.ndarray, what: str) -> np.ndarray:
    """``values``, or a :class:`ParamError` naming the first record whose entry is not finite
    (a NaN or Inf feature row)."""
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ParamError(
            f"{what} of record {bad} is not finite: its feature row holds NaN or Inf; "
            "re-extract the features or exclude the record"
        )
    return values


def read_all(rows: RowSource, memory_limit: int = DEFAULT_MEMORY) -> np.ndarray:
    """Every row in memory as one new float32 array, read a chunk at a time; a record whose
    row holds NaN or Inf is named."""
    out = np.empty((rows.num_rows, rows.dim), dtype=np.float32)
    for start, chunk in iter_chunks(rows, memory_limit):
        out[start : start + len(chunk)] = chunk
    check_finite(out.sum(axis=1, dtype=np.float64), "the feature sum")
    return out


def row_mean(rows: RowSource, memory_limit: int = DEFAULT_MEMORY) -> np.ndarray:
    """The mean row (float64), streamed."""
    if rows.num_rows == 0:
        raise ParamError("there are no feature rows to average")
    total = np.zeros(rows.dim, dtype=np.float64)
    for _, chunk in iter_chunks(rows, memory_limit):
        total += chunk.sum(axis=0, dtype=np.float64)
    if not np.isfinite(total).all():
        check_finite(matvec(rows, np.ones(rows.dim), memory_limit), "the feature sum")
    return total / rows.num_rows


def matvec(rows: RowSource, vector: np.ndarray, memory_limit: int = DEFAULT_MEMORY) -> np.ndarray:
    """``rows @ vector`` (float64 result, float32 products), streamed."""
    out = np.empty(rows.num_rows, dtype=np.float64)
    v32 = np.asarray(vector, dtype=np.float32)
    for start, chunk in iter_chunks(rows, memory_limit):
        out[start : start + len(chunk)] = chunk @ v32
    return check_finite(out, "the correlation")


def unit_rows(rows: np.ndarray) -> np.ndarray:
    """``rows`` (float32, in memory) scaled to unit length in place and returned; a zero row
    stays zero. Cosine similarity is the inner product of these rows."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    rows[norms[:, 0] == 0] = 0.0
    np.divide(rows, norms, out=rows, where=norms > 0)
    return rows


class CentredRows:
    """Every row in memory as float32 minus the rows' mean, with its squared norm (float64):
    the rows k-center and facility location measure Euclidean distances on.

    Distances do not change under a shift; centring shrinks the norms, and with them the
    float32 cancellation in ``|x|² + |c|² − 2 x·c`` (about ``sqrt(eps) · |x|`` for
    near-duplicates). A squared distance below float32's resolution of the largest ``|x|²``
    (``floor``) counts as 0, so a record is at distance 0 from itself.
    """

    def __init__(self, rows: np.ndarray) -> None:
        """Take over ``rows`` (a float32 array nothing else uses) and centre it in place."""
        rows -= rows.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.x = rows
        self.sq = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
        self.floor = 8 * float(np.finfo(np.float32).eps) * float(self.sq.max(initial=0.0))

    @classmethod
    def read(
        cls, source: RowSource, memory_limit: int = DEFAULT_MEMORY, *, unit: bool = False
    ) -> CentredRows:
        """The source's rows, centred (first scaled to unit length when ``unit``: Euclidean
        distances of unit rows are ``sqrt(2 − 2 cos)``); one float32 copy in memory."""
        rows = read_all(source, memory_limit)
        return cls(unit_rows(rows) if unit else rows)

    def distances_to(self, index: int) -> np.ndarray:
        """Float64 distances of every row to row ``index``."""
        dots = self.x @ self.x[index]
        squared = self.sq + self.sq[index] - 2.0 * dots.astype(np.float64)
        squared[squared <= self.floor] = 0.0
        return np.sqrt(squared)

    def nearest_to_mean(self, allowed: np.ndarray) -> int:
        """The allowed row nearest the mean of all rows (the first of equals)."""
        return int(np.flatnonzero(allowed)[np.argmin(self.sq[allowed])])
