"""``selectkit retrain`` and ``selectkit lds``: train models on random subsets of a pool, then
score attribution methods by how well they predict those models' target losses."""

from __future__ import annotations

import json
from typing import Any

import click

from selectkit.commands.options import (
    SEED,
    cache_dir_option,
    executor_from,
    executor_options,
    input_paths,
    load_options,
    model_load_options,
    model_options,
    model_spec,
    record_options,
    settings_from,
    settings_options,
)
from selectkit.errors import ParamError
from selectkit.provenance import jsonable
from selectkit.retraining.harness import RetrainConfig
from selectkit.terminal import echo


@click.command("retrain")
@click.argument("pool_path", metavar="POOL", type=click.Path(exists=True))
@click.option(
    "--target",
    "target_path",
    required=True,
    type=click.Path(exists=True),
    help="Target examples whose loss every model records.",
)
@click.option(
    "--out",
    "-o",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Run folder: retrain.json, masks.npy, models/.",
)
@settings_options(RetrainConfig)
@click.option(
    "--shard",
    default="0/1",
    show_default=True,
    help="Train models m with m % n == i of i/n; run one process per shard.",
)
@executor_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@model_options
@record_options
def retrain_command(**kw: Any) -> None:
    """Train --models LoRA models on random subsets of POOL and record each one's loss on every
    --target example, in --out.

    Model m trains on round(fraction * n) records drawn from the seed and m alone, so shards
    (--shard i/n, one process each), reruns and a killed run resumed all give the same files.
    Finished models are skipped; a model whose loss becomes NaN or infinite is recorded as
    diverged. With --executor processes or ray, each model is a unit of work on its own
    worker. Score methods on the run with `selectkit lds`.
    """
    from selectkit.api import load_pool, running
    from selectkit.features.featurize import parse_shard
    from selectkit.host import get_host
    from selectkit.publish import check_paths, check_writable
    from selectkit.retraining import retrain
    from selectkit.retraining.units import retrain_on

    model = model_spec(kw)
    inputs = {"POOL": kw["pool_path"], "--target": kw["target_path"], "--model": model}
    check_paths(inputs=inputs, folders={"--out": kw["out_dir"]})
    shard = parse_shard(kw["shard"])
    config = settings_from(RetrainConfig, kw)
    executor = executor_from(kw)
    if shard != (0, 1) and executor.executor != "inprocess":
        raise ParamError("give --shard or --executor, not both: the executor shares out the models")
    check_writable(kw["out_dir"], folder=True)
    pool = load_pool(kw["pool_path"], load_options(kw))
    target = load_pool(kw["target_path"], load_options(kw))
    options = model_load_options(kw)
    host = get_host()
    with running(executor, host, options.device) as runner:
        if runner is not None:
            runs = retrain_on(
                runner,
                pool,
                target,
                model,
                options,
                kw["out_dir"],
                config,
                progress=not kw["quiet"],
            )
            echo(runs.summary())
            return
    loaded = host.load_model(model, options)
    runs = retrain(
        pool,
        target,
        loaded.model,
        loaded.tokenizer,
        kw["out_dir"],
        config,
        shard=shard,
        progress=not kw["quiet"],
    )
    echo(runs.summary())


def route_params(methods: list[str], pairs: dict[str, str], host: Any) -> dict[str, dict]:
    """Each method's parameters from ``-p`` pairs: ``NAME.key=value`` goes to method NAME only
    (when NAME is one of ``methods``); any other ``key=value`` (``lora.r=16`` included) to
    every method that has a parameter ``key`` (at least one must)."""
    from selectkit.params import describe_params

    keys = {
        name: {row["name"] for row in describe_params(host.method(name).Params)} for name in methods
    }
    routed: dict[str, dict] = {name: {} for name in methods}
    for key, value in pairs.items():
        scope, dot, name = key.partition(".")
        if dot and scope in routed:
            routed[scope][name] = value
            continue
        takers = [method for method in methods if key in keys[method]]
        if not takers and dot and scope in host.methods:
            raise ParamError(
                f"-p {key}: '{scope}' is not one of the --method names ({', '.join(methods)})"
            )
        if not takers:
            raise ParamError(
                f"-p {key}: none of the methods ({', '.join(methods)}) has a parameter '{key}'; "
                "see `selectkit methods NAME`"
            )
        for method in takers:
            routed[method][key] = value
    return routed


@click.command("lds")
@click.argument("runs_dir", metavar="RUNS_DIR", type=click.Path(exists=True, file_okay=False))
@click.argument("pool_path", metavar="POOL", type=click.Path(exists=True))
@click.option(
    "--target",
    "target_path",
    required=True,
    type=click.Path(exists=True),
    help="The target file the run was trained with.",
)
@click.option(
    "--method",
    "-m",
    "methods",
    multiple=True,
    required=True,
    help="Attribution method to score; repeat for several.",
)
@click.option(
    "--param",
    "-p",
    multiple=True,
    metavar="[METHOD.]KEY=VALUE",
    help="Method parameter: for every method that has KEY, or for METHOD only.",
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of every method.")
@click.option("--group-by", help="Field naming each pool record's group, for methods using it.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    help="Write every result (per-target values included) as JSON.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@cache_dir_option
@record_options
def lds_command(**kw: Any) -> None:
    """Score attribution methods by their linear datamodeling score on the models of RUNS_DIR
    (a `selectkit retrain` run on POOL and --target).

    LDS (Park et al. 2023): for each target, the Spearman correlation over models between the
    method's predicted outcome (the sum of its attributions over the model's subset) and the
    measured one (minus the loss); the mean over targets ± its standard error, and the LDS of
    the mean target loss. A method fitted on RUNS_DIR itself is refused: score it on another run.
    """
    from selectkit.host import get_host
    from selectkit.params import parse_assignments
    from selectkit.publish import Publication, check_paths

    host = get_host()
    methods = list(dict.fromkeys(kw["methods"]))
    pairs = parse_assignments(kw["param"])
    routed = route_params(methods, pairs, host)
    given = {"RUNS_DIR": kw["runs_dir"], "POOL": kw["pool_path"], "--target": kw["target_path"]}
    check_paths(inputs=input_paths(given, pairs), files={"--json": kw["json_path"]})
    outputs = Publication()
    json_file = outputs.file(kw["json_path"]) if kw["json_path"] else None
    with outputs:
        _lds(kw, methods, routed, host, json_file)


def _lds(
    kw: dict[str, Any], methods: list[str], routed: dict[str, dict], host: Any, json_file: Any
) -> None:
    """The work of `selectkit lds`; its --json file (``json_file``, a temporary until
    published) is written at the end."""
    from selectkit.api import evaluate_lds, load_pool
    from selectkit.retraining import load_runs

    runs = load_runs(kw["runs_dir"])
    pool = load_pool(kw["pool_path"], load_options(kw, kw["group_by"]), host=host)
    target = load_pool(kw["target_path"], load_options(kw), host=host)
    runs.check_matches(pool, target)
    results = []
    for name in methods:
        results.append(
            evaluate_lds(
                name,
                pool,
                target,
                runs,
                params=routed[name],
                seed=kw["seed"],
                progress=not kw["quiet"],
                cache_dir=kw["cache_dir"],
                host=host,
            )
        )
    first = results[0]
    echo(
        f"{first.models} models ({first.diverged} diverged, {first.missing} not trained left "
        f"out), {first.targets} of {len(first.target_ids)} targets"
    )
    if first.constant_targets:
        shown = ", ".join(first.constant_targets[:5])
        echo(f"left out, loss constant across models: {shown}")
    width = max(len("method"), *(len(name) for name in methods))
    echo(
        f"{'method':<{width}}  {'LDS ± s.e.':>17}  {'mean-loss LDS':>13}  {'models':>6}  "
        f"{'seconds':>8}"
    )
    for result in results:
        score = f"{result.mean:.3f} ± {_number(result.stderr)}"
        echo(
            f"{result.method:<{width}}  {score:>17}  {result.mean_loss:>13.3f}  "
            f"{result.models:>6}  {result.seconds:>8.1f}"
        )
    if json_file is not None:
        payload = {"runs": str(runs.path), "results": [r.to_dict() for r in results]}
        with open(json_file, "w", encoding="utf-8") as handle:
            json.dump(jsonable(payload), handle, indent=2, ensure_ascii=False, allow_nan=False)
            handle.write("\n")
        echo(f"wrote {kw['json_path']}")


def _number(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"
