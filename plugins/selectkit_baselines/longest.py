"""The ``longest`` method: the records with the longest responses.

Zhao et al. (2024), "Long Is More for Alignment: A Simple but Tough-to-Beat Baseline for
Instruction Fine-Tuning" (ICML).
"""

from __future__ import annotations

import numpy as np

from selectkit.sdk import Context, Method, Pool, Scores


class Longest(Method):
    """The records with the longest responses (in the pool's cost unit: tokens or words).

    A strong baseline for instruction tuning (Zhao et al. 2024, "Long Is More for Alignment").
    Under a token budget the solver maximizes the total response length that fits.
    """

    name = "longest"

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        return Scores(pool.response_costs.astype(np.float64))
