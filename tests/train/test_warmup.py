"""The LoRA warmup: the seeded subset, Trainer checkpoints, warmup.json, reproducibility, and
that neither the caller's model nor an existing run folder is touched by surprise."""

from __future__ import annotations

import inspect
import json
import random
import warnings
from dataclasses import replace
from importlib import metadata

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from selectkit.data.pool import Pool, Record
from selectkit.errors import ParamError, RecordError
from selectkit.models.lora import LoraSpec, attach_lora
from selectkit.models.tiny import tiny_model
from selectkit.train.checkpoints import find_checkpoints
from selectkit.train.warmup import MANIFEST_NAME, WarmupConfig, warmup, warmup_subset

CONFIG = WarmupConfig(fraction=0.5, epochs=2, batch_size=2, learning_rate=1e-3, seed=3)


def make_pool(n: int = 8) -> Pool:
    records = [
        Record(id=f"r{i}", prompt=f"What is {i} plus {i}?", response=f"It is {2 * i}, surely.")
        for i in range(n)
    ]
    return Pool(records)


def adapter_tensors(run_dir) -> list[dict[str, torch.Tensor]]:
    return [load_file(c.path / "adapter_model.safetensors") for c in find_checkpoints(run_dir)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One warmup, with the caller's model and global random states captured around it."""
    out = tmp_path_factory.mktemp("warmup") / "run"
    pool = make_pool()
    model, tokenizer = tiny_model("tiny-llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules_before = [(name, type(m)) for name, m in model.named_modules()]
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    checkpoints = warmup(pool, model, tokenizer, out, CONFIG, progress=False)
    draws = (torch.rand(3), np.random.rand(3), random.random())
    return {
        "out": out,
        "pool": pool,
        "model": model,
        "tokenizer": tokenizer,
        "before": before,
        "modules_before": modules_before,
        "checkpoints": checkpoints,
        "draws": draws,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"fraction": 0.0},
        {"fraction": 1.5},
        {"epochs": 0},
        {"learning_rate": 0.0},
        {"warmup_ratio": 1.0},
        {"weight_decay": -0.1},
        {"batch_size": 0},
        {"gradient_accumulation": 0},
        {"seed": -1},
    ],
)
def test_config_rejects_bad_values(changes):
    with pytest.raises(ParamError, match=next(iter(changes))):
        WarmupConfig(**changes)


@pytest.mark.parametrize(
    "changes", [{"max_length": 0}, {"max_length": 1}, {"template": "fancy"}, {"lora": {"r": 8}}]
)
def test_bad_adapter_length_or_template_is_refused_before_any_work(changes, tmp_path):
    model, tokenizer = tiny_model("tiny-llama")
    with pytest.raises(ParamError, match=f"warmup: {next(iter(changes))}"):
        warmup(make_pool(), model, tokenizer, tmp_path / "out", CONFIG, **changes, progress=False)
    assert not (tmp_path / "out").exists()


def test_config_defaults_follow_less():
    config = WarmupConfig()
    assert (config.fraction, config.epochs, config.learning_rate) == (0.05, 4, 2e-5)
    assert (config.lr_scheduler, config.warmup_ratio, config.weight_decay) == ("linear", 0.03, 0)
    defaults = {k: p.default for k, p in inspect.signature(warmup).parameters.items()}
    assert (defaults["lora"], defaults["max_length"], defaults["template"]) == (
        LoraSpec(),
        None,
        "auto",
    )
    assert config.to_dict(LoraSpec(), None, "auto")["lora"] == LoraSpec().to_dict()


def test_subset_is_seeded_sorted_and_sized():
    first = warmup_subset(100, 0.29, seed=5)
    assert len(first) == 29
    assert list(first) == sorted(set(first.tolist()))
    assert np.array_equal(first, warmup_subset(100, 0.29, seed=5))
    assert not np.array_equal(first, warmup_subset(100, 0.29, seed=6))
    assert len(warmup_subset(10, 0.01, seed=0)) == 1
    assert warmup_subset(4, 1.0, seed=0).tolist() == [0, 1, 2, 3]
    with pytest.raises(ParamError, match="at least one record"):
        warmup_subset(0, 0.5, seed=0)


def test_one_hf_checkpoint_per_epoch(run):
    checkpoints = run["checkpoints"]
    assert [c.epoch for c in checkpoints] == [1.0, 2.0]
    assert [c.step for c in checkpoints] == [2, 4]  # 4 records, 2 per step
    for c in checkpoints:
        assert c.path == run["out"] / f"checkpoint-{c.step}"
        for name in (
            "adapter_model.safetensors",
            "adapter_config.json",
            "optimizer.pt",
            "scheduler.pt",
            "trainer_state.json",
        ):
            assert (c.path / name).is_file(), name
        assert c.has_optimizer_state
        state = json.loads((c.path / "trainer_state.json").read_text())
        logged = [e["step"] for e in state["log_history"] if "learning_rate" in e]
        assert logged == list(range(1, c.step + 1))  # a learning rate for every step


def test_manifest_records_the_run(run):
    manifest = json.loads((run["out"] / MANIFEST_NAME).read_text())
    pool = run["pool"]
    indices = warmup_subset(len(pool), CONFIG.fraction, CONFIG.seed).tolist()
    assert manifest["status"] == "complete"
    assert manifest["subset"]["indices"] == indices
    assert manifest["subset"]["ids"] == [pool[i].id for i in indices]
    assert manifest["pool_fingerprint"] == pool.fingerprint
    assert manifest["config"] == json.loads(json.dumps(CONFIG.to_dict(LoraSpec(), None, "auto")))
    assert manifest["seed"] == CONFIG.seed
    assert manifest["adapter"]["r"] == LoraSpec().r
    for dist in ("torch", "transformers", "peft"):
        assert manifest["versions"][dist] == metadata.version(dist)
    assert "selectkit" in manifest["versions"]
    assert manifest["checkpoints"] == [
        {
            "path": c.path.name,
            "epoch": c.epoch,
            "step": c.step,
            "learning_rate": c.learning_rate,
            "has_optimizer_state": True,
        }
        for c in run["checkpoints"]
    ]


def test_callers_model_and_random_states_are_untouched(run):
    model = run["model"]
    assert not hasattr(model, "peft_config")
    assert [(name, type(m)) for name, m in model.named_modules()] == run["modules_before"]
    after = model.state_dict()
    assert after.keys() == run["before"].keys()
    assert all(torch.equal(after[k], v) for k, v in run["before"].items())
    assert all(p.requires_grad for p in model.parameters())

    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    torch_draw, numpy_draw, python_draw = run["draws"]
    assert torch.equal(torch_draw, torch.rand(3))
    assert np.array_equal(numpy_draw, np.random.rand(3))
    assert python_draw == random.random()


def test_same_seed_same_weights_and_rerun_in_place(run, tmp_path):
    first = adapter_tensors(run["out"])
    assert all(v.abs().sum() > 0 for k, v in first[-1].items() if "lora_B" in k)  # it trained
    # The same run may be trained again in its own folder, and reproduces it exactly.
    warmup(run["pool"], run["model"], run["tokenizer"], run["out"], CONFIG, progress=False)
    again = adapter_tensors(run["out"])
    for a, b in zip(first, again, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)

    other = replace(CONFIG, seed=4)
    warmup(run["pool"], run["model"], run["tokenizer"], tmp_path / "seed4", other, progress=False)
    different = adapter_tensors(tmp_path / "seed4")
    assert any(not torch.equal(first[-1][k], different[-1][k]) for k in first[-1])


def test_accepts_a_peft_model_and_leaves_its_adapter_alone(tmp_path):
    base, tokenizer = tiny_model("tiny-llama")
    peft_model = attach_lora(base, LoraSpec(r=4, target_modules=("q_proj",)), seed=1)
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    config = WarmupConfig(
        fraction=0.5, epochs=1, batch_size=2, learning_rate=1e-2, warmup_ratio=0.0
    )
    (checkpoint,) = warmup(make_pool(), peft_model, tokenizer, tmp_path, config, progress=False)
    trained = load_file(checkpoint.path / "adapter_model.safetensors")
    assert trained and all(t.shape[0] == 4 or t.shape[1] == 4 for t in trained.values())
    initial = {k: v for k, v in before.items() if "lora_B" in k}
    assert len(initial) == len([k for k in trained if "lora_B" in k]) == 2
    assert all(v.abs().sum() == 0 for v in initial.values())
    assert all(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)
    assert all(torch.equal(peft_model.state_dict()[k], v) for k, v in before.items())
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["adapter"]["r"] == 4
    assert manifest["adapter"]["target_modules"] == ["q_proj"]


def test_refuses_a_different_run_or_foreign_files(run, tmp_path):
    model, tokenizer, pool = run["model"], run["tokenizer"], run["pool"]
    other = replace(CONFIG, epochs=1)
    with pytest.raises(ParamError, match=r"different warmup run.*config"):
        warmup(pool, model, tokenizer, run["out"], other, progress=False)
    with pytest.raises(ParamError, match=r"different warmup run.*pool_fingerprint"):
        warmup(make_pool(9), model, tokenizer, run["out"], CONFIG, progress=False)
    for given in ({"lora": LoraSpec(r=4)}, {"max_length": 64}, {"template": "plain"}):
        with pytest.raises(ParamError, match=r"different warmup run.*config"):
            warmup(pool, model, tokenizer, run["out"], CONFIG, **given, progress=False)

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ParamError, match="not empty"):
        warmup(pool, model, tokenizer, tmp_path, CONFIG, progress=False)
    with pytest.raises(ParamError, match="is a file"):
        warmup(pool, model, tokenizer, tmp_path / "notes.txt", CONFIG, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_unusable_record_raises_before_training(tmp_path):
    model, tokenizer = tiny_model("tiny-llama")
    tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    pool = Pool([Record(id="a", prompt="Q?", response="A.", source="pool.jsonl", line=7)])
    config = WarmupConfig(fraction=1.0, epochs=1, batch_size=2)
    with pytest.raises(RecordError, match=r"pool\.jsonl:7: .*roles must alternate"):
        warmup(pool, model, tokenizer, tmp_path / "out", config, progress=False)
    assert not (tmp_path / "out").exists()


def test_unknown_scheduler_is_refused(tmp_path):
    model, tokenizer = tiny_model("tiny-llama")
    config = WarmupConfig(lr_scheduler="zigzag")
    with pytest.raises(ParamError, match="lr_scheduler must be one of"):
        warmup(make_pool(), model, tokenizer, tmp_path, config, progress=False)


def test_saving_an_adapter_of_a_model_read_without_its_config_says_nothing(tmp_path, monkeypatch):
    # The bundled SmolLM2 comes from a GGUF file, so its folder holds no config.json; offline,
    # peft then warned at every saved checkpoint that it assumes the vocabulary unchanged.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = tiny_model("tiny-llama")
    model.name_or_path = str(tmp_path)  # what from_pretrained records, and peft reads
    config = replace(CONFIG, fraction=1.0, epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warmup(make_pool(), model, tokenizer, tmp_path / "run", config, progress=False)
    assert not [w for w in caught if "config file" in str(w.message)]
