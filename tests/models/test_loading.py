"""Model specs through the loader hook: tiny models, local folders, errors."""

from __future__ import annotations

import pytest
import torch

from selectkit.api import load_model
from selectkit.errors import ParamError
from selectkit.models.loading import ModelOptions, resolve_device
from selectkit.models.tiny import TinySpec, byte_tokenizer, tiny_model


def test_tiny_specs_parse_and_build_the_same_weights_every_time():
    spec = TinySpec.parse("tiny-llama:layers=3,hidden=32,heads=2")
    assert (spec.arch, spec.layers, spec.hidden, spec.heads) == ("llama", 3, 32, 2)
    first, _ = tiny_model(spec)
    second, _ = tiny_model(spec)
    assert first.config.num_hidden_layers == 3
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ParamError, match="unknown setting"):
        TinySpec.parse("tiny-llama:depth=3")
    with pytest.raises(ParamError, match="integer"):
        TinySpec.parse("tiny-llama:layers=two")
    with pytest.raises(ParamError, match="tiny-llama or tiny-gpt2"):
        TinySpec.parse("tiny-bert")


def test_byte_tokenizer_round_trips_text_and_has_a_chat_template():
    tokenizer = byte_tokenizer()
    ids = tokenizer("héllo wörld")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "héllo wörld"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<s><|user|>hi<|end|><|assistant|>"


def test_load_model_from_a_local_folder(tmp_path):
    model, tokenizer = tiny_model("tiny-gpt2")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), ModelOptions(device="cpu"))
    assert type(loaded.model).__name__ == "GPT2LMHeadModel"
    assert not loaded.model.training
    for a, b in zip(model.parameters(), loaded.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_model_dtype_is_honoured():
    loaded = load_model("tiny-llama", ModelOptions(device="cpu", dtype="bfloat16"))
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_unknown_specs_and_devices_are_clear_errors(tmp_path):
    with pytest.raises(ParamError, match="no model"):
        load_model("./not/a/model dir")
    with pytest.raises(ParamError, match="cannot load model"):
        load_model(str(tmp_path))
    with pytest.raises(ParamError, match="dtype must be"):
        ModelOptions(dtype="float64")
    with pytest.raises(ParamError, match="unknown device"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParamError, match="not available"):
            resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_an_unreachable_hub_name_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ParamError, match=r"hub \(offline\?\)"):
        load_model("selectkit-tests/no-such-model")


def test_a_dequantized_gguf_model_is_accepted_for_training():
    from transformers import GgufConfig
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer
    from transformers.trainer_utils import validate_quantization_for_training

    from selectkit.models.loading import _dequantized
    from selectkit.models.lora import LoraSpec, attach_lora

    model, _ = tiny_model("tiny-llama")
    model.is_quantized = True
    model.hf_quantizer = GgufHfQuantizer(GgufConfig())
    model.config.quantization_config = GgufConfig()
    with pytest.raises(ValueError, match="GGUF"):
        validate_quantization_for_training(attach_lora(model, LoraSpec()))
    model, _ = tiny_model("tiny-llama")
    model.is_quantized = True
    model.hf_quantizer = GgufHfQuantizer(GgufConfig())
    model.config.quantization_config = GgufConfig()
    validate_quantization_for_training(attach_lora(_dequantized(model), LoraSpec()))
