"""Shared helpers for the solver tests: random small problems, brute force, constraint checks."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from selectkit.errors import BudgetError
from selectkit.host import Host
from selectkit.solvers.base import Solution
from selectkit.solvers.budget import Budget, Constraints, Problem, Quota, resolve


@dataclass
class Case:
    values: np.ndarray
    problem: Problem


def make_problem(
    costs: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    budget: Budget,
    quotas: dict[str, Quota] | None = None,
    required: list[int] = (),
    excluded: list[int] = (),
) -> Problem:
    """Resolve a budget against a synthetic pool whose ids are ``r0``, ``r1``, ..."""
    n = len(costs)
    return resolve(
        budget,
        Constraints.build(quotas or {}, [f"r{i}" for i in required], [f"r{i}" for i in excluded]),
        costs=np.asarray(costs),
        group_codes=np.asarray(codes),
        group_names=[f"g{g}" for g in range(n_groups)],
        id_positions={f"r{i}": i for i in range(n)},
    )


def random_case(rng: np.random.Generator, unit: str, max_n: int = 12) -> Case | None:
    """A small random problem with groups, quotas, required/excluded records, ties and negative
    values; ``None`` when the drawn request is rejected by ``resolve``."""
    n = int(rng.integers(1, max_n + 1))
    n_groups = int(rng.integers(0, 4))
    codes = rng.integers(-1, n_groups, n) if n_groups else np.full(n, -1)
    values = rng.integers(-4, 12, n) / 2.0  # halves: ties and negatives
    costs = rng.integers(0, 9, n) if unit == "tokens" else rng.integers(1, 9, n)
    marks = rng.random(n)
    required = [i for i in range(n) if marks[i] < 0.12]
    excluded = [i for i in range(n) if 0.12 <= marks[i] < 0.24]
    weights = costs if unit == "tokens" else np.ones(n, dtype=np.int64)
    limit = int(rng.integers(1, max(2, int(weights.sum() * 0.8)) + 1))
    if unit == "items":
        limit = int(rng.integers(1, n + 1))
    quotas = {}
    for g in range(n_groups):
        if rng.random() < 0.7:
            total = int(weights[codes == g].sum())
            lo = int(rng.integers(0, total + 1)) if rng.random() < 0.6 else 0
            hi = int(rng.integers(lo, total + 2)) if rng.random() < 0.6 else None
            quotas[f"g{g}"] = Quota(lo, hi)
    budget = Budget.tokens(limit) if unit == "tokens" else Budget.count(limit)
    try:
        problem = make_problem(costs, codes, n_groups, budget, quotas, required, excluded)
    except BudgetError:
        return None
    return Case(values, problem)


def brute_force(values: np.ndarray, problem: Problem) -> float | None:
    """Best objective over all feasible subsets (None if there is none); n <= ~14."""
    n = problem.size
    masks = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    ok = ~(masks & problem.excluded).any(axis=1) & (masks | ~problem.required).all(axis=1)
    weights = problem.weights
    used = masks.astype(np.int64) @ weights
    ok &= (used == problem.limit) if problem.unit == "items" else (used <= problem.limit)
    for g in range(len(problem.group_min)):
        in_g = problem.group_codes == g
        total = masks[:, in_g].astype(np.int64) @ weights[in_g]
        ok &= (total >= problem.group_min[g]) & (total <= problem.group_max[g])
    if not ok.any():
        return None
    return float((masks[ok].astype(np.float64) @ values).max())


def check_feasible(solution: Solution, problem: Problem) -> None:
    """Every hard rule of a selection, with messages that say which one broke."""
    idx = np.asarray(solution.indices)
    assert len(np.unique(idx)) == len(idx), "a record was selected twice"
    chosen = np.zeros(problem.size, dtype=bool)
    chosen[idx] = True
    assert not (chosen & problem.excluded).any(), "an excluded record was selected"
    assert (chosen | ~problem.required).all(), "a required record was left out"
    weights = problem.weights
    used = int(weights[chosen].sum())
    assert used == solution.used, f"reported used {solution.used}, actual {used}"
    if problem.unit == "items":
        assert used == problem.limit, f"selected {used} records, budget is {problem.limit}"
    else:
        assert used <= problem.limit, f"used {used} tokens, budget is {problem.limit}"
    for g in range(len(problem.group_min)):
        total = int(weights[chosen & (problem.group_codes == g)].sum())
        assert problem.group_min[g] <= total <= problem.group_max[g], (
            f"group g{g} got {total}, quota [{problem.group_min[g]}, {problem.group_max[g]}]"
        )


def check_best_first(solution: Solution, values: np.ndarray) -> None:
    idx = np.asarray(solution.indices)
    v = values[idx]
    assert (np.diff(v) <= 0).all(), "indices are not best first"
    same = np.diff(v) == 0
    assert (np.diff(idx)[same] > 0).all(), "ties are not in index order"


@pytest.fixture
def kit() -> SimpleNamespace:
    return SimpleNamespace(
        make_problem=make_problem,
        random_case=random_case,
        brute_force=brute_force,
        check_feasible=check_feasible,
        check_best_first=check_best_first,
    )


@pytest.fixture
def host() -> Host:
    """Only the built-in plugins, so installed third-party solvers cannot interfere."""
    return Host(entry_points=False)
