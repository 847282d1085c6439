"""Budgets, quotas and the checks that run before any method does."""

from __future__ import annotations

import numpy as np
import pytest

from selectkit import Budget, Constraints, Quota
from selectkit.errors import BudgetError
from selectkit.solvers.budget import resolve


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("500", "count", 500),
        ("5%", "fraction", 0.05),
        ("200000tok", "tokens", 200000),
        ("1_000 tokens", "tokens", 1000),
        ("12.5%", "fraction", 0.125),
        ("1e3", "count", 1000),
    ],
)
def test_budget_parse(text, kind, value):
    budget = Budget.parse(text)
    assert (budget.kind, budget.value) == (kind, pytest.approx(value))


@pytest.mark.parametrize("text", ["", "abc", "-5", "0", "150%", "2.5", "10 apples"])
def test_budget_parse_rejects(text):
    with pytest.raises(BudgetError):
        Budget.parse(text)


def test_fraction_limit_rounds_to_nearest_and_keeps_one():
    assert Budget.parse("5%").limit(1000) == 50
    assert Budget.parse("1%").limit(10) == 1


def test_quota_parse_and_bounds():
    assert Quota.parse("10:50").bounds(1000) == (10, 50)
    assert Quota.parse(":30%").bounds(1000) == (0, 300)
    assert Quota.parse("5%:").bounds(1000) == (50, None)
    assert Quota.parse("33%:34%").bounds(10) == (4, 3)
    with pytest.raises(BudgetError, match="MIN:MAX"):
        Quota.parse("10")
    with pytest.raises(BudgetError, match="percentage"):
        Quota.parse("x:5")


def _resolve(budget, constraints, groups, costs=None):
    names = sorted({g for g in groups if g is not None})
    codes = np.array([names.index(g) if g is not None else -1 for g in groups])
    costs = np.ones(len(groups), dtype=np.int64) if costs is None else np.asarray(costs)
    ids = {str(i): i for i in range(len(groups))}
    return resolve(
        Budget.parse(budget),
        constraints,
        costs=costs,
        group_codes=codes,
        group_names=names,
        id_positions=ids,
    )


def test_resolve_builds_problem_arrays():
    problem = _resolve("4", Constraints.build(["a=1:2"], required=["0"]), ["a", "a", "b", "b", "b"])
    assert problem.limit == 4 and problem.unit == "items"
    assert problem.group_min.tolist() == [1, 0]
    assert problem.group_max[0] == 2 and problem.has_quotas
    assert problem.required.tolist() == [True, False, False, False, False]


@pytest.mark.parametrize(
    ("budget", "constraints", "message"),
    [
        ("10", Constraints(), "only 5"),
        ("3", Constraints.build(["c=1:"]), r"group\(s\) \['c'\] not in the pool"),
        ("3", Constraints.build(["a=2:", "b=2:"]), "minimums add up to 4"),
        ("3", Constraints.build(["a=3:"]), "has only 2 items available"),
        ("4", Constraints.build(["a=:0", "b=:1"]), "only 1 selectable"),
        ("1", Constraints.build(required=["0", "1"]), "required records use 2"),
        ("3", Constraints.build(["a=:1"], required=["0", "1"]), "required records use 2"),
        ("3", Constraints.build(required=["0"], excluded=["0"]), "both required and excluded"),
        ("3", Constraints.build(required=["99"]), r"required id\(s\) not in the pool"),
        ("3", Constraints.build(["a=2:1"]), "minimum 2 exceeds maximum 1"),
    ],
)
def test_impossible_requests_fail_before_work(budget, constraints, message):
    with pytest.raises(BudgetError, match=message):
        _resolve(budget, constraints, ["a", "a", "b", "b", "b"])


def test_token_quota_larger_than_group_fails():
    with pytest.raises(BudgetError, match="group 'a' needs at least 50 tokens"):
        _resolve("100tok", Constraints.build(["a=50:"]), ["a", "b"], costs=[10, 90])


def test_duplicate_quota_is_rejected():
    with pytest.raises(BudgetError, match="more than one quota"):
        Constraints.build(["a=1:", "a=:3"])
