"""Shared fixtures for the dsir plugin tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# ../shared/data beside the repository: real data, absent from a user's fresh clone.
PILE = REPO / ".." / "shared" / "data" / "pile-toy" / "toy_pile_data.jsonl"


@pytest.fixture(scope="session")
def pile_rows() -> list[tuple[str, str]]:
    """``(domain, text)`` of the 1,000 Pile chunks, in file order."""
    if not PILE.exists():
        pytest.skip(f"real data not found at {PILE} (../shared/data is absent)")
    with PILE.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(row["metadata"]["pile_set_name"], row["contents"]) for row in rows]
