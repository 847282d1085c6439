"""``selectkit warmup``: LESS's first step, a short LoRA training run that saves checkpoints."""

from __future__ import annotations

from typing import Any

import click

from selectkit.commands.options import load_options, record_options


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
    "--model",
    default="smollm2",
    show_default=True,
    help="Model path, hub name, or built-in name (smollm2, tiny-llama).",
)
@click.option(
    "--fraction",
    default=0.05,
    show_default=True,
    type=float,
    help="Seeded random share of the pool to train on.",
)
@click.option("--epochs", default=4, show_default=True, type=int, help="One checkpoint each.")
@click.option("--lr", "learning_rate", default=2e-5, show_default=True, type=float)
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--max-length", default=512, show_default=True, type=int)
@click.option("--lora-r", default=8, show_default=True, type=int)
@click.option("--lora-alpha", default=32.0, show_default=True, type=float)
@click.option(
    "--lora-targets",
    default="q_proj,k_proj,v_proj,o_proj",
    show_default=True,
    help="Module names to adapt, or all-linear.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N, mps.")
@click.option(
    "--model-dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
)
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own code to run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@record_options
def warmup_command(**kw: Any) -> None:
    """Train a LoRA adapter on a random fraction of POOL, saving a checkpoint per epoch.

    The checkpoints (HF Trainer format, optimizer state included) feed
    `selectkit featurize --checkpoint DIR --gradient adam`.
    """
    from selectkit.data.load import load_pool
    from selectkit.models.loading import ModelOptions, load_model
    from selectkit.models.lora import LoraSpec
    from selectkit.train.warmup import WarmupConfig, warmup

    targets = kw["lora_targets"]
    config = WarmupConfig(
        fraction=kw["fraction"],
        epochs=kw["epochs"],
        learning_rate=kw["learning_rate"],
        batch_size=kw["batch_size"],
        max_length=kw["max_length"],
        lora=LoraSpec(
            r=kw["lora_r"],
            alpha=kw["lora_alpha"],
            target_modules=targets if targets == "all-linear" else tuple(targets.split(",")),
        ),
        seed=kw["seed"],
    )
    pool = load_pool(kw["pool_path"], load_options(kw))
    options = ModelOptions(
        device=kw["device"], dtype=kw["model_dtype"], trust_remote_code=kw["trust_remote_code"]
    )
    loaded = load_model(kw["model"], options)
    checkpoints = warmup(
        pool, loaded.model, loaded.tokenizer, kw["out_dir"], config, progress=not kw["quiet"]
    )
    for checkpoint in checkpoints:
        click.echo(
            f"{checkpoint.path}  epoch {checkpoint.epoch:g}, step {checkpoint.step}, "
            f"mean learning rate {checkpoint.learning_rate:.3g}"
        )
