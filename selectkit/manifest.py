"""The manifest written beside every selection: enough to audit it and to reproduce it."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import numpy as np

from selectkit.data.pool import Pool
from selectkit.host import Host
from selectkit.methods import Method
from selectkit.params import params_to_dict
from selectkit.provenance import jsonable, versions
from selectkit.solvers.base import Solution
from selectkit.solvers.budget import Budget, Constraints, Problem
from selectkit.solvers.objectives import Objective

MANIFEST_VERSION = 1


def build_manifest(
    *,
    host: Host,
    method: Method,
    pool: Pool,
    target: Pool | None,
    budget: Budget,
    constraints: Constraints,
    problem: Problem,
    objective: Objective,
    solution: Solution,
    indices: np.ndarray,
    ids: list[str],
    weights: np.ndarray | None,
    seed: int,
    group_weights: Mapping[str, float] | None = None,
    timings: dict[str, float],
) -> dict[str, Any]:
    """A JSON-ready description of one selection run."""
    selected_cost = int(pool.costs[indices].sum()) if len(indices) else 0
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": {
            "name": method.name,
            "params": params_to_dict(method.params),
            "plugin": plugin_of(host, method),
            "report": dict(objective.report),
        },
        "objective": type(objective).__name__,
        "seed": seed,
        "budget": {"spec": str(budget), "unit": problem.unit, "limit": problem.limit},
        "constraints": {
            "quotas": {name: str(q) for name, q in sorted(constraints.quotas.items())},
            "required": sorted(constraints.required),
            "excluded": sorted(constraints.excluded),
            "ruled_out_by_method": _ruled_out(objective),
        },
        "solver": {
            "name": solution.solver,
            "status": solution.status,
            "objective": solution.objective,
            "bound": solution.bound,
            "gap": solution.gap,
            "used": solution.used,
            "details": solution.details,
        },
        "pool": _describe_pool(pool),
        "target": _describe_pool(target) if target is not None else None,
        "selection": {
            "count": len(indices),
            "cost": selected_cost,
            "cost_unit": pool.cost_unit,
            "indices": indices.tolist(),
            "ids": ids,
            "scores": objective.values[indices],
            "weights": weights,
            "group_weights": dict(group_weights) if group_weights is not None else None,
        },
        "versions": versions(),
        "timings_s": {key: round(value, 6) for key, value in timings.items()},
    }
    return jsonable(manifest)


def _ruled_out(objective: Objective) -> dict[str, Any] | None:
    """How many records the method's own filter excluded, and why."""
    if objective.eligible is None:
        return None
    return {"count": int((~objective.eligible).sum()), "why": objective.ruled_out}


def _describe_pool(pool: Pool) -> dict[str, Any]:
    return {
        "fingerprint": pool.fingerprint,
        "records": len(pool),
        "skipped": len(pool.skipped),
        "cost_unit": pool.cost_unit,
        "origin": pool.origin,
    }


def plugin_of(host: Host, method: Method | type | str) -> dict[str, Any] | None:
    """The plugin whose class ran: found by the class itself, not its name, since a name can
    be registered by several plugins (``--method distribution:name`` picks one). A name is
    looked up as the user would (``"dsir"``, ``"selectkit:dsir"``); None for a method no
    plugin registered (a Method instance built in-process)."""
    if isinstance(method, str):
        if method not in host.methods:
            return None
        method = host.methods[method]
    cls = method if isinstance(method, type) else type(method)
    info = host.provider("methods", cls)
    if info is None:
        return None
    return {"name": info.name, "distribution": info.distribution, "version": info.version}
