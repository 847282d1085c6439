"""The ``datamodels`` method.

Engstrom, Feldmann and Madry (2024), "DsDm: Model-Aware Dataset Selection with Datamodels"
(ICML). A linear datamodel predicts a target example's loss after training on a subset ``S`` as
``b_j + Σ_{i∈S} θ_ij``; the subset with the lowest predicted mean target loss under a count
budget is the top records by ``-mean_j θ_ij``, which the solver finds exactly (and under token
budgets and quotas too). The datamodel is estimated either by TRAK (fast: the ``trak`` method's
attribution, as DsDm does) or fitted by ridge regression on real subset retrainings made with
``selectkit retrain`` (exact for the model and training recipe that was retrained, but it costs
one training run per subset; for small models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np

from selectkit.sdk import Context, GradientParams, Method, ParamError, Pool, Scores
from selectkit_datamodels.regression import FittedDatamodels, fit_datamodels


@dataclass(frozen=True)
class DatamodelsParams(GradientParams):
    """Parameters of ``datamodels``; the gradient fields are used by the TRAK estimator only."""

    estimator: Literal["trak", "regression"] = field(
        default="trak",
        metadata={
            "help": "trak: TRAK attribution as the datamodel (fast); regression: ridge "
            "regression on the retrained models in `runs` (exact, costly)"
        },
    )
    runs: str = field(
        default="",
        metadata={"help": "regression: folder of `selectkit retrain` runs on this pool and target"},
    )
    damping: float = field(
        default=0.1,
        metadata={"help": "TRAK estimator: kernel damping, as a multiple of its mean eigenvalue"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.estimator not in ("trak", "regression"):
            raise ParamError(f"estimator must be trak or regression, not {self.estimator!r}")
        if self.estimator == "regression" and not self.runs:
            raise ParamError(
                "estimator=regression fits on retrained models: give runs=FOLDER made by "
                "`selectkit retrain` on this pool and target"
            )
        if self.estimator == "trak" and self.runs:
            raise ParamError("runs is only used by estimator=regression; drop it or switch")
        if self.runs and not Path(self.runs).expanduser().is_dir():
            raise ParamError(f"runs: folder {self.runs} does not exist")
        if not math.isfinite(self.damping) or self.damping < 0:
            raise ParamError(f"damping must be a finite number >= 0, got {self.damping}")


class Datamodels(Method):
    """DsDm: the subset with the lowest datamodel-predicted target loss (Engstrom et al. 2024)."""

    name = "datamodels"
    Params = DatamodelsParams
    needs_target = True

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        assert target is not None
        return Scores(self.attribute(pool, target, context).mean(axis=1))

    def attribute(self, pool: Pool, target: Pool, context: Context) -> np.ndarray:
        """``-θ``: how much each pool record lowers each target's predicted loss."""
        params: DatamodelsParams = self.params
        if params.estimator == "regression":
            return -self.fit(pool, target).weights
        return self._trak_attribution(pool, target, context)

    def fit(self, pool: Pool, target: Pool) -> FittedDatamodels:
        """The regression datamodels of ``target`` from the retrained models in ``runs``."""
        from selectkit.retraining import load_runs

        runs = load_runs(Path(self.params.runs))
        runs.check_matches(pool, target)
        usable = runs.done
        if usable.sum() < 3:
            raise ParamError(
                f"{runs.path} has {int(usable.sum())} finished, finite retrained models; "
                "datamodels need at least 3 (run `selectkit retrain` to finish it)"
            )
        return fit_datamodels(runs.masks[usable], runs.outcomes[usable])

    def _trak_attribution(self, pool: Pool, target: Pool, context: Context) -> np.ndarray:
        trak = context.host.method("trak")
        shared = {f.name for f in fields(GradientParams)} | {"damping"}
        values = {name: getattr(self.params, name) for name in shared}
        return trak(trak.Params(**values)).attribute(pool, target, context)
