"""The ``grand`` and ``el2n`` methods.

Paul, Ganguli and Dziugaite (2021), "Deep Learning on a Data Diet: Finding Important Examples
Early in Training" (NeurIPS). Both score how hard an example is for a model early in training,
averaged over several model states (the paper: initializations; here: the warmup checkpoints),
and keep the highest scores:

- GraNd: the expected norm of the example's loss gradient. selectkit takes the exact norm of the
  full LoRA gradient before projection (stored beside the features), not of the projected one,
  whose norm only matches in expectation with a relative error of about sqrt(2/dim);
- EL2N: the expected L2 distance between the softmax output and the one-hot label, averaged
  here over the response tokens; it needs forward passes only.
"""

from __future__ import annotations

import numpy as np

from selectkit.data.pool import Pool
from selectkit.features.pipeline import GradientParams, GradientPipeline, ModelParams
from selectkit.features.token_stats import el2n_scores
from selectkit.methods import Context, Method
from selectkit.solvers.objectives import Scores


class GraNd(Method):
    """GraNd: mean gradient norm over warmup checkpoints (Paul et al. 2021).

    Highest first: the hardest examples early in training."""

    name = "grand"
    Params = GradientParams

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        pipeline = GradientPipeline(self.params, context)
        pipeline.check(pool)
        feature_sets = pipeline.features(pool, "sgd", pipeline.checkpoints(pool))
        norms = np.stack([entry.column("grad_norm") for entry in feature_sets])
        return Scores(norms.astype(np.float64).mean(axis=0))


class EL2N(Method):
    """EL2N: mean error-vector norm over response tokens and checkpoints (Paul et al. 2021).

    Highest first, like GraNd."""

    name = "el2n"
    Params = ModelParams

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        params: ModelParams = self.params
        pipeline = GradientPipeline(params, context)
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
