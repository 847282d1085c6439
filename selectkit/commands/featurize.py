"""``selectkit featurize``: extract a pool's gradient features into the store."""

from __future__ import annotations

from typing import Any

import click

from selectkit.commands.options import load_options, record_options


@click.command("featurize")
@click.argument("pool_path", metavar="POOL", type=click.Path(exists=True))
@click.option(
    "--model",
    default="smollm2",
    show_default=True,
    help="Model path, hub name, or built-in name (smollm2, tiny-llama).",
)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(exists=True),
    help="Adapter checkpoint or warmup run folder (repeatable); default: a fresh LoRA.",
)
@click.option(
    "--gradient",
    type=click.Choice(["sgd", "adam", "sign"]),
    default="sgd",
    show_default=True,
    help="Raw, Adam-preconditioned (needs --checkpoint), or sign.",
)
@click.option("--projector", default="sjlt", show_default=True, help="Random projector name.")
@click.option("--dim", default=8192, show_default=True, type=int, help="Projected dimension.")
@click.option("--seed", default=0, show_default=True, type=int, help="Projection and LoRA seed.")
@click.option(
    "--shard",
    default="0/1",
    show_default=True,
    metavar="I/N",
    help="Extract only slice I of N (0-based); run N of these, anywhere, in any order.",
)
@click.option(
    "--store-dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Dtype of the stored rows.",
)
@click.option("--batch-size", default=16, show_default=True, type=int)
@click.option(
    "--max-length",
    default=512,
    show_default=True,
    type=int,
    help="Truncate examples to this many tokens (prompt first).",
)
@click.option(
    "--template", type=click.Choice(["auto", "chat", "plain"]), default="auto", show_default=True
)
@click.option("--lora-r", default=8, show_default=True, type=int, help="Rank of a fresh LoRA.")
@click.option("--lora-alpha", default=32.0, show_default=True, type=float)
@click.option(
    "--lora-targets",
    default="q_proj,k_proj,v_proj,o_proj",
    show_default=True,
    help="Module names for a fresh LoRA, or all-linear.",
)
@click.option(
    "--params",
    "param_names",
    help="Comma-separated parameter names to take gradients over instead of a LoRA adapter.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N, mps.")
@click.option(
    "--model-dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Store examples with no response token or a NaN gradient as skipped rows.",
)
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Feature store folder.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own code to run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@record_options
def featurize_command(**kw: Any) -> None:
    """Extract per-example gradient features of POOL into the feature store.

    One store entry per checkpoint; rerunning reuses finished entries and resumes unfinished
    ones. Prints each entry's id for `selectkit cache info`.
    """
    from selectkit.data.load import load_pool
    from selectkit.features.featurize import FeaturizeConfig, featurize, parse_shard
    from selectkit.features.store import FeatureStore
    from selectkit.models.loading import ModelOptions
    from selectkit.models.lora import LoraSpec

    shard = parse_shard(kw["shard"])
    targets = kw["lora_targets"]
    lora = LoraSpec(
        r=kw["lora_r"],
        alpha=kw["lora_alpha"],
        target_modules=targets if targets == "all-linear" else tuple(targets.split(",")),
    )
    config = FeaturizeConfig(
        gradient=kw["gradient"],
        projector=kw["projector"],
        dim=kw["dim"],
        seed=kw["seed"],
        dtype=kw["store_dtype"],
        batch_size=kw["batch_size"],
        template=kw["template"],
        max_length=kw["max_length"],
        on_invalid="skip" if kw["skip_invalid"] else "error",
    )
    options = ModelOptions(
        device=kw["device"], dtype=kw["model_dtype"], trust_remote_code=kw["trust_remote_code"]
    )
    pool = load_pool(kw["pool_path"], load_options(kw))
    names = kw["param_names"].split(",") if kw["param_names"] else None
    entries = featurize(
        pool,
        kw["model"],
        checkpoints=list(kw["checkpoints"]),
        lora=lora,
        param_names=names,
        config=config,
        store=FeatureStore(kw["cache_dir"]),
        shard=shard,
        model_options=options,
        progress=not kw["quiet"],
    )
    for entry in entries:
        info = entry.info()
        state = "complete" if info["complete"] else "partial (other shards pending)"
        click.echo(f"{entry.id}  {info['rows']['done']} rows done of {entry.num_rows}, {state}")
