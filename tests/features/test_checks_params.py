"""Every method parameter that cannot work is refused when ``-p`` is read, or at the very
start of the method, before anything loads: one ``error:`` line naming the parameter and what
it may be, exit 2, no traceback, nothing written."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from selectkit.cli import cli
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError
from selectkit.features.params import GradientParams, ModelParams
from selectkit.host import Host
from selectkit.params import build_params

BAD = [
    ("less", "lora.r=0", "lora: LoRA rank r must be >= 1"),
    ("less", "lora.alpha=nan", "lora: LoRA alpha must be a finite number > 0"),
    ("less", "lora.dropout=1", "lora: LoRA dropout must be in [0, 1)"),
    ("less", "lora.target_modules=q proj", "lora: LoRA target modules must be 'all-linear' or"),
    ("less", "lora.target_modules=q_proj,,v_proj", "lora: LoRA target modules must be"),
    ("less", "warmup.fraction=0", "warmup: fraction must be in (0, 1]"),
    ("less", "warmup.fraction=1.5", "warmup: fraction must be in (0, 1]"),
    ("less", "warmup.epochs=0", "warmup: epochs must be >= 1"),
    ("less", "warmup.learning_rate=inf", "warmup: learning_rate must be a finite number"),
    ("less", "warmup.batch_size=0", "warmup: batch_size must be >= 1"),
    ("less", "batch_size=0", "batch_size must be >= 1"),
    ("less", "max_length=1", "max_length must be >= 2"),
    ("less", "projection.dim=0", "projection: projection dim must be >= 1"),
    ("less", "projection.seed=-1", "projection: projection seed must be in 0.."),
    ("less", "projection.dtype=float64", "parameter 'projection.dtype' must be one of"),
    ("less", "model_dtype=float64", "model_dtype"),
    ("less", "device=tpu", "device must be auto, cpu, cuda, cuda:N or mps"),
    ("less", "device=cuda:7", "device 'cuda:7' is not available"),
    ("less", "projection.kind=nope", "no projector named 'nope'"),
    ("less", "aggregate=median", "aggregate"),
    ("less", "checkpoints=,", "checkpoints must list folders"),
    ("tracin", "model= ", "model must name a model"),
    ("el2n", "warmup.runs=0", "warmup.runs must be at least 1"),
    ("el2n", "warmup.seed=-1", "warmup: seed must be >= 0"),
    ("trak", "damping=-1", "damping must be a finite number >= 0"),
    ("datamodels", "damping=nan", "damping must be a finite number >= 0"),
    ("ifd", "max_ifd=0", "max_ifd must be positive"),
    ("kcenter", "metric=manhattan", "metric"),
    ("craig", "memory_mb=0", "memory_mb must be >= 1"),
    ("gradmatch", "l2=inf", "l2 must be >= 0 and finite"),
    ("bilevel", "outer_lr=0", "outer_lr must be a finite number > 0"),
    ("dsir", "num_buckets=100000000000", "num_buckets must be in [1, 2**32]"),
    ("dsir", "ngrams=3", "ngrams must be 1 or 2"),
    ("dsir", "smoothing=1", "smoothing must be auto or in [0, 1)"),
    ("dsir", "chunk_size=0", "chunk_size must be >= 1"),
]


@pytest.fixture
def nothing_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the parameters were checked")

    monkeypatch.setattr(Host, "load_model", refuse)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working folder holding a pool and a target, and nothing else."""
    monkeypatch.chdir(tmp_path)
    rows = make_records(2, seed=3)
    target = make_records(1, seed=1, families=["units"], id_prefix="t", avoid=rows)
    for name, records in (("pool.jsonl", rows), ("target.jsonl", target)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


def select(*args: str):
    command = "select --pool pool.jsonl --target target.jsonl -b 2 -o out.jsonl -q"
    return CliRunner().invoke(cli, [*command.split(), *args])


def _one_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize(("method", "assignment", "message"), BAD)
def test_a_value_that_cannot_work_is_refused_before_anything_loads(
    method, assignment, message, folder, nothing_loads
):
    cache = folder / "cache"
    defaults = ["-p", "model=tiny-llama", "--cache-dir", str(cache)]
    result = select("-m", method, *(defaults if method != "dsir" else []), "-p", assignment)
    assert message in _one_error(result)
    made = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    # the pools were read (and kept in the pool cache for the next run); nothing else
    assert [p for p in made if not p.startswith("cache/pools/")] in (
        ["cache", "cache/pools", "pool.jsonl", "target.jsonl"],
        ["pool.jsonl", "target.jsonl"],
    ), made


def test_checkpoints_that_cannot_be_used_are_refused_before_anything_loads(folder, nothing_loads):
    empty = folder / "empty"
    empty.mkdir()
    for value, message in (
        (folder / "missing", "does not exist"),
        (empty, "holds no checkpoint-<step> folders"),
    ):
        result = select("-m", "less", "-p", "model=tiny-llama", "-p", f"checkpoints={value}")
        assert message in _one_error(result)
    assert sorted(p.name for p in folder.iterdir()) == ["empty", "pool.jsonl", "target.jsonl"]


def test_literal_parameters_list_their_allowed_values():
    from typing import get_args, get_type_hints

    assert get_args(get_type_hints(GradientParams)["model_dtype"]) == (
        "float32",
        "bfloat16",
        "float16",
    )
    assert get_args(get_type_hints(ProjectionConfig)["dtype"]) == ("float32", "float16")


def test_python_values_are_checked_too():
    with pytest.raises(ParamError, match="model_dtype"):
        ModelParams(model_dtype="float64")  # type: ignore[arg-type]
    with pytest.raises(ParamError, match="store dtype"):
        GradientParams(projection=ProjectionConfig(dtype="int8"))  # type: ignore[arg-type]
    params = build_params(ModelParams, {"lora.target_modules": "q_proj, v_proj"}, "m")
    assert params.lora.target_modules == ("q_proj", "v_proj")
