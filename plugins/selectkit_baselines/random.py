"""The ``random`` method: a uniform random subset, the reference every method must beat."""

from __future__ import annotations

import numpy as np

from selectkit.sdk import Context, LogWeights, Method, Pool


class Random(Method):
    """Uniform sampling without replacement, seeded; quotas and budgets still apply.

    Every record gets the same log-weight, so the solver's seeded Gumbel top-k draws a uniform
    random subset that respects the constraints. Its attribution is seeded standard normal
    noise, the chance reference of the linear datamodeling score (expected LDS 0).
    """

    name = "random"

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> LogWeights:
        return LogWeights(np.zeros(len(pool)), sample=True)

    def attribute(self, pool: Pool, target: Pool, context: Context) -> np.ndarray:
        return np.random.default_rng(context.seed).standard_normal((len(pool), len(target)))
