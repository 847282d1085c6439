"""The loader hooks: names selectkit ships are never a plugin's, other specs are asked of the
plugins before the built-in fallback, and a refusal to run a model's own code says how to
allow it on the command line and in Python."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from selectkit import Host, bundled, hookimpl
from selectkit.api import load_model
from selectkit.errors import ParamError
from selectkit.models.loading import LoadedModel, ModelOptions

# What transformers raises for a repository with its own code, loaded without permission.
REMOTE_CODE = (
    "The repository {0} contains custom code which must be executed to correctly load the "
    "model. You can inspect the repository content at {0} .\n You can inspect the repository "
    "content at https://hf.co/{0}.\nPlease pass the argument `trust_remote_code=True` to "
    "allow custom code to be run."
)


def _fake_loaded(spec: str) -> LoadedModel:
    import torch

    tokenizer = SimpleNamespace(pad_token_id=0, eos_token="</s>")
    return LoadedModel(torch.nn.Linear(1, 1), tokenizer, f"impostor:{spec}")


class AnswersEverything:
    """A plugin that answers every spec, first, as a greedy or careless plugin would."""

    @hookimpl(tryfirst=True)
    def selectkit_load_model(self, spec, options):
        return _fake_loaded(spec)

    @hookimpl(tryfirst=True)
    def selectkit_load_tokenizer(self, spec, trust_remote_code):
        return f"impostor tokenizer for {spec}"


@pytest.fixture
def host() -> Host:
    built = Host(entry_points=False)
    built.register(AnswersEverything(), name="greedy")
    return built


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-llama:layers=1,hidden=16", "tiny-gpt2"])
def test_a_plugin_cannot_answer_the_built_in_model_names(host, spec):
    loaded = load_model(spec, ModelOptions(device="cpu"), host=host)
    assert loaded.spec == spec
    assert type(loaded.model).__name__ in ("LlamaForCausalLM", "GPT2LMHeadModel")


def test_smollm2_is_never_a_plugin_s(host, monkeypatch, tmp_path):
    monkeypatch.setattr(bundled, "load_tokenizer", lambda: "the bundled tokenizer")
    assert host.load_tokenizer("smollm2") == "the bundled tokenizer"
    from selectkit.models import loading

    seen = []

    def fake_pretrained(source, options, **extra):
        seen.append(extra)
        raise ParamError("stop here: the built-in was asked")

    monkeypatch.setattr(loading, "_from_pretrained", fake_pretrained)
    monkeypatch.setattr(bundled, "smollm2_directory", lambda: "/nowhere")
    monkeypatch.setattr(bundled, "copy_folder", lambda dtype: tmp_path / "no-copy")
    with pytest.raises(ParamError, match="the built-in was asked"):
        load_model("smollm2", ModelOptions(device="cpu"), host=host)
    assert seen == [{"gguf_file": bundled.SMOLLM2_GGUF}]


def test_plugins_are_asked_before_the_local_and_hub_fallbacks(host, tmp_path):
    for spec in ("my-registry://model-7", str(tmp_path), "org/model"):
        assert load_model(spec, ModelOptions(device="cpu"), host=host).spec == f"impostor:{spec}"
        assert host.load_tokenizer(spec) == f"impostor tokenizer for {spec}"


def test_unknown_specs_still_say_what_is_known():
    host = Host(entry_points=False)
    with pytest.raises(ParamError, match=r"no model '\./nowhere'.*tiny-llama, tiny-gpt2"):
        load_model("./nowhere", ModelOptions(device="cpu"), host=host)
    with pytest.raises(ParamError, match=r"no tokenizer '\./nowhere'.*smollm2"):
        host.load_tokenizer("./nowhere")


def test_a_blocked_loader_leaves_the_reserved_names_to_nobody():
    from selectkit.host import BUILTIN_PLUGINS

    host = Host(builtins=[m for m in BUILTIN_PLUGINS if not m.endswith("loading")])
    host.register(AnswersEverything(), name="greedy")
    with pytest.raises(ParamError, match="no model 'tiny-llama'"):
        load_model("tiny-llama", ModelOptions(device="cpu"), host=host)


def _refuse_remote_code(monkeypatch, cls_name):
    import transformers

    def refuse(source, *args, **kwargs):
        if kwargs.get("trust_remote_code"):
            return "loaded with its own code"
        raise ValueError(REMOTE_CODE.format(source))

    monkeypatch.setattr(getattr(transformers, cls_name), "from_pretrained", refuse)


def test_remote_code_refusal_names_the_cli_flag_and_the_python_argument(tmp_path, monkeypatch):
    _refuse_remote_code(monkeypatch, "AutoTokenizer")
    _refuse_remote_code(monkeypatch, "AutoModelForCausalLM")
    host = Host(entry_points=False)
    with pytest.raises(ParamError) as info:
        host.load_tokenizer(str(tmp_path))
    message = str(info.value)
    assert f"tokenizer '{tmp_path}' from local path {tmp_path} needs to run its own" in message
    assert "--trust-remote-code" in message and "trust_remote_code=True" in message
    assert "\n" not in message
    assert host.load_tokenizer(str(tmp_path), trust_remote_code=True)
    with pytest.raises(ParamError) as info:
        load_model("org/custom-model", ModelOptions(device="cpu"), host=host)
    message = str(info.value)
    assert "model 'org/custom-model' from the Hugging Face hub (offline?) needs to run" in message
    assert "--trust-remote-code (in Python: ModelOptions(trust_remote_code=True))" in message


def test_remote_code_refusal_on_the_command_line(tmp_path, monkeypatch):
    from selectkit.cli import cli

    _refuse_remote_code(monkeypatch, "AutoTokenizer")
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("a b", "c")))
    folder = tmp_path / "tok"
    folder.mkdir()
    out = tmp_path / "out.jsonl"
    args = ["select", "-m", "random", "--pool", str(pool), "-b", "1", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--tokenizer", str(folder)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "pass --trust-remote-code (in Python: trust_remote_code=True)" in line
    assert not out.exists()
