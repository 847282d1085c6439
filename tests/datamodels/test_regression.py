"""Ridge datamodels: planted effects recovered, leave-one-out checked by brute force."""

from __future__ import annotations

import numpy as np
import pytest
from selectkit_datamodels.regression import fit_datamodels

from selectkit.errors import ParamError


def _planted(models: int, records: int, targets: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((models, records), dtype=bool)
    for row in masks:
        row[rng.choice(records, records // 2, replace=False)] = True
    theta = rng.normal(size=(records, targets)) * (rng.random((records, 1)) < 0.2)
    losses = 3.0 + masks @ theta + noise * rng.normal(size=(models, targets))
    return masks, losses, theta


def test_planted_datamodels_are_recovered():
    masks, losses, theta = _planted(models=400, records=40, targets=3, noise=0.1)
    fitted = fit_datamodels(masks, losses)
    for j in range(3):
        assert np.corrcoef(fitted.weights[:, j], theta[:, j])[0, 1] > 0.97
    assert (fitted.loo_r2 > 0.9).all()
    held_out, _, _ = _planted(models=50, records=40, targets=3, noise=0.0, seed=1)
    predicted = fitted.predict(held_out)
    assert np.corrcoef(predicted[:, 0], held_out @ theta[:, 0])[0, 1] > 0.97


def test_fewer_models_than_records_still_ranks_the_planted_effects():
    masks, losses, theta = _planted(models=60, records=200, targets=1, noise=0.05)
    fitted = fit_datamodels(masks, losses)
    # Measured 0.53 (a random ranking: about ±0.14); ridge shrinks, it does not find sparsity.
    assert np.corrcoef(fitted.weights[:, 0], theta[:, 0])[0, 1] > 0.35


def test_leave_one_out_choice_matches_brute_force():
    masks, losses, _ = _planted(models=30, records=12, targets=2, noise=0.5, seed=4)
    grid = np.array([1e-3, 1e-1, 1.0, 10.0])
    fitted = fit_datamodels(masks, losses, grid)
    x = masks.astype(np.float64)
    s2 = np.linalg.svd(x - x.mean(axis=0), compute_uv=False) ** 2
    penalties = grid * s2[s2 > s2.max() * 1e-10].mean()
    for j in range(2):
        errors = []
        for penalty in penalties:
            residuals = []
            for k in range(len(x)):
                keep = np.arange(len(x)) != k
                xm, ym = x[keep].mean(axis=0), losses[keep, j].mean()
                a = x[keep] - xm
                w = np.linalg.solve(
                    a.T @ a + penalty * np.eye(x.shape[1]), a.T @ (losses[keep, j] - ym)
                )
                residuals.append(losses[k, j] - (ym + (x[k] - xm) @ w))
            errors.append(np.mean(np.square(residuals)))
        assert fitted.penalty[j] == pytest.approx(penalties[int(np.argmin(errors))])
        a = x - x.mean(axis=0)
        direct = np.linalg.solve(
            a.T @ a + fitted.penalty[j] * np.eye(x.shape[1]),
            a.T @ (losses[:, j] - losses[:, j].mean()),
        )
        np.testing.assert_allclose(fitted.weights[:, j], direct, rtol=1e-6, atol=1e-9)
        variance = np.var(losses[:, j])
        assert fitted.loo_r2[j] == pytest.approx(1 - min(errors) / variance)


def test_a_target_whose_loss_never_changes_gets_no_effects():
    masks, losses, _ = _planted(models=20, records=10, targets=2, noise=0.1)
    losses[:, 1] = 2.5
    fitted = fit_datamodels(masks, losses)
    assert (fitted.weights[:, 1] == 0).all() and fitted.intercept[1] == pytest.approx(2.5)
    assert fitted.loo_r2[1] == 0


def test_bad_inputs_are_refused():
    masks, losses, _ = _planted(models=20, records=10, targets=1, noise=0.1)
    with pytest.raises(ParamError, match="one mask row per outcome"):
        fit_datamodels(masks[:5], losses)
    with pytest.raises(ParamError, match="at least 3"):
        fit_datamodels(masks[:2], losses[:2])
    bad = losses.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ParamError, match="finite"):
        fit_datamodels(masks, bad)
    same = np.repeat(masks[:1], 20, axis=0)
    with pytest.raises(ParamError, match="same subset"):
        fit_datamodels(same, losses)
