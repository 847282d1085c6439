"""Solver benchmark: 1,000,000 records, 20 groups with quotas, seeded random values and costs.

Run: ``python benchmarks/bench_solver.py [--n N] [--seed S]``. Prints every figure beside its
target with PASS or MISS; it reports and always exits 0.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from selectkit.solvers.base import Solution
from selectkit.solvers.budget import Budget, Constraints, Problem, Quota, resolve
from selectkit.solvers.builtin import ExactSolver
from selectkit.solvers.objectives import LogWeights, Scores

N_GROUPS = 20


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """Result of ``fn`` and its best wall time over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return result, best


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def build(
    budget: Budget, quotas: dict[str, Quota], costs: np.ndarray, codes: np.ndarray
) -> Problem:
    required = {f"r{i}" for i in range(0, 50)}
    excluded = {f"r{i}" for i in range(50, 100)}
    return resolve(
        budget,
        Constraints(quotas, frozenset(required), frozenset(excluded)),
        costs=costs,
        group_codes=codes,
        group_names=[f"g{g}" for g in range(N_GROUPS)],
        id_positions={f"r{i}": i for i in range(100)},
    )


def quotas_for(limit: int) -> dict[str, Quota]:
    """Even groups must get at least 6% of the budget, odd groups at most 3%: with 20 groups of
    similar size (5% each if unconstrained) every bound binds."""
    quotas = {}
    for g in range(N_GROUPS):
        if g % 2 == 0:
            quotas[f"g{g}"] = Quota(int(limit * 0.06), int(limit * 0.09))
        else:
            quotas[f"g{g}"] = Quota(int(limit * 0.01), int(limit * 0.03))
    return quotas


def check(solution: Solution, problem: Problem) -> str:
    """A one-word check that the answer obeys the budget and quotas."""
    chosen = np.zeros(problem.size, dtype=bool)
    chosen[solution.indices] = True
    weights = problem.weights
    used = int(weights[chosen].sum())
    ok = used <= problem.limit and not (chosen & problem.excluded).any()
    ok &= bool((chosen | ~problem.required).all())
    per_group = np.bincount(problem.group_codes[chosen], weights[chosen], N_GROUPS)
    ok &= bool(((per_group >= problem.group_min) & (per_group <= problem.group_max)).all())
    return "feasible" if ok else "INFEASIBLE"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = args.n
    rng = np.random.default_rng(args.seed)
    codes = rng.integers(0, N_GROUPS, n).astype(np.int32)
    costs = rng.integers(50, 2000, n)
    values = rng.normal(size=n)
    solver = ExactSolver()
    print(f"selectkit solver benchmark: {n:,} records, {N_GROUPS} groups, seed {args.seed}")

    _, argsort_s = timed(lambda: np.argsort(values), repeat=3)
    print(
        f"reference np.argsort of all values: {argsort_s:.3f} s (best of 3, as are the count runs)"
    )

    k = n // 10
    plain = build(Budget.count(k), {}, costs, codes)
    sol, plain_s = timed(lambda: solver.solve(Scores(values), plain, seed=0), repeat=3)
    print(
        f"exact plain top-k (k={k:,}): {plain_s:.3f} s  "
        f"({plain_s / argsort_s:.2f}x np.argsort)  [{check(sol, plain)}]"
    )

    counted = build(Budget.count(k), quotas_for(k), costs, codes)
    sol, count_s = timed(lambda: solver.solve(Scores(values), counted, seed=0), repeat=3)
    print(
        f"exact count budget + {N_GROUPS} group quotas: {count_s:.3f} s (target < 2 s)  "
        f"{verdict(count_s < 2)}  [{check(sol, counted)}, {sol.status}]"
    )
    print(
        f"  in-run ratio, quota path / np.argsort of all values: {count_s / argsort_s:.2f}x "
        f"({count_s:.3f} s vs {argsort_s:.3f} s)"
    )

    limit = int(costs.sum() * 0.05)
    tokened = build(Budget.tokens(limit), quotas_for(limit), costs, codes)
    sol, token_s = timed(lambda: solver.solve(Scores(values), tokened, seed=0))
    gap = sol.gap if sol.gap is not None else float("nan")
    print(
        f"token budget + {N_GROUPS} group token quotas: {token_s:.3f} s, gap {gap:.4%} "
        f"(target < 10 s, gap < 0.1%)  {verdict(token_s < 10 and gap < 1e-3)}  "
        f"[{check(sol, tokened)}, {sol.status}, path {sol.details.get('path')}, "
        f"MILP variables {sol.details.get('milp_variables')}, "
        f"used {sol.used:,}/{limit:,} tokens]"
    )

    exact_solver = ExactSolver(ExactSolver.Params(gap_tolerance=0.0, time_limit=5.0))
    sol, exact_s = timed(lambda: exact_solver.solve(Scores(values), tokened, seed=0))
    gap = sol.gap if sol.gap is not None else float("nan")
    print(
        f"  informative, gap_tolerance=0 and time_limit=5 s (reduced-cost core + HiGHS): "
        f"{exact_s:.3f} s, "
        f"gap {gap:.6%}, {sol.status}, MILP variables {sol.details.get('milp_variables')} "
        f"of {sol.details.get('free_items'):,}  [{check(sol, tokened)}]"
    )

    log_w = values  # log-weights
    sol, sample_count_s = timed(lambda: solver.solve(LogWeights(log_w), counted, seed=1))
    print(
        f"Gumbel-top-k sample, count budget + quotas: {sample_count_s:.3f} s  "
        f"[{check(sol, counted)}]"
    )
    sol, sample_token_s = timed(lambda: solver.solve(LogWeights(log_w), tokened, seed=1))
    print(
        f"sequential Gumbel sample, token budget + token quotas: {sample_token_s:.3f} s  "
        f"[{check(sol, tokened)}, used {sol.used:,}/{limit:,} tokens]"
    )


if __name__ == "__main__":
    main()
