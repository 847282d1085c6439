"""``bilevel`` end to end on a tiny Llama: the target's family gets the largest weights."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import selectkit
from selectkit.api import load_records_from_list
from selectkit.cli import cli
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError
from selectkit.features.params import GradientParams
from selectkit.features.pipeline import GradientPipeline
from selectkit.host import get_host
from selectkit.methods import Context
from selectkit.output import write_selection
from selectkit.store.fingerprints import tensors_digest

TARGET_FAMILY = "units"


@pytest.fixture(scope="module")
def params(gradient_params) -> dict:
    """The session's tiny model and LoRA, and a short loop: one pass in batches of 16 (19
    outer steps on 300 records) at the session warmup's learning rate."""
    shared = {k: gradient_params[k] for k in ("model", "max_length", "lora.target_modules")}
    return {**shared, "epochs": 1, "batch_size": 16, "inner_lr": 1e-3}


def _family_means(pool, values) -> dict[str, float]:
    groups = np.array(pool.groups)
    return {family: float(values[groups == family].mean()) for family in sorted(set(groups))}


def test_the_target_family_gets_the_largest_weights(targeted, params, tmp_path):
    pool, target = targeted
    loaded = GradientPipeline(
        GradientParams(model=params["model"]), Context(host=get_host())
    ).loaded
    digest = tensors_digest(loaded.model.named_parameters())
    states = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())

    selection = selectkit.select(pool, "bilevel", "5%", target=target, params=params, seed=0)

    weights = selection.scores  # every pool record's weight, mean 1
    assert weights.mean() == pytest.approx(1.0) and (weights > 0).all()
    means = _family_means(pool, weights)
    # Measured: units 2.72, then letter_count 1.28 and arithmetic 1.08; 10 of the 15 kept
    # records are unit conversions, against 1.5 at random.
    assert max(means, key=means.get) == TARGET_FAMILY
    assert selection.group_shares(pool).get(TARGET_FAMILY, 0.0) >= 0.4
    assert selection.group_weights is None
    np.testing.assert_array_equal(selection.weights, weights[selection.indices])
    path = write_selection(selection, pool, tmp_path / "picked.jsonl")[-1]
    manifest = json.loads(path.read_text())
    assert manifest["method"]["name"] == "bilevel" and manifest["objective"] == "Weights"
    np.testing.assert_allclose(manifest["selection"]["weights"], selection.weights)

    assert tensors_digest(loaded.model.named_parameters()) == digest  # the model as found
    assert not any("lora" in name for name, _ in loaded.model.named_parameters())
    assert torch.equal(torch.random.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]


@pytest.fixture(scope="module")
def group_level(targeted, params, store_root):
    pool, target = targeted
    params = {**params, "level": "group"}
    return selectkit.select(
        pool, "bilevel", "5%", target=target, params=params, seed=0, cache_dir=store_root
    )


def test_group_level_weights_the_target_group_most(targeted, group_level):
    pool, _ = targeted
    selection = group_level
    groups = selection.group_weights
    assert groups is not None and set(groups) == set(pool.groups)
    # Measured: units 7.43, arithmetic 2.33, dates 0.12, the other seven below 0.05.
    assert max(groups, key=groups.get) == TARGET_FAMILY
    assert [groups[pool[i].group] for i in range(len(pool))] == selection.scores.tolist()
    assert selection.scores.mean() == pytest.approx(1.0)
    assert selection.group_shares(pool) == {TARGET_FAMILY: 1.0}
    assert selection.manifest["selection"]["group_weights"] == groups


def test_bad_requests_fail_before_any_work(targeted):
    pool, target = targeted
    params = {"model": "no-such-model"}  # loading it would fail: nothing gets that far
    ungrouped = load_records_from_list(make_records(2, seed=0))
    with pytest.raises(ParamError, match="has no group: load the pool with --group-by"):
        selectkit.select(
            ungrouped, "bilevel", 2, target=target, params={**params, "level": "group"}
        )
    with pytest.raises(ParamError, match="parameter 'level' must be one of"):
        selectkit.select(pool, "bilevel", 5, target=target, params={**params, "level": "domain"})
    with pytest.raises(ParamError, match="leave checkpoints empty"):
        selectkit.select(pool, "bilevel", 5, target=target, params={**params, "checkpoints": "x"})
    with pytest.raises(ParamError, match="outer_lr must be a finite number > 0"):
        selectkit.select(pool, "bilevel", 5, target=target, params={**params, "outer_lr": "0"})
    with pytest.raises(ParamError, match="needs a target set"):
        selectkit.select(pool, "bilevel", 5, params=params)


def test_the_command_line_gives_the_same_weights_bit_for_bit(params, group_level, tmp_path):
    pool_rows = make_records(30, seed=0)
    target_rows = make_records(10, seed=1, families=["units"], id_prefix="target", avoid=pool_rows)
    for name, rows in (("pool", pool_rows), ("target", target_rows)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = [f"-p{key}={value}" for key, value in params.items()]
    result = CliRunner().invoke(
        cli,
        ["select", "-m", "bilevel", "--pool", str(tmp_path / "pool.jsonl"), "--target",
         str(tmp_path / "target.jsonl"), "-b", "5%", "--group-by", "family", "-p", "level=group",
         *options, "--out", str(tmp_path / "picked.jsonl"), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    picked = [json.loads(line) for line in (tmp_path / "picked.jsonl").read_text().splitlines()]
    assert len(picked) == 15 and all(r["family"] == TARGET_FAMILY for r in picked)
    manifest = json.loads((tmp_path / "picked.manifest.json").read_text())
    assert manifest["method"]["params"]["level"] == "group"
    # A second run, from files through the CLI, reproduces the Python run's weights exactly.
    assert manifest["selection"]["group_weights"] == group_level.group_weights
    selected = group_level.scores[group_level.indices].tolist()
    assert manifest["selection"]["scores"] == selected


def test_a_group_level_selection_trains_on_its_groups_by_weight(targeted, group_level, tmp_path):
    from selectkit.api import load_model
    from selectkit.train.finetune import FinetuneConfig, finetune_selection

    pool, _ = targeted
    loaded = load_model("tiny-llama")
    config = FinetuneConfig(max_steps=2, batch_size=4, max_length=64)
    result = finetune_selection(
        pool, group_level, loaded.model, loaded.tokenizer, tmp_path / "run", config, progress=False
    )
    # The 5% budget kept only unit conversions; the other groups' weights are not sampled.
    assert result.manifest["selection"]["group_weights"] == {
        TARGET_FAMILY: group_level.group_weights[TARGET_FAMILY]
    }
    assert result.manifest["selection"]["sampled_groups"] == {TARGET_FAMILY: 8}
