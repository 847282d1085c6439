"""``selectkit cache``: ls, info, verify and rm over a feature store, with their exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from selectkit import locks
from selectkit.commands.cache import cache
from selectkit.store import FeatureStore, Layout, RowStatus

KEY = {"pool": "abc", "model": "tiny-gpt", "projection": 64}


def _fill(features, blocks):
    for block in blocks:
        rows_of = features.layout.block_rows_of(block)
        rows = np.outer(rows_of + 1, np.arange(features.dim)).astype(np.float32)
        features.write_block(block, rows, np.full(len(rows_of), RowStatus.DONE, np.uint8))


@pytest.fixture
def store(tmp_path):
    return FeatureStore(tmp_path / "cache")


@pytest.fixture
def complete(store):
    features = store.open(
        KEY, Layout(10, 4, "float16", 3), {"summary": "tiny-gpt sgd", "gradient": "sgd"}
    )
    _fill(features, range(4))
    assert features.finalize()
    return features


@pytest.fixture
def partial(store):
    features = store.open({"pool": "other"}, Layout(6, 2, "float32", 2))
    _fill(features, [0])
    return features


def _run(store, *args, input=None):
    return CliRunner().invoke(cache, [*map(str, args), "--cache-dir", str(store.root)], input=input)


def test_ls_lists_entries(store, complete, partial):
    result = _run(store, "ls")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "ROWS", "DIM", "DTYPE", "SIZE", "COMPLETE", "DESCRIPTION"]
    done = next(line for line in lines if line.startswith(complete.id[:12]))
    assert done.split()[1:4] == ["10/10", "4", "float16"]
    assert done.split()[-3:] == ["yes", "tiny-gpt", "sgd"]
    other = next(line for line in lines if line.startswith(partial.id[:12]))
    assert other.split()[1] == "2/6" and other.split()[-2:] == ["no", "pool=other"]


def test_ls_json_and_broken_entries(store, complete):
    (store.root / ("e" * 64)).mkdir()
    result = _run(store, "ls", "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    assert listing["root"] == str(store.root)
    assert [entry["id"] for entry in listing["entries"]] == [complete.id]
    assert listing["entries"][0]["rows"]["done"] == 10
    assert listing["broken"][0]["path"].endswith("e" * 64)
    assert "BROKEN " + "e" * 64 in _run(store, "ls").output


def test_ls_on_an_empty_store(store):
    result = _run(store, "ls")
    assert result.exit_code == 0 and f"no feature sets in {store.root}" in result.output


def test_info_by_prefix(store, complete):
    result = _run(store, "info", complete.id[:7])
    assert result.exit_code == 0, result.output
    assert f"id        {complete.id}" in result.output
    assert "10 rows x 4 float16, 4 blocks of 3" in result.output
    assert '"projection": 64' in result.output and '"gradient": "sgd"' in result.output
    info = json.loads(_run(store, "info", complete.id[:7], "--json").output)
    assert info["key"] == KEY and info["complete"] is True and "order" not in info["layout"]


def test_unknown_id_is_a_clear_error(store, complete):
    result = _run(store, "info", "0123abc" if not complete.id.startswith("0123abc") else "fff")
    assert result.exit_code == 2
    assert "error: no feature set" in result.output and "selectkit cache ls" in result.output


def test_verify_ok_then_a_flipped_byte(store, complete):
    result = _run(store, "verify")
    assert result.exit_code == 0, result.output
    assert result.output == f"{complete.id[:12]}  OK\n"
    path = complete.path / "rows-00000.npy"
    data = bytearray(path.read_bytes())
    data[200] ^= 0x40
    path.write_bytes(bytes(data))
    result = _run(store, "verify", complete.id[:5])
    assert result.exit_code == 3
    assert f"{complete.id[:12]}  1 problem(s)" in result.output
    assert "1 row(s) fail their checksum (pool rows 9)" in result.output


def test_verify_all_reports_incomplete_and_broken(store, complete, partial):
    (store.root / ("e" * 64)).mkdir()
    result = _run(store, "verify")
    assert result.exit_code == 3
    assert f"{complete.id[:12]}  OK" in result.output
    assert "incomplete: 4 of 6 rows pending" in result.output
    assert "e" * 12 + "  1 problem(s)" in result.output and "broken (" in result.output
    assert _run(store, "verify", complete.id).exit_code == 0
    broken = _run(store, "verify", "eeee")
    assert broken.exit_code == 3 and "broken (manifest.json: No such file" in broken.output


def test_rm_asks_first_and_no_removes_nothing(store, complete, partial):
    result = _run(store, "rm", complete.id[:8], input="n\n")
    assert result.exit_code == 0 and "Remove 1 feature set(s)" in result.output
    assert result.output.splitlines()[-1] == "nothing was removed"
    assert complete.path.is_dir()
    result = _run(store, "rm", complete.id[:8], partial.id, input="y\n")
    assert result.exit_code == 0, result.output
    assert f"removed {complete.id[:12]}" in result.output
    assert not complete.path.exists() and not partial.path.exists()


def test_rm_refuses_an_entry_in_use_unless_forced(store, partial):
    with partial.claim((0, 1)):
        result = _run(store, "rm", partial.id[:8], "--yes")
        assert result.exit_code == 2 and "is in use (shard 0/1 by pid" in result.output
        assert partial.path.is_dir()
        result = _run(store, "rm", partial.id[:8], "--yes", "--force")
        assert result.exit_code == 0 and not partial.path.exists()


def test_cache_dir_defaults_to_the_environment(store, complete, monkeypatch):
    monkeypatch.setenv("SELECTKIT_CACHE_DIR", str(store.root))
    result = CliRunner().invoke(cache, ["ls"])
    assert result.exit_code == 0 and complete.id[:12] in result.output


def test_cache_commands_do_not_import_torch():
    code = "import sys, selectkit.commands.cache; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_verify_repair_resets_damaged_rows_and_removes_only_dead_leftovers(store, complete):
    path = complete.path / "rows-00000.npy"
    data = bytearray(path.read_bytes())
    data[200] ^= 0x40  # pool row 9
    path.write_bytes(bytes(data))
    dead_folder = store.root / ".tmp-0123456789ab-99999-abcd1234"
    dead_folder.mkdir()
    dead_file = complete.path / ".manifest.json.selectkit-0123456789ab.tmp"
    dead_file.write_text("{")
    live = store.root / ".tmp-ba9876543210-1-00000000"
    live.mkdir()
    held = locks.hold(live)  # a process building an entry right now
    try:
        found = _run(store, "verify")
        assert found.exit_code == 3
        assert f"{complete.id[:12]}  2 problem(s)" in found.output
        assert f"{dead_folder.name}  1 problem(s)" in found.output and live.name not in found.output
        repaired = _run(store, "verify", "--repair")
        assert repaired.exit_code == 0, repaired.output
        assert f"{dead_folder.name}  removed (left over by a killed process)" in repaired.output
        assert f"repaired: removed {dead_file.name}" in repaired.output
        assert "repaired: 1 of 10 rows are pending: rerun the command" in repaired.output
        assert live.is_dir() and not dead_folder.exists() and not dead_file.exists()
    finally:
        locks.release(held)
        live.rmdir()  # its builder is done
    left = _run(store, "verify")
    assert left.exit_code == 3 and "incomplete: 1 of 10 rows pending" in left.output
    _fill(complete, complete.pending_blocks())
    assert complete.finalize()
    assert _run(store, "verify").output == f"{complete.id[:12]}  OK\n"


def test_ls_info_and_verify_escape_what_entries_hold(store):
    summary = "evil\x1b[2J\u202edescription"
    features = store.open({"pool": "x"}, Layout(2, 2, "float32", 2), {"summary": summary})
    _fill(features, [0])
    assert features.finalize()
    (store.root / ".tmp-\x1b[31mred").mkdir()
    outputs = [
        _run(store, "ls").output,
        _run(store, "ls", "--json").output,
        _run(store, "info", features.id[:8]).output,
        _run(store, "info", features.id[:8], "--json").output,
        _run(store, "verify").output,
    ]
    for output in outputs:
        assert "\x1b" not in output and "\u202e" not in output
    assert "evil\\x1b[2J\\u202edescription" in outputs[0]
    assert ".tmp-\\x1b[31mred" in outputs[0] and ".tmp-\\x1b[31mred" in outputs[4]
    assert json.loads(outputs[1])["entries"][0]["meta"]["summary"] == summary
