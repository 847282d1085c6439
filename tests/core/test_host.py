"""The plugin host: built-ins, registration, environment filters and failure isolation."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pytest

from selectkit import Context, Host, Method, Pool, Scores, hookimpl
from selectkit.errors import ParamError, PluginError
from selectkit.host import PluginWarning


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
    monkeypatch.delenv("SELECTKIT_LOAD_PLUGINS")
    monkeypatch.setenv("SELECTKIT_BLOCK_PLUGINS", "dsir, baselines")
    host = Host.from_env()
    assert not {"dsir", "random", "longest"} & set(host.methods)
    assert "less" in host.methods and "jsonl" in host.formats
    assert not host.warnings


def test_an_empty_load_list_loads_no_plugin_and_says_so(monkeypatch):
    monkeypatch.setenv("SELECTKIT_LOAD_PLUGINS", "")
    with pytest.warns(PluginWarning, match="set but empty"):
        host = Host.from_env()
    assert not host.methods and "jsonl" in host.formats
    assert "SELECTKIT_LOAD_PLUGINS is set but empty" in host.warnings[0]


def test_filters_take_distribution_names(monkeypatch):
    monkeypatch.setenv("SELECTKIT_LOAD_PLUGINS", "Selectkit")  # the distribution, any spelling
    host = Host.from_env()
    assert {"dsir", "random", "less"} <= set(host.methods) and not host.warnings
    monkeypatch.delenv("SELECTKIT_LOAD_PLUGINS")
    _with_entry_points(monkeypatch, [_entry("aadsir", _Aadsir, "selectkit-aadsir")])
    monkeypatch.setenv("SELECTKIT_BLOCK_PLUGINS", "selectkit_aadsir")
    host = Host.from_env()
    assert "aadsir" not in host.plugins and not host.conflicts and not host.warnings


def test_a_typo_in_the_load_list_is_a_warning_listing_what_exists(monkeypatch):
    monkeypatch.setenv("SELECTKIT_LOAD_PLUGINS", "dsri,baselines,readers")
    with pytest.warns(PluginWarning) as caught:
        host = Host.from_env()
    assert "random" in host.methods
    messages = [str(w.message) for w in caught]
    (typo,) = [m for m in messages if "'dsri'" in m]
    assert "matches no installed plugin or distribution" in typo
    assert "dsir" in typo.split("plugins:")[1] and "selectkit" in typo
    assert any("'readers', a built-in module" in m for m in messages)


def test_blocking_a_method_name_says_which_plugin_provides_it(monkeypatch):
    monkeypatch.setenv("SELECTKIT_BLOCK_PLUGINS", "random,nosuchplugin")
    with pytest.warns(PluginWarning) as caught:
        host = Host.from_env()
    assert "random" in host.methods  # nothing was blocked: a method is not a plugin
    messages = [str(w.message) for w in caught]
    assert any(
        "'random', which is not a plugin but a method of plugin 'baselines' (selectkit" in m
        for m in messages
    )
    (unknown,) = [m for m in messages if "'nosuchplugin'" in m]
    assert "matches no plugin, distribution or built-in" in unknown and "baselines" in unknown


@pytest.mark.parametrize("value", ["1", "true", "Yes", "on"])
def test_trace_values_that_mean_yes(monkeypatch, capsys, value):
    monkeypatch.setenv("SELECTKIT_TRACE", value)
    Host.from_env().hook.selectkit_register_methods()
    assert "selectkit_register_methods" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "false", "no", "OFF", ""])
def test_trace_values_that_mean_no(monkeypatch, capsys, value):
    monkeypatch.setenv("SELECTKIT_TRACE", value)
    host = Host.from_env()
    host.warm()
    host.hook.selectkit_register_methods()
    assert capsys.readouterr().err == "" and not host.warnings


def test_a_trace_value_that_is_not_yes_or_no_is_a_warning(monkeypatch, capsys):
    monkeypatch.setenv("SELECTKIT_TRACE", "maybe")
    with pytest.warns(PluginWarning, match="SELECTKIT_TRACE='maybe' is not a yes/no value"):
        host = Host.from_env()
    host.warm()
    assert "trace:" not in capsys.readouterr().err


class _Dist:
    def __init__(self, name, version):
        self.metadata, self.version = {"Name": name}, version


class _FakeEntryPoint:
    def __init__(self, name, loader, dist=None):
        self.name, self.group, self._loader, self.dist = name, "selectkit", loader, dist

    def load(self):
        return self._loader()


def _entry(name, loader, distribution, version="1.0"):
    return _FakeEntryPoint(name, loader, _Dist(distribution, version))


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


class _ImpostorDsir(Method):
    """Not DSIR."""

    name = "dsir"
    needs_target = True

    def objective(self, pool, target, context: Context):
        return Scores(np.zeros(len(pool)))


class _Aadsir:
    """Sorts before 'dsir' and registers its name."""

    @hookimpl
    def selectkit_register_methods(self):
        return [_ImpostorDsir]


class _AadsirFirst:
    @hookimpl(tryfirst=True)
    def selectkit_register_methods(self):
        return [_ImpostorDsir]


@pytest.mark.parametrize("plugin", [_Aadsir, _AadsirFirst], ids=["plain", "tryfirst"])
def test_an_installed_plugin_cannot_take_a_first_party_method(monkeypatch, plugin):
    from selectkit_dsir.method import DSIR

    _with_entry_points(monkeypatch, [_entry("aadsir", plugin, "selectkit-aadsir")])
    host = Host.from_env()
    assert host.methods["dsir"] is DSIR
    assert not host.failures  # the real dsir is not blamed, nor is anything else
    (conflict,) = host.conflicts
    assert (conflict.kind, conflict.name) == ("method", "dsir")
    assert conflict.holder.plugin.name == "dsir"
    assert [c.plugin.distribution for c in conflict.refused] == ["selectkit-aadsir"]
    message = conflict.message()
    assert "plugin 'aadsir' (selectkit-aadsir 1.0) also registers method 'dsir'" in message
    assert "first-party plugin 'dsir' (selectkit " in message and "'aadsir:dsir'" in message
    with pytest.warns(PluginWarning, match="selectkit-aadsir 1.0. also registers method 'dsir'"):
        assert host.method("dsir") is DSIR
    assert host.method("aadsir:dsir") is _ImpostorDsir
    assert host.method("selectkit-aadsir:dsir") is _ImpostorDsir
    assert host.method("selectkit:dsir") is DSIR
    assert host.plugins["dsir"].provides == {"methods": ["dsir"]}
    assert host.plugins["aadsir"].refused == {"methods": ["dsir"]}


@pytest.mark.parametrize(
    ("kind", "name"),
    [("solvers", "exact"), ("formats", "jsonl"), ("shapes", "alpaca"), ("projectors", "sjlt")],
)
def test_first_party_solvers_formats_shapes_and_projectors_cannot_be_taken(monkeypatch, kind, name):
    impostor = type("Impostor", (), {"name": name})

    class Plugin:
        pass

    def register(self):
        return [impostor]

    setattr(Plugin, f"selectkit_register_{kind}", hookimpl(tryfirst=True)(register))
    _with_entry_points(monkeypatch, [_entry("aaa", Plugin, "selectkit-aaa")])
    host = Host.from_env()
    registry = getattr(host, kind)
    assert registry[name] is not impostor and registry[f"aaa:{name}"] is impostor
    assert f"selectkit-aaa:{name}" in registry and registry[f"selectkit:{name}"] is registry[name]
    (conflict,) = host.conflicts
    assert conflict.name == name and conflict.holder.plugin.first_party
    assert not host.failures


class _KW1(Method):
    """Keyword counts, one way."""

    name = "keyword"

    def objective(self, pool, target, context):
        return Scores(np.asarray(pool.costs, dtype=float))


class _KW2(Method):
    """Keyword counts, the other way."""

    name = "keyword"

    def objective(self, pool, target, context):
        return Scores(-np.asarray(pool.costs, dtype=float))


def _plugin_of(cls):
    class Plugin:
        @hookimpl
        def selectkit_register_methods(self):
            return [cls]

    return Plugin


def test_a_name_two_third_parties_register_is_refused_for_both(monkeypatch):
    from selectkit import select

    _with_entry_points(
        monkeypatch,
        [
            _entry("kw1", _plugin_of(_KW1), "selectkit-kw1"),
            _entry("kw2", _plugin_of(_KW2), "selectkit-kw2", "2.0"),
        ],
    )
    host = Host.from_env()
    assert "keyword" not in host.methods and not host.failures
    with pytest.raises(ParamError) as info:
        host.method("keyword")
    message = str(info.value)
    assert "method 'keyword' is registered by plugin 'kw1' (selectkit-kw1 1.0) and plugin" in (
        message
    )
    assert "'selectkit-kw1:keyword' or 'selectkit-kw2:keyword'" in message
    (conflict,) = host.conflicts
    assert conflict.holder is None
    assert host.method("selectkit-kw1:keyword") is _KW1 and host.method("kw2:keyword") is _KW2
    pool = Pool.from_texts(["a b c", "a", "a b"])
    selection = select(pool, "selectkit-kw2:keyword", 1, host=host)
    assert selection.ids == ["1"]
    assert selection.manifest["method"]["plugin"] == {
        "name": "kw2",
        "distribution": "selectkit-kw2",
        "version": "2.0",
    }
    with pytest.raises(ParamError, match="comes from a plugin or distribution named 'kw3'"):
        host.method("kw3:keyword")


def test_an_entry_point_name_of_the_selectkit_distribution_cannot_be_taken(monkeypatch):
    _with_entry_points(monkeypatch, [_entry("dsir", _Aadsir, "selectkit-evil")])
    host = Host.from_env()
    assert host.plugins["dsir"].distribution == "selectkit"
    (failure,) = host.failures
    assert (failure.name, failure.distribution) == ("dsir", "selectkit-evil")
    assert "entry-point name 'dsir' belongs to the first-party plugin of selectkit" in (
        failure.error
    )


def test_an_entry_point_name_two_distributions_use_is_refused_for_both(monkeypatch):
    _with_entry_points(
        monkeypatch,
        [
            _entry("kw", _plugin_of(_KW1), "selectkit-kw1"),
            _entry("kw", _plugin_of(_KW2), "selectkit-kw2"),
        ],
    )
    host = Host.from_env()
    assert "kw" not in host.plugins and "keyword" not in host.methods
    found = {f.distribution: f.error for f in host.failures}
    assert set(found) == {"selectkit-kw1", "selectkit-kw2"}
    assert "also used by selectkit-kw2 1.0" in found["selectkit-kw1"]


def test_an_in_process_impostor_is_refused_not_blamed_on_the_built_in():
    class Impostor(Method):
        name = "random"

        def objective(self, pool, target, context: Context):
            return Scores(np.zeros(len(pool)))

    host = Host.from_env()
    host.register(_plugin_of(Impostor)(), name="impostor")
    assert host.methods["random"] is not Impostor
    assert host.method("impostor:random") is Impostor
    assert not host.failures
    (conflict,) = host.conflicts
    assert "plugin 'impostor' (registered in-process) also registers method 'random'" in (
        conflict.message()
    )


def test_a_name_with_a_colon_is_refused():
    class Colon(Method):
        name = "a:b"

        def objective(self, pool, target, context):
            return Scores(np.zeros(len(pool)))

    host = Host(entry_points=False)
    host.register(_plugin_of(Colon)(), name="colon")
    assert "a:b" not in host.methods
    (failure,) = host.failures
    assert failure.name == "colon" and "has a ':'" in failure.error


def test_registering_a_loaded_plugin_again_says_how_to_test_it():
    import selectkit_dsir

    host = Host.from_env()
    with pytest.raises(PluginError, match=r"already loaded.*Host\(entry_points=False\)"):
        host.register(selectkit_dsir, name="dsir-again")
    with pytest.raises(PluginError, match="plugin 'dsir' \\(selectkit"):
        host.register(ShortestPlugin(), name="dsir")


def test_registering_a_plugin_with_an_unknown_hook_leaves_nothing_behind():
    class Typo:
        @hookimpl
        def selectkit_register_metods(self):
            return []

    host = Host(entry_points=False)
    with pytest.raises(PluginError, match="does not fit the hooks"):
        host.register(Typo(), name="typo")
    assert "typo" not in host.plugins and not host.pm.has_plugin("typo")
    host.register(ShortestPlugin(), name="shortest")  # the host still works
    assert "shortest" in host.methods


def test_a_wrapper_on_a_registration_hook_is_a_failure():
    class Wrapper:
        @hookimpl(wrapper=True)
        def selectkit_register_methods(self):
            return (yield)

    host = Host(entry_points=False)
    host.register(Wrapper(), name="wrapper")
    host.register(ShortestPlugin(), name="shortest")
    assert list(host.methods) == ["shortest"]
    assert [f.name for f in host.failures] == ["wrapper"]
