"""Pick a solver for an objective and run it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from selectkit.errors import ParamError
from selectkit.solvers.base import Solution, Solver
from selectkit.solvers.budget import Problem
from selectkit.solvers.objectives import Objective

if TYPE_CHECKING:
    from selectkit.host import Host


def solve(
    objective: Objective,
    problem: Problem,
    *,
    seed: int,
    host: Host,
    solver: str | Solver | None = None,
) -> Solution:
    """Choose records for ``objective`` under ``problem``.

    ``solver`` is a solver name registered with ``host``, a configured :class:`Solver`
    instance, or ``None`` for the first of ``host``'s solvers (built-ins first) whose
    ``accepts`` is true. Raises :class:`ParamError` naming the objective type when no solver
    (or not the named one) can handle it. The host is always given: the caller's own (a
    test's, a notebook's) or the entry point's, never a process-wide fallback.
    """
    kind = type(objective).__name__
    if isinstance(solver, Solver):
        chosen = solver
    elif solver is not None:
        chosen = host.solver(solver)()
    else:
        registry = host.solvers
        for solver_cls in registry.values():
            candidate = solver_cls()
            if candidate.accepts(objective, problem):
                return candidate.solve(objective, problem, seed=seed)
        known = ", ".join(sorted(registry)) or "none"
        raise ParamError(
            f"no registered solver accepts a {kind} objective with a {problem.unit} budget "
            f"(solvers: {known})"
        )
    if not chosen.accepts(objective, problem):
        handled = ", ".join(t.__name__ for t in getattr(chosen, "objectives", ())) or "none"
        raise ParamError(
            f"solver '{chosen.name}' does not accept a {kind} objective with a {problem.unit} "
            f"budget (it handles: {handled})"
        )
    return chosen.solve(objective, problem, seed=seed)
