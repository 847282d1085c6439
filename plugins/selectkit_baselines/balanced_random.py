"""The ``balanced_random`` method: the same number of records from every group, at random
within each.

The balanced baseline of Ivison et al. (2025), "Large-Scale Data Selection for Instruction
Tuning": equal shares per source, where a source with fewer records than its share gives all
it has and the rest of the budget is shared among the others.
"""

from __future__ import annotations

import numpy as np

from selectkit.sdk import Context, Method, Pool, Scores


class BalancedRandom(Method):
    """Equal shares per group (records without a group are one more group), uniform at
    random within each; a group smaller than its share is taken whole and the others share
    the rest. Records are taken round by round: one from every group that still has some,
    in random order, then the next, so the solver's top scores are balanced shares for any
    count budget. Quotas still apply on top."""

    name = "balanced_random"
    budgets = ("items",)  # shares are counts of records

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        return Scores(balanced_scores(pool.group_codes()[0], context.seed))


def balanced_scores(codes: np.ndarray, seed: int) -> np.ndarray:
    """Scores whose top ``k`` are equal shares of every group code (``-1``: no group) for
    any ``k``: ``rounds - round + u``, where ``round`` is a record's place in a random order
    of its group and ``u`` a uniform draw in [0, 1) that orders the groups within a round."""
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(codes))
    grouped = shuffled[np.argsort(codes[shuffled], kind="stable")]  # by group, random within
    starts = np.flatnonzero(np.r_[True, np.diff(codes[grouped]) != 0])
    sizes = np.diff(np.r_[starts, len(codes)])
    rounds = np.empty(len(codes), dtype=np.float64)
    rounds[grouped] = np.arange(len(codes)) - np.repeat(starts, sizes)
    return (sizes.max(initial=0) - rounds) + rng.random(len(codes))
