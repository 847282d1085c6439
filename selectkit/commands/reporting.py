"""The one path every failed command goes through.

It prints one line, ``error: <what>, <where>, <what to do>``, with untrusted text escaped,
and exits with a documented status (:mod:`selectkit.errors`): 2 for bad input or an
environment the command cannot work in, 1 for a bug (naming the package it happened in, with
a hint to report it), 128 + N when signal N stopped the command. Never a traceback, unless
``selectkit --debug`` (or ``SELECTKIT_DEBUG=1``) asks for one.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from selectkit.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, SelectkitError
from selectkit.signals import Interrupted, exit_status
from selectkit.terminal import printable

_OS_HINTS = {
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.ENOSPC: "the disk is full: free some space, or choose another disk",
    errno.EDQUOT: "the disk quota is exhausted: free some space, or choose another disk",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "it is a folder: give a file",
    errno.ENAMETOOLONG: "shorten the path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
}


# click >= 8.2 raises this for a group called without a command; older versions print help.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class ReportingGroup(click.Group):
    """A command group whose failures are reported by :func:`report`, never as tracebacks;
    click's own usage errors are printed the same way, as one ``error:`` line."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            status = super().main(*args, standalone_mode=False, **kwargs)
        except _NO_ARGS_IS_HELP as exc:  # `selectkit` alone: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            where = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else None
            hint = f"; see `{where} --help`" if where else ""
            sys.exit(_say(exc.format_message().rstrip(".") + hint, exc.exit_code))
        except click.exceptions.Abort:
            sys.exit(_say("no answer at a prompt (end of input); nothing was done", EXIT_BAD_INPUT))
        sys.exit(status if isinstance(status, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except (Exception, KeyboardInterrupt, Interrupted) as exc:
            debug = bool(ctx.find_root().params.get("debug"))
            ctx.exit(report(exc, debug=debug))


def report(exc: BaseException, *, debug: bool = False) -> int:
    """Print ``exc`` as one ``error:`` line on stderr and return the exit status."""
    if isinstance(exc, SelectkitError):
        return _say(str(exc), EXIT_BAD_INPUT)
    if isinstance(exc, BrokenPipeError):
        # The reader went away (`selectkit methods | head`): nothing to say, and nowhere to
        # say it; stop as a process killed by SIGPIPE would, without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_status(signal.SIGPIPE)
    if isinstance(exc, (KeyboardInterrupt, Interrupted)):
        signum = exc.signum if isinstance(exc, Interrupted) else 2
        name = "SIGINT" if isinstance(exc, KeyboardInterrupt) else str(exc).split()[-1]
        return _say(
            f"interrupted by {name}; outputs that were not complete were not written (work "
            "already stored is kept), so rerun the command to finish",
            exit_status(signum),
        )
    if isinstance(exc, OSError) and exc.errno in _OS_HINTS:
        return _say(_os_error(exc), EXIT_BAD_INPUT)
    if isinstance(exc, ValueError) and "embedded null" in str(exc):  # from os.stat and friends
        return _say(
            "a path holds a NUL byte, which no file name can; check the path", EXIT_BAD_INPUT
        )
    if isinstance(exc, MemoryError):
        return _say(
            f"out of memory ({exc or 'an allocation failed'}); use a smaller pool, batch or "
            "dimension, or a machine with more memory",
            EXIT_BAD_INPUT,
        )
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    return _say(_internal(exc, debug), EXIT_INTERNAL)


def _say(message: str, status: int) -> int:
    click.echo(f"error: {printable(message)}", err=True)
    return status


def _os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename is not None else ""
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    return f"{exc.strerror or type(exc).__name__}{where}; {_OS_HINTS[exc.errno]}"


def _internal(exc: BaseException, debug: bool) -> str:
    """What broke, in which file of which distribution, and how to report it."""
    frame, owner = _blame(exc)
    where = f" at {frame}" if frame else ""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
    what = text[-1] if text else type(exc).__name__
    again = "" if debug else " with the output of the same command run as `selectkit --debug ...`"
    return f"internal error ({what}){where}; this is a bug in {owner}: please report it{again}"


def _blame(exc: BaseException) -> tuple[str | None, str]:
    """The innermost frame of selectkit or of a selectkit plugin, and who ships that code."""
    packages = _plugin_packages()
    found: tuple[str, str] | None = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        top = str(frame.f_globals.get("__name__", "")).split(".", 1)[0]
        if top in packages:
            found = (f"{Path(frame.f_code.co_filename).name}:{line}", packages[top])
    if found is None:
        return None, "selectkit"
    return found


def _plugin_packages() -> dict[str, str]:
    """Top-level package -> "distribution version", for selectkit and every installed plugin."""
    from selectkit import __version__

    owners = {"selectkit": f"selectkit {__version__}"}
    try:
        for ep in metadata.entry_points(group="selectkit"):
            dist = getattr(ep, "dist", None)
            name = f"{dist.metadata['Name']} {dist.version}" if dist is not None else ep.name
            owners.setdefault(ep.module.split(".", 1)[0], f"plugin '{ep.name}' ({name})")
    except Exception:  # the report of one error must not fail on another
        pass
    return owners
