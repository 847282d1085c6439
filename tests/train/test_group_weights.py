"""Group-weight sampling in training: each group's share of the trained examples follows its
weight whatever the groups' sizes, zero-weight groups are never trained on, every pass within a
group is a permutation, errors, reproducibility, and the selection, API and CLI paths."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from selectkit.api import load_records_from_list, select
from selectkit.cli import cli
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError
from selectkit.methods import Method
from selectkit.models.tiny import tiny_model
from selectkit.output import write_selection
from selectkit.solvers.objectives import Weights
from selectkit.train.finetune import (
    MANIFEST_NAME,
    FinetuneConfig,
    check_group_weights,
    finetune,
    finetune_selection,
    group_plan,
)

# Group sizes 30, 5, 10 and 4: the sizes must not set the shares, the weights must.
GROUPS = ["a"] * 30 + ["b"] * 5 + ["c"] * 10 + ["d"] * 4
WEIGHTS = {"a": 1.0, "b": 2.0, "c": 1.0, "d": 0.0}
FAST = FinetuneConfig(max_steps=3, batch_size=2, learning_rate=1e-2, max_length=64, seed=3)


def sampled(plan):
    return np.concatenate([batch for step in plan for batch in step])


def test_shares_follow_the_weights_for_every_seed():
    for seed in range(10):
        config = FinetuneConfig(max_steps=50, batch_size=4, seed=seed)
        plan = group_plan(GROUPS, WEIGHTS, config)
        assert len(plan) == 50 and all(len(step) == 1 and len(step[0]) == 4 for step in plan)
        counts = Counter(GROUPS[i] for i in sampled(plan))
        assert sum(counts.values()) == 200 and counts["d"] == 0
        # Systematic sampling: each count is within one of its expectation 200 * w / sum(w).
        for group, expected in {"a": 50, "b": 100, "c": 50}.items():
            assert abs(counts[group] - expected) < 1 + 1e-9
    uneven = group_plan(GROUPS, {"a": 1, "b": 1, "c": 1, "d": 0}, FinetuneConfig(max_steps=7))
    counts = Counter(GROUPS[i] for i in sampled(uneven))  # 56 examples: 18.67 per group
    assert sorted(counts.values()) == [18, 19, 19]


def test_each_group_is_taken_in_fresh_permutations():
    config = FinetuneConfig(max_steps=25, batch_size=4, seed=1)
    order = sampled(group_plan(GROUPS, WEIGHTS, config))
    b_rows = [i for i in order if GROUPS[i] == "b"]  # 50 draws from 5 records: 10 passes
    passes = [b_rows[k : k + 5] for k in range(0, len(b_rows) - 4, 5)]
    assert all(sorted(p) == [30, 31, 32, 33, 34] for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # a new order each pass
    first_group = [GROUPS[i] for i in order[:20]]
    assert len(set(first_group)) > 1  # groups are interleaved, not in blocks


def test_epochs_train_epochs_times_the_weighted_records():
    config = FinetuneConfig(epochs=2, batch_size=4, gradient_accumulation=2, seed=0)
    plan = group_plan(GROUPS, WEIGHTS, config)
    # 2 x 45 records of the groups with a positive weight: 90 examples in batches of 4
    # (22 full and one of 2), two batches a step.
    assert [len(b) for step in plan for b in step] == [4] * 22 + [2]
    assert [len(step) for step in plan] == [2] * 11 + [1]


def test_reproducible_for_a_seed():
    config = FinetuneConfig(max_steps=10, batch_size=3, seed=4)
    again = sampled(group_plan(GROUPS, WEIGHTS, config))
    np.testing.assert_array_equal(sampled(group_plan(GROUPS, WEIGHTS, config)), again)
    other = FinetuneConfig(max_steps=10, batch_size=3, seed=5)
    assert not np.array_equal(sampled(group_plan(GROUPS, WEIGHTS, other)), again)


@pytest.mark.parametrize(
    ("groups", "weights", "message"),
    [
        (["a", "b"], {"a": 1.0}, "group 'b' has no group weight"),
        (["a", None], {"a": 1.0}, "trained record 1 has no group"),
        (["a"], {"a": 1.0, "z": 0.5}, "group 'z' has a positive group weight but none of"),
        (["a", "b"], {"a": 0.0, "b": 0.0}, r"every trained group \(\['a', 'b'\]\) are zero"),
        (["a"], {"a": -1.0}, "must be finite and >= 0"),
        (["a"], {"a": float("nan")}, "must be finite and >= 0"),
        (["a"], {"a": "many"}, "must be a number"),
        (["a"], [("a", 1.0)], "must map group names to weights"),
    ],
)
def test_bad_group_weights_are_refused(groups, weights, message):
    with pytest.raises(ParamError, match=message):
        check_group_weights(groups, weights)
    with pytest.raises(ParamError, match=message):
        group_plan(groups, weights, FinetuneConfig(max_steps=1))


def test_an_absent_zero_weight_group_is_allowed():
    assert check_group_weights(["a", "b"], {"a": 1, "b": 2, "z": 0}) == {"a": 1.0, "b": 2.0}


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("tiny-llama")


@pytest.fixture(scope="module")
def pool():
    rows = make_records(4, seed=2, families=["reverse", "acronym", "units"])
    return load_records_from_list(rows, group_field="family")


def test_finetune_samples_groups_and_records_them(tiny, pool, tmp_path):
    model, tokenizer = tiny
    weights = {"reverse": 3.0, "acronym": 1.0, "units": 0.0}
    indices = list(range(len(pool)))
    result = finetune(pool, indices, model, tokenizer, tmp_path / "a", FAST,
                      group_weights=weights, progress=False)  # fmt: skip
    assert result.steps == 3
    selection = result.manifest["selection"]
    assert selection["group_weights"] == {"acronym": 1.0, "reverse": 3.0, "units": 0.0}
    # 6 examples, expected 1.5 and 4.5: this seed draws 2 and 4.
    assert selection["sampled_groups"] == {"acronym": 2, "reverse": 4, "units": 0}
    again = finetune(pool, indices, model, tokenizer, tmp_path / "b", FAST,
                     group_weights=weights, progress=False)  # fmt: skip
    assert again.losses == result.losses  # reproducible
    plain = finetune(pool, indices, model, tokenizer, tmp_path / "c", FAST, progress=False)
    assert plain.losses != result.losses and plain.manifest["selection"]["group_weights"] is None
    # Per-example weights still weight the loss: a zero drops the record from its group.
    weighted = finetune(pool, indices, model, tokenizer, tmp_path / "d", FAST,
                        weights=[0.0] + [1.0] * (len(pool) - 1), group_weights=weights,
                        progress=False)  # fmt: skip
    assert weighted.manifest["selection"]["zero_weight"] == 1
    with pytest.raises(ParamError, match="group 'units' has no group weight"):
        finetune(pool, indices, model, tokenizer, tmp_path / "e", FAST,
                 group_weights={"reverse": 1.0, "acronym": 1.0})  # fmt: skip
    assert not (tmp_path / "e").exists()


class GroupWeighted(Method):
    """Weights every record 1 and the families 3 : 1 : 0, like a group-reweighting method."""

    name = "group-weighted"

    def objective(self, pool, target, context):
        return Weights(np.ones(len(pool)), group_weights={"reverse": 3, "acronym": 1, "units": 0})


def test_selection_group_weights_reach_training(tiny, pool, tmp_path):
    model, tokenizer = tiny
    selection = select(pool, GroupWeighted(), "100%")
    assert selection.group_weights == {"reverse": 3.0, "acronym": 1.0, "units": 0.0}
    result = finetune_selection(pool, selection, model, tokenizer, tmp_path / "api", FAST,
                                progress=False)  # fmt: skip
    assert result.manifest["selection"]["sampled_groups"]["units"] == 0
    assert result.manifest["selection"]["group_weights"]["reverse"] == 3.0

    pool_path = tmp_path / "pool.jsonl"
    pool_path.write_text("".join(json.dumps(record.raw) + "\n" for record in pool))
    write_selection(selection, pool, tmp_path / "picked.jsonl")
    manifest = json.loads((tmp_path / "picked.manifest.json").read_text())
    assert manifest["selection"]["group_weights"] == selection.group_weights
    out = tmp_path / "cli"
    run = CliRunner().invoke(
        cli,
        ["train", str(pool_path), "--selection", str(tmp_path / "picked.manifest.json"),
         "--group-by", "family", "--out", str(out), "--model", "tiny-llama", "--max-steps", "3",
         "--batch-size", "2", "--learning-rate", "1e-2", "--max-length", "64", "--seed", "3", "-q"],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "groups sampled by weight" in run.output
    trained = json.loads((out / MANIFEST_NAME).read_text())
    assert trained["selection"]["group_weights"] == result.manifest["selection"]["group_weights"]
    assert trained["log"] == result.log  # the CLI trains exactly as the API does
