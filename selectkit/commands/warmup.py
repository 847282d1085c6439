"""``selectkit warmup``: LESS's first step, a short LoRA training run that saves checkpoints."""

from __future__ import annotations

from typing import Any

import click

from selectkit.commands.options import (
    load_options,
    model_load_options,
    model_options,
    model_spec,
    record_options,
    settings_from,
    settings_options,
)
from selectkit.features.params import ModelParams
from selectkit.models.lora import LoraSpec
from selectkit.terminal import echo
from selectkit.train.warmup import WarmupConfig


@click.command("warmup")
@click.argument("pool_path", metavar="POOL", type=click.Path(exists=True))
@click.option(
    "--out",
    "-o",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the checkpoint-* folders and warmup.json.",
)
@settings_options(WarmupConfig)
@settings_options(LoraSpec, prefix="lora.")
@settings_options(ModelParams, only=("max_length",))
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@model_options
@record_options
def warmup_command(**kw: Any) -> None:
    """Train a LoRA adapter on a random fraction of POOL, saving a checkpoint per epoch.

    The checkpoints (HF Trainer format, optimizer state included) feed
    `selectkit featurize --checkpoint DIR --gradient adam`.
    """
    from selectkit.api import load_pool
    from selectkit.host import get_host
    from selectkit.publish import check_paths, check_writable
    from selectkit.train.warmup import warmup

    model = model_spec(kw)
    check_paths(
        inputs={"POOL": kw["pool_path"], "--model": model}, folders={"--out": kw["out_dir"]}
    )
    config = settings_from(WarmupConfig, kw)
    lora = settings_from(LoraSpec, kw, prefix="lora.")
    max_length = settings_from(ModelParams, kw, only=("max_length",)).max_length
    check_writable(kw["out_dir"], folder=True)
    pool = load_pool(kw["pool_path"], load_options(kw))
    loaded = get_host().load_model(model, model_load_options(kw))
    checkpoints = warmup(
        pool,
        loaded.model,
        loaded.tokenizer,
        kw["out_dir"],
        config,
        lora=lora,
        max_length=max_length,
        progress=not kw["quiet"],
    )
    for checkpoint in checkpoints:
        echo(
            f"{checkpoint.path}  epoch {checkpoint.epoch:g}, step {checkpoint.step}, "
            f"mean learning rate {checkpoint.learning_rate:.3g}"
        )
