"""GraNd and EL2N against direct computations."""

from __future__ import annotations

import numpy as np
import torch

from selectkit import select
from selectkit.api import load_model
from selectkit.compute.gradients import PerExampleGradients
from selectkit.compute.token_stats import el2n_scores
from selectkit.data.batching import pad_batch
from selectkit.data.pool import Record
from selectkit.features.featurize import FeaturizeConfig, tokenize_pool
from selectkit.models.lora import load_adapter
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
    got = el2n_scores(loaded.model, tokens, loaded.tokenizer.pad_token_id, batch_size=2)
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
        assert abs(got[k] - np.mean(errors)) < 1e-5


def test_el2n_selects_through_the_solver(targeted, model_params):
    pool, _ = targeted
    selection = select(pool, "el2n", 10, params=model_params, seed=0)
    assert len(selection) == 10 and np.isfinite(selection.scores).all()
    assert (selection.scores > 0).all() and (selection.scores < np.sqrt(2)).all()
