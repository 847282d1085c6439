"""``select --config``: a run written in a file, and repeated from its manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from selectkit.cli import cli
from selectkit.commands.runconfig import render
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError

RUN = """
method = "dsir"
pool = "data/pool.jsonl"
target = "data/target.jsonl"
budget = "10%"
group-by = "family"
seed = 3
quota = ["units=0:4"]

[param]
sample = true
num_buckets = 5000
ngrams = 2
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    rows = make_records(4, seed=0)
    target = make_records(4, seed=1, families=["units"], id_prefix="t", avoid=rows)
    for name, records in (("pool.jsonl", rows), ("target.jsonl", target)):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "run.toml").write_text(RUN.replace('"data/', '"../data/'))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # paths in a run file are relative to the file
    return tmp_path


def _read(name: str) -> str:
    return Path(name).read_text()


def _select(*args: str):
    return CliRunner().invoke(cli, ["select", *args, "-q"])


def test_a_run_file_gives_the_command_line_s_selection_and_its_manifest_repeats_it(folder):
    by_file = _select("--config", str(folder / "runs" / "run.toml"), "-o", "file.jsonl")
    assert by_file.exit_code == 0, by_file.output
    data = folder / "data"
    by_flags = _select(
        *("-m", "dsir", "--pool", str(data / "pool.jsonl"), "--target", str(data / "target.jsonl")),
        *("-b", "10%", "--group-by", "family", "--seed", "3", "--quota", "units=0:4"),
        *("-p", "sample=true", "-p", "num_buckets=5000", "-p", "ngrams=2", "-o", "flags.jsonl"),
    )
    assert by_flags.exit_code == 0, by_flags.output
    assert _read("file.jsonl") == _read("flags.jsonl")

    run = json.loads(_read("file.manifest.json"))["run"]
    assert run["pool"] == str(data / "pool.jsonl") and run["seed"] == 3
    assert run["param"] == {"sample": "true", "num_buckets": "5000", "ngrams": "2"}
    assert "out" not in run and "quiet" not in run  # where it writes is not what it computes

    again = _select("--config", "file.manifest.json", "-o", "again.jsonl")
    assert again.exit_code == 0, again.output
    assert _read("again.jsonl") == _read("file.jsonl")
    assert json.loads(_read("again.manifest.json"))["run"] == run

    # The command line wins over the file.
    other = _select("--config", "file.manifest.json", "--seed", "4", "-o", "seed4.jsonl")
    assert other.exit_code == 0, other.output
    assert json.loads(_read("seed4.manifest.json"))["run"]["seed"] == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('out = "x.jsonl"\n', r"'out' is not an option of this command; known: .*budget"),
        ('methd = "dsir"\n', "'methd' is not an option of this command"),
        ("method = \n", r"not valid TOML: .*line 1"),
        ('param = "sample=true"\n', "'param' must be a table of key = value"),
        ('quota = "units=0:4"\n', "'quota' must be a list"),
    ],
)
def test_a_bad_run_file_is_one_error_naming_the_file(folder, text, message):
    bad = folder / "bad.toml"
    bad.write_text(text)
    result = _select("--config", str(bad), "-o", "x.jsonl")
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert str(bad) in lines[0]
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (7, "7"), (0.1, "0.1"), (1e-05, "1e-05"), ("a,b", "a,b"),
     (float("inf"), "inf"),
     (["q_proj", "v_proj"], "q_proj,v_proj")],
)  # fmt: skip
def test_values_are_written_as_a_command_line_reads_them(value, text):
    assert render(value, "x") == text
    if isinstance(value, float):
        assert float(render(value, "x")) == value  # exactly the same float


def test_values_a_command_line_cannot_say_are_refused():
    with pytest.raises(ParamError, match="dict values cannot be an option"):
        render({"a": 1}, "x")
