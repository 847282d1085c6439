"""``select``: run a method by name under a budget and constraints, and get a Selection."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from selectkit.data.pool import Pool
from selectkit.errors import ParamError
from selectkit.host import Host, get_host
from selectkit.manifest import build_manifest
from selectkit.methods import Context, Method
from selectkit.params import build_params
from selectkit.selection import Selection
from selectkit.solvers.budget import Budget, Constraints, resolve, rule_out
from selectkit.solvers.dispatch import solve
from selectkit.solvers.objectives import Weights


def select(
    pool: Pool,
    method: str | Method,
    budget: Budget | str | int | float,
    *,
    target: Pool | None = None,
    constraints: Constraints | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    solver: str | None = None,
    solver_params: Mapping[str, Any] | None = None,
    n_jobs: int = 0,
    progress: bool = False,
    host: Host | None = None,
) -> Selection:
    """Select records of ``pool`` with ``method`` under ``budget`` and ``constraints``.

    ``method`` is a registered name (``"dsir"``) or a configured Method instance; ``params``
    are that method's parameters (strings are converted to their declared types). The budget,
    quotas, target and parameters are all checked before the method does any work.
    """
    host = host or get_host()
    started = time.perf_counter()
    method_obj = _method(host, method, params)
    budget = Budget.parse(budget)
    constraints = constraints or Constraints()
    if method_obj.needs_target and (target is None or len(target) == 0):
        raise ParamError(f"method '{method_obj.name}' needs a target set (--target FILE)")
    codes, group_names = pool.group_codes()
    problem = resolve(
        budget,
        constraints,
        costs=pool.costs,
        group_codes=codes,
        group_names=group_names,
        id_positions={rid: i for i, rid in enumerate(pool.ids)},
    )
    solver_obj = None
    if solver is not None:
        solver_cls = host.solver(solver)
        solver_obj = solver_cls(build_params(solver_cls.Params, solver_params or {}, solver))
    elif solver_params:
        raise ParamError("solver parameters were given without --solver NAME")

    context = Context(
        seed=seed,
        n_jobs=n_jobs,
        progress=progress,
        budget_records=problem.limit if problem.unit != "tokens" else None,
    )
    checked = time.perf_counter()
    objective = method_obj.objective(pool, target, context)
    if len(objective) != len(pool):
        raise ParamError(
            f"method '{method_obj.name}' returned {len(objective)} values for a pool of {len(pool)}"
        )
    if objective.eligible is not None:
        why = f"method '{method_obj.name}'" + (
            f" ({objective.ruled_out})" if objective.ruled_out else ""
        )
        problem = rule_out(problem, ~objective.eligible, why)
    scored = time.perf_counter()
    solution = solve(objective, problem, seed=seed, solver=solver_obj, host=host)
    solved = time.perf_counter()

    indices = np.asarray(solution.indices, dtype=np.int64)
    weights = solution.weights
    group_weights = objective.group_weights if isinstance(objective, Weights) else None
    if weights is None and isinstance(objective, Weights) and group_weights is None:
        weights = objective.values[indices]
    ids = [pool[i].id for i in indices.tolist()]
    timings = {
        "checks_s": checked - started,
        "method_s": scored - checked,
        "solver_s": solved - scored,
        "total_s": solved - started,
    }
    manifest = build_manifest(
        host=host,
        method=method_obj,
        pool=pool,
        target=target,
        budget=budget,
        constraints=constraints,
        problem=problem,
        objective=objective,
        solution=solution,
        indices=indices,
        ids=ids,
        weights=weights,
        group_weights=group_weights,
        seed=seed,
        timings=timings,
    )
    return Selection(indices, ids, objective.values, weights, solution, manifest, group_weights)


def _method(host: Host, method: str | Method, params: Mapping[str, Any] | None) -> Method:
    if isinstance(method, Method):
        if params:
            raise ParamError("pass params either in the Method instance or as params, not both")
        return method
    method_cls = host.method(method)
    return method_cls(build_params(method_cls.Params, params or {}, f"method '{method}'"))
