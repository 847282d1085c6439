"""The datamodels method: TRAK-estimated and regression-fitted, through select() and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from selectkit_datamodels.method import Datamodels, DatamodelsParams
from selectkit_datamodels.regression import fit_datamodels

from selectkit import select
from selectkit.api import evaluate_lds, load_records_from_list
from selectkit.cli import cli
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError
from selectkit.host import get_host
from selectkit.methods import Context
from selectkit.models.tiny import tiny_model
from selectkit.params import build_params
from selectkit.retraining import RetrainConfig, retrain
from selectkit.train.finetune import FinetuneConfig

FAMILIES = ["reverse", "units", "acronym", "sorting"]


@pytest.fixture(scope="module")
def fitted_runs(tmp_path_factory):
    pool_rows = make_records(6, seed=0, families=FAMILIES)
    target_rows = make_records(2, seed=1, families=["units"], id_prefix="target", avoid=pool_rows)
    pool = load_records_from_list(pool_rows, group_field="family")
    target = load_records_from_list(target_rows, group_field="family")
    model, tokenizer = tiny_model("tiny-llama")
    finetune = FinetuneConfig(max_steps=3, batch_size=4, learning_rate=1e-2, max_length=64)
    out = tmp_path_factory.mktemp("datamodels") / "runs"
    config = RetrainConfig(models=12, fraction=0.5, seed=3, finetune=finetune)
    runs = retrain(pool, target, model, tokenizer, out, config, progress=False)
    return pool, target, runs, pool_rows


def test_regression_estimator_is_the_negated_ridge_fit(fitted_runs):
    pool, target, runs, _ = fitted_runs
    method = Datamodels(DatamodelsParams(estimator="regression", runs=str(runs.path)))
    attribution = method.attribute(pool, target, Context(host=get_host()))
    expected = fit_datamodels(runs.masks[runs.done], runs.outcomes[runs.done])
    np.testing.assert_array_equal(attribution, -expected.weights)
    selection = select(pool, method, 5, target=target)
    np.testing.assert_allclose(selection.scores, attribution.mean(axis=1))
    best = np.argsort(-attribution.mean(axis=1), kind="stable")[:5]
    assert sorted(selection.indices.tolist()) == sorted(best.tolist())


def test_regression_refuses_runs_of_another_pool_and_lds_on_its_own_runs(fitted_runs, tmp_path):
    pool, target, runs, pool_rows = fitted_runs
    params = {"estimator": "regression", "runs": str(runs.path)}
    other = load_records_from_list(pool_rows[:-1], group_field="family")
    with pytest.raises(ParamError):
        select(other, "datamodels", 3, target=target, params=params)
    with pytest.raises(ParamError, match="held-out"):
        evaluate_lds("datamodels", pool, target, runs, params=params)


def test_parameters_are_checked_before_any_work():
    with pytest.raises(ParamError, match="runs=FOLDER"):
        DatamodelsParams(estimator="regression")
    with pytest.raises(ParamError, match="only used by estimator=regression"):
        DatamodelsParams(runs="somewhere")
    with pytest.raises(ParamError, match="trak or regression"):
        DatamodelsParams(estimator="lasso")  # type: ignore[arg-type]


def test_trak_estimator_is_trak_attribution(targeted, gradient_params):
    pool, target = targeted
    params = build_params(DatamodelsParams, gradient_params, "datamodels")
    attribution = Datamodels(params).attribute(pool, target, Context(host=get_host(), seed=0))
    from selectkit_trak.method import TRAK, TRAKParams

    trak = TRAK(build_params(TRAKParams, gradient_params, "trak")).attribute(
        pool, target, Context(host=get_host(), seed=0)
    )
    np.testing.assert_array_equal(attribution, trak)


def test_datamodels_from_the_command_line(fitted_runs, tmp_path):
    _, target, runs, pool_rows = fitted_runs
    pool_file, target_file = tmp_path / "pool.jsonl", tmp_path / "target.jsonl"
    target_rows = [dict(record.raw) for record in target]
    pool_file.write_text("".join(json.dumps(r) + "\n" for r in pool_rows))
    target_file.write_text("".join(json.dumps(r) + "\n" for r in target_rows))
    result = CliRunner().invoke(
        cli,
        [
            "select",
            "--pool",
            str(pool_file),
            "--target",
            str(target_file),
            "--group-by",
            "family",
            "--method",
            "datamodels",
            "-p",
            "estimator=regression",
            "-p",
            f"runs={runs.path}",
            "--budget",
            "4",
            "--out",
            str(tmp_path / "picked.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "picked.manifest.json").read_text())
    assert manifest["method"]["name"] == "datamodels" and manifest["selection"]["count"] == 4
