"""The target loss: per-example response losses in pool order, equal to one-by-one losses, for
plain and PEFT models, without gradients, and `selectkit evaluate`'s output."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from selectkit.api import load_records_from_list
from selectkit.commands.reporting import ReportingGroup
from selectkit.commands.train import evaluate_command
from selectkit.data.batching import pad_batch
from selectkit.data.examples import tokenize_many
from selectkit.data.pool import Pool, Record
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError, RecordError
from selectkit.models.lora import LoraSpec, attach_lora
from selectkit.models.losses import response_losses
from selectkit.models.tiny import byte_tokenizer, tiny_model
from selectkit.train.evaluate import example_losses, target_loss


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("tiny-llama")


@pytest.fixture(scope="module")
def rows():
    return make_records(2, seed=5, families=["reverse", "arithmetic", "acronym", "dates"])


@pytest.fixture(scope="module")
def target(rows):
    return load_records_from_list(rows, group_field="family")


def one_by_one(model, tokenizer, pool, max_length):
    losses = []
    with torch.no_grad():
        for record in pool:
            (example,) = tokenize_many([record], tokenizer, max_length=max_length)
            batch = pad_batch([example], tokenizer.pad_token_id)
            logits = model(input_ids=batch["input_ids"]).logits
            losses.append(float(response_losses(logits, batch["labels"])[0]))
    return np.array(losses)


def test_equals_losses_computed_one_by_one_in_pool_order(tiny, target):
    model, tokenizer = tiny
    result = target_loss(model, tokenizer, target, batch_size=3, max_length=96)
    expected = one_by_one(model, tokenizer, target, max_length=96)
    assert result.ids == target.ids and len(result) == len(target)
    assert result.losses.dtype == np.float64
    np.testing.assert_allclose(result.losses, expected, atol=1e-5)
    assert result.mean == pytest.approx(expected.mean(), abs=1e-5)
    assert len(set(np.round(result.losses, 3))) > 1  # lengths and losses differ by record


def test_truncation_and_batch_size_are_honoured(tiny, target):
    model, tokenizer = tiny
    short = target_loss(model, tokenizer, target, batch_size=8, max_length=48)
    np.testing.assert_allclose(
        short.losses, one_by_one(model, tokenizer, target, max_length=48), atol=1e-5
    )
    single = target_loss(model, tokenizer, target, batch_size=1, max_length=48)
    np.testing.assert_allclose(single.losses, short.losses, atol=1e-5)


def test_pre_tokenized_examples_give_the_same_losses(tiny, target):
    model, tokenizer = tiny
    examples = tokenize_many(list(target), tokenizer, max_length=96)
    losses = example_losses(model, examples, tokenizer.pad_token_id, batch_size=3)
    expected = target_loss(model, tokenizer, target, batch_size=3, max_length=96).losses
    np.testing.assert_array_equal(losses, expected)
    reordered = example_losses(model, examples[::-1], tokenizer.pad_token_id, batch_size=3)
    np.testing.assert_allclose(reordered[::-1], expected, atol=1e-5)  # in the given order
    with pytest.raises(ParamError, match="batch_size must be >= 1"):
        example_losses(model, examples, tokenizer.pad_token_id, batch_size=0)


def test_a_peft_model_is_evaluated_through_its_adapter(tiny, target):
    model, tokenizer = tiny
    base = target_loss(model, tokenizer, target, max_length=96)
    peft_model = attach_lora(copy.deepcopy(model), LoraSpec(r=2), seed=0)
    fresh = target_loss(peft_model, tokenizer, target, max_length=96)
    np.testing.assert_allclose(fresh.losses, base.losses, atol=1e-5)  # B = 0: no change yet
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.add_(0.05)
    peft_model.train()
    changed = target_loss(peft_model, tokenizer, target, max_length=96)
    assert not np.allclose(changed.losses, base.losses, atol=1e-3)
    assert peft_model.training  # its mode is restored
    assert all(p.grad is None for p in peft_model.parameters())


def test_errors(tiny):
    model, tokenizer = tiny
    with pytest.raises(ParamError, match="target pool is empty"):
        target_loss(model, tokenizer, Pool([]))
    one = Pool([Record(id="a", prompt="Q?", response="A.")])
    with pytest.raises(ParamError, match="batch_size must be >= 1"):
        target_loss(model, tokenizer, one, batch_size=0)
    strict = byte_tokenizer()
    strict.chat_template = "{{ raise_exception('roles must alternate') }}"
    bad = Pool([Record(id="a", prompt="Q?", response="A.", source="t.jsonl", line=3)])
    with pytest.raises(RecordError, match=r"t\.jsonl:3: .*roles must alternate"):
        target_loss(model, strict, bad)


def test_cli_prints_the_mean_and_writes_per_example_losses(tiny, rows, target, tmp_path):
    model, tokenizer = tiny
    path = tmp_path / "target.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "losses" / "target.losses.jsonl"
    group = ReportingGroup(commands={"evaluate": evaluate_command})
    result = CliRunner().invoke(
        group,
        ["evaluate", str(path), "--model", "tiny-llama", "--max-length", "96", "--group-by",
         "family", "--out", str(out), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = target_loss(model, tokenizer, target, max_length=96)
    assert f"mean target loss {expected.mean:.4f} over 8 examples" in result.output
    for family in ("reverse", "arithmetic", "acronym", "dates"):
        mine = [loss for loss, g in zip(expected.losses, target.groups, strict=True) if g == family]
        assert f"  {family}: {np.mean(mine):.4f} (2 examples)" in result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["index"], line["id"], line["group"]) for line in lines] == [
        (i, r.id, r.group) for i, r in enumerate(target)
    ]
    np.testing.assert_allclose([line["loss"] for line in lines], expected.losses, atol=1e-5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["target.losses.jsonl"]  # no temp

    missing = CliRunner().invoke(
        group, ["evaluate", str(path), "--model", "tiny-llama", "--adapter", str(tmp_path), "-q"]
    )
    assert missing.exit_code == 2 and "not a PEFT adapter checkpoint" in missing.output
