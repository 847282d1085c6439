"""The linear datamodeling score against hand computations with scipy's spearmanr, a planted
linear datamodel, constant targets and predictions, excluded models, errors, and evaluate_lds
with the random baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from selectkit.api import evaluate_lds
from selectkit.errors import ParamError
from selectkit.host import get_host
from selectkit.methods import Context, Method
from selectkit.retraining import RetrainRuns, linear_datamodeling_score
from selectkit.retraining.lds import spearman_columns
from selectkit.retraining.subsets import subset_masks
from selectkit.solvers.objectives import Scores


def make_runs(masks, outcomes, *, done=None, diverged=None, pool=None, target=None,
              path="/tmp/runs"):  # fmt: skip
    models, targets = outcomes.shape
    done = np.ones(models, bool) if done is None else np.asarray(done)
    diverged = np.zeros(models, bool) if diverged is None else np.asarray(diverged)
    outcomes = np.where(done[:, None], outcomes, np.nan)
    ids = target.ids if target is not None else [f"t{j}" for j in range(targets)]
    manifest = {
        "pool": {
            "content_fingerprint": pool.content_fingerprint if pool else "p",
            "records": masks.shape[1],
        },
        "target": {
            "content_fingerprint": target.content_fingerprint if target else "t",
            "records": targets,
            "ids": ids,
        },
        "fraction": 0.5,
    }
    records = [{"status": "done"} if d else None for d in done]
    return RetrainRuns(Path(path), manifest, masks, outcomes, done, diverged, records)


@pytest.fixture(scope="module")
def planted():
    """A linear datamodel: the loss of target j after training on subset k is
    ``-(mask_k . theta_j)`` plus small noise, so training on record i lowers target j's loss by
    ``theta[i, j]``: theta is the perfect attribution. 60 models, 30 records, 8 targets."""
    rng = np.random.default_rng(0)
    masks = subset_masks(30, 0.5, 60, seed=1)
    theta = rng.standard_normal((30, 8))
    losses = -(masks @ theta) + 0.3 * rng.standard_normal((60, 8))
    return masks, theta, losses


def test_equals_scipy_spearman_per_target_and_on_the_mean_loss():
    rng = np.random.default_rng(1)
    masks = subset_masks(12, 0.5, 9, seed=2)
    losses = rng.standard_normal((9, 4))
    attribution = rng.standard_normal((12, 4))
    attribution[:, 2] = np.round(attribution[:, 2])  # ties in the prediction
    losses[:3, 3] = 1.0  # ties in the outcome
    result = linear_datamodeling_score(attribution, make_runs(masks, losses))
    predicted = masks.astype(float) @ attribution
    expected = [spearmanr(predicted[:, j], -losses[:, j]).statistic for j in range(4)]
    np.testing.assert_allclose(result.per_target, expected, rtol=1e-12)
    assert result.mean == pytest.approx(np.mean(expected), rel=1e-12)
    assert result.stderr == pytest.approx(np.std(expected, ddof=1) / 2, rel=1e-12)
    mean_loss = spearmanr(masks @ attribution.mean(axis=1), -losses.mean(axis=1)).statistic
    assert result.mean_loss == pytest.approx(mean_loss, rel=1e-12)
    assert (result.models, result.diverged, result.missing, result.targets) == (9, 0, 0, 4)
    assert result.target_ids == ["t0", "t1", "t2", "t3"] and result.constant_targets == []


def test_a_planted_datamodel_scores_near_one_and_noise_near_zero(planted):
    masks, theta, losses = planted
    runs = make_runs(masks, losses)
    exact = linear_datamodeling_score(theta, runs)
    assert exact.mean > 0.9 and exact.per_target.min() > 0.8 and exact.mean_loss > 0.9
    noisy = linear_datamodeling_score(theta + 0.5 * np.random.default_rng(3).standard_normal(
        theta.shape), runs)  # fmt: skip
    assert 0.3 < noisy.mean < exact.mean  # a worse attribution scores lower
    wrong_sign = linear_datamodeling_score(-theta, runs)
    assert wrong_sign.mean == pytest.approx(-exact.mean)
    scores = [
        linear_datamodeling_score(np.random.default_rng(s).standard_normal(theta.shape), runs).mean
        for s in range(100, 120)  # (seed 0 drew theta itself)
    ]
    assert abs(np.mean(scores)) < 0.1 and max(abs(s) for s in scores) < 0.35


def test_only_done_models_count_and_excluded_ones_are_counted(planted):
    masks, theta, losses = planted
    done = np.ones(60, bool)
    done[[3, 7]] = False
    diverged = np.zeros(60, bool)
    diverged[3] = True  # model 7 is not trained yet
    runs = make_runs(masks, losses, done=done, diverged=diverged)
    result = linear_datamodeling_score(theta, runs)
    assert (result.models, result.diverged, result.missing) == (58, 1, 1)
    kept = make_runs(masks[done], losses[done])
    np.testing.assert_allclose(result.per_target, linear_datamodeling_score(theta, kept).per_target)
    first = linear_datamodeling_score(theta, runs, models=range(10))
    assert (first.models, first.diverged, first.missing) == (8, 1, 1)
    mask = np.zeros(60, bool)
    mask[:10] = True
    np.testing.assert_array_equal(
        linear_datamodeling_score(theta, runs, models=mask).per_target, first.per_target
    )


def test_constant_targets_are_left_out_and_constant_predictions_score_zero(planted):
    masks, theta, losses = planted
    losses = losses.copy()
    losses[:, [1, 5]] = 4.25  # the loss of targets 1 and 5 never moved
    runs = make_runs(masks, losses)
    result = linear_datamodeling_score(theta, runs)
    assert result.constant_targets == ["t1", "t5"] and result.targets == 6
    assert np.isnan(result.per_target[[1, 5]]).all()
    varying = [0, 2, 3, 4, 6, 7]
    assert result.mean == pytest.approx(result.per_target[varying].mean())
    assert result.to_dict()["per_target"]["t1"] is None

    flat = theta.copy()
    flat[:, 0] = 0.0  # no prediction for target 0
    flat[:, 2] = 0.1  # the same for every record: every subset of one size predicts the same
    result = linear_datamodeling_score(flat, runs)
    assert result.per_target[0] == 0.0 and result.per_target[2] == 0.0
    zero = linear_datamodeling_score(np.zeros_like(theta), runs)
    assert zero.mean == 0.0 and zero.mean_loss == 0.0

    losses[:] = 4.25
    with pytest.raises(ParamError, match=r"every target's loss is the same.*smaller fraction"):
        linear_datamodeling_score(theta, make_runs(masks, losses))


def test_bad_inputs_are_refused(planted):
    masks, theta, losses = planted
    runs = make_runs(masks, losses)
    with pytest.raises(ParamError, match=r"shape \(30, 7\), expected \(30, 8\)"):
        linear_datamodeling_score(theta[:, :7], runs)
    with pytest.raises(ParamError, match=r"shape \(8, 30\)"):
        linear_datamodeling_score(theta.T, runs)
    bad = theta.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ParamError, match=r"not finite at \[4, 2\]"):
        linear_datamodeling_score(bad, runs)
    done = np.zeros(60, bool)
    done[:2] = True
    with pytest.raises(ParamError, match=r"at least 3 trained models.*2 usable of the 60"):
        linear_datamodeling_score(theta, make_runs(masks, losses, done=done))
    with pytest.raises(ParamError, match="outside the run's 60 models"):
        linear_datamodeling_score(theta, runs, models=[0, 1, 60])
    with pytest.raises(ParamError, match="one entry per model"):
        linear_datamodeling_score(theta, runs, models=np.ones(5, bool))


def test_spearman_columns_of_a_constant_column_is_zero():
    x = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])
    y = np.array([[3.0, 1.0], [2.0, 2.0], [1.0, 3.0]])
    np.testing.assert_allclose(spearman_columns(x, y), [-1.0, 0.0])


@dataclass(frozen=True)
class FittedParams:
    runs: str = field(default="", metadata={"help": "Retraining run the method was fitted on."})


class Fitted(Method):
    """A stand-in for a datamodel fitted on a retraining run."""

    name = "fitted"
    Params = FittedParams
    needs_target = True

    def objective(self, pool, target, context):
        return Scores(np.zeros(len(pool)))

    def attribute(self, pool, target, context):
        return np.ones((len(pool), len(target)))


def test_evaluate_lds_with_the_random_baseline(retrain_data, tmp_path):
    pool, target = retrain_data
    masks = subset_masks(len(pool), 0.5, 20, seed=0)
    losses = np.random.default_rng(5).standard_normal((20, len(target)))
    runs = make_runs(masks, losses, pool=pool, target=target, path=tmp_path)
    result = evaluate_lds("random", pool, target, runs, seed=3)
    noise = np.random.default_rng(3).standard_normal((len(pool), len(target)))
    np.testing.assert_array_equal(
        result.per_target, linear_datamodeling_score(noise, runs).per_target
    )
    assert result.method == "random" and result.params == {} and result.seconds >= 0
    assert result.to_dict()["lds"] == pytest.approx(result.mean)
    assert evaluate_lds("random", pool, target, runs, seed=3).mean == result.mean  # seeded
    assert evaluate_lds("random", pool, target, runs, seed=4).mean != result.mean

    with pytest.raises(ParamError, match="method 'longest' gives no per-example attribution"):
        evaluate_lds("longest", pool, target, runs)
    with pytest.raises(ParamError, match=r"the target .* is not the one"):
        evaluate_lds("random", pool, pool, runs)
    with pytest.raises(ParamError, match=r"is fitted on the models in .* held-out models"):
        evaluate_lds(Fitted(FittedParams(runs=str(tmp_path))), pool, target, runs)
    other = evaluate_lds(Fitted(FittedParams(runs=str(tmp_path / "other"))), pool, target, runs)
    assert other.mean == 0.0  # a constant attribution ranks nothing
    with pytest.raises(ParamError, match="either in the Method instance or as params"):
        evaluate_lds(Fitted(), pool, target, runs, params={"runs": "x"})
    assert Context(host=get_host()).seed == 0
