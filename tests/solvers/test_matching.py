"""Gradient matching: the non-negative least squares, OMP's recovery, constraints and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from selectkit.errors import ParamError
from selectkit.rows import ArrayRows, ScaledColumns
from selectkit.solvers.budget import Budget, Quota
from selectkit.solvers.dispatch import solve
from selectkit.solvers.nnls import nnls_gram
from selectkit.solvers.objectives import Matching


def plain(n: int, k: int, kit, **kwargs):
    return kit.make_problem(np.ones(n, dtype=int), np.full(n, -1), 0, Budget.count(k), **kwargs)


def test_nnls_matches_enumerating_every_support():
    rng = np.random.default_rng(0)
    for _ in range(40):
        p = int(rng.integers(1, 7))
        a = rng.normal(size=(p, 5))
        t = rng.normal(size=5)
        w = nnls_gram(a @ a.T, a @ t)
        assert (w >= 0).all()
        best = np.inf
        for size in range(p + 1):
            for support in itertools.combinations(range(p), size):
                sub = a[list(support)]
                x = np.linalg.lstsq(sub.T, t, rcond=None)[0] if size else np.zeros(0)
                if (x >= -1e-12).all():
                    best = min(best, float(np.sum((x @ sub - t) ** 2)) if size else t @ t)
        assert np.sum((w @ a - t) ** 2) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_nnls_handles_duplicate_rows_and_warm_starts():
    a = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t = np.array([2.0, -1.0])
    w = nnls_gram(a @ a.T, a @ t, start=np.array([0.5, 0.0, 3.0]))
    assert w[0] + w[1] == pytest.approx(2.0) and w[2] == 0


def test_omp_recovers_an_exact_nonnegative_combination_of_orthogonal_rows(kit, host):
    rng = np.random.default_rng(1)
    features = np.linalg.qr(rng.normal(size=(64, 20)))[0].T  # 20 orthonormal rows
    support, weights = [17, 2, 9], np.array([3.0, 1.0, 0.5])
    target = weights @ features[support]
    sol = solve(
        Matching(features, target, scale_to_budget=False), plain(20, 3, kit), seed=0, host=host
    )
    assert sol.solver == "omp"
    assert sol.indices.tolist() == support  # largest weight first on orthonormal rows
    np.testing.assert_allclose(sol.weights, weights, atol=1e-6)
    assert sol.objective < 1e-10 and sol.details["relative_residual"] < 1e-6


def test_omp_recovers_a_sparse_combination_of_random_rows(kit, host):
    rng = np.random.default_rng(2)
    features = rng.normal(size=(40, 64))
    support = [5, 12, 30, 33]
    weights = np.array([1.0, 2.0, 0.5, 1.5])
    mean_target = weights @ features[support] / 4  # matched as 4 x the mean: weights ~ 1
    sol = solve(Matching(features, mean_target), plain(40, 4, kit), seed=0, host=host)
    assert sorted(sol.indices.tolist()) == support
    got = dict(zip(sol.indices.tolist(), sol.weights.tolist(), strict=True))
    np.testing.assert_allclose([got[i] for i in support], weights, atol=1e-5)
    assert sol.details["target_scale"] == 4


def test_omp_without_a_target_matches_the_pool_mean(kit, host):
    rng = np.random.default_rng(3)
    features = rng.normal(loc=0.3, size=(50, 16))
    objective = Matching(features)
    np.testing.assert_allclose(objective.values, features @ features.mean(axis=0), rtol=1e-5)
    sol = solve(objective, plain(50, 10, kit), seed=0, host=host)
    assert len(sol.indices) == len(set(sol.indices.tolist())) == 10
    fitted = sol.weights @ features[sol.indices]
    target = 10 * features.mean(axis=0)
    assert np.sum((fitted - target) ** 2) == pytest.approx(sol.objective, rel=1e-6)
    assert np.sum((fitted - target) ** 2) < np.sum(target**2)  # better than selecting nothing


class CountingRows(ArrayRows):
    """An array that records the largest read, to check chunked streaming."""

    largest = 0

    def read(self, start: int, stop: int) -> np.ndarray:
        CountingRows.largest = max(CountingRows.largest, stop - start)
        return super().read(start, stop)


def test_streaming_in_small_chunks_gives_the_same_selection(kit, host):
    rng = np.random.default_rng(4)
    features = rng.normal(size=(300, 8)).astype(np.float32)
    target = rng.normal(size=8)
    whole = solve(Matching(features, target), plain(300, 12, kit), seed=0, host=host)
    CountingRows.largest = 0
    streamed = Matching(CountingRows(features), target, memory_limit=8 * 8 * 20)
    sol = solve(streamed, plain(300, 12, kit), seed=0, host=host)
    assert CountingRows.largest == 20
    assert sol.indices.tolist() == whole.indices.tolist()
    np.testing.assert_allclose(sol.weights, whole.weights, rtol=1e-6)
    assert sol.details["pool_passes"] == 11


@pytest.mark.parametrize("seed", range(3))
def test_required_excluded_and_quotas_are_honoured(kit, host, seed):
    rng = np.random.default_rng(100 + seed)
    checked = 0
    while checked < 40:
        case = kit.random_case(rng, "items")
        if case is None:
            continue
        features = rng.normal(size=(case.problem.size, 6))
        sol = solve(Matching(features, rng.normal(size=6)), case.problem, seed=0, host=host)
        kit.check_feasible(sol, case.problem)
        assert sol.weights.shape == sol.indices.shape and (sol.weights >= 0).all()
        required = np.flatnonzero(case.problem.required).tolist()
        assert sol.indices[: len(required)].tolist() == required
        checked += 1


def test_group_minimum_is_met_even_against_the_correlation(kit, host):
    features = np.array([[1.0, 0.0]] * 4 + [[-1.0, 0.0]] * 2)
    codes = np.array([0, 0, 0, 0, 1, 1])
    problem = kit.make_problem(np.ones(6, dtype=int), codes, 2, Budget.count(3), {"g1": Quota(1)})
    sol = solve(Matching(features, np.array([1.0, 0.0])), problem, seed=0, host=host)
    assert sum(codes[sol.indices] == 1) == 1
    assert sol.details["zero_weights"] >= 1


def test_deterministic(kit, host):
    rng = np.random.default_rng(5)
    features, target = rng.normal(size=(80, 10)), rng.normal(size=10)
    runs = [solve(Matching(features, target), plain(80, 9, kit), seed=s, host=host) for s in (0, 1)]
    assert runs[0].indices.tolist() == runs[1].indices.tolist()
    assert runs[0].weights.tobytes() == runs[1].weights.tobytes()


def test_errors_before_any_work(kit, host):
    features = np.ones((5, 3))
    with pytest.raises(ParamError, match="target has shape"):
        Matching(features, np.ones(4))
    with pytest.raises(ParamError, match="2-D float array or a row source"):
        Matching([[1.0, 2.0]])
    tokens = kit.make_problem(np.ones(5, dtype=int), np.full(5, -1), 0, Budget.tokens(3))
    with pytest.raises(ParamError, match="supports count budgets"):
        solve(Matching(features), tokens, seed=0, host=host)
    with pytest.raises(ParamError, match="objective has 5 records but the pool has 6"):
        solve(Matching(features), plain(6, 2, kit), seed=0, host=host)
    bad = features.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ParamError, match="record 3 is not finite"):
        solve(Matching(bad, np.ones(3)), plain(5, 2, kit), seed=0, host=host)


def test_scaled_columns_weight_inner_products_by_learning_rate():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    rows = ScaledColumns([ArrayRows(a), ArrayRows(b)], [2.0**0.5, 0.5])
    x = rows.read(0, 4)
    np.testing.assert_allclose(x @ x.T, 2 * a @ a.T + 0.25 * b @ b.T, rtol=1e-5)
