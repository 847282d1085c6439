"""The ``grand`` method: GraNd, the expected norm of an example's loss gradient early in
training.

Paul, Ganguli and Dziugaite (2021), "Deep Learning on a Data Diet: Finding Important Examples
Early in Training" (NeurIPS). The score is averaged over several model states (the paper:
initializations; here: the warmup checkpoints), and the highest scores are kept. selectkit takes
the exact norm of the full LoRA gradient before projection (stored beside the features), not of
the projected one, whose norm only matches in expectation with a relative error of about
sqrt(2/dim).
"""

from __future__ import annotations

import numpy as np

from selectkit.sdk import (
    Context,
    GradientParams,
    GradientPipeline,
    Method,
    Pool,
    PoolView,
    Scores,
)


class GraNd(Method):
    """GraNd: mean gradient norm over warmup checkpoints (Paul et al. 2021).

    Highest first: the hardest examples early in training."""

    name = "grand"
    Params = GradientParams

    def pool_views(self) -> tuple[PoolView, ...]:
        return (self.params.pool_view("sgd"),)

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        pipeline = GradientPipeline(self.params, context)
        pipeline.check(pool)
        feature_sets = pipeline.features(pool, "sgd", pipeline.checkpoints(pool))
        norms = np.stack([entry.column("grad_norm") for entry in feature_sets])
        return Scores(norms.astype(np.float64).mean(axis=0))
