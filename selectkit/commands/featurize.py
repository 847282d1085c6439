"""``selectkit featurize``: extract a pool's gradient features into the store."""

from __future__ import annotations

from typing import Any

import click

from selectkit.commands.options import (
    SEED,
    cache_dir_option,
    load_options,
    lora_options,
    lora_spec,
    model_load_options,
    model_options,
    record_options,
)


@click.command("featurize")
@click.argument("pool_path", metavar="POOL", type=click.Path(exists=True))
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
@click.option(
    "--projector-seed", default=0, show_default=True, type=SEED, help="Seed of the projection."
)
@click.option(
    "--adapter-seed",
    default=0,
    show_default=True,
    type=SEED,
    help="Seed of the fresh LoRA's initial weights (without --checkpoint).",
)
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
@click.option(
    "--params",
    "param_names",
    help="Comma-separated parameter names to take gradients over instead of a LoRA adapter.",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Store examples with no response token or a NaN gradient as skipped rows.",
)
@cache_dir_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@model_options
@lora_options
@record_options
def featurize_command(**kw: Any) -> None:
    """Extract per-example gradient features of POOL into the feature store.

    One store entry per checkpoint; rerunning reuses finished entries and resumes unfinished
    ones. Prints each entry's id for `selectkit cache info`.
    """
    from selectkit.cachedirs import default_root
    from selectkit.data.load import load_pool
    from selectkit.features.featurize import FeaturizeConfig, featurize, parse_shard
    from selectkit.host import get_host
    from selectkit.publish import check_paths
    from selectkit.store import FeatureStore

    inputs = {"POOL": kw["pool_path"], "--model": kw["model"]}
    inputs.update({f"--checkpoint {c}": c for c in kw["checkpoints"]})
    check_paths(inputs=inputs, folders={"--cache-dir": kw["cache_dir"] or default_root()})
    shard = parse_shard(kw["shard"])
    config = FeaturizeConfig(
        gradient=kw["gradient"],
        projector=kw["projector"],
        dim=kw["dim"],
        projector_seed=kw["projector_seed"],
        adapter_seed=kw["adapter_seed"],
        dtype=kw["store_dtype"],
        batch_size=kw["batch_size"],
        template=kw["template"],
        max_length=kw["max_length"],
        on_invalid="skip" if kw["skip_invalid"] else "error",
    )
    host = get_host()
    pool = load_pool(kw["pool_path"], load_options(kw), host=host)
    names = kw["param_names"].split(",") if kw["param_names"] else None
    entries = featurize(
        pool,
        kw["model"],
        checkpoints=list(kw["checkpoints"]),
        lora=lora_spec(kw),
        param_names=names,
        config=config,
        store=FeatureStore(kw["cache_dir"]),
        shard=shard,
        model_options=model_load_options(kw),
        progress=not kw["quiet"],
        host=host,
    )
    for entry in entries:
        info = entry.info()
        state = "complete" if info["complete"] else "partial (other shards pending)"
        click.echo(f"{entry.id}  {info['rows']['done']} rows done of {entry.num_rows}, {state}")
