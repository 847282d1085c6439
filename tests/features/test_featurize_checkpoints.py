"""Features under warmup checkpoints: Adam preconditioning from the saved optimizer state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from selectkit.api import featurize, load_model, load_records_from_list
from selectkit.cli import cli
from selectkit.compute.gradients import PerExampleGradients
from selectkit.compute.projectors import ProjectionConfig, SparseJLProjector
from selectkit.data.batching import pad_batch
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError
from selectkit.features.featurize import FeaturizeConfig, tokenize_pool
from selectkit.models.lora import LoraSpec, attach_lora, load_adapter
from selectkit.store import FeatureStore
from selectkit.train.checkpoints import adam_moments, read_checkpoint
from selectkit.train.warmup import WarmupConfig, warmup

CONFIG = FeaturizeConfig(
    projection=ProjectionConfig(dim=32), gradient="adam", batch_size=4, max_length=96
)


@pytest.fixture(scope="module")
def pool():
    return load_records_from_list(make_records(1, seed=7))


@pytest.fixture(scope="module")
def run_dir(pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("warmup")
    loaded = load_model("tiny-llama")
    config = WarmupConfig(fraction=1.0, epochs=2, batch_size=4, learning_rate=1e-3)
    warmup(pool, loaded.model, loaded.tokenizer, out, config, max_length=96, progress=False)
    return out


def test_adam_rows_match_a_hand_computation_at_each_checkpoint(pool, run_dir, tmp_path):
    loaded = load_model("tiny-llama")
    entries = featurize(
        pool, loaded, checkpoints=[run_dir], config=CONFIG, store=FeatureStore(tmp_path)
    )
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(entries) == len(checkpoints) == 2
    assert entries[0].id != entries[1].id
    for entry, folder in zip(entries, checkpoints, strict=True):
        state = json.loads((folder / "trainer_state.json").read_text())
        assert entry.meta["checkpoint"]["path"] == str(folder.resolve())
        assert entry.meta["checkpoint"]["learning_rate"] > 0
        assert state["global_step"] == int(folder.name.split("-")[1])
        model = load_adapter(load_model("tiny-llama").model, folder).eval()
        moments = adam_moments(read_checkpoint(folder), model)
        engine = PerExampleGradients(model)
        m = torch.cat([moments[p.name][0].reshape(-1) for p in engine.layout])
        v = torch.cat([moments[p.name][1].reshape(-1) for p in engine.layout])
        projector = SparseJLProjector(engine.dim, CONFIG.projection.dim, CONFIG.projection.seed)
        expected = []
        for item in tokenize_pool(pool, loaded.tokenizer, CONFIG):
            g = engine(pad_batch([item], loaded.tokenizer.pad_token_id))[0][0]
            m1 = 0.9 * m + 0.1 * g
            v1 = 0.999 * v + 0.001 * g * g
            expected.append(projector.project((m1 / torch.sqrt(v1 + 1e-8))[None])[0])
        np.testing.assert_allclose(
            entry.read(0, len(pool)), torch.stack(expected).numpy(), rtol=1e-4, atol=1e-5
        )
    assert loaded.model.__class__.__name__ == "LlamaForCausalLM"  # adapters removed again


def test_adam_without_optimizer_state_fails_before_any_work(pool, run_dir, tmp_path):
    folder = tmp_path / "no-optimizer"
    source = next(run_dir.glob("checkpoint-*"))
    folder.mkdir()
    for item in source.iterdir():
        if item.name != "optimizer.pt":
            (folder / item.name).write_bytes(item.read_bytes())
    store = FeatureStore(tmp_path / "store")
    with pytest.raises(ParamError, match="no optimizer state"):
        featurize(pool, "tiny-llama", checkpoints=[folder], config=CONFIG, store=store)
    assert store.entries() == []
    (entry,) = featurize(
        pool,
        "tiny-llama",
        checkpoints=[folder],
        config=FeaturizeConfig(projection=ProjectionConfig(dim=32), batch_size=4, max_length=96),
        store=store,
        progress=False,
    )
    assert entry.complete


def test_cli_warmup_then_featurize_with_adam(pool, tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_records(1, seed=7)))
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["warmup", str(path), "--model", "tiny-llama", "--out", str(tmp_path / "run"),
         "--fraction", "0.5", "--epochs", "2", "--batch-size", "2", "--max-length", "96", "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("mean learning rate") == 2
    result = runner.invoke(
        cli,
        ["featurize", str(path), "--model", "tiny-llama", "--checkpoint", str(tmp_path / "run"),
         "--gradient", "adam", "--projection-dim", "16", "--max-length", "96", "--cache-dir",
         str(tmp_path / "store"), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("complete") == 2
    result = runner.invoke(cli, ["cache", "ls", "--cache-dir", str(tmp_path / "store")])
    assert "tiny-llama adam checkpoint-" in result.output
    result = runner.invoke(
        cli,
        ["featurize", str(path), "--model", "tiny-llama", "--gradient", "adam", "--cache-dir",
         str(tmp_path / "store")],
    )  # fmt: skip
    assert result.exit_code == 2 and "needs warmup checkpoints" in result.output


def test_lora_spec_errors():
    with pytest.raises(ParamError, match="rank"):
        LoraSpec(r=0)
    with pytest.raises(ParamError, match="none of the LoRA target modules"):
        attach_lora(load_model("tiny-llama").model, LoraSpec(target_modules=("c_attn",)))
