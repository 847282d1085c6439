"""SELECTKIT_TRACE: one short, escaped line per hook call, registration hooks included."""

from __future__ import annotations

import json

import click
import pytest

from selectkit import Host, hookimpl
from selectkit.api import load_pool
from selectkit.data.formats import RawRow
from selectkit.tracing import TRACE_WIDTH, brief


@pytest.fixture
def traced(monkeypatch) -> Host:
    monkeypatch.setenv("SELECTKIT_TRACE", "1")
    return Host.from_env()


def _lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert all(line.startswith("trace: ") for line in lines), err[:2000]
    return lines


def test_registration_hooks_are_traced_one_line_per_plugin(traced, capsys):
    traced.warm()
    lines = _lines(capsys)
    assert "trace: selectkit_register_methods [dsir]() -> [DSIR]" in lines
    baselines = "[Random, BalancedRandom, Longest]"
    assert f"trace: selectkit_register_methods [baselines]() -> {baselines}" in lines
    formats = [line for line in lines if line.startswith("trace: selectkit_register_formats [")]
    (line,) = formats
    assert line.startswith(
        "trace: selectkit_register_formats [selectkit.data.readers]() -> [JsonlFormat, JsonFormat,"
    )
    assert line.endswith(", ... 7 in all]")


def test_a_big_result_is_abbreviated(traced, capsys, tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = [{"text": f"record number {i} " + "word " * 40} for i in range(3000)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert path.stat().st_size > 600_000
    capsys.readouterr()
    load_pool(path, host=traced)
    lines = _lines(capsys)
    (records,) = [line for line in lines if "selectkit_load_records(" in line]
    assert records.endswith("-> <jsonl rows, read as the pool is built>")
    assert f"source={str(path)!r}" in records and "formats={'jsonl': JsonlFormat" in records
    assert all(len(line) <= TRACE_WIDTH + len("trace: ") for line in lines)
    assert sum(len(line) for line in lines) < 20_000


def test_trace_lines_are_escaped_and_failures_traced(traced, capsys):
    class Memory:
        @hookimpl
        def selectkit_load_records(self, source, options):
            return [RawRow(1, {"text": "hi\x1b[2J"})] if source.startswith("mem://") else None

        @hookimpl
        def selectkit_register_shapes(self):
            raise RuntimeError("shapes exploded \x1b]8;;evil\x07")

    traced.register(Memory(), name="memory")
    capsys.readouterr()
    traced.warm()
    load_pool("mem://\x1b[2Jx", host=traced)
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert "selectkit_load_records(source='mem://\\x1b[2Jx'" in err
    assert "-> [RawRow(line=1, data={'text': 'hi\\x1b[2J'})]" in err
    assert (
        "selectkit_register_shapes [memory]() -> raised RuntimeError: "
        "'shapes exploded \\x1b]8;;evil\\x07'" in err
    )


def test_plugin_commands_are_traced(traced, capsys):
    from selectkit.cli import _register_plugin_commands

    class Hello:
        @hookimpl
        def selectkit_register_commands(self, cli):
            @cli.command("hello")
            def hello():
                """Hello."""

    traced.register(Hello(), name="hello-plugin")
    group = click.Group("g")
    _register_plugin_commands(group, traced)
    (line,) = _lines(capsys)
    assert line.startswith("trace: selectkit_register_commands [hello-plugin](cli=<Group g>)")


def test_brief_keeps_values_short():
    assert brief(list(range(1000))) == "list of 1000 int"
    assert brief("x" * 10_000).startswith("'xxx") and len(brief("x" * 10_000)) < 100
    assert brief({"a": 1}) == "{'a': 1}"
    assert brief(None) == "None" and brief(int) == "int"
    assert len(brief(object.__new__(type("Big", (), {"__repr__": lambda s: "B" * 5000})))) < 200
