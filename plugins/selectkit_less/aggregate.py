"""Turning a pool-by-target similarity into one score per pool record, LESS-style."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selectkit.errors import BudgetError
from selectkit.scoring import subtask_matrix


def check_round_robin(num_subtasks: int, budget: int | None) -> None:
    """Round robin needs at least one record per subtask in the budget."""
    if budget is not None and budget < num_subtasks:
        raise BudgetError(
            f"round-robin aggregation gives each of the target's {num_subtasks} subtasks a "
            f"turn, but the budget is {budget} records; raise the budget or use "
            "aggregate=subtask_max"
        )


def round_robin_scores(per_subtask: np.ndarray) -> np.ndarray:
    """Scores whose top-k takes each subtask's best records in turn (rank 0 of every subtask,
    then rank 1, ...), so every subtask is represented; a record high in several subtasks
    counts at its best position. ``per_subtask`` is (records, subtasks)."""
    n, k = per_subtask.shape
    order = np.argsort(-per_subtask, axis=0, kind="stable")
    ranks = np.empty_like(order)
    ranks[order, np.arange(k)] = np.arange(n)[:, None]
    position = ranks * k + np.arange(k)
    return -position.min(axis=1).astype(np.float64)


def subtask_labels(labels: Sequence[str | None]) -> list[str]:
    """Target subtask labels with missing ones grouped together."""
    return [label if label is not None else "(none)" for label in labels]


def mean_by_subtask(similarity: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """(records, targets) similarities averaged within each subtask -> (records, subtasks)."""
    return similarity @ subtask_matrix(list(labels), similarity.shape[1])
