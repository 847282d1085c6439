"""``selectkit cache``: list, inspect, verify and remove stored feature sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from selectkit.commands.options import cache_dir_option
from selectkit.commands.reporting import ReportingGroup
from selectkit.errors import EXIT_PROBLEMS, StoreError
from selectkit.resources import human_bytes
from selectkit.store import BrokenEntry, FeatureStore, check_entry
from selectkit.terminal import printable, printable_json


@click.group("cache", cls=ReportingGroup)
def cache() -> None:
    """List, inspect, verify and remove stored feature sets."""


def _describe(info: dict[str, Any]) -> str:
    """A short description: the featurizer's summary, else the key's plain fields."""
    meta, key = info["meta"], info["key"]
    parts = [str(meta["summary"])] if meta.get("summary") else []
    if not parts and isinstance(key, dict):
        parts = [f"{k}={v}" for k, v in key.items() if isinstance(v, (str, int, float, bool))]
    text = printable(" ".join(parts))
    return text if len(text) <= 60 else text[:57] + "..."


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@cache_dir_option
def ls_command(as_json: bool, cache_dir: Path | None) -> None:
    """List stored feature sets, and any broken ones."""
    store = FeatureStore(cache_dir)
    infos, broken = [], store.broken()
    for features in store.entries():
        try:
            infos.append(features.info())
        except StoreError as exc:
            broken.append((features.path, str(exc)))
    if as_json:
        listing = {
            "root": str(store.root),
            "entries": infos,
            "broken": [{"path": str(path), "problem": problem} for path, problem in broken],
        }
        click.echo(printable_json(listing, indent=2))
        return
    if not infos and not broken:
        click.echo(f"no feature sets in {printable(store.root)}")
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
        click.echo(f"BROKEN {printable(path.name)}: {printable(problem)}")


def _indented(value: Any) -> str:
    return printable_json(value, indent=2).replace("\n", "\n" + " " * 10)


def _info_lines(info: dict[str, Any]) -> list[str]:
    layout, rows = info["layout"], info["rows"]
    return [
        f"id        {info['id']}",
        f"path      {printable(info['path'])}",
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
@cache_dir_option
def info_command(entry_id: str, as_json: bool, cache_dir: Path | None) -> None:
    """Show a feature set's key, layout, progress and meta.

    ID may be any unique prefix of the id, as `ls` shows it.
    """
    info = FeatureStore(cache_dir).get(entry_id).info()
    if as_json:
        click.echo(printable_json(info, indent=2))
    else:
        click.echo("\n".join(_info_lines(info)))


@cache.command("verify")
@click.argument("entry_ids", metavar="[ID]...", nargs=-1)
@click.option(
    "--repair",
    is_flag=True,
    help="Repair what is found: remove what killed processes left, put damaged rows back to "
    "pending (the next run that needs them computes them again), remove entries that cannot "
    "be repaired in place (extracted again when next needed).",
)
@cache_dir_option
def verify_command(entry_ids: tuple[str, ...], repair: bool, cache_dir: Path | None) -> None:
    """Check feature sets: their files, the checksums of their small files and of every row.

    Checks every stored set when no ID is given and prints OK or the problems of each. Exits
    with status 3 if a problem is found (with --repair: if one is left unrepaired).
    """
    store = FeatureStore(cache_dir)
    idents = [store.resolve(entry_id) for entry_id in entry_ids]
    cleared = store.clear_leftovers() if repair else []
    for path in cleared:
        click.echo(f"{printable(path.name)}  removed (left over by a killed process)")
    if not idents:
        idents = [features.id for features in store.entries()]
        idents += [path.name for path, _ in store.broken()]
        if not idents and not cleared:
            click.echo(f"no feature sets in {printable(store.root)}")
    left = [_verify_one(store, ident, repair) for ident in idents]
    if any(left):
        click.get_current_context().exit(EXIT_PROBLEMS)


def _verify_one(store: FeatureStore, ident: str, repair: bool) -> bool:
    """Check (and with ``repair`` repair) one entry, print the outcome; returns whether a
    problem is left."""
    name = printable(ident[:12] if not ident.startswith(".") else ident)
    if ident.startswith("."):  # what a killed process left, which --repair could not remove
        click.echo(f"{name}  1 problem(s)")
        click.echo(
            "  - left over by a killed process; `selectkit cache verify --repair` removes it"
        )
        return True
    broken: BrokenEntry | None = None
    try:
        features = store.get(ident)
        found = check_entry(features, rows=True)
        problems = found.problems
    except BrokenEntry as exc:
        broken = exc
        problems = [f"broken ({exc.reason}); `--repair` removes it (extracted again when needed)"]
    except StoreError as exc:  # unreadable, not damaged: nothing to repair
        click.echo(f"{name}  1 problem(s)\n  - {printable(exc)}")
        return True
    click.echo(f"{name}  {'OK' if not problems else f'{len(problems)} problem(s)'}")
    for problem in problems:
        click.echo(f"  - {printable(problem)}")
    if not problems:
        return False
    if not repair:
        return True
    try:
        if broken is not None:
            done = store.remove_broken(broken)
        elif found.rebuild or found.damaged or found.leftovers or found.unfinalized:
            done = store.repair(features, found)
        else:
            done = []
    except StoreError as exc:
        click.echo(f"  not repaired: {printable(exc)}")
        return True
    for action in done:
        click.echo(f"  repaired: {printable(action)}")
    return broken is None and found.incomplete


@cache.command("rm")
@click.argument("entry_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Remove even while a process is writing to it.")
@cache_dir_option
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
        if not click.confirm(
            f"Remove {len(idents)} feature set(s) ({names}; {human_bytes(size)})?"
        ):
            click.echo("nothing was removed")
            return
    for ident in idents:
        store.remove(ident, force=force)
        click.echo(f"removed {ident[:12]}")
