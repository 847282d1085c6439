"""The 0/1 selection problem as a cvxpy model, solved by HiGHS: exact MILP or its LP relaxation.

One formulation serves every budget: maximize ``values @ x`` subject to ``weights @ x <= total``
(``== total`` for count budgets) and, per bucket (group), ``need <= sum of its weights @ x <= cap``.
cvxpy, scipy and highspy are imported inside :func:`solve_binary` only, so importing selectkit's
solvers (and starting the CLI) stays fast.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

MilpStatus = Literal["optimal", "time_limit", "infeasible", "error"]


@dataclass(frozen=True)
class MilpResult:
    """What HiGHS found for one model.

    ``x`` is the solution (0/1 as booleans for a MILP, fractions for a relaxation) or ``None``
    when there is none; ``bound`` is the best proven upper bound on ``values @ x`` (the MIP dual
    bound, or the LP optimum), or ``None`` when HiGHS proved nothing.
    """

    x: np.ndarray | None
    status: MilpStatus
    objective: float | None
    bound: float | None


def solve_binary(
    values: np.ndarray,
    weights: np.ndarray,
    buckets: np.ndarray,
    *,
    total: int,
    need: np.ndarray,
    cap: np.ndarray,
    equality: bool = False,
    relax: bool = False,
    time_limit: float | None = None,
    rel_gap: float = 1e-6,
) -> MilpResult:
    """Maximize ``values @ x`` over ``x`` in {0,1} (or [0,1] with ``relax``) under the budget
    ``weights @ x <= total`` (``==`` when ``equality``) and, for every bucket ``b``,
    ``need[b] <= weights[buckets == b] @ x[buckets == b] <= cap[b]``.

    Bucket rows that cannot bind (no minimum, maximum at least the bucket's total weight) are
    left out of the model. ``rel_gap`` is HiGHS's ``mip_rel_gap``.
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    buckets = np.asarray(buckets, dtype=np.int64)
    m = len(values)
    n_buckets = len(need)
    bucket_weight = np.bincount(buckets, weights=weights, minlength=n_buckets)
    if m == 0:
        feasible = bool((np.asarray(need) <= 0).all()) and (total == 0 if equality else total >= 0)
        if not feasible:
            return MilpResult(None, "infeasible", None, None)
        return MilpResult(np.zeros(0, dtype=np.float64 if relax else bool), "optimal", 0.0, 0.0)

    import cvxpy as cp
    import scipy.sparse as sp

    lower_rows = np.flatnonzero(np.asarray(need) > 0)
    upper_rows = np.flatnonzero(np.asarray(cap) < bucket_weight)
    x = cp.Variable(m, bounds=[0, 1]) if relax else cp.Variable(m, boolean=True)
    budget = weights @ x
    constraints = [budget == total if equality else budget <= total]
    if len(lower_rows) or len(upper_rows):
        membership = sp.csr_matrix(
            (weights, (buckets, np.arange(m))), shape=(n_buckets, m), dtype=np.float64
        )
        if len(lower_rows):
            rows = membership[lower_rows]
            constraints.append(rows @ x >= np.asarray(need, dtype=np.float64)[lower_rows])
        if len(upper_rows):
            rows = membership[upper_rows]
            constraints.append(rows @ x <= np.asarray(cap, dtype=np.float64)[upper_rows])
    problem = cp.Problem(cp.Maximize(values @ x), constraints)

    options: dict[str, float | bool] = {"output_flag": False}
    if time_limit is not None and math.isfinite(time_limit):
        options["time_limit"] = float(time_limit)
    if not relax:
        options["mip_rel_gap"] = float(rel_gap)
    _quiet_highs_banner()
    try:
        with warnings.catch_warnings():
            # cvxpy warns "may be inaccurate" on a time limit; the status says so already.
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver=cp.HIGHS, **options)
    except cp.SolverError:
        return MilpResult(None, "error", None, None)

    status = problem.status
    if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        return MilpResult(None, "infeasible", None, None)
    found: MilpStatus = "optimal" if status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) else "error"
    if status == cp.USER_LIMIT:
        found = "time_limit"
    if x.value is None:
        return MilpResult(None, found if found != "optimal" else "error", None, None)

    raw = np.asarray(x.value, dtype=np.float64).reshape(m)
    if relax:
        solution = np.clip(raw, 0.0, 1.0)
        objective = float(values @ solution)
        return MilpResult(solution, found, objective, float(problem.value))
    chosen = raw > 0.5
    objective = float(values[chosen].sum())
    return MilpResult(chosen, found, objective, _mip_bound(problem, objective))


def _mip_bound(problem: object, objective: float) -> float | None:
    """Upper bound on the maximum from HiGHS's MIP dual bound.

    cvxpy hands HiGHS ``minimize -values @ x`` (plus any constant), so HiGHS reports its primal
    value ``P`` and dual bound ``D <= P`` in that sense; the proven room above our objective is
    ``P - D``, whatever the constant.
    """
    info = getattr(getattr(problem, "solver_stats", None), "extra_stats", None)
    primal = getattr(info, "objective_function_value", None)
    dual = getattr(info, "mip_dual_bound", None)
    if primal is None or dual is None or not (math.isfinite(primal) and math.isfinite(dual)):
        return None
    return objective + max(0.0, float(primal) - float(dual))


_BANNER_SILENCED = False


def _quiet_highs_banner() -> None:
    """HiGHS prints a copyright banner to the C-level stdout on its first construction in a
    process; swallow it once so it cannot corrupt output written to stdout."""
    global _BANNER_SILENCED
    if _BANNER_SILENCED:
        return
    _BANNER_SILENCED = True
    import highspy

    with _stdout_to_devnull():
        highspy.Highs()


@contextlib.contextmanager
def _stdout_to_devnull() -> Iterator[None]:
    """Point file descriptor 1 (what C code writes to) at /dev/null for the block."""
    import ctypes

    def flush_c() -> None:
        with contextlib.suppress(OSError, TypeError, AttributeError):
            ctypes.CDLL(None).fflush(None)

    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.flush()
    flush_c()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            try:
                yield
            finally:
                flush_c()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
