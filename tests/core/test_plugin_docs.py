"""CONTRIBUTING.md's plugin examples, run as written: the method and its own filter."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from selectkit import Host, Pool, hookimpl, select
from selectkit.errors import BudgetError

CONTRIBUTING = Path(__file__).resolve().parents[2] / "CONTRIBUTING.md"


def _block(heading: str) -> str:
    section = CONTRIBUTING.read_text("utf-8").split(f"\n{heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def filtered() -> type:
    """The example method with the filter section's ``objective``."""
    namespace: dict = {}
    exec(_block("## Writing a selection plugin"), namespace)
    body = textwrap.dedent(_block("### A method's own filter"))
    exec(body, namespace)  # defines objective() with the filter
    return type("Filtered", (namespace["Keyword"],), {"objective": namespace["objective"]})


def _host(method: type) -> Host:
    class Plugin:
        @hookimpl
        def selectkit_register_methods(self):
            return [method]

    host = Host(entry_points=False)
    host.register(Plugin(), name="keyword")
    return host


def test_the_filter_example_excludes_and_explains(filtered):
    host = _host(filtered)
    pool = Pool.from_texts(["python", "rust", "python python", "go"])
    selection = select(pool, "keyword", 2, host=host)
    assert selection.ids == ["2", "0"]
    assert selection.manifest["constraints"]["ruled_out_by_method"] == {
        "count": 2,
        "why": "mentions no keyword",
    }
    with pytest.raises(BudgetError, match=r"mentions no keyword\) ruled out 2 of 4 records"):
        select(pool, "keyword", 3, host=host)
