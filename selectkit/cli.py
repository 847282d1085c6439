"""The ``selectkit`` command. Heavy libraries are imported inside commands, never at start-up."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from selectkit import __version__
from selectkit.commands.cache import cache as cache_group
from selectkit.commands.featurize import featurize_command
from selectkit.commands.options import (
    POSITIVE,
    SEED,
    cache_dir_option,
    executor_from,
    executor_options,
    input_paths,
    load_options,
    pool_options,
)
from selectkit.commands.plugins import methods_command, plugins_command
from selectkit.commands.reporting import ReportingGroup
from selectkit.commands.retrain import lds_command, retrain_command
from selectkit.commands.runconfig import config_option, record_run
from selectkit.commands.train import evaluate_command, train_command
from selectkit.commands.warmup import warmup_command
from selectkit.host import Host, get_host
from selectkit.terminal import echo


@click.group(cls=ReportingGroup)
@click.version_option(__version__, prog_name="selectkit")
@click.option(
    "--debug",
    is_flag=True,
    envvar="SELECTKIT_DEBUG",
    help="Show the traceback of an internal error (also SELECTKIT_DEBUG=1).",
)
def cli(debug: bool) -> None:
    """Choose which examples to fine-tune an LLM on.

    Exit status: 0 done; 2 bad input (the error line says what to change); 1 a bug (please
    report it); 3 a check found problems (cache verify, plugins --strict); 128+N stopped by
    signal N.
    """


@cli.command("select")
@config_option
@click.option("--method", "-m", required=True, help="Selection method (see `selectkit plugins`).")
@click.option("--pool", "pool_path", required=True, type=click.Path(exists=True), help="Pool file.")
@click.option("--target", "target_path", type=click.Path(exists=True), help="Target examples.")
@click.option("--budget", "-b", required=True, help="500 records, 5% of the pool, or 200000tok.")
@click.option("--group-by", help="Field naming each record's group (dotted paths allowed).")
@click.option("--quota", multiple=True, metavar="GROUP=MIN:MAX", help="Per-group bounds.")
@click.option("--require", multiple=True, metavar="ID", help="Record id that must be selected.")
@click.option("--exclude", multiple=True, metavar="ID", help="Record id that must not be.")
@click.option("--param", "-p", multiple=True, metavar="KEY=VALUE", help="Method parameter.")
@click.option("--solver", help="Solver name (default: the first that fits the objective).")
@click.option("--solver-param", multiple=True, metavar="KEY=VALUE", help="Solver parameter.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the selection.")
@click.option(
    "--jobs",
    "-j",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Processes; 0 = all.",
)
@click.option(
    "--out", "-o", required=True, type=click.Path(), help="Output JSONL (or dataset folder)."
)
@click.option(
    "--out-format",
    type=click.Choice(["jsonl", "hf"]),
    default="jsonl",
    show_default=True,
    help="jsonl, or hf: a saved Hugging Face dataset (datasets.load_from_disk reads it).",
)
@click.option("--scores-out", type=click.Path(dir_okay=False), help="Per-record scores JSONL.")
@click.option(
    "--allow-empty", is_flag=True, help="Write an empty selection instead of failing on one."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary.")
@cache_dir_option
@executor_options
@pool_options
def select_command(**kw: Any) -> None:
    """Select a budgeted subset of a pool and write it, with its manifest, to --out.

    The options can come from a run file (--config run.toml); the manifest records them, so
    `--config OUT.manifest.json --out AGAIN.jsonl` repeats the run.

    The records, the manifest and the scores are published together when the selection is
    complete; until then (and if anything fails) the previous files are left as they were.
    """
    from selectkit.api import check_budget_unit, load_pool, select
    from selectkit.data.poolcache import pools_folder
    from selectkit.output import SelectionOutputs, output_folders, output_paths
    from selectkit.params import build_params, parse_assignments
    from selectkit.publish import check_paths
    from selectkit.solvers.budget import Budget, Constraints

    host = get_host()
    budget = Budget.parse(kw["budget"])
    constraints = Constraints.build(kw["quota"], kw["require"], kw["exclude"])
    if kw["quota"] and not kw["group_by"]:
        raise click.UsageError("--quota needs --group-by FIELD to know each record's group")
    method_cls = host.method(kw["method"])
    params = parse_assignments(kw["param"])
    method = method_cls(build_params(method_cls.Params, params, f"method '{kw['method']}'"))
    if method.needs_target and not kw["target_path"]:
        raise click.UsageError(f"method '{method.name}' needs --target FILE")
    check_budget_unit(method, budget, host)  # before the pool is read
    solver_params = parse_assignments(kw["solver_param"])
    if kw["solver"]:
        host.solver(kw["solver"])
    given = {"--pool": kw["pool_path"], "--target": kw["target_path"]}
    inputs = input_paths(given, {**params, **solver_params})
    check_paths(
        inputs=inputs,
        files=output_paths(kw["out"], kw["scores_out"], kw["out_format"]),
        folders={
            **({"--cache-dir": kw["cache_dir"]} if kw["cache_dir"] else {}),
            **output_folders(kw["out"], kw["out_format"]),
        },
    )
    with SelectionOutputs(kw["out"], kw["scores_out"], out_format=kw["out_format"]) as outputs:
        options = load_options(kw, kw["group_by"])
        cached = {"host": host, "columnar": True, "cache_dir": kw["cache_dir"]}
        pool = load_pool(kw["pool_path"], options, **cached)
        target = None
        if kw["target_path"]:
            target = load_pool(kw["target_path"], load_options(kw, None), **cached)
        if not pool.by_reference and not kw["quiet"]:
            echo(
                f"note: the pool cache {pools_folder(kw['cache_dir'])} cannot be written, so "
                "the pool is read into memory"
            )
        _report_skipped(kw["pool_path"], pool, kw["quiet"])
        if target is not None:
            _report_skipped(kw["target_path"], target, kw["quiet"])
        selection = select(
            pool,
            method,
            budget,
            target=target,
            constraints=constraints,
            seed=kw["seed"],
            solver=kw["solver"],
            solver_params=solver_params,
            n_jobs=kw["jobs"],
            progress=not kw["quiet"],
            allow_empty=kw["allow_empty"],
            cache_dir=kw["cache_dir"],
            host=host,
            executor=executor_from(kw),
        )
        selection.manifest["command"] = ["selectkit", *sys.argv[1:]]
        selection.manifest["run"] = record_run(click.get_current_context(), kw)
        written = outputs.write(selection, pool)
    if not kw["quiet"]:
        _print_summary(selection, pool, written)


def _report_skipped(path: str, pool, quiet: bool) -> None:
    if pool.skipped and not quiet:
        echo(f"{path}: skipped {len(pool.skipped)} bad record(s); first: {pool.skipped[0]}")


def _print_summary(selection, pool, written: list[Path]) -> None:
    sol = selection.solution
    unit = pool.cost_unit
    cost = selection.manifest["selection"]["cost"]
    echo(
        f"selected {len(selection)} of {len(pool)} records ({cost} {unit}) "
        f"with {selection.manifest['method']['name']} / solver {sol.solver} ({sol.status})"
    )
    if sol.gap is not None:
        echo(f"objective {sol.objective:.6g}, bound {sol.bound:.6g}, gap {sol.gap:.3%}")
    shares = selection.group_shares(pool)
    if any(group is not None for group in shares):
        top = ", ".join(f"{g}: {s:.1%}" for g, s in list(shares.items())[:8])
        echo(f"groups: {top}")
    for path in written:
        echo(f"wrote {path}")


@cli.command("demo")
@click.option("--out", "out_dir", default="selectkit-demo", show_default=True, type=click.Path())
@click.option("--model", default="smollm2", show_default=True, help="Model for gradient methods.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option(
    "--per-family", default=20, show_default=True, type=POSITIVE, help="Pool records each."
)
@cache_dir_option
def demo_command(
    out_dir: str, model: str, seed: int, per_family: int, cache_dir: str | None
) -> None:
    """Targeted selection on a generated pool: LESS, TracIn, gradient matching, DSIR, baselines."""
    from selectkit.demo import run_demo

    run_demo(
        Path(out_dir),
        model=model,
        seed=seed,
        per_family=per_family,
        cache_dir=cache_dir,
        echo=click.echo,
    )


cli.add_command(plugins_command)
cli.add_command(methods_command)
cli.add_command(warmup_command)
cli.add_command(train_command)
cli.add_command(evaluate_command)
cli.add_command(featurize_command)
cli.add_command(cache_group)
cli.add_command(retrain_command)
cli.add_command(lds_command)


def _register_plugin_commands(group: click.Group, host: Host) -> None:
    """Let each plugin add subcommands; a plugin that fails here is recorded, not fatal.

    Commands follow the host's precedence rule: selectkit's own commands cannot be replaced,
    and a command name two third-party plugins add is refused for both; either is recorded
    as a name conflict (``selectkit plugins``)."""
    from selectkit.registry import Claim, NameConflict, PluginInfo, Registry

    core = PluginInfo("selectkit", "selectkit", __version__, builtin=True, first_party=True)
    own = dict(group.commands)
    added: dict[str, list[Claim]] = {}
    for info, _ in host.call_each("selectkit_register_commands", cli=group):
        for name, command in list(group.commands.items()):
            if own.get(name) is command or any(c.obj is command for c in added.get(name, [])):
                continue
            if name in own:
                group.commands[name] = own[name]
                claims = (Claim(info, name, command),)
                host.record_conflict(
                    NameConflict("command", name, Claim(core, name, own[name]), claims)
                )
            else:
                added.setdefault(name, []).append(Claim(info, name, command))
    registry = Registry("command", added)
    for name in added:
        if name in registry.held:
            group.commands[name] = registry.held[name].obj
        else:
            del group.commands[name]
    for conflict in registry.conflicts:
        host.record_conflict(conflict)


def _show_warnings() -> None:
    """Print selectkit's warnings (plugin filters naming nothing, refused names) as escaped
    ``warning: ...`` lines on stderr; other warnings are shown as Python shows them."""
    import warnings

    from selectkit.host import PluginWarning
    from selectkit.terminal import printable

    shown = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, PluginWarning):
            click.echo(f"warning: {printable(message)}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main() -> None:
    from selectkit import signals
    from selectkit.commands.reporting import report

    signals.install()
    _show_warnings()
    try:
        _register_plugin_commands(cli, get_host())
    except (KeyboardInterrupt, signals.Interrupted) as exc:  # stopped while plugins load
        sys.exit(report(exc))
    cli()
