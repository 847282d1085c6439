"""A method declares the budget units it honours (``Method.budgets``); ``select`` and the
command line refuse any other before the method runs, and ``selectkit methods`` shows it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from selectkit import Constraints, Context, Host, Method, Pool, Scores, hookimpl, select
from selectkit.cli import cli
from selectkit.errors import BudgetError, ParamError, PluginError

#: The ``budget_records`` of every objective the methods below were asked for.
asked: list[int | None] = []


class CountOnly(Method):
    """Longest records, under count budgets only."""

    name = "count-only"
    budgets = ("items",)

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        asked.append(context.budget_records)
        return Scores(pool.costs.astype(float))


class TokensOnly(CountOnly):
    """Longest records, under token budgets only."""

    name = "tokens-only"
    budgets = ("tokens",)


class Misdeclared(CountOnly):
    """Declares a budget kind where a unit belongs."""

    name = "misdeclared"
    budgets = ("count",)


class Plugin:
    @hookimpl
    def selectkit_register_methods(self):
        return [CountOnly, TokensOnly, Misdeclared]


@pytest.fixture
def host() -> Host:
    host = Host(entry_points=False)
    host.register(Plugin(), name="budget-units")
    asked.clear()
    return host


#: The built-in methods that take count budgets only: coreset solvers and equal shares.
COUNT_ONLY = {"craig", "kcenter", "gradmatch", "balanced_random"}


def _pool(n: int = 20) -> Pool:
    return Pool.from_texts([" ".join(["w"] * (1 + i % 7)) for i in range(n)])


def test_a_count_only_method_is_refused_a_token_budget_before_it_runs(host):
    with pytest.raises(ParamError) as refused:
        select(_pool(), "count-only", "30tok", host=host)
    assert str(refused.value) == (
        "method 'count-only' selects a number of records: use a count budget (-b 500 or -b 5%), "
        "not a token budget (30tok)"
    )
    assert asked == []


def test_the_unit_is_refused_before_the_budget_is_checked_against_the_pool(host):
    """A token budget too small for a required record is refused for its unit first: the
    unit is what to change."""
    required = Constraints.build(required=["6"])  # 7 tokens
    with pytest.raises(BudgetError, match="more than the budget of 3"):
        select(_pool(), "tokens-only", "3tok", constraints=required, host=host)
    with pytest.raises(ParamError, match="not a token budget"):
        select(_pool(), "count-only", "3tok", constraints=required, host=host)


@pytest.mark.parametrize(("budget", "records"), [(4, 4), ("20%", 4), (0.25, 5)])
def test_count_and_fraction_budgets_reach_a_count_only_method_as_a_number(host, budget, records):
    selection = select(_pool(), "count-only", budget, host=host)
    assert len(selection.ids) == records
    assert asked == [records]


def test_a_tokens_only_method_is_refused_a_count_budget_and_honours_tokens(host):
    with pytest.raises(ParamError) as refused:
        select(_pool(), "tokens-only", "5%", host=host)
    assert str(refused.value) == (
        "method 'tokens-only' selects up to a total cost: use a token budget (-b 200000tok), "
        "not a count budget (5%)"
    )
    pool = _pool()
    selection = select(pool, "tokens-only", "12tok", host=host)
    assert int(pool.costs[selection.indices].sum()) <= 12
    assert asked == [None]


def test_a_declaration_of_no_known_unit_is_a_bug_of_its_plugin(host):
    with pytest.raises(PluginError, match=r"method 'misdeclared' .* declares budgets \('count',\)"):
        select(_pool(), "misdeclared", 3, host=host)
    assert asked == []


@pytest.mark.parametrize("name", ["craig", "kcenter", "gradmatch"])
def test_the_gradient_coreset_methods_take_count_budgets_only(name):
    host = Host.from_env()
    assert host.method(name).budgets == ("items",)
    with pytest.raises(ParamError, match=f"^method '{name}' selects a number of records: "):
        select(_pool(), name, "40tok", host=host)


def test_every_other_built_in_method_takes_every_budget():
    host = Host.from_env()
    takes_all = {name for name in host.methods if host.method(name).budgets == ("items", "tokens")}
    assert takes_all == set(host.methods) - COUNT_ONLY


def test_the_command_line_refuses_a_token_budget_for_a_count_only_method(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": "w " * i}) + "\n" for i in range(1, 10))
    )
    out = tmp_path / "picked.jsonl"
    result = CliRunner().invoke(
        cli, ["select", "-m", "kcenter", "--pool", str(pool), "-b", "30tok", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: method 'kcenter' selects a number of records: use a count budget "
        "(-b 500 or -b 5%), not a token budget (30tok)"
    ]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_the_command_line_refuses_the_budget_before_it_reads_the_pool(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": "r1", "text": "fine"}\n{not json\n')  # line 2 would be an error
    result = CliRunner().invoke(
        cli, ["select", "-m", "craig", "--pool", str(pool), "-b", "30tok", "--out", "x.jsonl"]
    )
    assert result.exit_code == 2, result.output
    assert "not a token budget (30tok)" in result.output
    assert "line 2" not in result.output


def test_selectkit_methods_marks_the_count_only_methods():
    result = CliRunner().invoke(cli, ["methods"])
    assert result.exit_code == 0, result.output
    marked = {
        line.split(" ", 1)[0]
        for line in result.output.splitlines()
        if "count budgets only" in line.split(":", 1)[0]
    }
    assert marked == COUNT_ONLY
    one = CliRunner().invoke(cli, ["methods", "craig"]).output.splitlines()[0]
    assert one.startswith("craig (count budgets only): ")


def test_a_method_that_takes_every_budget_is_not_marked():
    line = CliRunner().invoke(cli, ["methods", "longest"]).output.splitlines()[0]
    assert line.startswith("longest: ")
