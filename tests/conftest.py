"""Shared fixtures: a fresh plugin host per test, and the location of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from selectkit import host as host_module

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def fresh_host(monkeypatch):
    """Each test builds its own host from the environment it sets up."""
    for name in ("SELECTKIT_LOAD_PLUGINS", "SELECTKIT_BLOCK_PLUGINS", "SELECTKIT_TRACE"):
        monkeypatch.delenv(name, raising=False)
    host_module.reset_host()
    yield
    host_module.reset_host()


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (see README, Data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def targeted():
    """A generated pool of 10 task families (30 records each) and 10 held-out unit
    conversions as the target, for the targeted-selection tests of the gradient methods."""
    from selectkit.data.load import load_records_from_list
    from selectkit.data.synthetic import make_records

    pool_rows = make_records(30, seed=0)
    target_rows = make_records(10, seed=1, families=["units"], id_prefix="target", avoid=pool_rows)
    pool = load_records_from_list(pool_rows, group_field="family")
    target = load_records_from_list(target_rows, group_field="family")
    return pool, target


@pytest.fixture(scope="session")
def gradient_params(tmp_path_factory) -> dict:
    """Gradient-method parameters for a tiny Llama, with one store and warmup cache shared by
    every test of the session (so the warmup runs once)."""
    return {
        "model": "tiny-llama",
        "dim": 256,
        "max_length": 128,
        "warmup_epochs": 2,
        "warmup_fraction": 0.2,
        "warmup_lr": 1e-3,
        "lora_targets": "all-linear",
        "cache_dir": str(tmp_path_factory.mktemp("features")),
    }


@pytest.fixture(scope="session")
def model_params(gradient_params) -> dict:
    """The same model, warmup and cache, for methods that run the model but project no
    gradients (EL2N, IFD): everything but the projection's ``dim``."""
    return {key: value for key, value in gradient_params.items() if key != "dim"}
