"""The causal-LM model output for traker: f, its gradient and Q against selectkit's loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from selectkit_trak.output import MIN_ONE_MINUS_P, CausalLMModelOutput, one_minus_p
from trak.gradient_computers import FunctionalGradientComputer

from selectkit.api import load_model, load_records_from_list
from selectkit.data.batching import pad_batch
from selectkit.data.examples import tokenize_many
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError
from selectkit.models.losses import response_losses

# torch.func has no vmap rule for CPU attention and falls back to a loop (correct, only slower).
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")


@pytest.fixture(scope="module")
def tiny():
    """tiny-llama and a right-padded batch of 4 records of different lengths."""
    loaded = load_model("tiny-llama")
    model = loaded.model.eval()
    records = load_records_from_list(make_records(1, seed=0)[:4])
    tokens = tokenize_many(list(records), loaded.tokenizer, template="auto", max_length=96)
    lengths = [len(t.input_ids) for t in tokens]
    assert len(set(lengths)) > 1  # the batch has padding
    batch = pad_batch(tokens, loaded.tokenizer.pad_token_id)
    return model, (batch["input_ids"], batch["attention_mask"], batch["labels"]), lengths


def test_one_minus_p_is_clamped_from_below():
    got = one_minus_p(np.array([0.0, 1e-9, 1e-3, 2.0], dtype=np.float32))
    expected = [MIN_ONE_MINUS_P, MIN_ONE_MINUS_P, -np.expm1(-np.float64(np.float32(1e-3)))]
    np.testing.assert_allclose(got[:3], expected, rtol=1e-15)
    assert got[3] == pytest.approx(1 - np.exp(-2.0), rel=1e-7)


def test_output_and_out_to_loss_match_the_response_loss(tiny):
    model, batch, _ = tiny
    ids, mask, labels = batch
    with torch.no_grad():
        losses = response_losses(model(input_ids=ids, attention_mask=mask).logits, labels)
    p = torch.exp(-losses.double())
    task = CausalLMModelOutput()
    weights, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    q = task.get_out_to_loss_grad(model, weights, buffers, batch)
    assert q.shape == (4, 1)
    torch.testing.assert_close(q[:, 0].double(), 1 - p, rtol=1e-5, atol=0)
    with torch.no_grad():
        f = torch.func.vmap(task.get_output, in_dims=(None, None, None, 0, 0, 0))(
            model, weights, buffers, *batch
        )
    torch.testing.assert_close(f.double(), torch.log(p / (1 - p)), rtol=1e-4, atol=1e-5)


def test_traker_per_example_gradients_are_minus_the_loss_gradient_over_one_minus_p(tiny):
    model, batch, lengths = tiny
    names = [name for name, _ in model.named_parameters()]
    grad_dim = sum(p.numel() for p in model.parameters())
    computer = FunctionalGradientComputer(
        model, CausalLMModelOutput(), grad_dim, torch.float32, "cpu"
    )
    grads = computer.compute_per_sample_grad(batch)
    ids, _, labels = batch
    for k, n in enumerate(lengths):  # one example alone, unpadded, by plain autograd
        loss = response_losses(model(input_ids=ids[k : k + 1, :n]).logits, labels[k : k + 1, :n])
        expected = torch.autograd.grad(loss[0], list(model.parameters()))
        scale = -1 / (1 - torch.exp(-loss[0].detach()))
        want = torch.cat([(scale * g).flatten() for g in expected])
        got = torch.cat([grads[name][k].flatten() for name in names])
        # Measured: 5e-7 apart relative to the norm; 1 / (1 - p) alone is a 0.4% factor here.
        assert (got - want).norm() <= 1e-5 * want.norm()


def test_left_padded_batches_are_refused(tiny):
    model, (ids, mask, labels), _ = tiny
    task = CausalLMModelOutput()
    weights, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    flipped = (ids.flip(1), mask.flip(1), labels.flip(1))
    with pytest.raises(ParamError, match="right-padded"):
        task.get_out_to_loss_grad(model, weights, buffers, flipped)
