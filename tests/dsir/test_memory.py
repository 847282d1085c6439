"""DSIR refuses a number of buckets whose arrays cannot fit before allocating any (before: a
numpy MemoryError for "745 GiB" part-way through)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from selectkit_dsir import engine
from selectkit_dsir.method import DSIR, DSIRParams

from selectkit import resources
from selectkit.api import load_records_from_list
from selectkit.cli import cli
from selectkit.errors import ParamError
from selectkit.host import get_host
from selectkit.methods import Context


@pytest.fixture
def eight_gib(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 8 << 30)


def test_buckets_that_cannot_fit_are_refused_when_the_parameters_are_read(eight_gib):
    with pytest.raises(ParamError) as info:
        DSIRParams(num_buckets=4_000_000_000)
    message = str(info.value)
    assert message.startswith("num_buckets=4000000000 (DSIR's bucket counts and log-weights)")
    assert "needs about 268 GiB of memory, and 8 GiB is available; use fewer buckets" in message
    assert DSIRParams(num_buckets=10_000_000).num_buckets == 10_000_000  # 0.7 GB fits


def test_worker_processes_count_toward_the_memory(eight_gib, monkeypatch):
    params = DSIRParams(num_buckets=50_000_000)  # 3.4 GB in one process
    pool = load_records_from_list([{"text": "a b c " * 50}] * 4)
    monkeypatch.setattr(engine, "MIN_PARALLEL_CHARS", 1)
    with pytest.raises(ParamError, match=r"with 8 worker processes\) needs .* or fewer processes"):
        DSIR(params).objective(pool, pool, Context(host=get_host(), n_jobs=8))
    with pytest.raises(ParamError, match="n_jobs must be 0"):
        DSIR(params).objective(pool, pool, Context(host=get_host(), n_jobs=-5))


def test_the_command_line_refuses_absurd_buckets_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pool.jsonl").write_text('{"text": "a b"}\n')
    result = CliRunner().invoke(
        cli,
        [
            *("select", "-m", "dsir", "--pool", "pool.jsonl", "--target", "pool.jsonl", "-b", "1"),
            *("-o", "out.jsonl", "-p", "num_buckets=100000000000"),
        ],
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "num_buckets must be in [1, 2**32], got 100000000000" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.jsonl"]
