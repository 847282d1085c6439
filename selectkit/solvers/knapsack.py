"""Token budgets: the 0/1 knapsack with per-group token bounds.

The exact path (:func:`solve_tokens`) is

1. :func:`prepare`: required records in, excluded out, zero-cost records worth having in; what
   is left are the *free* items with a positive cost.
2. :func:`relax`: the exact LP relaxation. A group's best value as a function of the tokens it
   gets is concave and piecewise linear along its ratio order (value per token, descending), so
   the LP gives every group its minimum in ratio order and then hands out the remaining budget
   globally by ratio, never past a group's maximum. Each group's last item and the global break
   item may be fractional. The LP duals (a budget price and one price per group) give every item
   a reduced cost and a dual bound equal to the LP optimum.
3. :func:`fill_in_order`: an integral selection in the same order (minimums first, allowed to
   overshoot a minimum but never a maximum or the budget; then the budget in global order,
   skipping items that do not fit).
4. If the greedy is further from the LP bound than ``gap_tolerance``, or misses a minimum,
   reduced-cost fixing keeps only the items whose reduced cost is smaller than
   ``bound - incumbent`` (any solution that moves another item off its LP value is provably no
   better than the incumbent) and HiGHS solves that small core exactly.

Ties: ratio descending, then value descending, then pool index ascending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selectkit.errors import BudgetError
from selectkit.solvers import milp
from selectkit.solvers.budget import Problem
from selectkit.solvers.topk import bucket_of, stable_argsort_small, top_mask

_NO_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Knapsack:
    """A token problem reduced to its free items; every array below is aligned with ``items``.

    ``need``/``cap`` are per bucket (groups, then one bucket for ungrouped records): the tokens
    the free items must still add to reach the group minimum, and may add at most (never more
    than ``room``). ``fixed`` are pool positions selected whatever the free items do.
    """

    items: np.ndarray
    values: np.ndarray
    costs: np.ndarray
    buckets: np.ndarray
    need: np.ndarray
    cap: np.ndarray
    room: int
    fixed: np.ndarray
    fixed_value: float
    fixed_cost: int

    @property
    def n_buckets(self) -> int:
        return len(self.need)

    def bucket_totals(self, mask: np.ndarray) -> np.ndarray:
        """Tokens per bucket of the free items in ``mask``."""
        totals = np.bincount(self.buckets[mask], self.costs[mask], self.n_buckets)
        return totals.astype(np.int64)

    def value_of(self, taken: np.ndarray) -> float:
        return self.fixed_value + float(self.values[taken].sum())


def prepare(values: np.ndarray, problem: Problem, take_zero_cost: np.ndarray) -> Knapsack:
    """Split a token problem into fixed records and free items.

    ``take_zero_cost`` says which free zero-cost records to select (they use no budget, so they
    are in or out on their own merit). Raises :class:`BudgetError` when required records and
    group minimums cannot fit together.
    """
    n_groups = len(problem.group_min)
    costs = problem.costs
    free = ~problem.excluded & ~problem.required
    fixed = np.flatnonzero(problem.required | (free & (costs == 0) & take_zero_cost))
    items = np.flatnonzero(free & (costs > 0))
    fixed_cost = int(costs[fixed].sum())
    room = problem.limit - fixed_cost
    names = [*problem.group_names, "(no group)"]
    if room < 0:
        raise BudgetError(
            f"required records use {fixed_cost} tokens, more than the budget of {problem.limit}"
        )
    all_buckets = bucket_of(problem.group_codes, n_groups)
    req = problem.required
    forced = np.bincount(all_buckets[req], costs[req], n_groups + 1).astype(np.int64)
    group_min = np.append(problem.group_min, 0).astype(np.int64)
    group_max = np.append(problem.group_max, _NO_MAX).astype(np.int64)
    need = np.maximum(group_min - forced, 0)
    over = np.flatnonzero(forced > group_max)
    if len(over):
        g = over[0]
        raise BudgetError(
            f"group '{names[g]}' allows at most {group_max[g]} tokens but its required records "
            f"use {forced[g]}"
        )
    cap = np.minimum(group_max - forced, room)
    buckets = all_buckets[items]
    item_costs = costs[items]
    available = np.bincount(buckets, item_costs, n_groups + 1)
    short = np.flatnonzero(need > available)
    if len(short):
        g = short[0]
        raise BudgetError(
            f"group '{names[g]}' needs at least {group_min[g]} tokens but its selectable "
            f"records have only {int(available[g] + forced[g])}"
        )
    if int(need.sum()) > room:
        raise BudgetError(
            f"required records and group minimums together need {int(need.sum()) + fixed_cost} "
            f"tokens, more than the budget of {problem.limit}"
        )
    return Knapsack(
        items=items,
        values=values[items],
        costs=item_costs,
        buckets=buckets,
        need=need,
        cap=cap,
        room=room,
        fixed=fixed,
        fixed_value=float(values[fixed].sum()),
        fixed_cost=fixed_cost,
    )


def ratio_order(ks: Knapsack) -> np.ndarray:
    """Free items by value per token descending, then value descending, then index ascending."""
    ratio = ks.values / ks.costs
    order = np.argsort(-ratio, kind="stable")
    sorted_ratio = ratio[order]
    if (sorted_ratio[1:] == sorted_ratio[:-1]).any():  # equal ratios: break by value first
        order = np.lexsort((-ks.values, -ratio))
    return order


def grouped(ks: Knapsack, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``order`` regrouped by bucket (keeping it within each bucket), and bucket start offsets."""
    regrouped = order[stable_argsort_small(ks.buckets[order], ks.n_buckets)]
    counts = np.bincount(ks.buckets, minlength=ks.n_buckets)
    return regrouped, np.concatenate(([0], np.cumsum(counts)))


@dataclass(frozen=True)
class Relaxation:
    """The LP optimum ``x`` (per free item), its value ``bound`` (fixed records included), and
    the dual solution: budget price ``price``, per-bucket ``group_price``, per-item ``reduced``
    cost and ``dual_bound`` (equal to ``bound`` up to rounding; valid whatever the rounding)."""

    x: np.ndarray
    bound: float
    price: float
    group_price: np.ndarray
    reduced: np.ndarray
    dual_bound: float


def relax(ks: Knapsack, order: np.ndarray) -> Relaxation:
    """Solve the LP relaxation exactly (``order`` is :func:`ratio_order`) and read off duals.

    All token amounts stay integers; only the final fractions are floats.
    """
    m = len(ks.items)
    ratio = ks.values / ks.costs
    by_group, starts = grouped(ks, order)
    counts = np.diff(starts)
    cost_g = ks.costs[by_group]
    bucket_g = ks.buckets[by_group]
    running = np.cumsum(cost_g)
    base = np.concatenate(([0], running))[starts[:-1]]
    after = running - np.repeat(base, counts)
    before = after - cost_g
    need_g = ks.need[bucket_g]
    cap_g = ks.cap[bucket_g]
    # Tokens of each item that meet its group's minimum, and that the global phase may add.
    for_min = np.clip(need_g - before, 0, cost_g)
    open_ = np.maximum(np.minimum(cap_g, after) - np.maximum(need_g, before), 0)
    open_[ratio[by_group] <= 0] = 0
    taken = np.empty(m, dtype=np.int64)
    taken[by_group] = for_min
    open_item = np.empty(m, dtype=np.int64)
    open_item[by_group] = open_

    # Global phase: open pieces in ratio order until the budget runs out.
    room = ks.room - int(for_min.sum())
    pieces = open_item[order]
    start = np.cumsum(pieces) - pieces
    took = np.clip(room - start, 0, pieces)
    taken[order] += took
    partial = np.flatnonzero(took < pieces)
    price = float(ratio[order[partial[0]]]) if len(partial) else 0.0
    x = taken / ks.costs
    bound = ks.fixed_value + float(ks.values @ x) if m else ks.fixed_value

    # Group prices: any value between the ratio of the group's first item not fully in and of
    # its last item fully in keeps complementary slackness; the one nearest the budget price
    # keeps the group's bound duals at zero whenever its bounds do not bind.
    x_g = x[by_group]
    full = x_g >= 1.0
    n_full = np.bincount(bucket_g[full], minlength=ks.n_buckets)
    ratio_g = ratio[by_group]
    lo = np.full(ks.n_buckets, -np.inf)
    hi = np.full(ks.n_buckets, np.inf)
    first_out = starts[:-1] + n_full
    has_next = n_full < counts
    lo[has_next] = ratio_g[first_out[has_next]]
    has_prev = n_full > 0
    hi[has_prev] = ratio_g[first_out[has_prev] - 1]
    fractional = has_next.copy()
    fractional[has_next] = x_g[first_out[has_next]] > 0
    hi[fractional] = lo[fractional]
    group_price = np.clip(price, lo, hi)
    reduced = ks.values - ks.costs * group_price[ks.buckets]

    above = np.maximum(group_price - price, 0.0)  # duals of the group maximums
    below = np.maximum(price - group_price, 0.0)  # duals of the group minimums
    dual_bound = (
        ks.fixed_value
        + price * ks.room
        + float(above @ ks.cap.astype(np.float64))
        - float(below @ ks.need.astype(np.float64))
        + float(np.maximum(reduced, 0.0).sum())
    )
    return Relaxation(x, bound, price, group_price, reduced, dual_bound)


def fill_in_order(
    ks: Knapsack,
    order: np.ndarray,
    fill: np.ndarray,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """An integral selection of free items in ``order``; returns (taken mask, minimums met).

    Starting from ``start`` (default: nothing), each group below its minimum takes its items in
    ``order`` while it is below the minimum, skipping items that would pass its maximum or the
    budget (the last one may overshoot the minimum). Then the rest of the budget goes to the items
    allowed by ``fill`` in ``order``, skipping any that do not fit the budget or their group.
    """
    taken = np.zeros(len(ks.items), dtype=bool) if start is None else start.copy()
    used = ks.bucket_totals(taken)
    room = ks.room - int(used.sum())
    by_group, starts = grouped(ks, order)
    for g in np.flatnonzero(used < ks.need):
        members = by_group[starts[g] : starts[g + 1]]
        members = members[~taken[members]]
        pos, added = walk_to(
            ks.costs[members], min(int(ks.cap[g] - used[g]), room), ks.need[g] - used[g]
        )
        taken[members[pos]] = True
        used[g] += added
        room -= added
    met = bool((used >= ks.need).all())
    candidates = order[fill[order] & ~taken[order]]
    pos = walk_many(ks.costs[candidates], ks.buckets[candidates], room, ks.cap - used)
    taken[candidates[pos]] = True
    return taken, met


def drop_worthless(ks: Knapsack, taken: np.ndarray, worthless: np.ndarray) -> np.ndarray:
    """Unselect ``worthless`` free items that no group minimum needs any more, worst value
    first (ties: higher index first), e.g. a value-0 record a minimum needed before the fill
    phase added better records to the same group."""
    taken = taken.copy()
    candidates = taken & worthless
    if not candidates.any():
        return taken
    used = ks.bucket_totals(taken)
    for b in np.unique(ks.buckets[candidates]):
        surplus = int(used[b] - ks.need[b])
        if surplus <= 0:
            continue
        members = np.flatnonzero(candidates & (ks.buckets == b))
        members = members[np.lexsort((-members, ks.values[members]))]
        pos, _ = walk_to(ks.costs[members], surplus, surplus + 1)
        taken[members[pos]] = False
    return taken


def walk_to(costs: np.ndarray, room: int, target: int) -> tuple[np.ndarray, int]:
    """Walk positive ``costs`` in order, taking each item that fits in ``room`` while the total is
    below ``target``; returns the positions taken and their total."""
    pos = np.arange(len(costs))
    taken: list[np.ndarray] = []
    total = 0
    while total < target and len(pos):
        pos = pos[costs[pos] <= room - total]
        if not len(pos):
            break
        running = np.cumsum(costs[pos])
        stop_room = int(np.searchsorted(running, room - total, side="right"))
        stop_target = int(np.searchsorted(running - costs[pos], target - total, side="left"))
        stop = min(stop_room, stop_target)
        taken.append(pos[:stop])
        total += int(running[stop - 1]) if stop else 0
        if stop_target <= stop_room:
            break
        pos = pos[stop + 1 :]  # this item no longer fits, and rooms only shrink
    return (np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)), total


def walk_many(
    costs: np.ndarray, buckets: np.ndarray, room: int, bucket_room: np.ndarray
) -> np.ndarray:
    """Walk positive ``costs`` in order, taking each item that fits both the budget ``room`` and
    its bucket's room; returns the positions taken.

    Vectorized in rounds: each round keeps the items that still fit on their own, takes the
    longest prefix that fits as a whole, and drops the item that broke it (rooms only shrink, so
    it can never fit again).
    """
    bucket_room = np.asarray(bucket_room, dtype=np.int64).copy()
    pos = np.arange(len(costs))
    taken: list[np.ndarray] = []
    while len(pos):
        c = costs[pos]
        b = buckets[pos]
        fits = (c <= room) & (c <= bucket_room[b])
        pos, c, b = pos[fits], c[fits], b[fits]
        if not len(pos):
            break
        running = np.cumsum(c)
        stop = int(np.searchsorted(running, room, side="right"))
        window = min(stop + 1, len(pos))
        stop = min(stop, _first_overflow(c[:window], b[:window], bucket_room))
        taken.append(pos[:stop])
        if stop:
            room -= int(running[stop - 1])
            bucket_room -= np.bincount(b[:stop], c[:stop], len(bucket_room)).astype(np.int64)
        if stop == len(pos):
            break
        pos = pos[stop + 1 :]
    return np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)


def _first_overflow(costs: np.ndarray, buckets: np.ndarray, bucket_room: np.ndarray) -> int:
    """First position where a bucket's running total (in sequence order) passes its room."""
    order = stable_argsort_small(buckets, len(bucket_room))
    sorted_b = buckets[order]
    running = np.cumsum(costs[order])
    new_run = np.flatnonzero(np.diff(sorted_b)) + 1
    run_start = np.zeros(len(order), dtype=np.int64)
    run_start[new_run] = new_run
    run_start = np.maximum.accumulate(run_start)
    before_run = np.concatenate(([0], running))[run_start]
    over = (running - before_run) > bucket_room[sorted_b]
    return int(order[over].min()) if over.any() else len(costs)


@dataclass
class Outcome:
    """What a token solve chose (pool positions), its value, bound and bookkeeping."""

    selected: np.ndarray
    objective: float
    bound: float | None
    optimal: bool
    details: dict[str, Any] = field(default_factory=dict)


def solve_tokens(
    values: np.ndarray,
    problem: Problem,
    *,
    gap_tolerance: float = 1e-4,
    time_limit: float | None = 60.0,
) -> Outcome:
    """Maximize the sum of ``values`` under a token budget and group token quotas.

    Records with value <= 0 are only taken to meet a group minimum; zero-cost records with a
    positive value are always taken. Returns the greedy answer when it is within
    ``gap_tolerance`` of the LP bound, else the MILP answer on the reduced-cost core.
    """
    ks = prepare(values, problem, values > 0)
    order = ratio_order(ks)
    lp = relax(ks, order)
    worthless = ks.values <= 0
    taken, met = fill_in_order(ks, order, ~worthless)
    taken = drop_worthless(ks, taken, worthless)
    incumbent = ks.value_of(taken) if met else -math.inf
    details: dict[str, Any] = {
        "lp_bound": lp.bound,
        "dual_bound": lp.dual_bound,
        "greedy_objective": incumbent if met else None,
        "free_items": len(ks.items),
        "milp_variables": 0,
    }
    upper = min(lp.bound, lp.dual_bound)
    if met and relative_gap(upper, incumbent) <= gap_tolerance:
        details["path"] = "greedy"
        return _outcome(ks, taken, upper, details, incumbent)

    details["path"] = "milp"
    core = _CoreSolver(ks, lp, gap_tolerance, time_limit)
    explored: np.ndarray | None = None
    if not met:
        taken, _, explored = core.find_incumbent()
        taken = drop_worthless(ks, taken, worthless)
        incumbent = ks.value_of(taken)
    fixed = core.core_for(incumbent)
    if explored is not None and not (fixed & ~explored).any():
        proven = max(incumbent, core.bounds[-1])
    else:
        better, proven_inside = core.solve(fixed)
        if better is not None:
            better = drop_worthless(ks, better, worthless)
        if better is not None and ks.value_of(better) > incumbent:
            taken, incumbent = better, ks.value_of(better)
        proven = max(incumbent, proven_inside)
    details.update(core.report())
    return _outcome(ks, taken, min(upper, proven), details, incumbent)


def relative_gap(bound: float, objective: float) -> float:
    """The gap :class:`~selectkit.solvers.base.Solution` reports, for the same numbers."""
    return max(0.0, bound - objective) / max(abs(bound), 1e-12)


def _outcome(
    ks: Knapsack, taken: np.ndarray, bound: float, details: dict[str, Any], objective: float
) -> Outcome:
    selected = np.concatenate((ks.fixed, ks.items[taken]))
    bound = max(bound, objective)
    optimal = bound - objective <= 1e-9 * max(1.0, abs(bound))
    return Outcome(np.sort(selected), objective, bound, optimal, details)


class _CoreSolver:
    """Reduced-cost fixing around an LP solution, and the MILP on what is left."""

    def __init__(
        self, ks: Knapsack, lp: Relaxation, gap_tolerance: float, time_limit: float | None
    ) -> None:
        self.ks = ks
        self.lp = lp
        self.gap_tolerance = gap_tolerance
        self.time_limit = time_limit
        self.sizes: list[int] = []
        self.statuses: list[str] = []
        self.bounds: list[float] = []

    def core_for(self, incumbent: float) -> np.ndarray:
        """Items whose reduced cost is too small to fix: |d| <= dual bound - incumbent."""
        slack = max(self.lp.dual_bound - incumbent, 0.0)
        slack += 1e-9 * max(1.0, abs(self.lp.dual_bound))
        return np.abs(self.lp.reduced) <= slack

    def find_incumbent(self) -> tuple[np.ndarray, float, np.ndarray]:
        """When the greedy misses a minimum: MILP on growing cores of the smallest reduced
        costs (the rest at their LP values) until one is feasible."""
        m = len(self.ks.items)
        size = min(m, max(1000, 20 * self.ks.n_buckets))
        while True:
            core = top_mask(-np.abs(self.lp.reduced), size)
            taken, _ = self.solve(core)
            if taken is not None:
                return taken, self.ks.value_of(taken), core
            if size >= m:
                if self.statuses[-1] == "infeasible":
                    raise BudgetError(
                        "no selection fits the token budget and meets every group's token "
                        "minimum and maximum (the records' sizes do not add up to the bounds)"
                    )
                raise BudgetError(
                    f"the MILP found no selection within time_limit={self.time_limit}s "
                    f"(status {self.statuses[-1]}); raise time_limit"
                )
            size = min(m, size * 8)

    def solve(self, core: np.ndarray) -> tuple[np.ndarray | None, float]:
        """MILP over ``core`` with every other item at its LP value (1 if its reduced cost is
        positive). Returns the selection (or None) and a bound on every selection that agrees
        with the fixing."""
        ks, lp = self.ks, self.lp
        ones = ~core & (lp.reduced > 0)
        used = ks.bucket_totals(ones)
        result = milp.solve_binary(
            ks.values[core],
            ks.costs[core],
            ks.buckets[core],
            total=ks.room - int(used.sum()),
            need=np.maximum(ks.need - used, 0),
            cap=ks.cap - used,
            time_limit=self.time_limit,
            rel_gap=self.gap_tolerance,
        )
        self.sizes.append(int(core.sum()))
        self.statuses.append(result.status)
        base = ks.value_of(ones)
        if result.status == "infeasible":
            inside = -math.inf
        elif result.bound is None:
            inside = math.inf
        else:
            inside = base + result.bound
        self.bounds.append(inside)
        if result.x is None:
            return None, inside
        taken = ones.copy()
        taken[np.flatnonzero(core)[result.x]] = True
        return taken, inside

    def report(self) -> dict[str, Any]:
        return {
            "milp_variables": self.sizes[-1] if self.sizes else 0,
            "milp_runs": len(self.sizes),
            "milp_status": self.statuses[-1] if self.statuses else None,
            "fixed_by_reduced_cost": len(self.ks.items) - (self.sizes[-1] if self.sizes else 0),
        }
