"""The import graph of ``selectkit/``: no module imports itself back through others, and the
layers below the entry points (``data``, ``models``, ``solvers``, ``compute``, ``store``,
``features``, ``train``, ``retraining``) never import each other both ways.

Every import counts: at module level, inside functions (a lazy import still makes the arrow)
and under ``TYPE_CHECKING`` (an annotation that runs back up is a design cycle even when
Python never executes it). The package ``__init__``'s lazy exports are left out: they are the
public API over the modules, not an import of them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "selectkit"
LAYERS = ("data", "models", "solvers", "features", "train", "retraining")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The selectkit modules ``module`` imports, resolved to the modules that define them."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
            # ``from package import module`` runs the package's __init__ first: both count.
            names = [name if name in modules else base for name in names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name not in (module, "selectkit"):
                yield name


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        module: set(_imported(module, path, modules))
        for module, path in modules.items()
        if module != "selectkit"
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _arrows(graph: dict[str, set[str]], members: list[str]) -> list[str]:
    inside = set(members)
    return [f"{a} -> {b}" for a in members for b in sorted(graph[a] & inside)]


def test_no_module_imports_itself_back():
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(
        ", ".join(_arrows(graph, members)) for members in cycles
    )


def test_the_layers_never_import_each_other_both_ways():
    layer_of = {f"selectkit.{name}": name for name in LAYERS}
    graph: dict[str, set[str]] = {name: set() for name in LAYERS}
    for module, targets in _graph().items():
        source = layer_of.get(".".join(module.split(".")[:2]))
        for target in targets:
            layer = layer_of.get(".".join(target.split(".")[:2]))
            if source and layer and layer != source:
                graph[source].add(layer)
    cycles = _cycles(graph)
    assert not cycles, "layers importing each other: " + "; ".join(
        ", ".join(_arrows(graph, members)) for members in cycles
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import selectkit.b\n", {"selectkit.b"}),
        ("from selectkit.b import thing\n", {"selectkit.b"}),
        ("from selectkit import b\n", {"selectkit.b"}),
        ("from . import b\n", {"selectkit.b"}),
        ("def f():\n    from selectkit.b import thing\n", {"selectkit.b"}),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import selectkit.b\n",
            {"selectkit.b"},
        ),
        ("import numpy\nfrom selectkit import hookimpl\n", set()),
    ],
)
def test_every_kind_of_import_is_seen(tmp_path, source, expected):
    path = tmp_path / "a.py"
    path.write_text(source)
    modules = {"selectkit": tmp_path, "selectkit.a": path, "selectkit.b": tmp_path / "b.py"}
    assert set(_imported("selectkit.a", path, modules)) == expected


def test_a_cycle_is_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _arrows(graph, ["a", "b", "c"]) == ["a -> b", "b -> c", "c -> a"]
