"""Training on a selection: the weighted loss, zero weights, reproducibility, exact step counts,
that training on a family helps that family's held-out examples, errors, and `selectkit train`."""

from __future__ import annotations

import copy
import json
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from selectkit.api import load_records_from_list, select
from selectkit.cli import cli
from selectkit.commands.reporting import ReportingGroup
from selectkit.commands.train import evaluate_command, read_selection_manifest, train_command
from selectkit.data.batching import pad_batch
from selectkit.data.examples import tokenize_many
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError
from selectkit.models.lora import LoraSpec, attach_lora
from selectkit.models.losses import response_losses
from selectkit.models.tiny import tiny_model
from selectkit.train.evaluate import target_loss
from selectkit.train.finetune import (
    MANIFEST_NAME,
    FinetuneConfig,
    finetune,
    finetune_selection,
    training_plan,
    weighted_loss,
)

FAST = FinetuneConfig(max_steps=3, batch_size=2, learning_rate=1e-2, max_length=96, seed=3)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("tiny-llama")


@pytest.fixture(scope="module")
def pool():
    rows = make_records(3, seed=1, families=["reverse", "acronym", "uppercase"])
    return load_records_from_list(rows, group_field="family")


def adapter(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": 0},
        {"max_steps": 0},
        {"learning_rate": 0.0},
        {"lr_scheduler": "reduce_lr_on_plateau"},
        {"warmup_ratio": 1.0},
        {"weight_decay": -1.0},
        {"max_grad_norm": 0.0},
        {"batch_size": 0},
        {"gradient_accumulation": 0},
        {"max_length": 0},
        {"template": "fancy"},
        {"seed": -1},
        {"lora": {"r": 8}},
    ],
)
def test_config_rejects_bad_values(changes):
    with pytest.raises(ParamError, match=f"finetune: {next(iter(changes))}"):
        FinetuneConfig(**changes)


def test_weighted_loss_is_the_weighted_mean_of_example_losses(tiny, pool):
    model, tokenizer = tiny
    examples = tokenize_many([pool[i] for i in range(3)], tokenizer)
    alone = []
    with torch.no_grad():
        for example in examples:
            batch = pad_batch([example], tokenizer.pad_token_id)
            logits = model(input_ids=batch["input_ids"]).logits
            alone.append(float(response_losses(logits, batch["labels"])[0]))
    weights = torch.tensor([1.0, 2.0, 0.5])
    expected = sum(w * loss for w, loss in zip(weights.tolist(), alone, strict=True)) / 3.5
    batch = pad_batch(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        loss, losses = weighted_loss(model, batch, weights, float(weights.sum()))
        # Two batches of one accumulated step, each normalized by the step's total weight.
        first, _ = weighted_loss(model, pad_batch(examples[:1], 0), weights[:1], 3.5)
        rest, _ = weighted_loss(model, pad_batch(examples[1:], 0), weights[1:], 3.5)
    assert losses.tolist() == pytest.approx(alone, abs=1e-5)
    assert float(loss) == pytest.approx(expected, abs=1e-5)
    assert float(first + rest) == pytest.approx(expected, abs=1e-5)
    assert float(loss) != pytest.approx(float(losses.mean()), abs=1e-3)  # the weights matter


def test_training_plan_cycles_in_seeded_passes():
    config = FinetuneConfig(max_steps=7, batch_size=2, gradient_accumulation=2, seed=5)
    plan = training_plan(5, config)
    assert len(plan) == 7 and all(len(step) == 2 for step in plan)
    flat = np.concatenate([batch for step in plan for batch in step])
    # Passes of 5 records cut into batches of 2, 2, 1: 14 batches are 4 passes and 2 batches.
    assert len(flat) == 24
    passes = [flat[start : start + 5] for start in range(0, 20, 5)]
    assert all(sorted(p.tolist()) == [0, 1, 2, 3, 4] for p in passes)
    assert len({tuple(p.tolist()) for p in passes}) > 1  # a new order each pass
    assert [len(b) for b in plan[0] + plan[1]] == [2, 2, 1, 2]
    again = training_plan(5, config)
    assert [[b.tolist() for b in step] for step in plan] == [
        [b.tolist() for b in step] for step in again
    ]

    epochs = training_plan(5, FinetuneConfig(epochs=2, batch_size=2, gradient_accumulation=2))
    assert [sum(len(b) for b in step) for step in epochs] == [4, 3, 3]  # batches 2 2 1 2 2 1
    counts = np.bincount(np.concatenate([b for s in epochs for b in s]))
    assert counts.tolist() == [2] * 5


def test_zero_weight_is_exactly_leaving_the_record_out(tiny, pool, tmp_path):
    model, tokenizer = tiny
    with_zero = finetune(
        pool, [0, 1, 2, 3], model, tokenizer, tmp_path / "zero", FAST,
        weights=[1.0, 0.0, 2.0, 1.0], progress=False,
    )  # fmt: skip
    without = finetune(
        pool, [0, 2, 3], model, tokenizer, tmp_path / "without", FAST,
        weights=[1.0, 2.0, 1.0], progress=False,
    )  # fmt: skip
    assert same_tensors(adapter(with_zero.out_dir), adapter(without.out_dir))
    assert with_zero.losses == without.losses
    assert with_zero.manifest["selection"]["indices"] == [0, 1, 2, 3]
    assert with_zero.manifest["selection"]["zero_weight"] == 1
    # Scaling every weight by a constant changes nothing; weights of one are no weights.
    scaled = finetune(
        pool, [0, 2, 3], model, tokenizer, tmp_path / "scaled", FAST,
        weights=[4.0, 8.0, 4.0], progress=False,
    )  # fmt: skip
    assert same_tensors(adapter(scaled.out_dir), adapter(without.out_dir))
    ones = finetune(pool, [0, 2], model, tokenizer, tmp_path / "ones", FAST, weights=[1, 1],
                    progress=False)  # fmt: skip
    plain = finetune(pool, [0, 2], model, tokenizer, tmp_path / "plain", FAST, progress=False)
    assert same_tensors(adapter(ones.out_dir), adapter(plain.out_dir))
    assert not same_tensors(adapter(plain.out_dir), adapter(without.out_dir))


@pytest.fixture(scope="module")
def run(tiny, pool, tmp_path_factory):
    """One weighted run, with the caller's model and the global random states around it."""
    model, tokenizer = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    out = tmp_path_factory.mktemp("finetune") / "run"
    result = finetune(
        pool, [4, 1, 7, 1, 2], model, tokenizer, out, FAST,
        weights=[1.0, 0.5, 2.0, 1.0, 3.0], source={"note": "test"}, progress=False,
    )  # fmt: skip
    draws = (torch.rand(3), np.random.rand(3), random.random())
    return {"result": result, "before": before, "draws": draws, "out": out}


def test_max_steps_are_exact_and_logged(run):
    result = run["result"]
    assert result.steps == 3
    assert [entry["step"] for entry in result.log] == [1, 2, 3]
    assert [entry["epoch"] for entry in result.log] == pytest.approx(
        [0.4, 0.8, 1.0]
    )  # batches of 2, 2, 1
    rates = [entry["learning_rate"] for entry in result.log]
    # One warmup step (3% of 3 steps, rounded up as the HF Trainer does), then linear decay.
    assert rates == pytest.approx([0.0, FAST.learning_rate, FAST.learning_rate / 2])
    assert all(np.isfinite(entry["loss"]) for entry in result.log)


def test_outputs_and_manifest(run, pool):
    out, result = run["out"], run["result"]
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest == result.manifest
    assert manifest["status"] == "complete"
    assert manifest["pool"] == {"fingerprint": pool.fingerprint, "records": len(pool)}
    selection = manifest["selection"]
    assert selection["indices"] == [4, 1, 7, 1, 2]
    assert selection["ids"] == [pool[i].id for i in [4, 1, 7, 1, 2]]
    assert len(selection["weights_sha256"]) == 64 and selection["source"] == {"note": "test"}
    assert manifest["config"] == json.loads(json.dumps(FAST.to_dict()))
    assert manifest["steps"] == 3 and manifest["log"] == result.log
    assert manifest["adapter"]["r"] == FAST.lora.r
    assert {"selectkit", "torch", "transformers", "peft"} <= set(manifest["versions"])
    assert not result.model.training


def test_callers_model_and_random_states_are_untouched(run, tiny):
    model, _ = tiny
    assert not hasattr(model, "peft_config")
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in run["before"].items())
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    torch_draw, numpy_draw, python_draw = run["draws"]
    assert torch.equal(torch_draw, torch.rand(3))
    assert np.array_equal(numpy_draw, np.random.rand(3))
    assert python_draw == random.random()


def test_same_seed_same_adapter_in_place_and_other_runs_refused(run, tiny, pool, tmp_path):
    model, tokenizer = tiny
    first = adapter(run["out"])
    assert all(v.abs().sum() > 0 for k, v in first.items() if "lora_B" in k)  # it trained
    args = (pool, [4, 1, 7, 1, 2], model, tokenizer, run["out"], FAST)
    weights = [1.0, 0.5, 2.0, 1.0, 3.0]
    again = finetune(*args, weights=weights, source={"note": "test"}, progress=False)
    assert same_tensors(first, adapter(run["out"]))
    assert again.losses == run["result"].losses

    with pytest.raises(ParamError, match=r"different finetune run.*selection"):
        finetune(*args, weights=[1.0] * 5, source={"note": "test"}, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ParamError, match="not empty"):
        finetune(pool, [0], model, tokenizer, tmp_path, FAST, progress=False)

    other_seed = replace(FAST, seed=4)
    other = finetune(
        pool, [4, 1, 7, 1, 2], model, tokenizer, tmp_path / "seed4", other_seed,
        weights=weights, progress=False,
    )  # fmt: skip
    assert not same_tensors(first, adapter(other.out_dir))


def test_training_on_a_family_lowers_its_held_out_loss_most(tiny, tmp_path):
    model, tokenizer = tiny
    rows = make_records(8, seed=2, families=["reverse", "acronym"])
    pool = load_records_from_list(rows, group_field="family")
    held_out = make_records(4, seed=2, families=["reverse"], id_prefix="target", avoid=rows)
    target = load_records_from_list(held_out, group_field="family")
    config = FinetuneConfig(
        max_steps=6, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, max_length=96
    )
    before = target_loss(model, tokenizer, target, max_length=96).mean
    after = {}
    for family in ("reverse", "acronym"):
        chosen = [i for i, record in enumerate(pool) if record.group == family]
        result = finetune(pool, chosen, model, tokenizer, tmp_path / family, config, progress=False)
        assert result.steps == 6
        after[family] = target_loss(result.model, tokenizer, target, max_length=96).mean
    assert after["reverse"] < after["acronym"] - 0.1
    assert after["reverse"] < before - 0.2


def test_continues_a_given_peft_model(tiny, pool, tmp_path):
    base, tokenizer = tiny
    peft_model = attach_lora(copy.deepcopy(base), LoraSpec(r=4, target_modules=("q_proj",)), seed=1)
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    result = finetune(pool, [0, 1], peft_model, tokenizer, tmp_path, FAST, progress=False)
    trained = adapter(result.out_dir)
    assert len(trained) == 4 and all(4 in t.shape for t in trained.values())
    assert all(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)
    assert all(torch.equal(peft_model.state_dict()[k], v) for k, v in before.items())
    assert result.manifest["adapter"]["target_modules"] == ["q_proj"]


@pytest.mark.parametrize(
    ("indices", "weights", "message"),
    [
        ([], None, "selection is empty"),
        ([0, 99], None, "index 99 is outside the pool"),
        ([-1], None, "index -1 is outside"),
        ([0.5], None, "integer pool positions"),
        ([[0, 1]], None, "integer pool positions"),
        ([0, 1], [1.0], r"one value per selected record \(2\)"),
        ([0, 1], [1.0, float("nan")], "finite; weight 1 is nan"),
        ([0, 1], [1.0, float("inf")], "finite"),
        ([0, 1], [1.0, -0.5], ">= 0; weight 1 is -0.5"),
        ([0, 1], [0.0, 0.0], "all zero"),
        ([0, 1], ["a", "b"], "must be numbers"),
    ],
)
def test_bad_selections_are_refused_before_training(
    tiny, pool, tmp_path, indices, weights, message
):
    model, tokenizer = tiny
    with pytest.raises(ParamError, match=message):
        finetune(pool, indices, model, tokenizer, tmp_path / "out", FAST, weights=weights)
    assert not (tmp_path / "out").exists()


def test_selection_from_another_pool_is_refused(tiny, pool, tmp_path):
    model, tokenizer = tiny
    selection = select(pool, "random", 3, seed=0)
    other = load_records_from_list(make_records(3, seed=9, families=["reverse", "acronym"]))
    with pytest.raises(ParamError, match="selection was made on another pool"):
        finetune_selection(other, selection, model, tokenizer, tmp_path / "out", FAST)
    result = finetune_selection(pool, selection, model, tokenizer, tmp_path / "out", FAST,
                                progress=False)  # fmt: skip
    assert result.manifest["selection"]["indices"] == selection.indices.tolist()
    assert result.manifest["selection"]["source"] == {"method": "random"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def invoke(*args):
    group = ReportingGroup(commands={"train": train_command, "evaluate": evaluate_command})
    return CliRunner().invoke(group, [str(a) for a in args])


def test_cli_select_train_evaluate_round_trip(tmp_path):
    rows = make_records(4, seed=3, families=["reverse", "acronym"])
    pool_path = write_jsonl(tmp_path / "pool.jsonl", rows)
    held_out = make_records(3, seed=3, families=["reverse"], id_prefix="target", avoid=rows)
    target_path = write_jsonl(tmp_path / "target.jsonl", held_out)
    picked = tmp_path / "picked.jsonl"
    result = CliRunner().invoke(
        cli,
        ["select", "--method", "random", "--pool", str(pool_path), "--budget", "4",
         "--group-by", "family", "--out", str(picked), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest_path = tmp_path / "picked.manifest.json"
    common = ["--model", "tiny-llama", "--max-length", "96", "-q"]
    out = tmp_path / "trained"
    result = invoke(
        "train", pool_path, "--selection", manifest_path, "--group-by", "family", "--out", out,
        "--max-steps", "4", "--batch-size", "2", "--learning-rate", "5e-3", *common,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained 4 steps on 4 records of 8 (unweighted)" in result.output
    trained = json.loads((out / MANIFEST_NAME).read_text())
    selected = json.loads(manifest_path.read_text())["selection"]
    assert trained["selection"]["indices"] == selected["indices"]
    assert trained["selection"]["source"]["manifest"] == str(manifest_path.resolve())
    assert trained["selection"]["source"]["method"]["name"] == "random"

    losses_path = tmp_path / "losses.jsonl"
    base = invoke("evaluate", target_path, *common)
    tuned = invoke(
        "evaluate", target_path, "--adapter", out, "--out", losses_path, "--group-by", "family",
        *common,
    )  # fmt: skip
    assert base.exit_code == 0 and tuned.exit_code == 0, base.output + tuned.output
    means = [float(r.output.split("mean target loss ")[1].split()[0]) for r in (base, tuned)]
    assert means[1] < means[0]
    assert "reverse: " in tuned.output and f"wrote {losses_path}" in tuned.output
    lines = [json.loads(line) for line in losses_path.read_text().splitlines()]
    assert [line["id"] for line in lines] == [row["id"] for row in held_out]
    assert np.mean([line["loss"] for line in lines]) == pytest.approx(means[1], abs=1e-4)


def test_cli_train_refuses_a_selection_of_another_pool(tmp_path):
    rows = make_records(2, seed=3, families=["reverse", "acronym"])
    pool_path = write_jsonl(tmp_path / "pool.jsonl", rows)
    result = CliRunner().invoke(
        cli,
        ["select", "--method", "random", "--pool", str(pool_path), "--budget", "2",
         "--group-by", "family", "--out", str(tmp_path / "picked.jsonl"), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest_path = tmp_path / "picked.manifest.json"
    other_path = write_jsonl(tmp_path / "other.jsonl", make_records(2, seed=4))
    train = ["--out", tmp_path / "out", "--model", "tiny-llama", "-q"]
    for pool_args in ([other_path, "--group-by", "family"], [pool_path]):  # other rows; no groups
        result = invoke("train", *pool_args, "--selection", manifest_path, *train)
        assert result.exit_code == 2
        assert "selection was made on another pool" in result.output
        assert "--group-by, and --cost-tokenizer" in result.output
    assert not (tmp_path / "out").exists()

    result = invoke("train", pool_path, *train)
    assert result.exit_code == 2 and "either --selection MANIFEST or --all" in result.output
    result = invoke("train", pool_path, "--all", "--selection", manifest_path, *train)
    assert result.exit_code == 2 and "either --selection" in result.output
    result = invoke("train", pool_path, "--selection", tmp_path / "picked.jsonl", *train)
    assert result.exit_code == 2 and "not a selectkit selection manifest" in result.output


def test_read_selection_manifest_takes_the_weights(tmp_path):
    path = tmp_path / "picked.manifest.json"
    selection = {"indices": [2, 0], "weights": [0.5, 1.5]}
    path.write_text(json.dumps({"pool": {"fingerprint": "f"}, "selection": selection}))
    indices, weights, manifest = read_selection_manifest(path)
    assert (indices, weights) == ([2, 0], [0.5, 1.5])
    assert manifest["pool"]["fingerprint"] == "f"
    path.write_text(json.dumps({"pool": {"fingerprint": "f"}, "selection": {"indices": 3}}))
    with pytest.raises(ParamError, match="malformed"):
        read_selection_manifest(path)
