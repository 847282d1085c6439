"""``omp``: gradient matching by orthogonal matching pursuit with non-negative weights
(GRAD-MATCH, Killamsetty et al. 2021).

Each step streams the pool once to correlate every record's features with the residual
``r = t − Σ_{i∈S} w_i f_i``, adds the allowed record with the largest correlation, and refits
all weights by non-negative least squares on the selected rows (a warm-started active set on
their small Gram matrix). Memory holds one chunk of pool rows plus the selected rows; a pool
that fits in ``memory_limit`` is read once and kept.

Count budgets are filled exactly: required records come first (their weights are fitted like
the others), group maximums close a group and group minimums are met (see
:mod:`selectkit.solvers.picking`). When no allowed record correlates positively with the
residual any more, the pick is still the most correlated one so that the budget is filled; the
refit then usually gives it weight 0 (``details["zero_weights"]`` counts them). OMP has no
approximation guarantee in general; it recovers an exact non-negative combination of few,
weakly correlated rows. ``objective`` is the matching error ``||Σ w_i f_i − t||²`` (lower is
better).
"""

from __future__ import annotations

import numpy as np

from selectkit.rows import ArrayRows, chunk_rows, matvec, read_rows
from selectkit.solvers.base import Solution, Solver
from selectkit.solvers.budget import Problem
from selectkit.solvers.nnls import nnls_gram
from selectkit.solvers.objectives import Matching, Objective
from selectkit.solvers.picking import Picker, check_count_problem


class OmpSolver(Solver):
    """Orthogonal matching pursuit with non-negative least-squares weights."""

    name = "omp"
    objectives = (Matching,)

    def solve(self, objective: Objective, problem: Problem, *, seed: int) -> Solution:
        assert isinstance(objective, Matching)
        check_count_problem(self.name, objective, problem)
        rows = objective.features
        if chunk_rows(rows, objective.memory_limit) >= rows.num_rows:
            rows = ArrayRows(read_rows(rows, 0, rows.num_rows))
        scale = float(problem.limit) if objective.scale_to_budget else 1.0
        target = objective.target_row * scale
        fit = _Fit(problem.limit, rows.dim, target, objective.l2)
        picker = Picker(problem)
        for index in np.flatnonzero(problem.required):
            picker.add(int(index))
            fit.add(read_rows(rows, int(index), int(index) + 1)[0])
        passes = 0
        while picker.remaining > 0:
            if fit.size == 0:
                correlation = objective.values * scale
            else:
                correlation = matvec(rows, fit.residual, objective.memory_limit)
                passes += 1
            allowed = picker.allowed()
            pick = int(np.argmax(np.where(allowed, correlation, -np.inf)))
            picker.add(pick)
            fit.add(read_rows(rows, pick, pick + 1)[0])
        error = float(fit.residual @ fit.residual)
        norm = float(np.linalg.norm(target))
        details = {
            "path": "omp-nnls",
            "sense": "minimize",
            "residual_norm": error**0.5,
            "target_norm": norm,
            "relative_residual": error**0.5 / norm if norm > 0 else 0.0,
            "target_scale": scale,
            "zero_weights": int((fit.weights <= 0).sum()),
            "pool_passes": passes,
        }
        return Solution(
            np.array(picker.order, dtype=np.int64),
            error,
            self.name,
            "feasible",
            used=len(picker.order),
            details=details,
            weights=fit.weights,
        )


class _Fit:
    """The selected rows, their Gram system and the current non-negative weights."""

    def __init__(self, capacity: int, dim: int, target: np.ndarray, l2: float) -> None:
        self.rows = np.zeros((capacity, dim))
        self.gram = np.zeros((capacity, capacity))
        self.rhs = np.zeros(capacity)
        self.target = target
        self.l2 = l2
        self.size = 0
        self.weights = np.zeros(0)
        self.residual = target.copy()

    def add(self, row: np.ndarray) -> None:
        p = self.size
        self.rows[p] = row
        cross = self.rows[: p + 1] @ self.rows[p]
        self.gram[p, : p + 1] = cross
        self.gram[: p + 1, p] = cross
        self.gram[p, p] += self.l2
        self.rhs[p] = self.rows[p] @ self.target
        self.size = p + 1
        start = np.append(self.weights, 0.0)
        self.weights = nnls_gram(self.gram[: p + 1, : p + 1], self.rhs[: p + 1], start)
        self.residual = self.target - self.weights @ self.rows[: p + 1]
