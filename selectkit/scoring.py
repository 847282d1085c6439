"""Streaming similarity of a pool's gradient features to a target's, summed over checkpoints.

LESS scores a pool example by how well its (projected) gradient aligns with the target's
gradients, summed over warmup checkpoints with one weight each (the learning rate):
``S = Σ_c w_c · sim(pool_c, target_c)``. The pool is large and lives on disk, so its rows are
read a chunk at a time; the targets are small and are loaded once onto the device.

Features come from any :class:`~selectkit.rows.RowSource` (the on-disk feature store, or
:class:`~selectkit.rows.ArrayRows` for an in-memory array). Similarities are computed in float32
on ``device``. The chunk size is derived from a memory budget that counts the read buffer, its
float32 copy, the result chunks and the resident targets, so peak memory is bounded by the
budget, not by the pool.

``score_pool``'s ``mean`` and ``subtask_max`` aggregates are linear in the similarities over
the targets, so the (normalized, weighted) targets are averaged once up front — by one matmul
with a normalized indicator matrix — and each pool chunk is multiplied by one centroid per
subtask instead of by every target row: the same numbers, at a fraction of the cost.

This module may be imported at CLI start-up, so torch is imported inside functions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from selectkit.errors import ParamError
from selectkit.rows import RowSource

if TYPE_CHECKING:
    import torch

Metric = Literal["cosine", "inner"]
Aggregate = Literal["mean", "max", "subtask_max"]
METRICS: tuple[str, ...] = ("cosine", "inner")
AGGREGATES: tuple[str, ...] = ("mean", "max", "subtask_max")

#: Bytes for a chunk's working set when neither ``chunk_rows`` nor ``memory_limit`` is given.
DEFAULT_CHUNK_BYTES = 256 << 20

#: Bytes assumed per stored value for a source that does not say its dtype (float64, the worst).
_UNKNOWN_ITEMSIZE = 8

#: Bytes per pool row for small per-row temporaries: norms, their inverses, aggregated scores.
_ROW_OVERHEAD_BYTES = 32

#: Share of ``memory_limit`` left for memory scoring does not allocate itself: the matmul
#: library's packing buffers (MKL kept 20-40 MiB for a (4096 x 8192) @ (8192 x 1024) GEMM on
#: 2 threads), allocator slack left by loading the targets (~16 MiB) and imports (tqdm).
_UNTRACKED_SHARE = 1 / 6


@dataclass(frozen=True)
class _Checkpoint:
    """One checkpoint: its pool rows, and its targets on the device as a ``(width, dim)``
    matrix, already weighted, normalized for cosine and reduced when the aggregate allows."""

    pool: RowSource
    targets: torch.Tensor


@dataclass(frozen=True)
class _Plan:
    """What a scoring run streams: the checkpoints, pool size, rows per chunk and metric."""

    checkpoints: list[_Checkpoint]
    num_rows: int
    chunk_rows: int
    cosine: bool


def _itemsize(source: RowSource) -> int:
    dtype = getattr(source, "dtype", None)
    return _UNKNOWN_ITEMSIZE if dtype is None else np.dtype(dtype).itemsize


def _mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:,.1f} MiB"


def _check_sources(pool_sets: Sequence[RowSource], target_sets: Sequence[RowSource]) -> None:
    if len(pool_sets) == 0:
        raise ParamError("scoring needs at least one checkpoint: pool_sets is empty")
    if len(pool_sets) != len(target_sets):
        raise ParamError(
            f"scoring needs one target set per pool set: got {len(pool_sets)} pool sets and "
            f"{len(target_sets)} target sets"
        )
    n_pool, n_target = pool_sets[0].num_rows, target_sets[0].num_rows
    for c, (pool, target) in enumerate(zip(pool_sets, target_sets, strict=True)):
        if pool.dim != target.dim:
            raise ParamError(
                f"checkpoint {c}: pool features have dim {pool.dim} but target features have "
                f"dim {target.dim}; both must come from the same projection"
            )
        if pool.num_rows != n_pool:
            raise ParamError(
                f"checkpoint {c}: pool set has {pool.num_rows} rows but checkpoint 0's has "
                f"{n_pool}; every checkpoint must cover the same pool"
            )
        if target.num_rows != n_target:
            raise ParamError(
                f"checkpoint {c}: target set has {target.num_rows} rows but checkpoint 0's has "
                f"{n_target}; every checkpoint must cover the same targets"
            )
    if n_target == 0:
        raise ParamError("the target sets have no rows: there is nothing to score against")


def _check_weights(weights: Sequence[float] | None, n_checkpoints: int) -> list[float]:
    if weights is None:
        return [1.0] * n_checkpoints
    values = [float(w) for w in weights]
    if len(values) != n_checkpoints:
        raise ParamError(
            f"got {len(values)} weights for {n_checkpoints} checkpoints; give one per checkpoint"
        )
    if not all(math.isfinite(w) for w in values):
        raise ParamError(f"checkpoint weights must be finite numbers, got {values}")
    return values


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ParamError(f"{name} must be a positive int or None, got {value!r}")


def _device(device: Any) -> torch.device:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ParamError(f"unknown device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParamError(f"device {device!r} was asked for but CUDA is not available; use 'cpu'")
    return dev


def _chunk_rows(
    pool_sets: Sequence[RowSource],
    target_sets: Sequence[RowSource],
    width: int,
    chunk_rows: int | None,
    memory_limit: int | None,
) -> int:
    """Rows per chunk: ``chunk_rows``, capped by what fits in ``memory_limit`` once the
    resident targets (``width`` rows per checkpoint, float32) and an untracked share
    (:data:`_UNTRACKED_SHARE`) are taken out.

    Per pool row a chunk holds, for the checkpoint being read, the read buffer (stored dtype)
    and its float32 copy, plus three float32 result rows of ``width`` (the sum being built, one
    checkpoint's product, and the previous chunk a caller may still hold)."""
    n_target = target_sets[0].num_rows
    resident = sum(4 * width * t.dim for t in target_sets)
    per_row = max(p.dim * (_itemsize(p) + 4) for p in pool_sets)
    per_row += 3 * 4 * width + _ROW_OVERHEAD_BYTES
    if memory_limit is None:
        fitting = DEFAULT_CHUNK_BYTES // per_row if chunk_rows is None else chunk_rows
    else:
        loading = max(n_target * t.dim * (_itemsize(t) + 4) for t in target_sets)
        if resident + loading > memory_limit:
            raise ParamError(
                f"the targets alone need {_mib(resident + loading)} to load ({n_target} rows in "
                f"{len(target_sets)} checkpoint(s)), more than memory_limit={_mib(memory_limit)};"
                " raise memory_limit or score against fewer target rows"
            )
        untracked = int(memory_limit * _UNTRACKED_SHARE)
        fitting = (memory_limit - untracked - resident) // per_row
        if fitting < 1:
            raise ParamError(
                f"memory_limit={_mib(memory_limit)} leaves no room for one pool row "
                f"({per_row:,} bytes) beside the targets ({_mib(resident)}) and "
                f"{_UNTRACKED_SHARE:.1%} kept for the matmul library; raise memory_limit"
            )
    rows = fitting if chunk_rows is None else min(chunk_rows, fitting)
    return max(1, min(rows, pool_sets[0].num_rows))


def _read(source: RowSource, start: int, stop: int, label: str) -> np.ndarray:
    rows = source.read(start, stop)
    if rows.shape != (stop - start, source.dim) or rows.dtype.kind != "f":
        raise ParamError(
            f"{label}: read({start}, {stop}) returned {rows.dtype} rows of shape {rows.shape}, "
            f"expected floating-point rows of shape ({stop - start}, {source.dim})"
        )
    return rows


def _host_tensor(rows: np.ndarray) -> torch.Tensor:
    """Rows as a CPU tensor sharing memory with the (contiguous) array; read-only arrays are
    accepted because scoring never writes to its inputs."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(rows))


def _to_float32(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Rows as a float32 tensor on ``device``; shares memory with ``rows`` when they are already
    contiguous float32 on the CPU, so callers must never write to the result."""
    import torch

    return _host_tensor(rows).to(device=device, dtype=torch.float32)


def _inverse_norms(x: torch.Tensor) -> torch.Tensor:
    """``1 / ||row||`` per row, and 0 for a zero row (so its similarity is 0, never NaN)."""
    import torch

    norms = torch.linalg.vector_norm(x, dim=1)
    return torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))


def _load_targets(
    source: RowSource,
    label: str,
    weight: float,
    reduce: torch.Tensor | None,
    cosine: bool,
    device: torch.device,
) -> torch.Tensor:
    """One checkpoint's targets on the device, normalized (cosine) and times ``weight``; when
    ``reduce`` (targets x groups) is given, ``reduce.T @ targets``: one row per group."""
    targets = _to_float32(_read(source, 0, source.num_rows, label), device)
    scale = _inverse_norms(targets) if cosine else targets.new_ones(targets.shape[0])
    scale = scale * weight
    if reduce is None:
        return targets * scale[:, None]
    return (reduce * scale[:, None]).T @ targets


def _plan(
    pool_sets: Sequence[RowSource],
    target_sets: Sequence[RowSource],
    weights: Sequence[float] | None,
    metric: str,
    reduce: np.ndarray | None,
    chunk_rows: int | None,
    memory_limit: int | None,
    device: Any,
) -> _Plan:
    """Check everything, size the chunks, then load the targets onto the device."""
    import torch

    if metric not in METRICS:
        raise ParamError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    _check_sources(pool_sets, target_sets)
    values = _check_weights(weights, len(pool_sets))
    _check_positive("chunk_rows", chunk_rows)
    _check_positive("memory_limit", memory_limit)
    dev = _device(device)
    width = target_sets[0].num_rows if reduce is None else reduce.shape[1]
    rows = _chunk_rows(pool_sets, target_sets, width, chunk_rows, memory_limit)
    cosine = metric == "cosine"
    groups = None if reduce is None else torch.from_numpy(reduce).to(dev, torch.float32)
    checkpoints = [
        _Checkpoint(pool, _load_targets(target, f"target set {c}", w, groups, cosine, dev))
        for c, (pool, target, w) in enumerate(zip(pool_sets, target_sets, values, strict=True))
    ]
    return _Plan(checkpoints, pool_sets[0].num_rows, rows, cosine)


class _Buffers:
    """Float32 buffers on the device, allocated on first use and reused by every chunk, so the
    allocator sees a few fixed-size blocks instead of fresh ones per chunk (freed blocks it keeps
    would otherwise count toward peak memory), and pages are faulted in once."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._flat: dict[str, torch.Tensor] = {}

    def get(self, name: str, rows: int, cols: int, capacity: int) -> torch.Tensor:
        """A ``(rows, cols)`` view of buffer ``name``, which holds at least ``capacity`` values."""
        import torch

        flat = self._flat.get(name)
        if flat is None or flat.numel() < rows * cols:
            flat = torch.empty(max(capacity, rows * cols), dtype=torch.float32, device=self.device)
            self._flat[name] = flat
        return flat[: rows * cols].view(rows, cols)

    def rows(self, rows: np.ndarray, capacity: int) -> torch.Tensor:
        """Read rows as float32 on the device: the array itself when it already is contiguous
        float32 on the CPU (never written to), else converted into the ``rows`` buffer."""
        import torch

        host = _host_tensor(rows)
        if host.dtype == torch.float32 and self.device.type == "cpu":
            return host
        return self.get("rows", *rows.shape, capacity).copy_(host)


def _stream(plan: _Plan, progress: bool, fresh: bool) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, S)`` per chunk of pool rows, ``S = Σ_c pool_c[chunk] @ targets_c.T``
    (pool rows normalized for cosine), holding one checkpoint's chunk in memory at a time.
    ``S`` is a new tensor per chunk when ``fresh``, else a view of a buffer reused by the next
    chunk (for callers that are done with it by then)."""
    import torch
    from tqdm.auto import tqdm

    device = plan.checkpoints[0].targets.device
    width = plan.checkpoints[0].targets.shape[0]
    max_dim = max(checkpoint.pool.dim for checkpoint in plan.checkpoints)
    buffers = _Buffers(device)
    with tqdm(total=plan.num_rows, desc="scoring", unit="row", disable=not progress) as bar:
        for start in range(0, plan.num_rows, plan.chunk_rows):
            stop = min(start + plan.chunk_rows, plan.num_rows)
            n = stop - start
            if fresh:
                sims = torch.empty((n, width), dtype=torch.float32, device=device)
            else:
                sims = buffers.get("sims", n, width, plan.chunk_rows * width)
            for c, checkpoint in enumerate(plan.checkpoints):
                rows = _read(checkpoint.pool, start, stop, f"pool set {c}")
                x = buffers.rows(rows, plan.chunk_rows * max_dim)
                del rows
                targets = checkpoint.targets.T
                if c == 0:
                    torch.mm(x, targets, out=sims)
                    if plan.cosine:
                        sims.mul_(_inverse_norms(x)[:, None])
                elif plan.cosine:
                    part = buffers.get("part", n, width, plan.chunk_rows * width)
                    sims.addcmul_(torch.mm(x, targets, out=part), _inverse_norms(x)[:, None])
                else:
                    sims.addmm_(x, targets)
                del x
            bar.update(n)
            yield start, sims


def iter_similarity(
    pool_sets: Sequence[RowSource],
    target_sets: Sequence[RowSource],
    weights: Sequence[float] | None = None,
    *,
    metric: Metric = "cosine",
    chunk_rows: int | None = None,
    memory_limit: int | None = None,
    device: Any = "cpu",
    progress: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Stream ``(start, S)`` over the pool in chunks, where ``S`` (float32, on ``device``, shape
    ``(rows in chunk, target rows)``) is ``Σ_c weights[c] · sim(pool_sets[c][chunk],
    target_sets[c])``: cosine (a zero row scores 0) or inner product.

    ``pool_sets[c]`` and ``target_sets[c]`` are checkpoint ``c``'s features. Everything is
    checked and the targets are loaded when this is called; pool rows are read as iterated.
    Rows per chunk are ``chunk_rows`` when given, capped by what fits in ``memory_limit`` bytes
    (targets, read buffer, its float32 copy and result chunks); with neither, a chunk's working
    set is about :data:`DEFAULT_CHUNK_BYTES`.
    """
    plan = _plan(pool_sets, target_sets, weights, metric, None, chunk_rows, memory_limit, device)
    return _stream(plan, progress, fresh=True)


def similarity_matrix(
    pool_sets: Sequence[RowSource],
    target_sets: Sequence[RowSource],
    weights: Sequence[float] | None = None,
    *,
    metric: Metric = "cosine",
    memory_limit: int | None = None,
    device: Any = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """The whole float64 ``(pool rows, target rows)`` matrix that :func:`iter_similarity`
    streams: one score per (pool, target) pair, for per-example attribution and the linear
    datamodeling score. It takes ``8 · rows · targets`` bytes; arguments as for
    :func:`iter_similarity`."""
    _check_sources(pool_sets, target_sets)
    matrix = np.empty((pool_sets[0].num_rows, target_sets[0].num_rows), dtype=np.float64)
    for start, sims in iter_similarity(
        pool_sets,
        target_sets,
        weights,
        metric=metric,
        memory_limit=memory_limit,
        device=device,
        progress=progress,
    ):
        matrix[start : start + len(sims)] = sims.cpu().numpy()
    return matrix


def subtask_matrix(subtasks: Sequence[Hashable], num_targets: int) -> np.ndarray:
    """The ``(targets, subtasks)`` matrix whose column ``k`` is ``1/n_k`` on the ``n_k`` target
    rows labelled with subtask ``k`` (in order of first appearance) and 0 elsewhere, so that
    ``S @ matrix`` is the mean similarity to each subtask."""
    labels = list(subtasks)
    if len(labels) != num_targets:
        raise ParamError(
            f"got {len(labels)} subtask labels for {num_targets} target rows; give one per row"
        )
    try:
        index = {label: k for k, label in enumerate(dict.fromkeys(labels))}
        columns = np.fromiter((index[label] for label in labels), dtype=np.int64, count=num_targets)
    except TypeError as exc:
        raise ParamError(f"subtask labels must be hashable (e.g. strings): {exc}") from exc
    counts = np.bincount(columns, minlength=len(index))
    matrix = np.zeros((num_targets, len(index)), dtype=np.float32)
    matrix[np.arange(num_targets), columns] = 1.0 / counts[columns]
    return matrix


def score_pool(
    pool_sets: Sequence[RowSource],
    target_sets: Sequence[RowSource],
    weights: Sequence[float] | None = None,
    *,
    metric: Metric = "cosine",
    aggregate: Aggregate = "mean",
    subtasks: Sequence[Hashable] | None = None,
    chunk_rows: int | None = None,
    memory_limit: int | None = None,
    device: Any = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """One float64 score per pool row: the similarities of :func:`iter_similarity` aggregated
    over the targets by ``mean``, ``max``, or ``subtask_max`` (LESS's rule: the mean over each
    subtask's targets, then the max across subtasks; ``subtasks`` gives one label per target
    row). Arguments otherwise as for :func:`iter_similarity`.
    """
    if aggregate not in AGGREGATES:
        raise ParamError(f"aggregate must be one of {', '.join(AGGREGATES)}, not {aggregate!r}")
    if aggregate == "subtask_max" and subtasks is None:
        raise ParamError(
            "aggregate='subtask_max' needs subtasks: one label per target row (e.g. a field "
            "of the target records)"
        )
    if aggregate != "subtask_max" and subtasks is not None:
        raise ParamError(
            f"subtasks are only used by aggregate='subtask_max', not {aggregate!r}; drop "
            "subtasks or set aggregate='subtask_max'"
        )
    _check_sources(pool_sets, target_sets)
    num_targets = target_sets[0].num_rows
    if aggregate == "mean":
        reduce = np.full((num_targets, 1), 1.0 / num_targets, dtype=np.float32)
    elif aggregate == "subtask_max":
        reduce = subtask_matrix(subtasks, num_targets)
    else:
        reduce = None
    plan = _plan(pool_sets, target_sets, weights, metric, reduce, chunk_rows, memory_limit, device)
    scores = np.empty(plan.num_rows, dtype=np.float64)
    for start, sims in _stream(plan, progress, fresh=False):
        best = sims.amax(dim=1).cpu().numpy()
        scores[start : start + len(best)] = best
        del sims
    return scores
