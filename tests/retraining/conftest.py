"""A tiny retraining set-up shared by the harness, LDS and CLI tests: a generated pool of 40
records (5 task families), 6 held-out targets, the tiny random Llama, and a few-step config."""

from __future__ import annotations

import pytest

from selectkit.api import load_records_from_list
from selectkit.data.synthetic import make_records
from selectkit.models.tiny import tiny_model
from selectkit.retraining import RetrainConfig, retrain
from selectkit.retraining.runs import model_files
from selectkit.train.finetune import FinetuneConfig

FAMILIES = ["reverse", "acronym", "units", "uppercase", "sorting"]

FINETUNE = FinetuneConfig(
    max_steps=4, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, max_length=64, seed=0
)
CONFIG = RetrainConfig(models=6, fraction=0.5, seed=0, finetune=FINETUNE)


@pytest.fixture(scope="session")
def retrain_rows():
    pool_rows = make_records(8, seed=0, families=FAMILIES)
    target_rows = make_records(
        3, seed=1, families=["reverse", "units"], id_prefix="target", avoid=pool_rows
    )
    return pool_rows, target_rows


@pytest.fixture(scope="session")
def retrain_data(retrain_rows):
    pool_rows, target_rows = retrain_rows
    pool = load_records_from_list(pool_rows, group_field="family")
    target = load_records_from_list(target_rows, group_field="family")
    return pool, target


@pytest.fixture(scope="session")
def tiny_lm():
    return tiny_model("tiny-llama")


@pytest.fixture(scope="session")
def base(retrain_data, tiny_lm, tmp_path_factory):
    """One complete run of CONFIG, which other runs must reproduce byte for byte."""
    pool, target = retrain_data
    model, tokenizer = tiny_lm
    out = tmp_path_factory.mktemp("retrain") / "run"
    return retrain(pool, target, model, tokenizer, out, CONFIG, progress=False)


def outcome_bytes(folder, models):
    """The bytes of each model's outcome file."""
    return [model_files(folder, m)[0].read_bytes() for m in range(models)]
