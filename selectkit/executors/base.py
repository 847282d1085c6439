"""The executor contract: a heavy pass split into units of work, run by some set of workers.

A :class:`Unit` is plain data (a shard of a store entry, one model of a retraining run, a chunk
of a corpus) whose :meth:`Unit.run` does its work on a :class:`Worker`. Units are idempotent:
they write through the store's or the run folder's own resumable operations, so a unit run
twice, or run again after its worker was killed part-way, ends with the same bytes. That is what
lets every executor retry freely and still give a result byte-identical to one process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from selectkit.errors import ParamError
from selectkit.params import help_text

if TYPE_CHECKING:
    from selectkit.methods import Services

ExecutorKind = Literal["inprocess", "processes", "ray"]
#: Told how many of a unit's rows (or models, or records) are done so far in this attempt.
Report = Callable[[int], None]
#: How many times a unit is started before its failure is the run's.
ATTEMPTS = 3
#: Set in every worker's environment unless the caller's sets them. Workers run on the caller's
#: thread count (for its bytes), so several of them oversubscribe the cores, and OpenMP's
#: default spin-waiting then stalls them (measured: a featurize pass on 2 workers x 2 threads
#: on 2 cores took 10.9 s spinning, 0.9 s passive).
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def worker_environment(passed: dict[str, str]) -> dict[str, str]:
    """``passed`` with :data:`WORKER_ENV`'s settings where it has none of its own."""
    return {**WORKER_ENV, **passed}


class Unit(Protocol):
    """One piece of a pass, sent to a worker. ``size`` is its share of the progress bar (rows,
    models or records); ``label`` names it in errors."""

    size: int

    @property
    def label(self) -> str: ...

    def run(self, worker: Worker, report: Report) -> Any:
        """Do the work on ``worker``, telling ``report`` the running total of what is done;
        return a small plain result (entry ids, counts)."""


class Worker:
    """What a unit may use where it runs: the worker's plugin host, whose one shared model
    (:meth:`~selectkit.host.Host.shared_model`) is loaded once and kept for every unit the
    worker runs, and a memo for other per-worker work a later unit can reuse (tokenized pools)."""

    def __init__(self, host: Services) -> None:
        self.host = host
        self.memo: dict[Any, Any] = {}


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the heavy passes run: ``executor`` ``inprocess`` is this process, the default;
    ``processes`` starts ``workers`` local processes; ``ray`` runs ``workers`` actors on a Ray
    cluster (the one at ``ray_address``, or a local one started for the run), each holding
    its model once."""

    executor: ExecutorKind = field(
        default="inprocess",
        metadata=help_text("where heavy passes run: inprocess, processes or ray"),
    )
    workers: int = field(
        default=0,
        metadata=help_text(
            "worker processes or actors; 0: one per CPU core (ray with a GPU model: one per GPU)"
        ),
    )
    threads: int = field(
        default=0,
        metadata=help_text(
            "torch threads in each worker; 0: as many as this process uses, which keeps results "
            "bit-identical to a run here (float sums depend on the thread count)"
        ),
    )
    ray_address: str | None = field(
        default=None,
        metadata=help_text("Ray cluster to join (e.g. ray://head:10001 or auto); none: start one"),
    )

    def __post_init__(self) -> None:
        if self.executor not in ("inprocess", "processes", "ray"):
            raise ParamError(f"executor must be inprocess, processes or ray, not '{self.executor}'")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ParamError(f"{name} must be a whole number, not {value!r}")
            if value < 0:
                raise ParamError(f"{name} must be 0 (the default) or more, not {value}")
        if self.ray_address is not None and self.executor != "ray":
            raise ParamError("ray_address is only for executor 'ray'")


class Executor(ABC):
    """Runs units of work and gives their results in the order of the units.

    Every executor retries a unit whose worker died (up to :data:`ATTEMPTS` starts) and shows
    one progress bar over all units, whatever worker reports."""

    #: Whether units run in the caller's process, with its host and its loaded model.
    in_process: bool = False

    @property
    @abstractmethod
    def workers(self) -> int:
        """How many units can run at once."""

    @abstractmethod
    def run(self, units: Sequence[Unit], *, label: str, progress: bool) -> list[Any]:
        """Each unit's result, in order; the first unit that fails every attempt raises."""

    def close(self) -> None:  # noqa: B027 -- a no-op for executors that hold no workers
        """Release the workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProgressBar:
    """One bar over many units: each unit's latest running total, so a retried unit (which
    reports again from what its killed attempt left done) is not counted twice."""

    def __init__(self, units: Sequence[Unit], label: str, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self._done = [0] * len(units)
        self._bar = tqdm(total=sum(u.size for u in units), desc=label, disable=not enabled)

    def set(self, index: int, done: int) -> None:
        self._done[index] = done
        total = sum(self._done)
        self._bar.update(total - self._bar.n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def counting(report: Callable[[int], None]) -> Callable[[int], None]:
    """Turn per-step increments into the running total a :data:`Report` wants."""
    total = 0

    def add(done: int) -> None:
        nonlocal total
        total += done
        report(total)

    return add
