"""Whole-problem MILP/LP models for the ``milp`` and ``lp`` solvers, and the clean-up that makes
their answers follow selectkit's selection rules (value-0 records out, ties by index)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selectkit.errors import BudgetError
from selectkit.solvers import milp
from selectkit.solvers.budget import Problem
from selectkit.solvers.knapsack import Knapsack, prepare
from selectkit.solvers.topk import bucket_of, split_by_group, top_mask

_NO_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Model:
    """One selection problem as ``milp.solve_binary`` arguments over pool positions
    ``variables``; ``fixed`` are selected whatever the model says."""

    variables: np.ndarray
    values: np.ndarray
    weights: np.ndarray
    buckets: np.ndarray
    total: int
    need: np.ndarray
    cap: np.ndarray
    equality: bool
    fixed: np.ndarray
    fixed_value: float

    def run(
        self, *, relax: bool = False, time_limit: float | None = None, rel_gap: float = 1e-6
    ) -> milp.MilpResult:
        return milp.solve_binary(
            self.values,
            self.weights,
            self.buckets,
            total=self.total,
            need=self.need,
            cap=self.cap,
            equality=self.equality,
            relax=relax,
            time_limit=time_limit,
            rel_gap=rel_gap,
        )


def count_model(values: np.ndarray, problem: Problem) -> Model:
    """Exactly ``limit`` records: one binary per free record, a count row per limited group."""
    n_groups = len(problem.group_min)
    required = np.flatnonzero(problem.required)
    free = np.flatnonzero(~problem.required & ~problem.excluded)
    buckets = bucket_of(problem.group_codes, n_groups)
    forced = np.bincount(buckets[required], minlength=n_groups + 1)
    need = np.maximum(np.append(problem.group_min, 0) - forced, 0)
    cap = np.append(problem.group_max, _NO_MAX) - forced
    return Model(
        variables=free,
        values=values[free],
        weights=np.ones(len(free), dtype=np.int64),
        buckets=buckets[free],
        total=problem.limit - len(required),
        need=need,
        cap=cap,
        equality=True,
        fixed=required,
        fixed_value=float(values[required].sum()),
    )


def token_model(values: np.ndarray, problem: Problem) -> tuple[Model, Knapsack, np.ndarray]:
    """The token knapsack over the free items of :func:`~selectkit.solvers.knapsack.prepare`.

    Items with value <= 0 only enter the model in groups with a minimum still to meet. Returns
    the model, the prepared problem and which of its free items are model variables.
    """
    ks = prepare(values, problem, values > 0)
    keep = (ks.values > 0) | (ks.need[ks.buckets] > 0)
    return (
        Model(
            variables=ks.items[keep],
            values=ks.values[keep],
            weights=ks.costs[keep],
            buckets=ks.buckets[keep],
            total=ks.room,
            need=ks.need,
            cap=ks.cap,
            equality=False,
            fixed=ks.fixed,
            fixed_value=ks.fixed_value,
        ),
        ks,
        keep,
    )


def canonical_count(values: np.ndarray, problem: Problem, selected: np.ndarray) -> np.ndarray:
    """Same group counts as ``selected``, but each group's records are its top ones by value
    (ties by index): never worse, and independent of how the MILP broke ties."""
    n_groups = len(problem.group_min)
    free_mask = ~problem.required & ~problem.excluded
    free = np.flatnonzero(free_mask)
    chosen = np.zeros(problem.size, dtype=bool)
    chosen[selected] = True
    members, starts = split_by_group(problem.group_codes, free, n_groups)
    picks = [np.flatnonzero(problem.required)]
    for b in range(n_groups + 1):
        group = members[starts[b] : starts[b + 1]]
        count = int(chosen[group].sum())
        picks.append(group[top_mask(values[group], count)])
    return np.sort(np.concatenate(picks))


def require_solution(result: milp.MilpResult, time_limit: float | None) -> np.ndarray:
    """The solution of ``result``, or a :class:`BudgetError` saying why there is none."""
    if result.x is not None:
        return result.x
    if result.status == "infeasible":
        raise BudgetError(
            "no selection satisfies the budget and every group quota together "
            "(record sizes do not add up to the bounds)"
        )
    raise BudgetError(
        f"HiGHS found no selection (status {result.status}, time_limit={time_limit}s); "
        "raise time_limit or use the exact solver"
    )
