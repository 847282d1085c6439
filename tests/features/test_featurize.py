"""Extraction into the store: exact rows, reuse, new keys, shards, resume after a kill."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from selectkit.api import featurize, load_model, load_pool, load_records_from_list
from selectkit.compute.gradients import PerExampleGradients
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.batching import pad_batch
from selectkit.data.pool import Pool
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError, RecordError
from selectkit.features.featurize import (
    FeaturizeConfig,
    Featurizer,
    parse_shard,
    tokenize_pool,
)
from selectkit.host import get_host
from selectkit.models.loading import ModelOptions
from selectkit.models.lora import LoraSpec
from selectkit.store import FeatureStore, RowStatus, verify_entry

CONFIG = FeaturizeConfig(projection=ProjectionConfig(dim=64), batch_size=4, max_length=96)


@pytest.fixture(scope="module")
def pool():
    return load_records_from_list(make_records(3, seed=2), group_field="family")


def _checksums(entry) -> dict[str, str]:
    """The SHA-256 of every ``.npy`` file of a complete entry."""
    assert entry.complete
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(entry.path.glob("*.npy"))
    }


def test_rows_are_the_projected_per_example_gradients_in_pool_order(pool, tmp_path):
    loaded = load_model("tiny-llama")
    (entry,) = featurize(pool, loaded, config=CONFIG, store=FeatureStore(tmp_path), progress=False)
    assert entry.complete and entry.num_rows == len(pool) and entry.dim == CONFIG.projection.dim
    assert (entry.status() == RowStatus.DONE).all()
    # Recompute one example at a time, with the same fresh adapter, outside the store.
    from selectkit.models.lora import attach_lora

    model = attach_lora(loaded.model, LoraSpec(), seed=CONFIG.adapter_seed)
    engine = PerExampleGradients(model)
    projector_rows, norms = [], []
    featurizer_projector = Featurizer(
        loaded.__class__(model, loaded.tokenizer, "x"), CONFIG, host=get_host()
    )
    for item in tokenize_pool(pool, loaded.tokenizer, CONFIG):
        grads, _ = engine(pad_batch([item], loaded.tokenizer.pad_token_id))
        norms.append(float(grads.norm()))
        projector_rows.append(featurizer_projector.projectors[0].project(grads)[0])
    expected = torch.stack(projector_rows).numpy()
    np.testing.assert_allclose(entry.read(0, len(pool)), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(entry.column("grad_norm"), norms, rtol=1e-4)
    assert np.all(entry.column("loss") > 0)
    assert entry.meta["parameters"][0].endswith("lora_A.default.weight")
    assert entry.meta["gradient_dim"] == engine.dim


def test_same_request_reuses_the_entry_and_any_change_makes_a_new_one(pool, tmp_path):
    store = FeatureStore(tmp_path)
    loaded = load_model("tiny-llama")
    (first,) = featurize(pool, loaded, config=CONFIG, store=store, progress=False)
    before = _checksums(first)
    calls = []
    original = PerExampleGradients.__call__
    try:
        PerExampleGradients.__call__ = lambda self, b: calls.append(1) or original(self, b)
        (again,) = featurize(
            pool,
            loaded,
            config=FeaturizeConfig(
                projection=ProjectionConfig(dim=64), batch_size=8, max_length=96
            ),
            store=store,
            progress=False,
        )
    finally:
        PerExampleGradients.__call__ = original
    assert again.id == first.id and not calls and _checksums(again) == before
    assert again.layout.block_rows == CONFIG.batch_size
    ids = {first.id}
    changes = [
        {
            "config": FeaturizeConfig(
                projection=ProjectionConfig(dim=32), batch_size=4, max_length=96
            )
        },
        {
            "config": FeaturizeConfig(
                projection=ProjectionConfig(dim=64, seed=1), batch_size=4, max_length=96
            )
        },
        {
            "config": FeaturizeConfig(
                projection=ProjectionConfig(dim=64), gradient="sign", batch_size=4, max_length=96
            )
        },
        {
            "config": FeaturizeConfig(
                projection=ProjectionConfig(dim=64, kind="rademacher"), batch_size=4, max_length=96
            )
        },
        {
            "config": FeaturizeConfig(
                projection=ProjectionConfig(dim=64), template="plain", batch_size=4, max_length=96
            )
        },
        {
            "config": FeaturizeConfig(
                projection=ProjectionConfig(dim=64, dtype="float16"), batch_size=4, max_length=96
            )
        },
        {"config": CONFIG, "lora": LoraSpec(r=4)},
        {"config": CONFIG, "pool": load_records_from_list(make_records(3, seed=3))},
    ]
    for change in changes:
        (entry,) = featurize(
            change.get("pool", pool),
            loaded,
            config=change["config"],
            lora=change.get("lora", LoraSpec()),
            store=store,
            progress=False,
        )
        ids.add(entry.id)
    assert len(ids) == len(changes) + 1
    float16 = next(e for e in store.entries() if e.key["dtype"] == "float16")
    np.testing.assert_allclose(
        float16.read(0, len(pool)).astype(np.float32), first.read(0, len(pool)), atol=2e-3
    )


def test_regrouping_the_pool_keeps_the_features(pool, tmp_path):
    store = FeatureStore(tmp_path)
    loaded = load_model("tiny-llama")
    (grouped,) = featurize(pool, loaded, config=CONFIG, store=store, progress=False)
    plain = load_records_from_list(make_records(3, seed=2))
    (ungrouped,) = featurize(plain, loaded, config=CONFIG, store=store, progress=False)
    assert plain.fingerprint != pool.fingerprint
    assert grouped.id == ungrouped.id


def test_shards_end_with_the_bytes_of_one_run(pool, tmp_path):
    loaded = load_model("tiny-llama")
    (whole,) = featurize(
        pool, loaded, config=CONFIG, store=FeatureStore(tmp_path / "one"), progress=False
    )
    split = FeatureStore(tmp_path / "split")
    for index in (1, 0, 2):
        (part,) = featurize(
            pool, loaded, config=CONFIG, store=split, shard=(index, 3), progress=False
        )
        assert part.complete == (index == 2)
    assert part.id == whole.id
    assert _checksums(part) == _checksums(whole)


def _done_rows(root: Path) -> int:
    for status in root.glob("[0-9a-f]*/status.npy"):
        return int((np.load(status) == RowStatus.DONE).sum())
    return 0


def test_a_killed_featurize_process_resumes_to_identical_bytes(tmp_path):
    rows = make_records(12, seed=5)
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store_root = tmp_path / "killed"
    command = [
        sys.executable, "-m", "selectkit", "featurize", str(path), "--model", "tiny-llama",
        "--projection-dim", "64", "--batch-size", "2", "--max-length", "96", "--cache-dir",
        str(store_root), "--quiet",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _done_rows(store_root) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_at_kill = _done_rows(store_root)
    assert 0 < done_at_kill < len(rows), "the process must die part-way for this test to mean much"

    pool = load_pool(path)
    store = FeatureStore(store_root)
    (entry,) = store.entries()
    assert not entry.complete
    loaded = load_model("tiny-llama")
    config = FeaturizeConfig(projection=ProjectionConfig(dim=64), batch_size=2, max_length=96)
    (resumed,) = featurize(pool, loaded, config=config, store=store, progress=False)
    (fresh,) = featurize(
        pool, loaded, config=config, store=FeatureStore(tmp_path / "fresh"), progress=False
    )
    assert resumed.id == fresh.id == entry.id
    assert _checksums(resumed) == _checksums(fresh)
    assert verify_entry(resumed) == []


def test_unusable_examples_fail_before_any_work_or_are_skipped_by_policy(tmp_path):
    rows = make_records(1, seed=4)
    rows[3]["instruction"] = "x " * 200  # the prompt alone fills max_length
    pool = load_records_from_list(rows)
    store = FeatureStore(tmp_path)
    cut = {
        "projection": ProjectionConfig(dim=16),
        "batch_size": 4,
        "max_length": 200,
        "truncation": "right",
    }
    with pytest.raises(RecordError, match=r"<records>:4: .*truncated away.*on_invalid"):
        featurize(pool, "tiny-llama", config=FeaturizeConfig(**cut), store=store)
    assert store.entries() == []
    (entry,) = featurize(
        pool,
        "tiny-llama",
        config=FeaturizeConfig(**cut, on_invalid="skip"),
        store=store,
        progress=False,
    )
    status = entry.status()
    assert status[3] == RowStatus.SKIPPED_EMPTY and (np.delete(status, 3) == RowStatus.DONE).all()
    assert not entry.read(3, 4).any() and np.isnan(entry.column("loss")[3])


def test_non_finite_gradients_are_an_error_or_skipped_rows(pool, tmp_path):
    loaded = load_model("tiny-llama")
    with torch.no_grad():
        loaded.model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    store = FeatureStore(tmp_path)
    with pytest.raises(RecordError, match="non-finite"):
        featurize(pool, loaded, config=CONFIG, store=store, progress=False)
    (entry,) = store.entries()
    assert not (entry.status() == RowStatus.DONE).any()
    (entry,) = featurize(
        pool,
        loaded,
        config=FeaturizeConfig(
            projection=ProjectionConfig(dim=64), batch_size=4, max_length=96, on_invalid="skip"
        ),
        store=store,
        progress=False,
    )
    assert (entry.status() == RowStatus.SKIPPED_NONFINITE).all()


def test_named_parameters_and_bad_requests(pool, tmp_path):
    store = FeatureStore(tmp_path)
    (entry,) = featurize(
        pool,
        "tiny-llama",
        param_names=["model.norm.weight"],
        config=CONFIG,
        store=store,
        progress=False,
    )
    assert entry.meta["parameters"] == ["model.norm.weight"]
    assert entry.meta["gradient_dim"] == 64
    with pytest.raises(ParamError, match="adam"):
        featurize(pool, "tiny-llama", config=FeaturizeConfig(gradient="adam"), store=store)
    with pytest.raises(ParamError, match="not both"):
        featurize(pool, "tiny-llama", checkpoints=[tmp_path], param_names=["x"], store=store)
    with pytest.raises(ParamError, match="empty"):
        featurize(Pool([]), "tiny-llama", store=store)
    with pytest.raises(ParamError, match="i/n"):
        parse_shard("2")
    with pytest.raises(ParamError, match="0 <= i < n"):
        parse_shard("3/3")


def test_a_bfloat16_model_gives_float32_rows_close_to_float32(pool, tmp_path):
    store = FeatureStore(tmp_path)
    (full,) = featurize(pool, "tiny-llama", config=CONFIG, store=store, progress=False)
    (half,) = featurize(
        pool,
        "tiny-llama",
        config=CONFIG,
        store=store,
        model_options=ModelOptions(dtype="bfloat16"),
        progress=False,
    )
    assert half.key["compute_dtype"] == "bfloat16" and half.id != full.id
    a, b = full.read(0, len(pool)), half.read(0, len(pool))
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert b.dtype == np.float32 and cosine.min() > 0.95


def test_an_unknown_projector_is_refused_before_anything_is_claimed(tmp_path):
    pool = load_records_from_list(make_records(2, seed=0))
    root = tmp_path / "store"
    config = FeaturizeConfig(projection=ProjectionConfig(kind="nope"), max_length=96)
    with pytest.raises(ParamError, match="no projector named 'nope'"):
        featurize(pool, "tiny-llama", config=config, store=FeatureStore(root))
    assert not root.exists() or not any(root.rglob("*")), sorted(root.rglob("*"))
