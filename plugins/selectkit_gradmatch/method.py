"""The ``gradmatch`` method: gradient matching with non-negative weights.

Killamsetty, Sivasubramanian, Ramakrishnan, De, Iyer (2021), "GRAD-MATCH: Gradient Matching
based Data Subset Selection for Efficient Deep Model Training" (ICML). Choose records ``S`` and
weights ``w >= 0`` so that ``Σ_{i∈S} w_i ∇L_i`` is as close as possible to the gradient of the
target loss (the validation set's, or the whole pool's), by orthogonal matching pursuit with a
non-negative least-squares refit (selectkit's ``omp`` solver).

Gradients are the shared store's projected per-example LoRA gradients (``sgd``): a random
projection keeps inner products and norms in expectation, so the matching error in the
projected space estimates the error in the full gradient space.

Scale. The solver matches ``k · mean target gradient`` for a selection of ``k`` records, so the
weights average about 1 at any budget and a weighted loss over the selection has the scale of
an ordinary mean loss (multiply by ``n / k`` for the paper's full-gradient scale). Without a
target the pool's mean gradient is matched, as GRAD-MATCH does with the training loss.

Checkpoints. GRAD-MATCH matches at the current model; here that is the last warmup checkpoint
(``checkpoints_used=last``, the default). ``checkpoints_used=all`` places every checkpoint's
features side by side, each scaled by ``sqrt(learning rate)``: inner products then become
TracIn's learning-rate-weighted sum over checkpoints, and one weighted subset is fitted to
match the target along the whole warmup trajectory (at ``checkpoints x dim`` features per row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from selectkit.sdk import (
    Context,
    GradientPipeline,
    Matching,
    Method,
    ParamError,
    Pool,
    PoolView,
    RowParams,
    row_mean,
)


@dataclass(frozen=True)
class GradMatchParams(RowParams):
    """Parameters of ``gradmatch``: the shared gradient and row parameters, plus the
    matching's."""

    l2: float = field(
        default=0.0,
        metadata={"help": "ridge term l2 * ||w||^2 of the weight fit (the paper's lambda)"},
    )
    memory_mb: int = field(
        default=1024,
        metadata={"help": "MiB of pool features held at once (a smaller pool is read once)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ParamError(f"l2 must be >= 0 and finite, got {self.l2}")


class GradMatch(Method):
    """GRAD-MATCH: a weighted subset whose gradient matches the target's (Killamsetty et al.
    2021).

    Without a target, the pool's mean gradient is matched."""

    name = "gradmatch"
    Params = GradMatchParams
    needs_target = False
    budgets = ("items",)  # matching pursuit takes count budgets; the memory check needs k

    def pool_views(self) -> tuple[PoolView, ...]:
        return (self.params.pool_view("sgd"),)

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Matching:
        p = self.params
        budget = len(pool) if context.budget_records is None else context.budget_records
        pipeline = GradientPipeline(p, context)
        pipeline.check(pool, *([target] if target is not None else []))
        pipeline.check_rows_fit(  # the selected rows and their Gram matrix, in float64
            budget,
            p.checkpoints_used,
            what="gradmatch",
            copies=2,
            extra=(p.memory_mb << 20) + 8 * budget * budget,
        )
        memory = p.memory_mb << 20
        pools = [pool] if target is None else [pool, target]
        rows, *target_rows = pipeline.rows(*pools, checkpoints_used=p.checkpoints_used)
        mean = row_mean(target_rows[0], memory) if target_rows else None
        return Matching(rows, mean, l2=p.l2, memory_limit=memory)
