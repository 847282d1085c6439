"""Every executor backend against the same checks: the bytes of a one-process run, a worker
killed with SIGKILL part-way and its unit retried to the same bytes, and a unit's errors
brought back as the error the user would have seen in-process.

The Ray tests share one local cluster (``num_cpus=2``), started once for the session.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from selectkit.api import featurize, load_records_from_list
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.synthetic import make_records
from selectkit.errors import RecordError
from selectkit.executors import Executor
from selectkit.executors.processes import LocalProcesses
from selectkit.features.featurize import FeaturizeConfig
from selectkit.store import FeatureSet, FeatureStore, RowStatus

#: Blocks of one row, so a run has enough of them to be killed part-way.
CONFIG = FeaturizeConfig(projection=ProjectionConfig(dim=32), batch_size=1, max_length=64)


@pytest.fixture(scope="module")
def pool():
    return load_records_from_list(make_records(12, seed=3), group_field="family")


@pytest.fixture(scope="module")
def reference(pool, tmp_path_factory) -> str:
    """The bytes of the pool's features extracted in this process."""
    store = FeatureStore(tmp_path_factory.mktemp("reference"))
    (entry,) = featurize(pool, "tiny-llama", config=CONFIG, store=store, progress=False)
    return entry_bytes(entry)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster of 2 CPUs for every Ray test (its start-up takes seconds)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'selectkit[ray]'")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module", params=["processes", "ray"])
def executor(request) -> Iterator[Executor]:
    """Two workers, kept for the module's tests (a killed one is replaced)."""
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
        from selectkit.executors.ray_actors import RayExecutor

        made: Executor = RayExecutor(workers=2, gpu=False)
    else:
        made = LocalProcesses(workers=2)
    with made:
        yield made


def entry_bytes(entry: FeatureSet) -> str:
    """A digest of an entry's data files (its manifest holds times, so it is left out)."""
    digest = hashlib.sha256()
    for path in sorted(entry.path.glob("*.npy")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def kill_part_way(root: Path, pids: Callable[[], list[int]]) -> dict[str, int]:
    """From a thread, SIGKILL the first worker once some rows of the entry under ``root`` are
    done and at least half are pending; returns what it saw when it struck."""
    seen: dict[str, int] = {}

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not seen:
            for status_file in root.glob("*/status.npy"):
                try:
                    status = np.load(status_file)
                except (OSError, ValueError, EOFError):  # being created
                    continue
                done = int((status == RowStatus.DONE).sum())
                live = pids()
                if 0 < done <= len(status) // 2 and live:
                    seen.update(done=done, rows=len(status), pid=live[0])
                    os.kill(live[0], signal.SIGKILL)
                    return
            time.sleep(0.002)

    threading.Thread(target=watch, daemon=True).start()
    return seen


def test_worker_killed_mid_run_is_retried_to_the_same_bytes(executor, pool, reference, tmp_path):
    store = FeatureStore(tmp_path)
    if isinstance(executor, LocalProcesses):  # its workers start with the run
        seen = kill_part_way(tmp_path, executor.worker_pids)
    else:  # Ray's actors exist already: ask once, not from the watching thread
        pids = executor.worker_pids()
        seen = kill_part_way(tmp_path, lambda: pids)
    (entry,) = featurize(
        pool, "tiny-llama", config=CONFIG, store=store, executor=executor, progress=False
    )
    assert seen, "the run ended before a worker could be killed part-way"
    assert 0 < seen["done"] <= seen["rows"] // 2
    assert seen["pid"] not in executor.worker_pids()  # a new worker took its place
    assert entry.complete
    assert entry_bytes(entry) == reference


def test_a_bad_record_is_the_same_error_as_in_process(executor, tmp_path):
    rows = make_records(4, seed=0)
    rows[2]["instruction"] = "word " * 200  # cut from the right, nothing of the response is left
    bad = load_records_from_list(rows)
    config = replace(CONFIG, truncation="right")
    with pytest.raises(RecordError) as in_process:
        featurize(bad, "tiny-llama", config=config, store=FeatureStore(tmp_path / "a"))
    with pytest.raises(RecordError) as remote:
        featurize(
            bad, "tiny-llama", config=config, store=FeatureStore(tmp_path / "b"), executor=executor
        )
    assert str(remote.value) == str(in_process.value)
    assert (remote.value.line, remote.value.field) == (
        in_process.value.line,
        in_process.value.field,
    )


def test_retrain_gives_the_files_of_one_process(executor, tmp_path):
    from selectkit.api import load_model
    from selectkit.models.loading import ModelOptions
    from selectkit.retraining import RetrainConfig, retrain
    from selectkit.retraining.units import retrain_on
    from selectkit.train.finetune import FinetuneConfig

    rows = make_records(4, seed=5)
    pool, target = load_records_from_list(rows[:24]), load_records_from_list(rows[24:30])
    config = RetrainConfig(models=3, finetune=FinetuneConfig(max_steps=3, batch_size=4))
    options = ModelOptions()
    loaded = load_model("tiny-llama", options)
    here = retrain(
        pool, target, loaded.model, loaded.tokenizer, tmp_path / "a", config, progress=False
    )
    there = retrain_on(
        executor, pool, target, "tiny-llama", options, tmp_path / "b", config, progress=False
    )
    assert there.done.all() and here.done.all()
    for name in ["masks.npy", *(f"models/model-{m:06d}.npy" for m in range(3))]:
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
