"""DSIR over chunks of a pool (``hash_chunk``, ``weight_chunk``, the executor's units): the bits
of the in-process pass, with a columnar pool sent to workers as a reference."""

from __future__ import annotations

import json
import pickle
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from selectkit_dsir import DSIR, DSIRParams
from selectkit_dsir.chunks import DsirChunk, HashConfig, fit_on, hash_chunk, weight_chunk
from selectkit_dsir.engine import HashedNgrams, bucket_log_ratio

from selectkit.api import load_pool, select
from selectkit.data.pool import Pool
from selectkit.executors import ExecutorConfig, Worker
from selectkit.host import get_host
from selectkit.methods import Context

WORDS = ["the", "cat", "sat", "on", "a", "mat", "while", "numpy", "arrays", "hold", "code"]


def _rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "id": f"r{i}",
            "instruction": " ".join(rng.choice(WORDS, size=1 + i % 5)),
            "input": "" if i % 2 else "x = np.zeros(3)",
            "output": " ".join(rng.choice(WORDS, size=2 + i % 9)),
        }
        for i in range(n)
    ]


@pytest.fixture
def pools(tmp_path: Path) -> tuple[Pool, Pool, Pool]:
    """The same 3,000-record pool in memory and columnar, and a small target."""
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(3000, 0)), "utf-8")
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in _rows(20, 1)), "utf-8")
    host = get_host()
    memory = load_pool(path, host=host)
    columnar = load_pool(path, host=host, columnar=True, cache_dir=tmp_path / "cache")
    return memory, columnar, load_pool(target, host=host)


class PicklingRunner:
    """An executor as far as DSIR can tell: every unit crosses a pickle, as to a worker."""

    workers = 2

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def run(self, units, *, label, progress):
        results = []
        for unit in units:
            sent = pickle.dumps(unit)
            self.sizes.append(len(sent))
            results.append(pickle.loads(sent).run(Worker(get_host()), lambda done: None))
        return results


def test_chunks_give_the_bits_of_one_pass(pools) -> None:
    memory, columnar, target = pools
    config = HashConfig(num_buckets=997, ngrams=2)
    with HashedNgrams(997, 2, n_jobs=1) as engine:
        expected = engine.fit_log_weights(target.texts, memory.texts, 0.5, min_length=3)
        target_counts = engine.counts(target.texts)
    bounds = [0, 1, 700, 2048, 2049, 3000]
    counts = sum(hash_chunk(columnar, a, b, config) for a, b in pairwise(bounds))
    assert np.array_equal(counts, sum(hash_chunk(memory, 0, 3000, config) for _ in [0]))
    ratio = bucket_log_ratio(target_counts, counts, 0.5)
    weights = np.concatenate(
        [weight_chunk(columnar, a, b, config, ratio, 3) for a, b in pairwise(bounds)]
    )
    assert weights.tobytes() == expected.tobytes()


@pytest.mark.parametrize("which", [0, 1])
def test_dsir_on_an_executor_selects_the_same(pools, which) -> None:
    pool, target = pools[which], pools[2]
    method = DSIR(DSIRParams(num_buckets=4096, min_example_length=2, smoothing=0.5))
    here = method.objective(pool, target, Context(host=get_host(), n_jobs=1)).values
    runner = PicklingRunner()
    there = method.objective(pool, target, Context(host=get_host(), executor=runner)).values
    assert there.tobytes() == here.tobytes()
    if pool.by_reference:  # a reference to the file, never the records
        assert max(runner.sizes) < 36_000  # the log-ratio (4096 float64) and a path
    values = fit_on(runner, target.texts, pool, HashConfig(4096), 0.5, min_length=2,
                    unit_records=333)  # fmt: skip
    assert values.tobytes() == here.tobytes()


def test_a_unit_names_its_records() -> None:
    unit = DsirChunk(("a b", "c"), 10, 12, HashConfig(8))
    assert unit.size == 2 and unit.label == "dsir n-gram counts of records 10-11"
    done = []
    assert unit.run(Worker(get_host()), done.append).sum() == 4 and done == [2]


@pytest.mark.slow
def test_dsir_on_local_processes_selects_the_same(pools, tmp_path) -> None:
    _, pool, target = pools
    request = {"method": "dsir", "budget": 300, "target": target, "cache_dir": tmp_path / "c"}
    here = select(pool, **request)
    there = select(pool, executor=ExecutorConfig("processes", workers=2), **request)
    assert there.ids == here.ids and there.scores.tobytes() == here.scores.tobytes()
