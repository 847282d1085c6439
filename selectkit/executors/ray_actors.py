"""Ray: units of work on actors of a Ray cluster, one model held per actor.

``pip install 'selectkit[ray]'``. Each actor builds its own plugin host from the environment
(the ``SELECTKIT_*``, ``HF_*`` and ``XDG_CACHE_HOME`` variables of the driver are passed on)
and keeps its loaded model between units; an actor on a GPU model asks Ray for one GPU, so
there is one actor per device. An actor whose process dies is restarted by Ray and its unit
retried there (:data:`~selectkit.executors.base.ATTEMPTS` starts in all), resuming from what the
dead one stored. Units write to the store and run folders by path: every actor must see the
same filesystem at the same paths (one machine, or a shared filesystem on a cluster).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from selectkit.errors import ParamError
from selectkit.executors.base import (
    ATTEMPTS,
    Executor,
    ProgressBar,
    Unit,
    Worker,
    worker_environment,
)
from selectkit.executors.outcomes import Outcome, attempt
from selectkit.executors.processes import WorkerLost

#: Environment variables an actor needs to act as the driver would.
PASSED_ON = (
    *("SELECTKIT_", "HF_", "TRANSFORMERS_", "XDG_CACHE_HOME", "TOKENIZERS_PARALLELISM"),
    "OMP_",
)
#: Seconds between looks at the progress the actors reported.
POLL = 0.5


class RayWorker:
    """An actor: one :class:`Worker` (host and loaded model) for every unit sent to it."""

    def __init__(self, threads: int) -> None:
        import torch

        from selectkit.host import Host

        torch.set_num_threads(threads)
        self._worker = Worker(Host.from_env())

    def run(self, index: int, unit: Unit, progress: Any) -> Outcome:
        return attempt(unit, self._worker, lambda done: progress.set.remote(index, done))

    def pid(self) -> int:
        """The actor's process id (tests kill it to check the retry)."""
        return os.getpid()


class ProgressBoard:
    """An actor holding each unit's latest running total, which the driver reads."""

    def __init__(self) -> None:
        self._done: dict[int, int] = {}

    def set(self, index: int, done: int) -> None:
        self._done[index] = done

    def read(self) -> dict[int, int]:
        return dict(self._done)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ParamError(
            "executor 'ray' needs Ray: pip install 'selectkit[ray]' (or use --executor processes)"
        ) from None
    return ray


class RayExecutor(Executor):
    """``workers`` actors on the Ray cluster at ``address`` (``None``: the cluster this process
    is already connected to, or a local one started now and stopped by :meth:`close`). Each
    actor takes a GPU when ``gpu`` (``None``: when the cluster has any), or an equal share of
    one when there are more workers than GPUs. 0 workers: one per GPU, or one per CPU of the
    cluster. Each actor runs torch on ``threads`` threads (0: as many
    as this process uses, for the bytes of a run here); Ray schedules it as one CPU."""

    def __init__(
        self,
        workers: int = 0,
        address: str | None = None,
        *,
        gpu: bool | None = None,
        threads: int = 0,
    ) -> None:
        import torch

        ray = _ray()
        threads = threads or torch.get_num_threads()
        self._started = False
        if not ray.is_initialized():
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
                raise ParamError(f"could not start or join {where}: {exc}") from None
            self._started = True
        resources = ray.cluster_resources()
        if gpu is None:
            gpu = resources.get("GPU", 0) >= 1
        if gpu and resources.get("GPU", 0) < 1:
            raise ParamError(
                "the model is on a GPU but the Ray cluster has none; run on a cluster with GPUs "
                "or give device=cpu"
            )
        available = int(resources.get("GPU" if gpu else "CPU", 1))
        self._count = workers or max(1, available)
        # A CPU (and a GPU) each, or an equal share when there are more workers than devices:
        # an actor asking for more than the cluster has would wait for ever.
        per_worker = {"num_cpus": min(1.0, resources.get("CPU", 1) / self._count)}
        if gpu:
            per_worker["num_gpus"] = min(1.0, resources["GPU"] / self._count)
        env = worker_environment({k: v for k, v in os.environ.items() if k.startswith(PASSED_ON)})
        actor = ray.remote(RayWorker).options(
            **per_worker,
            max_restarts=ATTEMPTS - 1,
            max_task_retries=ATTEMPTS - 1,
            runtime_env={"env_vars": env},
        )
        self._actors = [actor.remote(threads) for _ in range(self._count)]
        self._board = ray.remote(ProgressBoard).options(num_cpus=0).remote()

    @property
    def workers(self) -> int:
        return self._count

    def worker_pids(self) -> list[int]:
        """Each actor's process id."""
        ray = _ray()
        return ray.get([actor.pid.remote() for actor in self._actors])

    def run(self, units: Sequence[Unit], *, label: str, progress: bool) -> list[Any]:
        ray = _ray()
        results: list[Any] = [None] * len(units)
        waiting = list(range(len(units)))[::-1]
        running: dict[Any, tuple[int, Any]] = {}  # result ref -> (unit index, actor)
        idle = list(self._actors)
        with ProgressBar(units, label, progress) as bar:
            while waiting or running:
                while idle and waiting:
                    index, actor = waiting.pop(), idle.pop()
                    ref = actor.run.remote(index, units[index], self._board)
                    running[ref] = (index, actor)
                done, _ = ray.wait(list(running), num_returns=1, timeout=POLL)
                for index, count in ray.get(self._board.read.remote()).items():
                    bar.set(index, count)
                for ref in done:
                    index, actor = running.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:
                        raise WorkerLost(
                            f"{units[index].label}: its Ray actor died {ATTEMPTS} times "
                            f"({type(exc).__name__}); check memory (lower batch_size) and the "
                            "actor logs (ray logs)"
                        ) from None
                    results[index] = outcome.unwrap(units[index])
                    idle.append(actor)
        return results

    def close(self) -> None:
        ray = _ray()
        for actor in self._actors:
            ray.kill(actor)
        ray.kill(self._board)
        self._actors = []
        if self._started:
            ray.shutdown()
