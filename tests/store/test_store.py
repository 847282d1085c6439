"""The gradient-feature store: layout, creation, block writes, resume and shards, checks, reads."""

from __future__ import annotations

import errno
import hashlib
import inspect
import json
import os
import subprocess
import sys
from collections import namedtuple

import numpy as np
import pytest

from selectkit.cachedirs import default_root
from selectkit.errors import StoreError
from selectkit.store import (
    FeatureStore,
    Layout,
    RowStatus,
    key_id,
    npyfiles,
    verify_entry,
)
from selectkit.store import root as store_module

KEY = {"model": "tiny", "gradient": "adam", "pool": "abc123", "lr": 1e-4}
# 8 float32 columns x 4 rows per block = 128 bytes a block; 300 bytes a file = 2 blocks.
FILE_BYTES = 300


def _layout(dtype="float32", num_rows=23, dim=8, block_rows=4, columns=("loss", "grad_norm")):
    order = np.random.default_rng(1).permutation(num_rows)
    return Layout(num_rows, dim, dtype, block_rows, order, columns)


def _block(layout, block):
    """Deterministic rows, status and columns for one block: each a function of the pool row."""
    rows_of = layout.block_rows_of(block)
    rows = np.stack([np.random.default_rng(int(i)).normal(size=layout.dim) for i in rows_of])
    status = np.full(len(rows_of), RowStatus.DONE, np.uint8)
    status[rows_of % 7 == 3] = RowStatus.SKIPPED_EMPTY
    columns = {"loss": rows_of * 0.5, "grad_norm": np.linalg.norm(rows, axis=1)}
    return rows, status, columns


def _fill(features, blocks=None):
    for block in features.pending_blocks() if blocks is None else blocks:
        features.write_block(block, *_block(features.layout, block))


def _expected(layout):
    full = np.zeros((layout.num_rows, layout.dim), np.float32)
    for block in range(layout.num_blocks):
        rows, status, _ = _block(layout, block)
        rows[status != RowStatus.DONE] = 0
        full[layout.block_rows_of(block)] = rows
    return full


def _npy_bytes(features):
    return {p.name: p.read_bytes() for p in sorted(features.path.glob("*.npy"))}


@pytest.fixture
def store(tmp_path):
    return FeatureStore(tmp_path / "cache", file_bytes=FILE_BYTES)


@pytest.fixture
def reference(tmp_path):
    """An entry written in one uninterrupted run, finalized."""
    features = FeatureStore(tmp_path / "reference", file_bytes=FILE_BYTES).open(KEY, _layout())
    _fill(features)
    assert features.finalize()
    return features


# --- keys, roots, layouts -------------------------------------------------------------------


def test_key_id_hashes_canonical_json():
    text = '{"a":"é","b":[1,2.5]}'
    assert key_id({"b": [1, 2.5], "a": "é"}) == hashlib.sha256(text.encode()).hexdigest()
    assert key_id({"a": "é", "b": (1, 2.5)}) == key_id({"b": [1, 2.5], "a": "é"})
    assert key_id({"a": 1}) != key_id({"a": 2})


@pytest.mark.parametrize("key", [{"x": object()}, {"x": float("nan")}, ["not", "a", "dict"]])
def test_key_must_be_plain_json(key):
    with pytest.raises(StoreError, match="key"):
        key_id(key)


def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SELECTKIT_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "mine"
    monkeypatch.delenv("SELECTKIT_CACHE_DIR")
    assert default_root() == tmp_path / "xdg" / "selectkit" / "features"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "selectkit" / "features"
    assert FeatureStore().root == default_root()


def test_layout_blocks_follow_the_order():
    layout = _layout()
    assert layout.num_blocks == 6
    assert list(layout.block_rows_of(0)) == list(layout.order[:4])
    assert list(layout.block_rows_of(5)) == list(layout.order[20:])
    assert layout.order.dtype == np.int64 and not layout.order.flags.writeable
    assert list(Layout(5, 2, np.float16, 2).order) == [0, 1, 2, 3, 4]
    with pytest.raises(StoreError, match=r"blocks are 0\.\.5"):
        layout.block_rows_of(6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "float64"}, "dtype must be one of float16, float32"),
        ({"dtype": "nonsense"}, "dtype must be one of"),
        ({"block_rows": 0}, "block_rows must be a positive integer"),
        ({"order": [0, 1, 1]}, r"permutation of range\(3\)"),
        ({"order": [0, 1]}, "permutation"),
        ({"columns": "loss"}, "tuple of names"),
        ({"columns": ("loss", "loss")}, "distinct names"),
        ({"columns": ("a/b",)}, "distinct names"),
    ],
)
def test_layout_rejects_bad_values(kwargs, message):
    values = {"num_rows": 3, "dim": 2, "dtype": "float32", "block_rows": 2, **kwargs}
    with pytest.raises(StoreError, match=message):
        Layout(**values)


# --- creating and opening -------------------------------------------------------------------


def test_open_creates_preallocated_npy_files(store):
    layout = _layout()
    features = store.open(KEY, layout, {"model": "tiny"})
    assert features.path == store.root / key_id(KEY)
    assert features.data_files == ["rows-00000.npy", "rows-00001.npy", "rows-00002.npy"]
    assert features.file_rows == 8  # two blocks per file
    names = {p.name for p in features.path.iterdir()}
    assert names == {
        "key.json",
        "manifest.json",
        "order.npy",
        "status.npy",
        *features.data_files,
        "col-loss.npy",
        "col-grad_norm.npy",
        "checksums.npy",
        "locks",
    }
    assert json.loads((features.path / "key.json").read_text()) == KEY
    loaded = [np.load(features.path / name, allow_pickle=False) for name in features.data_files]
    assert [a.shape for a in loaded] == [(8, 8), (8, 8), (7, 8)]
    assert all(a.dtype == np.float32 and not a.any() for a in loaded)
    assert np.array_equal(np.load(features.path / "order.npy"), layout.order)
    assert not features.status().any()
    assert features.pending_blocks() == list(range(6))
    assert features.meta == {"model": "tiny"} and not features.complete
    assert [p.name for p in store.root.iterdir()] == [features.id]  # no temporary leftovers


def test_open_again_returns_the_same_entry(store):
    first = store.open(KEY, _layout(), {"model": "tiny"})
    _fill(first, [0])
    again = FeatureStore(store.root).open(KEY, _layout(), {"ignored": True})
    assert again.id == first.id and again.meta == {"model": "tiny"}
    assert again.pending_blocks() == [1, 2, 3, 4, 5]
    assert store.find(KEY).id == first.id
    assert store.find({**KEY, "lr": 2e-4}) is None


def test_open_with_another_layout_says_what_differs(store):
    store.open(KEY, _layout())
    with pytest.raises(StoreError, match=r"another layout.*dim: 8 != 16") as info:
        store.open(KEY, _layout(dim=16))
    assert "selectkit cache rm" in str(info.value)
    reversed_order = Layout(23, 8, "float32", 4, _layout().order[::-1], ("loss", "grad_norm"))
    with pytest.raises(StoreError, match="order: the block order differs"):
        store.open(KEY, reversed_order)


def test_an_edited_key_is_damage_and_the_entry_is_rebuilt(store):
    features = store.open(KEY, _layout())
    _fill(features, [0])
    (features.path / "key.json").write_text(json.dumps({"model": "other"}))
    assert "key.json: does not hash to the entry id" in verify_entry(features)[0]
    again = store.open(KEY, _layout())
    assert json.loads((again.path / "key.json").read_text()) == KEY
    assert again.pending_blocks() == list(range(6))  # rebuilt: nothing of it was trusted


def test_key_collision_names_both_keys(store, monkeypatch):
    features = store.open(KEY, _layout())
    monkeypatch.setattr(store_module, "key_id", lambda key: features.id)
    with pytest.raises(StoreError, match="key collision") as info:
        store.open({"model": "other"}, _layout())
    assert '"model":"other"' in str(info.value) and '"model":"tiny"' in str(info.value)


def test_not_enough_disk_space_fails_before_writing(store, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda path: usage(100, 90, 10))
    with pytest.raises(StoreError, match="not enough disk space") as info:
        store.open(KEY, _layout())
    message = str(info.value)
    assert str(store.root) in message and "10 bytes" in message and "free" in message
    assert list(store.root.iterdir()) == []


def test_losing_a_creation_race_opens_the_winner(store, monkeypatch):
    build = store_module.build_entry

    def racing(path, key, layout, meta, file_rows):
        monkeypatch.setattr(store_module, "build_entry", build)
        FeatureStore(store.root, file_bytes=FILE_BYTES).open(key, layout, {"winner": True})
        build(path, key, layout, meta, file_rows)

    monkeypatch.setattr(store_module, "build_entry", racing)
    features = store.open(KEY, _layout(), {"winner": False})
    assert features.meta == {"winner": True}
    assert [p.name for p in store.root.iterdir()] == [features.id]


# --- writing blocks ---------------------------------------------------------------------------


def test_blocks_land_in_pool_order_with_columns_and_status(store):
    layout = _layout()
    features = store.open(KEY, layout)
    _fill(features)
    expected = _expected(layout)
    assert np.array_equal(features.read(0, layout.num_rows), expected)
    assert np.array_equal(np.concatenate(features.memmap()), expected)
    status = features.status()
    assert set(np.flatnonzero(status == RowStatus.SKIPPED_EMPTY)) == {3, 10, 17}
    assert (status[status != RowStatus.SKIPPED_EMPTY] == RowStatus.DONE).all()
    assert np.array_equal(features.column("loss"), np.arange(23, dtype=np.float32) * 0.5)
    assert features.column("grad_norm")[0] == pytest.approx(np.linalg.norm(_block_row(layout, 0)))
    with pytest.raises(StoreError, match="has no column 'norm'; it has: loss, grad_norm"):
        features.column("norm")


def _block_row(layout, pool_row):
    return np.random.default_rng(pool_row).normal(size=layout.dim)


def test_float16_rows_are_cast_and_checked(store):
    layout = _layout("float16", columns=())
    features = store.open(KEY, layout)
    rows, status, _ = _block(layout, 0)
    features.write_block(0, rows, status)
    got = np.stack([features.read(r, r + 1)[0] for r in layout.block_rows_of(0)])
    assert got.dtype == np.float16
    rows[status != RowStatus.DONE] = 0
    assert np.array_equal(got, rows.astype(np.float16))
    rows, status, _ = _block(layout, 1)
    rows[2, 5] = 1e5
    with pytest.raises(StoreError, match=rf"pool row {layout.order[6]} does not fit in float16"):
        features.write_block(1, rows, status)
    with pytest.raises(StoreError, match="float32"):
        features.write_block(1, rows, status)
    status[2] = RowStatus.SKIPPED_NONFINITE
    assert features.write_block(1, rows, status)
    assert not features.read(layout.order[6], layout.order[6] + 1).any()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r, s, c: (r[:3], s, c), r"rows must be numbers of shape \(4, 8\)"),
        (lambda r, s, c: (r.astype(str), s, c), "rows must be numbers"),
        (lambda r, s, c: (r, s[:3], c), r"status must have shape \(4,\)"),
        (lambda r, s, c: (r, s * 0, c), "is not DONE, SKIPPED_EMPTY or SKIPPED_NONFINITE"),
        (lambda r, s, c: (r, s + 7, c), "is not DONE"),
        (lambda r, s, c: (r, s, {"loss": c["loss"]}), r"missing \['grad_norm'\]"),
        (lambda r, s, c: (r, s, {**c, "x": c["loss"]}), r"unknown \['x'\]"),
        (lambda r, s, c: (r, s, None), "columns must be exactly"),
        (lambda r, s, c: (r, s, {**c, "loss": c["loss"][:2]}), "column 'loss' must have shape"),
    ],
)
def test_write_block_rejects_bad_input(store, change, message):
    features = store.open(KEY, _layout())
    with pytest.raises(StoreError, match=message):
        features.write_block(0, *change(*_block(features.layout, 0)))
    assert features.pending_blocks() == list(range(6))


def test_a_done_row_must_be_finite(store):
    features = store.open(KEY, _layout())
    rows, status, columns = _block(features.layout, 2)
    rows[1, 0] = np.nan
    pool_row = features.layout.order[9]
    with pytest.raises(StoreError, match=rf"pool row {pool_row} is marked DONE.*SKIPPED_NONFINITE"):
        features.write_block(2, rows, status, columns)
    status[1] = RowStatus.SKIPPED_NONFINITE
    features.write_block(2, rows, status, columns)
    assert features.status()[pool_row] == RowStatus.SKIPPED_NONFINITE
    assert not features.read(pool_row, pool_row + 1).any()


def test_features_reach_disk_before_their_status(store, monkeypatch):
    features = store.open(KEY, _layout())
    events = []
    pwrite, fsync = npyfiles.pwrite_all, os.fsync

    def name_of(fd):
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))

    def logged_pwrite(fd, data, offset):
        events.append(("write", name_of(fd)))
        pwrite(fd, data, offset)

    def logged_fsync(fd):
        events.append(("fsync", name_of(fd)))
        fsync(fd)

    monkeypatch.setattr(npyfiles, "pwrite_all", logged_pwrite)
    monkeypatch.setattr(store_module.os, "fsync", logged_fsync)
    features.write_block(4, *_block(features.layout, 4))
    first_status = events.index(("write", "status.npy"))
    synced = {name for kind, name in events[:first_status] if kind == "fsync"}
    written = {name for kind, name in events[:first_status] if kind == "write"}
    assert written <= synced and {"col-loss.npy", "col-grad_norm.npy"} <= written
    assert any(name.startswith("rows-") for name in written)
    assert events[-1] == ("fsync", "status.npy")


def test_a_failed_write_leaves_the_block_pending(store, monkeypatch):
    features = store.open(KEY, _layout())

    def full_disk(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(npyfiles, "pwrite_all", full_disk)
    with pytest.raises(StoreError, match=r"could not write block 3 .*No space left.*pending"):
        features.write_block(3, *_block(features.layout, 3))
    monkeypatch.undo()
    assert 3 in features.pending_blocks()
    assert not features.status().any()


def test_a_recorded_block_is_left_alone(store):
    features = store.open(KEY, _layout())
    _fill(features, [0])
    before = _npy_bytes(features)
    rows, status, columns = _block(features.layout, 0)
    assert not features.write_block(0, rows + 1, status, columns)
    assert _npy_bytes(features) == before


# --- resume and shards ------------------------------------------------------------------------


def test_resuming_after_a_crash_gives_the_bytes_of_one_run(store, reference):
    layout = _layout()
    features = store.open(KEY, layout)
    _fill(features, [0, 1])

    def killed(runs, codes):
        raise KeyboardInterrupt("killed before the status bytes")

    features._write_status = killed
    with pytest.raises(KeyboardInterrupt):
        features.write_block(2, *_block(layout, 2))
    # Block 4 was half written by the dead process: garbage bytes, no status.
    half = layout.block_rows_of(4)[:2]
    for pool_row in half:
        name = features.data_files[pool_row // features.file_rows]
        offset = len(npyfiles.header_bytes((8, 8), "float32"))
        offset += (pool_row % features.file_rows) * layout.row_bytes
        with open(features.path / name, "r+b") as handle:
            handle.seek(offset)
            handle.write(b"\xff" * layout.row_bytes)
    del features

    resumed = FeatureStore(store.root, file_bytes=FILE_BYTES).open(KEY, layout)
    assert resumed.pending_blocks() == [2, 3, 4, 5]
    assert not resumed.finalize()
    _fill(resumed)
    assert resumed.finalize()
    assert _npy_bytes(resumed) == _npy_bytes(reference)
    assert (
        json.loads((resumed.path / "manifest.json").read_text())["sha256"]
        == json.loads((reference.path / "manifest.json").read_text())["sha256"]
    )


def test_two_shards_give_the_bytes_of_one_run(store, reference):
    first = store.open(KEY, _layout())
    second = FeatureStore(store.root, file_bytes=FILE_BYTES).open(KEY, _layout())
    with first.claim((0, 2)), second.claim((1, 2)):
        assert first.pending_blocks((0, 2)) == [0, 2, 4]
        assert second.pending_blocks((1, 2)) == [1, 3, 5]
        _fill(second, second.pending_blocks((1, 2)))
        _fill(first, first.pending_blocks((0, 2)))
    assert first.finalize() and second.complete
    assert _npy_bytes(first) == _npy_bytes(reference)


WORKER = """
import sys
import numpy as np
from selectkit.store import FeatureStore, Layout, RowStatus

{block}
root, index, key = sys.argv[1], int(sys.argv[2]), {key!r}
order = np.random.default_rng(1).permutation(23)
layout = Layout(23, 8, "float32", 4, order, ("loss", "grad_norm"))
features = FeatureStore(root, file_bytes={file_bytes}).open(key, layout)
with features.claim((index, 2)):
    for block in features.pending_blocks((index, 2)):
        features.write_block(block, *_block(layout, block))
"""


def test_two_processes_writing_shards_give_the_bytes_of_one_run(store, reference):
    script = WORKER.format(block=inspect.getsource(_block), key=KEY, file_bytes=FILE_BYTES)
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(store.root), str(index)])
        for index in (0, 1)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    features = store.get(reference.id[:8])
    assert features.finalize()
    assert _npy_bytes(features) == _npy_bytes(reference)
    assert verify_entry(features) == []


def test_a_shard_has_one_writer_at_a_time(store):
    features = store.open(KEY, _layout())
    other = store.get(features.id)
    with features.claim((0, 2)):
        with pytest.raises(StoreError) as info, other.claim((0, 2)):
            pass
        assert str(info.value).startswith(
            f"another process (pid {os.getpid()}) is writing shard 0/2 of entry {features.id[:12]}"
        )
        with other.claim((1, 2)), other.claim((0, 3)):
            pass
    with other.claim((0, 2)):
        pass
    with pytest.raises(StoreError, match="0 <= i < n"):
        features.pending_blocks((2, 2))


# --- finishing, checking, reading ------------------------------------------------------------


def test_finalize_records_checksums_once(store):
    features = store.open(KEY, _layout())
    _fill(features, [0, 1, 2])
    assert not features.finalize() and not features.complete
    _fill(features)
    assert features.finalize() and features.complete
    manifest = (features.path / "manifest.json").read_text()
    sums = json.loads(manifest)["sha256"]
    small = {"order.npy", "status.npy", "checksums.npy", "col-loss.npy", "col-grad_norm.npy"}
    assert set(sums) == small
    assert (
        sums["status.npy"]
        == hashlib.sha256((features.path / "status.npy").read_bytes()).hexdigest()
    )
    assert features.finalize()
    assert (features.path / "manifest.json").read_text() == manifest


def test_verify_finds_damage(store, reference):
    assert verify_entry(reference) == []
    path = reference.path / "rows-00001.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # the last byte but four: pool row 15
    path.write_bytes(bytes(data))
    assert verify_entry(reference) == ["1 row(s) fail their checksum (pool rows 15)"]
    path.write_bytes(bytes(data[:-4]))
    (reference.path / "col-loss.npy").unlink()
    assert verify_entry(reference) == [
        "rows-00001.npy: size is 380 bytes, expected 384",
        "col-loss.npy: missing",
    ]
    (reference.path / "manifest.json").write_text("{")
    assert verify_entry(reference)[0].startswith("manifest.json: unreadable")


def test_verify_reports_unfinished_entries(store):
    features = store.open(KEY, _layout())
    _fill(features, [0])
    assert verify_entry(features) == [
        "incomplete: 19 of 23 rows pending; rerun the featurizer to finish it"
    ]
    _fill(features)
    assert verify_entry(features) == [
        "not finalized: every row is recorded but no checksums were taken"
    ]


def test_reads_are_fresh_arrays_in_pool_order(reference):
    expected = _expected(reference.layout)
    got = reference.read(5, 19)  # spans all three data files
    assert np.array_equal(got, expected[5:19])
    assert type(got) is np.ndarray and got.flags.owndata and got.flags.writeable
    assert reference.read(4, 4).shape == (0, 8)
    chunks = list(reference.iter_chunks(6))
    assert [start for start, _ in chunks] == [0, 6, 12, 18]
    assert np.array_equal(np.concatenate([rows for _, rows in chunks]), expected)
    with pytest.raises(StoreError, match="outside 0:23"):
        reference.read(5, 24)
    with pytest.raises(StoreError, match="chunk_rows"):
        next(reference.iter_chunks(0))


def test_meta_updates_merge_and_persist(store):
    features = store.open(KEY, _layout(), {"model": "tiny", "seconds": 1.0})
    features.update_meta({"seconds": np.float32(2.5), "versions": {"torch": "2.13"}})
    assert features.meta == {"model": "tiny", "seconds": 2.5, "versions": {"torch": "2.13"}}
    assert store.get(features.id).meta == features.meta
    with pytest.raises(StoreError, match="plain JSON"):
        features.update_meta({"path": object()})
    with pytest.raises(StoreError, match="plain JSON"):
        store.open({"other": 1}, _layout(), {"path": object()})
    assert [p.name for p in store.root.iterdir()] == [features.id]


def test_info_counts_rows(store):
    features = store.open(KEY, _layout(), {"model": "tiny"})
    with_skip = int(np.flatnonzero(features.layout.order == 3)[0]) // 4
    _fill(features, [0, with_skip])
    info = features.info()
    assert info["id"] == features.id and info["key"] == KEY and info["meta"] == {"model": "tiny"}
    written = np.concatenate([features.layout.block_rows_of(b) for b in (0, with_skip)])
    skipped = int(np.isin(written, [3, 10, 17]).sum())
    assert skipped >= 1
    assert info["rows"] == {
        "total": 23,
        "done": 8 - skipped,
        "skipped_empty": skipped,
        "skipped_nonfinite": 0,
        "pending": 15,
    }
    assert info["layout"]["num_blocks"] == 6 and "order" not in info["layout"]
    assert info["bytes"] == sum(p.stat().st_size for p in features.path.rglob("*") if p.is_file())
    assert info["complete"] is False and info["created"]
    json.dumps(info)


# --- the store as a whole --------------------------------------------------------------------


def _two_ids_sharing_a_digit():
    seen = {}
    for n in range(100):
        key = {"n": n}
        if key_id(key)[0] in seen:
            return seen[key_id(key)[0]], key
        seen[key_id(key)[0]] = key
    raise AssertionError("unreachable: 17 keys always share a first digit")


def test_get_by_prefix(store):
    first, second = _two_ids_sharing_a_digit()
    one = store.open(first, _layout())
    store.open(second, _layout())
    assert store.get(one.id[:10]).id == one.id
    with pytest.raises(StoreError, match="ambiguous") as info:
        store.get(one.id[0])
    assert one.id in str(info.value) and key_id(second) in str(info.value)
    with pytest.raises(StoreError, match="no feature set"):
        store.get("0" * 64 if not one.id.startswith("0") else "1" * 64)
    with pytest.raises(StoreError, match="not a feature-set id"):
        store.get("xyz")
    assert [e.id for e in store.entries()] == sorted([one.id, key_id(second)])


def test_broken_entries_and_leftovers_are_reported_not_fatal(store):
    good = store.open(KEY, _layout())
    broken = store.root / ("f" * 64)
    broken.mkdir()
    (broken / "manifest.json").write_text("not json")
    (store.root / ".tmp-123456789abc-1-abcd").mkdir()
    assert [e.id for e in store.entries()] == [good.id]
    problems = dict(store.broken())
    assert "is broken" in problems[broken]
    assert "`selectkit cache verify --repair ffffffffffff --cache-dir" in problems[broken]
    assert "left over by a killed process" in problems[store.root / ".tmp-123456789abc-1-abcd"]
    with pytest.raises(StoreError, match="is broken"):
        store.get("fff")
    assert store.remove("fff") == "f" * 64
    assert not broken.exists()


def test_remove_refuses_while_a_shard_is_claimed(store):
    features = store.open(KEY, _layout())
    with features.claim((1, 4)):
        with pytest.raises(StoreError, match=rf"in use \(shard 1/4 by pid {os.getpid()}\)"):
            store.remove(features.id[:6])
        assert features.path.is_dir()
        assert store.remove(features.id[:6], force=True) == features.id
    assert list(store.root.iterdir()) == []
    with pytest.raises(StoreError, match="no feature set"):
        store.remove(features.id)
