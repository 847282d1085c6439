"""The ``kcenter`` method: records that leave no part of the pool far from a selected one.

Sener and Savarese (2018), "Active Learning for Convolutional Neural Networks: A Core-Set
Approach" (ICLR): choosing a subset whose training loss bounds the pool's amounts to a k-center
problem in feature space, which farthest-first traversal solves within a factor of 2 (Gonzalez
1985). For LLM fine-tuning data it is a standard diversity baseline: it covers the pool rather
than the typical or the targeted.

The features are the shared store's projected per-example LoRA gradients (``sgd``) at the last
warmup checkpoint (``checkpoints_used=all``: every checkpoint side by side, scaled by
``sqrt(learning rate)``). ``metric=cosine`` (the default) compares gradient directions: raw
gradient norms are largest for short and badly fitted examples, and Euclidean k-center would
spend its budget on them. The pool's features are held in memory (``n x dim`` float32); each
of the ``k`` steps is one pass over them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from selectkit import sdk
from selectkit.sdk import Context, GradientPipeline, Method, ParamError, Pool, PoolView, RowParams


@dataclass(frozen=True)
class KCenterParams(RowParams):
    """Parameters of ``kcenter``: the shared gradient and row parameters, plus the distance's."""

    metric: Literal["euclidean", "cosine"] = field(
        default="cosine",
        metadata={"help": "cosine: gradient directions; euclidean: gradients as they are"},
    )
    weighted: bool = field(
        default=False,
        metadata={"help": "put cluster sizes on the selection as training weights"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.metric not in ("euclidean", "cosine"):
            raise ParamError(f"metric must be euclidean or cosine, not '{self.metric}'")


class KCenter(Method):
    """k-center: diverse records by farthest-first traversal on gradients (Sener & Savarese 2018).

    No target needed; required records are the first centers."""

    name = "kcenter"
    Params = KCenterParams
    needs_target = False
    budgets = ("items",)  # farthest-first traversal takes count budgets

    def pool_views(self) -> tuple[PoolView, ...]:
        return (self.params.pool_view("sgd"),)

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> sdk.KCenter:
        p = self.params
        pipeline = GradientPipeline(p, context)
        pipeline.check(pool)
        pipeline.check_rows_fit(
            len(pool),
            p.checkpoints_used,
            what="kcenter",
            copies=2 if p.metric == "cosine" else 1,  # the rows, and their normalized copy
            extra=p.memory_mb << 20,
        )
        [rows] = pipeline.rows(pool, checkpoints_used=p.checkpoints_used)
        return sdk.KCenter(
            rows, metric=p.metric, weighted=p.weighted, memory_limit=p.memory_mb << 20
        )
