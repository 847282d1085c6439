"""The selectkit command: select end to end, plugin listing, errors, and a light start-up."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from selectkit.cli import cli


@pytest.fixture
def pool_file(tmp_path):
    rows = []
    for i in range(30):
        source = ["web", "code", "math"][i % 3]
        words = {"web": "news story today", "code": "def return import", "math": "sum of two"}
        text = " ".join([words[source]] * (1 + i % 4))
        rows.append({"id": f"r{i}", "text": text, "meta": {"source": source}})
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def test_select_writes_unchanged_records_and_manifest(pool_file, tmp_path):
    out = tmp_path / "sel.jsonl"
    result = _run(
        "select",
        "--method",
        "longest",
        "--pool",
        pool_file,
        "--budget",
        "6",
        "--group-by",
        "meta.source",
        "--quota",
        "code=:1",
        "--quota",
        "math=2:",
        "--out",
        out,
        "--scores-out",
        tmp_path / "scores.jsonl",
        "--seed",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert "selected 6 of 30 records" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    sources = [r["meta"]["source"] for r in rows]
    assert len(rows) == 6 and sources.count("code") <= 1 and sources.count("math") >= 2
    original = {
        json.loads(line)["id"]: json.loads(line) for line in pool_file.read_text().splitlines()
    }
    assert all(original[r["id"]] == r for r in rows)
    manifest = json.loads((tmp_path / "sel.manifest.json").read_text())
    assert manifest["selection"]["ids"] == [r["id"] for r in rows]
    assert manifest["seed"] == 3 and manifest["command"][0] == "selectkit"
    assert manifest["pool"]["origin"]["sha256"]
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 30


def test_same_seed_same_selection_bit_for_bit(pool_file, tmp_path):
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        result = _run(
            "select",
            "-m",
            "random",
            "--pool",
            pool_file,
            "-b",
            "20%",
            "--seed",
            "5",
            "--out",
            tmp_path / name,
            "-q",
        )
        assert result.exit_code == 0, result.output
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "lots"], "cannot read budget 'lots'"),
        (["--budget", "31"], "pool has only 30"),
        (
            ["--budget", "5", "--group-by", "meta.source", "--quota", "art=1:"],
            r"\['art'\] not in the pool",
        ),
        (["--budget", "5", "--method", "nope"], "no method named 'nope'"),
        (["--budget", "5", "--param", "x=1"], "has no parameter"),
    ],
)
def test_bad_requests_exit_2_with_one_clear_line(pool_file, tmp_path, args, message):
    base = ["select", "--method", "longest", "--pool", pool_file, "--out", tmp_path / "o.jsonl"]
    result = _run(*base, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.search(message, result.output)
    assert not (tmp_path / "o.jsonl").exists()


def test_malformed_pool_line_is_named(tmp_path):
    pool = tmp_path / "bad.jsonl"
    pool.write_text('{"text": "fine"}\n{"text": "broken"\n{"text": "fine too"}\n')
    result = _run(
        "select", "-m", "random", "--pool", pool, "-b", "1", "--out", tmp_path / "o.jsonl"
    )
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output
    skipped = _run(
        "select",
        "-m",
        "random",
        "--pool",
        pool,
        "-b",
        "1",
        "--skip-bad",
        "--out",
        tmp_path / "o.jsonl",
    )
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 bad record" in skipped.output


def test_plugins_json_lists_builtins_and_methods():
    result = _run("plugins", "--json")
    listing = json.loads(result.output)
    provided = {m for p in listing["plugins"] for m in p["provides"].get("methods", [])}
    assert {"dsir", "random", "longest"} <= provided
    assert listing["failures"] == []


def test_methods_shows_parameters():
    result = _run("methods", "dsir")
    assert result.exit_code == 0 and "num_buckets" in result.output


@pytest.mark.parametrize("command", [["plugins"], ["methods"]])
def test_start_up_imports_no_heavy_library(command):
    probe = (
        "import sys\n"
        "from selectkit.cli import main\n"
        f"sys.argv = ['selectkit', *{command!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'cvxpy', 'scipy', 'peft') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in output


def test_model_free_select_imports_no_torch(pool_file, tmp_path):
    probe = (
        "import sys\n"
        "from selectkit.cli import main\n"
        f"sys.argv = ['selectkit', 'select', '-m', 'longest', '--pool', {str(pool_file)!r}, "
        f"'-b', '40tok', '-q', '--out', {str(tmp_path / 'o.jsonl')!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', [m for m in ('torch', 'transformers') if m in sys.modules])\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in output
    assert (tmp_path / "o.jsonl").exists()


def test_method_and_params_are_checked_before_the_pool_is_read(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text("this is not json\n")
    out = tmp_path / "o.jsonl"
    bad_param = _run(
        "select", "-m", "dsir", "--pool", broken, "-b", "1", "-p", "buckets=3", "-o", out
    )
    assert bad_param.exit_code == 2 and "has no parameter ['buckets']" in bad_param.output
    no_target = _run("select", "-m", "dsir", "--pool", broken, "-b", "1", "-o", out)
    assert no_target.exit_code == 2 and "needs --target FILE" in no_target.output
