"""Shared fixtures: a fresh plugin host per test, and the location of ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from selectkit import host as host_module

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def store_root(tmp_path_factory) -> Path:
    """The feature store every test of the session shares (warmups beside it), so a warmup
    runs once; never the user's own cache."""
    return tmp_path_factory.mktemp("cache") / "features"


@pytest.fixture(scope="session", autouse=True)
def session_store(store_root):
    """The session's store for module- and session-scoped fixtures too, which run before a
    test's own environment (``fresh_host``): no test reads or fills the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SELECTKIT_CACHE_DIR", str(store_root))
        yield


@pytest.fixture(autouse=True)
def fresh_host(monkeypatch, store_root):
    """Each test builds its own host from the environment it sets up, and stores features in
    the session's store unless it names another."""
    for name in ("SELECTKIT_LOAD_PLUGINS", "SELECTKIT_BLOCK_PLUGINS", "SELECTKIT_TRACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SELECTKIT_CACHE_DIR", str(store_root))
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
    from selectkit.api import load_records_from_list
    from selectkit.data.synthetic import make_records

    pool_rows = make_records(30, seed=0)
    target_rows = make_records(10, seed=1, families=["units"], id_prefix="target", avoid=pool_rows)
    pool = load_records_from_list(pool_rows, group_field="family")
    target = load_records_from_list(target_rows, group_field="family")
    return pool, target


@pytest.fixture(scope="session")
def gradient_params() -> dict:
    """Gradient-method parameters for a tiny Llama (the session's store holds their warmup)."""
    return {
        "model": "tiny-llama",
        "projection.dim": 256,
        "max_length": 128,
        "warmup.epochs": 2,
        "warmup.fraction": 0.2,
        "warmup.learning_rate": 1e-3,
        "lora.target_modules": "all-linear",
    }


@pytest.fixture(scope="session")
def model_params(gradient_params) -> dict:
    """The same model and warmup, for methods that run the model but project no
    gradients (EL2N, IFD): everything but the projection."""
    return {k: v for k, v in gradient_params.items() if not k.startswith("projection.")}
