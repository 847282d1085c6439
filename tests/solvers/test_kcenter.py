"""k-center by farthest-first traversal: a direct traversal, brute force, bounds, constraints."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from selectkit.errors import ParamError
from selectkit.solvers.budget import Budget, Quota
from selectkit.solvers.dispatch import solve
from selectkit.solvers.objectives import KCenter


def plain(n: int, k: int, kit, **kwargs):
    return kit.make_problem(np.ones(n, dtype=int), np.full(n, -1), 0, Budget.count(k), **kwargs)


def distance_matrix(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=2)


def radius(d: np.ndarray, centers) -> float:
    return float(d[:, list(centers)].min(axis=1).max())


def farthest_first(x: np.ndarray, k: int) -> list[int]:
    """The traversal written out: start nearest the mean, then the farthest record each time."""
    d = distance_matrix(x)
    order = [int(np.argmin(np.linalg.norm(x - x.mean(axis=0), axis=1)))]
    while len(order) < k:
        nearest = d[:, order].min(axis=1)
        nearest[order] = -1
        order.append(int(np.argmax(nearest)))
    return order


@pytest.mark.parametrize("seed", range(5))
def test_the_solver_is_the_traversal_written_out(seed, kit, host):
    x = np.random.default_rng(seed).normal(size=(60, 5)).astype(np.float32)
    solution = solve(KCenter(x), plain(60, 8, kit), seed=0, solver="kcenter", host=host)
    assert solution.indices.tolist() == farthest_first(x, 8)
    found = radius(distance_matrix(x), solution.indices)
    assert solution.details["radius"] == pytest.approx(found, rel=1e-5)
    assert solution.objective == pytest.approx(-solution.details["radius"])


@pytest.mark.parametrize("seed", range(8))
def test_radius_within_twice_the_optimum_and_the_bound_below_it(seed, kit, host):
    rng = np.random.default_rng(100 + seed)
    x = rng.normal(size=(10, 3)).astype(np.float32) * rng.uniform(0.1, 3, size=(1, 3))
    d = distance_matrix(x)
    k = int(rng.integers(1, 5))
    best = min(radius(d, c) for c in itertools.combinations(range(10), k))
    solution = solve(KCenter(x), plain(10, k, kit), seed=0, solver="kcenter", host=host)
    found = solution.details["radius"]
    lower = solution.details["radius_lower_bound"]
    assert best - 1e-5 <= found <= 2 * best + 1e-5
    assert lower <= best + 1e-5
    assert solution.details["guarantee"] == "radius <= 2 OPT"


def test_required_records_are_the_first_centers_and_excluded_ones_are_still_covered(kit, host):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    x[39] = 50.0  # an outlier nobody may pick: the radius must still count it
    problem = plain(40, 6, kit, required=[3, 11], excluded=[39])
    solution = solve(KCenter(x), problem, seed=0, solver="kcenter", host=host)
    kit.check_feasible(solution, problem)
    assert solution.indices[:2].tolist() == [3, 11]
    d = distance_matrix(x)
    assert solution.details["radius"] == pytest.approx(radius(d, solution.indices), rel=1e-5)
    assert solution.details["radius"] > 90
    assert solution.details["guarantee"] == "none beyond the lower bound"
    best_possible = min(d[39, j] for j in range(39))  # 39's distance to its nearest allowed record
    assert solution.details["radius_lower_bound"] <= best_possible


def test_group_quotas_hold(kit, host):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    x[:10] *= 10  # group 0 is spread out: unconstrained, it would take most centers
    codes = np.repeat([0, 1, 2], 10)
    quotas = {"g0": Quota(0, 2), "g2": Quota(3, None)}
    problem = kit.make_problem(np.ones(30, dtype=int), codes, 3, Budget.count(8), quotas=quotas)
    solution = solve(KCenter(x), problem, seed=0, solver="kcenter", host=host)
    kit.check_feasible(solution, problem)
    unconstrained = solve(KCenter(x), plain(30, 8, kit), seed=0, solver="kcenter", host=host)
    assert (codes[unconstrained.indices] == 0).sum() > 2


def test_weights_are_cluster_sizes(kit, host):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    solution = solve(
        KCenter(x, weighted=True), plain(50, 5, kit), seed=0, solver="kcenter", host=host
    )
    nearest = distance_matrix(x)[:, solution.indices].argmin(axis=1)
    np.testing.assert_array_equal(solution.weights, np.bincount(nearest, minlength=5))
    assert solve(KCenter(x), plain(50, 5, kit), seed=0, solver="kcenter", host=host).weights is None


def test_cosine_ignores_row_lengths_and_duplicates_break_ties_by_position(kit, host):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    scaled = x * rng.uniform(0.5, 20, size=(30, 1)).astype(np.float32)
    a = solve(KCenter(x, metric="cosine"), plain(30, 6, kit), seed=0, solver="kcenter", host=host)
    b = solve(
        KCenter(scaled, metric="cosine"), plain(30, 6, kit), seed=0, solver="kcenter", host=host
    )
    assert a.indices.tolist() == b.indices.tolist()
    twins = np.repeat(rng.normal(size=(5, 3)).astype(np.float32), 2, axis=0)
    picked = solve(KCenter(twins), plain(10, 5, kit), seed=0, solver="kcenter", host=host)
    assert sorted(picked.indices.tolist()) == [0, 2, 4, 6, 8]
    assert picked.details["radius"] == 0.0 and picked.status == "optimal"


def test_bad_input_is_refused(kit, host):
    x = np.ones((4, 2), dtype=np.float32)
    x[2, 1] = np.nan
    with pytest.raises(ParamError, match="record 2 is not finite"):
        solve(KCenter(x), plain(4, 2, kit), seed=0, solver="kcenter", host=host)
    with pytest.raises(ParamError, match="metric must be euclidean or cosine"):
        KCenter(np.ones((4, 2)), metric="manhattan")
    tokens = kit.make_problem(np.ones(4, dtype=int), np.full(4, -1), 0, Budget.parse("3tok"))
    with pytest.raises(ParamError, match="supports count budgets"):
        solve(KCenter(np.eye(4)), tokens, seed=0, solver="kcenter", host=host)
    with pytest.raises(ParamError, match="the objective has 4 records but the pool has 5"):
        solve(KCenter(np.eye(4)), plain(5, 2, kit), seed=0, solver="kcenter", host=host)
