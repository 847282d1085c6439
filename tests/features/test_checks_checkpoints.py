"""A damaged checkpoint is a one-line error naming the file and saying to retrain or replace
it, found before the model loads wherever reading the folder is enough."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from selectkit.api import load_records_from_list
from selectkit.cli import cli
from selectkit.data.synthetic import make_records
from selectkit.host import Host
from selectkit.models.lora import load_adapter
from selectkit.models.tiny import tiny_model
from selectkit.train.checkpoints import adam_moments, find_checkpoints, read_checkpoint
from selectkit.train.warmup import WarmupConfig, warmup

ROWS = make_records(1, seed=7)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "warmup"
    model, tokenizer = tiny_model("tiny-llama")
    config = WarmupConfig(fraction=1.0, epochs=1, batch_size=4, learning_rate=1e-3)
    pool = load_records_from_list(ROWS)
    warmup(pool, model, tokenizer, out, config, max_length=64, progress=False)
    return out


@pytest.fixture
def work(run_dir, tmp_path, monkeypatch):
    """A working folder with the pool, the target and a copy of the run's one checkpoint."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "target.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    (source,) = run_dir.glob("checkpoint-*")
    shutil.copytree(source, tmp_path / "ckpt")
    return tmp_path


@pytest.fixture
def nothing_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the checkpoint was checked")

    monkeypatch.setattr(Host, "load_model", refuse)


def _one_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _featurize(*extra: str):
    args = ["featurize", "pool.jsonl", "--model", "tiny-llama", "--projection-dim", "8", "-q"]
    return CliRunner().invoke(cli, [*args, "--checkpoint", "ckpt", "--cache-dir", "store", *extra])


DAMAGE = {
    "adapter_model.safetensors": [os.urandom(256), b"", "truncate"],
    "trainer_state.json": [b"{not json", b"[]", b"[" * 100_000, b'{"global_step": "x"}'],
    "adapter_config.json": [b"\xff\xfe", b"[1, 2]", b"{}"],
}


@pytest.mark.parametrize(
    ("name", "content"),
    [(name, content) for name, contents in DAMAGE.items() for content in contents],
    ids=lambda value: value if isinstance(value, str) else str(len(value)),
)
def test_a_damaged_checkpoint_file_is_named_before_the_model_loads(
    name, content, work, nothing_loads
):
    # Before: a corrupt adapter_model.safetensors gave a SafetensorError traceback.
    path = work / "ckpt" / name
    if content == "truncate":
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    line = _one_error(_featurize())
    assert name in line and "train the checkpoint again or replace" in line
    line = _one_error(
        CliRunner().invoke(
            cli,
            [
                *("select", "-m", "tracin", "--pool", "pool.jsonl", "--target", "target.jsonl"),
                *("-b", "1", "-o", "out.jsonl", "-q", "-p", "model=tiny-llama"),
                *("-p", "checkpoints=ckpt", "-p", "projection.dim=8"),
            ],
        )
    )
    assert name in line
    assert not (work / "store").exists() and not (work / "out.jsonl").exists()


@pytest.mark.parametrize("content", [os.urandom(512), b"", b"plain text"])
def test_a_damaged_optimizer_state_is_refused_before_adam_features(content, work, monkeypatch):
    (work / "ckpt" / "optimizer.pt").write_bytes(content)
    command = [
        *("select", "-m", "less", "--pool", "pool.jsonl", "--target", "target.jsonl", "-b", "1"),
        *("-o", "out.jsonl", "-q", "-p", "model=tiny-llama", "-p", "checkpoints=ckpt"),
        *("-p", "projection.dim=8"),
    ]
    with monkeypatch.context() as patched:
        patched.setattr(Host, "load_model", lambda *a: pytest.fail("model loaded"))
        line = _one_error(CliRunner().invoke(cli, command))
    assert "optimizer.pt is damaged" in line and "weights_only" in line
    # featurize finds it after loading the model, still as one clear line
    line = _one_error(_featurize("--gradient", "adam"))
    assert "optimizer.pt is damaged" in line


def test_adam_features_need_optimizer_state_before_the_model_loads(work, nothing_loads):
    (work / "ckpt" / "optimizer.pt").unlink()
    result = CliRunner().invoke(
        cli,
        [
            *("select", "-m", "less", "--pool", "pool.jsonl", "--target", "target.jsonl"),
            *("-b", "1", "-o", "out.jsonl", "-q", "-p", "model=tiny-llama"),
            *("-p", "checkpoints=ckpt", "-p", "projection.dim=8"),
        ],
    )
    assert "has no optimizer state" in _one_error(result)


def test_a_sound_checkpoint_still_reads_and_its_moments_load(run_dir):
    (checkpoint,) = find_checkpoints(run_dir)
    assert read_checkpoint(checkpoint.path).learning_rate > 0
    model = load_adapter(tiny_model("tiny-llama")[0], checkpoint.path)
    assert adam_moments(checkpoint, model)
