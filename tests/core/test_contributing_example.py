"""CONTRIBUTING's complete gradient method, run as a plugin author would: it registers, passes
the conformance suite's parameter checks, and puts the target family on top."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from selectkit import select
from selectkit.host import Host
from selectkit.testing import check_method

CONTRIBUTING = Path(__file__).resolve().parents[2] / "CONTRIBUTING.md"


@pytest.fixture
def align(monkeypatch) -> types.ModuleType:
    """CONTRIBUTING.md's ``selectkit_align`` plugin, imported from its Python block."""
    blocks = re.findall(r"```python\n(.*?)```", CONTRIBUTING.read_text(encoding="utf-8"), re.S)
    [code] = [block for block in blocks if block.startswith("# selectkit_align/__init__.py")]
    module = types.ModuleType("selectkit_align")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look it up
    exec(compile(code, str(CONTRIBUTING), "exec"), module.__dict__)
    return module


def test_the_documented_gradient_method_selects_the_target_family(align, targeted, gradient_params):
    host = Host(entry_points=False)
    host.register(align, name="selectkit_align")
    pool, target = targeted
    selection = select(pool, "align", budget=15, target=target, params=gradient_params, host=host)
    families = [pool[int(i)].group for i in selection.indices]
    assert families.count("units") / len(families) >= 0.6  # random: one family in ten
    assert np.isfinite(selection.scores).all()


def test_the_documented_gradient_method_keeps_the_method_contract(align, targeted, gradient_params):
    host = Host(entry_points=False)
    host.register(align, name="selectkit_align")
    check_method(
        align.Align,
        params=gradient_params,
        host=host,
        pool=targeted[0],
        target=targeted[1],
        checks=["declaration", "params_cli_round_trip", "params_config_round_trip", "objective"],
    )
