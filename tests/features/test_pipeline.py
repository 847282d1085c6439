"""The shared gradient pipeline: cached warmup, mismatched stores, zero learning rates."""

from __future__ import annotations

from dataclasses import replace

import pytest

from selectkit.api import load_records_from_list
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError
from selectkit.features import pipeline as pipeline_module
from selectkit.features.params import GradientParams, WarmupRuns
from selectkit.features.pipeline import GradientPipeline, check_pairs
from selectkit.host import get_host
from selectkit.methods import Context

SMALL = {"model": "tiny-llama", "projection": ProjectionConfig(dim=32), "max_length": 96}
#: The warmup of SMALL: half the pool; one epoch (ONE) where the test trains it.
HALF = WarmupRuns(fraction=0.5)
ONE = WarmupRuns(fraction=0.5, epochs=1)


@pytest.fixture(scope="module")
def pool():
    return load_records_from_list(make_records(2, seed=3))


def test_the_warmup_is_cached_by_content(pool, tmp_path, monkeypatch):
    params = GradientParams(**SMALL, warmup=ONE)
    context = Context(host=get_host(), store_root=tmp_path / "features")
    first = GradientPipeline(params, context).checkpoints(pool)
    assert first and (tmp_path / "warmup").is_dir()
    import selectkit.train.warmup as warmup_module

    def no_training(*args, **kwargs):
        raise AssertionError("the cached warmup should have been reused")

    monkeypatch.setattr(warmup_module, "warmup", no_training)
    assert GradientPipeline(params, context).checkpoints(pool) == first
    (folder,) = [p for p in (tmp_path / "warmup").iterdir() if p.is_dir()]
    manifest = folder / "warmup.json"
    manifest.write_text(manifest.read_text().replace('"complete"', '"running"'))
    with pytest.raises(AssertionError, match="reused"):
        GradientPipeline(params, context).checkpoints(pool)
    assert not folder.exists()  # an unfinished run of the same warmup is cleared and redone
    other_warmup = GradientPipeline(replace(params, warmup=replace(ONE, seed=1)), context)
    with pytest.raises(AssertionError, match="reused"):
        other_warmup.checkpoints(pool)

    # The selection's seed is not the warmup's: another one reuses the cached warmup.
    monkeypatch.undo()
    first = GradientPipeline(params, context).checkpoints(pool)
    monkeypatch.setattr(warmup_module, "warmup", no_training)
    assert GradientPipeline(params, replace(context, seed=7)).checkpoints(pool) == first


def test_pool_and_target_features_must_match(pool, tmp_path):
    context = Context(host=get_host(), store_root=tmp_path)
    run = GradientPipeline(GradientParams(**SMALL, warmup=HALF), context)
    sparse = run.features(pool, "sgd", [])
    dense = GradientPipeline(
        GradientParams(
            **{**SMALL, "projection": ProjectionConfig(dim=32, kind="rademacher")}, warmup=HALF
        ),
        context,
    ).features(pool, "sgd", [])
    with pytest.raises(ParamError, match="differ in projector"):
        check_pairs(sparse, dense)
    with pytest.raises(ParamError, match="same checkpoints"):
        check_pairs(sparse, sparse + dense)
    check_pairs(sparse, run.features(pool, "sgd", []))


def test_zero_learning_rates_and_missing_folders_are_refused(pool, tmp_path, monkeypatch):
    params = GradientParams(**SMALL, warmup=HALF, checkpoints=str(tmp_path / "nope"))
    with pytest.raises(ParamError, match="does not exist"):
        GradientPipeline(params, Context(host=get_host())).checkpoints(pool)
    folder = tmp_path / "run"
    folder.mkdir()

    class Flat:
        path = folder
        learning_rate = 0.0

    monkeypatch.setattr(
        "selectkit.train.checkpoints.find_checkpoints", lambda path: [Flat(), Flat()]
    )
    params = GradientParams(**SMALL, warmup=HALF, checkpoints=str(folder))
    with pytest.raises(ParamError, match="learning rate is 0"):
        GradientPipeline(params, Context(host=get_host())).checkpoints(pool)
    assert pipeline_module.learning_rates([]) == []


def test_warmup_runs_are_independent_warmups_with_consecutive_seeds(pool, tmp_path):
    context = Context(host=get_host(), store_root=tmp_path / "features")
    ensemble = GradientPipeline(
        GradientParams(**SMALL, warmup=replace(ONE, runs=2, seed=4)), context
    )
    first, second = ensemble.checkpoints(pool)
    assert first.parent != second.parent
    alone = [
        GradientPipeline(
            GradientParams(**SMALL, warmup=replace(ONE, seed=seed)), context
        ).checkpoints(pool)
        for seed in (4, 5)
    ]
    assert alone == [[first], [second]]  # the same cached runs: run r is the seed + r warmup
    with pytest.raises(ParamError, match="at least 1"):
        GradientParams(**SMALL, warmup=replace(HALF, runs=0))
    with pytest.raises(ParamError, match="list the folders of every run"):
        GradientParams(**SMALL, checkpoints=str(tmp_path), warmup=replace(HALF, runs=2))
