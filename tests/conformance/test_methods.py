"""Every registered method passes the conformance suite (``selectkit.testing``): the default
host's methods (selectkit's own plugins) and the example third-party plugins' methods.

Model-based methods run on a tiny Llama with small settings; the module shares one host per
plugin source (one model load) and one folder of feature stores, so a gradient method warms
up and extracts once and its other checks read the store.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from selectkit.host import Host
from selectkit.params import leaves
from selectkit.testing import check_method, checks_for, generated_pools

TESTS = Path(__file__).resolve().parents[1]

#: Small settings for the model-based methods; each method takes those its Params declares.
SMALL = {
    "model": "tiny-llama",
    "projection.dim": 32,
    "max_length": 96,
    "batch_size": 8,
    "warmup.epochs": 2,
    "warmup.fraction": 0.5,
    "warmup.batch_size": 4,
    "warmup.learning_rate": 1e-3,
    "inner_lr": 1e-3,
}

#: Methods whose objective is documented as an aggregate of their attribution over the target
#: (LESS's subtask mean-then-max is the mean here: the target has one subtask).
AGGREGATE = {"trak": "mean", "datamodels": "mean", "tracin": "sum", "less": "mean"}

#: selectkit's own methods: the suite must see every one of them.
BUILT_IN = {
    "less", "tracin", "trak", "datamodels", "bilevel", "gradmatch", "craig", "kcenter",
    "grand", "el2n", "ifd", "dsir", "random", "longest",
}  # fmt: skip

#: (method, check) -> why it fails today; each case is a strict xfail, so a fix shows up.


def example_plugins() -> dict[str, ModuleType]:
    """The example plugin packages under tests/ (each a pip-installable project folder, found
    wherever it lives), imported from source; one that fails to import (the broken example)
    is left out."""
    found = {}
    for project in sorted(TESTS.glob("*/selectkit_*/pyproject.toml")):
        name = project.parent.name
        spec = importlib.util.spec_from_file_location(name, project.parent / name / "__init__.py")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except ImportError:
            continue
        found[name] = module
    return found


def _example_host(module: ModuleType) -> Host:
    host = Host(entry_points=False)  # the built-ins and this plugin alone, as a user tests it
    host.register(module, name=module.__name__)
    return host


#: Where methods come from: the default host, and one host per example plugin (two of them
#: register the same name). Each keeps its loaded model for the whole module.
HOSTS = {"default": Host.from_env()} | {
    name: _example_host(module) for name, module in example_plugins().items()
}


def _cases() -> list:
    cases = []
    for source, host in HOSTS.items():
        for name in host.methods:
            method_cls = host.method(name)
            label = name if source == "default" else f"{source}:{name}"
            for check in checks_for(method_cls):
                cases.append(pytest.param(source, method_cls, check, id=f"{label}-{check}"))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def pools():
    return generated_pools(HOSTS["default"])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("conformance")


@pytest.mark.parametrize(("source", "method_cls", "check"), CASES)
def test_method_conforms(source, method_cls, check, pools, cache_dir):
    names = leaves(method_cls.Params())
    check_method(
        method_cls,
        params={key: value for key, value in SMALL.items() if key in names},
        host=HOSTS[source],
        pool=pools[0],
        target=pools[1],
        cache_dir=cache_dir,
        checks=[check],
        attribute_aggregate=AGGREGATE.get(method_cls.name) if source == "default" else None,
    )


def test_the_suite_covers_every_built_in_method_and_the_examples():
    covered = {case.id.rsplit("-", 1)[0] for case in CASES}
    assert covered >= BUILT_IN
    assert covered >= {"selectkit_keyword:keyword", "selectkit_wordcount:keyword"}
    assert not HOSTS["default"].failures
