"""`selectkit retrain` stopped part-way and resumed ends with the bytes of one uninterrupted run;
`selectkit lds` prints and writes the scores, and refuses bad requests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, make_dataclass

import numpy as np
import pytest
from click.testing import CliRunner

from selectkit.api import evaluate_lds
from selectkit.cli import cli
from selectkit.commands.retrain import route_params
from selectkit.errors import ParamError
from selectkit.retraining import load_runs
from selectkit.retraining import runs as runs_module
from selectkit.retraining.runs import model_files

from .conftest import outcome_bytes

RETRAIN = ["--models", "6", "--fraction", "0.5", "--seed", "0", "--model", "tiny-llama",
           "--finetune-max-steps", "4", "--finetune-batch-size", "4",
           "--finetune-learning-rate", "1e-2", "--finetune-warmup-ratio", "0",
           "--finetune-max-length", "64", "-q"]  # fmt: skip


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def files(retrain_rows, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    pool_rows, target_rows = retrain_rows
    return {
        "pool": write_jsonl(folder / "pool.jsonl", pool_rows),
        "target": write_jsonl(folder / "target.jsonl", target_rows),
        "out": folder / "run",
    }


@pytest.fixture(scope="module")
def resumed(files):
    """`selectkit retrain` stopped by a crash between model 2's outcome file and its record,
    then rerun."""
    args = [str(files["pool"]), "--target", str(files["target"]), "--out", str(files["out"])]
    real = runs_module.write_manifest

    def crash_on_model_2(path, record):
        if path.name == "model-000002.json":
            raise RuntimeError("killed")
        real(path, record)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs_module, "write_manifest", crash_on_model_2)
        crashed = CliRunner().invoke(cli, ["retrain", *args, *RETRAIN])
    assert crashed.exit_code == 1 and "internal error (RuntimeError: killed)" in crashed.output
    killed = load_runs(files["out"])
    result = CliRunner().invoke(cli, ["retrain", *args, *RETRAIN])
    assert result.exit_code == 0, result.output
    return {"killed": killed, "output": result.output}


def test_a_crashed_run_resumes_to_the_bytes_of_one_run(files, resumed, base):
    killed = resumed["killed"]
    assert killed.done.tolist() == [True, True, False, False, False, False]
    assert model_files(files["out"], 2)[0].exists()  # an outcome without its record: pending
    assert "6 models: 6 done, 0 diverged, 0 pending" in resumed["output"]
    assert outcome_bytes(files["out"], 6) == outcome_bytes(base.path, 6)
    assert (files["out"] / "masks.npy").read_bytes() == (base.path / "masks.npy").read_bytes()


def test_lds_command_prints_and_writes_the_scores(files, resumed, retrain_data):
    pool, target = retrain_data
    out_json = files["out"].parent / "lds.json"
    args = ["lds", str(files["out"]), str(files["pool"]), "--target", str(files["target"])]
    result = CliRunner().invoke(cli, [*args, "-m", "random", "--seed", "2", "--json",
                                      str(out_json), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "6 models (0 diverged, 0 not trained left out), 6 of 6 targets" in result.output
    assert "mean-loss LDS" in result.output and f"wrote {out_json}" in result.output
    expected = evaluate_lds("random", pool, target, load_runs(files["out"]), seed=2)
    row = next(line for line in result.output.splitlines() if line.startswith("random"))
    assert f"{expected.mean:.3f} ± {expected.stderr:.3f}" in row
    written = json.loads(out_json.read_text())
    assert written["runs"] == str(files["out"])
    [scored] = written["results"]
    assert scored["lds"] == pytest.approx(expected.mean)
    assert scored["per_target"] == pytest.approx(
        dict(zip(target.ids, expected.per_target, strict=True))
    )
    assert scored["models"] == 6 and np.isfinite(scored["mean_loss_lds"])

    refused = [
        (["-m", "longest"], "method 'longest' gives no per-example attribution"),
        (["-m", "random", "-p", "damping=0.1"], "none of the methods (random) has a parameter"),
        (["-m", "random", "-p", "trak.damping=0.1"], "'trak' is not one of the --method names"),
    ]
    for extra, message in refused:
        result = CliRunner().invoke(cli, [*args, *extra, "-q"])
        assert result.exit_code == 2 and message in result.output, result.output
    result = CliRunner().invoke(cli, ["lds", str(files["out"]), str(files["target"]), "--target",
                                      str(files["target"]), "-m", "random"])  # fmt: skip
    assert result.exit_code == 2 and "the pool" in result.output


def test_retrain_command_refuses_bad_shards(files, tmp_path):
    args = [str(files["pool"]), "--target", str(files["target"]), "--out", str(tmp_path / "x")]
    result = CliRunner().invoke(cli, ["retrain", *args, "--shard", "2/2", *RETRAIN])
    assert result.exit_code == 2 and "need 0 <= i < n" in result.output
    assert not (tmp_path / "x").exists()


def test_retrain_on_worker_processes_gives_the_bytes_of_one_run(files, base, tmp_path):
    args = [str(files["pool"]), "--target", str(files["target"]), "--out", str(tmp_path / "w")]
    workers = ["--executor", "processes", "--workers", "2"]
    result = CliRunner().invoke(cli, ["retrain", *args, *RETRAIN, *workers])
    assert result.exit_code == 0, result.output
    assert "6 models: 6 done, 0 diverged, 0 pending" in result.output
    assert outcome_bytes(tmp_path / "w", 6) == outcome_bytes(base.path, 6)

    both = CliRunner().invoke(cli, ["retrain", *args, *RETRAIN, *workers, "--shard", "0/2"])
    assert both.exit_code == 2 and "give --shard or --executor, not both" in both.output


@dataclass(frozen=True)
class _Projection:
    dim: int = 0


@dataclass(frozen=True)
class _Grouped:
    damping: int = 0
    projection: _Projection = field(default_factory=_Projection)


class _Host:
    """The parameters of four methods, as a host would give them (``d``'s in a group)."""

    methods = ("a", "b", "c", "d")

    def method(self, name):
        if name == "d":
            return type(name, (), {"Params": _Grouped})
        fields = {"a": ["damping", "dim"], "b": ["dim"], "c": []}[name]
        return type(name, (), {"Params": make_dataclass(name, [(f, int, 0) for f in fields])})


def test_params_go_to_the_methods_that_have_them():
    routed = route_params(["a", "b", "c"], {"dim": "8", "a.damping": "2", "c.x": "1"}, _Host())
    assert routed == {"a": {"dim": "8", "damping": "2"}, "b": {"dim": "8"}, "c": {"x": "1"}}
    with pytest.raises(ParamError, match="none of the methods"):
        route_params(["b", "c"], {"damping": "1"}, _Host())


def test_a_group_setting_goes_to_the_methods_that_have_it_not_to_a_method_named_so():
    pairs = {"projection.dim": "8", "a.dim": "4", "d.damping": "2"}
    routed = route_params(["a", "d"], pairs, _Host())
    assert routed == {"a": {"dim": "4"}, "d": {"projection.dim": "8", "damping": "2"}}
    routed = route_params(["a", "d"], {"d.projection.dim": "8"}, _Host())
    assert routed == {"a": {}, "d": {"projection.dim": "8"}}
    with pytest.raises(ParamError, match="none of the methods"):
        route_params(["a", "b"], {"projection.dim": "8"}, _Host())
