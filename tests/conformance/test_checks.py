"""The conformance checks catch what they are for: each broken method here fails exactly the
check that guards its fault, with a message naming the method, the check and what was seen."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from selectkit import Context, Method, Objective, Pool, Scores, Solution, Solver, hookimpl
from selectkit.errors import ParamError
from selectkit.host import Host
from selectkit.testing import (
    CHECKS,
    ConformanceError,
    binding_constraints,
    check_method,
    checks_for,
    generated_pools,
)


@dataclass(frozen=True, eq=False)
class FirstColumn(Objective):
    """A third-party objective kind on feature rows that lets NaN through: its values are the
    rows' first column, and its solver takes the first records."""

    features: Any

    def __len__(self) -> int:
        return len(self.features)

    @property
    def values(self) -> np.ndarray:
        return np.asarray(self.features, dtype=np.float64)[:, 0]


class FirstRecords(Solver):
    name = "first-records"
    objectives = (FirstColumn,)

    def solve(self, objective, problem, *, seed):
        chosen = np.flatnonzero(~problem.excluded)[: problem.limit]
        return Solution(chosen, 0.0, self.name, "feasible", len(chosen))


class FirstRecordsPlugin:
    @hookimpl
    def selectkit_register_solvers(self):
        return [FirstRecords]


@pytest.fixture(scope="module")
def host() -> Host:
    host = Host(entry_points=False)  # the built-in solvers, and one that lets NaN through
    host.register(FirstRecordsPlugin(), name="first-records")
    return host


def _fails(method_cls, check, host, match, **options):
    with pytest.raises(ConformanceError, match=match) as caught:
        check_method(method_cls, host=host, checks=[check], **options)
    assert f"method '{method_cls.name}' fails conformance check '{check}'" in str(caught.value)


class Longest(Method):
    """The longest records (a method that keeps the contract)."""

    name = "long"

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        return Scores(pool.costs.astype(float))


def test_a_method_that_keeps_the_contract_passes_every_check(host):
    assert checks_for(Longest) == [name for name in CHECKS if name != "attribute"]
    check_method(Longest, host=host)
    assert isinstance(ConformanceError("x"), AssertionError)  # pytest shows it as a failure


class Unseeded(Longest):
    """Random scores from an unseeded generator."""

    def objective(self, pool, target, context):
        return Scores(np.random.default_rng().random(len(pool)))


class SeedsNumpy(Longest):
    """Seeds NumPy's global generator with the selection's seed."""

    def objective(self, pool, target, context):
        np.random.seed(context.seed)
        return Scores(np.random.random(len(pool)))


class OneTooMany(Longest):
    """One value more than the pool has records."""

    def objective(self, pool, target, context):
        return Scores(np.zeros(len(pool) + 1))


class Lenient(Longest):
    """Its objective kind lets NaN through."""

    def objective(self, pool, target, context):
        return FirstColumn(np.ones((len(pool), 2)))


class RefusesDeclaredTokens(Longest):
    """Declares every budget unit (the default), but refuses a token budget itself."""

    def objective(self, pool, target, context):
        if context.budget_records is None:
            raise ParamError(f"method '{self.name}' needs a count budget")
        return super().objective(pool, target, context)


class NeedsCountUndeclared(Longest):
    """Declares every budget unit (the default), but its scoring needs the number of records
    to select: it lies about token budgets."""

    def objective(self, pool, target, context):
        return Scores(pool.costs.astype(float) % context.budget_records)


@pytest.mark.parametrize(
    ("method_cls", "check", "match"),
    [
        (Unseeded, "same_seed_same_selection", "seed 0 (selected|gave other scores)"),
        (SeedsNumpy, "global_random_state", "random state of numpy changed"),
        (OneTooMany, "objective", "31 values for 30 records"),
        (Lenient, "nan_refused", "NaN in record 0's FirstColumn was not refused"),
        (
            RefusesDeclaredTokens,
            "token_budget",
            r"declares budgets \('items', 'tokens'\) but a token budget \(\d+tok\) raised "
            "ParamError: method 'long' needs a count budget",
        ),
        (NeedsCountUndeclared, "token_budget", r"raised TypeError: .*budgets = \('items',\)"),
        (Lenient, "token_budget", r"a budget of \d+tok selected records costing \d+"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_faulty_method_fails_its_check(method_cls, check, match, host):
    _fails(method_cls, check, host, match)


#: The ``budget_records`` each CountOnly objective was asked with.
asked_with: list[int | None] = []


class CountOnly(Longest):
    """Declares count budgets only, and notes the budget of every objective it is asked for."""

    budgets = ("items",)

    def objective(self, pool, target, context):
        asked_with.append(context.budget_records)
        return super().objective(pool, target, context)


def test_a_count_only_method_passes_and_never_sees_a_token_budget(host):
    asked_with.clear()
    check_method(CountOnly, host=host)
    assert asked_with and None not in asked_with


class CountOnlyLate(CountOnly):
    """Declares count budgets only, but writes to the store before it looks at the budget."""

    def objective(self, pool, target, context):
        (context.store_root / "entry").mkdir(parents=True, exist_ok=True)
        if context.budget_records is None:
            raise ParamError(f"method '{self.name}' needs a count budget")
        return super().objective(pool, target, context)


def test_the_suite_holds_select_to_a_count_only_declaration(host, monkeypatch):
    """Were ``select`` to let a token budget reach a count-only method, the suite says so:
    a late refusal, or a selection the declaration rules out."""
    monkeypatch.setattr("selectkit.api.check_budget_unit", lambda method, budget, host: None)
    _fails(CountOnlyLate, "token_budget", host, r"only after writing \['entry'\]")
    _fails(CountOnly, "token_budget", host, r"without 'tokens', yet a token budget .* selected")


@dataclass
class Thawed:
    size: int = field(default=1, metadata={"help": "a size"})


@dataclass(frozen=True)
class Unexplained:
    size: int = 1


@dataclass(frozen=True)
class Untypable:
    folder: Path = field(default=Path("data"), metadata={"help": "a folder"})


@pytest.mark.parametrize(
    ("attributes", "check", "match"),
    [
        ({"name": "a:b"}, "declaration", "name 'a:b' is not a name users can type"),
        ({"__doc__": None}, "declaration", "no summary line"),
        ({"Params": Thawed}, "declaration", "Params Thawed is not frozen"),
        ({"Params": Unexplained}, "declaration", "parameter 'size' has no help text"),
        ({"Params": Untypable}, "params_cli_round_trip", r"'folder' = PosixPath\('data'\)"),
        ({"budgets": "items"}, "declaration", "budgets 'items' is not a tuple of distinct"),
        ({"budgets": ("count",)}, "declaration", r"budgets \('count',\) is not a tuple"),
        ({"budgets": ()}, "declaration", r"budgets \(\) is not a tuple"),
        ({"budgets": ("items", "items")}, "declaration", "is not a tuple of distinct"),
    ],
)
def test_a_faulty_declaration_fails(attributes, check, match, host):
    method_cls = type("Declared", (Longest,), {"name": "declared", "__doc__": "D.", **attributes})
    with pytest.raises(ConformanceError, match=match):
        check_method(method_cls, host=host, checks=[check])


def test_a_tuple_item_with_a_comma_does_not_round_trip(host):
    @dataclass(frozen=True)
    class Names:
        names: tuple[str, ...] = field(default=("a,b",), metadata={"help": "names"})

    method_cls = type("Named", (Longest,), {"name": "named", "__doc__": "N.", "Params": Names})
    with pytest.raises(ConformanceError, match=r"'names=a,b' reads back as \('a', 'b'\)"):
        check_method(method_cls, host=host, checks=["params_cli_round_trip"])


class Attributing(Longest):
    """Attribution that is only the record's length, for every target."""

    def attribute(self, pool, target, context):
        return np.repeat(pool.costs.astype(np.float64)[:, None], len(target), axis=1)


class Float32Attribution(Attributing):
    """Its attribution is float32."""

    def attribute(self, pool, target, context):
        return super().attribute(pool, target, context).astype(np.float32)


class DriftingAttribution(Attributing):
    """Its attribution changes from one call to the next."""

    calls = 0

    def attribute(self, pool, target, context):
        DriftingAttribution.calls += 1
        return super().attribute(pool, target, context) + DriftingAttribution.calls


def test_attribution_is_checked(host):
    assert "attribute" in checks_for(Attributing)
    check_method(Attributing, host=host, checks=["attribute"], attribute_aggregate="mean")
    _fails(Float32Attribution, "attribute", host, "float32 of shape")
    _fails(DriftingAttribution, "attribute", host, "other values the second time")
    _fails(Attributing, "attribute", host, "not the sum of attribute", attribute_aggregate="sum")


def test_the_constraints_go_against_the_methods_own_choice(host):
    pool, _ = generated_pools(host)
    values = pool.costs.astype(float)
    constraints, budget = binding_constraints(pool, Scores(values), 5)
    top = np.lexsort((np.arange(len(pool)), -values))[:budget].tolist()  # what it picks alone
    unconstrained = {pool[i].id for i in top}
    assert constraints.excluded <= unconstrained
    assert not constraints.required & unconstrained
    capped = [g for g, q in constraints.quotas.items() if q.maximum == 0]
    floored = [g for g, q in constraints.quotas.items() if q.minimum == 2]
    assert len(capped) == len(floored) == 1
    assert capped[0] in {pool[i].group for i in top}
    assert sum(pool[i].group == floored[0] for i in top) < 2


def test_unknown_check_names_are_refused(host):
    with pytest.raises(ValueError, match="no conformance check named \\['nope'\\]"):
        check_method(Longest, host=host, checks=["nope"])
