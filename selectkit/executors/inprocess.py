"""The default executor: every unit in the calling process, one after another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from selectkit.executors.base import Executor, ProgressBar, Unit, Worker

if TYPE_CHECKING:
    from selectkit.methods import Services


class InProcess(Executor):
    """Runs units in this process with the caller's host, so they share its loaded model."""

    in_process = True

    def __init__(self, host: Services) -> None:
        self._worker = Worker(host)

    @property
    def workers(self) -> int:
        return 1

    def run(self, units: Sequence[Unit], *, label: str, progress: bool) -> list[Any]:
        with ProgressBar(units, label, progress) as bar:
            return [
                unit.run(self._worker, lambda done, i=i: bar.set(i, done))
                for i, unit in enumerate(units)
            ]
