"""TRAK's linear algebra: the damped kernel inverse, per-checkpoint scores and the ensemble.

Park, Georgiev, Ilyas, Leclerc and Madry (2023), "TRAK: Attributing Model Behavior at Scale"
(ICML): the TRAK estimator, with the ridge term of traker's score computer. With ``Φ_c`` the
``(n, d)`` matrix of pool features at checkpoint ``c`` (row ``φ_i = P∇f(z_i)``, a projected
gradient of the model output) and ``φ_t`` a target's feature row, the score of pool record ``i``
for target ``t`` is

    τ_c[i, t] = φ_t (Φ_cᵀΦ_c + λ_c I)⁻¹ φ_iᵀ,      λ_c = damping · trace(Φ_cᵀΦ_c) / min(n, d),

and checkpoints are ensembled as ``TRAKer.finalize_scores`` does (equal weights):

    τ[i, t] = mean_c(τ_c[i, t]) · mean_c(Q_c[i]),

where ``Q_c[i]`` is the out-to-loss weight ∂ℓ/∂f of record ``i`` (see ``output.py``).

``damping`` is relative to the mean of the kernel's non-zero eigenvalues, ``trace/min(n, d)``
(``ΦᵀΦ`` has rank at most ``min(n, d)``), after kronfluence's heuristic damping (0.1 × the mean
eigenvalue): the same value works whatever the scale of the gradients, the dimension or the
number of records. (Dividing by ``d`` instead, when ``n < d``, would shrink the ridge by
``n/d`` and leave TRAK nearly interpolating: on the LDS benchmark's 60-record pool with
``dim`` 1024 that halved its LDS.) 0 means no ridge, as in TRAK's paper, which needs a kernel
of full rank.

Two exact forms, both through a symmetric eigendecomposition ``K = V diag(w) Vᵀ`` so that
``(K + λI)⁻¹ = V diag(1 / (w + λ)) Vᵀ`` and the rank is visible:

- primal (``n > d``): ``K = ΦᵀΦ`` (``d × d``) accumulated in float64 over chunks of pool rows,
  ``T = (K + λI)⁻¹ Φ_tᵀ`` (``d × m``), then a second pass ``τ[chunk] = Φ[chunk] T``; memory is
  two ``d × d`` float64 matrices and one chunk, whatever ``n``.
- dual (``n ≤ d``): by the push-through identity ``(ΦᵀΦ + λI)⁻¹Φᵀ = Φᵀ(ΦΦᵀ + λI)⁻¹``,
  ``τ[:, t] = (G + λI)⁻¹ Φ φ_tᵀ`` with the ``n × n`` Gram matrix ``G = ΦΦᵀ``; the pool rows are
  held in float64 (``n·d ≤ d²`` values, no more than the primal kernel).

Features come from any :class:`~selectkit.rows.RowSource` (the feature store's
``FeatureSet``, ``ArrayRows``, or :class:`ScaledRows`). Everything is computed in float64.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np

from selectkit.errors import ParamError
from selectkit.rows import RowSource

#: Bytes of float64 pool rows per chunk in the primal form's two passes.
CHUNK_BYTES = 64 << 20

#: A kernel is numerically singular when its smallest eigenvalue is at most this many float64
#: epsilons per row of the kernel times its largest (numpy's matrix_rank tolerance).
_EPS = float(np.finfo(np.float64).eps)


class ScaledRows:
    """The rows of ``source`` times one factor per row, as float64: ``φ_i = s_i · g_i``."""

    def __init__(self, source: RowSource, scale: np.ndarray) -> None:
        scale = np.asarray(scale, dtype=np.float64)
        if scale.shape != (source.num_rows,):
            raise ParamError(
                f"ScaledRows needs one factor per row: {source.num_rows} rows but scale of "
                f"shape {scale.shape}"
            )
        if not np.isfinite(scale).all():
            raise ParamError(f"row factor {int(np.argmin(np.isfinite(scale)))} is not finite")
        self.source = source
        self.scale = scale

    @property
    def num_rows(self) -> int:
        return self.source.num_rows

    @property
    def dim(self) -> int:
        return self.source.dim

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float64)

    def read(self, start: int, stop: int) -> np.ndarray:
        rows = np.asarray(self.source.read(start, stop), dtype=np.float64)
        return rows * self.scale[start:stop, None]


def memory_needed(num_rows: int, num_targets: int, dim: int) -> int:
    """About the peak bytes :func:`trak_scores` allocates (float64): the kernel, its
    eigenvectors and the eigensolver's workspace (``3 · d²``, or ``3 · n²`` plus the pool rows in
    the dual form), the solved targets, one checkpoint's scores and the ensemble's."""
    n, m, d = num_rows, num_targets, dim
    dual = n * d + 3 * n * n + n * m
    primal = 3 * d * d + d * m + n * m + CHUNK_BYTES // 8
    return 8 * ((dual if n <= d else primal) + n * m + m * d)


def check_damping(num_rows: int, dim: int, damping: float) -> None:
    """Refuse a kernel that cannot be inverted before any work: without damping, ``ΦᵀΦ`` has
    rank at most ``num_rows``, so it is singular when ``num_rows < dim``."""
    if not np.isfinite(damping) or damping < 0:
        raise ParamError(f"damping must be a finite number >= 0, got {damping}")
    if damping == 0 and num_rows < dim:
        raise ParamError(
            f"damping=0 leaves the TRAK kernel ΦᵀΦ singular: its rank is at most the "
            f"{num_rows} pool records < dim {dim}; set damping > 0 (e.g. 0.1) or use "
            f"projection.dim <= {num_rows}"
        )


def _read(source: RowSource, start: int, stop: int, label: str) -> np.ndarray:
    rows = np.asarray(source.read(start, stop), dtype=np.float64)
    if rows.shape != (stop - start, source.dim):
        raise ParamError(
            f"{label}: read({start}, {stop}) returned shape {rows.shape}, expected "
            f"({stop - start}, {source.dim})"
        )
    if not np.isfinite(rows).all():
        bad = start + int(np.argmin(np.isfinite(rows).all(axis=1)))
        raise ParamError(f"{label}: row {bad} has a non-finite (NaN or Inf) feature")
    return rows


def _chunks(
    source: RowSource, chunk_rows: int, label: str, progress: bool
) -> Iterator[tuple[int, np.ndarray]]:
    from tqdm.auto import tqdm

    n = source.num_rows
    with tqdm(total=n, desc=label, unit="row", disable=not progress) as bar:
        for start in range(0, n, chunk_rows):
            stop = min(start + chunk_rows, n)
            yield start, _read(source, start, stop, label)
            bar.update(stop - start)


def _damped_inverse(
    kernel: np.ndarray, trace: float, rank_bound: int, damping: float, label: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(V, 1 / (w + λ))`` for ``kernel = V diag(w) Vᵀ``; a ParamError when the kernel is all
    zeros, or when ``kernel + λI`` is numerically singular (naming the rank found)."""
    if trace <= 0:
        raise ParamError(f"{label}: every pool feature is zero, so there is no kernel to invert")
    lam = damping * trace / rank_bound
    w, v = np.linalg.eigh(kernel)
    shifted = w + lam
    tol = kernel.shape[0] * _EPS * shifted[-1]
    if shifted[0] <= tol:
        rank = int((w > tol).sum())
        fix = "set damping > 0" if lam == 0 else f"damping={damping} is too small; raise it"
        raise ParamError(
            f"{label}: the kernel is singular (numerical rank {rank} of {kernel.shape[0]}, e.g. "
            f"duplicate or zero feature rows); {fix}"
        )
    return v, 1.0 / shifted


def checkpoint_scores(
    pool: RowSource,
    targets: np.ndarray,
    damping: float,
    *,
    form: Literal["auto", "primal", "dual"] = "auto",
    chunk_rows: int | None = None,
    label: str = "checkpoint",
    progress: bool = False,
) -> np.ndarray:
    """``τ_c`` (float64, ``(pool rows, target rows)``): ``Φ (ΦᵀΦ + λI)⁻¹ targetsᵀ``, by the
    primal form when ``n > d`` and the dual form when ``n ≤ d`` (``form="auto"``; see the
    module docstring), or by the form asked for."""
    n, d = pool.num_rows, pool.dim
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2 or targets.shape[1] != d:
        raise ParamError(f"{label}: targets must have shape (m, {d}), got {targets.shape}")
    if not np.isfinite(targets).all():
        raise ParamError(f"{label}: a target has a non-finite (NaN or Inf) feature")
    if form not in ("auto", "primal", "dual"):
        raise ParamError(f"form must be auto, primal or dual, not {form!r}")
    check_damping(n, d, damping)
    if form == "dual" or (form == "auto" and n <= d):
        phi = _read(pool, 0, n, f"{label} pool")
        gram = phi @ phi.T
        v, inverse = _damped_inverse(gram, float(np.trace(gram)), min(n, d), damping, label)
        del gram
        return v @ (inverse[:, None] * (v.T @ (phi @ targets.T)))
    rows = chunk_rows or max(1, CHUNK_BYTES // (8 * d))
    kernel = np.zeros((d, d))
    for _, x in _chunks(pool, rows, f"{label} kernel", progress):
        kernel += x.T @ x
    v, inverse = _damped_inverse(kernel, float(np.trace(kernel)), min(n, d), damping, label)
    del kernel
    solved = v @ (inverse[:, None] * (v.T @ targets.T))
    scores = np.empty((n, targets.shape[0]))
    for start, x in _chunks(pool, rows, f"{label} scores", progress):
        scores[start : start + len(x)] = x @ solved
    return scores


def trak_scores(
    pool_sets: Sequence[RowSource],
    target_sets: Sequence[RowSource],
    out_to_loss: Sequence[np.ndarray],
    damping: float,
    *,
    chunk_rows: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """TRAK's ensemble ``mean_c(τ_c) · mean_c(Q_c)`` (float64, ``(pool rows, target rows)``):
    ``pool_sets[c]`` and ``target_sets[c]`` are checkpoint ``c``'s features ``φ``,
    ``out_to_loss[c]`` its pool records' out-to-loss weights ``Q_c``."""
    if not pool_sets or not len(pool_sets) == len(target_sets) == len(out_to_loss):
        raise ParamError(
            f"TRAK needs one target set and one out-to-loss array per pool set (at least one): "
            f"got {len(pool_sets)}, {len(target_sets)} and {len(out_to_loss)}"
        )
    n, m = pool_sets[0].num_rows, target_sets[0].num_rows
    for c, (pool, target, q) in enumerate(zip(pool_sets, target_sets, out_to_loss, strict=True)):
        if (pool.num_rows, target.num_rows, np.shape(q)) != (n, m, (n,)):
            raise ParamError(
                f"checkpoint {c}: {pool.num_rows} pool rows, {target.num_rows} target rows and "
                f"{np.size(q)} out-to-loss weights; expected {n}, {m} and {n} as at checkpoint 0"
            )
        if pool.dim != target.dim:
            raise ParamError(
                f"checkpoint {c}: pool features have dim {pool.dim} but target features "
                f"{target.dim}; both must come from the same projection"
            )
        if not np.isfinite(q).all():
            raise ParamError(f"checkpoint {c}: an out-to-loss weight is not finite (NaN or Inf)")
        check_damping(n, pool.dim, damping)
    total = np.zeros((n, m))
    weights = np.zeros(n)
    count = len(pool_sets)
    for c, (pool, target, q) in enumerate(zip(pool_sets, target_sets, out_to_loss, strict=True)):
        label = f"checkpoint {c + 1}/{count}"
        targets = _read(target, 0, m, f"{label} targets")
        total += checkpoint_scores(
            pool, targets, damping, chunk_rows=chunk_rows, label=label, progress=progress
        )
        weights += np.asarray(q, dtype=np.float64)
    return (total / count) * (weights / count)[:, None]
