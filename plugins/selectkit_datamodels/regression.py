"""Linear datamodels fitted on real retrainings (Ilyas et al. 2022, "Datamodels").

A datamodel for target example ``j`` predicts the loss of a model trained on subset ``S`` as
``loss_j(S) ≈ b_j + Σ_{i∈S} θ_ij``. Given ``M`` retrained models (subset masks ``X``, ``M × n``,
and measured target losses ``Y``, ``M × m``) every target's ``θ_j`` is a ridge regression of its
losses on the masks. The paper fits an ℓ1 (LASSO) regression on hundreds of thousands of models;
here the number of models is small (hundreds), so ridge is used: one thin SVD of the centered
masks serves every target and every penalty, and the leave-one-out error of each penalty has a
closed form, so each target gets the penalty that predicts held-out models best.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selectkit.errors import ParamError

#: Penalties tried, as multiples of the mean squared singular value of the centered masks.
PENALTY_GRID = np.logspace(-4, 3, 29)


@dataclass(frozen=True)
class FittedDatamodels:
    """``weights[i, j]``: predicted change of target ``j``'s loss when record ``i`` is in the
    training subset; ``intercept[j]`` the loss of a model trained on no record (extrapolated);
    ``penalty[j]`` the ridge penalty chosen by leave-one-out; ``loo_r2[j]`` the share of target
    ``j``'s loss variance across models that the datamodel predicts on left-out models (0 for a
    target whose loss never varies)."""

    weights: np.ndarray
    intercept: np.ndarray
    penalty: np.ndarray
    loo_r2: np.ndarray
    models: int

    def predict(self, masks: np.ndarray) -> np.ndarray:
        """Predicted target losses ``(subsets, targets)`` of models trained on ``masks``."""
        return np.asarray(masks, dtype=np.float64) @ self.weights + self.intercept


def fit_datamodels(
    masks: np.ndarray, losses: np.ndarray, grid: np.ndarray = PENALTY_GRID
) -> FittedDatamodels:
    """Ridge datamodels of every target from ``masks`` (``M × n``, bool) and ``losses``
    (``M × m``, finite), each target's penalty chosen from ``grid`` by exact leave-one-out."""
    x = np.asarray(masks, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ParamError(
            f"datamodels need one mask row per outcome row: masks {x.shape}, losses {y.shape}"
        )
    if len(x) < 3:
        raise ParamError(f"datamodels need at least 3 retrained models, got {len(x)}")
    if not np.isfinite(y).all():
        raise ParamError("datamodel outcomes must be finite: drop diverged or missing models")
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    keep = s > s.max(initial=0.0) * 1e-10
    u, s, vt = u[:, keep], s[keep], vt[keep]
    if len(s) == 0:
        raise ParamError(
            "every retrained model saw the same subset, so no record's effect can be told "
            "apart; retrain on random subsets at a fraction below 1"
        )
    centered = y - y_mean
    projected = u.T @ centered  # (rank, m)
    penalties = grid * float(np.mean(s**2))
    best_error = np.full(y.shape[1], np.inf)
    best = np.zeros(y.shape[1], dtype=np.int64)
    for k, penalty in enumerate(penalties):
        shrink = s**2 / (s**2 + penalty)
        fitted = u @ (shrink[:, None] * projected)
        leverage = 1.0 / len(x) + (u**2) @ shrink
        loo = (centered - fitted) / (1.0 - leverage)[:, None]
        error = np.mean(loo**2, axis=0)
        better = error < best_error
        best_error[better], best[better] = error[better], k
    chosen = penalties[best]
    coefficients = (s / (s**2 + chosen[:, None])).T * projected  # (rank, m)
    weights = vt.T @ coefficients
    variance = np.mean(centered**2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        loo_r2 = np.where(variance > 0, 1.0 - best_error / variance, 0.0)
    weights[:, variance == 0] = 0.0
    intercept = y_mean - x_mean @ weights
    return FittedDatamodels(weights, intercept, chosen, loo_r2, len(x))
