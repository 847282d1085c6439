"""Ground truth for attribution: retrain on random subsets, then score attributions by LDS.

- :func:`retrain` trains M LoRA models on random subsets of a pool and records each model's loss
  on each target example (:mod:`.harness`, on disk as :mod:`.runs` describes);
- :func:`load_runs` reads such a run back (masks, outcomes, status);
- :func:`linear_datamodeling_score` and :func:`evaluate_lds` score an attribution, or a method's,
  by the linear datamodeling score (Park et al. 2023) on held-out models (:mod:`.lds`).
"""

from selectkit.retraining.harness import RetrainConfig, retrain
from selectkit.retraining.lds import LdsResult, evaluate_lds, linear_datamodeling_score
from selectkit.retraining.runs import RetrainRuns, load_runs
from selectkit.retraining.subsets import subset_mask, subset_masks, subset_size

__all__ = [
    "LdsResult",
    "RetrainConfig",
    "RetrainRuns",
    "evaluate_lds",
    "linear_datamodeling_score",
    "load_runs",
    "retrain",
    "subset_mask",
    "subset_masks",
    "subset_size",
]
