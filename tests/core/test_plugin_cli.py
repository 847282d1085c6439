"""`selectkit plugins` (--strict, --json), `selectkit methods`, plugin commands and the
warnings a command-line user sees."""

from __future__ import annotations

import json
import re
import sys
import warnings

import click
import numpy as np
import pytest
from click.testing import CliRunner

from selectkit import Host, Method, Scores, hookimpl
from selectkit import host as host_module
from selectkit.cli import _register_plugin_commands, cli, main
from selectkit.errors import EXIT_PROBLEMS

EVIL = "\x1b[2J\u202e"


@pytest.fixture
def host(monkeypatch) -> Host:
    built = Host.from_env()
    monkeypatch.setattr(host_module, "_HOST", built)
    return built


class Explodes:
    @hookimpl
    def selectkit_register_solvers(self):
        raise RuntimeError(f"solvers exploded {EVIL}")


class Impostor(Method):
    """Not random."""

    name = "random"

    def objective(self, pool, target, context):
        return Scores(np.zeros(len(pool)))


class Takes:
    @hookimpl
    def selectkit_register_methods(self):
        return [Impostor]


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_strict_exits_3_on_a_failure_and_prints_it_escaped(host):
    assert _run("plugins", "--strict").exit_code == 0
    host.register(Explodes(), name=f"explodes{EVIL}")
    plain = _run("plugins")
    assert plain.exit_code == 0
    strict = _run("plugins", "--strict")
    assert strict.exit_code == EXIT_PROBLEMS
    (line,) = [line for line in strict.output.splitlines() if line.startswith("FAILED")]
    assert "\x1b" not in strict.output and "\u202e" not in strict.output
    assert line.startswith("FAILED explodes\\x1b[2J\\u202e (in-process) at selectkit_register_")
    assert line.endswith("solvers exploded \\x1b[2J\\u202e")


def test_strict_exits_3_on_a_name_conflict(host):
    host.register(Takes(), name="takes")
    strict = _run("plugins", "--strict")
    assert strict.exit_code == EXIT_PROBLEMS
    (line,) = [line for line in strict.output.splitlines() if line.startswith("CONFLICT")]
    assert "plugin 'takes' (registered in-process) also registers method 'random'" in line
    assert re.search(r"^takes +in-process +refused methods: random$", strict.output, re.M)


def test_json_listing_is_escaped_and_complete(host):
    host.register(Explodes(), name=f"explodes{EVIL}")
    host.register(Takes(), name="takes")
    result = _run("plugins", "--json", "--strict")
    assert result.exit_code == EXIT_PROBLEMS
    assert "\x1b" not in result.output and "\u202e" not in result.output
    listing = json.loads(result.output)
    (failure,) = listing["failures"]
    assert failure["name"] == f"explodes{EVIL}" and EVIL in failure["error"]
    (conflict,) = listing["conflicts"]
    assert conflict["kind"] == "method" and conflict["holder"]["plugin"] == "baselines"
    assert conflict["refused"] == [{"plugin": "takes", "distribution": None, "version": None}]
    plugins = {p["name"]: p for p in listing["plugins"]}
    assert plugins["baselines"]["first_party"] and plugins["takes"]["refused"] == {
        "methods": ["random"]
    }


def test_methods_shows_the_values_a_literal_takes(host):
    result = _run("methods", "less")
    assert result.exit_code == 0
    assert (
        "  aggregate (one of: subtask_max, mean, max, round_robin; default subtask_max): "
        in result.output
    )
    assert "  projection.dim (int, default 8192): " in result.output
    assert "  projection.dtype (one of: float32, float16; default float32): " in result.output
    qualified = _run("methods", "selectkit:dsir")
    assert qualified.exit_code == 0 and "hashing (one of: fast, reference;" in qualified.output


def test_plugin_commands_cannot_replace_selectkit_s_own_and_clash_with_each_other(host):
    def adds(*names):
        class Plugin:
            @hookimpl
            def selectkit_register_commands(self, cli):
                for name in names:
                    cli.command(name)(lambda: click.echo("an impostor"))

        return Plugin()

    host.register(adds("select", "hello"), name="first")
    host.register(adds("hello"), name="second")
    host.register(adds("bye"), name="third")
    group = click.Group("g")
    select = group.command("select")(lambda: None)
    _register_plugin_commands(group, host)
    assert group.commands["select"] is select
    assert "hello" not in group.commands and "bye" in group.commands
    messages = [c.message() for c in host.conflicts if c.kind == "command"]
    assert len(messages) == 2
    assert any(
        "plugin 'first' (registered in-process) also registers command 'select'" in m
        for m in messages
    )
    assert any("command 'hello' is registered by plugin 'first'" in m for m in messages)
    assert not host.failures


def test_the_command_line_prints_warnings_escaped(monkeypatch, capsys):
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setenv("SELECTKIT_BLOCK_PLUGINS", f"nosuch{EVIL}")
    monkeypatch.setattr(sys, "argv", ["selectkit", "methods"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("warning:")]
    assert line.startswith("warning: SELECTKIT_BLOCK_PLUGINS names 'nosuch\\x1b[2J\\u202e'")
    assert "\x1b" not in err and "\u202e" not in err and "PluginWarning" not in err
