"""Method parameters: typed conversion from CLI strings and clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from selectkit.errors import ParamError
from selectkit.params import build_params, describe_params, parse_assignments


@dataclass(frozen=True)
class P:
    buckets: int = 10
    smoothing: float = 1.0
    sample: bool = True
    mode: Literal["mean", "max"] = "mean"
    words: tuple[str, ...] = ()
    limit: int | None = field(default=None, metadata={"help": "optional cap"})


def test_strings_convert_to_declared_types():
    params = build_params(
        P,
        parse_assignments(
            ["buckets=20", "smoothing=0.5", "sample=false", "mode=max", "words=a, b", "limit=none"]
        ),
        "method 'x'",
    )
    assert params == P(20, 0.5, False, "max", ("a", "b"), None)
    assert build_params(P, {"limit": "7"}, "m").limit == 7


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"bucket": "3"},
            r"has no parameter \['bucket'\] \(did you mean buckets\?\); "
            "its parameters are: buckets",
        ),
        ({"buckets": "many"}, "parameter 'buckets' must be int"),
        ({"sample": "maybe"}, "must be true or false"),
        ({"mode": "median"}, r"must be one of \['mean', 'max'\]"),
    ],
)
def test_bad_values_name_the_parameter(values, message):
    with pytest.raises(ParamError, match=message):
        build_params(P, values, "method 'x'")


def test_assignment_without_equals_is_rejected():
    with pytest.raises(ParamError, match="key=value"):
        parse_assignments(["buckets"])


def test_describe_lists_defaults_and_help():
    rows = {row["name"]: row for row in describe_params(P)}
    assert rows["buckets"]["default"] == 10
    assert rows["limit"]["help"] == "optional cap"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"buckets": 1.5}, r"parameter 'buckets' must be int, not 1.5 \(float\)"),
        ({"buckets": True}, r"parameter 'buckets' must be int, not True \(bool\)"),
        ({"smoothing": False}, r"parameter 'smoothing' must be float, not False \(bool\)"),
        ({"smoothing": "lots"}, "parameter 'smoothing' must be float, not 'lots'"),
        ({"smoothing": 10**400}, "parameter 'smoothing' is too large for a float"),
        ({"sample": 3}, r"parameter 'sample' must be true or false, not 3"),
        ({"mode": "median"}, r"must be one of \['mean', 'max'\], not 'median'"),
        ({"mode": 1}, r"must be one of \['mean', 'max'\], not 1"),
        ({"words": "a"}, None),
        ({"words": [1, 2]}, r"parameter 'words' item 0 must be str, not 1 \(int\)"),
        ({"words": {"a": 1}}, r"parameter 'words' must be tuple\[str, ...\]"),
        ({"limit": 2.0}, r"parameter 'limit' must be int \| None, not 2.0 \(float\)"),
    ],
)
def test_python_values_are_checked_like_strings(values, message):
    if message is None:
        assert build_params(P, values, "method 'x'").words == ("a",)
        return
    with pytest.raises(ParamError, match=message) as info:
        build_params(P, values, "method 'x'")
    assert str(info.value).startswith("method 'x' parameter")


def test_python_values_of_the_declared_types_are_taken_and_normalized():
    import numpy as np

    params = build_params(
        P,
        {
            "buckets": np.int64(7),
            "smoothing": 2,
            "sample": np.bool_(False),
            "mode": "max",
            "words": ["a", "b"],
            "limit": None,
        },
        "m",
    )
    assert params == P(7, 2.0, False, "max", ("a", "b"), None)
    assert type(params.buckets) is int and type(params.smoothing) is float
    assert type(params.words) is tuple and build_params(P, {"limit": 3}, "m").limit == 3


def test_select_checks_python_params_before_any_work():
    from selectkit import Pool, select

    pool = Pool.from_texts(["a b", "c d e", "f"])
    for params, name in (({"num_buckets": 1.5}, "num_buckets"), ({"sample": 3}, "sample")):
        with pytest.raises(ParamError, match=f"method 'dsir' parameter '{name}' must be"):
            select(pool, "dsir", 1, target=pool, params=params)


def test_describe_gives_the_choices_of_a_literal():
    rows = {row["name"]: row for row in describe_params(P)}
    assert rows["mode"]["choices"] == ["mean", "max"]
    assert rows["buckets"]["choices"] is None


# --- groups of settings: dotted keys, mappings and instances -----------------------------------


def _gradient(values):
    from selectkit.features.params import GradientParams

    return build_params(GradientParams, values, "m")


def test_a_group_takes_dotted_keys_a_mapping_or_an_instance_alike():
    from selectkit.features.params import GradientParams, WarmupRuns
    from selectkit.models.lora import LoraSpec

    expected = GradientParams(lora=LoraSpec(r=16))
    assert _gradient(parse_assignments(["lora.r=16"])) == expected
    assert _gradient({"lora": {"r": 16}}) == expected
    assert _gradient({"lora": {"r": "16"}}) == expected
    assert _gradient({"lora": LoraSpec(r=16)}) == expected
    mixed = {"lora.alpha": "8", "lora": {"r": 16}, "warmup": {"epochs": 2}, "warmup.seed": 3}
    built = _gradient(mixed)
    assert built == GradientParams(
        lora=LoraSpec(r=16, alpha=8.0), warmup=WarmupRuns(epochs=2, seed=3)
    )
    assert type(built.lora.alpha) is float


def test_settings_two_groups_down_all_reach_their_group():
    # Before: each finetune.lora.* key replaced the others, so only the last one counted.
    from selectkit.models.lora import LoraSpec
    from selectkit.retraining.harness import RetrainConfig
    from selectkit.train.finetune import FinetuneConfig

    expected = RetrainConfig(
        finetune=FinetuneConfig(epochs=2, lora=LoraSpec(r=3, alpha=4.0, dropout=0.2))
    )
    dotted = {"finetune.lora.r": 3, "finetune.lora.alpha": 4.0, "finetune.lora.dropout": 0.2}
    assert build_params(RetrainConfig, {**dotted, "finetune.epochs": 2}, "m") == expected
    given = {"finetune": {"lora": {"r": 3}, "epochs": 2}}
    mixed = {**given, "finetune.lora.alpha": 4.0, "finetune.lora": {"dropout": 0.2}}
    assert build_params(RetrainConfig, mixed, "m") == expected
    assert given == {"finetune": {"lora": {"r": 3}, "epochs": 2}}  # the caller's, untouched


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lora": {"r": 1}, "lora.r": 2}, r"^m: parameter 'lora\.r' is given twice$"),
        ({"lora": "r=8"}, r"parameter 'lora' is a group: give its settings as lora\.<field>="),
        ({"lora": 8}, r"parameter 'lora' is a group"),
        ({"lora.rank": 8}, r"has no parameter \['lora\.rank'\] \(did you mean lora\.r\?\)"),
        ({"lora.r.x": 8}, r"parameter 'lora\.r' must be int, not \{'x': 8\} \(dict\)"),
    ],
)
def test_a_group_given_wrongly_is_refused_naming_it(values, message):
    with pytest.raises(ParamError, match=message):
        _gradient(values)


def test_a_group_given_whole_and_in_parts_is_refused():
    from selectkit.models.lora import LoraSpec

    with pytest.raises(ParamError, match="'lora' is given both whole and setting by setting"):
        _gradient({"lora": LoraSpec(), "lora.r": 2})


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("lora_r", "lora.r"),
        ("lora_alpha", "lora.alpha"),
        ("lora_targets", "lora.target_modules"),
        ("warmup_fraction", "warmup.fraction"),
        ("warmup_epochs", "warmup.epochs"),
        ("warmup_batch_size", "warmup.batch_size"),
        ("warmup_runs", "warmup.runs"),
        ("warmup_seed", "warmup.seed"),
        ("projection_seed", "projection.seed"),
        ("projector_seed", "projection.seed"),
    ],
)
def test_an_old_flat_name_is_refused_with_its_dotted_name(old, new):
    with pytest.raises(ParamError, match=rf"has no parameter \['{old}'\] \(did you mean {new}\?\)"):
        _gradient({old: "1"})


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("warmup_lr", "warmup.learning_rate"),
        ("store_dtype", "projection.dtype"),
        ("projector", "projection.kind"),
        ("dim", "projection.dim"),
    ],
)
def test_a_renamed_flat_name_is_refused_with_its_new_name(old, new):
    with pytest.raises(ParamError, match=rf"\(did you mean {new}\?\)"):
        _gradient({old: "1"})


def test_a_group_s_own_check_names_the_group_once():
    with pytest.raises(ParamError) as info:
        _gradient({"warmup.fraction": 0})
    assert (
        str(info.value) == "m warmup: fraction must be in (0, 1], got 0.0"
    )  # not "warmup: warmup:"
    with pytest.raises(ParamError, match=r"^m lora: LoRA rank r must be >= 1, got 0$"):
        _gradient({"lora.r": "0"})


@pytest.mark.parametrize("text", ["a,,b", "a,", ",a", " , "])
def test_a_comma_list_with_an_empty_item_is_refused(text):
    # Before: the empty item was dropped, so -p lora.target_modules=q_proj,,v_proj (a name
    # left out) ran as q_proj,v_proj.
    with pytest.raises(ParamError, match=r"parameter 'words': .* has an empty item"):
        build_params(P, {"words": text}, "method 'x'")
    assert build_params(P, {"words": ""}, "m").words == ()
    assert build_params(P, {"words": " a , b "}, "m").words == ("a", "b")


RUN = """
[param]
model = "tiny-llama"
warmup.epochs = 2
projection = { dim = 32, seed = 3 }

[param.lora]
r = 16
target_modules = ["q_proj", "v_proj"]
"""


def test_a_run_file_s_group_tables_give_the_params_of_p(tmp_path):
    import click

    from selectkit.cli import select_command
    from selectkit.commands.runconfig import read_run
    from selectkit.features.params import GradientParams, WarmupRuns
    from selectkit.models.lora import LoraSpec

    path = tmp_path / "run.toml"
    path.write_text(RUN)
    options = {p.name: p for p in select_command.params if isinstance(p, click.Option)}
    from_file = _gradient(parse_assignments(read_run(path, options)["param"]))
    typed = ["model=tiny-llama", "lora.r=16", "lora.target_modules=q_proj,v_proj"]
    typed += ["warmup.epochs=2", "projection.dim=32", "projection.seed=3"]
    assert from_file == _gradient(parse_assignments(typed))
    from selectkit.compute.projectors import ProjectionConfig

    assert from_file == GradientParams(
        model="tiny-llama",
        lora=LoraSpec(r=16, target_modules=("q_proj", "v_proj")),
        warmup=WarmupRuns(epochs=2),
        projection=ProjectionConfig(dim=32, seed=3),
    )


def test_a_run_file_s_group_table_reaches_the_method_as_p_does(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from selectkit.cli import cli
    from selectkit.data.synthetic import make_records

    monkeypatch.chdir(tmp_path)
    rows = make_records(1, seed=0)
    for name in ("pool.jsonl", "target.jsonl"):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    Path("run.toml").write_text('[param]\nmodel = "tiny-llama"\n\n[param.lora]\nr = 0\n')
    command = "select -m less --pool pool.jsonl --target target.jsonl -b 2 -o o.jsonl -q"
    by_file = CliRunner().invoke(cli, [*command.split(), "--config", "run.toml"])
    by_p = CliRunner().invoke(cli, [*command.split(), "-p", "model=tiny-llama", "-p", "lora.r=0"])
    assert by_file.exit_code == by_p.exit_code == 2
    assert (
        by_file.output
        == by_p.output
        == ("error: method 'less' lora: LoRA rank r must be >= 1, got 0\n")
    )
