"""Exact selection under a count budget: top-k, with or without per-group minimums and maximums.

Why the quota greedy is exact. Once the required records are in, what is left is choosing how
many records ``c_g`` each group adds (``need_g <= c_g <= cap_g``, the counts summing to the
records still to pick), and for given counts the best choice is each group's top ``c_g``. The
value of a group's top ``c`` records is concave in ``c`` (its marginal values only go down), so
maximizing the separable concave sum under a total and box constraints is solved by starting every
group at its lower bound and adding the largest marginal value one record at a time (marginal
allocation). Those marginals are exactly the globally best remaining records among groups that are
still below their maximum, which is what :func:`select_count` takes.

Ties are broken by value descending, then pool index ascending, everywhere.
"""

from __future__ import annotations

import numpy as np

from selectkit.errors import BudgetError
from selectkit.solvers.budget import Problem


def top_mask(values: np.ndarray, k: int) -> np.ndarray:
    """Mask of the ``k`` largest ``values``, ties going to the lower position; O(n).

    A partition finds the k-th largest value ``t``; everything above ``t`` is in, and the
    first positions holding exactly ``t`` make up the rest, so the result never depends on how
    the partition happened to arrange equal values.
    """
    n = len(values)
    mask = np.zeros(n, dtype=bool)
    if k <= 0:
        return mask
    if k >= n:
        mask[:] = True
        return mask
    threshold = np.partition(values, n - k)[n - k]
    np.greater(values, threshold, out=mask)
    short = k - int(np.count_nonzero(mask))
    if short > 0:
        mask[np.flatnonzero(values == threshold)[:short]] = True
    return mask


def best_first(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``indices`` ordered by value descending, ties by index ascending (a stable sort)."""
    ordered = np.sort(np.asarray(indices, dtype=np.int64))
    return ordered[np.argsort(-values[ordered], kind="stable")]


def split_by_group(
    codes: np.ndarray, indices: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """``indices`` (ascending) regrouped by group code, with ungrouped records (-1) as group
    ``n_groups``: returns the regrouped positions and each group's start offset (length
    ``n_groups + 2``). Within a group the input order is kept."""
    buckets = bucket_of(codes[indices], n_groups)
    order = stable_argsort_small(buckets, n_groups + 1)
    counts = np.bincount(buckets, minlength=n_groups + 1)
    starts = np.concatenate(([0], np.cumsum(counts)))
    return indices[order], starts


def bucket_of(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Group codes with -1 (no group) mapped to ``n_groups``, so every record has a bucket."""
    return np.where(codes < 0, n_groups, codes).astype(np.int64, copy=False)


def stable_argsort_small(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Stable argsort of small non-negative integer keys; 16-bit keys let numpy use radix sort."""
    if n_keys <= np.iinfo(np.uint16).max:
        keys = keys.astype(np.uint16)
    return np.argsort(keys, kind="stable")


def select_count(values: np.ndarray, problem: Problem) -> np.ndarray:
    """Pool positions (ascending) of the best selection of exactly ``problem.limit`` records.

    Maximizes the sum of ``values`` with the required records in, the excluded ones out and
    every group's count within its ``[group_min, group_max]``. Raises :class:`BudgetError` when
    no selection satisfies all of that.
    """
    n_groups = len(problem.group_min)
    required = np.flatnonzero(problem.required)
    free = np.flatnonzero(~problem.required & ~problem.excluded)
    remaining = problem.limit - len(required)
    if remaining < 0:
        raise BudgetError(
            f"{len(required)} records are required but the budget is {problem.limit} records"
        )
    codes = problem.group_codes
    if n_groups == 0:
        return _with_required(required, free[top_mask(values[free], remaining)], remaining)

    req_codes = codes[required]
    forced = np.bincount(req_codes[req_codes >= 0], minlength=n_groups)
    need = np.maximum(problem.group_min - forced, 0)
    cap = problem.group_max - forced
    free_codes = codes[free]
    available = np.bincount(free_codes[free_codes >= 0], minlength=n_groups)
    _check_counts(problem, need, cap, available, remaining)
    limited = (need > 0) | (cap < available)
    if not limited.any():
        return _with_required(required, free[top_mask(values[free], remaining)], remaining)

    in_limited = np.zeros(len(free), dtype=bool)
    grouped = free_codes >= 0
    in_limited[grouped] = limited[free_codes[grouped]]
    open_pool = free[~in_limited]
    members, starts = split_by_group(codes, free[in_limited], n_groups)

    picks = [required]
    pool = [open_pool]
    for g in np.flatnonzero(limited):
        group = members[starts[g] : starts[g + 1]]
        first = top_mask(values[group], int(need[g]))
        picks.append(group[first])
        rest = group[~first]
        allowance = int(min(cap[g], available[g]) - need[g])
        pool.append(rest[top_mask(values[rest], allowance)])
    candidates = np.sort(np.concatenate(pool))
    extra = remaining - int(need.sum())
    if extra > len(candidates):
        raise BudgetError(
            f"budget of {problem.limit} records cannot be filled: group maximums and exclusions "
            f"leave only {len(candidates) + int(need.sum()) + len(required)} selectable records"
        )
    picks.append(candidates[top_mask(values[candidates], extra)])
    return np.sort(np.concatenate(picks))


def _with_required(required: np.ndarray, chosen: np.ndarray, remaining: int) -> np.ndarray:
    if len(chosen) < remaining:
        raise BudgetError(
            f"budget asks for {remaining + len(required)} records but only "
            f"{len(chosen) + len(required)} are selectable"
        )
    return np.sort(np.concatenate((required, chosen)))


def _check_counts(
    problem: Problem, need: np.ndarray, cap: np.ndarray, available: np.ndarray, remaining: int
) -> None:
    names = problem.group_names
    over = np.flatnonzero(cap < 0)
    if len(over):
        g = over[0]
        raise BudgetError(
            f"group '{names[g]}' allows at most {problem.group_max[g]} records but has "
            f"{int(problem.group_max[g] - cap[g])} required records"
        )
    short = np.flatnonzero(need > available)
    if len(short):
        g = short[0]
        raise BudgetError(
            f"group '{names[g]}' needs {problem.group_min[g]} records but only "
            f"{int(available[g]) + int(problem.group_min[g] - need[g])} are selectable"
        )
    if int(need.sum()) > remaining:
        raise BudgetError(
            f"required records and group minimums together need "
            f"{int(need.sum()) + problem.limit - remaining} records, more than the budget of "
            f"{problem.limit}"
        )
