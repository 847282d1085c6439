"""Farthest-first traversal (the ``kcenter`` solver) for the k-center problem, under a count
budget, required and excluded records and group quotas.

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
``sqrt(2 − 2 cos)``), held in memory as float32 :class:`~selectkit.rows.CentredRows` (the rows
facility location measures on too); each step costs one pass over the pool (``O(n · dim)``), the
whole run ``O(k · n · dim)``.
"""

from __future__ import annotations

import numpy as np

from selectkit.solvers.base import Solution, Solver
from selectkit.solvers.budget import Problem
from selectkit.solvers.objectives import KCenter, Objective
from selectkit.solvers.picking import Picker, check_count_problem


class FarthestFirstSolver(Solver):
    """Farthest-first traversal for k-center under a count budget and quotas. Registered as
    ``kcenter``, the name users type (``--solver kcenter``)."""

    name = "kcenter"
    objectives = (KCenter,)

    def solve(self, objective: Objective, problem: Problem, *, seed: int) -> Solution:
        assert isinstance(objective, KCenter)
        check_count_problem(self.name, objective, problem)
        rows = objective.centred
        picker = Picker(problem)
        nearest = np.full(problem.size, np.inf)
        owner = np.full(problem.size, -1, dtype=np.int64)
        spacing = np.inf  # the smallest distance of a center to the centers before it

        def add(index: int) -> None:
            nonlocal spacing
            if picker.order:
                spacing = min(spacing, float(nearest[index]))
            step = rows.distances_to(index)
            closer = step < nearest
            owner[closer] = len(picker.order)
            np.minimum(nearest, step, out=nearest)
            picker.add(index)

        for index in np.flatnonzero(problem.required):
            add(int(index))
        while picker.remaining > 0:
            allowed = picker.allowed()
            if not picker.order:
                add(rows.nearest_to_mean(allowed))
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
