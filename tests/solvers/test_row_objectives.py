"""The feature-row objectives are data: made without reading a row, read once by the solver.

And the layout around them: feature rows live in one leaf module, the solvers import nothing
from the feature store, the k-center solver keeps the name users type, and solving always names
its host.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from selectkit.errors import ParamError
from selectkit.rows import ArrayRows, CentredRows
from selectkit.solvers.budget import Budget
from selectkit.solvers.dispatch import solve
from selectkit.solvers.farthest_first import FarthestFirstSolver
from selectkit.solvers.objectives import FacilityLocation, KCenter, Matching, Scores

PACKAGE = Path(__file__).resolve().parents[2] / "selectkit"


class CountedRows(ArrayRows):
    """An array that counts the rows read from it."""

    def __init__(self, array: np.ndarray) -> None:
        super().__init__(array)
        self.rows_read = 0

    def read(self, start: int, stop: int) -> np.ndarray:
        self.rows_read += stop - start
        return super().read(start, stop)


def _rows() -> CountedRows:
    return CountedRows(np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32))


def _problem(kit, n: int = 40, k: int = 5):
    return kit.make_problem(np.ones(n, dtype=int), np.full(n, -1), 0, Budget.count(k))


OBJECTIVES = {
    "matching": lambda rows: Matching(rows),
    "facility": lambda rows: FacilityLocation(rows),
    "kcenter": lambda rows: KCenter(rows, weighted=True),
}


@pytest.mark.parametrize("kind", sorted(OBJECTIVES))
def test_making_an_objective_reads_no_row(kind):
    rows = _rows()
    objective = OBJECTIVES[kind](rows)
    assert len(objective) == 40
    assert rows.rows_read == 0


@pytest.mark.parametrize("kind", sorted(OBJECTIVES))
def test_the_solver_does_the_work_once_and_the_reported_values_reuse_it(kind, kit, host):
    rows = _rows()
    objective = OBJECTIVES[kind](rows)
    solution = solve(objective, _problem(kit), seed=0, host=host)
    read = rows.rows_read
    assert read > 0
    values = objective.values  # what api.select and the manifest report as scores
    assert values.shape == (40,) and np.isfinite(values).all()
    assert objective.values is values and rows.rows_read == read
    again = solve(OBJECTIVES[kind](_rows()), _problem(kit), seed=0, host=host)
    assert again.indices.tolist() == solution.indices.tolist()


@pytest.mark.parametrize("kind", sorted(OBJECTIVES))
def test_row_objectives_carry_a_method_filter_checked_without_reading(kind, kit, host):
    rows = _rows()
    eligible = np.ones(40, dtype=bool)
    eligible[:10] = False
    make = {
        "matching": lambda: Matching(rows, eligible=eligible),
        "facility": lambda: FacilityLocation(rows, eligible=eligible),
        "kcenter": lambda: KCenter(rows, eligible=eligible),
    }[kind]
    assert make().eligible.sum() == 30
    assert rows.rows_read == 0
    eligible = np.ones(39, dtype=bool)
    with pytest.raises(ValueError, match=r"eligible must be a boolean mask of shape \(40,\)"):
        make()


def test_bad_parameters_are_refused_when_made():
    rows = _rows()
    with pytest.raises(ParamError, match="metric must be euclidean or cosine, not 'l1'"):
        FacilityLocation(rows, metric="l1")
    with pytest.raises(ParamError, match="metric must be euclidean or cosine, not 'l1'"):
        KCenter(rows, metric="l1")
    for make in (Matching, FacilityLocation, KCenter):
        with pytest.raises(ParamError, match="memory_limit must be a positive number of bytes"):
            make(rows, memory_limit=0)
    with pytest.raises(ParamError, match="l2 must be a finite number >= 0"):
        Matching(rows, l2=-1.0)
    with pytest.raises(ParamError, match="k-center needs at least one feature row"):
        KCenter(np.zeros((0, 3), dtype=np.float32))
    assert rows.rows_read == 0


def test_centred_rows_are_the_distances_of_the_rows():
    x = np.random.default_rng(1).normal(loc=5.0, size=(30, 4)).astype(np.float32)
    rows = CentredRows.read(ArrayRows(x))
    expected = np.linalg.norm(x.astype(np.float64) - x[7], axis=1)
    np.testing.assert_allclose(rows.distances_to(7), expected, rtol=1e-5, atol=1e-5)
    assert rows.distances_to(7)[7] == 0.0
    np.testing.assert_allclose(rows.x.mean(axis=0), 0.0, atol=1e-5)
    unit = CentredRows.read(ArrayRows(x * 3), unit=True)
    np.testing.assert_allclose(
        unit.distances_to(7), CentredRows.read(ArrayRows(x), unit=True).distances_to(7), atol=1e-6
    )


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "selectkit"}


def test_rows_are_a_leaf_and_the_solvers_never_import_the_features():
    assert _imports(PACKAGE / "rows.py") == {"selectkit.errors"}
    for path in sorted((PACKAGE / "solvers").glob("*.py")):
        features = sorted(m for m in _imports(path) if m.startswith("selectkit.features"))
        assert not features, f"{path.name} imports {features}"


def test_the_kcenter_solver_keeps_the_name_users_type(host):
    assert host.solver("kcenter") is FarthestFirstSolver


def test_solving_always_names_its_host(kit):
    with pytest.raises(TypeError, match="host"):
        solve(Scores(np.arange(5.0)), _problem(kit, 5, 2), seed=0)
