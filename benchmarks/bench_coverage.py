"""Coverage solvers: k-center (farthest-first) and facility location (lazy greedy, CRAIG).

A pool of ``--n`` feature rows of ``--dim`` float32 (a mixture of ``--clusters`` Gaussian
clusters of different sizes and spreads, like gradients of task families), ``--k`` records
under 10 group quotas. Prints, each timed against its floor in the same run:

- k-center: the solver's seconds beside the ``k`` passes of ``rows @ row`` that any
  farthest-first traversal needs (target: at most 2x); the radius beside that of random
  subsets of the same size (the best of 5; target: below) and the certified lower bound.
- facility location (``--fl-n`` rows, since it is O(n²)): the objective and lazy greedy's
  seconds beside the floor, the same number of gain columns (the ``n`` singleton values plus
  every lazy re-evaluation, each a pass over ``n`` similarities) computed in full blocks
  (target: at most 3x); the evaluations beside plain greedy's ``k · n``; the certified ratio
  to the best value.
- for each, short hashes of the selection (indices, weights) and of the reported scores (values,
  objective): a change that must keep selections bit for bit must keep these.

Run: ``python benchmarks/bench_coverage.py [--n 50000] [--fl-n 20000] [--dim 512] [--k 500]``;
about two minutes on 2 CPU cores. Reports and always exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np
import torch  # noqa: F401  (imported before any timing: facility location runs on torch)

from selectkit.solvers.budget import Budget, Constraints, Quota, resolve
from selectkit.solvers.farthest_first import FarthestFirstSolver
from selectkit.solvers.greedy import GreedySolver
from selectkit.solvers.objectives import FacilityLocation, KCenter

N_GROUPS = 10


def clustered_rows(n: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    sizes = rng.dirichlet(np.ones(clusters)) * n
    labels = np.minimum(np.searchsorted(np.cumsum(sizes), np.arange(n)), clusters - 1)
    centres = rng.normal(size=(clusters, dim)) * 3
    spreads = rng.uniform(0.3, 2.0, size=clusters)
    noise = rng.normal(size=(n, dim)) * spreads[labels, None]
    return (centres[labels] + noise).astype(np.float32)


def radius(objective: KCenter, centers: np.ndarray) -> float:
    nearest = np.full(len(objective), np.inf)
    for center in centers:
        np.minimum(nearest, objective.centred.distances_to(int(center)), out=nearest)
    return float(nearest.max())


def count_problem(n: int, k: int, rng: np.random.Generator):
    """``k`` records of ``n`` under 10 group quotas (each group 5% to 20% of the selection)."""
    quotas = {f"g{g}": Quota(k // 20, k // 5) for g in range(N_GROUPS)}
    return resolve(
        Budget.count(k),
        Constraints.build(quotas),
        costs=np.ones(n, dtype=np.int64),
        group_codes=rng.integers(0, N_GROUPS, n).astype(np.int32),
        group_names=[f"g{g}" for g in range(N_GROUPS)],
        id_positions={str(i): i for i in range(n)},
    )


def digest(solution, values: np.ndarray) -> str:
    """Short hashes of the selection (indices and weights) and of the reported scores (values
    and objective), to check that a change keeps both bit for bit."""
    picked = hashlib.sha256(np.asarray(solution.indices, dtype=np.int64).tobytes())
    if solution.weights is not None:
        picked.update(np.ascontiguousarray(solution.weights, dtype=np.float64).tobytes())
    scores = hashlib.sha256(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    scores.update(np.array([solution.objective]).tobytes())
    return f"selection {picked.hexdigest()[:16]}, scores {scores.hexdigest()[:16]}"


def bench_kcenter(rows: np.ndarray, k: int, rng: np.random.Generator) -> None:
    n = len(rows)
    problem = count_problem(n, k, rng)
    print(f"k-center: {n:,} rows x {rows.shape[1]} float32, k={k}, {N_GROUPS} group quotas")
    objective = KCenter(rows)
    centred = objective.centred  # the rows read and centred once, before the traversal is timed
    started = time.perf_counter()
    solution = FarthestFirstSolver().solve(objective, problem, seed=0)
    solve_s = time.perf_counter() - started
    print(f"  {digest(solution, objective.values)}")

    x = centred.x
    started = time.perf_counter()
    for center in solution.indices:
        x @ x[center]
    floor_s = time.perf_counter() - started
    ratio = solve_s / floor_s
    print(
        f"  solver {solve_s:.2f} s, floor ({k} passes of rows @ row) {floor_s:.2f} s: "
        f"{ratio:.2f}x (target <= 2x) {'PASS' if ratio <= 2 else 'MISS'}"
    )
    found = solution.details["radius"]
    random_radii = [radius(objective, rng.choice(n, size=k, replace=False)) for _ in range(5)]
    print(
        f"  radius {found:.3f}, best of 5 random subsets {min(random_radii):.3f} (target: below) "
        f"{'PASS' if found < min(random_radii) else 'MISS'}; certified lower bound on the best "
        f"radius {solution.details['radius_lower_bound']:.3f}"
    )


def bench_facility(rows: np.ndarray, k: int, rng: np.random.Generator) -> None:
    n = len(rows)
    problem = count_problem(n, k, rng)
    print(f"facility location: {n:,} rows x {rows.shape[1]} float32, k={k}, quotas as above")
    started = time.perf_counter()
    objective = FacilityLocation(rows)
    solution = GreedySolver().solve(objective, problem, seed=0)
    solve_s = time.perf_counter() - started

    similarity = objective.similarity
    started = time.perf_counter()
    for start in range(0, n, 1024):
        similarity.between(slice(start, start + 1024), np.arange(n)).sum(dim=0)
    pass_s = time.perf_counter() - started
    print(f"  {digest(solution, objective.values)}")
    evaluations = solution.details["evaluations"]
    floor_s = pass_s * (n + evaluations) / n
    ratio = solve_s / floor_s
    print(
        f"  objective + lazy greedy {solve_s:.2f} s for {n:,} singleton and {evaluations:,} "
        f"gain columns; floor (the same columns in full blocks, {pass_s:.2f} s per n) "
        f"{floor_s:.2f} s: {ratio:.2f}x (target <= 3x) {'PASS' if ratio <= 3 else 'MISS'}"
    )
    print(
        f"  evaluations: {evaluations / (k * n):.2%} of plain greedy's {k * n:,}; certified "
        f"ratio to the best value {solution.details['certified_ratio']:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--clusters", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fl-n", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = clustered_rows(args.n, args.dim, args.clusters, rng)
    bench_kcenter(rows, args.k, rng)
    bench_facility(rows[: args.fl_n], args.k, rng)


if __name__ == "__main__":
    main()
