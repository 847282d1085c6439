"""Command-line options shared by the commands that read records."""

from __future__ import annotations

from collections.abc import Callable, Collection
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
    click.option(
        "--tokenizer",
        "cost_tokenizer",
        help="Count costs in tokens of this tokenizer (path or name).",
    ),
    click.option(
        "--max-length",
        "cost_max_length",
        type=int,
        help="Truncate tokenized records to this length.",
    ),
    click.option("--trust-remote-code", is_flag=True, help="Allow a tokenizer's own code to run."),
]


_TRUST_REMOTE_CODE = click.option(
    "--trust-remote-code", is_flag=True, help="Allow the model's own code to run."
)


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


def executor_options(func: Any) -> Any:
    """``--executor``, ``--workers``, ``--ray-address``: where the heavy passes run, from
    :class:`~selectkit.executors.ExecutorConfig`."""
    from selectkit.executors import ExecutorConfig

    return settings_options(ExecutorConfig)(func)


def executor_from(kw: dict[str, Any]) -> Any:
    """The :class:`~selectkit.executors.ExecutorConfig` the parsed options describe."""
    from selectkit.executors import ExecutorConfig

    return settings_from(ExecutorConfig, kw)


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
    """Options that say which model to load, and where: ``--model``, ``--device`` and
    ``--model-dtype`` from the methods' :class:`~selectkit.features.params.ModelParams`."""
    from selectkit.features.params import ModelParams

    func = _TRUST_REMOTE_CODE(func)
    return settings_options(ModelParams, only=("model", "device", "model_dtype"))(func)


def model_load_options(kw: dict[str, Any]) -> Any:
    """The :class:`~selectkit.models.loading.ModelOptions` the parsed options describe."""
    from selectkit.features.params import ModelParams
    from selectkit.models.loading import ModelOptions

    given = settings_from(ModelParams, kw, only=("device", "model_dtype"))
    return ModelOptions(
        device=given.device, dtype=given.model_dtype, trust_remote_code=kw["trust_remote_code"]
    )


def model_spec(kw: dict[str, Any]) -> str:
    """The ``--model`` the parsed options name (the default model when none is given)."""
    from selectkit.features.params import ModelParams

    return settings_from(ModelParams, kw, only=("model",)).model


def option_name(key: str) -> str:
    """The command-line option of a setting's dotted key: ``lora.r`` -> ``--lora-r``."""
    return "--" + key.replace(".", "-").replace("_", "-")


def _dest(key: str) -> str:
    return key.replace(".", "__")


def _settings(
    cls: type, prefix: str, only: Collection[str] | None, exclude: Collection[str]
) -> list[dict[str, Any]]:
    from selectkit.params import describe_params

    def excluded(name: str) -> bool:
        return any(name == e or name.startswith(f"{e}.") for e in exclude)

    rows = describe_params(cls)
    return [
        {**row, "key": prefix + row["name"]}
        for row in rows
        if (only is None or row["name"] in only) and not excluded(row["name"])
    ]


def settings_options(
    cls: type,
    *,
    prefix: str = "",
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> Callable[[Any], Any]:
    """Options generated from a configuration class, one per setting, nested groups
    included, by one rule: a setting's dotted key (after ``prefix``) with dots and
    underscores as dashes, ``lora.r`` -> ``--lora-r``; the class's default and help. An
    option not given leaves the class's default (read them back with :func:`settings_from`)."""
    rows = _settings(cls, prefix, only, exclude)

    def decorate(func: Any) -> Any:
        for row in reversed(rows):
            func = _option(row)(func)
        return func

    return decorate


def settings_from(
    cls: type,
    kw: dict[str, Any],
    *,
    prefix: str = "",
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> Any:
    """The ``cls`` instance that the options of :func:`settings_options` describe (the
    settings given, the class's defaults for the rest), checked like ``-p`` values; a value
    that cannot be read is refused naming its option."""
    from selectkit.params import build_params, convert

    given = {}
    for row in _settings(cls, prefix, only, exclude):
        value = kw.get(_dest(row["key"]))
        if value is not None:
            given[row["name"]] = convert(value, row["hint"], f"option {option_name(row['key'])}")
    context = click.get_current_context(silent=True)
    return build_params(cls, given, f"selectkit {context.info_name}" if context else "options")


def _option(row: dict[str, Any]) -> Callable[[Any], Any]:
    name, hint, dest = option_name(row["key"]), row["hint"], _dest(row["key"])
    text = row["help"]
    shown = {
        "default": _shown(row["default"]),
        "show_default": True,
        "help": f"{text[:1].upper()}{text[1:]}." if text else None,
    }
    if hint is bool:
        return click.option(f"{name}/--no-{name[2:]}", dest, **shown)
    if row["choices"] is not None and row["default"] is not None:
        return click.option(name, dest, type=click.Choice(row["choices"]), **shown)
    if hint in (int, float):
        return click.option(name, dest, type=hint, **shown)
    metavar = "INTEGER|none" if row["type"] == "int | None" else None
    metavar = "FLOAT|none" if row["type"] == "float | None" else metavar
    return click.option(name, dest, type=str, metavar=metavar, **shown)


def _shown(default: Any) -> Any:
    """A default as the option takes it: a tuple comma-separated, the rest as it is."""
    if isinstance(default, (tuple, list)):
        return ",".join(str(item) for item in default)
    return default


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
        tokenizer=kw.get("cost_tokenizer"),
        max_length=kw.get("cost_max_length"),
        trust_remote_code=kw.get("trust_remote_code", False),
    )
