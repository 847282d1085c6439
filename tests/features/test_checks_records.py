"""Records are checked before any model work: a response truncated away (or left as an
example's first token, which a causal LM never predicts) is refused naming its file and line,
and the check agrees with the loss the gradient pass takes, by construction."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from selectkit import host as host_module
from selectkit.api import load_records_from_list
from selectkit.cli import cli
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.batching import pad_batch
from selectkit.data.examples import loss_token_count, tokenize_many
from selectkit.data.pool import Record
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError, RecordError
from selectkit.features.params import GradientParams, ModelParams
from selectkit.features.pipeline import GradientPipeline
from selectkit.host import Host, get_host
from selectkit.methods import Context
from selectkit.models.losses import response_losses
from selectkit.models.tiny import byte_tokenizer

QA = Record(id="q", prompt="two plus two", response="four", source="pool.jsonl", line=7)
RAW = Record(id="r", prompt="", response="the cat sat", source="pool.jsonl", line=8)


def _loss(tokens) -> float:
    """The mean response loss the gradient pass would take, under uniform logits."""
    batch = pad_batch([tokens], pad_id=0)
    logits = torch.zeros((1, len(tokens.input_ids), 300))
    return float(response_losses(logits, batch["labels"])[0])


@pytest.mark.parametrize("truncation", ["left", "right"])
@pytest.mark.parametrize("record", [QA, RAW], ids=["prompt", "raw"])
def test_every_tokenized_example_has_a_loss_the_gradient_pass_can_take(record, truncation):
    tokenizer = byte_tokenizer()
    (full_example,) = tokenize_many([record], tokenizer)
    full = len(full_example.input_ids)
    for max_length in range(1, full + 1):
        (result,) = tokenize_many([record], tokenizer, max_length=max_length, truncation=truncation)
        if isinstance(result, RecordError):
            assert (result.path, result.line) == (record.source, record.line)
            continue
        assert loss_token_count(result.loss_mask) >= 1
        assert torch.isfinite(torch.tensor(_loss(result)))  # the gradient pass agrees


def test_one_kept_token_is_truncated_away_naming_the_file_and_line():
    # Before: max_length=1 kept the response's first token with its mask on, so the check
    # passed and the gradient pass (which never predicts position 0) found no loss token.
    (error,) = tokenize_many([QA], byte_tokenizer(), max_length=1)
    assert isinstance(error, RecordError) and "truncated away: max_length 1" in str(error)
    assert str(error).startswith("pool.jsonl:7: ")


def _with_max_length(params, value):
    """``params`` with a max_length its own check refuses, to reach the record check."""
    object.__setattr__(params, "max_length", value)
    return params


def _pool():
    return load_records_from_list(make_records(2, seed=3))


def test_the_pipeline_checks_records_before_the_model_loads(monkeypatch, tmp_path):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load before the records are checked")

    monkeypatch.setattr(Host, "load_model", no_model)
    cache = tmp_path / "cache" / "features"
    params = GradientParams(model="tiny-llama", projection=ProjectionConfig(dim=16))
    context = Context(host=get_host(), store_root=cache)
    pipeline = GradientPipeline(params, context)
    pipeline.check(_pool())  # the tokenizer alone, no weights
    bad = GradientPipeline(_with_max_length(params, 1), context)
    with pytest.raises(RecordError, match=r"truncated away.*\(and \d+ more records\)") as info:
        bad.check(_pool())
    assert str(info.value).startswith("<records>:1: ")  # a file's records name the file
    assert not (tmp_path / "cache").exists()  # no store entry, no warmup folder


METHODS = {
    "less": {"target": True},
    "tracin": {"target": True},
    "trak": {"target": True},
    "datamodels": {"target": True},
    "bilevel": {"target": True},
    "grand": {},
    "el2n": {},
    "ifd": {},
    "gradmatch": {},
    "craig": {},
    "kcenter": {},
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_that_runs_the_model_checks_records_first(name, monkeypatch, tmp_path):
    def no_model(*args, **kwargs):
        raise AssertionError(f"{name} loaded the model before checking its records")

    monkeypatch.setattr(Host, "load_model", no_model)
    method_cls = host_module.get_host().method(name)
    values = {"model": "tiny-llama"}
    if issubclass(method_cls.Params, GradientParams):
        values["projection"] = ProjectionConfig(dim=16)
    params = _with_max_length(method_cls.Params(**values), 1)
    assert isinstance(params, ModelParams)
    pool = _pool()
    target = _pool() if METHODS[name].get("target") else None
    with pytest.raises((RecordError, ParamError), match="max_length"):
        method_cls(params).objective(pool, target, Context(host=get_host(), budget_records=2))
    assert not any(tmp_path.iterdir())


def _write_pool(folder):
    rows = make_records(2, seed=3)
    (folder / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    target = make_records(1, seed=1, families=["units"], id_prefix="t", avoid=rows)
    (folder / "target.jsonl").write_text("".join(json.dumps(r) + "\n" for r in target))


def _one_error(result):
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output
    return lines[0]


def test_less_with_max_length_1_stops_before_any_work(tmp_path, monkeypatch):
    # Before: a warmup ran, then "an example in the batch has no response token" with no
    # file, line or record, and an empty entry was left in the store.
    monkeypatch.chdir(tmp_path)
    _write_pool(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(
        cli,
        [
            *[
                "select",
                "-m",
                "less",
                "--pool",
                "pool.jsonl",
                "--target",
                "target.jsonl",
                "-b",
                "2",
                "-o",
                "out.jsonl",
                "-q",
            ],
            *("-p", "model=tiny-llama", "-p", "max_length=1"),
            *("--cache-dir", str(tmp_path / "cache")),
        ],
    )
    assert "max_length must be >= 2" in _one_error(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_featurize_names_the_file_and_line_of_a_truncated_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_pool(tmp_path)
    result = CliRunner().invoke(
        cli,
        [
            *[
                "featurize",
                "pool.jsonl",
                "--model",
                "tiny-llama",
                "--max-length",
                "1",
                "--projection-dim",
                "8",
                "-q",
            ],
            *("--cache-dir", str(tmp_path / "store")),
        ],
    )
    line = _one_error(result)
    assert "pool.jsonl:1: truncated away" in line and "(and 19 more records)" in line
    store = tmp_path / "store"  # no entry (the store's own lock folders aside)
    assert not store.exists() or not [p for p in store.iterdir() if not p.name.startswith(".")]
