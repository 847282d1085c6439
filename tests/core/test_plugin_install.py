"""Third-party plugins installed with pip, exactly as a user would, then listed and used.

The packages under tests/example_plugins are installed with ``pip install --target`` into a
temporary directory put on PYTHONPATH of the subprocesses, so the test environment itself is
untouched: ``selectkit-keyword`` (a method and a command), ``selectkit-broken`` (fails to
import), ``selectkit-aadsir`` (tries to take the first-party ``dsir`` and ``jsonl``) and
``selectkit-wordcount`` (registers ``keyword`` too).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

EXAMPLE_PLUGINS = Path(__file__).resolve().parents[1] / "example_plugins"
CONTRIBUTING = Path(__file__).resolve().parents[2] / "CONTRIBUTING.md"
EXAMPLES = ("selectkit_keyword", "selectkit_broken", "selectkit_aadsir", "selectkit_wordcount")
#: The example plugins that register names others hold, blocked where a test wants none.
CLASHING = "selectkit-aadsir,selectkit-wordcount"


def contributing_block(heading: str) -> str:
    """The first Python code block under ``heading`` in CONTRIBUTING.md."""
    text = CONTRIBUTING.read_text("utf-8")
    section = text.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("site")
    packages = [str(EXAMPLE_PLUGINS / name) for name in EXAMPLES]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            *packages,
        ],
        check=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    for name in ("SELECTKIT_LOAD_PLUGINS", "SELECTKIT_BLOCK_PLUGINS", "SELECTKIT_TRACE"):
        env.pop(name, None)
    return env


def _selectkit(env, *args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "selectkit", *args],
        env=env,
        capture_output=True,
        text=True,
        check=check,
    )


def test_installed_plugin_is_listed_with_its_version(plugin_env):
    env = dict(plugin_env, SELECTKIT_BLOCK_PLUGINS=CLASHING)  # distribution names
    listing = json.loads(_selectkit(env, "plugins", "--json").stdout)
    plugins = {p["name"]: p for p in listing["plugins"]}
    assert plugins["keyword"]["distribution"] == "selectkit-keyword"
    assert plugins["keyword"]["version"] == "0.2.0"
    assert plugins["keyword"]["provides"] == {"methods": ["keyword"]}
    assert not plugins["keyword"]["first_party"] and plugins["dsir"]["first_party"]
    assert plugins["keyword"]["hooks"] == [
        "selectkit_register_commands",
        "selectkit_register_methods",
    ]
    assert {"random", "longest"} <= set(plugins["baselines"]["provides"]["methods"])
    assert not {"aadsir", "wordcount"} & set(plugins) and listing["conflicts"] == []
    (failure,) = listing["failures"]
    assert failure["name"] == "broken" and failure["distribution"] == "selectkit-broken"
    assert "selectkit_dependency_that_does_not_exist" in failure["error"]
    assert listing["warnings"] == []


def test_conflicts_are_listed_and_strict_fails_on_them(plugin_env):
    listing = json.loads(_selectkit(plugin_env, "plugins", "--json").stdout)
    assert [f["name"] for f in listing["failures"]] == ["broken"]  # the real dsir is not blamed
    conflicts = {(c["kind"], c["name"]): c for c in listing["conflicts"]}
    assert set(conflicts) == {("method", "dsir"), ("format", "jsonl"), ("method", "keyword")}
    dsir = conflicts["method", "dsir"]
    assert dsir["holder"]["plugin"] == "dsir" and dsir["holder"]["distribution"] == "selectkit"
    assert dsir["refused"] == [
        {"plugin": "aadsir", "distribution": "selectkit-aadsir", "version": "0.1.0"}
    ]
    keyword = conflicts["method", "keyword"]
    assert keyword["holder"] is None
    assert {c["distribution"] for c in keyword["refused"]} == {
        "selectkit-keyword",
        "selectkit-wordcount",
    }
    assert _selectkit(plugin_env, "plugins").returncode == 0
    strict = _selectkit(plugin_env, "plugins", "--strict", check=False)
    assert strict.returncode == 3
    assert "FAILED broken (selectkit-broken 0.0.1) at import" in strict.stderr
    assert "CONFLICT method 'keyword' is registered by plugin 'keyword' (selectkit-keyword" in (
        strict.stderr
    )
    clean = dict(plugin_env, SELECTKIT_BLOCK_PLUGINS=f"broken,{CLASHING}")
    assert _selectkit(clean, "plugins", "--strict").returncode == 0


def _pool(tmp_path, texts):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return pool


def test_an_installed_plugin_cannot_take_dsir_or_jsonl(plugin_env, tmp_path):
    texts = ["def f(x): return x", "the cat sat", "x = f(2) + 1", "a dog ran", "f(f(3))"]
    pool = _pool(tmp_path, texts)
    out = tmp_path / "picked.jsonl"
    args = ["--pool", str(pool), "--target", str(pool), "-b", "2", "-o", str(out), "-q"]
    done = _selectkit(plugin_env, "select", "-m", "dsir", *args)
    manifest = json.loads((tmp_path / "picked.manifest.json").read_text())
    assert manifest["method"]["plugin"]["distribution"] == "selectkit"
    assert manifest["objective"] == "LogWeights" and manifest["pool"]["records"] == 5
    assert manifest["pool"]["origin"]["format"] == "jsonl"
    (warning,) = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert "plugin 'aadsir' (selectkit-aadsir 0.1.0) also registers method 'dsir'" in warning
    _selectkit(plugin_env, "select", "-m", "aadsir:dsir", *args)
    manifest = json.loads((tmp_path / "picked.manifest.json").read_text())
    assert manifest["method"]["plugin"]["distribution"] == "selectkit-aadsir"
    assert manifest["objective"] == "Scores"


def test_a_name_two_plugins_register_is_picked_by_its_qualified_name(plugin_env, tmp_path):
    pool = _pool(tmp_path, ["python python python", "one", "python here"])
    out = tmp_path / "picked.jsonl"
    args = ["--pool", str(pool), "-b", "1", "-o", str(out), "-q"]
    refused = _selectkit(plugin_env, "select", "-m", "keyword", *args, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (error,) = refused.stderr.splitlines()
    assert error.startswith("error: method 'keyword' is registered by plugin 'keyword'")
    assert "'selectkit-keyword:keyword' or 'selectkit-wordcount:keyword'" in error
    assert not out.exists()
    _selectkit(plugin_env, "select", "-m", "selectkit-wordcount:keyword", *args)
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == ["one"]
    manifest = json.loads((tmp_path / "picked.manifest.json").read_text())
    assert manifest["method"]["plugin"] == {
        "name": "wordcount",
        "distribution": "selectkit-wordcount",
        "version": "0.3.0",
    }


def test_installed_plugin_method_selects(plugin_env, tmp_path):
    env = dict(plugin_env, SELECTKIT_BLOCK_PLUGINS="selectkit-wordcount")
    texts = ["I like python", "java and python and python", "plain text", "more python here"]
    pool = _pool(tmp_path, texts)
    out = tmp_path / "picked.jsonl"
    _selectkit(
        env,
        "select",
        "--method",
        "keyword",
        "--pool",
        str(pool),
        "--budget",
        "2",
        "--param",
        "words=python",
        "--out",
        str(out),
        "--quiet",
    )
    picked = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    assert picked == ["java and python and python", "I like python"]
    manifest = json.loads((tmp_path / "picked.manifest.json").read_text())
    assert manifest["method"]["plugin"]["distribution"] == "selectkit-keyword"
    assert manifest["method"]["params"] == {"words": ["python"]}


def test_installed_plugin_adds_a_command(plugin_env):
    assert _selectkit(plugin_env, "keyword-hello").stdout.strip() == "hello from selectkit-keyword"


def test_blocking_the_plugin_hides_it(plugin_env):
    env = dict(plugin_env, SELECTKIT_BLOCK_PLUGINS="keyword,broken")
    listing = json.loads(_selectkit(env, "plugins", "--json").stdout)
    assert "keyword" not in {p["name"] for p in listing["plugins"]}
    assert listing["failures"] == []


# The testing recipe of CONTRIBUTING.md, run as written: with the plugin installed (the normal
# workflow, `pip install -e .`) and without.

_RECIPE_RUNNER = """
import selectkit_keyword
from selectkit import Host
from selectkit.errors import PluginError

assert "keyword" in Host.from_env().plugins, "the example plugin should be installed here"
try:  # the recipe CONTRIBUTING used to give
    Host.from_env().register(selectkit_keyword, name="keyword")
except PluginError as exc:
    assert "Host(entry_points=False)" in str(exc)
else:
    raise AssertionError("registering an installed plugin again should be refused")
namespace = {}
exec(RECIPE, namespace)
namespace["test_keyword_method"]()
print("recipe passed")
"""


def test_the_testing_recipe_works_with_the_plugin_installed(plugin_env):
    recipe = contributing_block("## Testing a plugin")
    code = f"RECIPE = {recipe!r}\n" + textwrap.dedent(_RECIPE_RUNNER)
    done = subprocess.run(
        [sys.executable, "-c", code], env=plugin_env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "recipe passed"


def test_the_testing_recipe_works_without_the_plugin_installed(tmp_path, monkeypatch):
    shutil.copytree(
        EXAMPLE_PLUGINS / "selectkit_keyword" / "selectkit_keyword", tmp_path / "selectkit_keyword"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "keyword" not in {ep.name for ep in metadata.entry_points(group="selectkit")}
    namespace: dict = {}
    try:
        exec(contributing_block("## Testing a plugin"), namespace)
        namespace["test_keyword_method"]()
    finally:
        sys.modules.pop("selectkit_keyword", None)
