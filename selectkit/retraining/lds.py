"""The linear datamodeling score (LDS; Park et al. 2023, "TRAK", §2): how well an attribution
method predicts what retraining on random subsets actually does.

An attribution ``tau`` (``n_pool × n_target``, larger = training on record i lowers target j's
loss more; the contract of :meth:`selectkit.methods.Method.attribute`) predicts, for a model k
trained on subset ``S_k``, the outcome of target j as the additive sum
``g_j(S_k) = sum_{i in S_k} tau[i, j]``. The measured outcome is ``-loss_j(S_k)`` (lower loss is
the better outcome, so a perfect attribution correlates positively). For each target,

    LDS_j = Spearman( [g_j(S_k)]_k , [-loss_j(S_k)]_k )   over the held-out models k,

and the LDS is the mean of ``LDS_j`` over the targets. Besides the per-target score this module
reports the LDS of the mean target loss (prediction ``sum_{i in S_k} mean_j tau[i, j]``), the
quantity a selection for the whole target optimizes.

Targets whose measured loss is the same for every model carry no ranking and are left out
(named); a prediction that is constant across models (e.g. an all-zero attribution) ranks
nothing and counts as correlation 0.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from selectkit.data.pool import Pool
from selectkit.errors import ParamError
from selectkit.provenance import jsonable
from selectkit.retraining.runs import RetrainRuns

if TYPE_CHECKING:
    from selectkit.methods import Context, Method

#: Spearman needs a ranking; with fewer models there is none worth reporting.
MIN_MODELS = 3


@dataclass(frozen=True)
class LdsResult:
    """The LDS of one attribution on one retraining run.

    ``per_target[j]`` is target ``target_ids[j]``'s Spearman correlation (NaN for the targets
    in ``constant_targets``, whose loss did not vary); ``mean`` and ``stderr`` (standard error
    of the mean over the scored targets; NaN with one) summarize them; ``mean_loss`` is the LDS
    of the mean target loss. ``models`` were used; ``diverged`` and ``missing`` (not trained
    yet) models among those asked for were left out.
    """

    per_target: np.ndarray
    target_ids: list[str]
    mean: float
    stderr: float
    mean_loss: float
    models: int
    diverged: int
    missing: int
    constant_targets: list[str]
    method: str | None = None
    params: dict[str, Any] | None = None
    seconds: float | None = None

    @property
    def targets(self) -> int:
        """How many targets were scored."""
        return int(np.isfinite(self.per_target).sum())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (NaN as ``null``)."""
        return jsonable(
            {
                "method": self.method,
                "params": self.params,
                "lds": self.mean,
                "stderr": self.stderr,
                "mean_loss_lds": self.mean_loss,
                "targets": self.targets,
                "per_target": dict(zip(self.target_ids, self.per_target.tolist(), strict=True)),
                "constant_targets": self.constant_targets,
                "models": self.models,
                "diverged": self.diverged,
                "missing": self.missing,
                "seconds": self.seconds,
            }
        )


@dataclass(frozen=True)
class _Outcomes:
    """The measured side of the score: usable models and their outcomes."""

    models: np.ndarray
    measured: np.ndarray
    varying: np.ndarray
    diverged: int
    missing: int


def _outcomes(runs: RetrainRuns, models: Sequence[int] | np.ndarray | None) -> _Outcomes:
    if models is None:
        chosen = np.arange(runs.models)
    else:
        chosen = np.asarray(models)
        if chosen.dtype == np.bool_:
            if chosen.shape != (runs.models,):
                raise ParamError(
                    f"a model mask must have one entry per model ({runs.models}), got shape "
                    f"{chosen.shape}"
                )
            chosen = np.flatnonzero(chosen)
        elif chosen.ndim != 1 or chosen.dtype.kind not in "iu":
            raise ParamError("models must be a list of model indices or a bool mask")
        outside = (chosen < 0) | (chosen >= runs.models)
        if outside.any():
            raise ParamError(
                f"model {int(chosen[outside][0])} is outside the run's {runs.models} models"
            )
    usable = chosen[runs.done[chosen]]
    diverged = int(runs.diverged[chosen].sum())
    missing = len(chosen) - len(usable) - diverged
    if len(usable) < MIN_MODELS:
        raise ParamError(
            f"LDS ranks outcomes over models and needs at least {MIN_MODELS} trained models; "
            f"{runs.path} has {len(usable)} usable of the {len(chosen)} asked for ({diverged} "
            f"diverged, {missing} not trained yet): finish `selectkit retrain` or train more"
        )
    measured = -runs.outcomes[usable]
    varying = np.ptp(measured, axis=0) > 0
    if not varying.any():
        raise ParamError(
            f"every target's loss is the same for all {len(usable)} models in {runs.path}, so "
            "there is nothing to rank: the subsets left no variance. Train longer or with a "
            "higher learning rate (so the data changes the loss), or use a smaller fraction "
            "(so the subsets differ more)"
        )
    return _Outcomes(usable, measured, varying, diverged, missing)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of each column, ties sharing their average rank (as Spearman's rho needs)."""
    from scipy.stats import rankdata

    return rankdata(values, axis=0, method="average")


def spearman_columns(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Spearman's rho between matching columns of two ``(models, targets)`` arrays: the
    Pearson correlation of their average ranks. A column with no spread gives 0."""
    left = _average_ranks(predicted)
    right = _average_ranks(measured)
    left -= left.mean(axis=0)
    right -= right.mean(axis=0)
    scale = np.sqrt((left**2).sum(axis=0) * (right**2).sum(axis=0))
    products = (left * right).sum(axis=0)
    rho = np.zeros(predicted.shape[1])
    np.divide(products, scale, out=rho, where=scale > 0)
    return rho


def _predict(masks: np.ndarray, attribution: np.ndarray) -> np.ndarray:
    """``masks @ attribution``, with columns that are constant up to rounding set to exactly
    zero: a sum of equal values in another order may differ in the last bits, which must not
    become a ranking. The bound is the float64 error of summing ``n`` terms."""
    weights = masks.astype(np.float64)
    predicted = weights @ attribution
    magnitude = (weights @ np.abs(attribution)).max(axis=0)
    bound = 4 * masks.shape[1] * np.finfo(np.float64).eps * magnitude
    predicted[:, np.ptp(predicted, axis=0) <= bound] = 0.0
    return predicted


def check_attribution(
    attribution: Any, runs: RetrainRuns, owner: str = "attribution"
) -> np.ndarray:
    """``attribution`` as a finite float64 ``(pool records, targets)`` array for ``runs``."""
    expected = (runs.masks.shape[1], len(runs.target_ids))
    values = np.asarray(attribution, dtype=np.float64)
    if values.shape != expected:
        raise ParamError(
            f"{owner} has shape {values.shape}, expected {expected} (pool records × targets of "
            f"the retraining run in {runs.path})"
        )
    if not np.isfinite(values).all():
        row, column = (int(v[0]) for v in np.nonzero(~np.isfinite(values)))
        raise ParamError(f"{owner} is not finite at [{row}, {column}]: {values[row, column]}")
    return values


def linear_datamodeling_score(
    attribution: Any,
    runs: RetrainRuns,
    models: Sequence[int] | np.ndarray | None = None,
) -> LdsResult:
    """The LDS of ``attribution`` (float64, ``(n_pool, n_target)``) on the trained models of
    ``runs`` (all of them, or the indices or bool mask ``models``); see the module docstring.

    Diverged and untrained models are left out and counted; fewer than 3 usable models, a
    shape that does not match the run, or targets that are all constant are refused.
    """
    values = check_attribution(attribution, runs)
    outcomes = _outcomes(runs, models)
    masks = runs.masks[outcomes.models]
    varying = outcomes.varying
    per_target = np.full(values.shape[1], np.nan)
    per_target[varying] = spearman_columns(
        _predict(masks, values[:, varying]), outcomes.measured[:, varying]
    )
    scored = per_target[varying]
    stderr = float(scored.std(ddof=1) / np.sqrt(len(scored))) if len(scored) > 1 else np.nan
    mean_loss = spearman_columns(
        _predict(masks, values.mean(axis=1, keepdims=True)),
        outcomes.measured.mean(axis=1, keepdims=True),
    )[0]
    ids = runs.target_ids
    return LdsResult(
        per_target=per_target,
        target_ids=ids,
        mean=float(scored.mean()),
        stderr=stderr,
        mean_loss=float(mean_loss),
        models=len(outcomes.models),
        diverged=outcomes.diverged,
        missing=outcomes.missing,
        constant_targets=[ids[j] for j in np.flatnonzero(~varying)],
    )


def _same_folder(a: str | Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == b.resolve()


def evaluate_lds(
    method: Method,
    pool: Pool,
    target: Pool,
    runs: RetrainRuns,
    context: Context,
    *,
    models: Sequence[int] | np.ndarray | None = None,
) -> LdsResult:
    """Attribute ``pool`` to ``target`` with the configured ``method`` in ``context`` and score
    it on ``runs`` (:func:`selectkit.api.evaluate_lds` takes a method by name).

    Checked before the method runs: the pool and target are the run's, the run has enough
    usable models, and the method was not fitted on these very runs (a ``runs`` parameter
    naming the same folder): LDS needs models the method has not seen. A method without
    per-example attribution raises its own ParamError.
    """
    from selectkit.params import params_to_dict

    method_obj = method
    runs.check_matches(pool, target)
    fitted_on = getattr(method_obj.params, "runs", None)
    if fitted_on and _same_folder(fitted_on, runs.path):
        raise ParamError(
            f"method '{method_obj.name}' is fitted on the models in {runs.path}, the same run "
            "it would be scored on; LDS needs held-out models: train a second run (another "
            "--seed and --out) and score on that"
        )
    _outcomes(runs, models)
    started = time.perf_counter()
    attribution = method_obj.attribute(pool, target, context)
    seconds = time.perf_counter() - started
    values = check_attribution(attribution, runs, owner=f"method '{method_obj.name}' attribution")
    result = linear_datamodeling_score(values, runs, models)
    return replace(
        result,
        method=method_obj.name,
        params=params_to_dict(method_obj.params),
        seconds=round(seconds, 3),
    )
