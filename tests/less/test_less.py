"""LESS: targeted selection on generated task families, and its scores by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from selectkit_less.aggregate import round_robin_scores

from selectkit import select
from selectkit.api import load_records_from_list
from selectkit.cli import cli
from selectkit.data.pool import Pool
from selectkit.data.synthetic import make_records
from selectkit.errors import BudgetError, ParamError
from selectkit.host import get_host
from selectkit.store import FeatureStore

RANDOM_SHARE = 0.1  # one family in ten


def test_less_puts_the_target_family_in_its_top_five_percent(targeted, gradient_params):
    pool, target = targeted
    selection = select(pool, "less", "5%", target=target, params=gradient_params, seed=0)
    share = selection.group_shares(pool).get("units", 0.0)
    # Measured: 1.00 of the 15 selected are unit conversions, against 0.10 at random.
    assert share >= 0.6 > RANDOM_SHARE


def _kind(entry) -> str | None:
    """The gradient type of a store entry (``None`` for one that holds no gradients)."""
    return entry.key.get("gradient", {}).get("kind")


def test_less_scores_equal_a_direct_computation(targeted, gradient_params, store_root):
    pool, target = targeted
    selection = select(pool, "less", 10, target=target, params=gradient_params, seed=0)
    store = FeatureStore(store_root)
    entries = store.entries()
    pool_sets = sorted(
        (e for e in entries if _kind(e) == "adam" and e.num_rows == len(pool)),
        key=lambda e: e.meta["checkpoint"]["path"],
    )
    target_sets = sorted(
        (e for e in entries if _kind(e) == "sgd" and e.num_rows == len(target)),
        key=lambda e: e.meta["checkpoint"]["path"],
    )
    assert len(pool_sets) == len(target_sets) == 2
    expected = np.zeros(len(pool))
    for p, t in zip(pool_sets, target_sets, strict=True):
        a, b = p.read(0, p.num_rows), t.read(0, t.num_rows)
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        expected += p.meta["checkpoint"]["learning_rate"] * (a @ b.T).mean(axis=1)
    np.testing.assert_allclose(selection.scores, expected, rtol=1e-4, atol=1e-7)


def test_round_robin_gives_every_subtask_a_turn():
    per_subtask = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.05]])
    order = np.argsort(-round_robin_scores(per_subtask), kind="stable")
    assert order[:2].tolist() == [0, 2]  # subtask 0's best, then subtask 1's best
    assert order[2] == 1


def test_bad_requests_fail_before_any_work(targeted, gradient_params, tmp_path, monkeypatch):
    pool, target = targeted
    monkeypatch.setenv("SELECTKIT_CACHE_DIR", str(tmp_path))
    params = {**gradient_params, "aggregate": "round_robin"}
    rows = [
        {"id": f"t{i}", "instruction": "convert", "output": "x", "task": f"task{i}"}
        for i in range(4)
    ]
    four_tasks = load_records_from_list(rows)
    with pytest.raises(BudgetError, match="4 subtasks"):
        select(pool, "less", 3, target=four_tasks, params={**params, "subtask_field": "task"})
    with pytest.raises(ParamError, match="no field 'nope'"):
        select(pool, "less", 5, target=target, params={**params, "subtask_field": "nope"})
    with pytest.raises(ParamError, match="needs a target set"):
        select(pool, "less", 5, target=Pool([]), params=params)
    assert not list(tmp_path.iterdir())  # nothing was extracted or trained


def test_less_from_the_command_line(gradient_params, tmp_path):
    pool_rows = make_records(30, seed=0)
    target_rows = make_records(10, seed=1, families=["units"], id_prefix="target", avoid=pool_rows)
    for name, rows in (("pool", pool_rows), ("target", target_rows)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = [f"-p{key}={value}" for key, value in gradient_params.items()]
    result = CliRunner().invoke(
        cli,
        ["select", "-m", "less", "--pool", str(tmp_path / "pool.jsonl"), "--target",
         str(tmp_path / "target.jsonl"), "-b", "5%", "--group-by", "family",
         "-p", "subtask_field=family", *params, "--out", str(tmp_path / "picked.jsonl"), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    picked = [json.loads(line) for line in (tmp_path / "picked.jsonl").read_text().splitlines()]
    assert len(picked) == 15
    assert sum(r["family"] == "units" for r in picked) >= 9


def test_attribution_is_the_per_target_score_before_aggregation(targeted, gradient_params):
    from selectkit_less.method import LESS, LESSParams

    from selectkit.methods import Context
    from selectkit.params import build_params

    pool, target = targeted
    method = LESS(build_params(LESSParams, {**gradient_params, "aggregate": "mean"}, "less"))
    attribution = method.attribute(pool, target, Context(host=get_host(), seed=0))
    assert attribution.shape == (len(pool), len(target)) and attribution.dtype == np.float64
    scores = method.objective(pool, target, Context(host=get_host(), seed=0)).values
    np.testing.assert_allclose(attribution.mean(axis=1), scores, rtol=1e-5, atol=1e-12)
    assert LESS.attributes()
