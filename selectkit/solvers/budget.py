"""Budgets and constraints as the user states them, and their resolution against a pool.

Everything here is checked before any method runs, so an impossible request fails in
milliseconds with a message that says what to change, not after an hour of featurization.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from selectkit.errors import BudgetError

Unit = Literal["items", "tokens"]
#: The largest budget or quota amount accepted: 2**53, where floats stop counting exactly.
#: Far beyond any pool's records or tokens, and every amount below it fits the solvers' int64.
MAX_AMOUNT = 2**53


@dataclass(frozen=True)
class Budget:
    """How much to select: a count, a fraction of the pool, or a total cost in tokens.

    Parse the CLI forms with :meth:`parse`: ``500`` (records), ``5%`` (of the pool's records)
    and ``200000tok`` (total cost in the pool's cost unit).
    """

    kind: Literal["count", "fraction", "tokens"]
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("count", "fraction", "tokens"):
            raise BudgetError(f"budget kind must be count, fraction or tokens, not '{self.kind}'")
        if not math.isfinite(self.value) or self.value <= 0:
            raise BudgetError(f"a budget must be a positive, finite number, got {self.value}")
        if self.kind == "fraction" and self.value > 1:
            raise BudgetError(f"a budget fraction must be at most 100%, got {self.value:.2%}")
        if self.kind != "fraction" and self.value > MAX_AMOUNT:
            raise BudgetError(
                f"a {self.kind} budget of {self.value:g} is beyond any pool (the most is "
                f"{MAX_AMOUNT:,}); give the number of records or tokens you want"
            )
        if self.kind != "fraction" and self.value != int(self.value):
            raise BudgetError(f"a {self.kind} budget must be a whole number, got {self.value}")

    @classmethod
    def count(cls, n: int) -> Budget:
        return cls("count", n)

    @classmethod
    def fraction(cls, f: float) -> Budget:
        return cls("fraction", f)

    @classmethod
    def tokens(cls, n: int) -> Budget:
        return cls("tokens", n)

    @classmethod
    def parse(cls, text: str | int | float | Budget) -> Budget:
        """``500`` -> 500 records, ``5%`` -> 5% of records, ``200000tok`` -> 200,000 tokens."""
        if isinstance(text, Budget):
            return text
        if isinstance(text, int):
            return cls.count(text)
        if isinstance(text, float):
            return cls.fraction(text) if text < 1 else cls("count", text)
        raw = text.strip().lower().replace("_", "").replace(",", "")
        number = r"(\d+(?:\.\d+)?(?:e\d+)?)"
        if m := re.fullmatch(number + r"%", raw):
            return cls.fraction(float(m[1]) / 100)
        if m := re.fullmatch(number + r"\s*(tok|tokens)", raw):
            return cls.tokens(_whole(m[1], text))
        if m := re.fullmatch(number, raw):
            return cls.count(_whole(m[1], text))
        raise BudgetError(
            f"cannot read budget '{text}': use a count (500), a percentage (5%) "
            "or a token total (200000tok)"
        )

    @property
    def unit(self) -> Unit:
        return "tokens" if self.kind == "tokens" else "items"

    def limit(self, n_records: int) -> int:
        """The budget in its unit for a pool of ``n_records`` (fractions round to nearest)."""
        if self.kind == "fraction":
            return max(1, round(self.value * n_records))
        return int(self.value)

    def __str__(self) -> str:
        if self.kind == "fraction":
            return f"{self.value * 100:g}%"
        if self.kind == "tokens":
            return f"{int(self.value)}tok"
        return str(int(self.value))


def _whole(number: str, text: str) -> int:
    value = float(number)
    if not math.isfinite(value) or value > MAX_AMOUNT:
        raise BudgetError(
            f"budget '{text}' is beyond any pool (the most is {MAX_AMOUNT:,}); give the number "
            "of records or tokens you want"
        )
    if value != int(value):
        raise BudgetError(
            f"budget '{text}' must be a whole number of records or tokens (a share of the pool "
            "is a percentage: 50%)"
        )
    return int(value)


@dataclass(frozen=True)
class Quota:
    """Bounds on one group's share of the selection, in the budget's unit.

    Each bound is an absolute amount (records for count budgets, tokens for token budgets) or,
    when ``fraction`` is set for it, a fraction of the budget.
    """

    minimum: float = 0
    maximum: float | None = None
    min_is_fraction: bool = False
    max_is_fraction: bool = False

    @classmethod
    def parse(cls, text: str) -> Quota:
        """``MIN:MAX`` with either side empty or a percentage: ``10:50``, ``:30%``, ``5%:``."""
        if ":" not in text:
            raise BudgetError(f"quota '{text}' must be MIN:MAX, e.g. 10:50, :30% or 5%:")
        lo, hi = (part.strip() for part in text.split(":", 1))
        lo_value, lo_frac = _quota_bound(lo, text) if lo else (0.0, False)
        hi_value, hi_frac = _quota_bound(hi, text) if hi else (None, False)
        return cls(lo_value, hi_value, lo_frac, hi_frac)

    def bounds(self, limit: int) -> tuple[int, int | None]:
        """Absolute (min, max) for a budget of ``limit`` units; fractions of it round inward."""
        lo = math.ceil(self.minimum * limit - 1e-9) if self.min_is_fraction else int(self.minimum)
        if self.maximum is None:
            return lo, None
        hi = math.floor(self.maximum * limit + 1e-9) if self.max_is_fraction else int(self.maximum)
        return lo, hi

    def __str__(self) -> str:
        def show(value: float | None, frac: bool) -> str:
            if value is None:
                return ""
            return f"{value * 100:g}%" if frac else f"{value:g}"

        lo = show(self.minimum, self.min_is_fraction) if self.minimum else ""
        return f"{lo}:{show(self.maximum, self.max_is_fraction)}"


def _quota_bound(part: str, text: str) -> tuple[float, bool]:
    try:
        if part.endswith("%"):
            value = float(part[:-1]) / 100
            if not 0 <= value <= 1:
                raise ValueError
            return value, True
        value = float(part)
        if not 0 <= value <= MAX_AMOUNT or value != int(value):
            raise ValueError
        return value, False
    except ValueError:
        raise BudgetError(
            f"quota '{text}': '{part}' must be a whole number (at most {MAX_AMOUNT:,}) or a "
            "percentage from 0% to 100%"
        ) from None


@dataclass(frozen=True)
class Constraints:
    """Per-group quotas and records that must or must not be selected."""

    quotas: Mapping[str, Quota] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    excluded: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        quotas: Mapping[str, Quota | str] | Iterable[str] = (),
        required: Iterable[str] = (),
        excluded: Iterable[str] = (),
    ) -> Constraints:
        """From Python values or CLI strings (``GROUP=MIN:MAX``)."""
        parsed: dict[str, Quota] = {}
        if isinstance(quotas, Mapping):
            items = list(quotas.items())
        else:
            items = []
            for spec in quotas:
                if "=" not in spec:
                    raise BudgetError(f"quota '{spec}' must be GROUP=MIN:MAX, e.g. Github=10:50")
                name, _, bounds = spec.rpartition("=")
                items.append((name.strip(), bounds))
        for name, quota in items:
            if name in parsed:
                raise BudgetError(f"group '{name}' has more than one quota")
            parsed[name] = quota if isinstance(quota, Quota) else Quota.parse(quota)
        return cls(parsed, frozenset(required), frozenset(excluded))


@dataclass(frozen=True)
class Problem:
    """A budget and constraints resolved against one pool: arrays the solvers work on."""

    unit: Unit
    limit: int
    costs: np.ndarray
    group_codes: np.ndarray
    group_names: list[str]
    group_min: np.ndarray
    group_max: np.ndarray
    required: np.ndarray
    excluded: np.ndarray

    @property
    def size(self) -> int:
        return len(self.costs)

    @property
    def weights(self) -> np.ndarray:
        """What each record uses of the budget: 1 per record, or its cost for token budgets."""
        return self.costs if self.unit == "tokens" else np.ones_like(self.costs)

    @property
    def has_quotas(self) -> bool:
        return bool((self.group_min > 0).any() or (self.group_max < _NO_MAX).any())


_NO_MAX = np.iinfo(np.int64).max


def resolve(
    budget: Budget,
    constraints: Constraints,
    *,
    costs: np.ndarray,
    group_codes: np.ndarray,
    group_names: list[str],
    id_positions: Mapping[str, int],
) -> Problem:
    """Check a request against the pool and turn it into a :class:`Problem`.

    Raises :class:`BudgetError` for budgets larger than the pool, quotas on groups that do not
    exist or that cannot be met together, and contradictory required/excluded ids.
    """
    n = len(costs)
    if n == 0:
        raise BudgetError("the pool is empty: nothing to select from")
    if not np.array_equal(np.asarray(costs), np.round(costs)):
        raise BudgetError("record costs must be whole numbers (tokens or words)")
    costs = np.asarray(costs, dtype=np.int64)
    if (costs < 0).any():
        raise BudgetError("record costs must be non-negative")
    limit = budget.limit(n)
    weights = costs if budget.unit == "tokens" else np.ones(n, dtype=np.int64)
    if budget.kind != "tokens" and limit > n:
        raise BudgetError(f"budget {budget} asks for {limit} records but the pool has only {n}")
    unknown = sorted(set(constraints.quotas) - set(group_names))
    if unknown:
        known = ", ".join(group_names[:20]) or "none: pass --group-by FIELD"
        raise BudgetError(f"quota names group(s) {unknown} not in the pool; groups are: {known}")

    def mask_of(ids: frozenset[str], what: str) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        missing = sorted(i for i in ids if i not in id_positions)
        if missing:
            raise BudgetError(f"{what} id(s) not in the pool: {missing[:10]}")
        mask[[id_positions[i] for i in ids]] = True
        return mask

    required = mask_of(constraints.required, "required")
    excluded = mask_of(constraints.excluded, "excluded")
    if (both := required & excluded).any():
        raise BudgetError(f"{int(both.sum())} record(s) are both required and excluded")

    k = len(group_names)
    group_min = np.zeros(k, dtype=np.int64)
    group_max = np.full(k, _NO_MAX, dtype=np.int64)
    for name, quota in constraints.quotas.items():
        g = group_names.index(name)
        lo, hi = quota.bounds(limit)
        if hi is not None and lo > hi:
            raise BudgetError(f"quota for '{name}': minimum {lo} exceeds maximum {hi}")
        group_min[g] = lo
        group_max[g] = _NO_MAX if hi is None else hi

    problem = Problem(
        unit=budget.unit,
        limit=limit,
        costs=costs,
        group_codes=np.asarray(group_codes, dtype=np.int32),
        group_names=list(group_names),
        group_min=group_min,
        group_max=group_max,
        required=required,
        excluded=excluded,
    )
    _check_feasible(problem, weights)
    return problem


def rule_out(problem: Problem, mask: np.ndarray, why: str) -> Problem:
    """``problem`` with the records of ``mask`` excluded too, checked again: a method's own
    filter (``why`` names it) must not drop a required record or leave the budget unfillable."""
    clash = np.flatnonzero(mask & problem.required)
    if len(clash):
        raise BudgetError(
            f"{why} rules out {len(clash)} required record(s) (pool positions "
            f"{clash[:10].tolist()}); drop them from --require or relax the method's filter"
        )
    narrowed = replace(problem, excluded=problem.excluded | mask)
    try:
        _check_feasible(narrowed, problem.weights)
    except BudgetError as exc:
        raise BudgetError(
            f"{exc} ({why} ruled out {int(mask.sum())} of {problem.size} records)"
        ) from exc
    return narrowed


def _check_feasible(problem: Problem, weights: np.ndarray) -> None:
    unit = problem.unit
    names = problem.group_names
    codes = problem.group_codes
    eligible = ~problem.excluded
    required_total = int(weights[problem.required].sum())
    if required_total > problem.limit:
        raise BudgetError(
            f"required records use {required_total} {unit}, more than the budget of {problem.limit}"
        )
    if int(problem.group_min.sum()) > problem.limit:
        raise BudgetError(
            f"group minimums add up to {int(problem.group_min.sum())} {unit}, "
            f"more than the budget of {problem.limit}"
        )
    k = len(names)
    available = np.bincount(codes[eligible & (codes >= 0)], weights[eligible & (codes >= 0)], k)
    forced = np.bincount(
        codes[problem.required & (codes >= 0)], weights[problem.required & (codes >= 0)], k
    )
    for g, name in enumerate(names):
        if available[g] < problem.group_min[g]:
            raise BudgetError(
                f"group '{name}' needs at least {problem.group_min[g]} {unit} "
                f"but has only {int(available[g])} {unit} available"
            )
        if forced[g] > problem.group_max[g]:
            raise BudgetError(
                f"group '{name}' allows at most {problem.group_max[g]} {unit} "
                f"but its required records use {int(forced[g])}"
            )
    # Each group commits the larger of its minimum and its required records; the two checks
    # above look at each side alone and miss a budget that cannot hold both.
    committed = int(np.maximum(forced, problem.group_min).sum())
    committed += int(weights[problem.required & (codes < 0)].sum())
    if committed > problem.limit:
        raise BudgetError(
            f"required records and group minimums together need {committed} {unit}, "
            f"more than the budget of {problem.limit}"
        )
    if unit == "items":
        capacity = int(np.minimum(available, problem.group_max).sum())
        capacity += int((eligible & (codes < 0)).sum())
        if capacity < problem.limit:
            raise BudgetError(
                f"budget of {problem.limit} records cannot be filled: group maximums and "
                f"exclusions leave only {capacity} selectable records"
            )
