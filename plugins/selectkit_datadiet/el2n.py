"""The ``el2n`` method: EL2N, the expected L2 distance between a model's softmax output and the
one-hot label, early in training.

Paul, Ganguli and Dziugaite (2021), "Deep Learning on a Data Diet: Finding Important Examples
Early in Training" (NeurIPS). The score is averaged over several model states (the paper:
initializations; here: the warmup checkpoints) and, for a language model, over the response
tokens; the highest scores are kept. It needs forward passes only, whose statistics the store
keeps: a second run reads them.
"""

from __future__ import annotations

import numpy as np

from selectkit.sdk import (
    Context,
    Method,
    ModelParams,
    ModelPipeline,
    Pool,
    Scores,
    StatisticsConfig,
)


class EL2N(Method):
    """EL2N: mean error-vector norm over response tokens and checkpoints (Paul et al. 2021).

    Highest first, like GraNd."""

    name = "el2n"
    Params = ModelParams

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        params: ModelParams = self.params
        pipeline = ModelPipeline(params, context)
        pipeline.check(pool)
        checkpoints = pipeline.checkpoints(pool)
        # Blocks of consecutive records, the batches EL2N has always run in: the same scores
        # to the last bit (batches of similar length would change them there).
        config = StatisticsConfig(
            batch_size=params.batch_size, max_length=params.max_length, order="pool"
        )
        entries = pipeline.statistics(pool, checkpoints, config)
        per_checkpoint = [entry.column("el2n").astype(np.float64) for entry in entries]
        return Scores(np.mean(per_checkpoint, axis=0))
