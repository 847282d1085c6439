"""``kcenter``: farthest-first traversal for the k-center problem, under a count budget, required
and excluded records and group quotas.

k-center asks for ``k`` records (centers) that leave every pool record close to one of them:
minimize the radius ``max_i min_{c∈S} d(i, c)``. Farthest-first traversal (Gonzalez 1985) starts
from the required records (Sener and Savarese 2018 start from the already-labelled set), or else
from the record nearest the pool's mean, and then adds the allowed record farthest from every
center so far. Ties go to the lower pool position, so the result is deterministic.

Guarantees. Without exclusions, quotas or required records the radius is at most twice the best
possible (Gonzalez). In every case the solution reports a lower bound on the best radius: the
centers and the farthest record left are pairwise at least ``D`` apart, and any ``k`` centers
leave two of those ``k + 1`` records sharing one, so no selection does better than ``D / 2``.
The radius covers every pool record, excluded ones too (they must still be represented).

Distances are Euclidean on the feature rows (``cosine``: on the rows scaled to unit length,
``sqrt(2 − 2 cos)``), held in memory as float32; each step costs one pass over the pool
(``O(n · dim)``), the whole run ``O(k · n · dim)``.
"""

from __future__ import annotations

import numpy as np

from selectkit.solvers.base import Solution, Solver
from selectkit.solvers.budget import Problem
from selectkit.solvers.greedy import check_count_problem
from selectkit.solvers.objectives import KCenter, Objective
from selectkit.solvers.picking import Picker


class Distances:
    """Distances from one record to every record, on centred float32 rows (centring shrinks
    the norms and with them the cancellation in ``|x|² + |c|² − 2 x·c``)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.x = rows - rows.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.sq = np.einsum("ij,ij->i", self.x, self.x, dtype=np.float64)
        # Below float32's resolution of |x|², a squared distance counts as 0: a record is at
        # distance 0 from itself.
        self.floor = 8 * float(np.finfo(np.float32).eps) * float(self.sq.max(initial=0.0))

    def to(self, index: int) -> np.ndarray:
        """Float64 distances of every record to record ``index``."""
        dots = self.x @ self.x[index]
        squared = self.sq + self.sq[index] - 2.0 * dots.astype(np.float64)
        squared[squared <= self.floor] = 0.0
        return np.sqrt(squared)

    def nearest_to_mean(self, allowed: np.ndarray) -> int:
        """The allowed record nearest the mean of all rows (the first of equals)."""
        return int(np.flatnonzero(allowed)[np.argmin(self.sq[allowed])])


class KCenterSolver(Solver):
    """Farthest-first traversal for k-center under a count budget and quotas."""

    name = "kcenter"
    objectives = (KCenter,)

    def solve(self, objective: Objective, problem: Problem, *, seed: int) -> Solution:
        assert isinstance(objective, KCenter)
        check_count_problem(self.name, objective, problem)
        distances = objective.distances
        picker = Picker(problem)
        nearest = np.full(problem.size, np.inf)
        owner = np.full(problem.size, -1, dtype=np.int64)
        spacing = np.inf  # the smallest distance of a center to the centers before it

        def add(index: int) -> None:
            nonlocal spacing
            if picker.order:
                spacing = min(spacing, float(nearest[index]))
            step = distances.to(index)
            closer = step < nearest
            owner[closer] = len(picker.order)
            np.minimum(nearest, step, out=nearest)
            picker.add(index)

        for index in np.flatnonzero(problem.required):
            add(int(index))
        while picker.remaining > 0:
            allowed = picker.allowed()
            if not picker.order:
                add(distances.nearest_to_mean(allowed))
                continue
            add(int(np.argmax(np.where(allowed, nearest, -np.inf))))

        order = np.array(picker.order, dtype=np.int64)
        radius = float(nearest.max()) if len(order) else np.inf
        lower = min(spacing, radius) / 2 if len(order) else 0.0
        weights = None
        if objective.weighted:
            weights = np.bincount(owner, minlength=len(order)).astype(np.float64)
        plain = not (problem.excluded.any() or problem.required.any() or problem.has_quotas)
        details = {
            "path": "farthest-first",
            "metric": objective.metric,
            "radius": radius,
            "radius_lower_bound": lower,
            "guarantee": "radius <= 2 OPT" if plain else "none beyond the lower bound",
            "certified_ratio": radius / lower if lower > 0 else None,
        }
        return Solution(
            order,
            -radius,
            self.name,
            "optimal" if radius <= lower else "feasible",
            used=len(order),
            bound=-lower,
            details=details,
            weights=weights,
        )
