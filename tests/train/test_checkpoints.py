"""Reading warmup checkpoints: steps, epochs, mean learning rates, and the AdamW moments mapped
back to parameter names exactly as the Hugging Face Trainer grouped them."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from transformers import Trainer, TrainingArguments

from selectkit.data.pool import Pool, Record
from selectkit.errors import ParamError
from selectkit.models.lora import LoraSpec, attach_lora, load_adapter
from selectkit.models.tiny import tiny_model
from selectkit.train.checkpoints import (
    adam_moments,
    find_checkpoints,
    read_checkpoint,
    trainer_parameter_groups,
)
from selectkit.train.warmup import WarmupConfig, warmup


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("checkpoints") / "run"
    records = [Record(id=f"r{i}", prompt=f"Say {i}.", response=f"{i} {i} {i}!") for i in range(6)]
    model, tokenizer = tiny_model("tiny-llama")
    config = WarmupConfig(fraction=1.0, epochs=2, batch_size=2, learning_rate=1e-3, seed=1)
    warmup(Pool(records), model, tokenizer, out, config, progress=False)
    return out


@pytest.fixture
def copy_of(run_dir, tmp_path):
    """A scratch copy of one checkpoint folder of the run."""

    def make(step: int):
        return shutil.copytree(run_dir / f"checkpoint-{step}", tmp_path / f"checkpoint-{step}")

    return make


def loaded(checkpoint):
    base, _ = tiny_model("tiny-llama")
    return load_adapter(base, checkpoint.path)


def trainer_optimizer(model, tmp_path) -> torch.optim.Optimizer:
    """The optimizer the installed transformers Trainer builds for ``model``."""
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        use_cpu=True,
        report_to="none",
        optim="adamw_torch",
        weight_decay=0.1,
    )
    return Trainer(model=model, args=args).create_optimizer()


def test_finds_one_checkpoint_per_epoch_sorted(run_dir):
    checkpoints = find_checkpoints(run_dir)
    assert [(c.step, c.epoch) for c in checkpoints] == [(3, 1.0), (6, 2.0)]
    assert all(c.has_optimizer_state for c in checkpoints)
    assert find_checkpoints(run_dir / "checkpoint-6") == [checkpoints[1]]
    assert read_checkpoint(run_dir / "checkpoint-3") == checkpoints[0]


def test_learning_rate_is_the_mean_over_the_epochs_steps(run_dir):
    checkpoints = find_checkpoints(run_dir)
    state = json.loads((checkpoints[-1].path / "trainer_state.json").read_text())
    rates = {e["step"]: e["learning_rate"] for e in state["log_history"] if "learning_rate" in e}
    assert sorted(rates) == list(range(1, 7))
    assert len(set(rates.values())) > 1  # the schedule moves, so the epochs' means differ
    previous = 0
    for checkpoint in checkpoints:
        steps = range(previous + 1, checkpoint.step + 1)
        expected = sum(rates[s] for s in steps) / len(steps)
        assert checkpoint.learning_rate == pytest.approx(expected, rel=1e-12)
        previous = checkpoint.step
    assert checkpoints[0].learning_rate != pytest.approx(checkpoints[1].learning_rate)


def test_epoch_window_with_uneven_steps_and_other_log_entries(copy_of):
    """Gradient accumulation over an uneven number of batches logs fractional epochs; entries
    without a learning rate (evaluations, the final summary) do not count."""
    folder = copy_of(3)
    state_path = folder / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state.update(global_step=4, epoch=2.0)
    state["log_history"] = [
        {"epoch": 2 / 3, "learning_rate": 1.0, "step": 1},
        {"epoch": 1.0, "learning_rate": 2.0, "step": 2},
        {"epoch": 1.0, "eval_loss": 0.5, "step": 2},
        {"epoch": 1 + 2 / 3, "learning_rate": 3.0, "step": 3},
        {"epoch": 2.0, "learning_rate": 5.0, "step": 4},
        {"epoch": 2.0, "train_loss": 0.1, "step": 4},
    ]
    state_path.write_text(json.dumps(state))
    assert read_checkpoint(folder).learning_rate == 4.0
    state["log_history"] = [e for e in state["log_history"] if e["epoch"] <= 1.0]
    state_path.write_text(json.dumps(state))
    with pytest.raises(ParamError, match=r"logs no learning rate .* logging_steps=1"):
        read_checkpoint(folder)


@pytest.mark.parametrize(
    "missing", ["trainer_state.json", "adapter_model.safetensors", "adapter_config.json"]
)
def test_incomplete_checkpoint_names_folder_and_file(copy_of, missing):
    folder = copy_of(3)
    (folder / missing).unlink()
    with pytest.raises(ParamError, match=re.escape(f"checkpoint {folder} has no {missing}")):
        read_checkpoint(folder)


def test_run_without_checkpoints_is_an_error(tmp_path):
    with pytest.raises(ParamError, match="no checkpoint-<step> folders"):
        find_checkpoints(tmp_path)
    with pytest.raises(ParamError, match="does not exist"):
        find_checkpoints(tmp_path / "nowhere")


def test_moments_match_the_trainable_parameters(run_dir):
    checkpoint = find_checkpoints(run_dir)[-1]
    model = loaded(checkpoint)
    moments = adam_moments(checkpoint, model)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert list(moments) == list(trainable)
    for name, (exp_avg, exp_avg_sq) in moments.items():
        assert exp_avg.shape == exp_avg_sq.shape == trainable[name].shape
        assert (exp_avg_sq >= 0).all()
    assert any(v.abs().sum() > 0 for v, _ in moments.values())


def test_moments_equal_the_restored_trainer_optimizer_state(run_dir, tmp_path):
    """Resuming the way the Trainer does (load_state_dict into its own optimizer) must put the
    same tensors on each parameter as adam_moments reports under its name."""
    checkpoint = find_checkpoints(run_dir)[0]
    model = loaded(checkpoint)
    optimizer = trainer_optimizer(model, tmp_path)
    optimizer.load_state_dict(torch.load(checkpoint.path / "optimizer.pt", weights_only=True))
    moments = adam_moments(checkpoint.path, model)
    for name, param in model.named_parameters():
        if param.requires_grad:
            state = optimizer.state[param]
            assert torch.equal(moments[name][0], state["exp_avg"])
            assert torch.equal(moments[name][1], state["exp_avg_sq"])


def test_groups_with_and_without_decay_are_mapped_by_name(copy_of, tmp_path):
    """With trainable norm weights the Trainer puts them in a second, no-decay group, so the
    optimizer's order is not named_parameters order; a hand-run AdamW step checks the mapping."""
    folder = copy_of(3)
    base, _ = tiny_model("tiny-llama")
    model = attach_lora(base, LoraSpec(), seed=0)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.requires_grad_(True)
    optimizer = trainer_optimizer(model, tmp_path)
    by_identity = [[id(p) for p in group["params"]] for group in optimizer.param_groups]
    names = dict(model.named_parameters())
    decay, no_decay = trainer_parameter_groups(model)
    assert no_decay and all(n.endswith("norm.weight") for n in no_decay)
    assert by_identity == [[id(names[n]) for n in decay], [id(names[n]) for n in no_decay]]

    generator = torch.Generator().manual_seed(0)
    for name in decay + no_decay:
        names[name].grad = torch.randn(names[name].shape, generator=generator)
    optimizer.step()
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")

    moments = adam_moments(folder, model)
    assert list(moments) == [n for n, p in model.named_parameters() if p.requires_grad]
    beta1, beta2 = optimizer.param_groups[0]["betas"]
    for name, (exp_avg, exp_avg_sq) in moments.items():
        grad = names[name].grad
        assert torch.allclose(exp_avg, (1 - beta1) * grad)
        assert torch.allclose(exp_avg_sq, (1 - beta2) * grad * grad)


def test_missing_optimizer_state_is_explained(copy_of):
    folder = copy_of(3)
    (folder / "optimizer.pt").unlink()
    checkpoint = read_checkpoint(folder)
    assert not checkpoint.has_optimizer_state
    message = f"checkpoint {folder} has no optimizer state"
    with pytest.raises(ParamError, match=re.escape(message) + ".*'sgd'"):
        adam_moments(checkpoint, loaded(checkpoint))


def test_non_adam_state_is_refused(copy_of):
    folder = copy_of(3)
    model = loaded(read_checkpoint(folder))
    params = [p for p in model.parameters() if p.requires_grad]
    sgd = torch.optim.SGD([{"params": params}, {"params": []}], lr=0.1, momentum=0.9)
    for param in params:
        param.grad = torch.ones_like(param)
    sgd.step()
    torch.save(sgd.state_dict(), folder / "optimizer.pt")
    with pytest.raises(ParamError, match=r"not Adam's.*momentum_buffer"):
        adam_moments(folder, model)


def test_a_different_model_is_refused(run_dir):
    checkpoint = find_checkpoints(run_dir)[0]
    base, _ = tiny_model("tiny-llama")
    smaller = attach_lora(base, LoraSpec(r=4), seed=0)
    shape_error = "lora_A.default.weight' has shape (8, 64), but the parameter has shape (4, 64)"
    with pytest.raises(ParamError, match=re.escape(shape_error)):
        adam_moments(checkpoint, smaller)
    fewer = loaded(checkpoint)
    next(p for p in fewer.parameters() if p.requires_grad).requires_grad_(False)
    with pytest.raises(ParamError, match=r"holds 16 parameters .* model has 15 trainable"):
        adam_moments(checkpoint, fewer)


def test_optimizer_file_is_never_unpickled_freely(copy_of):
    folder = copy_of(3)
    torch.save({"state": {}, "param_groups": [], "extra": shutil.copytree}, folder / "optimizer.pt")
    with pytest.raises(ParamError, match="weights_only"):
        adam_moments(folder, loaded(read_checkpoint(folder)))
