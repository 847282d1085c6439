"""The layout every first-party plugin follows, so a newcomer finds the same thing in each:

- the package's ``__init__.py`` holds its ``@hookimpl`` functions (no ``plugin.py``);
- a method lives in ``method.py`` when the plugin has one, else in a module named after it
  (``selectkit_datadiet/grand.py``, ``el2n.py``);
- a method class is named as its paper writes the method (``LESS``, ``TracIn``, ``GraNd``,
  ``CRAIG``; plain words in CapWords: ``Random``, ``GradMatch``), so lowercased it is the name
  users type; a parameter class of its own is that name plus ``Params`` (``LESSParams``).
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata

import pytest

from selectkit.markers import PROJECT

PLUGINS = sorted(
    ep.value for ep in metadata.distribution("selectkit").entry_points if ep.group == PROJECT
)


def _methods() -> list:
    params = []
    for package in PLUGINS:
        methods = importlib.import_module(package).selectkit_register_methods()
        for method in methods:
            params.append(pytest.param(package, method, len(methods), id=method.name))
    return params


@pytest.mark.parametrize("package", PLUGINS)
def test_hookimpls_are_in_the_package_init(package):
    module = importlib.import_module(package)
    hooks = [v for v in vars(module).values() if hasattr(v, f"{PROJECT}_impl")]
    assert hooks, f"{package} registers nothing"
    assert {hook.__module__ for hook in hooks} == {package}
    assert importlib.util.find_spec(f"{package}.plugin") is None


@pytest.mark.parametrize(("package", "method", "count"), _methods())
def test_method_module_and_class_names(package, method, count):
    module = f"{package}.method" if count == 1 else f"{package}.{method.name}"
    assert method.__module__ == module
    assert method.__name__.lower() == method.name.replace(
        "_", ""
    )  # BalancedRandom: balanced_random
    params = getattr(method, "Params", None)
    if params is not None and params.__module__.startswith(f"{package}."):
        assert params.__name__ == f"{method.__name__}Params"
