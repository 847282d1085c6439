"""CONTRIBUTING.md's conformance example, run as written on the example plugin."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEADING = "## Test your method with the conformance suite"


def test_the_contributing_example_runs(tmp_path, monkeypatch):
    text = (REPO / "CONTRIBUTING.md").read_text("utf-8").split(f"\n{HEADING}\n", 1)[1]
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    (project,) = REPO.glob("tests/*/selectkit_keyword/pyproject.toml")
    monkeypatch.syspath_prepend(str(project.parent))
    namespace: dict = {}
    try:
        exec(example, namespace)
        namespace["test_keyword_keeps_the_method_contract"](tmp_path)
    finally:
        sys.modules.pop("selectkit_keyword", None)
