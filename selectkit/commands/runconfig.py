"""A run written down: ``selectkit select --config run.toml`` reads the command's options from a
file, and every selection's manifest holds the same options (its ``run`` section), so
``--config picked.manifest.json`` repeats a run exactly.

The file's keys are the command's long option names without the dashes (``pool``,
``group-by``, ``seed``); ``param`` and ``solver-param`` are tables of the method's and solver's
parameters (a group's settings in a sub-table, ``[param.lora]``, or with dotted keys,
``lora.r = 16``); options given several times (``quota``, ``require``, ``exclude``, ``field``) are
lists. Relative paths are relative to the file's folder. Options on the command line win over
the file. The click options stay the one definition: the file is read into click's defaults.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from selectkit.errors import ParamError
from selectkit.params import parse_assignments

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

#: Options that say where a run writes or how it reports, never part of what it computes.
NOT_RECORDED = ("config", "out", "out_format", "scores_out", "quiet", "jobs")
#: Options that say where the work runs: a run file may set them, but a manifest does not
#: record them, so repeating a run elsewhere never reaches for this machine's cluster.
WHERE_IT_RAN = ("executor", "workers", "threads", "ray_address")
#: Options read as ``key=value`` assignments, written as tables in a run file.
TABLES = ("param", "solver_param")
#: Options naming files or folders, resolved against the run file's folder.
PATHS = ("pool_path", "target_path", "cache_dir")


def config_option(func: Any) -> Any:
    """``--config FILE``: the command's options from a run file or a manifest."""
    return click.option(
        "--config",
        type=click.Path(exists=True, dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=_read_into_defaults,
        help="Read the options from a TOML run file, or from a selection's manifest (its run "
        "section) to repeat that run; options given here win.",
    )(func)


def _read_into_defaults(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    options = {p.name: p for p in ctx.command.params if isinstance(p, click.Option)}
    ctx.default_map = {**(ctx.default_map or {}), **read_run(Path(value), options)}


def read_run(path: Path, options: Mapping[str, click.Option]) -> dict[str, Any]:
    """The click values a run file (or a manifest's ``run`` section) gives, checked against
    the command's ``options``; a :class:`ParamError` naming the file and key otherwise."""
    values = _load(path)
    names = {_key(option): name for name, option in options.items()}
    found: dict[str, Any] = {}
    for key, value in values.items():
        name = names.get(key)
        if name is None or name in NOT_RECORDED:
            known = ", ".join(sorted(k for k, n in names.items() if n not in NOT_RECORDED))
            raise ParamError(f"{path}: '{key}' is not an option of this command; known: {known}")
        found[name] = _value(path, key, value, options[name])
        if name in PATHS and found[name] is not None:
            found[name] = str((path.parent / Path(found[name]).expanduser()).resolve())
    return found


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise ParamError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError and JSONDecodeError
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ParamError(f"{path}: not valid {kind}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("run"), dict):
        data = data["run"]  # a selection's manifest
    if not isinstance(data, dict):
        raise ParamError(f"{path}: a run file holds options (key = value), not {type(data)}")
    return data


def _key(option: click.Option) -> str:
    """The option's name in a run file: its longest flag without the dashes."""
    return max(option.opts, key=len).lstrip("-")


def _value(path: Path, key: str, value: Any, option: click.Option) -> Any:
    where = f"{path}: '{key}'"
    if option.name in TABLES:
        if not isinstance(value, dict):
            raise ParamError(f"{where} must be a table of key = value")
        return tuple(f"{k}={render(v, f'{where}.{k}')}" for k, v in _dotted(value).items())
    if option.multiple:
        if not isinstance(value, list):
            raise ParamError(f"{where} must be a list")
        return tuple(render(v, where) for v in value)
    if option.is_flag:
        if not isinstance(value, bool):
            raise ParamError(f"{where} must be true or false")
        return value
    return None if value is None else render(value, where)


def _dotted(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A table's settings by dotted key: ``[param.lora] r = 16`` (or ``lora.r = 16``) is
    ``lora.r``, as ``-p lora.r=16`` writes it."""
    found: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            found.update(_dotted(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def render(value: Any, where: str) -> str:
    """A value as a command line writes it, read back to the same value (floats by repr)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # exact, and inf or nan as the command line reads them
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(render(item, where) for item in value)
    raise ParamError(f"{where}: {type(value).__name__} values cannot be an option")


def record_run(ctx: click.Context, kw: Mapping[str, Any]) -> dict[str, Any]:
    """The run section of the manifest: every option that shapes the result, in a run file's
    keys, paths made absolute, so ``--config`` with the manifest repeats the run."""
    run: dict[str, Any] = {}
    for option in ctx.command.params:
        name = option.name
        skipped = name in NOT_RECORDED or name in WHERE_IT_RAN
        if not isinstance(option, click.Option) or skipped or name not in kw:
            continue
        value = kw[name]
        if name in TABLES:
            value = dict(parse_assignments(value))
        elif name in PATHS and value is not None:
            value = os.path.abspath(os.fspath(value))
        elif isinstance(value, tuple):
            value = list(value)
        if value is not None:
            run[_key(option)] = value
    return run
