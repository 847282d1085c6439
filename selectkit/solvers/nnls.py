"""Non-negative least squares on a small Gram system (Lawson and Hanson's active set method).

Gradient matching refits the weights of the selected records after every pick: minimize
``||Aᵀw − t||² + l2·||w||²`` over ``w >= 0`` where the rows of ``A`` are the selected records'
features. Only ``G = AAᵀ (+ l2·I)`` and ``b = At`` are needed (the "fast NNLS" form of Bro and
de Jong, 1997), so the cost depends on the number of selected records, not on the feature
dimension. A warm start from the previous weights usually converges in one or two steps.
"""

from __future__ import annotations

import numpy as np


def nnls_gram(
    gram: np.ndarray, rhs: np.ndarray, start: np.ndarray | None = None, *, max_iter: int = 0
) -> np.ndarray:
    """``argmin_{w >= 0} ½ wᵀ gram w − rhsᵀ w`` for a positive semi-definite ``gram``.

    ``start`` is a feasible warm start (negative entries are treated as 0). ``max_iter``
    bounds the records entering the active set (default ``3 · size + 10``).
    """
    size = len(rhs)
    if gram.shape != (size, size):
        raise ValueError(f"gram must be {size} x {size}, got {gram.shape}")
    if size == 0:
        return np.zeros(0)
    scale = max(float(np.abs(gram).max()), float(np.abs(rhs).max()), 1e-300)
    tol = 1e-12 * scale * size
    w = np.zeros(size) if start is None else np.maximum(np.asarray(start, dtype=np.float64), 0)
    passive = w > 0
    for _ in range(max_iter or 3 * size + 10):
        w = _feasible_step(gram, rhs, w, passive)
        grad = rhs - gram @ w
        entering = ~passive & (grad > tol)
        if not entering.any():
            break
        passive[int(np.argmax(np.where(entering, grad, -np.inf)))] = True
    return w


def _feasible_step(
    gram: np.ndarray, rhs: np.ndarray, w: np.ndarray, passive: np.ndarray
) -> np.ndarray:
    """Solve on the passive set; while that leaves a weight <= 0, move from ``w`` toward the
    solution as far as feasibility allows and drop the records that reach 0 (updates
    ``passive`` in place)."""
    while passive.any():
        s = np.zeros_like(w)
        s[passive] = _solve(gram[np.ix_(passive, passive)], rhs[passive])
        bad = passive & (s <= 0)
        if not bad.any():
            return s
        gap = w[bad] - s[bad]
        steps = np.where(gap > 0, w[bad] / np.where(gap > 0, gap, 1.0), 0.0)
        alpha = float(steps.min())
        w = w + alpha * (s - w)
        passive &= w > 0
        passive[np.flatnonzero(bad)[steps == alpha]] = False
        w[~passive] = 0.0
    return np.zeros_like(w)


def _solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Cholesky solve, or least squares when the records' features are linearly dependent."""
    try:
        factor = np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(matrix, rhs, rcond=None)[0]
    return np.linalg.solve(factor.T, np.linalg.solve(factor, rhs))
