"""Malformed input of every kind, swept through the command line in-process: broken and
hostile record files, impossible budgets and quotas, bad parameters, paths that collide or
cannot be written, corrupt files. For every case: a non-zero exit with exactly one `error:`
line, no traceback, and no file of the working folder changed."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from selectkit.cli import cli

GOOD = [
    {"id": f"r{i}", "instruction": f"task {i} " * (2 + i % 4),
     "output": f"answer {i} " * (1 + i % 5), "src": "ab"[i % 2]}
    for i in range(20)
]  # fmt: skip
GOOD_JSONL = "".join(json.dumps(row) + "\n" for row in GOOD).encode()
PAIR = '{"id": "x", "instruction": "a", "output": "b"}\n'


def _jsonl(*lines: str) -> bytes:
    """Good records, then ``lines``: a file that fails because of them, not for being short."""
    return GOOD_JSONL + ("\n".join(lines) + "\n").encode()


def _nested(depth: int) -> str:
    meta = "[" * depth + "]" * depth
    return '{"id": "d", "instruction": "q", "output": "a", "meta": ' + meta + "}"


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink, compression="NONE")
    return sink.getvalue()


def _corrupt_parquet() -> bytes:
    data = bytearray(_parquet(GOOD * 20))
    middle = len(data) // 2
    data[middle : middle + 64] = os.urandom(64)
    return bytes(data)


def _hf_dataset(arrow: bytes, state: bytes | None = None) -> dict[str, bytes]:
    files = [{"filename": "data-00000-of-00001.arrow"}]
    state = state or json.dumps({"_data_files": files}).encode()
    return {
        "ds/state.json": state,
        "ds/dataset_info.json": b"{}",
        "ds/data-00000-of-00001.arrow": arrow,
    }


# (case name, files to create, arguments). Files are bytes, or callables that make them.
# The last element is a text the error line must hold (the bad file's name), or "".
Case = tuple[str, dict[str, bytes | Callable[[], bytes]], list[str], str]

SELECT = ["select", "-m", "random", "--budget", "2", "--out", "out.jsonl"]


def record_cases() -> list[Case]:
    """Record files that cannot be used, read by `select -m random` and `select -m longest`."""
    files: dict[str, bytes | Callable[[], bytes]] = {
        "bad-json.jsonl": _jsonl(PAIR, '{"instruction": "a", "output": '),
        "array-line.jsonl": _jsonl(PAIR, "[1, 2]"),
        "string-line.jsonl": _jsonl('"just a string"'),
        "number-line.jsonl": _jsonl("42"),
        "missing-output.jsonl": _jsonl('{"instruction": "a"}'),
        "empty-output.jsonl": _jsonl('{"instruction": "a", "output": ""}'),
        "blank-output.jsonl": _jsonl('{"instruction": "a", "output": "  \\n "}'),
        "number-output.jsonl": _jsonl('{"instruction": "a", "output": 42}'),
        "bool-output.jsonl": _jsonl('{"instruction": "a", "output": true}'),
        "nan-output.jsonl": _jsonl('{"instruction": "a", "output": NaN}'),
        "inf-output.jsonl": _jsonl('{"instruction": "a", "output": 1e999}'),
        "null-output.jsonl": _jsonl('{"instruction": "a", "output": null}'),
        "object-output.jsonl": _jsonl('{"instruction": "a", "output": {"x": 1}}'),
        "list-output.jsonl": _jsonl('{"instruction": "a", "output": ["x"]}'),
        "nested-100000.jsonl": _jsonl(_nested(100_000)),
        "nested-5000.jsonl": _jsonl(PAIR, _nested(5_000)),
        "invalid-utf8.jsonl": GOOD_JSONL + b'{"instruction": "a", "output": "\xff\xfe"}\n',
        "nul-byte.jsonl": GOOD_JSONL + b'{"instruction": "a\x00", "output": "b"}\n',
        "duplicate-ids.jsonl": _jsonl(PAIR, PAIR),
        "empty-id.jsonl": _jsonl('{"id": "", "instruction": "a", "output": "b"}'),
        "object-id.jsonl": _jsonl('{"id": {"a": 1}, "instruction": "a", "output": "b"}'),
        "nan-id.jsonl": _jsonl('{"id": NaN, "instruction": "a", "output": "b"}'),
        "bad-role.jsonl": _jsonl('{"messages": [{"role": "wizard", "content": "x"}]}'),
        "no-assistant.jsonl": _jsonl('{"messages": [{"role": "user", "content": "x"}]}'),
        "messages-not-list.jsonl": _jsonl('{"messages": 7}'),
        "null-content.jsonl": _jsonl(
            '{"messages": [{"role": "user", "content": "q"}, '
            '{"role": "assistant", "content": null}]}'
        ),
        "number-completion.jsonl": _jsonl('{"prompt": "p", "completion": 3.5}'),
        "no-shape.jsonl": _jsonl('{"foo": "bar"}'),
        "empty.jsonl": b"",
        "whitespace.jsonl": b"   \n\t\n  ",
        "bad-lines-only.jsonl": b"{\n[\n",
        "bom-inside.jsonl": _jsonl(PAIR.strip(), '\ufeff{"instruction": "a", "output": "b"}'),
        "not-gzip.jsonl.gz": GOOD_JSONL,
        "truncated.jsonl.gz": lambda: _gzip(GOOD_JSONL)[:-20],
        "gzip-bad-json.jsonl.gz": lambda: _gzip(b'{"instruction": \n'),
        "string.json": b'"a string"',
        "number.json": b"12",
        "truncated.json": b'[{"instruction": "a", "output": "b"}, {"instr',
        "two-lists.json": b'{"a": [], "b": []}',
        "numbers.json": b"[1, 2, 3]",
        "nested.json": ("[" * 100_000 + "]" * 100_000).encode(),
        "truncated.json.gz": lambda: _gzip(json.dumps(GOOD).encode())[:-10],
        "header-only.csv": b"instruction,output\n",
        "duplicate-header.csv": b"instruction,instruction,output\na,b,c\n",
        "empty-header.csv": b"instruction,,output\na,b,c\n",
        "extra-columns.csv": b"instruction,output\na,b\nc,d\ne,f,g,h\n",
        "invalid-utf8.csv": b"instruction,output\na,b\nc,d\n\xff,f\n",
        "no-output-column.csv": b"instruction,text2\na,b\n",
        "corrupt.parquet": _corrupt_parquet,
        "random.parquet": lambda: os.urandom(4096),
        "zero.parquet": b"",
        "int-output.parquet": lambda: _parquet(
            [{**row, "output": i} for i, row in enumerate(GOOD)]
        ),
        "empty.txt": b"",
        "invalid-utf8.txt": b"one\ntwo\n\xff\xfe\xfd\n",
    }
    cases: list[Case] = []
    for name, data in files.items():
        cases.append((f"records:{name}", {name: data}, [*SELECT, "--pool", name], name))
    all_bad = {"b.jsonl": b'{"instruction": "a"}\n{"output": 1}\n'}
    cases.append(("records:skip-bad-all-bad", all_bad,
                  [*SELECT, "--pool", "b.jsonl", "--skip-bad"], "b.jsonl"))  # fmt: skip
    longest = ["select", "-m", "longest", "--budget", "1", "--out", "o.jsonl", "--pool"]
    for name in ("bad-json.jsonl", "number-output.jsonl", "nested-100000.jsonl", "corrupt.parquet"):
        cases.append((f"records-longest:{name}", {name: files[name]}, [*longest, name], name))
    hf = [
        ("garbage-arrow", _hf_dataset(os.urandom(2048))),
        ("bad-state", _hf_dataset(b"", state=b"{not json")),
        ("missing-shard", {k: v for k, v in _hf_dataset(b"").items() if "arrow" not in k}),
        ("dataset-dict", {"ds/dataset_dict.json": b'{"splits": ["train"]}'}),
    ]
    for name, layout in hf:
        cases.append((f"hf:{name}", layout, [*SELECT, "--pool", "ds"], "ds"))
    pool = {"p.jsonl": GOOD_JSONL}
    object_ids = {"p.jsonl": b'{"m": {"x": 1}, "instruction": "a", "output": "b"}\n' * 3}
    options = [
        ("plain-directory", {"dir/readme.md": b"hello"}, ["--pool", "dir"]),
        ("unknown-format", pool, ["--pool", "p.jsonl", "--format", "xml"]),
        ("unknown-shape", pool, ["--pool", "p.jsonl", "--shape", "poem"]),
        ("bad-field-map", pool, ["--pool", "p.jsonl", "--field", "answer=output"]),
        ("missing-group", pool, ["--pool", "p.jsonl", "--group-by", "nope"]),
        ("object-id-field", object_ids, ["--pool", "p.jsonl", "--id-field", "m"]),
        ("missing-text-field", pool, ["--pool", "p.jsonl", "--text-field", "nope"]),
    ]
    for name, layout, args in options:
        cases.append((f"options:{name}", layout, [*SELECT, *args], ""))
    return cases


def request_cases() -> list[Case]:
    """Budgets, quotas, ids, methods, parameters, seeds and output paths that cannot work,
    against a good pool and target."""
    base = {"pool.jsonl": GOOD_JSONL, "target.jsonl": GOOD_JSONL[:200].rsplit(b"\n", 1)[0] + b"\n"}
    pool = ["select", "--pool", "pool.jsonl", "--out", "out.jsonl"]
    cases: list[Case] = []
    budgets = ("", "0", "-1", "abc", "1e999", "5%%", "101%", "0%", "1.5", "0.5", "nan", "inf",
               "1e999tok", "0tok", "-5tok", "1000", "1e20", "2tok", "12 records")  # fmt: skip
    for budget in budgets:
        cases.append((f"budget:{budget!r}", base, [*pool, "-m", "random", "--budget", budget]))
    grouped = [*pool, "-m", "random", "--budget", "4", "--group-by", "src"]
    for quota in ("a=inf:", "a=:1e999", "a", "=5:", "a=5", "a=10:5", "a=-1:", "a=:200%",
                  "zzz=1:", "a=nan:", "a=5:", "b=3:,a=2:"):  # fmt: skip
        cases.append((f"quota:{quota!r}", base, [*grouped, "--quota", quota]))
    cases += [
        ("quota:twice", base, [*grouped, "--quota", "a=1:", "--quota", "a=2:"]),
        ("quota:no-group-by", base, [*pool, "-m", "random", "--budget", "4", "--quota", "a=1:"]),
        ("require:unknown", base, [*pool, "-m", "random", "--budget", "2", "--require", "zz"]),
        ("require-and-exclude", base,
         [*pool, "-m", "random", "--budget", "2", "--require", "r1", "--exclude", "r1"]),
        ("exclude:too-many", base,
         [*pool, "-m", "random", "--budget", "20", "--exclude", "r1"]),
        ("require:too-many", base,
         [*pool, "-m", "random", "--budget", "1", "--require", "r1", "--require", "r2"]),
    ]  # fmt: skip
    dsir = [*pool, "-m", "dsir", "--target", "target.jsonl", "--budget", "2"]
    params = ("num_buckets=abc", "num_buckets=-5", "num_buckets=0", "ngrams=0", "sample=maybe",
              "smoothing=nan", "smoothing=2", "=5", "novalue", "nope=1", "ngrams=1000000",
              "num_buckets=100000000000000", "min_example_length=-1")  # fmt: skip
    for param in params:
        cases.append((f"dsir-param:{param}", base, [*dsir, "-p", param]))
    cases += [
        ("param:random-has-none", base, [*pool, "-m", "random", "--budget", "2", "-p", "x=1"]),
        ("method:unknown", base, [*pool, "-m", "nosuch", "--budget", "2"]),
        ("method:needs-target", base, [*pool, "-m", "less", "--budget", "2"]),
        ("solver:unknown", base, [*pool, "-m", "random", "--budget", "2", "--solver", "nosuch"]),
        ("solver-param:no-solver", base,
         [*pool, "-m", "random", "--budget", "2", "--solver-param", "a=1"]),
        ("solver-param:unknown", base,
         [*pool, "-m", "longest", "--budget", "2", "--solver", "milp", "--solver-param", "a=1"]),
        ("seed:negative", base, [*pool, "-m", "random", "--budget", "2", "--seed", "-1"]),
        ("seed:huge", base, [*pool, "-m", "random", "--budget", "2", "--seed", str(2**64)]),
        ("jobs:negative", base, [*pool, "-m", "random", "--budget", "2", "-j", "-5"]),
        ("target:missing", base, [*pool, "-m", "dsir", "--budget", "2", "--target", "nope.jsonl"]),
        ("pool:nul-byte", base, [*pool, "-m", "random", "--budget", "2", "--target", "a\x00b"]),
        ("pool:missing", base, ["select", "-m", "random", "--budget", "2", "--pool", "nope.jsonl",
                                "--out", "o.jsonl"]),
    ]  # fmt: skip
    sel = ["select", "-m", "random", "--budget", "2", "--pool", "pool.jsonl"]
    cases += [
        ("out:empty", base, [*sel, "--out", ""]),
        ("out:is-pool", base, [*sel, "--out", "pool.jsonl"]),
        ("out:is-target", base, [*sel, "--target", "target.jsonl", "--out", "target.jsonl"]),
        ("scores-out:is-pool", base, [*sel, "--out", "o.jsonl", "--scores-out", "pool.jsonl"]),
        ("scores-out:is-out", base, [*sel, "--out", "o.jsonl", "--scores-out", "o.jsonl"]),
        ("scores-out:is-manifest", base,
         [*sel, "--out", "o.jsonl", "--scores-out", "o.manifest.json"]),
        ("out:is-folder", {**base, "folder/keep": b"x"}, [*sel, "--out", "folder"]),
        ("out:under-a-file", base, [*sel, "--out", "pool.jsonl/o.jsonl"]),
        ("out:manifest-is-folder", {**base, "o.manifest.json/keep": b"x"},
         [*sel, "--out", "o.jsonl"]),
        ("out:symlink-to-pool", {**base, "@link.jsonl": b"pool.jsonl"},
         [*sel, "--out", "link.jsonl"]),
        ("out:inside-input-folder", {**base, "ds/state.json": b"{}"},
         ["select", "-m", "less", "--budget", "2", "--pool", "pool.jsonl", "--target",
          "target.jsonl", "--out", "ds/o.jsonl", "-p", "checkpoints=ds"]),
    ]  # fmt: skip
    return [(*case, "") for case in cases]


def other_command_cases() -> list[Case]:
    """The other commands that read records or write: bad options are refused before any
    model loads."""
    other = {"pool": {"fingerprint": "0" * 64}, "selection": {"indices": [0]}}
    base = {
        "pool.jsonl": GOOD_JSONL,
        "target.jsonl": GOOD_JSONL,
        "bad.manifest.json": b"{not json",
        "other.manifest.json": json.dumps(other).encode(),
    }
    tiny = ["--model", "tiny-llama", "-q"]
    retrain = ["retrain", "pool.jsonl", "--target", "target.jsonl", "--out", "r", *tiny]
    cases = [
        ("train:bad-manifest", base,
         ["train", "pool.jsonl", "--selection", "bad.manifest.json", "--out", "run", *tiny]),
        ("train:other-pool", base,
         ["train", "pool.jsonl", "--selection", "other.manifest.json", "--out", "run", *tiny]),
        ("train:neither", base, ["train", "pool.jsonl", "--out", "run", *tiny]),
        ("train:lr-nan", base,
         ["train", "pool.jsonl", "--all", "--out", "run", "--learning-rate", "nan", *tiny]),
        ("train:batch-zero", base,
         ["train", "pool.jsonl", "--all", "--out", "run", "--batch-size", "0", *tiny]),
        ("warmup:fraction-zero", base,
         ["warmup", "pool.jsonl", "--out", "w", "--fraction", "0", *tiny]),
        ("warmup:fraction-nan", base,
         ["warmup", "pool.jsonl", "--out", "w", "--fraction", "nan", *tiny]),
        ("retrain:fraction-one", base, [*retrain, "--fraction", "1"]),
        ("retrain:models-zero", base, [*retrain, "--models", "0"]),
        ("retrain:bad-shard", base, [*retrain, "--shard", "3/2"]),
        ("lds:not-a-run", {**base, "runs/x": b""},
         ["lds", "runs", "pool.jsonl", "--target", "target.jsonl", "-m", "random"]),
        ("evaluate:batch-negative", base,
         ["evaluate", "target.jsonl", "--out", "e.jsonl", "--batch-size", "-1", *tiny]),
        ("featurize:bad-shard", base, ["featurize", "pool.jsonl", "--shard", "1/1", *tiny]),
        ("featurize:dim-zero", base, ["featurize", "pool.jsonl", "--projection-dim", "0", *tiny]),
        ("featurize:on-invalid-unknown", base,
         ["featurize", "pool.jsonl", "--on-invalid", "ignore", *tiny]),
        ("featurize:lora-targets-empty-item", base,
         ["featurize", "pool.jsonl", "--lora-target-modules", "q_proj,,v_proj", *tiny]),
        ("warmup:lora-rank-zero", base,
         ["warmup", "pool.jsonl", "--out", "w", "--lora-r", "0", *tiny]),
        ("retrain:finetune-lr-zero", base, [*retrain, "--finetune-learning-rate", "0"]),
        ("retrain:finetune-lora-dropout-one", base, [*retrain, "--finetune-lora-dropout", "1"]),
        ("retrain:finetune-max-length-one", base, [*retrain, "--finetune-max-length", "1"]),
        ("featurize:missing-checkpoint", base,
         ["featurize", "pool.jsonl", "--checkpoint", "nope", *tiny]),
        ("cache:bad-id", base, ["cache", "info", "zz-not-hex"]),
        ("demo:out-is-file", base, ["demo", "--out", "pool.jsonl", "--model", "tiny-llama"]),
    ]  # fmt: skip
    return [(*case, "") for case in cases]


CASES = record_cases() + request_cases() + other_command_cases()


def test_there_are_at_least_a_hundred_cases():
    assert len(CASES) >= 100
    assert len({case[0] for case in CASES}) == len(CASES)


def _materialize(folder: Path, files: dict[str, bytes | Callable[[], bytes]]) -> None:
    for name, data in files.items():
        if name.startswith("@"):  # a symbolic link to the named file
            (folder / name[1:]).symlink_to(data.decode())
            continue
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data() if callable(data) else data)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "folder"
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("name, files, args, names", CASES, ids=[case[0] for case in CASES])
def test_malformed_input_is_one_clear_error_and_changes_nothing(
    name, files, args, names, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SELECTKIT_CACHE_DIR", str(tmp_path / "cache"))
    _materialize(tmp_path, files)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "No such option" not in lines[0], "the case must reach the check it is about"
    assert names in lines[0], f"the error does not name {names}: {lines[0]}"
    after = _snapshot(tmp_path)
    after.pop("cache", None)  # the store's root may be created; nothing may be written in it
    for kept in [k for k in after if k.startswith("cache/pools")]:  # but a pool read is kept
        assert re.fullmatch(r"cache/pools(/[0-9a-f]{64}\.(arrow|json))?", kept), kept
        del after[kept]
    assert after == before, (result.output, set(after.items()) ^ set(before.items()))
