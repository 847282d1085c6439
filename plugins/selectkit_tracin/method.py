"""The ``tracin`` method.

Pruthi, Liu, Kale and Sundararajan (2020), "Estimating Training Data Influence by Tracing
Gradient Descent" (NeurIPS), TracIn-CP: the influence of a training example z on a target z' is
``sum_c eta_c <grad l(z; theta_c), grad l(z'; theta_c)>`` over saved checkpoints c with learning
rates eta_c. A pool record's score is its total influence on the target set (the sum over
target examples), computed from the store's projected gradients: a random projection keeps
inner products in expectation, with an error that shrinks as 1/sqrt(dim).
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
    learning_rates,
    score_pool,
    similarity_matrix,
)


class TracIn(Method):
    """TracIn-CP: lr-weighted gradient inner products with the target (Pruthi et al. 2020).

    Summed over checkpoints and target examples."""

    name = "tracin"
    Params = GradientParams
    needs_target = True

    def pool_views(self) -> tuple[PoolView, ...]:
        return (self.params.pool_view("sgd"),)

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        assert target is not None
        pool_sets, target_sets = GradientPipeline(self.params, context).pool_and_target_features(
            pool, target
        )
        mean = score_pool(
            pool_sets,
            target_sets,
            learning_rates(pool_sets),
            metric="inner",
            aggregate="mean",
            progress=context.progress,
        )
        return Scores(mean * len(target))

    def attribute(self, pool: Pool, target: Pool, context: Context) -> np.ndarray:
        """TracIn-CP influence of every pool record on every target example."""
        pool_sets, target_sets = GradientPipeline(self.params, context).pool_and_target_features(
            pool, target
        )
        return similarity_matrix(
            pool_sets,
            target_sets,
            learning_rates(pool_sets),
            metric="inner",
            progress=context.progress,
        )
