"""``selectkit train`` and ``selectkit evaluate``: fine-tune on a selection, then measure the
loss on the target, to see whether a selection helps more than a random one of the same size."""

from __future__ import annotations

import json
from pathlib import Path
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
from selectkit.errors import ParamError
from selectkit.provenance import jsonable
from selectkit.terminal import echo
from selectkit.train.finetune import FinetuneConfig

#: The fine-tuning settings an evaluation shares: how examples are batched, cut and rendered.
_SHAPE = ("batch_size", "max_length", "template")

_SAME_POOL = (
    "the same POOL file, record options (--shape, --field, ...) and --group-by, and "
    "--cost-tokenizer/--cost-max-length set to the --tokenizer/--max-length of `selectkit select`"
)


def read_selection_manifest(path: str | Path) -> tuple[list[int], list[float] | None, dict]:
    """The selected indices, their weights (``None`` when the selection has none) and the whole
    manifest, from a ``picked.manifest.json`` written by ``selectkit select``."""
    from selectkit.publish import clear_stale

    clear_stale(Path(path).parent)  # finish a publication its writer was killed in the middle of
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
        fingerprint = manifest["pool"]["fingerprint"]
        indices = manifest["selection"]["indices"]
        weights = manifest["selection"].get("weights")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ParamError(
            f"{path} is not a selectkit selection manifest ({type(exc).__name__}: {exc}); pass "
            "the .manifest.json written beside `selectkit select --out`"
        ) from None
    if not isinstance(fingerprint, str) or not isinstance(indices, list):
        raise ParamError(f"{path}: the pool fingerprint or the selected indices are malformed")
    return indices, weights, manifest


@click.command("train")
@click.argument("pool_path", metavar="POOL", type=click.Path(exists=True))
@click.option(
    "--selection",
    "selection_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Selection manifest (picked.manifest.json): train on its records, with its weights.",
)
@click.option("--all", "train_all", is_flag=True, help="Train on every record of POOL instead.")
@click.option(
    "--out",
    "-o",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the adapter and finetune.json.",
)
@settings_options(FinetuneConfig)
@click.option("--group-by", help="The --group-by the selection's pool was loaded with.")
@click.option("--cost-tokenizer", help="The --tokenizer the selection's pool was costed with.")
@click.option("--cost-max-length", type=int, help="The --max-length it was costed with.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@model_options
@record_options
def train_command(**kw: Any) -> None:
    """Fine-tune a LoRA adapter on a selection of POOL (or all of it) and save it in --out.

    A selection with weights trains with them (each example's loss weighted); one with group
    weights samples each group's share of the trained examples in proportion to its weight.

    POOL must load exactly as it did for `selectkit select` (same file and options, including
    --group-by and the cost tokenizer); a selection made on another pool is refused. Use
    --max-steps to give selections of the same size the same number of steps.
    """
    from selectkit.api import load_pool
    from selectkit.host import get_host
    from selectkit.publish import check_paths, check_writable
    from selectkit.train.finetune import check_pool, finetune, selected_groups

    if bool(kw["selection_path"]) == kw["train_all"]:
        raise click.UsageError("give either --selection MANIFEST or --all")
    config = settings_from(FinetuneConfig, kw)
    model = model_spec(kw)
    inputs = {"POOL": kw["pool_path"], "--selection": kw["selection_path"], "--model": model}
    check_paths(inputs=inputs, folders={"--out": kw["out_dir"]})
    check_writable(kw["out_dir"], folder=True)
    selected = read_selection_manifest(kw["selection_path"]) if kw["selection_path"] else None
    options = load_options(kw, kw["group_by"])
    pool = load_pool(kw["pool_path"], options)
    group_weights = None
    if selected is None:
        indices, weights, source = list(range(len(pool))), None, {"all": True}
    else:
        indices, weights, manifest = selected
        check_pool(pool, manifest["pool"]["fingerprint"], _SAME_POOL)
        group_weights = selected_groups(pool, indices, manifest["selection"].get("group_weights"))
        path = str(Path(kw["selection_path"]).resolve())
        source = {"manifest": path, "method": manifest.get("method")}
    loaded = get_host().load_model(model, model_load_options(kw))
    result = finetune(
        pool,
        indices,
        loaded.model,
        loaded.tokenizer,
        kw["out_dir"],
        config,
        weights=weights,
        group_weights=group_weights,
        source=source,
        progress=not kw["quiet"],
    )
    sampling = "unweighted" if weights is None else "weighted"
    if group_weights is not None:
        sampling += ", groups sampled by weight"
    echo(
        f"trained {result.steps} steps on {len(indices)} records of {len(pool)} ({sampling}), "
        f"last step loss {result.losses[-1]:.4f}"
    )
    echo(f"wrote {result.out_dir}")


@click.command("evaluate")
@click.argument("target_path", metavar="TARGET", type=click.Path(exists=True))
@click.option(
    "--adapter",
    type=click.Path(exists=True, file_okay=False),
    help="LoRA adapter folder (e.g. a `selectkit train` output) to put on --model.",
)
@settings_options(FinetuneConfig, only=_SHAPE)
@click.option("--group-by", help="Field naming each target record's group: print group means.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    help="Write each example's index, id, group and loss as JSONL.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@model_options
@record_options
def evaluate_command(**kw: Any) -> None:
    """Print the mean loss of --model (with --adapter) on TARGET's responses.

    An example's loss is its mean cross-entropy over its response tokens; the target loss is
    the mean over examples.
    """
    from selectkit.publish import Publication, check_paths

    inputs = {"TARGET": kw["target_path"], "--adapter": kw["adapter"], "--model": model_spec(kw)}
    check_paths(inputs=inputs, files={"--out": kw["out_path"]})
    outputs = Publication()
    losses_file = outputs.file(kw["out_path"]) if kw["out_path"] else None
    with outputs:
        _evaluate(kw, losses_file)


def _evaluate(kw: dict[str, Any], losses_file: Path | None) -> None:
    """The work of `selectkit evaluate`; its --out file (``losses_file``, a temporary until
    published) is written at the end."""
    from selectkit.api import load_pool
    from selectkit.host import get_host
    from selectkit.models.lora import load_adapter
    from selectkit.train.evaluate import target_loss

    target = load_pool(kw["target_path"], load_options(kw, kw["group_by"]))
    loaded = get_host().load_model(model_spec(kw), model_load_options(kw))
    shape = settings_from(FinetuneConfig, kw, only=_SHAPE)
    model = loaded.model
    if kw["adapter"]:
        model = load_adapter(model, kw["adapter"])
    result = target_loss(
        model,
        loaded.tokenizer,
        target,
        batch_size=shape.batch_size,
        max_length=shape.max_length,
        template=shape.template,
        progress=not kw["quiet"],
    )
    echo(f"mean target loss {result.mean:.4f} over {len(result)} examples")
    groups = target.groups
    if kw["group_by"]:
        for group in sorted({g for g in groups if g is not None}):
            mine = result.losses[[g == group for g in groups]]
            echo(f"  {group}: {mine.mean():.4f} ({len(mine)} examples)")
    if losses_file is not None:
        with open(losses_file, "w", encoding="utf-8") as handle:
            for index, (record_id, group, loss) in enumerate(
                zip(result.ids, groups, result.losses.tolist(), strict=True)
            ):
                row = {"index": index, "id": record_id, "group": group, "loss": jsonable(loss)}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        echo(f"wrote {kw['out_path']}")
