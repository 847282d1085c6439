"""Log-weights: seeded Gumbel-top-k sampling, and the deterministic top-k when not sampling."""

from __future__ import annotations

import numpy as np
import pytest

from selectkit.solvers.budget import Budget, Quota
from selectkit.solvers.builtin import ExactSolver
from selectkit.solvers.objectives import LogWeights, Scores
from selectkit.solvers.sampling import gumbel_keys

SOLVER = ExactSolver()


def _pool(kit, n, budget, codes=None, n_groups=0, quotas=None, costs=None, **marks):
    costs = np.ones(n, dtype=int) if costs is None else costs
    codes = np.full(n, -1) if codes is None else codes
    return kit.make_problem(costs, codes, n_groups, budget, quotas, **marks)


def test_same_seed_same_sample_different_seeds_differ(kit):
    rng = np.random.default_rng(0)
    values = rng.normal(size=1000)
    problem = _pool(kit, 1000, Budget.count(100))
    first = SOLVER.solve(LogWeights(values), problem, seed=5)
    again = SOLVER.solve(LogWeights(values), problem, seed=5)
    assert first.indices.tolist() == again.indices.tolist()
    assert first.status == "sampled" and first.bound is None
    samples = {tuple(SOLVER.solve(LogWeights(values), problem, seed=s).indices) for s in range(6)}
    assert len(samples) == 6


def test_noise_depends_only_on_seed_and_size():
    a = gumbel_keys(np.zeros(50), 3)
    b = gumbel_keys(np.arange(50.0), 3) - np.arange(50.0)
    assert np.allclose(a, b, rtol=0, atol=1e-12)
    assert not np.array_equal(a, gumbel_keys(np.zeros(50), 4))


def test_single_draw_frequencies_match_softmax(kit):
    probs = np.array([0.05, 0.15, 0.3, 0.5])
    problem = _pool(kit, 4, Budget.count(1))
    trials = 4000
    counts = np.zeros(4)
    for seed in range(trials):
        pick = SOLVER.solve(LogWeights(np.log(probs)), problem, seed=seed).indices
        counts[pick[0]] += 1
    expected = probs * trials
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 3 degrees of freedom: P(chi2 > 25) is about 1.6e-5; the seeds are fixed, so no flakes.
    assert chi2 < 25, (counts, expected)


def test_second_draw_follows_the_remaining_weights(kit):
    # P(record 0 in a sample of 2) for weights (1, 1, 2): 1/4*(1 + 1/3... ) computed exactly.
    w = np.array([1.0, 1.0, 2.0])
    p = w / w.sum()
    inclusion0 = p[0] + p[1] * w[0] / (w[0] + w[2]) + p[2] * w[0] / (w[0] + w[1])
    problem = _pool(kit, 3, Budget.count(2))
    trials = 3000
    hits = sum(
        0 in SOLVER.solve(LogWeights(np.log(w)), problem, seed=s).indices for s in range(trials)
    )
    sd = np.sqrt(inclusion0 * (1 - inclusion0) / trials)
    assert abs(hits / trials - inclusion0) < 5 * sd


def test_zero_weight_records_never_chosen_when_avoidable(kit):
    values = np.array([-np.inf, 0.0, -np.inf, 1.0, -np.inf, 2.0, -np.inf])
    problem = _pool(kit, 7, Budget.count(3))
    for seed in range(50):
        assert sorted(SOLVER.solve(LogWeights(values), problem, seed=seed).indices) == [1, 3, 5]
    # Five records must be chosen: the three finite ones first, then -inf ones by index.
    five = SOLVER.solve(LogWeights(values), _pool(kit, 7, Budget.count(5)), seed=0)
    assert sorted(five.indices[:3].tolist()) == [1, 3, 5]
    assert five.indices[3:].tolist() == [0, 2]
    # Token budget with room to spare: zero-weight records stay out.
    tokens = _pool(kit, 7, Budget.tokens(100), costs=np.full(7, 10))
    sol = SOLVER.solve(LogWeights(values), tokens, seed=1)
    assert sorted(sol.indices.tolist()) == [1, 3, 5]


def test_sample_false_is_top_k_of_values(kit):
    rng = np.random.default_rng(2)
    values = np.round(rng.normal(size=300), 1)
    problem = _pool(kit, 300, Budget.count(40))
    deterministic = SOLVER.solve(LogWeights(values, sample=False), problem, seed=1)
    scores = SOLVER.solve(Scores(values), problem, seed=0)
    assert deterministic.indices.tolist() == scores.indices.tolist()
    assert deterministic.status == "optimal"


def test_sampling_order_is_key_order(kit):
    values = np.zeros(20)
    problem = _pool(kit, 20, Budget.count(20))
    sol = SOLVER.solve(LogWeights(values), problem, seed=8)
    keys = gumbel_keys(values, 8)
    assert sol.indices.tolist() == np.argsort(-keys, kind="stable").tolist()


@pytest.mark.parametrize("unit", ["items", "tokens"])
def test_sampling_respects_every_constraint(kit, unit):
    rng = np.random.default_rng(40 if unit == "items" else 41)
    done = 0
    while done < 150:
        case = kit.random_case(rng, unit)
        if case is None:
            continue
        if unit == "tokens" and kit.brute_force(case.values, case.problem) is None:
            continue
        log_w = np.where(rng.random(case.problem.size) < 0.2, -np.inf, case.values)
        sol = SOLVER.solve(LogWeights(log_w), case.problem, seed=done)
        kit.check_feasible(sol, case.problem)
        done += 1


def test_token_sampling_fills_the_budget_in_key_order(kit):
    rng = np.random.default_rng(6)
    n = 400
    costs = rng.integers(1, 100, n)
    codes = rng.integers(0, 3, n)
    quotas = {"g0": Quota(2000, 3000), "g1": Quota(0, 500)}
    problem = _pool(kit, n, Budget.tokens(8000), codes, 3, quotas, costs)
    values = rng.normal(size=n)
    sol = SOLVER.solve(LogWeights(values), problem, seed=3)
    kit.check_feasible(sol, problem)
    assert not sol.details["quota_fallback"]
    # Whatever was skipped did not fit: the unused budget is smaller than every skipped record
    # that its group's maximum would still have allowed.
    left = problem.limit - sol.used
    chosen = np.zeros(n, dtype=bool)
    chosen[sol.indices] = True
    group_used = np.bincount(codes[chosen], costs[chosen], 3)
    room = np.minimum(problem.group_max - group_used, left)
    skipped = ~chosen
    assert (costs[skipped] > room[codes[skipped]]).all()


def test_walk_that_misses_a_minimum_falls_back_and_meets_it(kit):
    # Key order: record 0 (cost 6) passes g0's maximum of 5, record 1 (cost 4) is taken, and
    # record 2 (cost 5) no longer fits: the walk ends at 4 < 5 tokens.
    values = np.array([12.0, 5.0, 4.0, 1.0])
    costs = np.array([6, 4, 5, 1])
    codes = np.array([0, 0, 0, -1])
    problem = _pool(kit, 4, Budget.tokens(20), codes, 1, {"g0": Quota(5, 5)}, costs)
    sol = SOLVER.solve(LogWeights(values, sample=False), problem, seed=0)
    kit.check_feasible(sol, problem)
    assert sol.details["quota_fallback"] is True
    assert sorted(sol.indices.tolist()) == [2, 3]
