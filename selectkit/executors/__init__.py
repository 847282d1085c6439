"""Where heavy passes run: in this process, in local worker processes, or on Ray actors.

A pass (featurize, the token statistics, retraining, DSIR's hashing) splits its work into
:class:`~selectkit.executors.base.Unit`\\ s and gives them to the run's executor; every backend
gives the same bytes, because every unit writes through a resumable, shard-exact operation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from selectkit.executors.base import (
    ATTEMPTS,
    Executor,
    ExecutorConfig,
    ExecutorKind,
    Report,
    Unit,
    Worker,
    counting,
)
from selectkit.executors.inprocess import InProcess

if TYPE_CHECKING:
    from selectkit.methods import Services

__all__ = [
    "ATTEMPTS",
    "Executor",
    "ExecutorConfig",
    "ExecutorKind",
    "InProcess",
    "Report",
    "Unit",
    "Worker",
    "counting",
    "make_executor",
]


def make_executor(config: ExecutorConfig, host: Services, *, device: str = "auto") -> Executor:
    """The executor ``config`` names; ``host`` serves in-process units. The model's ``device``
    decides whether each Ray actor takes a GPU of its own (``auto``: when the cluster has
    GPUs)."""
    if config.executor == "inprocess":
        return InProcess(host)
    import torch

    threads = config.threads or torch.get_num_threads()
    if config.executor == "processes":
        from selectkit.executors.processes import LocalProcesses

        return LocalProcesses(config.workers, threads=threads)
    from selectkit.executors.ray_actors import RayExecutor

    gpu = None if device == "auto" else not device.startswith("cpu")
    return RayExecutor(config.workers, config.ray_address, gpu=gpu, threads=threads)
