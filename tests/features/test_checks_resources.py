"""Sizes a user controls are checked against the memory available before anything is
allocated: one error saying how much is needed, how much there is, and what to change."""

from __future__ import annotations

import os

import pytest

import selectkit
from selectkit import resources
from selectkit.api import load_records_from_list
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError
from selectkit.features.params import GradientParams
from selectkit.features.pipeline import GradientPipeline
from selectkit.host import Host, get_host
from selectkit.methods import Context

MIB = 1 << 20


def test_available_memory_reads_meminfo_and_falls_back_to_sysconf(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   1048576 kB\n")
    monkeypatch.setattr(resources, "MEMINFO", meminfo)
    assert resources.available_memory() == 1 << 30
    monkeypatch.setattr(resources, "MEMINFO", tmp_path / "absent")
    pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert abs(resources.available_memory() - pages) < 1 << 30  # free memory moves a little


def test_check_memory_says_what_is_needed_what_there_is_and_what_to_do(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 2 << 30)
    resources.check_memory(1 << 30, "x", "y")
    with pytest.raises(ParamError, match=r"^dim=9 needs about 745 GiB of memory, and 2 GiB is "):
        resources.check_memory(745 << 30, "dim=9", "lower dim")
    monkeypatch.setattr(resources, "available_memory", lambda: None)
    resources.check_memory(1 << 60, "x", "y")  # the system does not say: nothing refused
    assert resources.human_bytes(1536) == "1.5 KiB"


@pytest.fixture
def little_memory(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 100 * MIB)

    def refuse(*args, **kwargs):
        raise AssertionError("the model loaded before the sizes were checked")

    monkeypatch.setattr(Host, "load_model", refuse)


@pytest.fixture(scope="module")
def pool():
    return load_records_from_list(make_records(2, seed=3), group_field="family")


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        (
            "kcenter",
            {"projection.dim": 1_000_000, "batch_size": 1},
            "kcenter: 20 records x 1000000",
        ),
        ("craig", {"projection.dim": 1_000_000, "batch_size": 1}, "craig: 20 records x 1000000"),
        ("gradmatch", {"projection.dim": 1_000_000, "batch_size": 1}, "gradmatch: 10 records"),
        ("kcenter", {"projection.dim": 8, "memory_mb": 4096}, "needs about 4 GiB"),
        (
            "trak",
            {"projection.dim": 1_000_000},
            "trak on 20 pool records and 20 targets at dim 1000000",
        ),
        (
            "less",
            {"projection.dim": 1_000_000},
            "dim=1000000 with batch_size=16 needs about 183 MiB",
        ),
        (
            "less",
            {"projection.dim": 100_000, "projection.kind": "rademacher"},
            "dense projector rademacher",
        ),
    ],
)
def test_an_allocation_that_cannot_fit_is_refused_before_the_model_loads(
    method, params, message, pool, little_memory, tmp_path
):
    params = {"model": "tiny-llama", **params}
    with pytest.raises(ParamError, match="available") as info:
        selectkit.select(
            pool, method, 10, target=pool, params=params, cache_dir=tmp_path / "features"
        )
    assert message in str(info.value)
    assert not (tmp_path / "features").exists()


def test_a_batch_of_gradients_that_cannot_fit_is_refused_before_it_is_computed(
    pool, monkeypatch, tmp_path
):
    params = GradientParams(model="tiny-llama", projection=ProjectionConfig(dim=8))
    context = Context(host=get_host(), store_root=tmp_path)
    pipeline = GradientPipeline(params, context)
    pipeline.check(pool)
    assert pipeline.loaded  # the tiny model, loaded while memory is plentiful
    monkeypatch.setattr(resources, "available_memory", lambda: MIB // 2)
    with pytest.raises(ParamError, match=r"batch_size=16 \(16 per-example gradients of 8192"):
        pipeline.features(pool, "sgd", [])
    made = [p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")]
    assert set(made) <= {".claims"}  # the request's claim, and no store entry
