"""The options of ``featurize``, ``warmup``, ``train``, ``evaluate`` and ``retrain`` are generated
from the configuration classes by one rule (a setting's dotted key, dots and underscores as
dashes): not given, each reads back as its class's default; given, it changes that setting and
no other, in the configuration the command really hands to the step it runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner

from selectkit.cli import cli
from selectkit.commands.options import option_name
from selectkit.data.synthetic import make_records
from selectkit.features.featurize import FeaturizeConfig
from selectkit.features.params import ModelParams
from selectkit.host import Host
from selectkit.models.lora import LoraSpec
from selectkit.params import describe_params, leaves
from selectkit.retraining.harness import RetrainConfig
from selectkit.train.finetune import FinetuneConfig
from selectkit.train.warmup import WarmupConfig


class Captured(Exception):
    """Raised by a stand-in for the step a command runs, once it has its arguments."""


@pytest.fixture
def captured(monkeypatch, tmp_path) -> dict[str, Any]:
    """What each command hands to the step it runs (featurize, warmup, finetune, retrain,
    target_loss), which then stops the command; the model is a stand-in, never loaded."""
    monkeypatch.chdir(tmp_path)
    rows = make_records(1, seed=0)
    for name in ("pool.jsonl", "target.jsonl"):
        Path(name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    seen: dict[str, Any] = {}

    def stand_in(step: str):
        def run(*args: Any, **kwargs: Any) -> None:
            seen.update(step=step, args=args, kwargs=kwargs)
            raise Captured(step)

        return run

    stub = SimpleNamespace(model=object(), tokenizer=object())
    monkeypatch.setattr(Host, "load_model", lambda self, spec, options=None: stub)
    monkeypatch.setattr("selectkit.features.featurize.featurize_views", stand_in("featurize"))
    monkeypatch.setattr("selectkit.train.warmup.warmup", stand_in("warmup"))
    monkeypatch.setattr("selectkit.train.finetune.finetune", stand_in("finetune"))
    monkeypatch.setattr("selectkit.retraining.retrain", stand_in("retrain"))
    monkeypatch.setattr("selectkit.train.evaluate.target_loss", stand_in("target_loss"))
    return seen


#: Each command: the arguments it needs, and the generated settings it reads, as
#: (configuration class, option prefix, only these settings or None for all).
COMMANDS: dict[str, tuple[list[str], list[tuple[type, str, tuple[str, ...] | None]]]] = {
    "featurize": (
        ["pool.jsonl", "--cache-dir", "store"],
        [(FeaturizeConfig, "", None), (LoraSpec, "lora.", None)],
    ),
    "warmup": (
        ["pool.jsonl", "--out", "w"],
        [(WarmupConfig, "", None), (LoraSpec, "lora.", None), (ModelParams, "", ("max_length",))],
    ),
    "train": (["pool.jsonl", "--all", "--out", "t"], [(FinetuneConfig, "", None)]),
    "evaluate": (
        ["target.jsonl"],
        [(FinetuneConfig, "", ("batch_size", "max_length", "template"))],
    ),
    "retrain": (
        ["pool.jsonl", "--target", "target.jsonl", "--out", "r"],
        [(RetrainConfig, "", None)],
    ),
}


def _handed(command: str, seen: dict[str, Any]) -> dict[str, Any]:
    """Every setting the command handed to its step, by its dotted key (prefix included)."""
    kwargs = seen["kwargs"]
    if command == "featurize":
        return {**leaves(kwargs["config"]), **_prefixed(leaves(kwargs["lora"]), "lora.")}
    if command == "warmup":
        config = seen["args"][4]
        lora = _prefixed(leaves(kwargs["lora"]), "lora.")
        return {**leaves(config), **lora, "max_length": kwargs["max_length"]}
    if command == "train":
        return leaves(seen["args"][5])
    if command == "retrain":
        return leaves(seen["args"][5])
    return {name: kwargs[name] for name in ("batch_size", "max_length", "template")}


def _prefixed(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {prefix + key: value for key, value in values.items()}


def _defaults(command: str) -> dict[str, Any]:
    """The class defaults of every setting the command generates options for."""
    found: dict[str, Any] = {}
    for cls, prefix, only in COMMANDS[command][1]:
        values = _prefixed(leaves(cls()), prefix)
        found.update({k: v for k, v in values.items() if only is None or k in only})
    return found


def _run(command: str, seen: dict[str, Any], *extra: str) -> dict[str, Any]:
    seen.clear()
    args, _ = COMMANDS[command]
    result = CliRunner().invoke(cli, [command, *args, "--model", "tiny-llama", "-q", *extra])
    assert "step" in seen, result.output  # the stand-in stopped it, not an option
    return _handed(command, seen)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_options_not_given_read_back_as_the_class_defaults(command, captured):
    assert _run(command, captured) == _defaults(command)


#: A valid value other than the default, as typed, for settings the general rule cannot make.
OTHER = {
    "lr_scheduler": "cosine",
    "kind": "rademacher",
    "target_modules": "q_proj,v_proj",
    "weight_decay": "0.01",
}


def _other(row: dict[str, Any]) -> list[str]:
    """The option and a value that changes the setting of ``row`` from its default."""
    name, leaf, default = option_name(row["key"]), row["key"].rpartition(".")[2], row["default"]
    if row["hint"] is bool:
        return [name if not default else f"--no-{name[2:]}"]
    if leaf in OTHER:
        value = OTHER[leaf]
    elif row["choices"]:
        value = next(choice for choice in row["choices"] if choice != default)
    elif default is None:
        value = "5"
    elif isinstance(default, int):
        value = str(default + 1)
    else:
        value = repr(default / 2)
    return [name, value]


def _settings(command: str) -> list[dict[str, Any]]:
    rows = []
    for cls, prefix, only in COMMANDS[command][1]:
        for row in describe_params(cls):
            if only is None or row["name"] in only:
                rows.append({**row, "key": prefix + row["name"]})
    return rows


CASES = [(command, row["key"]) for command in sorted(COMMANDS) for row in _settings(command)]


@pytest.mark.parametrize(("command", "key"), CASES, ids=[f"{c}:{k}" for c, k in CASES])
def test_each_option_changes_its_setting_and_no_other(command, key, captured):
    # Before: retrain's --finetune-lora-r, --finetune-lora-alpha and --finetune-lora-dropout
    # were dropped (only the last setting of a group two levels down was kept).
    (row,) = [row for row in _settings(command) if row["key"] == key]
    handed = _run(command, captured, *_other(row))
    defaults = _defaults(command)
    changed = {k for k in defaults if handed[k] != defaults[k]}
    assert changed == {key}, (_other(row), {k: handed[k] for k in changed})


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_setting_has_the_option_the_rule_names_and_no_option_is_defined_twice(command):
    options = [p for p in cli.commands[command].params if isinstance(p, click.Option)]
    names = [name for option in options for name in option.opts + option.secondary_opts]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    dests = [option.name for option in options]
    assert len(dests) == len(set(dests)), sorted(d for d in dests if dests.count(d) > 1)
    for row in _settings(command):
        assert option_name(row["key"]) in names, row["key"]


def test_the_renamed_options_are_the_rule_s_names():
    assert option_name("projection.dim") == "--projection-dim"
    assert option_name("lora.target_modules") == "--lora-target-modules"
    assert option_name("finetune.learning_rate") == "--finetune-learning-rate"
    assert option_name("finetune.lora.r") == "--finetune-lora-r"
    retrain = {n for p in cli.commands["retrain"].params for n in getattr(p, "opts", [])}
    assert {"--finetune-seed", "--finetune-epochs", "--seed", "--vary-seed"} <= retrain
    assert not retrain & {"--train-seed", "--lr", "--epochs", "--max-steps"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["featurize", "--max-length", "abc"], "error: option --max-length: cannot read 'abc'"),
        (
            ["warmup", "--out", "OUT", "--fraction", "2"],
            "error: selectkit warmup: warmup: fraction",
        ),
        (
            ["retrain", "--target", "POOL", "--out", "OUT", "--finetune-lora-dropout", "2"],
            "error: selectkit retrain finetune.lora: LoRA dropout must be in [0, 1)",
        ),
    ],
)
def test_a_bad_option_value_is_one_error_naming_the_option_or_command(tmp_path, args, message):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": "a", "prompt": "p", "response": "r"}\n')
    names = {"POOL": str(pool), "OUT": str(tmp_path / "out")}
    args = [names.get(a, a) for a in args]
    result = CliRunner().invoke(cli, [args[0], str(pool), *args[1:]])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), result.output
    assert not (tmp_path / "out").exists()
