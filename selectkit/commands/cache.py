"""``selectkit cache``: list, inspect, verify and remove stored feature sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from selectkit.commands.reporting import ReportingGroup
from selectkit.errors import EXIT_PROBLEMS, StoreError
from selectkit.features.store import FeatureSet, FeatureStore, human_bytes


def _cache_dir_option(func):
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Feature store directory (default: $SELECTKIT_CACHE_DIR, else "
        "$XDG_CACHE_HOME/selectkit/features, else ~/.cache/selectkit/features).",
    )(func)


@click.group("cache", cls=ReportingGroup)
def cache() -> None:
    """List, inspect, verify and remove stored feature sets."""


def _describe(info: dict[str, Any]) -> str:
    """A short description: the featurizer's summary, else the key's plain fields."""
    meta, key = info["meta"], info["key"]
    parts = [str(meta["summary"])] if meta.get("summary") else []
    if not parts and isinstance(key, dict):
        parts = [f"{k}={v}" for k, v in key.items() if isinstance(v, (str, int, float, bool))]
    text = " ".join(parts)
    return text if len(text) <= 60 else text[:57] + "..."


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_cache_dir_option
def ls_command(as_json: bool, cache_dir: Path | None) -> None:
    """List stored feature sets, and any broken ones."""
    store = FeatureStore(cache_dir)
    infos = [features.info() for features in store.entries()]
    broken = store.broken()
    if as_json:
        listing = {
            "root": str(store.root),
            "entries": infos,
            "broken": [{"path": str(path), "problem": problem} for path, problem in broken],
        }
        click.echo(json.dumps(listing, indent=2, ensure_ascii=False))
        return
    if not infos and not broken:
        click.echo(f"no feature sets in {store.root}")
        return
    if infos:
        click.echo(
            f"{'ID':<12}  {'ROWS':>15}  {'DIM':>6}  {'DTYPE':<7}  {'SIZE':>10}  "
            f"{'COMPLETE':<8}  DESCRIPTION"
        )
    for info in infos:
        rows = info["rows"]
        recorded = f"{rows['total'] - rows['pending']}/{rows['total']}"
        click.echo(
            f"{info['id'][:12]}  {recorded:>15}  {info['layout']['dim']:>6}  "
            f"{info['layout']['dtype']:<7}  {human_bytes(info['bytes']):>10}  "
            f"{'yes' if info['complete'] else 'no':<8}  {_describe(info)}"
        )
    for path, problem in broken:
        click.echo(f"BROKEN {path.name}: {problem}")


def _indented(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + " " * 10)


def _info_lines(info: dict[str, Any]) -> list[str]:
    layout, rows = info["layout"], info["rows"]
    return [
        f"id        {info['id']}",
        f"path      {info['path']}",
        f"complete  {'yes' if info['complete'] else 'no'}",
        f"created   {info['created']} (selectkit {info['selectkit_version']})",
        f"size      {human_bytes(info['bytes'])} ({info['bytes']} bytes)",
        f"layout    {layout['num_rows']} rows x {layout['dim']} {layout['dtype']}, "
        f"{layout['num_blocks']} blocks of {layout['block_rows']}, "
        f"{layout['file_rows']} rows per file, columns: {', '.join(layout['columns']) or 'none'}",
        f"rows      {rows['done']} done, {rows['skipped_empty']} skipped (empty), "
        f"{rows['skipped_nonfinite']} skipped (non-finite), {rows['pending']} pending",
        "key       " + _indented(info["key"]),
        "meta      " + _indented(info["meta"]),
    ]


@cache.command("info")
@click.argument("entry_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_cache_dir_option
def info_command(entry_id: str, as_json: bool, cache_dir: Path | None) -> None:
    """Show a feature set's key, layout, progress and meta.

    ID may be any unique prefix of the id, as `ls` shows it.
    """
    info = FeatureStore(cache_dir).get(entry_id).info()
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join(_info_lines(info)))


@cache.command("verify")
@click.argument("entry_ids", metavar="[ID]...", nargs=-1)
@_cache_dir_option
def verify_command(entry_ids: tuple[str, ...], cache_dir: Path | None) -> None:
    """Check feature sets' files and checksums.

    Checks every stored set when no ID is given, prints OK or the problems of each, and exits
    with status 1 if any problem is found.
    """
    store = FeatureStore(cache_dir)
    results: list[tuple[str, list[str]]] = []
    if entry_ids:
        for ident in [store.resolve(entry_id) for entry_id in entry_ids]:
            try:
                features: FeatureSet = store.get(ident)
            except StoreError as exc:
                results.append((ident[:12], [str(exc)]))
                continue
            results.append((ident[:12], features.verify()))
    else:
        results += [(features.id[:12], features.verify()) for features in store.entries()]
        results += [(path.name, [problem]) for path, problem in store.broken()]
        if not results:
            click.echo(f"no feature sets in {store.root}")
    for name, problems in results:
        click.echo(f"{name}  {'OK' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            click.echo(f"  - {problem}")
    if any(problems for _, problems in results):
        click.get_current_context().exit(EXIT_PROBLEMS)


@cache.command("rm")
@click.argument("entry_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Remove even while a process is writing to it.")
@_cache_dir_option
def rm_command(entry_ids: tuple[str, ...], yes: bool, force: bool, cache_dir: Path | None) -> None:
    """Remove feature sets (ID may be a prefix)."""
    store = FeatureStore(cache_dir)
    idents = list(dict.fromkeys(store.resolve(entry_id) for entry_id in entry_ids))
    if not yes:
        size = sum(
            p.stat().st_size
            for ident in idents
            for p in (store.root / ident).rglob("*")
            if p.is_file()
        )
        names = ", ".join(ident[:12] for ident in idents)
        click.confirm(
            f"Remove {len(idents)} feature set(s) ({names}; {human_bytes(size)})?", abort=True
        )
    for ident in idents:
        store.remove(ident, force=force)
        click.echo(f"removed {ident[:12]}")
