"""``selectkit warmup``: LESS's first step, a short LoRA training run that saves checkpoints."""

from __future__ import annotations

from typing import Any

import click

from selectkit.commands.options import (
    POSITIVE,
    SEED,
    load_options,
    lora_options,
    lora_spec,
    model_load_options,
    model_options,
    record_options,
)
from selectkit.terminal import echo


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
@click.option(
    "--fraction",
    default=0.05,
    show_default=True,
    type=float,
    help="Seeded random share of the pool to train on.",
)
@click.option("--epochs", default=4, show_default=True, type=POSITIVE, help="One checkpoint each.")
@click.option("--lr", "learning_rate", default=2e-5, show_default=True, type=float)
@click.option("--batch-size", default=8, show_default=True, type=POSITIVE)
@click.option("--max-length", default=512, show_default=True, type=POSITIVE)
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@model_options
@lora_options
@record_options
def warmup_command(**kw: Any) -> None:
    """Train a LoRA adapter on a random fraction of POOL, saving a checkpoint per epoch.

    The checkpoints (HF Trainer format, optimizer state included) feed
    `selectkit featurize --checkpoint DIR --gradient adam`.
    """
    from selectkit.api import load_pool
    from selectkit.host import get_host
    from selectkit.publish import check_paths, check_writable
    from selectkit.train.warmup import WarmupConfig, warmup

    inputs = {"POOL": kw["pool_path"], "--model": kw["model"]}
    check_paths(inputs=inputs, folders={"--out": kw["out_dir"]})
    config = WarmupConfig(
        fraction=kw["fraction"],
        epochs=kw["epochs"],
        learning_rate=kw["learning_rate"],
        batch_size=kw["batch_size"],
        max_length=kw["max_length"],
        lora=lora_spec(kw),
        seed=kw["seed"],
    )
    check_writable(kw["out_dir"], folder=True)
    pool = load_pool(kw["pool_path"], load_options(kw))
    loaded = get_host().load_model(kw["model"], model_load_options(kw))
    checkpoints = warmup(
        pool, loaded.model, loaded.tokenizer, kw["out_dir"], config, progress=not kw["quiet"]
    )
    for checkpoint in checkpoints:
        echo(
            f"{checkpoint.path}  epoch {checkpoint.epoch:g}, step {checkpoint.step}, "
            f"mean learning rate {checkpoint.learning_rate:.3g}"
        )
