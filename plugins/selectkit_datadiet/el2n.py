"""The ``el2n`` method: EL2N, the expected L2 distance between a model's softmax output and the
one-hot label, early in training.

Paul, Ganguli and Dziugaite (2021), "Deep Learning on a Data Diet: Finding Important Examples
Early in Training" (NeurIPS). The score is averaged over several model states (the paper:
initializations; here: the warmup checkpoints) and, for a language model, over the response
tokens; the highest scores are kept. It needs forward passes only.
"""

from __future__ import annotations

import numpy as np

from selectkit.compute.token_stats import el2n_scores
from selectkit.sdk import Context, Method, ModelParams, ModelPipeline, Pool, Scores


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
        loaded = pipeline.loaded
        tokens = pipeline.tokens(pool)
        pad = loaded.tokenizer.pad_token_id
        per_checkpoint = []
        for folder in checkpoints:
            with loaded.adapted(folder) as adapted:
                per_checkpoint.append(
                    el2n_scores(
                        adapted.model,
                        tokens,
                        pad,
                        batch_size=params.batch_size,
                        progress=context.progress,
                    )
                )
        return Scores(np.mean(per_checkpoint, axis=0))
