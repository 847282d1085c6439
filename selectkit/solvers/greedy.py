"""``greedy``: lazy greedy maximization of a monotone submodular set function (facility
location for CRAIG) under a count budget, required and excluded records and group quotas.

Lazy greedy (Minoux 1978) returns exactly what plain greedy returns: a record's gain only
shrinks as the selection grows (submodularity), so a stale gain is an upper bound, and a record
whose fresh gain is at least every other upper bound is the best pick. Stale candidates are
re-evaluated in batches (doubling while the best is undecided) so each evaluation is one
matrix product. Ties go to the lower pool position.

Guarantees. Without quotas, ``F(S) − F(R) >= (1 − 1/e)(OPT − F(R))`` for the best set of the
same size containing the required records ``R`` (Nemhauser, Wolsey and Fisher 1978); with group
maximums only, greedy over a matroid gives ``1/2``; with group minimums there is no worst-case
ratio. In every case the solution reports an upper bound on ``OPT``: ``F(S)`` plus the largest
remaining marginal gains (an online bound, Leskovec et al. 2007), tightened by the ratio when
one applies; ``gap`` is then a certified distance to the optimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from selectkit.solvers.base import Solution, Solver
from selectkit.solvers.budget import Problem
from selectkit.solvers.objectives import Objective, SetFunction
from selectkit.solvers.picking import Picker, check_count_problem
from selectkit.solvers.topk import best_first, top_mask

RATIO = 1 - 1 / math.e


@dataclass(frozen=True)
class GreedyParams:
    batch: int = field(
        default=8, metadata={"help": "stale candidates re-evaluated at once (doubles as needed)"}
    )

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")


class GreedySolver(Solver):
    """Lazy greedy for set functions under a count budget and quotas, with an upper bound."""

    name = "greedy"
    objectives = (SetFunction,)
    Params = GreedyParams

    def solve(self, objective: Objective, problem: Problem, *, seed: int) -> Solution:
        assert isinstance(objective, SetFunction)
        check_count_problem(self.name, objective, problem)
        picker = Picker(problem)
        state = objective.evaluator()
        for index in np.flatnonzero(problem.required):
            state.add(int(index))
            picker.add(int(index))
        base_value = state.value
        bounds = objective.values.copy()
        fresh = np.full(problem.size, 0 if not problem.required.any() else -1)
        evaluations = 0
        while picker.remaining > 0:
            allowed = picker.allowed()
            step = len(picker.order)
            batch = self.params.batch
            while True:
                exact = allowed & (fresh == step)
                stale = allowed & (fresh != step)
                best = _best(bounds, exact)
                stale_top = float(bounds[stale].max()) if stale.any() else -np.inf
                if best is not None and bounds[best] >= stale_top:
                    break
                candidates = np.flatnonzero(stale)
                chosen = candidates[top_mask(bounds[candidates], batch)]
                bounds[chosen] = state.gains(chosen)
                fresh[chosen] = step
                evaluations += len(chosen)
                batch *= 2
            state.add(best)
            picker.add(best)
        order = np.array(picker.order, dtype=np.int64)
        details = objective.describe()
        bound, guarantee = _bound(problem, picker, bounds, state.value, base_value)
        details.update(
            {
                "path": "lazy-greedy",
                "evaluations": evaluations,
                "guarantee": guarantee,
                "approximation_ratio": _ratio(problem),
                "certified_ratio": state.value / bound if bound > 0 else 1.0,
            }
        )
        gap_ok = bound - state.value <= 1e-9 * max(1.0, abs(bound))
        return Solution(
            order,
            state.value,
            self.name,
            "optimal" if gap_ok else "feasible",
            used=len(order),
            bound=max(bound, state.value),
            details=details,
            weights=state.weights(order),
        )


def _best(bounds: np.ndarray, mask: np.ndarray) -> int | None:
    """The masked record with the largest bound, lowest position on ties."""
    if not mask.any():
        return None
    candidates = np.flatnonzero(mask)
    return int(best_first(bounds, candidates)[0])


def _ratio(problem: Problem) -> float | None:
    if (problem.group_min > 0).any():
        return None
    return 0.5 if problem.has_quotas else RATIO


def _bound(
    problem: Problem, picker: Picker, bounds: np.ndarray, value: float, base_value: float
) -> tuple[float, str]:
    """An upper bound on the best feasible value, and the worst-case guarantee in words."""
    slots = problem.limit - int(problem.required.sum())
    free = picker.open
    top = bounds[free][top_mask(bounds[free], slots)] if free.any() else np.zeros(0)
    bound = value + float(np.maximum(top, 0).sum())
    ratio = _ratio(problem)
    if ratio is None:
        return bound, "none with group minimums (the bound still holds)"
    bound = min(bound, base_value + (value - base_value) / ratio)
    if ratio == RATIO:
        return bound, "F(S) >= (1 - 1/e) OPT (of sets this size holding the required records)"
    return bound, "F(S) >= OPT / 2 (group maximums make the choice a matroid)"
