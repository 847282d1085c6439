"""The reweighting loop: one outer step against a hand computation, and its parts."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from selectkit_bilevel.reweighting import (
    ReweightConfig,
    log_weight_step,
    pool_batches,
    reweight,
    target_batches,
)

from selectkit.data.batching import pad_batch
from selectkit.data.examples import tokenize_many
from selectkit.data.pool import Record
from selectkit.errors import ParamError, TrainingDiverged
from selectkit.models.lora import LoraSpec, attach_lora
from selectkit.models.losses import response_losses
from selectkit.models.tiny import tiny_model

POOL = [
    Record(id=f"p{i}", prompt=f"question {i} " * (1 + i % 2), response="answer " * (1 + i))
    for i in range(4)
]
TARGET = [Record(id=f"t{i}", prompt="convert", response=f"{i} meters") for i in range(2)]


def _lora_model():
    model, tokenizer = tiny_model("tiny-llama")
    model = attach_lora(model, LoraSpec(r=4, target_modules="all-linear"))
    with torch.no_grad():  # LoRA starts with B = 0, which would make every A gradient zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return model, tokenizer


def _one_example_gradients(model, tokens, pad_id) -> torch.Tensor:
    """Each example's gradient by plain autograd, one example at a time."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for item in tokens:
        batch = pad_batch([item], pad_id)
        logits = model(input_ids=batch["input_ids"]).logits
        loss = response_losses(logits, batch["labels"])[0]
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


@pytest.mark.parametrize(
    ("groups", "max_log_weight"),
    [(None, math.inf), (None, 0.3), (np.array([0, 1, 0, 1]), math.inf)],
)
def test_one_outer_step_equals_a_hand_computation(groups, max_log_weight):
    model, tokenizer = _lora_model()
    hand = _lora_model()[0].eval()  # no LoRA dropout, as in the loop
    pad_id = tokenizer.pad_token_id
    pool, target = tokenize_many(POOL, tokenizer), tokenize_many(TARGET, tokenizer)
    config = ReweightConfig(
        batch_size=4, target_batch_size=2, inner_lr=1e-3, outer_lr=0.7,
        max_log_weight=max_log_weight, seed=3,
    )  # fmt: skip
    before = [p.detach().clone() for p in hand.parameters() if p.requires_grad]
    result = reweight(model, pool, target, config, pad_id=pad_id, groups=groups)

    grads = _one_example_gradients(hand, pool, pad_id).double()
    target_grad = _one_example_gradients(hand, target, pad_id).double().mean(dim=0)
    h = (grads @ target_grad).numpy()
    step = 0.7 * h / np.sqrt(np.mean(h**2))
    if groups is None:
        logs = step - step.mean()
        per_record = logs = np.clip(logs, -max_log_weight, max_log_weight)
    else:
        logs = np.array([step[groups == g].mean() for g in (0, 1)])
        logs = logs - logs[groups].mean()
        per_record = logs[groups]
    weights = np.exp(per_record)
    direction = (torch.as_tensor(weights / weights.sum()) @ grads).float()
    params = [p for p in hand.parameters() if p.requires_grad]
    offset = 0
    for param in params:
        param.grad = direction[offset : offset + param.numel()].view(param.shape)
        offset += param.numel()
    torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0).step()

    if max_log_weight < math.inf:
        assert np.abs(logs).max() == pytest.approx(0.3)  # the clipping was exercised
    np.testing.assert_allclose(result.log_weights, logs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.weights, weights / weights.mean(), rtol=1e-5)
    assert result.weights.mean() == pytest.approx(1.0)
    if groups is not None:
        np.testing.assert_allclose(result.group_weights, np.exp(logs) / weights.mean(), rtol=1e-5)
    trained = [p.detach() for p in model.parameters() if p.requires_grad]
    for mine, theirs in zip(trained, params, strict=True):
        torch.testing.assert_close(mine, theirs.detach(), rtol=1e-4, atol=1e-6)
    moved = max(float((p.detach() - s).abs().max()) for p, s in zip(params, before, strict=True))
    assert moved > 5e-4  # an Adam step moves each parameter by about inner_lr
    assert result.log[0]["step"] == 1 and result.log[0]["epoch"] == 1.0


def test_global_random_states_are_left_as_found():
    model, tokenizer = _lora_model()
    pool, target = tokenize_many(POOL, tokenizer), tokenize_many(TARGET, tokenizer)
    states = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    reweight(model, pool, target, ReweightConfig(batch_size=2), pad_id=tokenizer.pad_token_id)
    assert torch.equal(torch.random.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]


def test_a_non_finite_loss_stops_the_loop_naming_the_step():
    model, tokenizer = _lora_model()
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))
    pool, target = tokenize_many(POOL, tokenizer), tokenize_many(TARGET, tokenizer)
    with pytest.raises(TrainingDiverged, match="bilevel reweighting diverged: the loss of step 1"):
        reweight(model, pool, target, ReweightConfig(), pad_id=tokenizer.pad_token_id)


def test_the_step_is_in_log_weight_units_whatever_the_gradient_scale():
    config = ReweightConfig(outer_lr=0.5, max_log_weight=math.inf)
    h = np.array([1.0, -2.0, 3.0])
    batch = np.array([0, 2, 3])
    small = log_weight_step(np.zeros(5), batch, h * 1e-9, config)
    large = log_weight_step(np.zeros(5), batch, h * 1e6, config)
    np.testing.assert_allclose(small, large)
    raw = np.zeros(5)
    raw[batch] = 0.5 * h / np.sqrt(np.mean(h**2))
    np.testing.assert_allclose(small, raw - raw.mean())
    assert not log_weight_step(np.zeros(5), batch, np.zeros(3), config).any()


def test_a_group_moves_by_the_mean_of_its_records_steps():
    config = ReweightConfig(outer_lr=1.0, max_log_weight=math.inf)
    groups = np.array([0, 0, 1, 1, 1, 2])  # group 2 is not in the batch
    h = np.array([1.0, 3.0, -2.0])  # records 0 and 1 (group 0), record 2 (group 1)
    logs = log_weight_step(np.zeros(3), np.array([0, 1, 2]), h, config, groups)
    step = h / np.sqrt(np.mean(h**2))
    raw = np.array([(step[0] + step[1]) / 2, step[2], 0.0])
    np.testing.assert_allclose(logs, raw - (2 * raw[0] + 3 * raw[1]) / 6)


def test_batches_cover_the_pool_each_epoch_and_cycle_the_target():
    config = ReweightConfig(epochs=2, batch_size=4, target_batch_size=3, seed=1)
    plan = pool_batches(10, config)
    assert [len(b) for b in plan] == [4, 4, 2] * 2
    assert sorted(np.concatenate(plan[:3]).tolist()) == list(range(10))
    assert sorted(np.concatenate(plan[3:]).tolist()) == list(range(10))
    assert not np.array_equal(np.concatenate(plan[:3]), np.concatenate(plan[3:]))
    assert [b.tolist() for b in pool_batches(10, config)] == [b.tolist() for b in plan]
    stream = target_batches(7, config)
    first_pass = [next(stream) for _ in range(3)]
    assert sorted(np.concatenate(first_pass).tolist()) == list(range(7))
    small = target_batches(3, config)
    assert next(small).tolist() == next(small).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "epochs must be >= 1"),
        ("inner_lr", 0.0, "inner_lr must be a finite number > 0"),
        ("outer_lr", math.nan, "outer_lr must be a finite number > 0"),
        ("max_log_weight", -1.0, "max_log_weight must be > 0"),
        ("target_batch_size", 0, "target_batch_size must be >= 1"),
    ],
)
def test_bad_settings_are_refused(field, value, message):
    with pytest.raises(ParamError, match=message):
        ReweightConfig(**{field: value})
