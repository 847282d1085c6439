"""The ``less`` method.

Xia, Malladi, Gururangan, Arora and Chen (2024), "LESS: Selecting Influential Data for
Targeted Instruction Tuning" (ICML). Warm up a LoRA adapter on a random 5% of the pool; at each
warmup checkpoint, take Adam-preconditioned, randomly projected LoRA gradients of the pool and
plain (SGD) gradients of the target; score each pool example by its cosine similarity to the
target, summed over checkpoints weighted by each checkpoint's average learning rate; aggregate
over the target as the mean within each target subtask, then the max across subtasks; the solver
takes the top scores under the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from selectkit.data.fields import MISSING, get_field, is_empty
from selectkit.sdk import (
    Context,
    GradientParams,
    GradientPipeline,
    Method,
    ParamError,
    Pool,
    PoolView,
    Scores,
    iter_similarity,
    learning_rates,
    score_pool,
    similarity_matrix,
)
from selectkit_less.aggregate import (
    check_round_robin,
    mean_by_subtask,
    round_robin_scores,
    subtask_labels,
)

Aggregate = Literal["subtask_max", "mean", "max", "round_robin"]


@dataclass(frozen=True)
class LESSParams(GradientParams):
    """Parameters of ``less``; defaults follow the paper except the LoRA rank (8, not 128)."""

    aggregate: Aggregate = field(
        default="subtask_max",
        metadata={
            "help": "subtask_max: mean within each target subtask, then max (LESS); mean or max "
            "over all targets; round_robin: every subtask's best records in turn"
        },
    )
    subtask_field: str = field(
        default="",
        metadata={
            "help": "field of the target records naming their subtask (dotted paths allowed); "
            "empty: the target's groups, or one subtask when it has none"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.aggregate not in get_args(Aggregate):
            raise ParamError(
                f"aggregate must be one of {list(get_args(Aggregate))}, not '{self.aggregate}'"
            )


class LESS(Method):
    """LESS: Adam-preconditioned LoRA-gradient similarity to the target (Xia et al. 2024)."""

    name = "less"
    Params = LESSParams
    needs_target = True

    def pool_views(self) -> tuple[PoolView, ...]:
        return (self.params.pool_view("adam"),)

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        assert target is not None
        params: LESSParams = self.params
        labels = self._subtasks(target)
        if params.aggregate == "round_robin":
            check_round_robin(len(set(labels)), context.budget_records)
        pool_sets, target_sets = GradientPipeline(self.params, context).pool_and_target_features(
            pool, target, "adam"
        )
        rates = learning_rates(pool_sets)
        if params.aggregate == "round_robin":
            per_subtask = np.concatenate(
                [
                    mean_by_subtask(chunk.cpu().numpy(), labels)
                    for _, chunk in iter_similarity(pool_sets, target_sets, rates)
                ]
            )
            return Scores(round_robin_scores(per_subtask))
        values = score_pool(
            pool_sets,
            target_sets,
            rates,
            aggregate=params.aggregate,
            subtasks=labels if params.aggregate == "subtask_max" else None,
            progress=context.progress,
        )
        return Scores(values)

    def attribute(self, pool: Pool, target: Pool, context: Context) -> np.ndarray:
        """The learning-rate-weighted cosine of every pool record with every target example,
        before LESS aggregates over the target."""
        pool_sets, target_sets = GradientPipeline(self.params, context).pool_and_target_features(
            pool, target, "adam"
        )
        return similarity_matrix(
            pool_sets, target_sets, learning_rates(pool_sets), progress=context.progress
        )

    def _subtasks(self, target: Pool) -> list[str]:
        name = self.params.subtask_field
        if not name:
            return subtask_labels(target.groups)
        labels = []
        for record in target:
            value = get_field(record.raw, name)
            if value is MISSING or is_empty(value):
                raise ParamError(
                    f"{record.source or '<target>'}:{record.line}: target record '{record.id}' "
                    f"has no field '{name}' (subtask_field)"
                )
            labels.append(str(value))
        return labels
