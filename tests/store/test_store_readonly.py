"""A read-only feature store: complete entries are read (no lock file, no temporary folder),
and what needs a write is refused with a message that says where to write instead."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from selectkit.cli import cli
from selectkit.data.synthetic import make_records
from selectkit.errors import StoreError
from selectkit.store import FeatureStore, Layout, RowStatus


@pytest.fixture
def read_only():
    """Makes a folder read-only: a read-only bind mount as root (whom permission bits do not
    stop), ``chmod -R a-w`` otherwise."""
    mounts: list[Path] = []
    chmodded: list[Path] = []

    def make(folder: Path) -> None:
        if os.geteuid() != 0:
            for path in [folder, *folder.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)
            chmodded.append(folder)
            return
        for command in (["--bind", folder, folder], ["-o", "remount,bind,ro", folder, folder]):
            done = subprocess.run(["mount", *map(str, command)], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")
            if command[0] == "--bind":
                mounts.append(folder)

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    for folder in chmodded:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_complete_entry_is_read_from_a_read_only_store(tmp_path, read_only):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in make_records(1, seed=3)))
    store = tmp_path / "store"
    args = ["featurize", str(pool), "--model", "tiny-llama", "--max-length", "96", "-q"]
    first = CliRunner().invoke(cli, [*args, "--projection-dim", "16", "--cache-dir", str(store)])
    assert first.exit_code == 0, first.output
    (entry,) = FeatureStore(store).entries()
    rows = entry.read(0, entry.num_rows)
    before = _listing(store)
    read_only(store)

    again = CliRunner().invoke(cli, [*args, "--projection-dim", "16", "--cache-dir", str(store)])
    assert again.exit_code == 0, again.output
    assert again.output == first.output
    assert np.array_equal(FeatureStore(store).get(entry.id).read(0, entry.num_rows), rows)
    verified = CliRunner().invoke(cli, ["cache", "verify", "--cache-dir", str(store)])
    assert verified.exit_code == 0 and verified.output == f"{entry.id[:12]}  OK\n"
    assert _listing(store) == before

    other = CliRunner().invoke(cli, [*args, "--projection-dim", "8", "--cache-dir", str(store)])
    assert other.exit_code == 2 and "Traceback" not in other.output
    (line,) = [text for text in other.output.splitlines() if text.startswith("error:")]
    assert f"the feature store {store} is not writable" in line
    assert "must be created; set SELECTKIT_CACHE_DIR (or --cache-dir" in line
    assert _listing(store) == before


def test_a_write_into_a_read_only_store_is_a_store_error(tmp_path, read_only):
    store = FeatureStore(tmp_path / "store")
    layout = Layout(4, 2, "float32", 2)
    features = store.open({"k": 1}, layout)
    read_only(store.root)
    again = store.open({"k": 1}, layout)  # an intact entry opens without a write
    with (
        pytest.raises(StoreError, match=r"is not writable .* has rows to extract; set"),
        again.claim(),
    ):
        pass
    with pytest.raises(StoreError, match=r"is not writable .* must be written; set"):
        features.write_block(0, np.ones((2, 2)), np.full(2, RowStatus.DONE, np.uint8))
    with store.claim_request({"k": 1}, (0, 1)):  # no claim is taken where nothing can be written
        pass


def test_select_reads_its_pool_from_a_read_only_cache_or_into_memory(tmp_path, read_only):
    rows = make_records(3, seed=4)
    for name, part in (("seen", rows[:20]), ("new", rows[20:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    cache = tmp_path / "cache"

    def select(name: str, out: str):
        args = ["select", "-m", "random", "-b", "5", "--pool", str(tmp_path / f"{name}.jsonl")]
        return CliRunner().invoke(
            cli, [*args, "--out", str(tmp_path / out), "--cache-dir", str(cache)]
        )

    first = select("seen", "first.jsonl")
    assert first.exit_code == 0, first.output
    before = _listing(cache)
    assert any(path.endswith(".arrow") for path in before)
    read_only(cache)
    cached = select("seen", "again.jsonl")  # the pool read before is read from the cache
    assert cached.exit_code == 0 and "note:" not in cached.output, cached.output
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "first.jsonl").read_text()
    new = select("new", "picked-new.jsonl")  # a new pool cannot be cached: it is read into memory
    assert new.exit_code == 0, new.output
    assert f"note: the pool cache {cache / 'pools'} cannot be written" in new.output
    assert len((tmp_path / "picked-new.jsonl").read_text().splitlines()) == 5
    assert _listing(cache) == before
