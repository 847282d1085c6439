"""Termination signals as exceptions, and the short stretches that must not be split by one.

Python turns SIGINT into ``KeyboardInterrupt``, so ``finally`` blocks and ``except
BaseException`` clean-ups run; SIGTERM (what ``kill``, schedulers and containers send) and
SIGHUP (a closed terminal) kill the process outright by default, leaving temporary files
behind. :func:`install` makes them raise :class:`Interrupted` instead, so every command cleans
up the same way whichever of the three stops it. :func:`deferred` holds all three back while a
set of outputs is being published, so a publication is never cut in half by a signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

#: The signals that ask a process to stop and that it may clean up after.
TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """Raised in the main thread when SIGTERM or SIGHUP arrives (SIGINT stays
    ``KeyboardInterrupt``). A ``BaseException``, like ``KeyboardInterrupt``, so that
    ``except Exception`` handlers do not swallow it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def install() -> None:
    """Make SIGTERM and SIGHUP raise :class:`Interrupted` in this process.

    Child processes forked later (a multiprocessing pool) inherit the handler; there it
    restores the default action and re-sends the signal, so a pool's ``terminate()`` still
    ends its workers at once.
    """
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Interrupted(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def exit_status(signum: int) -> int:
    """The shell's convention for a process stopped by signal ``signum``: 128 + its number."""
    return 128 + signum


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back for the ``with`` body; one that arrives meanwhile
    is acted on (as the handler in place before would have) as soon as the body ends. Keep
    the body short: nothing but SIGKILL stops it.

    Python runs signal handlers in the main thread whichever thread the kernel interrupted, so
    swapping the handlers for a recorder holds a signal back reliably; outside the main
    thread, where handlers cannot be set, no signal reaches Python code anyway.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda s, f: arrived.append(s)) for signum in TERMINATING
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None: a handler set outside Python; the default action is the closest.
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if arrived:
            signal.raise_signal(arrived[0])
