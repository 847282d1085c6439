"""Retraining as units of work: one model of the run per unit, on any executor.

Model ``m`` is the retrain shard ``(m, M)``: a worker loads the base model once (its host's
shared model), trains model ``m`` and writes its outcome through the run folder's own per-model
lock and atomic files, so the folder ends as a one-process run leaves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from selectkit.executors import Executor, Report, Worker
from selectkit.retraining.harness import RetrainConfig, retrain
from selectkit.retraining.runs import RetrainRuns, load_runs

if TYPE_CHECKING:
    from selectkit.data.pool import Pool
    from selectkit.models.loading import ModelOptions


@dataclass(frozen=True)
class RetrainModel:
    """Train model ``index`` of the run in ``out_dir`` (skipped when it is finished)."""

    pool: Pool
    target: Pool
    model: str
    model_options: ModelOptions
    out_dir: str
    config: RetrainConfig
    index: int
    size: int = 1

    @property
    def label(self) -> str:
        return f"retrain model {self.index}"

    def run(self, worker: Worker, report: Report) -> None:
        loaded = worker.host.shared_model(self.model, self.model_options)
        shard = (self.index, self.config.models)
        retrain(
            self.pool,
            self.target,
            loaded.model,
            loaded.tokenizer,
            self.out_dir,
            self.config,
            shard=shard,
            progress=report,
        )


def retrain_on(
    executor: Executor,
    pool: Pool,
    target: Pool,
    model: str,
    model_options: ModelOptions,
    out_dir: str | Path,
    config: RetrainConfig,
    *,
    progress: bool = True,
) -> RetrainRuns:
    """:func:`~selectkit.retraining.harness.retrain` with each of ``config.models`` models a
    unit of ``executor``'s work; the whole run, as :func:`load_runs` reads it."""
    folder = str(Path(out_dir).resolve())
    units = [
        RetrainModel(pool, target, model, model_options, folder, config, index)
        for index in range(config.models)
    ]
    executor.run(units, label="retrain models", progress=progress)
    return load_runs(folder)
