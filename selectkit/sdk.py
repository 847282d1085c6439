"""Everything a selection method's author needs, in one import.

A method is a :class:`Method` subclass with a frozen dataclass of parameters, registered
through ``selectkit_register_methods`` with :data:`hookimpl`. Its ``objective`` scores the pool
and returns an :class:`Objective` (per-record :class:`Scores`, :class:`Weights`, or a set
function such as :class:`FacilityLocation`); the shared solver chooses under the user's budget.

A method that runs the model subclasses :class:`ModelParams` and builds a
:class:`ModelPipeline`; a gradient method subclasses :class:`GradientParams` (or
:class:`RowParams` to hold feature rows in memory) and builds a :class:`GradientPipeline`, which
gives it checkpoints, feature sets from the shared store and their rows. See CONTRIBUTING.md
for a complete gradient method.
"""

from selectkit.data.pool import Pool, Record
from selectkit.errors import ParamError
from selectkit.features.params import (
    CheckpointsUsed,
    GradientParams,
    ModelParams,
    PoolView,
    RowParams,
)
from selectkit.features.pipeline import (
    GradientPipeline,
    ModelPipeline,
    check_pairs,
    learning_rates,
)
from selectkit.features.statistics import StatisticsConfig, token_statistics, without_instruction
from selectkit.markers import hookimpl
from selectkit.methods import Context, Method
from selectkit.resources import check_memory
from selectkit.rows import ArrayRows, RowSource, iter_chunks, read_all, row_mean
from selectkit.scoring import iter_similarity, score_pool, similarity_matrix
from selectkit.solvers.objectives import (
    FacilityLocation,
    KCenter,
    LogWeights,
    Matching,
    Objective,
    PerRecord,
    Scores,
    Weights,
)
from selectkit.store import FeatureSet

__all__ = [
    "ArrayRows",
    "CheckpointsUsed",
    "Context",
    "FacilityLocation",
    "FeatureSet",
    "GradientParams",
    "GradientPipeline",
    "KCenter",
    "LogWeights",
    "Matching",
    "Method",
    "ModelParams",
    "ModelPipeline",
    "Objective",
    "ParamError",
    "PerRecord",
    "Pool",
    "PoolView",
    "Record",
    "RowParams",
    "RowSource",
    "Scores",
    "StatisticsConfig",
    "Weights",
    "check_memory",
    "check_pairs",
    "hookimpl",
    "iter_chunks",
    "iter_similarity",
    "learning_rates",
    "read_all",
    "row_mean",
    "score_pool",
    "similarity_matrix",
    "token_statistics",
    "without_instruction",
]
