"""k-center solver benchmark: farthest-first traversal against its floor, and its coverage.

A pool of ``--n`` feature rows of ``--dim`` float32 (a mixture of ``--clusters`` Gaussian
clusters of different sizes and spreads, like gradients of task families), ``--k`` centers
under 10 group quotas. Prints:

- speed: the solver's seconds beside the floor, the ``k`` passes of ``rows @ row`` that any
  farthest-first traversal needs, timed in the same run; target: at most 2x the floor;
- quality: the radius beside the radius of random subsets of the same size (the best of 5) and
  the certified lower bound; target: a radius below every random subset's.

Run: ``python benchmarks/bench_kcenter.py [--n 50000] [--dim 512] [--k 500]``; about a minute on
2 CPU cores. Reports and always exits 0.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from selectkit.solvers.budget import Budget, Constraints, Quota, resolve
from selectkit.solvers.kcenter import KCenterSolver
from selectkit.solvers.objectives import KCenter

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
        np.minimum(nearest, objective.distances.to(int(center)), out=nearest)
    return float(nearest.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--clusters", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = clustered_rows(args.n, args.dim, args.clusters, rng)
    codes = rng.integers(0, N_GROUPS, args.n).astype(np.int32)
    quotas = {f"g{g}": Quota(args.k // 20, args.k // 5) for g in range(N_GROUPS)}
    problem = resolve(
        Budget.count(args.k),
        Constraints.build(quotas),
        costs=np.ones(args.n, dtype=np.int64),
        group_codes=codes,
        group_names=[f"g{g}" for g in range(N_GROUPS)],
        id_positions={str(i): i for i in range(args.n)},
    )
    print(f"k-center: {args.n:,} rows x {args.dim} float32, k={args.k}, {N_GROUPS} group quotas")

    objective = KCenter(rows)
    started = time.perf_counter()
    solution = KCenterSolver().solve(objective, problem, seed=0)
    solve_s = time.perf_counter() - started

    x = objective.distances.x
    started = time.perf_counter()
    for center in solution.indices:
        x @ x[center]
    floor_s = time.perf_counter() - started
    ratio = solve_s / floor_s
    verdict = "PASS" if ratio <= 2 else "MISS"
    print(
        f"solver {solve_s:.2f} s, floor ({args.k} passes of rows @ row) {floor_s:.2f} s: "
        f"{ratio:.2f}x (target <= 2x) {verdict}"
    )

    found = solution.details["radius"]
    random_radii = [
        radius(objective, rng.choice(args.n, size=args.k, replace=False)) for _ in range(5)
    ]
    verdict = "PASS" if found < min(random_radii) else "MISS"
    print(
        f"radius {found:.3f}, best of 5 random subsets {min(random_radii):.3f} "
        f"(target: below) {verdict}; certified lower bound on the best radius "
        f"{solution.details['radius_lower_bound']:.3f}"
    )


if __name__ == "__main__":
    main()
