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
