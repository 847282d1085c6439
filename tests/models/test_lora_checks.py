"""LoRA specs are checked when made, and an adapter that cannot be loaded leaves the model as
it was (PEFT wraps the layers before it reads the weights)."""

from __future__ import annotations

import pytest
import torch

from selectkit.errors import ParamError
from selectkit.models.lora import LoraSpec, attach_lora, load_adapter, lora_parameter_count
from selectkit.models.tiny import tiny_model


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"r": 0}, "rank r must be >= 1"),
        ({"alpha": float("inf")}, "alpha must be a finite number > 0"),
        ({"target_modules": ()}, "target modules"),
        ({"target_modules": ("q proj",)}, "target modules"),
        ({"target_modules": "q_proj"}, "target modules"),
    ],
)
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(ParamError, match=message):
        LoraSpec(**spec)


def test_a_mismatched_adapter_is_refused_and_the_model_left_as_it_was(tmp_path):
    small, _ = tiny_model("tiny-llama:hidden=32")
    attach_lora(small, LoraSpec(target_modules="all-linear")).save_pretrained(tmp_path)
    model, _ = tiny_model("tiny-llama")
    before = {name: p.clone() for name, p in model.named_parameters()}
    with pytest.raises(ParamError, match=r"cannot be loaded onto this model \(.*size mismatch"):
        load_adapter(model, tmp_path)
    after = dict(model.named_parameters())
    assert list(after) == list(before) and not hasattr(model, "peft_config")
    assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.parametrize("targets", ["all-linear", ("q_proj", "v_proj")])
def test_the_parameter_count_matches_the_attached_adapter(targets):
    model, _ = tiny_model("tiny-llama")
    spec = LoraSpec(target_modules=targets)
    counted = lora_parameter_count(model, spec)
    adapted = attach_lora(model, spec)
    assert counted == sum(p.numel() for p in adapted.parameters() if p.requires_grad)
