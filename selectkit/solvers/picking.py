"""Which records a one-at-a-time greedy may add next under a count budget and group quotas.

Greedy solvers (gradient matching's OMP, facility location, k-center's farthest-first) add
required records first, then one record per step. A group at its maximum is closed; once the
records still to pick equal the group minimums still unmet, only groups below their minimum stay
open. ``resolve`` has already checked that the budget, the quotas and the required and excluded
records fit together, so this rule always ends with exactly ``limit`` records and every quota
met.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from selectkit.errors import BudgetError, ParamError
from selectkit.solvers.budget import Problem
from selectkit.solvers.topk import bucket_of

if TYPE_CHECKING:
    from selectkit.solvers.objectives import Objective


class Picker:
    """Tracks the selection of a greedy solver and the records it may add next."""

    def __init__(self, problem: Problem) -> None:
        if problem.unit != "items":
            raise BudgetError("Picker works on count budgets only")
        n_groups = len(problem.group_min)
        self.buckets = bucket_of(problem.group_codes, n_groups)
        self.counts = np.zeros(n_groups + 1, dtype=np.int64)
        self.low = np.append(problem.group_min, 0)
        self.high = np.append(problem.group_max, np.iinfo(np.int64).max)
        self.open = ~problem.excluded.copy()
        self.remaining = problem.limit
        self.order: list[int] = []

    def add(self, index: int) -> None:
        """Select record ``index`` (which must be open)."""
        if not self.open[index] or self.remaining <= 0:
            raise BudgetError(f"record {index} cannot be added to the selection")
        self.open[index] = False
        self.counts[self.buckets[index]] += 1
        self.remaining -= 1
        self.order.append(int(index))

    def allowed(self) -> np.ndarray:
        """Mask of the records that may be added next without breaking a quota."""
        ok = self.counts < self.high
        outstanding = int(np.maximum(self.low - self.counts, 0).sum())
        if outstanding >= self.remaining:
            ok &= self.counts < self.low
        mask = self.open & ok[self.buckets]
        if self.remaining > 0 and not mask.any():
            raise BudgetError(
                f"{self.remaining} record(s) are still to pick but group quotas and exclusions "
                "leave none selectable"
            )
        return mask


def check_count_problem(solver: str, objective: Objective, problem: Problem) -> None:
    """Refuse token budgets and objectives of the wrong length, naming what is supported."""
    if problem.unit != "items":
        raise ParamError(
            f"solver '{solver}' supports count budgets (-b 500 or -b 5%), not token budgets: "
            f"a {type(objective).__name__} objective has no per-token utility to pack"
        )
    if len(objective) != problem.size:
        raise ParamError(
            f"solver '{solver}': the objective has {len(objective)} records but the pool has "
            f"{problem.size}"
        )
