"""Count budgets: exact top-k and the per-group quota greedy, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from selectkit.errors import BudgetError
from selectkit.solvers.budget import Budget, Quota
from selectkit.solvers.dispatch import solve
from selectkit.solvers.objectives import Scores, Weights
from selectkit.solvers.topk import best_first, select_count, top_mask


@pytest.mark.parametrize("seed", range(4))
def test_quota_greedy_matches_brute_force(kit, host, seed):
    rng = np.random.default_rng(1000 + seed)
    checked = 0
    while checked < 120:
        case = kit.random_case(rng, "items")
        if case is None:
            continue
        best = kit.brute_force(case.values, case.problem)
        # resolve() must reject every infeasible count request up front.
        assert best is not None, "resolve accepted a count budget no subset satisfies"
        sol = solve(Scores(case.values), case.problem, seed=0, host=host)
        kit.check_feasible(sol, case.problem)
        kit.check_best_first(sol, case.values)
        assert sol.objective == pytest.approx(best, abs=1e-9)
        assert sol.status == "optimal" and sol.bound == sol.objective and sol.gap == 0
        checked += 1


def test_resolve_rejects_required_plus_minimums_over_budget(kit):
    # Group 0 has 3 required records; group 1 needs 3: 6 records in a budget of 5. Each side
    # alone fits, so only the combined check catches it.
    codes = np.array([0, 0, 0, 1, 1, 1, 1])
    with pytest.raises(BudgetError, match="together need 6"):
        kit.make_problem(
            np.ones(7, dtype=int), codes, 2, Budget.count(5), {"g1": Quota(3)}, required=[0, 1, 2]
        )


def test_top_mask_is_exact_with_ties():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        values = rng.integers(0, 5, n).astype(float)
        k = int(rng.integers(0, n + 1))
        reference = np.lexsort((np.arange(n), -values))[:k]
        assert set(np.flatnonzero(top_mask(values, k))) == set(reference.tolist())


def test_plain_top_k_ties_go_to_lower_index(kit, host):
    values = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.0])
    problem = kit.make_problem(np.ones(7, dtype=int), np.full(7, -1), 0, Budget.count(4))
    sol = solve(Scores(values), problem, seed=0, host=host)
    assert sol.indices.tolist() == [1, 3, 2, 4]
    assert sol.details["path"] == "top-k"


def test_quota_path_matches_milp_on_a_larger_pool(kit, host):
    rng = np.random.default_rng(11)
    n, n_groups = 400, 5
    codes = rng.integers(-1, n_groups, n)
    values = np.round(rng.normal(size=n), 1)  # many ties
    quotas = {"g0": Quota(30, 40), "g1": Quota(0, 5), "g2": Quota(25), "g4": Quota(10, 10)}
    problem = kit.make_problem(
        np.ones(n, dtype=int),
        codes,
        n_groups,
        Budget.count(120),
        quotas,
        required=[0, 1, 2, 3],
        excluded=[4, 5, 6],
    )
    exact = solve(Scores(values), problem, seed=0, host=host)
    milp = solve(Scores(values), problem, seed=0, solver="milp", host=host)
    kit.check_feasible(exact, problem)
    kit.check_feasible(milp, problem)
    assert exact.objective == pytest.approx(milp.objective, abs=1e-9)
    assert exact.details["path"] == "quota-greedy"


def test_count_selection_is_deterministic_and_order_independent_of_noise(kit, host):
    rng = np.random.default_rng(3)
    n = 2000
    codes = rng.integers(0, 3, n)
    values = rng.integers(0, 4, n).astype(float)  # heavy ties
    problem = kit.make_problem(
        np.ones(n, dtype=int), codes, 3, Budget.count(300), {"g0": Quota(50, 80)}
    )
    first = solve(Weights(values), problem, seed=0, host=host)
    second = solve(Weights(values), problem, seed=99, host=host)
    assert first.indices.tolist() == second.indices.tolist()
    # With ties everywhere, each group's chosen records are its lowest indices per value.
    chosen = np.zeros(n, dtype=bool)
    chosen[first.indices] = True
    for g in range(3):
        for v in np.unique(values):
            members = np.flatnonzero((codes == g) & (values == v))
            picked = chosen[members]
            # picked records form a prefix of the members in index order
            assert not (np.diff(picked.astype(int)) > 0).any()


def test_select_count_raises_when_maximums_cannot_fill(kit):
    codes = np.array([0, 0, 0, 0, 1])
    problem = kit.make_problem(
        np.ones(5, dtype=int), codes, 2, Budget.count(2), {"g0": Quota(0, 3)}
    )
    values = np.arange(5.0)
    assert sorted(select_count(values, problem).tolist()) == [3, 4]
    squeezed = problem.__class__(**{**problem.__dict__, "limit": 5})
    with pytest.raises(BudgetError):
        select_count(values, squeezed)


def test_best_first_orders_by_value_then_index():
    values = np.array([5.0, 1.0, 5.0, 3.0])
    assert best_first(values, np.array([3, 2, 1, 0])).tolist() == [0, 2, 3, 1]


def test_milp_and_lp_solvers_match_brute_force_on_count_budgets(kit, host):
    rng = np.random.default_rng(77)
    checked = 0
    while checked < 40:
        case = kit.random_case(rng, "items")
        if case is None:
            continue
        best = kit.brute_force(case.values, case.problem)
        for name in ("milp", "lp"):
            sol = solve(Scores(case.values), case.problem, seed=0, solver=name, host=host)
            kit.check_feasible(sol, case.problem)
            kit.check_best_first(sol, case.values)
            assert sol.objective == pytest.approx(best, abs=1e-6), name
            assert sol.bound >= best - 1e-6
        checked += 1
