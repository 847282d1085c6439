"""GraNd and EL2N against direct computations."""

from __future__ import annotations

import numpy as np
import torch

import selectkit.features.statistics as statistics
from selectkit import select
from selectkit.api import load_model
from selectkit.compute.gradients import PerExampleGradients
from selectkit.compute.token_stats import el2n
from selectkit.data.batching import IGNORE_INDEX, pad_batch
from selectkit.data.pool import Record
from selectkit.features.featurize import FeaturizeConfig, tokenize_pool
from selectkit.features.params import ModelParams
from selectkit.features.pipeline import ModelPipeline
from selectkit.host import get_host
from selectkit.methods import Context
from selectkit.models.lora import load_adapter
from selectkit.params import build_params
from selectkit.store import FeatureStore


def _checkpoints(params: dict) -> list:
    entries = FeatureStore().entries()
    return sorted({e.meta["checkpoint"]["path"] for e in entries if e.meta.get("checkpoint")})


def test_grand_is_the_mean_exact_gradient_norm_over_checkpoints(targeted, gradient_params):
    pool, _ = targeted
    selection = select(pool, "grand", 15, params=gradient_params, seed=0)
    folders = _checkpoints(gradient_params)
    assert len(folders) == 2
    tokenizer = load_model("tiny-llama").tokenizer
    tokens = tokenize_pool(pool, tokenizer, FeaturizeConfig(max_length=128))
    picks = [0, 7, 123]
    expected = np.zeros(len(picks))
    for folder in folders:
        model = load_adapter(load_model("tiny-llama").model, folder)
        engine = PerExampleGradients(model)
        for k, i in enumerate(picks):
            grads, _ = engine(pad_batch([tokens[i]], tokenizer.pad_token_id))
            expected[k] += float(grads.norm()) / len(folders)
    np.testing.assert_allclose(selection.scores[picks], expected, rtol=1e-4)
    assert (
        selection.scores[selection.indices].min()
        >= np.delete(selection.scores, selection.indices).max()
    )


def test_el2n_matches_a_token_by_token_computation():
    loaded = load_model("tiny-llama")
    records = [
        Record(id="a", prompt="two plus two", response="four"),
        Record(id="b", prompt="hi", response="hello there"),
    ]
    tokens = tokenize_pool(records, loaded.tokenizer, FeaturizeConfig(max_length=64))
    batch = pad_batch(tokens, loaded.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = loaded.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    got = el2n(logits[:, :-1], batch["labels"][:, 1:])
    for k, item in enumerate(tokens):
        ids = torch.tensor([item.input_ids])
        with torch.no_grad():
            probs = torch.softmax(loaded.model(input_ids=ids).logits[0], dim=-1)
        errors = []
        for t in range(1, len(item.input_ids)):
            if item.loss_mask[t]:
                onehot = torch.zeros(probs.shape[-1])
                onehot[item.input_ids[t]] = 1
                errors.append(float((probs[t - 1] - onehot).norm()))
        assert abs(float(got[k]) - np.mean(errors)) < 1e-5


def _el2n_in_memory(model, tokens, pad, batch_size=16) -> np.ndarray:
    """EL2N as the method computed it before the store kept it: in memory, in batches of
    consecutive records."""
    model.eval()
    scores = np.empty(len(tokens))
    with torch.no_grad():
        for start in range(0, len(tokens), batch_size):
            batch = pad_batch(tokens[start : start + batch_size], pad)
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            mask = labels != IGNORE_INDEX
            probs = torch.softmax(logits.float(), dim=-1)
            target = probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            error = (probs.square().sum(-1) - 2 * target + 1).clamp(min=0).sqrt()
            per_example = (error * mask).sum(1) / mask.sum(1)
            scores[start : start + len(per_example)] = per_example.double().numpy()
    return scores


def test_el2n_selects_through_the_solver(targeted, model_params):
    pool, _ = targeted
    selection = select(pool, "el2n", 10, params=model_params, seed=0)
    assert len(selection) == 10 and np.isfinite(selection.scores).all()
    assert (selection.scores > 0).all() and (selection.scores < np.sqrt(2)).all()


def test_el2n_is_bit_identical_to_the_in_memory_computation_and_read_back(
    targeted, model_params, monkeypatch
):
    pool, _ = targeted
    selection = select(pool, "el2n", 10, params=model_params, seed=0)
    params = build_params(ModelParams, model_params, "el2n")
    folders = ModelPipeline(params, Context(host=get_host())).checkpoints(pool)
    assert len(folders) == 2
    tokenizer = load_model("tiny-llama").tokenizer
    tokens = tokenize_pool(pool, tokenizer, FeaturizeConfig(max_length=128))
    per_checkpoint = [
        _el2n_in_memory(
            load_adapter(load_model("tiny-llama").model, folder), tokens, tokenizer.pad_token_id
        )
        for folder in folders
    ]
    np.testing.assert_array_equal(selection.scores, np.mean(per_checkpoint, axis=0))

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran although the store holds EL2N's statistics")

    monkeypatch.setattr(statistics, "forward_statistics", no_model)
    again = select(pool, "el2n", 10, params=model_params, seed=0)
    np.testing.assert_array_equal(again.scores, selection.scores)
    np.testing.assert_array_equal(again.indices, selection.indices)
