"""Selections of columnar pools written as JSON lines and as saved Hugging Face datasets: the
bytes of an in-memory run, streamed; a dataset that ``datasets`` and selectkit both read."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from selectkit.api import load_pool, select
from selectkit.cli import cli
from selectkit.data.hf_save import DATA_FILE
from selectkit.errors import OutputError
from selectkit.output import write_selection

ROWS = [
    {
        "id": f"r{i}",
        "instruction": f"task {i} " * (1 + i % 3),
        "output": f"answer {i} " * (1 + i % 4),
        "src": "abc"[i % 3],
        "n": i if i % 2 else i + 0.5,
        "tags": ["x"] * (i % 3),
        "meta": {"k": i} if i % 4 else {"k": i, "z": "q"},
    }
    for i in range(60)
]


@pytest.fixture
def pool_file(tmp_path: Path) -> Path:
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), "utf-8")
    return path


def _select(*args: str) -> None:
    result = CliRunner().invoke(cli, ["select", *args, "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_the_command_line_writes_the_bytes_of_an_in_memory_run(pool_file, tmp_path):
    request = ["-m", "random", "-b", "20", "--group-by", "src", "--quota", "a=10:"]
    _select(*request, "--pool", str(pool_file), "--out", str(tmp_path / "cli.jsonl"),
            "--scores-out", str(tmp_path / "cli.scores.jsonl"), "--require", "r7",
            "--exclude", "r8", "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert list((tmp_path / "cache" / "pools").glob("*.arrow"))  # read into the store's cache
    memory = load_pool(pool_file, group_field="src")
    from selectkit.solvers.budget import Constraints

    constraints = Constraints.build(["a=10:"], ["r7"], ["r8"])
    selection = select(memory, "random", 20, constraints=constraints)
    write_selection(selection, memory, tmp_path / "py.jsonl", scores_out=tmp_path / "py.s.jsonl")
    assert (tmp_path / "cli.jsonl").read_bytes() == (tmp_path / "py.jsonl").read_bytes()
    assert (tmp_path / "cli.scores.jsonl").read_bytes() == (tmp_path / "py.s.jsonl").read_bytes()
    manifest = json.loads((tmp_path / "cli.manifest.json").read_text())
    assert manifest["selection"]["ids"] == selection.ids
    assert manifest["pool"]["fingerprint"] == memory.fingerprint
    assert manifest["pool"]["origin"] == memory.origin
    assert "out_format" not in manifest["run"]


def test_group_shares_of_a_columnar_pool(pool_file, tmp_path):
    pool = load_pool(pool_file, group_field="src", columnar=True, cache_dir=tmp_path)
    selection = select(pool, "random", 25, seed=3)
    expected = Counter(pool[i].group for i in selection.indices.tolist())
    shares = selection.group_shares(pool)
    assert list(shares) == [g for g, _ in expected.most_common()]
    assert shares == {g: c / 25 for g, c in expected.most_common()}


def test_a_dataset_out_is_read_back_as_the_same_records(pool_file, tmp_path):
    out = tmp_path / "picked"
    _select("-m", "longest", "-b", "15", "--pool", str(pool_file), "--out", str(out),
            "--out-format", "hf")  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [DATA_FILE, "dataset_info.json", "state.json"]
    manifest = json.loads((tmp_path / "picked.manifest.json").read_text())
    back = load_pool(out)
    assert back.ids == manifest["selection"]["ids"]
    by_id = {row["id"]: row for row in ROWS}
    picked = [by_id[i] for i in back.ids]
    meta_fields = list(dict.fromkeys(name for row in picked for name in row["meta"]))
    for record, original in zip(back, picked, strict=True):
        # Every field, in the record's order; "n" is one float column, and a struct field
        # one record lacks is null there.
        expected = {**original, "n": float(original["n"])}
        expected["meta"] = {name: original["meta"].get(name) for name in meta_fields}
        assert record.raw == expected and list(record.raw) == list(original)


def test_datasets_loads_a_dataset_out(pool_file, tmp_path):
    datasets = pytest.importorskip(
        "datasets", reason="datasets is not installed (an optional package: pip install datasets)"
    )
    out = tmp_path / "picked"
    _select("-m", "random", "-b", "12", "--pool", str(pool_file), "--out", str(out),
            "--out-format", "hf")  # fmt: skip
    loaded = datasets.load_from_disk(str(out))
    manifest = json.loads((tmp_path / "picked.manifest.json").read_text())
    assert loaded.num_rows == 12 and loaded["id"] == manifest["selection"]["ids"]
    assert loaded.column_names == list(ROWS[0])


def test_a_field_of_two_types_is_one_error_and_nothing_is_written(tmp_path):
    rows = [
        {"instruction": "q", "output": "a", "x": 1},
        {"instruction": "q", "output": "b", "x": "t"},
    ]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    args = ["select", "-m", "longest", "-b", "2", "--pool", str(path), "--out-format", "hf"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "ds")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: --out as a Hugging Face dataset: field 'x'"
    )
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.manifest.json").exists()


def test_an_unknown_output_format_is_refused(pool_file, tmp_path):
    memory = load_pool(pool_file)
    selection = select(memory, "longest", 2)
    with pytest.raises(OutputError, match="jsonl or hf, not 'csv'"):
        write_selection(selection, memory, tmp_path / "o.csv", out_format="csv")  # type: ignore[arg-type]
