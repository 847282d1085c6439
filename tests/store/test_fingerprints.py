"""Weight hashes: what a store key is made of must not change when the code that hashes does."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from selectkit.models.lora import LoraSpec
from selectkit.store import fingerprints
from selectkit.store.fingerprints import tensors_digest


def test_the_weights_digest_is_blake2b_of_names_dtypes_shapes_and_bytes():
    named = [
        ("a.weight", torch.arange(6, dtype=torch.float32).reshape(2, 3)),
        ("b.bias", torch.tensor([1.5, -2.0], dtype=torch.bfloat16)),
        ("c.t", torch.arange(8, dtype=torch.float32).reshape(2, 4).t()),  # not contiguous
    ]
    expected = hashlib.blake2b(digest_size=32)
    for name, tensor in named:
        data = tensor.contiguous()
        expected.update(f"{name}|{data.dtype}|{tuple(data.shape)}\n".encode())
        expected.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert tensors_digest(named) == expected.hexdigest()
    # Pinned: a store key computed by any earlier version stays the same.
    single = [("w", torch.from_numpy(np.arange(4, dtype=np.float32)))]
    assert (
        tensors_digest(single)
        == hashlib.blake2b(
            b"w|torch.float32|(4,)\n" + np.arange(4, dtype=np.float32).tobytes(), digest_size=32
        ).hexdigest()
    )


def _named() -> list[tuple[str, torch.Tensor]]:
    return [
        ("a.weight", torch.arange(6, dtype=torch.float32).reshape(2, 3)),
        ("b.bias", torch.tensor([1.5, -2.0], dtype=torch.bfloat16)),
        ("c.t", torch.arange(8, dtype=torch.float32).reshape(2, 4).t()),
    ]


@pytest.fixture
def hashed(monkeypatch) -> list[int]:
    """How many digests were computed (each is one BLAKE2b over every tensor's bytes)."""
    made: list[int] = []
    blake2b = hashlib.blake2b

    def counting(*args, **kwargs):
        made.append(1)
        return blake2b(*args, **kwargs)

    monkeypatch.setattr(fingerprints.hashlib, "blake2b", counting)
    return made


def test_a_memoized_digest_is_the_plain_one_and_is_computed_once(hashed):
    named = _named()
    plain = tensors_digest(named)
    memo: fingerprints.TensorsMemo = {}
    assert tensors_digest(iter(named), memo=memo) == plain
    assert tensors_digest(iter(named), memo=memo) == plain
    assert len(hashed) == 2  # the plain digest and the first memoized one, not the second
    assert tensors_digest([(f"prefix.{n}", t) for n, t in named], memo=memo) != plain
    assert len(hashed) == 3  # other names are another digest
    assert len(memo) == 2


def test_an_edited_weight_is_hashed_again_even_with_a_memo():
    named = _named()
    memo: fingerprints.TensorsMemo = {}
    before = tensors_digest(named, memo=memo)
    weight = named[0][1]
    with torch.no_grad():
        weight.add_(1.0)  # in place: same tensor object, same storage
    assert tensors_digest(named, memo=memo) == tensors_digest(named) != before
    parameter = torch.nn.Parameter(torch.zeros(2, 2))
    held = [("p", parameter)]
    zeros = tensors_digest(held, memo=memo)
    parameter.data = torch.ones(2, 2)  # new storage under the same Parameter
    assert tensors_digest(held, memo=memo) == tensors_digest(held) != zeros
    module = torch.nn.Linear(2, 2)
    as_float = tensors_digest(module.named_parameters(), memo=memo)
    module.to(torch.float64)  # the same Parameter objects, another dtype
    assert tensors_digest(module.named_parameters(), memo=memo) != as_float

    with torch.inference_mode():
        untracked = [("i", torch.ones(3))]  # no version counter: never memoized
    entries = len(memo)
    assert tensors_digest(untracked, memo=memo) == tensors_digest(untracked)
    assert len(memo) == entries


def test_a_run_hashes_the_base_weights_once_for_pool_and_target(monkeypatch, tmp_path):
    from selectkit.api import featurize, load_model, load_records_from_list
    from selectkit.compute.projectors import ProjectionConfig
    from selectkit.data.synthetic import make_records
    from selectkit.features.featurize import FeaturizeConfig
    from selectkit.store import FeatureStore

    seen: list[list[str]] = []
    digest = fingerprints._digest

    def recording(named):
        named = list(named)
        seen.append([name for name, _ in named])
        return digest(named)

    monkeypatch.setattr(fingerprints, "_digest", recording)
    loaded = load_model("tiny-llama")
    config = FeaturizeConfig(projection=ProjectionConfig(dim=16), batch_size=4, max_length=64)
    store = FeatureStore(tmp_path)
    pool = load_records_from_list(make_records(1, seed=3))
    target = load_records_from_list(make_records(1, seed=4, id_prefix="target"))
    (pool_set,) = featurize(pool, loaded, config=config, store=store, progress=False)
    (target_set,) = featurize(target, loaded, config=config, store=store, progress=False)
    base = [names for names in seen if any("base_layer" in name for name in names)]
    assert len(base) == 1  # the pool's key hashed the base weights; the target's reused it
    assert pool_set.key["base_weights"] == target_set.key["base_weights"]
    with loaded.adapted(LoraSpec()) as adapted:
        assert adapted.digests is loaded.digests
        trainable = {n for n, p in adapted.model.named_parameters() if p.requires_grad}
        named = [(n, p) for n, p in adapted.model.named_parameters() if n not in trainable]
        assert pool_set.key["base_weights"] == digest(named)  # the value a plain digest has
