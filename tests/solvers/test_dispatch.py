"""Solver registration and choice, and what importing the solvers costs."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from selectkit.errors import ParamError
from selectkit.solvers.budget import Budget, Quota
from selectkit.solvers.builtin import ExactSolver, MilpParams, MilpSolver
from selectkit.solvers.dispatch import solve
from selectkit.solvers.objectives import LogWeights, PerRecord, Scores


@dataclass(frozen=True)
class Exotic(PerRecord):
    """An objective kind no built-in solver knows."""


def _problem(kit):
    return kit.make_problem(
        np.arange(1, 9),
        np.array([0, 0, 1, 1, -1, -1, 0, 1]),
        2,
        Budget.tokens(12),
        {"g0": Quota(3)},
    )


def test_exact_is_registered_first_and_is_the_default(kit, host):
    assert list(host.solvers)[:3] == ["exact", "milp", "lp"]
    sol = solve(Scores(np.arange(8.0)), _problem(kit), seed=0, host=host)
    assert sol.solver == "exact"


def test_named_solver_and_instances(kit, host):
    problem = _problem(kit)
    by_name = solve(Scores(np.arange(8.0)), problem, seed=0, solver="milp", host=host)
    instance = MilpSolver(MilpParams(time_limit=5.0))
    by_instance = solve(Scores(np.arange(8.0)), problem, seed=0, solver=instance, host=host)
    assert by_name.solver == by_instance.solver == "milp"
    assert by_name.objective == pytest.approx(by_instance.objective)


def test_no_solver_for_an_objective_names_its_type(kit, host):
    with pytest.raises(ParamError, match="Exotic"):
        solve(Exotic(np.zeros(8)), _problem(kit), seed=0, host=host)


def test_named_solver_that_cannot_handle_the_objective(kit, host):
    with pytest.raises(ParamError, match="LogWeights"):
        solve(LogWeights(np.zeros(8)), _problem(kit), seed=0, solver="milp", host=host)
    with pytest.raises(ParamError, match="no solver named"):
        solve(Scores(np.zeros(8)), _problem(kit), seed=0, solver="nope", host=host)


def test_non_finite_scores_are_refused(kit):
    values = np.arange(8.0)
    values[3] = -np.inf
    with pytest.raises(ParamError, match="record 3"):
        ExactSolver().solve(Scores(values), _problem(kit), seed=0)


def test_details_are_plain_json(kit, host):
    problem = _problem(kit)
    for name in ("exact", "milp", "lp"):
        sol = solve(Scores(np.arange(8.0)), problem, seed=0, solver=name, host=host)
        json.dumps(sol.details, allow_nan=False)
        assert isinstance(sol.used, int) and isinstance(sol.objective, float)


def test_importing_the_solvers_stays_light():
    code = (
        "import sys, selectkit.solvers.builtin, selectkit.solvers.dispatch;"
        "print(sorted(m for m in ('cvxpy', 'scipy', 'torch', 'highspy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_milp_prints_nothing_to_stdout():
    code = (
        "import numpy as np\n"
        "from selectkit.solvers.milp import solve_binary\n"
        "r = solve_binary(np.ones(3), np.ones(3), np.zeros(3, int), total=2,\n"
        "                 need=np.zeros(1), cap=np.full(1, 5))\n"
        "print('objective', r.objective)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "objective 2.0"
