"""Embeddings in the store: pooling against a direct computation, every pooling and span,
skipped rows, shards and resume to the bytes of one run, a second run read from the store."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import torch

import selectkit.features.embeddings as embeddings
from selectkit import ExecutorConfig
from selectkit import embed as embed_anywhere
from selectkit.api import load_model, load_records_from_list
from selectkit.data.pool import Pool, Record
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError
from selectkit.features.embeddings import EmbeddingConfig, embed, embedding_tokens
from selectkit.host import get_host
from selectkit.store import FeatureStore, RowStatus

CONFIG = EmbeddingConfig(batch_size=3, max_length=96)


@pytest.fixture(scope="module")
def pool():
    return load_records_from_list(make_records(1, seed=3), group_field="family")


def run(pool, model, store, **options):
    options = {"config": CONFIG, "progress": False, "host": get_host(), **options}
    return embed(pool, model, store=store, **options)


def digests(entry) -> dict[str, str]:
    assert entry.complete
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in entry.path.glob("*.npy")}


def _direct(model, item, layer: int, pooling: str, span: str) -> np.ndarray:
    """One example alone (no padding), pooled by a loop written out."""
    with torch.no_grad():
        hidden = model(
            input_ids=torch.tensor([item.input_ids]), output_hidden_states=True
        ).hidden_states[layer][0]
    picked = [
        t for t, counted in enumerate(item.loss_mask)
        if span == "both" or (span == "response") == counted
    ]  # fmt: skip
    if pooling == "last":
        return hidden[picked[-1]].numpy()
    weights = [1.0 if pooling == "mean" else float(t + 1) for t in picked]
    total = sum(w * hidden[t] for w, t in zip(weights, picked, strict=True))
    return (total / sum(weights)).numpy()


@pytest.mark.parametrize("pooling", ["mean", "weighted_mean", "last"])
@pytest.mark.parametrize("span", ["both", "response", "prompt"])
def test_rows_are_the_pooled_hidden_states(pool, tmp_path, pooling, span):
    loaded = load_model("tiny-llama")
    config = EmbeddingConfig(batch_size=3, max_length=96, pooling=pooling, span=span, layer=-2)
    (entry,) = run(pool, loaded, FeatureStore(tmp_path), config=config)
    assert entry.dim == loaded.model.config.hidden_size and entry.complete
    tokens = embedding_tokens(pool, loaded.tokenizer, config)
    rows = entry.read(0, len(pool))
    for k in (0, 4, len(pool) - 1):
        expected = _direct(loaded.model, tokens[k], -2, pooling, span)
        np.testing.assert_allclose(rows[k], expected, rtol=1e-4, atol=1e-5)


def test_a_record_whose_span_is_empty_is_a_skipped_row(tmp_path):
    """Its prompt span is empty when every token is the response's (raw text under a
    tokenizer that adds no token of its own)."""
    records = [
        Record(id="q", prompt="What is 2 + 2?", response="4"),
        Record(id="raw", prompt="", response="plain text"),
    ]
    loaded = load_model("tiny-llama")
    config = EmbeddingConfig(batch_size=2, max_length=64, span="prompt")
    tokens = embedding_tokens(Pool(records), loaded.tokenizer, config)
    tokens[1] = replace(tokens[1], loss_mask=[True] * len(tokens[1].input_ids))
    (entry,) = run(Pool(records), loaded, FeatureStore(tmp_path), config=config, tokens=tokens)
    assert entry.status().tolist() == [RowStatus.DONE, RowStatus.SKIPPED_EMPTY]
    assert entry.read(0, 1).any() and not entry.read(1, 2).any()


def test_shards_and_a_resumed_run_give_the_bytes_of_one_run(pool, tmp_path, monkeypatch):
    loaded = load_model("tiny-llama")
    (whole,) = run(pool, loaded, FeatureStore(tmp_path / "one"))
    split = FeatureStore(tmp_path / "split")
    run(pool, loaded, split, shard=(1, 2))
    (parted,) = run(pool, loaded, split, shard=(0, 2))
    assert parted.id == whole.id and digests(parted) == digests(whole)

    real = embeddings.pool_hidden
    calls = []

    def stops_after_two_blocks(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)

    stopped = FeatureStore(tmp_path / "stopped")
    with monkeypatch.context() as patch:
        patch.setattr(embeddings, "pool_hidden", stops_after_two_blocks)
        with pytest.raises(KeyboardInterrupt):
            run(pool, loaded, stopped)
    (resumed,) = run(pool, loaded, stopped)
    assert digests(resumed) == digests(whole)

    monkeypatch.setattr(embeddings, "pool_hidden", lambda *a: pytest.fail("the model ran"))
    (again,) = run(pool, loaded, FeatureStore(tmp_path / "one"))
    assert again.id == whole.id


def test_what_changes_the_rows_makes_a_new_entry(pool, tmp_path):
    loaded = load_model("tiny-llama")
    store = FeatureStore(tmp_path)
    ids = {
        run(pool, loaded, store, config=config)[0].id
        for config in (
            CONFIG,
            EmbeddingConfig(batch_size=3, max_length=96, pooling="mean"),
            EmbeddingConfig(batch_size=3, max_length=96, span="response"),
            EmbeddingConfig(batch_size=3, max_length=96, layer=0),
        )
    }
    assert len(ids) == 4


def test_bad_requests_are_refused(pool, tmp_path):
    with pytest.raises(ParamError, match="pooling must be mean, weighted_mean or last"):
        EmbeddingConfig(pooling="max")  # type: ignore[arg-type]
    with pytest.raises(ParamError, match="span must be prompt, response or both"):
        EmbeddingConfig(span="all")  # type: ignore[arg-type]
    with pytest.raises(ParamError, match=r"layer 9 does not exist: .* hidden states -\d+\.\.\d+"):
        run(pool, "tiny-llama", FeatureStore(tmp_path), config=EmbeddingConfig(layer=9))
    with pytest.raises(ParamError, match="the pool is empty"):
        run(Pool([]), "tiny-llama", FeatureStore(tmp_path))


def test_on_worker_processes_the_entry_has_the_bytes_of_one_process(pool, tmp_path):
    (here,) = embed_anywhere(
        pool, "tiny-llama", config=CONFIG, store=FeatureStore(tmp_path / "here"), progress=False
    )
    (there,) = embed_anywhere(
        pool,
        "tiny-llama",
        config=CONFIG,
        store=FeatureStore(tmp_path / "there"),
        progress=False,
        executor=ExecutorConfig(executor="processes", workers=2),
    )
    assert there.id == here.id and digests(there) == digests(here)
