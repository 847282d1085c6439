"""selectkit: choose which examples to fine-tune an LLM on.

The Python API in one import::

    from selectkit import load_pool, select

    pool = load_pool("pool.jsonl", group_field="source")
    target = load_pool("target.jsonl")
    selection = select(pool, "dsir", "5%", target=target, seed=0)

Names are imported on first use, so ``import selectkit`` stays cheap for the CLI and plugins.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "select": "selectkit.api",
    "load_pool": "selectkit.api",
    "load_records_from_list": "selectkit.api",
    "Pool": "selectkit.data.pool",
    "Record": "selectkit.data.pool",
    "hookimpl": "selectkit.markers",
    "Host": "selectkit.host",
    "get_host": "selectkit.host",
    "Context": "selectkit.methods",
    "Method": "selectkit.methods",
    "Selection": "selectkit.selection",
    "Solution": "selectkit.solvers.base",
    "Solver": "selectkit.solvers.base",
    "Budget": "selectkit.solvers.budget",
    "Constraints": "selectkit.solvers.budget",
    "Quota": "selectkit.solvers.budget",
    "LogWeights": "selectkit.solvers.objectives",
    "Objective": "selectkit.solvers.objectives",
    "PerRecord": "selectkit.solvers.objectives",
    "Scores": "selectkit.solvers.objectives",
    "Weights": "selectkit.solvers.objectives",
    "EmbeddingConfig": "selectkit.features.embeddings",
    "FeaturizeConfig": "selectkit.features.featurize",
    "View": "selectkit.features.featurize",
    "embed": "selectkit.api",
    "featurize": "selectkit.api",
    "featurize_views": "selectkit.api",
    "ExecutorConfig": "selectkit.executors",
    "make_executor": "selectkit.executors",
    "score_pool": "selectkit.scoring",
    "FeatureSet": "selectkit.store",
    "FeatureStore": "selectkit.store",
    "ModelOptions": "selectkit.models.loading",
    "load_model": "selectkit.api",
    "LoraSpec": "selectkit.models.lora",
    "FinetuneConfig": "selectkit.train.finetune",
    "finetune": "selectkit.train.finetune",
    "finetune_selection": "selectkit.train.finetune",
    "target_loss": "selectkit.train.evaluate",
    "WarmupConfig": "selectkit.train.warmup",
    "warmup": "selectkit.train.warmup",
    "RetrainConfig": "selectkit.retraining.harness",
    "retrain": "selectkit.retraining.harness",
    "load_runs": "selectkit.retraining.runs",
    "linear_datamodeling_score": "selectkit.retraining.lds",
    "evaluate_lds": "selectkit.api",
}

__all__ = [
    "Budget",
    "Constraints",
    "Context",
    "EmbeddingConfig",
    "ExecutorConfig",
    "FeatureSet",
    "FeatureStore",
    "FeaturizeConfig",
    "FinetuneConfig",
    "Host",
    "LogWeights",
    "LoraSpec",
    "Method",
    "ModelOptions",
    "Objective",
    "PerRecord",
    "Pool",
    "Quota",
    "Record",
    "RetrainConfig",
    "Scores",
    "Selection",
    "Solution",
    "Solver",
    "View",
    "WarmupConfig",
    "Weights",
    "__version__",
    "embed",
    "evaluate_lds",
    "featurize",
    "featurize_views",
    "finetune",
    "finetune_selection",
    "get_host",
    "hookimpl",
    "linear_datamodeling_score",
    "load_model",
    "load_pool",
    "load_records_from_list",
    "load_runs",
    "make_executor",
    "retrain",
    "score_pool",
    "select",
    "target_loss",
    "warmup",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'selectkit' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from selectkit.api import embed, featurize, featurize_views, load_model, load_pool, select
    from selectkit.data.pool import Pool, Record
    from selectkit.executors import ExecutorConfig, make_executor
    from selectkit.features.embeddings import EmbeddingConfig
    from selectkit.features.featurize import FeaturizeConfig, View
    from selectkit.host import Host, get_host
    from selectkit.markers import hookimpl
    from selectkit.methods import Context, Method
    from selectkit.models.loading import ModelOptions
    from selectkit.models.lora import LoraSpec
    from selectkit.scoring import score_pool
    from selectkit.selection import Selection
    from selectkit.solvers.base import Solution, Solver
    from selectkit.solvers.budget import Budget, Constraints, Quota
    from selectkit.solvers.objectives import LogWeights, Objective, PerRecord, Scores, Weights
    from selectkit.store import FeatureSet, FeatureStore
    from selectkit.train.evaluate import target_loss
    from selectkit.train.finetune import FinetuneConfig, finetune, finetune_selection
    from selectkit.train.warmup import WarmupConfig, warmup
