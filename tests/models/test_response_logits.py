"""Logits only where the loss needs them: the same per-example losses and gradients as the
full logits, for every kind of causal LM (the model's own soft-capping kept), packed across the
batch and through the head in chunks, and full logits for a model that cannot keep only some."""

from __future__ import annotations

import pytest
import torch

from selectkit.api import load_model
from selectkit.compute.gradients import PerExampleGradients
from selectkit.data.batching import IGNORE_INDEX
from selectkit.models.lora import LoraSpec
from selectkit.models.losses import (
    head_matches,
    next_token_losses,
    packed_response_losses,
    response_logits,
    response_losses,
    takes_logits_to_keep,
)


def batch(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two right-padded examples whose responses start at different positions."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (2, 14), generator=gen)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 6:14] = ids[0, 6:14]
    labels[1, 9:12] = ids[1, 9:12]
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class NoKeeping(torch.nn.Module):
    """A causal LM whose forward has no ``logits_to_keep``."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def gemma2_soft_capped() -> torch.nn.Module:
    """A tiny Gemma 2 with large logits, so its final soft-capping (tanh at 2.0) bites."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        final_logit_softcapping=2.0, initializer_range=2.0,
    )  # fmt: skip
    torch.manual_seed(0)
    return Gemma2ForCausalLM(config).eval()


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-gpt2", "gemma2"])
def test_kept_logits_give_the_full_logits_losses(spec):
    model = gemma2_soft_capped() if spec == "gemma2" else load_model(spec).model
    inputs = batch(model.config.vocab_size)
    assert takes_logits_to_keep(model)
    with torch.no_grad():
        full = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logits, next_labels = response_logits(
            model, inputs["input_ids"], inputs["labels"], attention_mask=inputs["attention_mask"]
        )
    assert logits.shape[1] == 8  # positions 5..12 (example 0) and 8..10 (example 1)
    expected = response_losses(full.logits, inputs["labels"])
    torch.testing.assert_close(next_token_losses(logits, next_labels), expected)
    assert head_matches(model)  # so its losses can be packed: the head applied by us
    with torch.no_grad():
        packed = packed_response_losses(
            model, inputs["input_ids"], inputs["labels"], attention_mask=inputs["attention_mask"]
        )
    torch.testing.assert_close(packed, expected)
    if spec == "gemma2":
        assert full.logits.abs().max() <= 2.0 and logits.abs().max() <= 2.0
        assert full.logits.abs().max() > 1.9  # the cap is what bounds them


def test_a_model_without_logits_to_keep_gets_full_logits():
    model = NoKeeping(load_model("tiny-llama").model)
    inputs = batch(model.inner.config.vocab_size)
    assert not takes_logits_to_keep(model) and not head_matches(model)
    logits, next_labels = response_logits(model, inputs["input_ids"], inputs["labels"])
    assert logits.shape[1] == inputs["input_ids"].shape[1] - 1
    assert torch.equal(next_labels, inputs["labels"][:, 1:])


@pytest.mark.parametrize(
    ("backend", "chunk_bytes"), [("hooks", None), ("hooks", 4 * 262 * 3), ("func", None)]
)
def test_per_example_gradients_match_a_full_logits_loss(backend, chunk_bytes, monkeypatch):
    """Layer hooks pack the response positions (through the head in chunks of 3 positions,
    recomputed in the backward pass, with ``chunk_bytes``); torch.func keeps their union."""
    if chunk_bytes is not None:
        monkeypatch.setattr("selectkit.models.losses.HEAD_CHUNK_BYTES", chunk_bytes)
    loaded = load_model("tiny-llama")
    inputs = batch(loaded.model.config.vocab_size)
    with loaded.adapted(LoraSpec(), seed=0) as adapted:
        engine = PerExampleGradients(adapted.model, method=backend)
        assert engine._packed == (backend == "hooks")
        grads, losses = engine(inputs)
        params = [p for p in adapted.model.parameters() if p.requires_grad]
        for i in range(2):
            one = {k: v[i : i + 1] for k, v in inputs.items()}
            logits = adapted.model(
                input_ids=one["input_ids"], attention_mask=one["attention_mask"]
            ).logits
            loss = response_losses(logits, one["labels"])[0]
            expected = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
            torch.testing.assert_close(losses[i], loss.detach())
            torch.testing.assert_close(grads[i], expected, rtol=1e-4, atol=1e-6)
