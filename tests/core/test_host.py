"""The plugin host: built-ins, registration, environment filters and failure isolation."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pytest

from selectkit import Context, Host, Method, Pool, Scores, hookimpl
from selectkit.errors import ParamError


@dataclass(frozen=True)
class _ShortParams:
    power: float = 1.0


class Shortest(Method):
    """Records with the shortest text."""

    name = "shortest"
    Params = _ShortParams

    def objective(self, pool, target, context):
        return Scores(-(np.asarray(pool.costs, dtype=float) ** self.params.power))


class ShortestPlugin:
    @hookimpl
    def selectkit_register_methods(self):
        return [Shortest]


def test_builtins_and_first_party_plugins_load():
    host = Host.from_env()
    assert not host.failures, host.failures
    assert {"random", "longest", "dsir"} <= set(host.methods)
    assert {"jsonl", "json", "csv", "parquet"} <= set(host.formats)
    assert {"alpaca", "chat", "prompt_completion", "text"} <= set(host.shapes)
    assert "exact" in host.solvers
    dsir = host.plugins["dsir"]
    assert dsir.distribution == "selectkit" and not dsir.builtin
    assert dsir.provides == {"methods": ["dsir"]}


def test_registered_object_is_selectable():
    from selectkit import select

    host = Host.from_env()
    host.register(ShortestPlugin(), name="shortest-plugin")
    pool = Pool.from_texts(["a b c", "a", "a b", "a b c d"])
    selection = select(pool, "shortest", 2, params={"power": "2"}, host=host)
    assert selection.ids == ["1", "2"]
    assert selection.manifest["method"]["params"] == {"power": 2.0}
    assert selection.manifest["method"]["plugin"]["name"] == "shortest-plugin"
    host.register(ShortestPlugin(), name="second-copy")
    host.warm()
    assert host.plugins["dsir"].provides == {"methods": ["dsir"]}


def test_unknown_method_lists_the_known_ones():
    host = Host.from_env()
    with pytest.raises(ParamError, match=r"no method named 'nope'; available: .*dsir"):
        host.method("nope")


def test_load_only_and_block(monkeypatch):
    monkeypatch.setenv("SELECTKIT_LOAD_PLUGINS", "baselines")
    host = Host.from_env()
    assert "dsir" not in host.plugins and "random" in host.methods
    monkeypatch.setenv("SELECTKIT_LOAD_PLUGINS", "")
    assert not Host.from_env().methods
    monkeypatch.delenv("SELECTKIT_LOAD_PLUGINS")
    monkeypatch.setenv("SELECTKIT_BLOCK_PLUGINS", "dsir, baselines")
    host = Host.from_env()
    assert not {"dsir", "random", "longest"} & set(host.methods)
    assert "less" in host.methods and "jsonl" in host.formats


def test_trace_writes_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("SELECTKIT_TRACE", "1")
    Host.from_env().hook.selectkit_register_methods()
    assert "selectkit_register_methods" in capsys.readouterr().err


class _FakeEntryPoint:
    def __init__(self, name, loader):
        self.name, self.group, self._loader, self.dist = name, "selectkit", loader, None

    def load(self):
        return self._loader()


def _with_entry_points(monkeypatch, extra):
    real = metadata.entry_points

    def entry_points(**kw):
        found = list(real(**kw))
        return found + extra if kw.get("group") == "selectkit" else found

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def test_plugin_that_fails_to_import_is_reported_and_host_goes_on(monkeypatch):
    def boom():
        raise ImportError("missing dependency 'frobnicate'")

    _with_entry_points(monkeypatch, [_FakeEntryPoint("frob", boom)])
    host = Host.from_env()
    (failure,) = host.failures
    assert failure.name == "frob" and failure.stage == "import"
    assert "frobnicate" in failure.error
    assert "dsir" in host.methods


def test_plugin_with_unknown_hook_is_dropped(monkeypatch):
    class Typo:
        @hookimpl
        def selectkit_register_metods(self):
            return []

    _with_entry_points(monkeypatch, [_FakeEntryPoint("typo", Typo)])
    host = Host.from_env()
    assert [f.name for f in host.failures] == ["typo"]
    assert host.failures[0].stage == "validate"
    assert "typo" not in host.plugins and "random" in host.methods


def test_plugin_whose_hook_raises_or_returns_junk_is_isolated(monkeypatch):
    class Raises:
        @hookimpl
        def selectkit_register_methods(self):
            raise RuntimeError("registration exploded")

    class Junk:
        @hookimpl
        def selectkit_register_methods(self):
            return ["not a class"]

    _with_entry_points(
        monkeypatch, [_FakeEntryPoint("raises", Raises), _FakeEntryPoint("junk", Junk)]
    )
    host = Host.from_env()
    assert {"random", "dsir"} <= set(host.methods)
    stages = {f.name: f.error for f in host.failures}
    assert "registration exploded" in stages["raises"]
    assert "not a class" in stages["junk"]


def test_duplicate_method_name_is_a_failure_not_an_override():
    class Impostor(Method):
        name = "random"

        def objective(self, pool, target, context: Context):
            return Scores(np.zeros(len(pool)))

    class ImpostorPlugin:
        @hookimpl
        def selectkit_register_methods(self):
            return [Impostor]

    host = Host.from_env()
    host.register(ImpostorPlugin(), name="impostor")
    assert host.methods["random"] is not Impostor
    assert any(f.name == "impostor" and "already taken" in f.error for f in host.failures)
