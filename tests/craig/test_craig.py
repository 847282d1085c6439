"""``craig`` end to end on a tiny Llama, from Python and the command line."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

import selectkit
from selectkit.cli import cli
from selectkit.errors import ParamError


def test_cli_writes_cluster_size_weights(targeted, gradient_params, tmp_path):
    pool, _ = targeted
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(record.raw) + "\n" for record in pool))
    out = tmp_path / "picked.jsonl"
    args = ["select", "-m", "craig", "--pool", str(path), "-b", "5", "--group-by", "family"]
    for key, value in gradient_params.items():
        args += ["-p", f"{key}={value}"]
    result = CliRunner().invoke(cli, [*args, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 5
    manifest = json.loads((tmp_path / "picked.manifest.json").read_text())
    assert manifest["objective"] == "FacilityLocation"
    solver = manifest["solver"]
    assert solver["name"] == "greedy"
    assert solver["details"]["approximation_ratio"] == pytest.approx(1 - 1 / math.e)
    assert solver["objective"] <= solver["bound"]
    weights = manifest["selection"]["weights"]
    assert len(weights) == 5 and sum(weights) == len(pool)
    assert all(w >= 1 for w in weights)  # each selected record is in its own cluster


def test_python_select_with_required_record_and_cosine(targeted, gradient_params):
    pool, _ = targeted
    required = pool[7].id
    params = {**gradient_params, "metric": "cosine"}
    constraints = selectkit.Constraints.build(required=[required])
    first = selectkit.select(pool, "craig", 6, constraints=constraints, params=params, seed=0)
    assert first.ids[0] == required and len(first) == 6
    assert first.weights.sum() == len(pool)
    again = selectkit.select(pool, "craig", 6, constraints=constraints, params=params, seed=0)
    assert again.ids == first.ids and again.weights.tolist() == first.weights.tolist()


def test_token_budget_fails_before_any_work(targeted, tmp_path):
    pool, _ = targeted
    params = {"model": "no-such-model"}
    with pytest.raises(ParamError, match="count budget"):
        selectkit.select(pool, "craig", "2000tok", params=params)
    assert not any(tmp_path.iterdir())
