"""The ``craig`` method: a weighted coreset whose records' gradients cover the pool's.

Mirzasoleiman, Bilmes and Leskovec (2020), "Coresets for Data-efficient Training of Machine
Learning Models" (ICML). The weighted sum of the selected gradients approximates the full
gradient with an error bounded by ``Σ_i min_{j∈S} ||∇L_i − ∇L_j||``; minimizing that bound is
maximizing the facility location ``F(S) = Σ_i max_{j∈S} (D − ||∇L_i − ∇L_j||)``, which greedy
does within ``1 − 1/e`` of the best (selectkit's ``greedy`` solver, lazy). Each selected record
is weighted by its cluster size: the number of pool records whose gradient is closest to its
own, so the weights sum to the pool size.

CRAIG uses last-layer gradients at the current model; here the gradients are the shared
store's projected per-example LoRA gradients (``sgd``) at the last warmup checkpoint
(``checkpoints_used=all`` concatenates every checkpoint's, scaled by ``sqrt(learning rate)``,
so squared distances sum over checkpoints weighted by learning rate). Distances are exact in
the projected space, which keeps them within a small factor of the full-gradient distances
(Johnson–Lindenstrauss). The pool's features are held in memory (``n x dim`` float32); the
greedy costs O(n² · dim) for the first pass, so prefer a small ``dim`` (e.g. 512) for large
pools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from selectkit.sdk import (
    Context,
    FacilityLocation,
    GradientPipeline,
    Method,
    ParamError,
    Pool,
    PoolView,
    RowParams,
)

Metric = Literal["euclidean", "cosine"]


@dataclass(frozen=True)
class CRAIGParams(RowParams):
    """Parameters of ``craig``: the shared gradient and row parameters, plus the similarity's."""

    metric: Metric = field(
        default="euclidean",
        metadata={
            "help": "euclidean: CRAIG's D - ||f_i - f_j||; cosine: (1 + cos) / 2, which "
            "ignores gradient size"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.metric not in get_args(Metric):
            raise ParamError(f"metric must be euclidean or cosine, not '{self.metric}'")


class CRAIG(Method):
    """CRAIG: weighted coreset by facility location on gradients (Mirzasoleiman et al. 2020).

    Weights are cluster sizes; no target needed."""

    name = "craig"
    Params = CRAIGParams
    needs_target = False
    budgets = ("items",)  # the greedy facility-location solver takes count budgets

    def pool_views(self) -> tuple[PoolView, ...]:
        return (self.params.pool_view("sgd"),)

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> FacilityLocation:
        p = self.params
        pipeline = GradientPipeline(p, context)
        pipeline.check(pool)
        pipeline.check_rows_fit(
            len(pool),
            p.checkpoints_used,
            what="craig",
            copies=2,  # the rows, and their normalized or centred copy
            extra=p.memory_mb << 20,
        )
        [rows] = pipeline.rows(pool, checkpoints_used=p.checkpoints_used)
        return FacilityLocation(rows, metric=p.metric, memory_limit=p.memory_mb << 20)
