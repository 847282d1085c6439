"""Local worker processes: one machine, N processes, each holding its model once.

Each worker is a fresh Python (``python -m selectkit.executors.processes``, so a script or
notebook that uses an executor is never imported again in the workers) with its own plugin
host, built from the environment like the command line's, and its own socket; units go out
and progress and outcomes come back over it, as in-memory messages. A worker that dies
(killed, out of memory) has its unit started again on a fresh worker, which resumes from what
the dead one stored. Workers live until :meth:`close`, so a second pass of the same run reuses
their loaded models.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from selectkit.errors import SelectkitError
from selectkit.executors.base import (
    ATTEMPTS,
    Executor,
    ProgressBar,
    Unit,
    Worker,
    worker_environment,
)
from selectkit.executors.outcomes import attempt


class WorkerLost(SelectkitError):
    """A unit whose worker died on every attempt (killed, or out of memory)."""


def _serve(conn: Connection, threads: int) -> None:
    """A worker process: run each unit received until told to stop or the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops us
    import torch

    torch.set_num_threads(threads)
    from selectkit.host import Host

    worker = Worker(Host.from_env())
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        index, unit = message
        outcome = attempt(unit, worker, lambda done, i=index: conn.send(("progress", i, done)))
        conn.send(("done", index, outcome))


@dataclass(eq=False)
class _Process:
    process: subprocess.Popen
    conn: Connection
    unit: int | None = None  # the unit it is running


class LocalProcesses(Executor):
    """``workers`` processes on this machine (0: one per CPU core), each running torch on
    ``threads`` threads (0: as many as this process uses, so that float sums, whose order
    depends on the thread count, give the bytes of a run here)."""

    def __init__(self, workers: int = 0, *, threads: int = 0) -> None:
        import torch

        self._count = workers or os.cpu_count() or 1
        self._threads = threads or torch.get_num_threads()
        self._live: list[_Process] = []
        self.restarts = 0  # workers that died and were replaced

    @property
    def workers(self) -> int:
        return self._count

    def worker_pids(self) -> list[int]:
        """The process id of each live worker."""
        return [proc.process.pid for proc in self._live]

    def _start(self) -> _Process:
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", __name__, str(theirs.fileno()), str(self._threads)]
        process = subprocess.Popen(
            command,
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=worker_environment(dict(os.environ)),
        )
        theirs.close()
        started = _Process(process, Connection(ours.detach()))
        self._live.append(started)
        return started

    def run(self, units: Sequence[Unit], *, label: str, progress: bool) -> list[Any]:
        results: list[Any] = [None] * len(units)
        left = len(units)
        starts = [0] * len(units)
        queue = deque(range(len(units)))
        try:
            with ProgressBar(units, label, progress) as bar:
                while len(self._live) < min(self._count, len(units)):
                    self._start()
                while left:
                    for proc in self._live:
                        if proc.unit is None and queue:
                            proc.unit = queue.popleft()
                            starts[proc.unit] += 1
                            proc.conn.send((proc.unit, units[proc.unit]))
                    by_conn = {proc.conn: proc for proc in self._live}
                    for conn in wait(list(by_conn)):
                        proc = by_conn[conn]
                        message = self._receive(proc)
                        if message is None:
                            self._lost(proc, units, starts, queue, bar)
                        elif message[0] == "progress":
                            bar.set(message[1], message[2])
                        else:
                            index, outcome = message[1], message[2]
                            proc.unit = None
                            results[index] = outcome.unwrap(units[index])
                            left -= 1
        except BaseException:
            self.close()  # workers may be mid-unit: stop them, never leave them writing
            raise
        return results

    def _receive(self, proc: _Process) -> tuple[Any, ...] | None:
        """The next message of ``proc``; ``None`` when it has died (its socket closed)."""
        try:
            return proc.conn.recv()
        except (EOFError, OSError):
            return None

    def _lost(
        self,
        proc: _Process,
        units: Sequence[Unit],
        starts: list[int],
        queue: deque[int],
        bar: ProgressBar,
    ) -> None:
        """A worker died: its unit goes back to the front of the queue on a fresh worker."""
        proc.process.wait()
        proc.conn.close()
        self._live.remove(proc)
        index = proc.unit
        if index is not None:
            if starts[index] >= ATTEMPTS:
                raise WorkerLost(
                    f"{units[index].label}: its worker died {ATTEMPTS} times (exit status "
                    f"{proc.process.returncode}; a negative status is the signal that killed it); "
                    "check memory (lower batch_size) and the worker's output above"
                )
            bar.set(index, 0)
            queue.appendleft(index)
        self.restarts += 1
        self._start()

    def close(self) -> None:
        """Stop every worker: an idle one is told to, a busy one (an error or Ctrl-C left it
        mid-unit) is killed; what it stored so far is resumed by the next run."""
        for proc in self._live:
            with contextlib.suppress(OSError):  # a worker that died meanwhile
                if proc.unit is None:
                    proc.conn.send(None)
                else:
                    proc.process.kill()
        for proc in self._live:
            try:
                proc.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()
            proc.conn.close()
        self._live = []


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
