"""A third-party plugin installed with pip, exactly as a user would, then listed and used.

The packages under tests/plugins are installed with ``pip install --target`` into a temporary
directory put on PYTHONPATH of the subprocesses, so the test environment itself is untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("site")
    packages = [str(PLUGINS / "selectkit_keyword"), str(PLUGINS / "selectkit_broken")]
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
    listing = json.loads(_selectkit(plugin_env, "plugins", "--json").stdout)
    plugins = {p["name"]: p for p in listing["plugins"]}
    assert plugins["keyword"]["distribution"] == "selectkit-keyword"
    assert plugins["keyword"]["version"] == "0.2.0"
    assert plugins["keyword"]["provides"] == {"methods": ["keyword"]}
    assert plugins["keyword"]["hooks"] == [
        "selectkit_register_commands",
        "selectkit_register_methods",
    ]
    assert {"random", "longest"} <= set(plugins["baselines"]["provides"]["methods"])
    (failure,) = listing["failures"]
    assert failure["name"] == "broken" and failure["distribution"] == "selectkit-broken"
    assert "selectkit_dependency_that_does_not_exist" in failure["error"]


def test_installed_plugin_method_selects(plugin_env, tmp_path):
    pool = tmp_path / "pool.jsonl"
    texts = ["I like python", "java and python and python", "plain text", "more python here"]
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "picked.jsonl"
    _selectkit(
        plugin_env,
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
