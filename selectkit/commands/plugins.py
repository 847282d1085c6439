"""``selectkit plugins`` and ``selectkit methods``: what is installed, what it provides, and
what failed to load."""

from __future__ import annotations

import json
from typing import Any

import click

from selectkit.host import Host, get_host


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_command(as_json: bool) -> None:
    """List loaded plugins, what each provides, and plugins that failed to load."""
    host = get_host()
    host.warm()
    listing = plugin_listing(host)
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    width = max([28, *(len(p["name"]) for p in listing["plugins"])])
    for plugin in listing["plugins"]:
        origin = (
            "built-in" if plugin["builtin"] else f"{plugin['distribution']} {plugin['version']}"
        )
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(plugin["provides"].items()))
        provides = provides or "hooks: " + ", ".join(plugin["hooks"])
        click.echo(f"{plugin['name']:<{width}} {origin:<22} {provides}")
    for failure in listing["failures"]:
        click.echo(
            f"FAILED {failure['name']} ({failure['distribution']} {failure['version']}) "
            f"at {failure['stage']}: {failure['error']}",
            err=True,
        )


def plugin_listing(host: Host) -> dict[str, Any]:
    """Plugins with distribution, version and what they provide, plus failures."""
    return {
        "plugins": [
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "builtin": info.builtin,
                "provides": {k: sorted(v) for k, v in info.provides.items()},
                "hooks": sorted(
                    caller.name for caller in host.pm.get_hookcallers(host.pm.get_plugin(info.name))
                ),
            }
            for info in host.plugins.values()
        ],
        "failures": [vars(f) for f in host.failures],
    }


@click.command("methods")
@click.argument("name", required=False)
def methods_command(name: str | None) -> None:
    """List selection methods, or show one method's parameters."""
    from selectkit.params import describe_params

    host = get_host()
    names = [name] if name else sorted(host.methods)
    for method_name in names:
        method_cls = host.method(method_name)
        marks = [
            mark
            for mark, present in (
                ("needs --target", method_cls.needs_target),
                ("attribution", method_cls.attributes()),
            )
            if present
        ]
        suffix = f" ({', '.join(marks)})" if marks else ""
        click.echo(f"{method_name}{suffix}: {method_cls.summary()}")
        if name:
            for row in describe_params(method_cls.Params):
                click.echo(
                    f"  {row['name']} ({row['type']}, default {row['default']}): {row['help']}"
                )
