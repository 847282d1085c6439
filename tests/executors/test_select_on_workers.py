"""A method inside `select` runs its store passes (gradient features, forward-only
statistics) on worker processes when asked for an executor, and selects exactly what it
selects in one process."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from selectkit import ExecutorConfig, Host, select
from selectkit.cli import cli
from selectkit.models.loading import ModelOptions


def test_tracin_on_workers_from_a_run_file_selects_the_same(
    targeted, gradient_params, tmp_path, store_root
):
    pool, target = targeted
    files = {}
    for name, records in (("pool", pool), ("target", target)):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r.raw) + "\n" for r in records))
    params = "\n".join(f"{key!r} = {value!r}".replace("'", '"') for key, value in
                       gradient_params.items())  # fmt: skip
    run = tmp_path / "run.toml"
    run.write_text(
        f'method = "tracin"\npool = "{files["pool"]}"\ntarget = "{files["target"]}"\n'
        f'budget = "5%"\ngroup-by = "family"\n[param]\n{params}\n'
    )
    outputs = {}
    for executor in ("inprocess", "processes"):
        out = tmp_path / f"{executor}.jsonl"
        run_file = tmp_path / f"{executor}.toml"
        extra = 'executor = "processes"\nworkers = 2\n' if executor == "processes" else ""
        run_file.write_text(extra + run.read_text())
        args = ["select", "--config", str(run_file), "--out", str(out), "--cache-dir",
                str(tmp_path / executor / "features"), "-q"]  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        outputs[executor] = out.read_text()
        manifest = json.loads(out.with_suffix(".manifest.json").read_text())
        assert "executor" not in manifest["run"]  # where it ran is not what it computed
    assert outputs["processes"] == outputs["inprocess"]


def _files(folder: Path) -> dict[str, bytes]:
    """The weights and optimizer states of the warmups under ``folder`` (the trainer's
    arguments name the folder they were written to, so they differ by design)."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in (".safetensors", ".pt")
    }


def test_forward_only_methods_on_workers_select_the_same(targeted, model_params, tmp_path):
    """EL2N (at every warmup checkpoint) and IFD (its two passes) fill their statistics on
    worker processes, after a warmup trained on a worker: the same warmup files and the same
    scores, bit for bit, as in one process; the calling process never loads the model."""
    pool, _ = targeted
    runs = {"el2n": model_params, "ifd": {**model_params, "scorer": "warmup"}}
    workers = ExecutorConfig(executor="processes", workers=2)
    driver = Host.from_env()
    for method, params in runs.items():
        alone = select(pool, method, 20, params=params, seed=0, cache_dir=tmp_path / "one")
        split = select(
            pool, method, 20, params=params, seed=0, cache_dir=tmp_path / "two",
            executor=workers, host=driver,
        )  # fmt: skip
        assert split.scores.tobytes() == alone.scores.tobytes(), method
        assert split.indices.tolist() == alone.indices.tolist(), method
    warmed = _files(tmp_path / "one")
    assert warmed and _files(tmp_path / "two") == warmed
    assert driver.shared_model_if_loaded("tiny-llama", ModelOptions()) is None
