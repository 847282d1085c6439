"""Command-line options shared by the commands that read records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from selectkit.seeds import SEED_MAX

_RECORD_OPTIONS = [
    click.option("--format", "format_", help="File format (default: from the file name)."),
    click.option("--shape", help="Record shape: alpaca, chat, prompt_completion, text."),
    click.option("--text-field", help="Field holding the text of raw-text records."),
    click.option("--id-field", default="id", show_default=True, help="Field with record ids."),
    click.option(
        "--field",
        "field_map",
        multiple=True,
        metavar="ROLE=FIELD",
        help="Read a shape's field from another (dotted) field, e.g. output=answer.",
    ),
    click.option("--skip-bad", is_flag=True, help="Skip malformed records and report them."),
    click.option(
        "--convert-values",
        is_flag=True,
        help="Read numbers and booleans in text fields (prompt, response, messages) as text.",
    ),
]

_TOKEN_OPTIONS = [
    click.option("--tokenizer", help="Count costs in tokens of this tokenizer (path or name)."),
    click.option("--max-length", type=int, help="Truncate tokenized records to this length."),
    click.option("--trust-remote-code", is_flag=True, help="Allow a tokenizer's own code to run."),
]


_MODEL_OPTIONS = [
    click.option(
        "--model",
        default="smollm2",
        show_default=True,
        help="Model folder, hub name, or built-in name (smollm2, tiny-llama).",
    ),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, mps."),
    click.option(
        "--model-dtype",
        type=click.Choice(["float32", "bfloat16", "float16"]),
        default="float32",
        show_default=True,
    ),
    click.option("--trust-remote-code", is_flag=True, help="Allow the model's own code to run."),
]

_LORA_OPTIONS = [
    click.option("--lora-r", default=8, show_default=True, type=int, help="Rank of a new LoRA."),
    click.option("--lora-alpha", default=32.0, show_default=True, type=float),
    click.option(
        "--lora-targets",
        default="q_proj,k_proj,v_proj,o_proj",
        show_default=True,
        help="Module names for a new LoRA, or all-linear.",
    ),
]


#: A seed option's type: the range every random stream accepts (selectkit.seeds).
SEED = click.IntRange(0, SEED_MAX)
#: Counts that must be at least one (batch sizes, epochs, models, dimensions).
POSITIVE = click.IntRange(min=1)


def cache_dir_option(func: Any) -> Any:
    """``--cache-dir``: the feature store's folder, warmups beside it."""
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Feature store folder, warmups beside it (default: $SELECTKIT_CACHE_DIR, else "
        "$XDG_CACHE_HOME/selectkit/features, else ~/.cache/selectkit/features).",
    )(func)


def input_paths(
    paths: dict[str, str | None], params: dict[str, str] | None = None
) -> dict[str, str | None]:
    """The command's input files and folders by how the user named them, for
    :func:`selectkit.publish.check_paths`: ``paths`` as given, plus every ``-p key=value``
    whose value (or one of its comma-separated parts) names an existing file or folder, such
    as ``checkpoints=warmup/`` or ``runs=runs-fit/``."""
    found = dict(paths)
    for key, value in (params or {}).items():
        for part in value.split(","):
            if part.strip() and Path(part.strip()).expanduser().exists():
                found[f"-p {key}={part.strip()}"] = part.strip()
    return found


def _apply(options: list[Callable[[Any], Any]], func: Any) -> Any:
    for option in reversed(options):
        func = option(func)
    return func


def record_options(func: Any) -> Any:
    """Options that say how to read records from a file."""
    return _apply(_RECORD_OPTIONS, func)


def pool_options(func: Any) -> Any:
    """Record options plus token costing, for commands that budget in tokens."""
    return _apply(_RECORD_OPTIONS + _TOKEN_OPTIONS, func)


def model_options(func: Any) -> Any:
    """Options that say which model to load, and where."""
    return _apply(_MODEL_OPTIONS, func)


def lora_options(func: Any) -> Any:
    """Options that shape a new LoRA adapter."""
    return _apply(_LORA_OPTIONS, func)


def lora_spec(kw: dict[str, Any]) -> Any:
    """The :class:`~selectkit.models.lora.LoraSpec` the parsed options describe."""
    from selectkit.models.lora import LoraSpec

    targets = kw["lora_targets"]
    return LoraSpec(
        r=kw["lora_r"],
        alpha=kw["lora_alpha"],
        target_modules=targets if targets == "all-linear" else tuple(targets.split(",")),
    )


def model_load_options(kw: dict[str, Any]) -> Any:
    """The :class:`~selectkit.models.loading.ModelOptions` the parsed options describe."""
    from selectkit.models.loading import ModelOptions

    return ModelOptions(
        device=kw["device"], dtype=kw["model_dtype"], trust_remote_code=kw["trust_remote_code"]
    )


def load_options(kw: dict[str, Any], group_by: str | None = None) -> Any:
    """The :class:`~selectkit.data.formats.LoadOptions` the parsed options describe."""
    from selectkit.data.formats import LoadOptions
    from selectkit.params import parse_assignments

    return LoadOptions(
        format=kw["format_"],
        shape=kw["shape"],
        id_field=kw["id_field"],
        group_field=group_by,
        text_field=kw["text_field"],
        field_map=parse_assignments(kw["field_map"]),
        on_error="skip" if kw["skip_bad"] else "raise",
        convert_values=kw["convert_values"],
        tokenizer=kw.get("tokenizer"),
        max_length=kw.get("max_length"),
        trust_remote_code=kw.get("trust_remote_code", False),
    )
