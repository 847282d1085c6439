"""The retraining harness on the tiny Llama: outcomes equal fine-tuning and evaluating by
hand, files on disk, resume and shards give the same bytes, per-model locks, folders of other
runs refused, divergence recorded per model, and errors before any work."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from selectkit.api import load_records_from_list
from selectkit.data.pool import Pool
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError, TrainingDiverged
from selectkit.models.tiny import tiny_model
from selectkit.retraining import RetrainConfig, load_runs, retrain, subset_masks
from selectkit.retraining import harness as harness_module
from selectkit.retraining.runs import MANIFEST_NAME, model_files, model_lock
from selectkit.train.evaluate import target_loss
from selectkit.train.finetune import finetune

from .conftest import CONFIG, FINETUNE, outcome_bytes


def model_records(folder, models):
    return [json.loads(model_files(folder, m)[1].read_text()) for m in range(models)]


def test_the_run_on_disk(base, retrain_data):
    pool, target = retrain_data
    out = base.path
    assert sorted(p.name for p in out.iterdir()) == ["locks", "masks.npy", "models", MANIFEST_NAME]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest == base.manifest
    assert manifest["kind"] == "selectkit.retrain" and manifest["version"] == 1
    assert manifest["pool"] == {"content_fingerprint": pool.content_fingerprint, "records": 40}
    assert manifest["target"]["ids"] == target.ids
    assert manifest["target"]["content_fingerprint"] == target.content_fingerprint
    assert (manifest["fraction"], manifest["models"], manifest["seed"]) == (0.5, 6, 0)
    assert manifest["subset_size"] == 20 and manifest["vary_seed"] is False
    assert manifest["finetune"] == json.loads(json.dumps(FINETUNE.to_dict()))
    assert manifest["model"]["class"] == "LlamaForCausalLM" and len(manifest["model"]["weights"])
    assert {"selectkit", "torch", "peft"} <= set(manifest["versions"]) and manifest["created"]

    masks = np.load(out / "masks.npy", allow_pickle=False)
    np.testing.assert_array_equal(masks, subset_masks(40, 0.5, 6, seed=0))
    np.testing.assert_array_equal(base.masks, masks)
    names = sorted(p.name for p in (out / "models").iterdir())
    assert names == [f"model-{m:06d}.{ext}" for m in range(6) for ext in ("json", "npy")]
    for m, record in enumerate(model_records(out, 6)):
        assert record["model"] == m and record["status"] == "done"
        assert record["records"] == 20 and record["steps"] == record["trained_steps"] == 4
        assert record["seed"] == 0 and record["seconds"] > 0
        losses = np.load(model_files(out, m)[0], allow_pickle=False)
        assert losses.dtype == np.float64 and losses.shape == (6,)
        np.testing.assert_array_equal(losses, base.outcomes[m])


def test_outcomes_are_finetuning_on_the_subset_then_the_target_loss(base, retrain_data, tiny_lm,
                                                                     tmp_path):  # fmt: skip
    pool, target = retrain_data
    model, tokenizer = tiny_lm
    assert base.done.all() and not base.diverged.any() and not base.pending.any()
    assert np.isfinite(base.outcomes).all()
    # The subsets change the outcomes: every target's loss varies across models.
    assert (np.ptp(base.outcomes, axis=0) > 1e-4).all()
    subset = np.flatnonzero(base.masks[4])
    trained = finetune(pool, subset, model, tokenizer, tmp_path, FINETUNE, progress=False)
    expected = target_loss(trained.model, tokenizer, target, batch_size=FINETUNE.batch_size,
                           max_length=FINETUNE.max_length)  # fmt: skip
    np.testing.assert_array_equal(base.outcomes[4], expected.losses)


def test_resume_trains_exactly_the_missing_model(base, retrain_data, tiny_lm, tmp_path):
    pool, target = retrain_data
    model, tokenizer = tiny_lm
    out = tmp_path / "copy"
    shutil.copytree(base.path, out)
    for path in model_files(out, 3):
        path.unlink()
    partial = load_runs(out)
    assert partial.pending.tolist() == [False, False, False, True, False, False]
    assert np.isnan(partial.outcomes[3]).all() and not partial.done[3]
    assert "5 done, 0 diverged, 1 pending" in partial.summary()
    before = model_records(base.path, 6)

    runs = retrain(pool, target, model, tokenizer, out, CONFIG, progress=False)
    assert runs.done.all()
    assert outcome_bytes(out, 6) == outcome_bytes(base.path, 6)  # bit-identical, model 3 too
    after = model_records(out, 6)
    assert [after[m] for m in (0, 1, 2, 4, 5)] == [before[m] for m in (0, 1, 2, 4, 5)]
    assert json.loads((out / MANIFEST_NAME).read_text())["created"] == base.manifest["created"]


def test_shards_write_the_bytes_of_one_run(base, retrain_data, tiny_lm, tmp_path):
    pool, target = retrain_data
    model, tokenizer = tiny_lm
    out = tmp_path / "sharded"
    second = retrain(pool, target, model, tokenizer, out, CONFIG, shard=(1, 2), progress=False)
    assert second.done.tolist() == [False, True, False, True, False, True]
    runs = retrain(pool, target, model, tokenizer, out, CONFIG, shard=(0, 2), progress=False)
    assert runs.done.all()
    assert outcome_bytes(out, 6) == outcome_bytes(base.path, 6)
    assert (out / "masks.npy").read_bytes() == (base.path / "masks.npy").read_bytes()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in model_records(out, 6)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"}
                     for r in model_records(base.path, 6)]  # fmt: skip


def test_a_model_locked_by_another_process_is_left_to_it(base, retrain_data, tiny_lm, tmp_path):
    pool, target = retrain_data
    model, tokenizer = tiny_lm
    out = tmp_path / "locked"
    shutil.copytree(base.path, out)
    for path in model_files(out, 2):
        path.unlink()
    with model_lock(out, 2) as held:
        assert held
        with model_lock(out, 2) as again:
            assert not again  # a second holder, even in this process, is refused
        runs = retrain(pool, target, model, tokenizer, out, CONFIG, progress=False)
        assert runs.pending.tolist() == [False, False, True, False, False, False]
    runs = retrain(pool, target, model, tokenizer, out, CONFIG, progress=False)
    assert runs.done.all()
    assert outcome_bytes(out, 6) == outcome_bytes(base.path, 6)


def test_a_folder_of_another_run_is_refused(base, retrain_data, tiny_lm, tmp_path):
    pool, target = retrain_data
    model, tokenizer = tiny_lm
    listing = sorted(p.name for p in base.path.rglob("*"))
    other_target = load_records_from_list(make_records(2, seed=5, families=["units"]))
    other_model, _ = tiny_model("tiny-llama:seed=1")
    for changes, message in [
        ({"config": replace(CONFIG, seed=1)}, "differs in: seed"),
        ({"config": replace(CONFIG, fraction=0.4)}, "differs in: fraction"),
        ({"config": replace(CONFIG, finetune=replace(FINETUNE, max_steps=5))}, "finetune"),
        ({"config": replace(CONFIG, vary_seed=True)}, "vary_seed"),
        ({"target": other_target}, "differs in: target"),
        ({"model": other_model}, "differs in: model"),
    ]:
        args = {"pool": pool, "target": target, "model": model, "config": CONFIG, **changes}
        with pytest.raises(ParamError, match=rf"holds a different retrain run.*{message}"):
            retrain(tokenizer=tokenizer, out_dir=base.path, progress=False, **args)
    assert sorted(p.name for p in base.path.rglob("*")) == listing

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ParamError, match=r"not empty and holds no retrain.json"):
        retrain(pool, target, model, tokenizer, tmp_path, CONFIG, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_divergence_is_recorded_and_the_others_go_on(retrain_data, tiny_lm, tmp_path):
    pool, target = retrain_data
    model, tokenizer = tiny_lm
    config = replace(CONFIG, models=3, finetune=replace(FINETUNE, learning_rate=1e30))
    runs = retrain(pool, target, model, tokenizer, tmp_path / "huge", config, progress=False)
    assert runs.diverged.all() and not runs.done.any() and not runs.pending.any()
    assert np.isnan(runs.outcomes).all()
    for record in runs.records:
        assert record["status"] == "diverged" and record["stage"] == "training"
        assert 1 <= record["step"] <= 4 and record["loss"] in ("nan", "inf", "-inf")
        assert record["trained_steps"] == record["step"] - 1
    assert "0 done, 3 diverged, 0 pending" in runs.summary()


def test_one_diverged_model_does_not_stop_the_others(retrain_data, tiny_lm, tmp_path,
                                                      monkeypatch):  # fmt: skip
    pool, target = retrain_data
    model, tokenizer = tiny_lm
    real = harness_module.train_steps
    calls = []

    def second_call_diverges(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise TrainingDiverged(3, float("inf"), what="fine-tuning")
        return real(*args, **kwargs)

    monkeypatch.setattr(harness_module, "train_steps", second_call_diverges)
    config = replace(CONFIG, models=3)
    runs = retrain(pool, target, model, tokenizer, tmp_path / "mixed", config, progress=False)
    assert runs.done.tolist() == [True, False, True]
    assert runs.diverged.tolist() == [False, True, False]
    assert runs.records[1]["step"] == 3 and runs.records[1]["loss"] == "inf"
    assert np.isnan(runs.outcomes[1]).all() and np.isfinite(runs.outcomes[[0, 2]]).all()


def test_vary_seed_gives_each_model_its_own_training_seed(base, retrain_data, tiny_lm, tmp_path):
    pool, target = retrain_data
    model, tokenizer = tiny_lm
    config = replace(CONFIG, models=2, vary_seed=True)
    seeds = [config.training_seed(m) for m in range(2)]
    assert seeds[0] != seeds[1] and seeds == [config.training_seed(m) for m in range(2)]
    runs = retrain(pool, target, model, tokenizer, tmp_path / "vary", config, progress=False)
    assert [record["seed"] for record in runs.records] == seeds
    np.testing.assert_array_equal(runs.masks, base.masks[:2])  # same subsets, other training
    assert not np.array_equal(runs.outcomes, base.outcomes[:2])


def test_bad_requests_are_refused_before_any_work(retrain_data, tiny_lm, tmp_path):
    pool, target = retrain_data
    model, tokenizer = tiny_lm
    out = tmp_path / "never"
    cases = [
        ({"config": replace(CONFIG, fraction=0.01)}, "is 0 records"),
        ({"config": replace(CONFIG, fraction=0.99)}, "is 40 records"),
        ({"shard": (2, 2)}, r"shard must be \(i, n\)"),
        ({"target": Pool([])}, "target is empty"),
    ]
    for changes, message in cases:
        args = {"target": target, "config": CONFIG, "shard": (0, 1), **changes}
        with pytest.raises(ParamError, match=message):
            retrain(pool, model=model, tokenizer=tokenizer, out_dir=out, progress=False, **args)
    assert not out.exists()
    for changes, message in [
        ({"models": 0}, "models must be >= 1"),
        ({"fraction": 1.0}, r"fraction must be in \(0, 1\)"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"finetune": {"max_steps": 3}}, "finetune must be a FinetuneConfig"),
    ]:
        with pytest.raises(ParamError, match=f"retrain: {message}"):
            RetrainConfig(**changes)


def test_load_runs_checks_what_it_reads(base, retrain_data, tmp_path):
    pool, target = retrain_data
    with pytest.raises(ParamError, match=r"holds no retrain.json"):
        load_runs(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"kind": "selectkit.finetune"}))
    with pytest.raises(ParamError, match=r"is not a version 1 selectkit.retrain manifest"):
        load_runs(tmp_path)

    out = tmp_path / "copy"
    shutil.copytree(base.path, out)
    model_files(out, 1)[0].write_bytes(b"not numpy")
    with pytest.raises(ParamError, match=r"model-000001.npy is not a readable .npy.*delete it"):
        load_runs(out)
    np.save(model_files(out, 1)[0], np.zeros(3))
    with pytest.raises(ParamError, match=r"expected float64 \(6,\)"):
        load_runs(out)
    (out / "masks.npy").unlink()
    with pytest.raises(ParamError, match="creation was interrupted"):
        load_runs(out)

    base.check_matches(pool, target)
    with pytest.raises(ParamError, match=r"the pool .* is not the one the models .* trained on"):
        base.check_matches(target, target)
    with pytest.raises(ParamError, match=r"the target .* evaluated on"):
        base.check_matches(pool, pool)
