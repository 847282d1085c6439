"""Forward-only statistics in the store: exact columns, one entry per model state, reuse, new
keys, shards from separate processes, resume after an interruption."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import selectkit.features.statistics as statistics
from selectkit.api import load_model, load_pool, load_records_from_list, select
from selectkit.data.pool import Pool, Record
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError, StoreError
from selectkit.features.featurize import block_order
from selectkit.features.statistics import (
    COLUMNS,
    StatisticsConfig,
    statistics_tokens,
    token_statistics,
)
from selectkit.host import get_host
from selectkit.models.lora import load_adapter
from selectkit.store import FeatureStore, Layout, RowStatus, verify_entry
from selectkit.train.warmup import WarmupConfig, warmup

CONFIG = StatisticsConfig(batch_size=3, max_length=96)


@pytest.fixture(scope="module")
def pool():
    return load_records_from_list(make_records(1, seed=3), group_field="family")


@pytest.fixture(scope="module")
def run_dir(pool, tmp_path_factory):
    """A LoRA warmup of two checkpoints on ``pool``."""
    out = tmp_path_factory.mktemp("warmup")
    loaded = load_model("tiny-llama")
    config = WarmupConfig(fraction=1.0, epochs=2, batch_size=4, learning_rate=1e-3)
    warmup(pool, loaded.model, loaded.tokenizer, out, config, max_length=96, progress=False)
    return out


def run(pool, model, store, **options):
    options = {"config": CONFIG, "progress": False, "host": get_host(), **options}
    return token_statistics(pool, model, store=store, **options)


def digests(entry) -> dict[str, str]:
    """The SHA-256 of every ``.npy`` file of a complete entry."""
    assert entry.complete
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in entry.path.glob("*.npy")}


def _one_example(model, item) -> tuple[float, float]:
    """Loss and EL2N of one example, alone (no padding), token by token."""
    ids = torch.tensor([item.input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    losses, errors = [], []
    for t in range(1, len(item.input_ids)):
        if item.loss_mask[t]:
            losses.append(float(torch.nn.functional.cross_entropy(logits[t - 1], ids[0, t])))
            onehot = torch.zeros(logits.shape[-1])
            onehot[item.input_ids[t]] = 1
            errors.append(float((torch.softmax(logits[t - 1], -1) - onehot).norm()))
    return float(np.mean(losses)), float(np.mean(errors))


def test_columns_are_each_records_loss_and_el2n_at_each_checkpoint(pool, run_dir, tmp_path):
    loaded = load_model("tiny-llama")
    entries = run(pool, loaded, FeatureStore(tmp_path), checkpoints=[run_dir])
    folders = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(entries) == 2 and entries[0].id != entries[1].id
    tokens = statistics_tokens(pool, loaded.tokenizer, CONFIG)
    for entry, folder in zip(entries, folders, strict=True):
        assert entry.complete and entry.dim == 0 and entry.layout.columns == COLUMNS
        assert (entry.status() == RowStatus.DONE).all()
        assert entry.meta["checkpoint"]["path"] == str(folder.resolve())
        model = load_adapter(load_model("tiny-llama").model, folder).eval()
        expected = np.array([_one_example(model, item) for item in tokens])
        np.testing.assert_allclose(entry.column("loss"), expected[:, 0], rtol=1e-5)
        np.testing.assert_allclose(entry.column("el2n"), expected[:, 1], rtol=1e-5)
    assert loaded.model.__class__.__name__ == "LlamaForCausalLM"  # adapters removed again


def test_without_checkpoints_the_model_as_loaded_and_the_response_alone(tmp_path):
    records = [
        Record(id="a", prompt="Convert 3 km to m.", response="3000 m"),
        Record(id="b", prompt="hi", response="hello there, how are you today?"),
    ]
    pool = Pool(records)
    loaded = load_model("tiny-llama")
    loaded.model.train()
    store = FeatureStore(tmp_path)
    (whole,) = run(pool, loaded, store)
    (alone,) = run(pool, loaded, store, config=replace(CONFIG, examples="response"))
    assert loaded.model.training  # the mode it was given back in
    assert whole.meta["checkpoint"] == {} and whole.key["adapter_weights"] is None
    assert whole.id != alone.id and alone.key["pool"] == whole.key["pool"]
    loaded.model.eval()
    for k, record in enumerate(records):
        bare = Pool([Record(id=record.id, prompt="", response=record.response)])
        (item,) = statistics_tokens(bare, loaded.tokenizer, CONFIG)
        loss, el2n = _one_example(loaded.model, item)
        assert alone.column("loss")[k] == pytest.approx(loss, rel=1e-5)
        assert alone.column("el2n")[k] == pytest.approx(el2n, rel=1e-5)
    assert (whole.column("loss") != alone.column("loss")).all()


def test_a_second_pass_reads_the_store_and_what_changes_the_numbers_makes_a_new_entry(
    pool, run_dir, tmp_path, monkeypatch
):
    loaded = load_model("tiny-llama")
    store = FeatureStore(tmp_path)
    first = run(pool, loaded, store, checkpoints=[run_dir])

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran although the store holds these statistics")

    with monkeypatch.context() as patch:
        patch.setattr(statistics, "forward_statistics", no_model)
        again = run(pool, loaded, store, checkpoints=[run_dir])
        # batch size is not in the key: a later run adopts the entry's blocks
        bigger = run(
            pool, loaded, store, checkpoints=[run_dir], config=replace(CONFIG, batch_size=8)
        )
        regrouped = load_records_from_list(make_records(1, seed=3))  # same content, no groups
        assert run(regrouped, loaded, store, checkpoints=[run_dir])[0].id == first[0].id
    assert [e.id for e in again] == [e.id for e in bigger] == [e.id for e in first]
    base = run(pool, loaded, store)[0].id
    changed = [
        base,
        run(pool, loaded, store, config=replace(CONFIG, examples="response"))[0].id,
        run(pool, loaded, store, config=replace(CONFIG, order="pool"))[0].id,
        run(pool, loaded, store, config=replace(CONFIG, max_length=64))[0].id,
        run(pool, loaded, store, config=replace(CONFIG, template="plain"))[0].id,
        run(pool, loaded, store, config=replace(CONFIG, truncation="right", max_length=400))[0].id,
        run(Pool(list(pool)[:-1]), loaded, store)[0].id,
        run(pool, load_model("tiny-gpt2"), store)[0].id,
    ]
    assert len(set(changed + [e.id for e in first])) == len(changed) + 2


def test_blocks_are_longest_first_or_in_pool_order(pool, tmp_path):
    loaded = load_model("tiny-llama")
    store = FeatureStore(tmp_path)
    (by_length,) = run(pool, loaded, store)
    (in_order,) = run(pool, loaded, store, config=replace(CONFIG, order="pool"))
    tokens = statistics_tokens(pool, loaded.tokenizer, CONFIG)
    np.testing.assert_array_equal(by_length.layout.order, block_order(tokens))
    np.testing.assert_array_equal(in_order.layout.order, np.arange(len(pool)))
    assert by_length.layout.block_rows == in_order.layout.block_rows == CONFIG.batch_size
    np.testing.assert_allclose(by_length.column("loss"), in_order.column("loss"), rtol=1e-5)


_SHARD = """
import sys
from selectkit.api import load_pool
from selectkit.features.statistics import StatisticsConfig, token_statistics
from selectkit.host import get_host
from selectkit.store import FeatureStore

pool_file, root, run_dir = sys.argv[1:]
(entry, _) = token_statistics(
    load_pool(pool_file), "tiny-llama", checkpoints=[run_dir],
    config=StatisticsConfig(batch_size=3, max_length=96), store=FeatureStore(root),
    shard=(1, 2), progress=False, host=get_host(),
)
print(entry.complete)
"""


def test_shards_filled_by_separate_processes_end_with_the_bytes_of_one_run(run_dir, tmp_path):
    """Shard 1 of 2 in a process of its own, from plain inputs only (a pool file, a model
    spec, checkpoint folders, the config, a store folder), then shard 0 here."""
    rows = make_records(1, seed=3)
    pool_file = tmp_path / "pool.jsonl"
    pool_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    root = tmp_path / "split"
    worker = subprocess.run(
        [sys.executable, "-c", _SHARD, str(pool_file), str(root), str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.strip() == "False"  # half the blocks are still pending
    pool = load_pool(pool_file)
    split = run(pool, "tiny-llama", FeatureStore(root), checkpoints=[run_dir], shard=(0, 2))
    whole = run(pool, "tiny-llama", FeatureStore(tmp_path / "one"), checkpoints=[run_dir])
    for parted, single in zip(split, whole, strict=True):
        assert parted.id == single.id
        assert digests(parted) == digests(single)
        assert verify_entry(parted) == []


def test_an_interrupted_pass_resumes_to_the_bytes_of_one_run(pool, tmp_path, monkeypatch):
    loaded = load_model("tiny-llama")
    real = statistics.forward_statistics
    calls = []

    def stops_after_two_blocks(model, batch):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(len(batch["input_ids"]))
        return real(model, batch)

    store = FeatureStore(tmp_path / "stopped")
    with monkeypatch.context() as patch:
        patch.setattr(statistics, "forward_statistics", stops_after_two_blocks)
        with pytest.raises(KeyboardInterrupt):
            run(pool, loaded, store)
    (stopped,) = store.entries()
    assert not stopped.complete
    assert (stopped.status() == RowStatus.DONE).sum() == sum(calls) == 2 * CONFIG.batch_size
    done = []
    (resumed,) = run(pool, loaded, store, progress=done.append)
    (fresh,) = run(pool, loaded, FeatureStore(tmp_path / "fresh"))
    assert sum(done) == len(pool)  # the rows found done, then each block's as it came
    assert resumed.id == stopped.id == fresh.id
    assert digests(resumed) == digests(fresh)


_SLOW_SELECT = """
import json, sys, time
import selectkit.features.statistics as statistics
from selectkit import select
from selectkit.api import load_pool

real = statistics.forward_statistics

def slow(model, batch):
    time.sleep(0.1)
    return real(model, batch)

statistics.forward_statistics = slow
pool_file, method, params, cache = sys.argv[1:]
select(load_pool(pool_file), method, 1, params=json.loads(params), cache_dir=cache)
"""


def _entries(root: Path) -> dict[str, dict[str, str]]:
    """Every entry of a store folder: its ``.npy`` files' SHA-256."""
    return {
        entry.name: {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in entry.glob("*.npy")
        }
        for entry in root.iterdir()
        if len(entry.name) == 64
    }


@pytest.mark.parametrize("method", ["el2n", "ifd"])
def test_a_killed_select_resumes_to_the_same_statistics_and_scores(method, run_dir, tmp_path):
    """EL2N at the two checkpoints of a warmup, IFD with and without the instruction: killed
    (SIGKILL) part-way through its first entry, then run again."""
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in make_records(2, seed=9)))
    params = {"model": "tiny-llama", "max_length": 96, "batch_size": 2}
    if method == "el2n":
        params["checkpoints"] = str(run_dir)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_SELECT, str(path), method, json.dumps(params), str(killed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        done = [(np.load(s) == RowStatus.DONE).sum() for s in killed.glob("[0-9a-f]*/status.npy")]
        if any(4 <= count < 20 for count in done):
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    (stopped,) = [entry for entry in FeatureStore(killed).entries() if not entry.complete]
    assert 0 < (stopped.status() == RowStatus.DONE).sum() < stopped.num_rows

    pool = load_pool(path)
    resumed = select(pool, method, 1, params=params, cache_dir=killed)
    fresh = select(pool, method, 1, params=params, cache_dir=tmp_path / "fresh")
    np.testing.assert_array_equal(resumed.scores, fresh.scores)
    assert _entries(killed) == _entries(tmp_path / "fresh")
    assert len(_entries(killed)) == 2  # two checkpoints; with and without the instruction


def test_records_without_tokens_are_stored_as_skipped(pool, tmp_path):
    loaded = load_model("tiny-llama")
    tokens = statistics_tokens(pool, loaded.tokenizer, CONFIG)
    tokens[1] = None
    (entry,) = run(pool, loaded, FeatureStore(tmp_path), tokens=tokens)
    status = entry.status()
    assert status[1] == RowStatus.SKIPPED_EMPTY and (np.delete(status, 1) == RowStatus.DONE).all()
    assert (
        np.isnan(entry.column("loss")[1]) and np.isfinite(np.delete(entry.column("el2n"), 1)).all()
    )


def test_bad_requests_are_refused(pool, tmp_path):
    loaded = load_model("tiny-llama")
    with pytest.raises(ParamError, match="the pool is empty"):
        run(Pool([]), loaded, FeatureStore(tmp_path))
    with pytest.raises(ParamError, match="2 tokenized examples given for a pool of 10"):
        run(pool, loaded, FeatureStore(tmp_path), tokens=[None, None])
    with pytest.raises(ParamError, match="does not exist"):
        run(pool, loaded, FeatureStore(tmp_path), checkpoints=[tmp_path / "nowhere"])
    for field, value, message in [
        ("batch_size", 0, "batch_size must be >= 1"),
        ("examples", "prompt", "examples must be whole or response"),
        ("order", "random", "order must be length or pool"),
    ]:
        with pytest.raises(ParamError, match=message):
            StatisticsConfig(**{field: value})


def test_a_store_entry_may_hold_columns_only(tmp_path):
    """dim 0: no feature row, only side columns (what a forward-only pass stores)."""
    with pytest.raises(StoreError, match=r"dim 0 \(no feature rows\) must have columns"):
        Layout(3, 0, "float32", 2)
    with pytest.raises(StoreError, match="dim must be a whole number >= 0"):
        Layout(3, -1, "float32", 2, columns=("a",))
    layout = Layout(5, 0, "float32", 2, order=np.array([4, 3, 2, 1, 0]), columns=("a",))
    store = FeatureStore(tmp_path)

    def block(layout, number):
        rows = layout.block_rows_of(number)
        done = np.full(len(rows), RowStatus.DONE, np.uint8)
        return np.zeros((len(rows), 0), np.float32), done, {"a": rows * 1.5}

    entry = store.fill({"k": 1}, layout, block)
    assert entry.complete and entry.file_rows == 6 and entry.read(0, 5).shape == (5, 0)
    np.testing.assert_array_equal(entry.column("a"), np.arange(5) * 1.5)
    assert verify_entry(entry) == []
    with open(entry.path / "col-a.npy", "r+b") as handle:  # one value changed on disk
        handle.seek(-4, 2)
        handle.write(np.float32(9).tobytes())
    problems = verify_entry(entry)
    assert any("row(s) fail their checksum (pool rows 4)" in p for p in problems), problems
    repaired = store.fill({"k": 1}, layout, block)  # the damaged row is computed again
    np.testing.assert_array_equal(repaired.column("a"), np.arange(5) * 1.5)
