"""The warmup cache: a complete cached warmup is only read (no lock file, no write access);
a warmup that must be trained where nothing can be written is a clear error."""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest

from selectkit.api import load_records_from_list
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.synthetic import make_records
from selectkit.errors import StoreError
from selectkit.features import warmups as warmup_module
from selectkit.features.params import GradientParams, WarmupRuns
from selectkit.features.pipeline import GradientPipeline
from selectkit.host import Host, get_host
from selectkit.methods import Context

SMALL = {"model": "tiny-llama", "projection": ProjectionConfig(dim=16), "max_length": 96}
#: The warmup of SMALL: half the pool, one epoch.
ONE = WarmupRuns(fraction=0.5, epochs=1)


@pytest.fixture(scope="module")
def pool():
    return load_records_from_list(make_records(2, seed=3))


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def _unwritable(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", "warmup/x.lock")


def test_a_complete_warmup_is_read_without_writing(pool, tmp_path, monkeypatch):
    # Before: the cache folder was made and a lock file created before even looking, so a
    # read-only cache gave a PermissionError although the warmup was there.
    params = GradientParams(**SMALL, warmup=ONE)
    context = Context(host=get_host(), store_root=tmp_path / "features")
    first = GradientPipeline(params, context).checkpoints(pool)
    root = tmp_path / "warmup"
    for lock in root.glob("*.lock"):
        lock.unlink()
    before = _snapshot(root)
    monkeypatch.setattr(warmup_module.locks, "exclusive", _unwritable)
    assert GradientPipeline(params, context).checkpoints(pool) == first
    assert _snapshot(root) == before
    with pytest.raises(StoreError, match=r"cannot be written there \(Permission denied\); give"):
        GradientPipeline(replace(params, warmup=replace(ONE, seed=9)), context).checkpoints(pool)
    assert _snapshot(root) == before


def test_a_cache_that_cannot_be_made_is_refused_before_the_model_loads(pool, tmp_path, monkeypatch):
    monkeypatch.setattr(Host, "load_model", lambda *a: pytest.fail("model loaded"))
    monkeypatch.setattr(warmup_module.os, "access", lambda *a: False)
    params = GradientParams(**SMALL, warmup=WarmupRuns(fraction=0.5))
    context = Context(host=get_host(), store_root=tmp_path / "cache" / "features")
    with pytest.raises(StoreError, match=r"does not exist and cannot be made .* not a writable"):
        GradientPipeline(params, context).check(pool)
    assert not any(tmp_path.iterdir())


def test_a_damaged_cached_warmup_is_trained_again(pool, tmp_path):
    params = GradientParams(**SMALL, warmup=ONE)
    context = Context(host=get_host(), store_root=tmp_path / "features")
    (first,) = GradientPipeline(params, context).checkpoints(pool)
    (first / "trainer_state.json").write_text("{")
    (again,) = GradientPipeline(params, context).checkpoints(pool)
    assert again == first and (again / "trainer_state.json").read_text().startswith("{\n")
