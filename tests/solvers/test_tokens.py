"""Token budgets: LP bound, greedy, reduced-cost core + MILP, against brute force and HiGHS."""

from __future__ import annotations

import numpy as np
import pytest

from selectkit.errors import BudgetError
from selectkit.solvers.budget import Budget, Quota
from selectkit.solvers.builtin import ExactParams, ExactSolver
from selectkit.solvers.dispatch import solve
from selectkit.solvers.knapsack import (
    fill_in_order,
    prepare,
    ratio_order,
    relax,
    solve_tokens,
    walk_many,
    walk_to,
)
from selectkit.solvers.milp_models import token_model
from selectkit.solvers.objectives import Scores, Weights

EXACT = ExactSolver(ExactParams(gap_tolerance=0.0))


def _cases(seed: int, count: int, kit):
    rng = np.random.default_rng(seed)
    made = 0
    while made < count:
        case = kit.random_case(rng, "tokens")
        if case is not None:
            made += 1
            yield case


@pytest.mark.parametrize("seed", range(3))
def test_exact_after_milp_matches_brute_force(kit, seed):
    infeasible = 0
    for case in _cases(2000 + seed, 120, kit):
        best = kit.brute_force(case.values, case.problem)
        if best is None:
            # Record sizes that cannot meet the token bounds: a clear error, not a bad answer.
            with pytest.raises(BudgetError):
                EXACT.solve(Scores(case.values), case.problem, seed=0)
            infeasible += 1
            continue
        sol = EXACT.solve(Scores(case.values), case.problem, seed=0)
        kit.check_feasible(sol, case.problem)
        kit.check_best_first(sol, case.values)
        assert sol.objective == pytest.approx(best, abs=1e-7)
        assert sol.status == "optimal"
        assert sol.bound >= best - 1e-7
    assert infeasible < 120  # the generator must mostly produce solvable cases


@pytest.mark.parametrize("seed", range(2))
def test_lp_bound_is_an_upper_bound_and_gap_is_reported(kit, host, seed):
    for case in _cases(3000 + seed, 120, kit):
        best = kit.brute_force(case.values, case.problem)
        if best is None:
            continue
        ks = prepare(case.values, case.problem, case.values > 0)
        lp = relax(ks, ratio_order(ks))
        assert lp.bound >= best - 1e-9
        # The dual solution certifies the primal LP: equal values mean both are optimal.
        assert lp.dual_bound == pytest.approx(lp.bound, rel=1e-9, abs=1e-9)
        sol = solve(Scores(case.values), case.problem, seed=0, host=host)  # default tolerance
        kit.check_feasible(sol, case.problem)
        assert sol.bound >= best - 1e-9
        assert sol.bound <= lp.bound + 1e-9
        expected_gap = max(0.0, sol.bound - sol.objective) / max(abs(sol.bound), 1e-12)
        assert sol.gap == pytest.approx(expected_gap, abs=1e-12)
        assert sol.gap <= 1e-4 + 1e-9 or sol.bound - sol.objective <= 1e-6


def test_lp_bound_equals_highs_lp_relaxation(kit):
    rng = np.random.default_rng(5)
    for trial in range(6):
        n, n_groups = 300, 4
        codes = rng.integers(-1, n_groups, n)
        costs = rng.integers(1, 60, n)
        values = rng.normal(0.5, 1.0, n)
        weights = costs
        quotas = {}
        for g in range(n_groups):
            total = int(weights[codes == g].sum())
            quotas[f"g{g}"] = Quota(int(total * 0.15), int(total * 0.4) if trial % 2 else None)
        problem = kit.make_problem(
            costs, codes, n_groups, Budget.tokens(int(costs.sum() * 0.3)), quotas, [0], [1]
        )
        ks = prepare(values, problem, values > 0)
        lp = relax(ks, ratio_order(ks))
        model, _, _ = token_model(values, problem)
        highs = model.run(relax=True)
        assert highs.status == "optimal"
        assert lp.bound == pytest.approx(model.fixed_value + highs.bound, rel=1e-7)
        assert lp.dual_bound == pytest.approx(lp.bound, rel=1e-9)
        # At most one fractional item per group plus the global break item.
        fractional = ((lp.x > 1e-12) & (lp.x < 1 - 1e-12)).sum()
        assert fractional <= n_groups + 2


def _reference_walk(costs, buckets, room, bucket_room):
    bucket_room = list(bucket_room)
    taken = []
    for i, (c, b) in enumerate(zip(costs.tolist(), buckets.tolist(), strict=True)):
        if c <= room and c <= bucket_room[b]:
            taken.append(i)
            room -= c
            bucket_room[b] -= c
    return taken


def test_vectorized_walks_match_a_plain_loop():
    rng = np.random.default_rng(9)
    for _ in range(300):
        n = int(rng.integers(0, 80))
        costs = rng.integers(1, 30, n)
        buckets = rng.integers(0, 3, n)
        room = int(rng.integers(0, 600))
        bucket_room = rng.integers(0, 300, 3)
        got = walk_many(costs, buckets, room, bucket_room).tolist()
        assert got == _reference_walk(costs, buckets, room, bucket_room)
        target = int(rng.integers(0, 400))
        pos, total = walk_to(costs, room, target)
        expected, acc = [], 0
        for i, c in enumerate(costs.tolist()):
            if acc >= target:
                break
            if acc + c <= room:
                expected.append(i)
                acc += c
        assert pos.tolist() == expected and total == acc


def test_invariants_on_a_medium_pool(kit, host):
    rng = np.random.default_rng(21)
    n, n_groups = 5000, 6
    codes = rng.integers(-1, n_groups, n)
    costs = rng.integers(0, 400, n)  # some zero-cost records
    values = np.round(rng.normal(0.2, 1.0, n), 2)  # ties and negatives
    quotas = {
        "g0": Quota(20000, 40000),
        "g1": Quota(0, 5000),
        "g2": Quota(30000),
        "g5": Quota(1000, 1200),
    }
    required = rng.choice(n, 20, replace=False).tolist()
    excluded = [i for i in rng.choice(n, 40, replace=False).tolist() if i not in required]
    problem = kit.make_problem(
        costs, codes, n_groups, Budget.tokens(200000), quotas, required, excluded
    )
    sol = solve(Scores(values), problem, seed=0, host=host)
    kit.check_feasible(sol, problem)
    kit.check_best_first(sol, values)
    chosen = np.zeros(n, dtype=bool)
    chosen[sol.indices] = True
    free = ~problem.required & ~problem.excluded
    assert chosen[free & (costs == 0) & (values > 0)].all(), "free positive records left out"
    assert not chosen[free & (costs == 0) & (values <= 0)].any()
    # Outside groups with a minimum, nothing worthless is taken.
    no_min = ~np.isin(codes, [0, 2, 5])
    assert not chosen[free & no_min & (values <= 0)].any()
    assert sol.gap <= 1e-4
    again = solve(Scores(values), problem, seed=123, host=host)
    assert again.indices.tolist() == sol.indices.tolist()


def test_unfilled_budget_is_visible_in_used(kit, host):
    values = np.array([3.0, -1.0, 0.0, 2.0])
    costs = np.array([10, 10, 10, 10])
    problem = kit.make_problem(costs, np.full(4, -1), 0, Budget.tokens(100))
    sol = solve(Scores(values), problem, seed=0, host=host)
    assert sol.indices.tolist() == [0, 3]
    assert sol.used == 20 and sol.status == "optimal"


def test_negative_records_only_to_meet_a_minimum(kit, host):
    values = np.array([-1.0, -3.0, -2.0, 5.0])
    costs = np.array([5, 5, 5, 5])
    codes = np.array([0, 0, 0, -1])
    problem = kit.make_problem(costs, codes, 1, Budget.tokens(50), {"g0": Quota(10)})
    sol = solve(Scores(values), problem, seed=0, host=host)
    assert sorted(sol.indices.tolist()) == [0, 2, 3]
    assert sol.objective == pytest.approx(2.0)


def test_ties_are_deterministic_and_go_to_lower_index(kit, host):
    values = np.ones(10)
    costs = np.full(10, 3)
    problem = kit.make_problem(costs, np.full(10, -1), 0, Budget.tokens(13))
    sol = solve(Weights(values), problem, seed=0, host=host)
    assert sol.indices.tolist() == [0, 1, 2, 3]


def test_greedy_that_misses_a_minimum_falls_back_to_milp(kit):
    # The best-ratio record of g0 (cost 6) overshoots the maximum of 5, and the greedy's
    # minimum walk then picks the cost-4 record: 4 + 4 would pass the maximum, so it misses
    # the minimum of 5 that only the cost-5 record meets.
    values = np.array([12.0, 4.0, 5.0, 1.0])
    costs = np.array([6, 4, 5, 1])
    codes = np.array([0, 0, 0, -1])
    problem = kit.make_problem(costs, codes, 1, Budget.tokens(20), {"g0": Quota(5, 5)})
    sol = EXACT.solve(Scores(values), problem, seed=0)
    kit.check_feasible(sol, problem)
    assert sorted(sol.indices.tolist()) == [2, 3]
    assert sol.details["path"] == "milp" and sol.details["milp_variables"] > 0


def test_milp_core_is_small_on_a_large_pool(kit):
    rng = np.random.default_rng(4)
    n, n_groups = 60000, 8
    codes = rng.integers(0, n_groups, n)
    costs = rng.integers(20, 2000, n)
    values = rng.random(n)
    quotas = {f"g{g}": Quota(200000, 800000) for g in range(n_groups)}
    problem = kit.make_problem(costs, codes, n_groups, Budget.tokens(4000000), quotas)
    out = solve_tokens(values, problem, gap_tolerance=0.0)
    assert out.details["path"] == "milp"
    assert 0 < out.details["milp_variables"] < n // 10
    assert out.objective <= out.bound + 1e-9
    assert (out.bound - out.objective) / out.bound < 1e-6


def test_milp_and_lp_solvers_on_small_cases(kit, host):
    for case in _cases(4000, 60, kit):
        best = kit.brute_force(case.values, case.problem)
        if best is None:
            continue
        milp = solve(Scores(case.values), case.problem, seed=0, solver="milp", host=host)
        kit.check_feasible(milp, case.problem)
        assert milp.objective == pytest.approx(best, abs=1e-5)
        lp = solve(Scores(case.values), case.problem, seed=0, solver="lp", host=host)
        kit.check_feasible(lp, case.problem)
        assert lp.objective <= best + 1e-9
        assert lp.bound >= best - 1e-6


def test_fill_in_order_respects_caps_and_budget(kit):
    rng = np.random.default_rng(8)
    for _ in range(50):
        n = 200
        codes = rng.integers(-1, 3, n)
        costs = rng.integers(1, 50, n)
        values = rng.normal(size=n)
        quotas = {"g0": Quota(100, 300), "g1": Quota(0, 120)}
        problem = kit.make_problem(costs, codes, 3, Budget.tokens(2000), quotas)
        ks = prepare(values, problem, values > 0)
        taken, met = fill_in_order(ks, ratio_order(ks), ks.values > 0)
        assert int(ks.costs[taken].sum()) <= ks.room
        used = ks.bucket_totals(taken)
        assert (used <= ks.cap).all()
        assert met == bool((used >= ks.need).all())


def test_drop_worthless_keeps_only_what_a_minimum_needs(kit):
    from selectkit.solvers.knapsack import drop_worthless

    values = np.array([4.0, 0.0, -1.0, 0.0, 2.0])
    costs = np.array([6, 3, 3, 5, 1])
    codes = np.array([0, 0, 0, 1, -1])
    problem = kit.make_problem(costs, codes, 2, Budget.tokens(30), {"g0": Quota(9)})
    ks = prepare(values, problem, values > 0)
    taken = np.ones(len(ks.items), dtype=bool)  # g0 has 12 tokens, needs 9
    kept = drop_worthless(ks, taken, ks.values <= 0)
    # -1 goes first (worst); then the 0-valued g0 record is needed for the minimum; the
    # 0-valued g1 record (no minimum) goes.
    assert ks.items[kept].tolist() == [0, 1, 4]
