"""Facility location by lazy greedy: brute force, guarantee, bound, weights, constraints."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from selectkit.errors import ParamError
from selectkit.solvers.budget import Budget, Quota
from selectkit.solvers.dispatch import solve
from selectkit.solvers.objectives import FacilityLocation


def plain(n: int, k: int, kit, **kwargs):
    return kit.make_problem(np.ones(n, dtype=int), np.full(n, -1), 0, Budget.count(k), **kwargs)


def sims(x: np.ndarray, metric: str) -> np.ndarray:
    """The objective's similarity, computed directly in float64."""
    if metric == "cosine":
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        return (1 + unit @ unit.T) / 2
    top = 2 * np.linalg.norm(x - x.mean(axis=0), axis=1).max()
    return top - np.linalg.norm(x[:, None] - x[None], axis=2)


def value(s: np.ndarray, subset) -> float:
    return float(s[:, list(subset)].max(axis=1).sum()) if len(subset) else 0.0


def check_greedy_steps(s: np.ndarray, order: list[int]) -> None:
    """Each pick has the largest marginal gain (in float64), up to float32 noise: exact ties
    between records happen, and either pick is then plain greedy's."""
    for step, pick in enumerate(order):
        before = value(s, order[:step])
        gains = [value(s, [*order[:step], j]) - before for j in range(len(s))]
        assert gains[pick] >= max(gains) - 1e-4 * s.max(), f"step {step} is not greedy"


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_greedy_against_brute_force_on_tiny_pools(kit, host, metric):
    rng = np.random.default_rng(0)
    for _ in range(25):
        n = int(rng.integers(2, 11))
        k = int(rng.integers(1, n + 1))
        x = rng.normal(size=(n, 4))
        objective = FacilityLocation(x, metric=metric)
        s = sims(x, metric)
        # float32 distances: near-duplicates are off by about sqrt(eps) times the spread.
        np.testing.assert_allclose(objective.values, s.sum(axis=0), rtol=1e-4)
        sol = solve(objective, plain(n, k, kit), seed=0, host=host)
        assert sol.solver == "greedy"
        assert sol.objective == pytest.approx(value(s, sol.indices), rel=1e-4)
        check_greedy_steps(s, sol.indices.tolist())
        best = max(value(s, c) for c in itertools.combinations(range(n), k))
        assert sol.objective >= (1 - 1 / math.e) * best - 1e-6
        assert sol.bound >= best * (1 - 1e-4), "the reported upper bound is below the optimum"
        assert sol.weights.sum() == n
        nearest = np.argmax(s[:, sol.indices], axis=1)
        np.testing.assert_array_equal(sol.weights, np.bincount(nearest, minlength=k))


def test_separated_clusters_are_covered_one_each_with_their_sizes(kit, host):
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    sizes = [5, 3, 2]
    offsets = np.random.default_rng(1).normal(scale=0.1, size=(10, 2))
    x = np.repeat(centers, sizes, axis=0) + offsets
    sol = solve(FacilityLocation(x), plain(10, 3, kit), seed=0, host=host)
    groups = np.repeat([0, 1, 2], sizes)[sol.indices]
    assert sorted(groups.tolist()) == [0, 1, 2]
    assert dict(zip(groups.tolist(), sol.weights.tolist(), strict=True)) == {0: 5, 1: 3, 2: 2}
    assert sol.details["approximation_ratio"] == pytest.approx(1 - 1 / math.e)
    assert 0 < sol.gap < 1 and sol.details["certified_ratio"] == pytest.approx(
        sol.objective / sol.bound
    )


@pytest.mark.parametrize("seed", range(3))
def test_required_excluded_and_quotas_are_honoured(kit, host, seed):
    rng = np.random.default_rng(200 + seed)
    checked = 0
    while checked < 30:
        case = kit.random_case(rng, "items", max_n=9)
        if case is None:
            continue
        problem = case.problem
        x = rng.normal(size=(problem.size, 3))
        sol = solve(FacilityLocation(x), problem, seed=0, host=host)
        kit.check_feasible(sol, problem)
        assert sol.weights.sum() == problem.size
        best = kit_best(sims(x, "euclidean"), problem, kit)
        assert sol.bound >= best * (1 - 1e-4)
        if not (problem.group_min > 0).any():
            base = value(sims(x, "euclidean"), np.flatnonzero(problem.required))
            ratio = sol.details["approximation_ratio"]
            assert sol.objective - base >= ratio * (best - base) - 1e-5
        checked += 1


def kit_best(s: np.ndarray, problem, kit) -> float:
    """Best facility-location value over every feasible selection."""
    n = problem.size
    best = -np.inf
    for subset in itertools.combinations(range(n), problem.limit):
        mask = np.zeros(n, dtype=bool)
        mask[list(subset)] = True
        if (mask & problem.excluded).any() or (problem.required & ~mask).any():
            continue
        counts = [
            int((mask & (problem.group_codes == g)).sum()) for g in range(len(problem.group_min))
        ]
        if all(problem.group_min[g] <= c <= problem.group_max[g] for g, c in enumerate(counts)):
            best = max(best, value(s, subset))
    return best


def test_group_maximum_and_minimum(kit, host):
    x = np.array([[0.0], [0.1], [0.2], [5.0], [9.0], [9.1]])
    codes = np.array([0, 0, 0, 1, 2, 2])
    quotas = {"g2": Quota(0, 0), "g0": Quota(2)}
    problem = kit.make_problem(np.ones(6, dtype=int), codes, 3, Budget.count(3), quotas)
    sol = solve(FacilityLocation(x), problem, seed=0, host=host)
    picked = codes[sol.indices].tolist()
    assert picked.count(2) == 0 and picked.count(0) >= 2
    assert sol.details["approximation_ratio"] is None


def test_small_memory_blocks_give_the_same_answer(kit, host):
    x = np.random.default_rng(3).normal(size=(200, 5))
    big = solve(FacilityLocation(x), plain(200, 15, kit), seed=0, host=host)
    small = solve(FacilityLocation(x, memory_limit=8 * 37), plain(200, 15, kit), seed=0, host=host)
    assert big.indices.tolist() == small.indices.tolist()
    np.testing.assert_array_equal(big.weights, small.weights)
    assert big.objective == pytest.approx(small.objective, rel=1e-6)


def test_deterministic(kit, host):
    x = np.random.default_rng(4).normal(size=(120, 6))
    a = solve(FacilityLocation(x), plain(120, 10, kit), seed=0, host=host)
    b = solve(FacilityLocation(x), plain(120, 10, kit), seed=7, host=host)
    assert a.indices.tolist() == b.indices.tolist() and a.objective == b.objective


def test_errors_before_any_work(kit, host):
    x = np.ones((4, 2))
    with pytest.raises(ParamError, match="metric must be euclidean or cosine"):
        FacilityLocation(x, metric="manhattan")
    tokens = kit.make_problem(np.ones(4, dtype=int), np.full(4, -1), 0, Budget.tokens(2))
    with pytest.raises(ParamError, match="supports count budgets"):
        solve(FacilityLocation(x), tokens, seed=0, host=host)
    with pytest.raises(ParamError, match="objective has 4 records but the pool has 5"):
        solve(FacilityLocation(x), plain(5, 2, kit), seed=0, host=host)
