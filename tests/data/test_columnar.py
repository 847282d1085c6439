"""Columnar pools: the same records, costs, errors and fingerprints as in-memory pools, read on
demand from a file cached by content, sent to workers as a reference."""

from __future__ import annotations

import json
import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from selectkit.data import build as build_module
from selectkit.data.columnar import ColumnarPool, meta_path
from selectkit.data.ids import IdIndex
from selectkit.data.load import load_pool
from selectkit.data.poolcache import pools_folder
from selectkit.errors import FormatError, RecordError

# The pools of these rows had these fingerprints before pools could be columnar (computed by
# the in-memory loader of the commit before): feature-store keys hold content fingerprints, so
# a change here would orphan every cached feature.
ALPACA = [
    {"id": 7, "instruction": "Add.", "input": "2 and 2", "output": "4", "meta": {"src": "math"}},
    {
        "id": "ü-8",
        "instruction": 'Greet "politely".',
        "input": "",
        "output": "Grüße\ttab \\ end",
        "meta": {"src": "chat"},
    },
    {
        "id": 9,
        "instruction": "Name a color.",
        "input": "",
        "output": "Blue 🎨",
        "meta": {"src": "art"},
        "extra": [1, 2.5, None, True],
    },
]
CHAT = [
    {
        "id": "c1",
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there"},
        ],
    },
    {
        "id": "c2",
        "messages": [
            {"role": "user", "content": "Name a color."},
            {"role": "assistant", "content": "Blue"},
        ],
    },
]
FINGERPRINTS = {
    "alpaca": (
        "aa729f05b0febb3aee6bc90609d74b17251a3417399e0e537126f0ba40587aca",
        "f9626418c620329c570e79ff3203696c569b0de5fa113065ee5343eb1a2e78a2",
    ),
    "chat": (
        "d03dc3616b2e79e1bcbdaa38c26c2527a07498d44926a6233dac464bb74f0fcb",
        "4eb08c73a45769a1946ebdcda28abff9f918dcd0b9faf7e3b529c4885ac2c269",
    ),
}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _many(n: int, *, every_bad: int = 0) -> list[dict]:
    rows = []
    for i in range(n):
        row = {
            "id": f"r{i}",
            "instruction": f"Task {i} ünï",
            "input": "context" if i % 3 else "",
            "output": " ".join(["word"] * (1 + i % 7)),
            "src": ["a", "b", "c"][i % 3],
        }
        if every_bad and i % every_bad == every_bad - 1:
            row["output"] = ""
        rows.append(row)
    return rows


def _same(memory, columnar) -> None:
    assert isinstance(columnar, ColumnarPool) and not isinstance(memory, ColumnarPool)
    assert len(memory) == len(columnar)
    assert (memory.fingerprint, memory.content_fingerprint) == (
        columnar.fingerprint,
        columnar.content_fingerprint,
    )
    assert list(memory) == list(columnar)
    assert [(r.raw, r.line, r.source) for r in memory] == [
        (r.raw, r.line, r.source) for r in columnar
    ]
    assert memory.ids == columnar.ids and memory.groups == columnar.groups
    assert list(memory.texts) == list(columnar.texts)
    assert np.array_equal(memory.costs, columnar.costs)
    assert np.array_equal(memory.response_costs, columnar.response_costs)
    codes, names = memory.group_codes()
    other_codes, other_names = columnar.group_codes()
    assert np.array_equal(codes, other_codes) and names == other_names
    assert memory.skipped == columnar.skipped
    assert memory.origin == columnar.origin and memory.cost_unit == columnar.cost_unit


@pytest.mark.parametrize(
    ("name", "rows", "group"), [("alpaca", ALPACA, "meta.src"), ("chat", CHAT, None)]
)
def test_fingerprints_keep_their_values(host, tmp_path, name, rows, group):
    path = _jsonl(tmp_path / f"{name}.jsonl", rows)
    memory = load_pool(path, host=host, group_field=group)
    columnar = load_pool(path, host=host, group_field=group, columnar=True, cache_dir=tmp_path)
    assert (memory.fingerprint, memory.content_fingerprint) == FINGERPRINTS[name]
    _same(memory, columnar)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "hf"])
def test_every_format_gives_the_in_memory_pool(host, write, tmp_path, fmt):
    rows = _many(2500, every_bad=97)
    path = write(fmt, rows)
    options = {"group_field": "src", "on_error": "skip"}
    memory = load_pool(path, host=host, **options)
    columnar = load_pool(path, host=host, columnar=True, cache_dir=tmp_path / "cache", **options)
    assert len(memory.skipped) == 25
    _same(memory, columnar)
    picked = np.array([2400, 3, 1024, 1023, 0, 2047, 999])
    assert list(columnar.json_lines(picked)) == list(memory.json_lines(picked))
    assert columnar.ids_of(picked) == memory.ids_of(picked)
    assert columnar.texts_of(1000, 2100) == memory.texts_of(1000, 2100)
    assert columnar.texts[5:9] == memory.texts[5:9] and columnar.texts[-1] == memory.texts[-1]
    assert columnar[-1] == memory[-1] and columnar[1020:1030] == memory[1020:1030]
    assert columnar.position("r1500") == memory.position("r1500")
    assert "r1500" in columnar.id_positions and "nope" not in columnar.id_positions
    with pytest.raises(KeyError, match="no record with id 'nope'"):
        columnar.position("nope")


def test_token_costs_are_the_in_memory_ones(host, tmp_path, make_tokenizer):
    tokenizer = make_tokenizer()
    path = _jsonl(tmp_path / "pool.jsonl", _many(300))
    memory = load_pool(path, host=host, tokenizer=tokenizer, max_length=12)
    columnar = load_pool(
        path, host=host, tokenizer=tokenizer, max_length=12, columnar=True, cache_dir=tmp_path
    )
    assert columnar.cost_unit == "tokens"
    _same(memory, columnar)


def test_a_pickled_pool_is_a_reference(host, tmp_path):
    path = _jsonl(tmp_path / "pool.jsonl", _many(20_000))
    pool = load_pool(path, host=host, group_field="src", columnar=True, cache_dir=tmp_path)
    sent = pickle.dumps(pool)
    assert len(sent) < 2000 < path.stat().st_size // 1000
    received = pickle.loads(sent)
    assert received.fingerprint == pool.fingerprint and received[12345] == pool[12345]
    assert received.skipped == pool.skipped and received.origin == pool.origin


def test_a_pickled_pool_refuses_a_file_that_changed(host, tmp_path):
    path = _jsonl(tmp_path / "pool.jsonl", _many(10))
    pool = load_pool(path, host=host, columnar=True, cache_dir=tmp_path)
    sent = pickle.dumps(pool)
    description = json.loads(meta_path(pool.path).read_text())
    description["fingerprint"] = "0" * 64
    meta_path(pool.path).write_text(json.dumps(description))
    with pytest.raises(FormatError, match="changed since it was sent"):
        pickle.loads(sent)


def test_the_file_is_reused_for_the_same_content_and_options(host, tmp_path):
    rows = _many(50, every_bad=10)
    first = _jsonl(tmp_path / "a.jsonl", rows)
    cache = tmp_path / "features"
    pool = load_pool(first, host=host, on_error="skip", columnar=True, cache_dir=cache)
    assert pool.path.parent == pools_folder(cache) == tmp_path / "pools"
    stamp = pool.path.stat().st_mtime_ns
    again = load_pool(first, host=host, on_error="skip", columnar=True, cache_dir=cache)
    assert again.path == pool.path and again.path.stat().st_mtime_ns == stamp
    # The same bytes elsewhere: the same file, with records and errors naming the new path.
    moved = tmp_path / "elsewhere" / "b.jsonl"
    moved.parent.mkdir()
    moved.write_bytes(first.read_bytes())
    there = load_pool(moved, host=host, on_error="skip", columnar=True, cache_dir=cache)
    assert there.path == pool.path
    assert there[0].source == str(moved) and there.skipped[0].startswith(f"{moved}:10:")
    assert there.origin["path"] == str(moved.resolve())
    # Another option that shapes the pool, or other bytes: another file.
    grouped = load_pool(
        first, host=host, on_error="skip", group_field="src", columnar=True, cache_dir=cache
    )
    _jsonl(first, rows[:-1])
    shorter = load_pool(first, host=host, on_error="skip", columnar=True, cache_dir=cache)
    assert len({pool.path, grouped.path, shorter.path}) == 3
    assert (
        sorted(p.suffix for p in (tmp_path / "pools").iterdir() if not p.name.startswith("."))
        == [".arrow"] * 3 + [".json"] * 3
    )


def test_a_damaged_cached_file_is_made_again(host, tmp_path):
    path = _jsonl(tmp_path / "pool.jsonl", _many(30))
    pool = load_pool(path, host=host, columnar=True, cache_dir=tmp_path)
    fingerprint = pool.fingerprint
    with open(pool.path, "r+b") as handle:  # cut short: its size no longer matches
        handle.truncate(100)
    again = load_pool(path, host=host, columnar=True, cache_dir=tmp_path)
    assert again.fingerprint == fingerprint and len(list(again)) == 30


def test_a_file_damaged_while_in_use_is_a_clear_error(host, tmp_path):
    path = _jsonl(tmp_path / "pool.jsonl", _many(3000))
    pool = load_pool(path, host=host, columnar=True, cache_dir=tmp_path)
    size = pool.path.stat().st_size
    with open(pool.path, "r+b") as handle:  # the footer, which locates every batch
        handle.seek(size - 600)
        handle.write(b"\xff" * 590)
    with pytest.raises(FormatError, match=r"columnar pool cannot be read.*delete it"):
        list(pool.texts)


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_duplicates_across_blocks_are_found_as_in_memory(host, tmp_path, monkeypatch, on_error):
    monkeypatch.setattr(build_module, "BLOCK_ROWS", 7)
    rows = _many(40)
    rows[9]["id"] = "r2"  # an earlier block
    rows[12]["id"] = rows[13]["id"] = "twice"  # the same block
    rows[30]["id"] = "r29"
    path = _jsonl(tmp_path / "pool.jsonl", rows)
    outcomes = []
    for columnar in (False, True):
        try:
            pool = load_pool(
                path, host=host, on_error=on_error, columnar=columnar, cache_dir=tmp_path
            )
            outcomes.append((len(pool), pool.skipped, pool.ids))
        except RecordError as err:
            outcomes.append(str(err))
    assert outcomes[0] == outcomes[1]
    if on_error == "raise":
        assert "pool.jsonl:10: field 'id': duplicate id 'r2' (first used at line 3)" in outcomes[0]
    else:
        assert len(outcomes[0][1]) == 3 and outcomes[0][0] == 37


def test_ids_whose_hashes_collide_are_still_told_apart(monkeypatch):
    import selectkit.data.ids as ids

    monkeypatch.setattr(ids, "id_hashes", lambda values: np.zeros(len(values), dtype=np.uint64))
    index = IdIndex()
    assert index.check(["a", "b"], [1, 2]) == [False, False]
    assert index.check(["c", "b", "a", "c"], [3, 4, 5, 6]) == [False, 2, 1, 3]


def test_the_readers_error_comes_before_a_records(host, tmp_path, monkeypatch):
    """A bad record early and a bad line late: the bad line is reported, as when every row
    was read before any was shaped, whatever the block size."""
    monkeypatch.setattr(build_module, "BLOCK_ROWS", 4)
    rows = _many(30)
    rows[2]["output"] = ""
    path = _jsonl(tmp_path / "pool.jsonl", rows)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    for columnar in (False, True):
        with pytest.raises(RecordError, match=r"pool.jsonl:31: not valid JSON"):
            load_pool(path, host=host, columnar=columnar, cache_dir=tmp_path)


def test_a_cost_tokenizer_error_comes_after_the_records(host, tmp_path, make_tokenizer):
    rows = _many(10)
    rows[8]["output"] = ""
    path = _jsonl(tmp_path / "pool.jsonl", rows)
    tokenizer = make_tokenizer()  # no chat template: template "chat" is refused
    for columnar in (False, True):
        with pytest.raises(RecordError, match=r"pool.jsonl:9: field 'output': empty response"):
            load_pool(
                path,
                host=host,
                tokenizer=tokenizer,
                template="chat",
                columnar=columnar,
                cache_dir=tmp_path,
            )


def test_writing_a_selection_does_not_hold_the_pool(host, tmp_path):
    """The selected lines are copied out in one pass and read back in selection order: the
    memory used does not grow with the pool or the selection."""
    rows = _many(30_000)
    for row in rows:
        row["output"] = "long text " * 200
    path = _jsonl(tmp_path / "pool.jsonl", rows)
    pool = load_pool(path, host=host, columnar=True, cache_dir=tmp_path)
    picked = np.random.default_rng(0).permutation(len(pool))[:6000]
    tracemalloc.start()
    written = sum(len(line) for line in pool.json_lines(picked))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert written > 10_000_000 and peak < written / 4  # one batch at a time, not all
    lines = list(pool.json_lines(picked[:50]))
    assert [json.loads(line)["id"] for line in lines] == pool.ids_of(picked[:50])


def test_no_temporary_is_left_beside_the_cached_files(host, tmp_path):
    path = _jsonl(tmp_path / "pool.jsonl", _many(100))
    pool = load_pool(path, host=host, columnar=True, cache_dir=tmp_path)
    list(pool.json_lines(np.arange(50)))
    names = sorted(os.listdir(pool.path.parent))
    assert [n for n in names if not n.endswith((".arrow", ".json", ".lock"))] == []


def test_fingerprint_lines_are_json_dumps_of_the_row():
    """The fingerprints' lines are made without ``json.dumps`` for speed, but are its text."""
    from selectkit.data.pool import fingerprint_row

    rng = np.random.default_rng(0)
    alphabet = list('aé🎨"\\\n\t\x00\x1f\u2028 z')

    def text() -> str:
        return "".join(rng.choice(alphabet, size=int(rng.integers(0, 12))))

    for _ in range(2000):
        rid, prompt, response = text(), text(), text()
        group = None if rng.random() < 0.3 else text()
        messages = None if rng.random() < 0.5 else ({"role": "user", "content": text()},)
        cost = int(rng.integers(0, 10**6))
        full, content = fingerprint_row(rid, group, prompt, response, messages, cost)
        row = [rid, group, prompt, response, messages, cost]
        assert full == json.dumps(row, ensure_ascii=False)
        assert content == json.dumps([rid, prompt, response, messages], ensure_ascii=False)
