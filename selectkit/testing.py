"""The conformance suite every selection method passes (scikit-learn's ``check_estimator``).

``check_method(MethodClass, params={...})`` runs a method on a small generated pool and target
(or on yours) and checks the contract every method shares with the rest of selectkit: how it
declares itself and its parameters, what its objective looks like, that the solver's budgets
and constraints hold on its selections, that a seed fixes its selection, and, for attribution
methods, what ``attribute`` returns. A failed check raises :class:`ConformanceError` (an
``AssertionError``) naming the method, the check and what was observed.

pytest is not needed here; a test suite runs the checks one at a time with
``check_method(..., checks=[name])`` over :func:`checks_for`, sharing a ``host`` (its model)
and a ``cache_dir`` (the feature stores), so the model loads and features are extracted once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import random
import re
import tempfile
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from selectkit.api import select
from selectkit.data.load import load_records_from_list
from selectkit.data.pool import Pool
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError, SelectkitError
from selectkit.host import Host
from selectkit.methods import BUDGET_UNITS, Context, Method
from selectkit.params import build_params, is_group, leaves, parse_assignments
from selectkit.rows import as_rows
from selectkit.selection import Selection
from selectkit.solvers.budget import Budget, Constraints, Quota
from selectkit.solvers.objectives import Objective, PerRecord

#: Every check, in the order :func:`check_method` runs them.
CHECKS: tuple[str, ...] = (
    "declaration",
    "params_cli_round_trip",
    "params_config_round_trip",
    "objective",
    "nan_refused",
    "same_seed_same_selection",
    "global_random_state",
    "count_budget",
    "constraints",
    "token_budget",
    "attribute",
)

#: A method name users can type after ``--method``: no spaces, and no ``:`` (which qualifies
#: a name with its plugin).
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

Aggregate = Literal["mean", "sum"]


class ConformanceError(AssertionError):
    """A method does not keep the method contract; the message says which check and how."""


def checks_for(method_cls: type[Method]) -> list[str]:
    """The checks that apply to ``method_cls``: every check, ``attribute`` only for methods
    that override :meth:`Method.attribute`."""
    return [name for name in CHECKS if name != "attribute" or method_cls.attributes()]


def check_method(
    method_cls: type[Method],
    *,
    params: Mapping[str, Any] | None = None,
    host: Host | None = None,
    pool: Pool | None = None,
    target: Pool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    checks: Iterable[str] | None = None,
    attribute_aggregate: Aggregate | None = None,
) -> None:
    """Run the conformance checks on ``method_cls``; :class:`ConformanceError` on the first
    that fails.

    ``params`` are the method's parameters as ``select`` takes them (small settings keep a
    model-based method fast: e.g. ``model=tiny-llama``, ``projection.dim=32``). ``host``
    gives models, solvers and other methods (default: a new host with the installed plugins;
    the method itself need not be registered). ``pool`` and ``target`` default to a generated
    pool of 30 records in 10 groups and 4 targets; a pool needs groups for the quota check.
    ``cache_dir``
    is a folder the checks fill with two feature stores, ``store`` and ``again`` (the second
    for a rerun from scratch), and their warmups (default: a temporary folder, removed
    afterwards; never the user's cache). ``checks`` names the checks to run (default:
    :func:`checks_for`). ``attribute_aggregate`` states how the method's objective values
    aggregate its attribution over the target (``mean`` or ``sum`` of each row), for methods
    that document it; the ``attribute`` check then compares them.
    """
    names = list(checks) if checks is not None else checks_for(method_cls)
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise ValueError(f"no conformance check named {unknown}; the checks are {list(CHECKS)}")
    host = host if host is not None else Host.from_env()
    if pool is None or target is None:
        generated = generated_pools(host)
        pool = pool if pool is not None else generated[0]
        target = target if target is not None else generated[1]
    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            cache_dir = stack.enter_context(_scratch())
        suite = _Suite(
            method_cls, params or {}, host, pool, target, Path(cache_dir), attribute_aggregate
        )
        for name in names:
            suite.run(name)


def generated_pools(host: Host) -> tuple[Pool, Pool]:
    """The default pool (3 records of each of 10 task families, grouped by family) and target
    (4 unit conversions, none in the pool): small, varied and deterministic."""
    rows = make_records(3, seed=0)
    target_rows = make_records(4, seed=1, families=["units"], id_prefix="target", avoid=rows)
    pool = load_records_from_list(rows, host=host, group_field="family")
    target = load_records_from_list(target_rows, host=host, group_field="family")
    return pool, target


class _Suite:
    """One method under test, and the checks, each a ``check_<name>`` method."""

    def __init__(
        self,
        method_cls: type[Method],
        params: Mapping[str, Any],
        host: Host,
        pool: Pool,
        target: Pool,
        cache_dir: Path,
        attribute_aggregate: Aggregate | None,
    ) -> None:
        self.method_cls = method_cls
        self.label = f"method '{getattr(method_cls, 'name', method_cls.__name__)}'"
        self.values = params
        self.host = host
        self.pool = pool
        self.target = target
        self.store = cache_dir / "store"
        self.again = cache_dir / "again"
        self.aggregate = attribute_aggregate
        self.count = max(1, len(pool) // 6)
        self.tokens = max(1, int(pool.costs.sum()) // 4)
        self.check = ""

    def run(self, name: str) -> None:
        self.check = name
        try:
            getattr(self, f"check_{name}")()
        except ConformanceError:
            raise
        except Exception as exc:
            self.fail(f"raised {type(exc).__name__}: {exc}", cause=exc)

    def fail(self, observed: str, cause: BaseException | None = None) -> typing.NoReturn:
        raise ConformanceError(
            f"{self.label} fails conformance check '{self.check}': {observed}"
        ) from cause

    def expect(self, ok: bool, observed: Callable[[], str] | str) -> None:
        if not ok:
            self.fail(observed() if callable(observed) else observed)

    # -- running the method -------------------------------------------------------------

    @functools.cached_property
    def params(self) -> Any:
        """The parameters under test, built when a check first needs them (so a ``Params``
        that cannot be built fails that check, not the suite's set-up)."""
        return build_params(self.method_cls.Params, self.values, self.label)

    def method(self) -> Method:
        return self.method_cls(self.params)

    def method_target(self) -> Pool | None:
        return self.target if self.method_cls.needs_target else None

    def context(self, seed: int = 0, budget_records: int | None = None) -> Context:
        return Context(
            host=self.host, store_root=self.store, seed=seed, budget_records=budget_records
        )

    def objective(self) -> Objective:
        """The method's objective for a count budget of ``self.count``, as ``select`` asks."""
        return self.method().objective(
            self.pool, self.method_target(), self.context(budget_records=self.count)
        )

    def select(
        self,
        budget: Budget | int,
        *,
        method: Method | None = None,
        constraints: Constraints | None = None,
        seed: int = 0,
        store: Path | None = None,
        allow_empty: bool = False,
    ) -> Selection:
        return select(
            self.pool,
            method if method is not None else self.method(),
            budget,
            target=self.method_target(),
            constraints=constraints,
            seed=seed,
            allow_empty=allow_empty,
            cache_dir=store if store is not None else self.store,
            host=self.host,
        )

    def check_selection(self, selection: Selection, size: int | None = None) -> None:
        """What every selection must be: distinct pool positions whose ids it lists, the
        objective's value for every pool record (float64), weights for the selected ones."""
        indices = np.asarray(selection.indices)
        n = len(self.pool)
        self.expect(
            len(set(indices.tolist())) == len(indices)
            and all(0 <= i < n for i in indices.tolist()),
            lambda: f"selected positions {indices.tolist()} repeat or fall outside the pool",
        )
        self.expect(
            selection.ids == [self.pool[i].id for i in indices.tolist()],
            "the selection's ids are not the pool's ids at its positions",
        )
        if size is not None:
            self.expect(
                len(indices) == size,
                lambda: f"a count budget of {size} selected {len(indices)} records",
            )
        scores = np.asarray(selection.scores)
        self.expect(
            scores.shape == (n,) and scores.dtype == np.float64,
            lambda: f"scores are {scores.dtype} of shape {scores.shape}, not float64 of ({n},)",
        )
        if selection.weights is not None:
            weights = np.asarray(selection.weights)
            self.expect(
                weights.shape == (len(indices),)
                and bool(np.isfinite(weights).all() and (weights >= 0).all()),
                lambda: (
                    f"weights of shape {weights.shape} for {len(indices)} selected records, "
                    "or not finite and >= 0"
                ),
            )

    # -- the checks ---------------------------------------------------------------------

    def check_declaration(self) -> None:
        """A name users can type, a summary for ``selectkit methods``, a target flag, and
        parameters in a frozen dataclass whose every field has a default and help text."""
        cls = self.method_cls
        self.expect(issubclass(cls, Method), f"{cls!r} is not a subclass of selectkit's Method")
        name = getattr(cls, "name", None)
        self.expect(
            isinstance(name, str) and NAME.fullmatch(name) is not None,
            f"name {name!r} is not a name users can type after --method (letters, digits, _ "
            "and -, no ':')",
        )
        self.expect(bool(cls.summary().strip()), "its docstring is empty: no summary line")
        self.expect(
            isinstance(cls.needs_target, bool), f"needs_target is {cls.needs_target!r}, not bool"
        )
        budgets = cls.budgets
        self.expect(
            isinstance(budgets, tuple)
            and bool(budgets)
            and len(set(budgets)) == len(budgets)
            and set(budgets) <= set(BUDGET_UNITS),
            f"budgets {budgets!r} is not a tuple of distinct budget units: "
            f"{' and/or '.join(map(repr, BUDGET_UNITS))}",
        )
        params_cls = cls.Params
        self.expect(
            isinstance(params_cls, type) and dataclasses.is_dataclass(params_cls),
            f"Params {params_cls!r} is not a dataclass",
        )
        self.expect(
            params_cls.__dataclass_params__.frozen,  # type: ignore[attr-defined]
            f"Params {params_cls.__name__} is not frozen (@dataclass(frozen=True))",
        )
        self.check_fields(params_cls, "")
        params_cls()

    def check_fields(self, params_cls: type, prefix: str) -> None:
        """Every field has a default; a group (a dataclass-typed field, such as ``lora``) is
        frozen and its fields are checked the same way; every other field has help text."""
        hints = typing.get_type_hints(params_cls)  # build_params reads the declared types
        for f in dataclasses.fields(params_cls):
            name = prefix + f.name
            self.expect(
                f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING,
                f"parameter '{name}' has no default",
            )
            if is_group(hints[f.name]):
                self.expect(
                    hints[f.name].__dataclass_params__.frozen,
                    f"group '{name}' ({hints[f.name].__name__}) is not frozen",
                )
                self.check_fields(hints[f.name], f"{name}.")
                continue
            text = f.metadata.get("help")
            self.expect(
                isinstance(text, str) and bool(text.strip()),
                f"parameter '{name}' has no help text (metadata={{'help': ...}})",
            )

    def check_params_cli_round_trip(self) -> None:
        """Every parameter, written as ``key=value`` as a user types it (``-p``), reads back
        as the same value: each default on its own, then the parameters under test together."""
        defaults = self.method_cls.Params()
        for name in leaves(defaults):
            self.round_trip(defaults, [name])
        self.round_trip(self.params, list(leaves(self.params)))

    def check_params_config_round_trip(self) -> None:
        """Every parameter under test, written in a run file's ``[param]`` table as TOML
        (``select --config``), reads back as the same value."""
        import click

        from selectkit.cli import select_command
        from selectkit.commands.runconfig import read_run

        options = {p.name: p for p in select_command.params if isinstance(p, click.Option)}
        values = leaves(self.params)
        names = list(values)
        lines = [f"{name} = {toml_text(value)}" for name, value in values.items()]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "run.toml"
            path.write_text("[param]\n" + "\n".join(lines) + "\n", encoding="utf-8")
            try:
                typed = read_run(path, options)["param"]
                read = build_params(type(self.params), parse_assignments(typed), self.label)
            except SelectkitError as exc:
                self.fail(f"the run file's [param] table is refused: {exc}", cause=exc)
        self.compare(self.params, read, names, lambda name: toml_text(values[name]))

    def round_trip(self, params: Any, names: Sequence[str]) -> None:
        values = leaves(params)
        typed = [f"{name}={typed_text(values[name])}" for name in names]
        try:
            read = build_params(type(params), parse_assignments(typed), self.label)
        except SelectkitError as exc:
            self.fail(f"-p {' -p '.join(typed)} is refused: {exc}", cause=exc)
        self.compare(params, read, names, lambda name: f"'{name}={typed_text(values[name])}'")

    def compare(
        self, params: Any, read: Any, names: Sequence[str], written: Callable[[str], str]
    ) -> None:
        """Each of ``names`` (dotted inside groups) is the same value, of the same type, in
        ``read`` as in ``params``."""
        given, found = leaves(params), leaves(read)
        for name in names:
            value, back = given[name], found[name]
            self.expect(
                type(value) is type(back) and value == back,
                lambda name=name, value=value, back=back: (
                    f"parameter '{name}' = {value!r} written as {written(name)} reads back "
                    f"as {back!r}"
                ),
            )

    def check_objective(self) -> None:
        """An :class:`Objective` of one float64 value per pool record, none NaN, and an
        ``eligible`` mask of one bool per record if any."""
        objective = self.objective()
        n = len(self.pool)
        self.expect(
            isinstance(objective, Objective),
            lambda: f"objective() returned {type(objective).__name__}, not an Objective",
        )
        self.expect(len(objective) == n, lambda: f"{len(objective)} values for {n} records")
        values = objective.values
        self.expect(
            isinstance(values, np.ndarray) and values.shape == (n,) and values.dtype == np.float64,
            lambda: (
                f"values are {type(values).__name__} {getattr(values, 'dtype', '')} of "
                f"shape {getattr(values, 'shape', '?')}, not float64 of shape ({n},)"
            ),
        )
        nan = np.flatnonzero(np.isnan(values))
        self.expect(
            len(nan) == 0,
            lambda: f"{len(nan)} NaN values, the first of record '{self.pool[int(nan[0])].id}'",
        )
        eligible = objective.eligible
        if eligible is not None:
            self.expect(
                eligible.dtype == np.bool_ and eligible.shape == (n,),
                f"eligible is {eligible.dtype} of shape {eligible.shape}, not bool of ({n},)",
            )

    def check_nan_refused(self) -> None:
        """The method's objective with a NaN in it (a value, or a feature row) is refused:
        by the objective itself, or by ``select`` with a selectkit error; never selected from."""
        objective = self.objective()
        eligible = objective.eligible
        where = int(np.argmax(eligible)) if eligible is not None else 0
        try:
            poisoned = with_nan(objective, where)
        except (ValueError, SelectkitError):
            return  # the objective refuses NaN when it is made
        if poisoned is None:
            self.fail(
                f"cannot put a NaN into a {type(objective).__name__} (neither values nor "
                "features): give the objective kind a NaN check and extend with_nan"
            )
        try:
            picked = self.select(self.count, method=_Given(poisoned))
        except SelectkitError:
            return
        self.fail(
            f"a NaN in record {where}'s {type(objective).__name__} was not refused: "
            f"{picked.ids} were selected"
        )

    def check_same_seed_same_selection(self) -> None:
        """Two runs with one seed select the same ids with the same score and weight bytes:
        one with the store the other checks fill, one with a second store (computed again,
        unless another method already filled it)."""
        first = self.select(self.count, seed=0)
        second = self.select(self.count, seed=0, store=self.again)
        for selection in (first, second):
            self.check_selection(selection, self.count)
        self.expect(first.ids == second.ids, f"seed 0 selected {first.ids}, then {second.ids}")
        self.expect(
            first.scores.tobytes() == second.scores.tobytes(),
            lambda: (
                "seed 0 gave other scores the second time (largest difference "
                f"{np.nanmax(np.abs(first.scores - second.scores)):.3g})"
            ),
        )
        self.expect(
            _bytes(first.weights) == _bytes(second.weights)
            and first.group_weights == second.group_weights,
            "seed 0 gave other weights the second time",
        )

    def check_global_random_state(self) -> None:
        """Selecting (and attributing) leaves Python's, NumPy's and torch's global random
        states as it found them: a method's randomness comes from its seeds, and a user's
        own seeded code runs the same with or without a selection before it."""
        before = _random_states()
        self.select(self.count)
        if self.method_cls.attributes():
            self.method().attribute(self.pool, self.target, self.context())
        after = _random_states()
        changed = [name for name in before if not _same(before[name], after[name])]
        self.expect(not changed, f"the global random state of {', '.join(changed)} changed")

    def check_count_budget(self) -> None:
        """A count budget selects exactly that many distinct records."""
        self.check_selection(self.select(self.count), self.count)

    def check_constraints(self) -> None:
        """Quotas, required and excluded records hold, chosen against the method's own
        preferences: its two best records excluded, its worst required, the group of its next
        best capped at 0 and a group it ranks low given a minimum."""
        objective = self.objective()
        plan = binding_constraints(self.pool, objective, self.count)
        if plan is None:
            self.fail(
                f"the pool leaves too few eligible records to test constraints on: give a larger "
                f"pool (the method rules out {_ruled_out(objective)} of {len(self.pool)})"
            )
        constraints, budget = plan
        selection = self.select(budget, constraints=constraints)
        self.check_selection(selection, budget)
        chosen = set(selection.ids)
        self.expect(
            constraints.required <= chosen,
            lambda: f"required {sorted(constraints.required - chosen)} not selected",
        )
        self.expect(
            not constraints.excluded & chosen,
            lambda: f"excluded {sorted(constraints.excluded & chosen)} selected",
        )
        if objective.eligible is not None:
            dropped = [i for i in selection.indices.tolist() if not objective.eligible[i]]
            self.expect(
                not dropped,
                lambda: f"records {dropped} its own filter rules out were selected",
            )
        groups = [self.pool[i].group for i in selection.indices.tolist()]
        for group, quota in constraints.quotas.items():
            count = groups.count(group)
            low, high = quota.bounds(budget)
            self.expect(
                count >= low and (high is None or count <= high),
                f"quota {group}={quota} but {count} of group '{group}' selected",
            )

    def check_token_budget(self) -> None:
        """Token budgets are refused or honoured as the method declares (``budgets``): one
        that declares ``"tokens"`` selects records whose costs sum to at most the budget; one
        that does not is refused with a :class:`ParamError` naming it, before any work
        (nothing written to the store)."""
        budget = Budget.tokens(self.tokens)
        declared = self.method_cls.budgets
        if "tokens" in declared:
            try:
                selection = self.select(budget, allow_empty=True)
            except Exception as exc:
                self.fail(
                    f"declares budgets {declared!r} but a token budget ({budget}) raised "
                    f"{type(exc).__name__}: {exc}; a method that needs a number of records "
                    "declares budgets = ('items',)",
                    cause=exc,
                )
            self.check_selection(selection)
            used = int(self.pool.costs[selection.indices].sum())
            self.expect(
                used <= self.tokens,
                f"a budget of {budget} selected records costing {used} {self.pool.cost_unit}",
            )
            return
        with _scratch() as fresh:
            try:
                picked = self.select(budget, allow_empty=True, store=Path(fresh))
            except ParamError as refused:
                written = sorted(p.name for p in Path(fresh).iterdir())
                self.expect(
                    not written, f"refused a token budget ({refused}) only after writing {written}"
                )
                self.expect(
                    f"method '{self.method_cls.name}'" in str(refused),
                    f"refused a token budget without naming the method: {refused}",
                )
                return
        self.fail(
            f"declares budgets {declared!r} without 'tokens', yet a token budget ({budget}) "
            f"selected {picked.ids}"
        )

    def check_attribute(self) -> None:
        """``attribute`` gives a finite float64 ``(len(pool), len(target))`` array, the same
        bytes on every run; with ``attribute_aggregate``, the objective's values are its mean
        or sum over the target."""
        first, second = (
            self.method().attribute(self.pool, self.target, self.context()) for _ in range(2)
        )
        shape = (len(self.pool), len(self.target))
        self.expect(
            isinstance(first, np.ndarray) and first.shape == shape and first.dtype == np.float64,
            lambda: (
                f"attribute() gave {type(first).__name__} {getattr(first, 'dtype', '')} of "
                f"shape {getattr(first, 'shape', '?')}, not float64 of shape {shape}"
            ),
        )
        self.expect(bool(np.isfinite(first).all()), "attribute() has non-finite entries")
        self.expect(
            first.tobytes() == second.tobytes(), "attribute() gave other values the second time"
        )
        if self.aggregate is None:
            return
        folded = first.mean(axis=1) if self.aggregate == "mean" else first.sum(axis=1)
        values = self.method().objective(self.pool, self.target, self.context()).values
        scale = max(float(np.abs(folded).max()), np.finfo(np.float64).tiny)
        self.expect(
            np.allclose(values, folded, rtol=1e-5, atol=1e-6 * scale),
            lambda: (
                f"objective values are not the {self.aggregate} of attribute() over the "
                f"target (largest difference {np.abs(values - folded).max():.3g} at scale "
                f"{scale:.3g})"
            ),
        )


class _Given(Method):
    """A method that returns a given objective (a checked method's, altered by a check)."""

    name = "conformance-given"

    def __init__(self, objective: Objective) -> None:
        super().__init__()
        self.given = objective

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Objective:
        return self.given


def toml_text(value: Any) -> str:
    """``value`` as a run file writes it (TOML): ``"none"`` for None, which TOML cannot say."""
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # inf and nan are written as TOML writes them
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_text(item) for item in value) + "]"
    return json.dumps(os.fspath(value) if isinstance(value, os.PathLike) else str(value))


def typed_text(value: Any) -> str:
    """``value`` as a user types it after ``-p key=``: ``true``, ``none``, ``a,b``, ``0.1``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(typed_text(item) for item in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def with_nan(objective: Objective, position: int) -> Objective | None:
    """``objective`` with a NaN at pool ``position``: in its values (per-record kinds, which
    raise when made so) or in its feature rows (read into memory); ``None`` for a kind with
    neither."""
    if isinstance(objective, PerRecord):
        values = objective.values.copy()
        values[position] = np.nan
        return dataclasses.replace(objective, values=values)
    names = {f.name for f in dataclasses.fields(objective)}
    if "features" not in names:
        return None
    rows = as_rows(getattr(objective, "features"))  # noqa: B009 -- not every kind has it
    array = np.array(rows.read(0, rows.num_rows), dtype=np.float64)
    array[position, 0] = np.nan
    return dataclasses.replace(objective, features=array)  # type: ignore[call-arg]


def binding_constraints(
    pool: Pool, objective: Objective, count: int
) -> tuple[Constraints, int] | None:
    """Constraints that go against the method's own ranking (its values, best first, among the
    records its filter keeps) and the count budget they leave: the two best records excluded,
    the worst required, the next best's group capped at 0, a group with at least two records
    it ranks low given a minimum of two. ``None`` when too few records are eligible."""
    values = objective.values
    eligible = (
        objective.eligible if objective.eligible is not None else np.ones(len(pool), dtype=bool)
    )
    positions = np.flatnonzero(eligible)
    ranked = positions[np.lexsort((positions, -values[positions]))].tolist()
    if len(ranked) < 4:
        return None
    excluded, rest = ranked[:2], ranked[2:]
    required = rest[-1]
    codes, names = pool.group_codes()
    capped = next((codes[i] for i in rest if codes[i] >= 0 and codes[i] != codes[required]), -1)
    quotas: dict[str, Quota] = {}
    if capped >= 0:
        quotas[names[capped]] = Quota(0, 0)
    open_ = [i for i in rest if codes[i] != capped or capped < 0]
    budget = min(count, len(open_))
    members: dict[int, list[int]] = {}
    for rank, i in enumerate(open_):
        if codes[i] >= 0:
            members.setdefault(int(codes[i]), []).append(rank)
    low = [g for g, ranks in members.items() if len(ranks) >= 2 and g != codes[required]]
    if low and budget >= 3:
        group = max(low, key=lambda g: (members[g][0], g))  # its best record ranks lowest
        quotas[names[group]] = Quota(2)
    constraints = Constraints(
        quotas,
        required=frozenset({pool[required].id}),
        excluded=frozenset(pool[i].id for i in excluded),
    )
    return constraints, budget


def _scratch() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="selectkit-conformance-")


def _random_states() -> dict[str, Any]:
    """Python's, NumPy's and (when installed) torch's CPU global random states."""
    states: dict[str, Any] = {"random": random.getstate(), "numpy": np.random.get_state()}
    if importlib.util.find_spec("torch") is not None:
        import torch

        states["torch"] = torch.random.get_rng_state()
    return states


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "numpy"):  # a torch tensor
        return bool(np.array_equal(a.numpy(), b.numpy()))
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)


def _ruled_out(objective: Objective) -> int:
    return 0 if objective.eligible is None else int((~objective.eligible).sum())


def _bytes(values: np.ndarray | None) -> bytes | None:
    return None if values is None else np.asarray(values).tobytes()
