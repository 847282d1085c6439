"""``selectkit featurize``: extract a pool's gradient features into the store."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, get_args

import click

from selectkit.commands.options import (
    cache_dir_option,
    executor_from,
    executor_options,
    load_options,
    model_load_options,
    model_options,
    model_spec,
    record_options,
    settings_from,
    settings_options,
)
from selectkit.features.featurize import FeaturizeConfig
from selectkit.models.lora import LoraSpec


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
    "--shard",
    default="0/1",
    show_default=True,
    metavar="I/N",
    help="Extract only slice I of N (0-based); run N of these, anywhere, in any order.",
)
@click.option(
    "--params",
    "param_names",
    help="Comma-separated parameter names to take gradients over instead of a LoRA adapter.",
)
@click.option(
    "--gradient",
    "gradients",
    default="sgd",
    show_default=True,
    metavar="TYPE[,TYPE...]",
    help="Gradient types: sgd, adam (needs optimizer state), sign; several (adam,sgd) are "
    "stored from one forward-backward per block.",
)
@settings_options(FeaturizeConfig, exclude=("gradient",))
@settings_options(LoraSpec, prefix="lora.")
@cache_dir_option
@executor_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@model_options
@record_options
def featurize_command(**kw: Any) -> None:
    """Extract per-example gradient features of POOL into the feature store.

    One store entry per checkpoint and gradient type; rerunning reuses finished entries and
    resumes unfinished ones. Prints each entry's id for `selectkit cache info`. With
    --executor processes or ray, each worker fills one shard of every entry.
    """
    from selectkit.api import featurize_views
    from selectkit.cachedirs import default_root
    from selectkit.compute.gradient_types import GradientKind
    from selectkit.data.load import load_pool
    from selectkit.errors import ParamError
    from selectkit.features.featurize import View, parse_shard
    from selectkit.host import get_host
    from selectkit.publish import check_paths
    from selectkit.store import FeatureStore

    inputs = {"POOL": kw["pool_path"], "--model": model_spec(kw)}
    inputs.update({f"--checkpoint {c}": c for c in kw["checkpoints"]})
    check_paths(inputs=inputs, folders={"--cache-dir": kw["cache_dir"] or default_root()})
    shard = parse_shard(kw["shard"])
    kinds = list(dict.fromkeys(part.strip() for part in kw["gradients"].split(",")))
    known = get_args(GradientKind)
    if not kinds or any(kind not in known for kind in kinds):
        raise ParamError(
            f"--gradient {kw['gradients']}: give one or more of {', '.join(known)}, comma-separated"
        )
    config = replace(settings_from(FeaturizeConfig, kw, exclude=("gradient",)), gradient=kinds[0])
    views = [View(kind, config.projection) for kind in kinds]
    executor = executor_from(kw)
    spread = executor.executor != "inprocess"
    if shard != (0, 1) and spread:
        raise ParamError("give --shard or --executor, not both: the executor shares out the shards")
    host = get_host()
    pool = load_pool(kw["pool_path"], load_options(kw), host=host)
    names = kw["param_names"].split(",") if kw["param_names"] else None
    found = featurize_views(
        pool,
        model_spec(kw),
        checkpoints=list(kw["checkpoints"]),
        lora=settings_from(LoraSpec, kw, prefix="lora."),
        param_names=names,
        config=config,
        views=views,
        store=FeatureStore(kw["cache_dir"]),
        model_options=model_load_options(kw),
        progress=not kw["quiet"],
        host=host,
        executor=executor,
        **({} if spread else {"shard": shard}),
    )
    for view, entries in found.items():
        for entry in entries:
            info = entry.info()
            state = "complete" if info["complete"] else "partial (other shards pending)"
            done = info["rows"]["done"]
            click.echo(
                f"{entry.id}  {view.gradient}  {done} rows done of {entry.num_rows}, {state}"
            )
