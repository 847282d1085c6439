"""Damaged store entries are never used silently: reads check every row against its checksum,
a writer opening an entry finds structural and small-file damage and repairs it (rows it can
pinpoint are computed again, the rest is rebuilt), and ``cache verify --repair`` does the same
for row damage found by a full check."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xxhash
from click.testing import CliRunner

from selectkit.api import featurize, load_model, load_pool, load_records_from_list
from selectkit.cli import cli
from selectkit.compute.gradients import PerExampleGradients
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.synthetic import make_records
from selectkit.errors import StoreError
from selectkit.features.featurize import FeaturizeConfig
from selectkit.rows import read_all
from selectkit.scoring import score_pool
from selectkit.store import (
    BrokenEntry,
    FeatureStore,
    RowStatus,
    check_entry,
    verify_entry,
)
from selectkit.store.npyfiles import row_checksums

from .test_store import FILE_BYTES, _block, _layout

KEY = {"model": "tiny", "pool": "abc"}
ROW = 5  # the pool row the damage hits


def _fill(features):
    for block in features.pending_blocks():
        features.write_block(block, *_block(features.layout, block))
    assert features.finalize()


def _npy(features):
    return {p.name: p.read_bytes() for p in sorted(features.path.glob("*.npy"))}


def _block_of(layout, row):
    return int(np.flatnonzero(layout.order == row)[0]) // layout.block_rows


@pytest.fixture
def store(tmp_path):
    return FeatureStore(tmp_path / "cache", file_bytes=FILE_BYTES)


@pytest.fixture
def entry(store):
    features = store.open(KEY, _layout())
    _fill(features)
    return features


@pytest.fixture
def reference(tmp_path):
    features = FeatureStore(tmp_path / "reference", file_bytes=FILE_BYTES).open(KEY, _layout())
    _fill(features)
    return _npy(features)


def _edit(path, name, change, dtype=None):
    """Change the values of one ``.npy`` file of an entry in place."""
    values = np.load(path / name, mmap_mode="r+")
    change(values if dtype is None else values.view(dtype))
    values.flush()
    del values


def _flip_bit_30(values):
    values[ROW, 0] ^= np.uint32(1 << 30)  # an exponent bit: 0.0247 becomes 8.4e36


def test_a_flipped_bit_in_a_row_is_refused_by_every_reader(store, entry, reference):
    before = entry.read(ROW, ROW + 1)[0, 0]
    _edit(entry.path, "rows-00000.npy", _flip_bit_30, np.uint32)
    assert abs(np.load(entry.path / "rows-00000.npy")[ROW, 0]) > 1e6 * abs(before)
    hint = f"run `selectkit cache verify --repair {entry.id[:12]} --cache-dir {store.root}`"
    readers = [
        lambda: entry.read(0, 23),
        lambda: list(entry.iter_chunks(4)),
        lambda: read_all(entry),
        lambda: score_pool([entry], [entry]),
    ]
    for reader in readers:
        with pytest.raises(StoreError) as info:
            reader()
        message = str(info.value)
        assert f"feature set {entry.id[:12]}" in message and "is damaged" in message
        assert "1 row(s) fail their checksum (pool rows 5)" in message and hint in message
    assert entry.read(6, 23).shape == (17, 8)  # the other rows read as ever
    # Opening checks cheaply (files, sizes, small files): a row is found by a full check.
    assert check_entry(store.get(entry.id)).problems == []
    found = check_entry(entry, rows=True)
    assert found.problems == ["1 row(s) fail their checksum (pool rows 5)"]
    assert store.repair(entry, found)[-1].startswith("1 of 23 rows are pending: rerun")
    assert entry.pending_blocks() == [_block_of(entry.layout, ROW)] and not entry.complete
    _fill(entry)
    assert _npy(entry) == reference and verify_entry(entry) == []


def _set(value):
    def change(values):
        values[ROW] = value

    return change


def _xor(mask):
    def change(values):
        values[ROW] ^= mask

    return change


def _unlink(name):
    return lambda path: (path / name).unlink()


def _truncate(name):
    def damage(path):
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[:-3])

    return damage


def _manifest(change):
    def damage(path):
        manifest = json.loads((path / "manifest.json").read_text())
        change(manifest)
        (path / "manifest.json").write_text(json.dumps(manifest))

    return damage


def _swap_order(path):
    def change(order):
        order[[0, 1]] = order[[1, 0]]

    _edit(path, "order.npy", change)


ALL = "all"
BLOCK = "the damaged row's block"
FILE1 = "the blocks of rows-00001.npy"
NONE = "none"

CASES = {
    "status byte changed to skipped": (
        lambda p: _edit(p, "status.npy", _set(RowStatus.SKIPPED_EMPTY)),
        BLOCK,
    ),
    "status byte changed to pending": (lambda p: _edit(p, "status.npy", _set(0)), BLOCK),
    "side value flipped": (lambda p: _edit(p, "col-loss.npy", _xor(1 << 20), np.uint32), BLOCK),
    "checksum flipped": (lambda p: _edit(p, "checksums.npy", _xor(np.uint64(1))), BLOCK),
    "rows file deleted": (_unlink("rows-00001.npy"), FILE1),
    "rows file truncated": (_truncate("rows-00001.npy"), FILE1),
    "status.npy deleted": (_unlink("status.npy"), ALL),
    "checksums.npy deleted": (_unlink("checksums.npy"), ALL),
    "side column truncated": (_truncate("col-grad_norm.npy"), ALL),
    "locks folder deleted": (lambda p: shutil.rmtree(p / "locks"), NONE),
    "block order changed": (_swap_order, ALL),
    "order.npy deleted": (_unlink("order.npy"), ALL),
    "manifest unreadable": (lambda p: (p / "manifest.json").write_text("{"), ALL),
    "key.json deleted": (_unlink("key.json"), ALL),
    "a recorded checksum changed": (
        _manifest(lambda m: m["sha256"].update({"status.npy": "0" * 64})),
        ALL,
    ),
    "an older entry format": (_manifest(lambda m: m.update(format=1)), ALL),
}


@pytest.mark.parametrize("case", list(CASES))
def test_opening_a_damaged_entry_repairs_it(store, entry, reference, case):
    damage, recomputed = CASES[case]
    damage(entry.path)
    assert FeatureStore(store.root, file_bytes=FILE_BYTES).open(KEY, _layout()).id == entry.id
    again = store.get(entry.id)
    layout = again.layout
    expected = {
        ALL: list(range(layout.num_blocks)),
        BLOCK: [_block_of(layout, ROW)],
        FILE1: [b for b in range(layout.num_blocks) if (layout.block_rows_of(b) // 8 == 1).any()],
        NONE: [],
    }[recomputed]
    assert again.pending_blocks() == expected
    assert again.complete == (recomputed == NONE)
    _fill(again)
    assert _npy(again) == reference and verify_entry(again) == []


def test_readers_get_store_errors_never_os_errors(store, entry):
    _truncate("rows-00002.npy")(entry.path)
    with pytest.raises(StoreError, match=r"is damaged \(rows-00002.npy ends early, at byte"):
        store.get(entry.id).read(20, 23)
    _edit(entry.path, "col-loss.npy", _xor(1 << 20), np.uint32)
    with pytest.raises(StoreError, match=r"is damaged \(col-loss.npy changed since"):
        entry.column("loss")
    (entry.path / "status.npy").unlink()
    for reader in (lambda: entry.read(0, 1), entry.status, entry.info):
        with pytest.raises(StoreError, match=r"is damaged \(status.npy: No such file"):
            reader()


def test_rows_not_extracted_yet_are_never_read_as_zeros(store):
    features = store.open(KEY, _layout())
    features.write_block(0, *_block(features.layout, 0))
    done = features.layout.block_rows_of(0)
    assert features.read(int(done[0]), int(done[0]) + 1).any()
    with pytest.raises(StoreError, match=r"is not complete: pool rows .* are not extracted yet"):
        features.read(0, 23)


def test_an_entry_of_an_older_format_is_never_read(store, entry):
    _manifest(lambda m: m.update(format=1))(entry.path)
    assert store.entries() == []
    ((path, problem),) = store.broken()
    assert path == entry.path and "entry format 1, this selectkit reads format 2" in problem
    with pytest.raises(BrokenEntry, match="verify --repair"):
        store.get(entry.id)
    result = CliRunner().invoke(cli, ["cache", "ls", "--cache-dir", str(store.root)])
    assert result.exit_code == 0 and f"BROKEN {entry.id}: " in result.output
    assert "entry format 1" in result.output
    result = CliRunner().invoke(
        cli, ["cache", "verify", "--repair", "--cache-dir", str(store.root)]
    )
    assert result.exit_code == 0, result.output
    assert "repaired: removed it; the next run that needs these features extracts them" in (
        result.output
    )
    assert not entry.path.exists()


# --- the featurizer and select, on a tiny model ------------------------------------------------

CONFIG = FeaturizeConfig(projection=ProjectionConfig(dim=64), batch_size=4, max_length=96)
SMALL_FILES = 2048  # 4 rows x 64 float32 a block: two blocks (8 rows) per data file


@pytest.fixture(scope="module")
def pool():
    return load_records_from_list(make_records(3, seed=2), group_field="family")


@pytest.fixture(scope="module")
def loaded():
    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def featurized(pool, loaded, tmp_path_factory):
    root = tmp_path_factory.mktemp("featurized")
    (features,) = featurize(
        pool,
        loaded,
        config=CONFIG,
        store=FeatureStore(root, file_bytes=SMALL_FILES),
        progress=False,
    )
    return root, features.id, _npy(features)


def _blocks_of_file_1(layout):
    return len({_block_of(layout, row) for row in range(8, 16)})


FEATURIZE_CASES = {
    "status byte changed to skipped": (
        lambda p: _edit(p, "status.npy", _set(RowStatus.SKIPPED_EMPTY)),
        lambda layout: 1,
    ),
    "side value flipped": (
        lambda p: _edit(p, "col-grad_norm.npy", _xor(1 << 9), np.uint32),
        lambda layout: 1,
    ),
    "rows file deleted": (_unlink("rows-00001.npy"), _blocks_of_file_1),
    "status.npy deleted": (_unlink("status.npy"), lambda layout: layout.num_blocks),
}


@pytest.mark.parametrize("case", list(FEATURIZE_CASES))
def test_featurize_repairs_what_it_finds(pool, loaded, featurized, tmp_path, monkeypatch, case):
    root, ident, expected = featurized
    shutil.copytree(root, tmp_path / "store")
    damage, blocks = FEATURIZE_CASES[case]
    damage(tmp_path / "store" / ident)
    calls = []
    original = PerExampleGradients.__call__
    monkeypatch.setattr(
        PerExampleGradients, "__call__", lambda self, b: calls.append(1) or original(self, b)
    )
    store = FeatureStore(tmp_path / "store", file_bytes=SMALL_FILES)
    (features,) = featurize(pool, loaded, config=CONFIG, store=store, progress=False)
    assert features.id == ident
    assert len(calls) == blocks(features.layout)  # only the damaged blocks are computed again
    assert _npy(features) == expected and verify_entry(features) == []


def test_the_featurize_command_repairs_a_deleted_status_file(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_records(1, seed=4)))
    args = [
        "featurize",
        str(path),
        "--model",
        "tiny-llama",
        "--projection-dim",
        "16",
        "--max-length",
        "96",
    ]
    args += ["--cache-dir", str(tmp_path / "store"), "-q"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    (entry,) = FeatureStore(tmp_path / "store").entries()
    before = _npy(entry)
    (entry.path / "status.npy").unlink()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert again.output == first.output and _npy(entry) == before


def test_select_refuses_a_flipped_bit_and_repair_restores_the_selection(gradient_params, tmp_path):
    """One bit flipped in a pool row (0.0247 -> 8.4e36) used to drop the top-ranked record
    silently; now `select` stops with a one-line error that says how to repair, and after the
    repair the same command gives the same selection."""
    cache = tmp_path / "cache"
    pool_rows = make_records(3, seed=0)
    target_rows = make_records(2, seed=1, families=["units"], id_prefix="target", avoid=pool_rows)
    for name, rows in (("pool", pool_rows), ("target", target_rows)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {
        **gradient_params,
        "projection.dim": 64,
        "warmup.epochs": 1,
        "warmup.fraction": 0.5,
    }
    params = [f"-p{key}={value}" for key, value in settings.items()]
    params += ["--cache-dir", str(cache)]

    def select(out):
        return CliRunner().invoke(
            cli,
            ["select", "-m", "less", "--pool", str(tmp_path / "pool.jsonl"), "--target",
             str(tmp_path / "target.jsonl"), "-b", "5", *params, "--out", str(tmp_path / out),
             "-q"],
        )  # fmt: skip

    first = select("first.jsonl")
    assert first.exit_code == 0, first.output
    picked = (tmp_path / "first.jsonl").read_text()
    top = json.loads(picked.splitlines()[0])["id"]
    row = [r["id"] for r in pool_rows].index(top)
    store = FeatureStore(cache)
    fingerprint = load_pool(tmp_path / "pool.jsonl").content_fingerprint
    damaged = next(
        e for e in store.entries() if e.key["pool"] == fingerprint and e.key["dtype"] == "float32"
    )
    name = damaged.data_files[row // damaged.file_rows]
    values = np.load(damaged.path / name, mmap_mode="r+").view(np.uint32)
    values[row % damaged.file_rows, 0] ^= np.uint32(1 << 30)
    values.flush()
    del values

    refused = select("second.jsonl")
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    (line,) = [text for text in refused.output.splitlines() if text.startswith("error:")]
    assert f"feature set {damaged.id[:12]}" in line and f"(pool rows {row})" in line
    assert f"`selectkit cache verify --repair {damaged.id[:12]} --cache-dir {cache}`" in line
    assert not (tmp_path / "second.jsonl").exists()

    repaired = CliRunner().invoke(cli, ["cache", "verify", "--repair", "--cache-dir", str(cache)])
    assert repaired.exit_code == 0, repaired.output
    assert f"{damaged.id[:12]}  1 problem(s)" in repaired.output
    assert "rows are pending: rerun the command" in repaired.output
    assert select("third.jsonl").exit_code == 0
    assert (tmp_path / "third.jsonl").read_text() == picked
    assert CliRunner().invoke(cli, ["cache", "verify", "--cache-dir", str(cache)]).exit_code == 0


@pytest.mark.parametrize("shape", [(3, 8), (1030, 1536)])
def test_a_row_checksum_is_the_xxh3_of_its_bytes_seeded_by_its_side_values(shape):
    rows = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    loss = np.arange(shape[0], dtype=np.float32)
    status = np.full(shape[0], RowStatus.DONE, np.uint8)
    side = [loss[j].tobytes() + status[j].tobytes() for j in range(shape[0])]
    expected = [
        xxhash.xxh3_64_intdigest(rows[j].tobytes(), seed=xxhash.xxh3_64_intdigest(side[j]))
        for j in range(shape[0])
    ]
    assert row_checksums(rows, [loss, status]).tolist() == expected
