"""``selectkit plugins`` and ``selectkit methods``: what is installed, what it provides, and
what failed to load or was refused a name. Plugin names, versions, errors and help texts come
from installed packages: everything is printed escaped."""

from __future__ import annotations

from typing import Any

import click

from selectkit.errors import EXIT_PROBLEMS
from selectkit.host import Host, get_host
from selectkit.methods import BUDGET_UNITS
from selectkit.terminal import echo, printable_json


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--strict",
    is_flag=True,
    help=f"Exit with status {EXIT_PROBLEMS} when a plugin failed or a name is in conflict.",
)
def plugins_command(as_json: bool, strict: bool) -> None:
    """List loaded plugins, what each provides, plugins that failed to load, and names that
    more than one plugin registers (and who keeps them)."""
    host = get_host()
    host.warm()
    listing = plugin_listing(host)
    if as_json:
        click.echo(printable_json(listing, indent=2))
    else:
        _print_listing(listing)
    if strict and (listing["failures"] or listing["conflicts"]):
        click.get_current_context().exit(EXIT_PROBLEMS)


def _print_listing(listing: dict[str, Any]) -> None:
    width = max([28, *(len(p["name"]) for p in listing["plugins"])])
    for plugin in listing["plugins"]:
        origin = "built-in" if plugin["builtin"] else _origin(plugin)
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(plugin["provides"].items()))
        refused = "; ".join(
            f"refused {k}: {', '.join(v)}" for k, v in sorted(plugin["refused"].items())
        )
        shown = "; ".join(filter(None, [provides, refused]))
        shown = shown or "hooks: " + ", ".join(plugin["hooks"])
        echo(f"{plugin['name']:<{width}} {origin:<22} {shown}")
    for conflict in listing["conflicts"]:
        echo(f"CONFLICT {conflict['message']}", err=True)
    for failure in listing["failures"]:
        echo(
            f"FAILED {failure['name']} ({_origin(failure)}) at {failure['stage']}: "
            f"{failure['error']}",
            err=True,
        )


def _origin(entry: dict[str, Any]) -> str:
    """``selectkit-keyword 0.2.0``, or ``in-process`` for a plugin no distribution ships."""
    if entry["distribution"] is None:
        return "in-process"
    return f"{entry['distribution']} {entry['version']}"


def plugin_listing(host: Host) -> dict[str, Any]:
    """Plugins with distribution, version and what they provide (or were refused), plus
    failures, name conflicts and the host's warnings."""
    return {
        "plugins": [
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "builtin": info.builtin,
                "first_party": info.first_party,
                "provides": {k: sorted(v) for k, v in info.provides.items()},
                "refused": {k: sorted(v) for k, v in info.refused.items()},
                "hooks": sorted(
                    caller.name for caller in host.pm.get_hookcallers(host.pm.get_plugin(info.name))
                ),
            }
            for info in host.plugins.values()
        ],
        "conflicts": [conflict.describe() for conflict in host.conflicts],
        "failures": [vars(f) for f in host.failures],
        "warnings": list(host.warnings),
    }


@click.command("methods")
@click.argument("name", required=False)
def methods_command(name: str | None) -> None:
    """List selection methods, or show one method's parameters (NAME may be qualified:
    plugin:name or distribution:name)."""
    from selectkit.params import describe_params

    host = get_host()
    names = [name] if name else sorted(host.methods)
    for method_name in names:
        method_cls = host.method(method_name)
        only = _budgets_only(method_cls.budgets)
        marks = [
            mark
            for mark, present in (
                ("needs --target", method_cls.needs_target),
                ("attribution", method_cls.attributes()),
                (only, bool(only)),
            )
            if present
        ]
        suffix = f" ({', '.join(marks)})" if marks else ""
        echo(f"{method_name}{suffix}: {method_cls.summary()}")
        if name:
            for row in describe_params(method_cls.Params):
                default = row["default"]
                if isinstance(default, tuple):  # as -p takes it: comma-separated
                    default = ",".join(map(str, default))
                echo(f"  {row['name']} ({_kind(row)} default {default}): {row['help']}")
    if not name:
        for conflict in host.methods.conflicts:
            echo(f"CONFLICT {conflict.message()}", err=True)


def _budgets_only(units: tuple[str, ...]) -> str:
    """``count budgets only``: how the listing marks a method that declares some budget
    units, not all (:attr:`selectkit.methods.Method.budgets`); empty for one that takes every
    budget."""
    if set(units) >= set(BUDGET_UNITS):
        return ""
    names = {"items": "count", "tokens": "token"}
    return " and ".join(names.get(unit, str(unit)) for unit in units) + " budgets only"


def _kind(row: dict[str, Any]) -> str:
    """``int,`` or ``one of: mean, max;``: what a parameter takes, before its default."""
    if row["choices"] is not None:
        return "one of: " + ", ".join(str(choice) for choice in row["choices"]) + ";"
    return row["type"] + ","
