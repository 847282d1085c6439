"""Sampling without replacement in proportion to ``exp(log_weight)``, by Gumbel-top-k.

Adding independent standard Gumbel noise to each log-weight and sorting the perturbed keys in
descending order gives a sample without replacement whose successive draws are proportional to
the weights of what is left (the Gumbel-max trick applied repeatedly). The noise for all N
records comes from one ``np.random.default_rng(seed)`` call, so the keys depend only on the seed,
N and the log-weights. A log-weight of ``-inf`` (weight 0) stays ``-inf`` and sorts after every
finite key.
"""

from __future__ import annotations

import numpy as np

from selectkit.solvers.budget import Problem
from selectkit.solvers.knapsack import drop_worthless, fill_in_order, prepare, solve_tokens
from selectkit.solvers.topk import best_first, select_count


def gumbel_keys(log_weights: np.ndarray, seed: int) -> np.ndarray:
    """``log_weights`` plus one standard Gumbel draw per record from ``default_rng(seed)``."""
    noise = np.random.default_rng(seed).gumbel(size=len(log_weights))
    return log_weights + noise


def key_order(keys: np.ndarray, indices: np.ndarray | None = None) -> np.ndarray:
    """Positions (all, or ``indices``) by key descending, ties by position ascending."""
    if indices is None:
        return np.argsort(-keys, kind="stable")
    return best_first(keys, indices)


def take_by_count(keys: np.ndarray, problem: Problem) -> np.ndarray:
    """Exactly ``problem.limit`` records: the top keys under the group count quotas (the same
    exact quota greedy as for scores), in key order."""
    return key_order(keys, select_count(keys, problem))


def take_by_tokens(keys: np.ndarray, problem: Problem) -> tuple[np.ndarray, bool]:
    """Sequential sampling under a token budget, in key order.

    Each group below its minimum first takes its records in key order (skipping records that
    would pass its maximum or the budget); then the walk goes down the global key order taking
    every record that still fits, until the budget is spent. Zero-weight records (key ``-inf``)
    are only taken to meet a minimum; zero-cost records with a finite key are always taken.

    Returns the records in key order and whether the walk met every minimum on its own. When it
    did not (record sizes that do not add up to the bounds), the selection instead maximizes the
    sum of the shifted keys exactly, which still prefers high keys and meets every quota.
    """
    finite = np.isfinite(keys)
    ks = prepare(keys, problem, finite)
    local = ks.values
    order = np.argsort(-local, kind="stable")
    zero_weight = ~np.isfinite(local)
    taken, met = fill_in_order(ks, order, ~zero_weight)
    if met:
        taken = drop_worthless(ks, taken, zero_weight)
        selected = np.concatenate((ks.fixed, ks.items[taken]))
        return key_order(keys, selected), True
    # Perturb-and-MAP fallback: finite keys shifted to at least 1, -inf made 0 (never wanted).
    low = float(keys[finite].min()) if finite.any() else 0.0
    shifted = np.where(finite, keys - low + 1.0, 0.0)
    outcome = solve_tokens(shifted, problem, gap_tolerance=0.0)
    return key_order(keys, outcome.selected), False
