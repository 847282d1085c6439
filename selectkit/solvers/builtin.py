"""The built-in solvers, registered through the plugin host.

- ``exact`` (the default): every objective kind, count and token budgets; exact fast paths, and a
  MILP on a small reduced-cost core when a token budget needs one.
- ``milp``: the whole problem as one HiGHS MILP (via cvxpy), for comparison and checking.
- ``lp``: the LP relaxation, rounded down and filled greedily; reports the LP value as bound.
- ``omp``: gradient matching (``Matching``) by non-negative orthogonal matching pursuit.
- ``greedy``: lazy greedy for set functions (``FacilityLocation``), with an upper bound.
- ``kcenter``: farthest-first traversal (``FarthestFirstSolver``) for ``KCenter``, with a lower
  bound on the radius.

Nothing here imports cvxpy, scipy or torch at import time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selectkit.errors import ParamError
from selectkit.markers import hookimpl
from selectkit.solvers.base import Solution, Solver
from selectkit.solvers.budget import Problem
from selectkit.solvers.farthest_first import FarthestFirstSolver
from selectkit.solvers.greedy import GreedySolver
from selectkit.solvers.knapsack import drop_worthless, fill_in_order, ratio_order, solve_tokens
from selectkit.solvers.milp_models import (
    canonical_count,
    count_model,
    require_solution,
    token_model,
)
from selectkit.solvers.objectives import LogWeights, Objective, Scores, Weights
from selectkit.solvers.omp import OmpSolver
from selectkit.solvers.sampling import gumbel_keys, take_by_count, take_by_tokens
from selectkit.solvers.topk import best_first, select_count


@dataclass(frozen=True)
class ExactParams:
    gap_tolerance: float = field(
        default=1e-4,
        metadata={
            "help": "token budgets: accept the greedy when it is within this relative gap of "
            "the LP bound, else solve a MILP core to this gap"
        },
    )
    time_limit: float = field(
        default=60.0, metadata={"help": "seconds HiGHS may spend on a MILP core"}
    )

    def __post_init__(self) -> None:
        if not self.gap_tolerance >= 0:
            raise ValueError(f"gap_tolerance must be >= 0, got {self.gap_tolerance}")
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0, got {self.time_limit}")


@dataclass(frozen=True)
class MilpParams:
    time_limit: float = field(default=60.0, metadata={"help": "seconds HiGHS may spend"})
    mip_rel_gap: float = field(
        default=1e-6, metadata={"help": "HiGHS stops when its relative MIP gap is below this"}
    )

    def __post_init__(self) -> None:
        if not self.mip_rel_gap >= 0:
            raise ValueError(f"mip_rel_gap must be >= 0, got {self.mip_rel_gap}")
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0, got {self.time_limit}")


@dataclass(frozen=True)
class LpParams:
    time_limit: float = field(default=60.0, metadata={"help": "seconds HiGHS may spend"})

    def __post_init__(self) -> None:
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be > 0, got {self.time_limit}")


class ExactSolver(Solver):
    """Exact top-k and quota greedy for count budgets, LP bound + greedy + MILP core for token
    budgets, seeded Gumbel-top-k sampling for log-weights."""

    name = "exact"
    objectives = (Scores, LogWeights, Weights)
    Params = ExactParams

    def solve(self, objective: Objective, problem: Problem, *, seed: int) -> Solution:
        values = _values(objective, problem, self.name)
        if isinstance(objective, LogWeights):
            return self._sample(objective, values, problem, seed)
        if problem.unit == "items":
            chosen = select_count(values, problem)
            total = float(values[chosen].sum())
            path = "quota-greedy" if problem.has_quotas else "top-k"
            return Solution(
                best_first(values, chosen),
                total,
                self.name,
                "optimal",
                used=len(chosen),
                bound=total,
                details={"path": path},
            )
        out = solve_tokens(
            values,
            problem,
            gap_tolerance=self.params.gap_tolerance,
            time_limit=self.params.time_limit,
        )
        return _token_solution(self.name, values, problem, out.selected, out.bound, out.details)

    def _sample(
        self, objective: LogWeights, values: np.ndarray, problem: Problem, seed: int
    ) -> Solution:
        keys = gumbel_keys(values, seed) if objective.sample else values
        details: dict[str, Any] = {"path": "gumbel-top-k" if objective.sample else "top-k"}
        if objective.sample:
            details["seed"] = int(seed)
        if problem.unit == "items":
            chosen = take_by_count(keys, problem)
            used = len(chosen)
        else:
            chosen, walked = take_by_tokens(keys, problem)
            used = int(problem.costs[chosen].sum())
            details["quota_fallback"] = not walked
        total = float(values[chosen].sum())
        if objective.sample:
            return Solution(chosen, total, self.name, "sampled", used=used, details=details)
        if problem.unit == "items":
            return Solution(
                chosen, total, self.name, "optimal", used=used, bound=total, details=details
            )
        return Solution(chosen, total, self.name, "feasible", used=used, details=details)


class MilpSolver(Solver):
    """The whole problem as one HiGHS MILP through cvxpy (boolean variable per record)."""

    name = "milp"
    objectives = (Scores, Weights)
    Params = MilpParams

    def solve(self, objective: Objective, problem: Problem, *, seed: int) -> Solution:
        values = _values(objective, problem, self.name)
        limit = self.params.time_limit
        if problem.unit == "items":
            model = count_model(values, problem)
            result = model.run(time_limit=limit, rel_gap=self.params.mip_rel_gap)
            x = require_solution(result, limit)
            chosen = canonical_count(
                values, problem, np.concatenate((model.fixed, model.variables[x]))
            )
        else:
            model, ks, keep = token_model(values, problem)
            result = model.run(time_limit=limit, rel_gap=self.params.mip_rel_gap)
            x = require_solution(result, limit)
            taken = np.zeros(len(ks.items), dtype=bool)
            taken[np.flatnonzero(keep)[x]] = True
            taken = drop_worthless(ks, taken, ks.values <= 0)
            chosen = np.concatenate((ks.fixed, ks.items[taken]))
        bound = None if result.bound is None else model.fixed_value + result.bound
        details = {"milp_status": result.status, "milp_variables": len(model.variables)}
        proven = result.status == "optimal"
        tolerance = max(self.params.mip_rel_gap, 1e-9)
        if problem.unit == "items":
            return _count_solution(self.name, values, chosen, bound, details, proven, tolerance)
        return _token_solution(
            self.name, values, problem, chosen, bound, details, proven, tolerance
        )


class LpSolver(Solver):
    """LP relaxation (HiGHS via cvxpy), fractional records rounded down, then a greedy fill
    (group minimums first); the LP value is reported as the bound."""

    name = "lp"
    objectives = (Scores, Weights)
    Params = LpParams

    def solve(self, objective: Objective, problem: Problem, *, seed: int) -> Solution:
        values = _values(objective, problem, self.name)
        limit = self.params.time_limit
        if problem.unit == "items":
            model = count_model(values, problem)
            result = model.run(relax=True, time_limit=limit)
            x = require_solution(result, limit)
            whole = np.zeros(problem.size, dtype=bool)
            whole[model.variables[x >= 1 - 1e-6]] = True
            rounded = dataclasses.replace(problem, required=problem.required | whole)
            chosen = select_count(values, rounded)
            bound = model.fixed_value + float(result.bound or 0.0)
            details = {"lp_status": result.status, "lp_variables": len(model.variables)}
            return _count_solution(self.name, values, chosen, bound, details)
        model, ks, keep = token_model(values, problem)
        result = model.run(relax=True, time_limit=limit)
        x = require_solution(result, limit)
        start = np.zeros(len(ks.items), dtype=bool)
        start[np.flatnonzero(keep)[x >= 1 - 1e-6]] = True
        taken, met = fill_in_order(ks, ratio_order(ks), ks.values > 0, start=start)
        taken = drop_worthless(ks, taken, ks.values <= 0)
        details: dict[str, Any] = {"lp_status": result.status, "lp_variables": int(keep.sum())}
        bound = ks.fixed_value + float(result.bound or 0.0)
        if met:
            chosen = np.concatenate((ks.fixed, ks.items[taken]))
        else:
            # Rounding broke a group minimum the greedy cannot repair: solve it exactly.
            out = solve_tokens(values, problem, gap_tolerance=0.0, time_limit=limit)
            chosen = out.selected
            details["fallback"] = "exact"
        return _token_solution(self.name, values, problem, chosen, bound, details)


def _count_solution(
    name: str,
    values: np.ndarray,
    chosen: np.ndarray,
    bound: float | None,
    details: dict[str, Any],
    proven: bool = True,
    tolerance: float = 1e-9,
) -> Solution:
    total = float(values[chosen].sum())
    return _finish(name, values, chosen, total, len(chosen), bound, details, proven, tolerance)


def _token_solution(
    name: str,
    values: np.ndarray,
    problem: Problem,
    chosen: np.ndarray,
    bound: float | None,
    details: dict[str, Any],
    proven: bool = True,
    tolerance: float = 1e-9,
) -> Solution:
    total = float(values[chosen].sum())
    used = int(problem.costs[chosen].sum())
    return _finish(name, values, chosen, total, used, bound, details, proven, tolerance)


def _finish(
    name: str,
    values: np.ndarray,
    chosen: np.ndarray,
    total: float,
    used: int,
    bound: float | None,
    details: dict[str, Any],
    proven: bool,
    tolerance: float,
) -> Solution:
    """A Solution in best-first order; "optimal" only when the bound proves it (to
    ``tolerance``, relative)."""
    if bound is not None:
        bound = max(float(bound), total)
    optimal = proven and bound is not None and bound - total <= tolerance * max(1.0, abs(bound))
    return Solution(
        best_first(values, chosen),
        total,
        name,
        "optimal" if optimal else "feasible",
        used=used,
        bound=bound,
        details=details,
    )


def _values(objective: Objective, problem: Problem, solver: str) -> np.ndarray:
    values = objective.values
    if len(values) != problem.size:
        raise ParamError(
            f"solver '{solver}': the objective has {len(values)} values but the pool has "
            f"{problem.size} records"
        )
    if not isinstance(objective, LogWeights) and not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ParamError(
            f"solver '{solver}': {type(objective).__name__} value of record {bad} is "
            f"{values[bad]}; scores must be finite (exclude the record instead)"
        )
    return values


@hookimpl
def selectkit_register_solvers() -> list[type[Solver]]:
    return [ExactSolver, MilpSolver, LpSolver, OmpSolver, GreedySolver, FarthestFirstSolver]
