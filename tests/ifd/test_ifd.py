"""``ifd`` against a direct computation, its filter, its scorers and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from selectkit_ifd.method import IFDParams, ifd_scores

import selectkit.features.statistics as statistics
from selectkit import select
from selectkit.api import load_model, load_pool
from selectkit.cli import cli
from selectkit.data.examples import tokenize_many
from selectkit.data.pool import Pool, Record
from selectkit.errors import BudgetError, ParamError, RecordError
from selectkit.features.featurize import FeaturizeConfig, tokenize_pool
from selectkit.features.params import ModelParams, WarmupRuns
from selectkit.features.pipeline import ModelPipeline
from selectkit.features.statistics import without_instruction
from selectkit.host import get_host
from selectkit.methods import Context
from selectkit.models.lora import load_adapter
from selectkit.params import build_params
from selectkit.train.common import pad_token_id
from selectkit.train.evaluate import example_losses

TINY = {"model": "tiny-llama", "max_length": 128}


def _direct_loss(model, tokens) -> float:
    """Mean cross-entropy over the loss-masked tokens, one example, no padding."""
    ids = torch.tensor([tokens.input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    losses = [
        float(torch.nn.functional.cross_entropy(logits[t - 1], ids[0, t]))
        for t in range(1, len(tokens.input_ids))
        if tokens.loss_mask[t]
    ]
    return float(np.mean(losses))


def _ifd_in_memory(model, tokenizer, pool, max_length, batch_size=16) -> np.ndarray:
    """IFD as the method computed it before the store kept its losses: each pass in memory,
    its examples longest first in batches of ``batch_size``."""
    config = FeaturizeConfig(max_length=max_length)
    pad = pad_token_id(tokenizer)
    run = {"batch_size": batch_size}
    conditioned = example_losses(model, tokenize_pool(pool, tokenizer, config), pad, **run)
    alone = tokenize_pool(without_instruction(pool), tokenizer, config)
    return conditioned / example_losses(model, alone, pad, **run)


def test_ifd_is_the_loss_with_the_instruction_over_the_loss_without(tmp_path):
    loaded = load_model("tiny-llama")
    records = [
        Record(id="a", prompt="Convert 3 km to m.", response="3000 m"),
        Record(id="b", prompt="Reverse the word 'stone'. Answer briefly.", response="enots"),
        Record(id="c", prompt="hi", response="hello there, how are you today?"),
    ]
    params = {"model": "tiny-llama", "max_length": 64, "batch_size": 2, "max_ifd": float("inf")}
    got = select(Pool(records), "ifd", 1, params=params, cache_dir=tmp_path).scores
    for k, record in enumerate(records):
        alone = Record(id=record.id, prompt="", response=record.response)
        with_q, without_q = tokenize_many([record, alone], loaded.tokenizer, max_length=64)
        assert without_q.response_length == len(without_q.input_ids) - 1  # all but BOS
        expected = _direct_loss(loaded.model, with_q) / _direct_loss(loaded.model, without_q)
        assert got[k] == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def base_run(targeted, store_root):
    pool, _ = targeted
    return select(pool, "ifd", 15, params=TINY, seed=0, cache_dir=store_root)


def test_scores_are_bit_identical_to_the_in_memory_computation(targeted, base_run):
    pool, _ = targeted
    model = load_model("tiny-llama")
    expected = _ifd_in_memory(model.model, model.tokenizer, pool, max_length=128)
    np.testing.assert_array_equal(base_run.scores, expected)


def test_a_second_run_reads_both_losses_from_the_store(targeted, base_run, monkeypatch):
    pool, _ = targeted

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran although the store holds the losses")

    monkeypatch.setattr(statistics, "forward_statistics", no_model)
    again = select(pool, "ifd", 15, params=TINY, seed=0)
    np.testing.assert_array_equal(again.scores, base_run.scores)
    np.testing.assert_array_equal(again.indices, base_run.indices)


def test_the_selection_is_the_highest_ifd_among_records_at_most_one(targeted, base_run):
    pool, _ = targeted
    ifd = base_run.scores
    eligible = ifd <= 1.0
    assert 0 < eligible.sum() < len(pool)  # the random tiny model puts records on both sides
    expected = np.flatnonzero(eligible)[np.argsort(-ifd[eligible], kind="stable")[:15]]
    assert sorted(base_run.indices.tolist()) == sorted(expected.tolist())
    assert (ifd[base_run.indices] <= 1.0).all()
    ruled = base_run.manifest["constraints"]["ruled_out_by_method"]
    assert ruled == {"count": int((~eligible).sum()), "why": "IFD > 1"}


def test_max_ifd_inf_keeps_every_record_and_ranks_the_same(targeted, base_run):
    pool, _ = targeted
    selection = select(pool, "ifd", 15, params={**TINY, "max_ifd": float("inf")}, seed=0)
    np.testing.assert_array_equal(selection.scores, base_run.scores)
    top = np.argsort(-base_run.scores, kind="stable")[:15]
    assert sorted(selection.indices.tolist()) == sorted(top.tolist())
    assert selection.manifest["constraints"]["ruled_out_by_method"]["count"] == 0


def test_a_budget_beyond_the_records_the_filter_keeps_is_an_error_naming_it(targeted, base_run):
    pool, _ = targeted
    kept = int((base_run.scores <= 1.0).sum())
    with pytest.raises(BudgetError, match=rf"only {kept} selectable.*'ifd' \(IFD > 1\) ruled out"):
        select(pool, "ifd", kept + 1, params=TINY, seed=0)


def test_raw_text_has_no_ifd_and_is_ruled_out():
    records = [Record(id=w, prompt=f"Repeat {w}.", response=w) for w in ("apple", "pear", "plum")]
    pool = Pool([*records, Record(id="raw", prompt="", response="just some raw text")])
    selection = select(pool, "ifd", 2, params={**TINY, "max_ifd": float("inf")})
    assert 3 not in selection.indices.tolist()
    assert selection.manifest["constraints"]["ruled_out_by_method"] == {
        "count": 1,
        "why": "no instruction",
    }


def test_a_pool_of_raw_text_is_refused_before_any_model_loads():
    pool = Pool.from_texts(["one text", "another text"])
    with pytest.raises(ParamError, match="no record of the pool has one"):
        select(pool, "ifd", 1, params={"model": "no-such-model-folder"})


def test_scorer_warmup_scores_with_the_last_warmup_checkpoint(targeted, model_params):
    pool, _ = targeted
    params = {**model_params, "scorer": "warmup", "max_ifd": float("inf")}
    selection = select(pool, "ifd", 10, params=params, seed=0)
    scorer = build_params(ModelParams, model_params, "ifd")
    last = ModelPipeline(scorer, Context(host=get_host())).checkpoints(pool)[-1]
    loaded = load_model("tiny-llama")
    model = load_adapter(loaded.model, last)
    expected = _ifd_in_memory(model, loaded.tokenizer, pool, max_length=128)
    np.testing.assert_array_equal(selection.scores, expected)
    base = select(pool, "ifd", 10, params={**TINY, "max_ifd": float("inf")}, seed=0)
    assert not np.allclose(selection.scores, base.scores)  # the warmup changed the scorer


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"checkpoints": "/some/run"}, "checkpoints are used only with scorer=warmup"),
        ({"max_ifd": 0.0}, "max_ifd must be positive"),
        ({"scorer": "warmup", "warmup": WarmupRuns(runs=2)}, "one pre-experienced model"),
        ({"scorer": "best"}, "scorer must be base or warmup"),
    ],
)
def test_bad_parameters_are_refused(overrides, message):
    with pytest.raises(ParamError, match=message):
        IFDParams(**overrides)


def test_a_non_finite_loss_names_the_record(monkeypatch, tmp_path):
    rows = [{"instruction": f"Repeat {w}.", "output": w} for w in ("apple", "pear", "plum")]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    pool = load_pool(path)
    losses = np.array([1.0, 2.0, 3.0])
    with pytest.raises(RecordError, match="IFD is undefined") as caught:
        ifd_scores(losses, np.array([1.0, np.nan, 0.0]), pool)
    assert str(caught.value).startswith(f"{path}:2: IFD is undefined: response loss nan alone")
    with pytest.raises(RecordError, match=rf"^{path}:3: .* loss 0.0 alone, 3.0 with"):
        ifd_scores(losses, np.array([1.0, 2.0, 0.0]), pool)
    real = statistics.forward_statistics

    def infinite(model, batch):
        values = real(model, batch)
        return {**values, "loss": torch.full_like(values["loss"], float("inf"))}

    monkeypatch.setattr(statistics, "forward_statistics", infinite)
    with pytest.raises(RecordError, match="IFD is undefined") as caught:
        select(pool, "ifd", 1, params=TINY, cache_dir=tmp_path / "cache")
    assert str(caught.value).startswith(f"{path}:1: IFD is undefined: response loss inf alone")


def test_ifd_from_the_command_line(tmp_path):
    rows = [{"instruction": f"Repeat the word {w}.", "output": w} for w in ("a", "bb", "ccc")]
    rows += [{"instruction": "Spell seven.", "output": "s e v e n"}]
    pool_file = tmp_path / "pool.jsonl"
    pool_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "picked.jsonl"
    args = ["select", "--method", "ifd", "--pool", str(pool_file), "--budget", "1", "--out"]
    args += [str(out), "--param", "model=tiny-llama", "--param", "max_ifd=inf"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "picked.manifest.json").read_text())
    assert manifest["method"]["name"] == "ifd"
    assert manifest["method"]["params"]["scorer"] == "base"
    assert len(out.read_text().splitlines()) == 1
