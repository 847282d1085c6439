"""What a method hands to the solver: the kinds of objective selectkit knows how to optimize.

A method never selects by itself; it returns one of these and the solver chooses under the
budget and constraints. New kinds (set functions, gradient matching) are new subclasses with a
solver registered for them through the plugin host; nothing here has to change.

Objectives are data (scikit-learn's rule for estimators): making one stores its inputs and
checks what is cheap to check (types, shapes, parameter values, the row count a row source
knows), and reads no feature row. What is expensive (the pool's mean, the rows in memory,
singleton values) is computed when a solver first asks for it, once, and kept on the objective,
so the values reported beside the selection are the ones the solver used.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

import numpy as np

from selectkit.errors import ParamError
from selectkit.rows import DEFAULT_MEMORY, CentredRows, RowSource, as_rows, matvec, row_mean
from selectkit.solvers.facility import FacilityState, Similarity, singleton_values


@dataclass(frozen=True, eq=False)
class Objective(ABC):
    """Base class: what the solver optimizes over the pool, one record per pool position.

    Every kind has ``values``, one float per pool record aligned with the pool's order (the
    scores reported beside the selection), and ``len()``, the number of records. Kinds given
    their values subclass :class:`PerRecord`; kinds built on feature rows hold the rows and
    compute their values when a solver first needs them, never when they are made.

    ``eligible`` (optional, boolean per record) is the method's own filter: records it marks
    False are never selected, as if the user had excluded them (e.g. IFD drops records whose
    instruction does not help predict the response). ``ruled_out`` says why, for errors.
    ``report`` is what the method found while scoring that a reader of the run needs (a
    setting it chose from the data, how many records a rule set aside), as JSON values; the
    manifest records it under ``method.report``.
    """

    eligible: np.ndarray | None = field(default=None, kw_only=True)
    ruled_out: str = field(default="", kw_only=True)
    report: Mapping[str, Any] = field(default_factory=dict, kw_only=True)

    def __post_init__(self) -> None:
        if self.eligible is not None:
            eligible = np.asarray(self.eligible)
            if eligible.dtype != np.bool_ or eligible.shape != (len(self),):
                raise ValueError(
                    f"{type(self).__name__} eligible must be a boolean mask of shape "
                    f"({len(self)},), got {eligible.dtype} of shape {eligible.shape}"
                )
            object.__setattr__(self, "eligible", eligible)

    @abstractmethod
    def __len__(self) -> int:
        """The number of pool records."""


@dataclass(frozen=True)
class PerRecord(Objective):
    """An objective given as its values: one float per pool record, never NaN."""

    values: np.ndarray

    def __post_init__(self) -> None:
        values = np.ascontiguousarray(self.values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"{type(self).__name__} values must be 1-D, got shape {values.shape}")
        if np.isnan(values).any():
            bad = int(np.flatnonzero(np.isnan(values))[0])
            raise ValueError(f"{type(self).__name__} value of record {bad} is NaN")
        object.__setattr__(self, "values", values)
        super().__post_init__()

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Scores(PerRecord):
    """Linear utilities: the solver maximizes the sum of the selected records' values."""


@dataclass(frozen=True)
class LogWeights(PerRecord):
    """Log importance weights: sample without replacement with probability proportional to
    ``exp(value)`` (seeded Gumbel top-k), or take the top values when ``sample`` is false."""

    sample: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if np.isposinf(self.values).any():
            raise ValueError("LogWeights may not contain +inf")


@dataclass(frozen=True)
class Weights(PerRecord):
    """Soft, non-negative per-record weights (e.g. from bilevel reweighting).

    The solver keeps the highest-weighted records under the budget; the weights travel on the
    Selection so training can use them. With ``group_weights`` (group name → weight >= 0) the
    group weights travel instead: training on the selection samples each group in proportion to
    its weight (weighting each record's loss by its group's weight as well would count the
    weight twice).
    """

    group_weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.values < 0).any():
            raise ValueError("Weights must be non-negative")
        if self.group_weights is not None:
            groups = {str(name): float(value) for name, value in self.group_weights.items()}
            bad = [
                name for name, value in groups.items() if not (np.isfinite(value) and value >= 0)
            ]
            if bad:
                raise ValueError(f"group weight of {bad[0]!r} must be finite and >= 0")
            if not any(value > 0 for value in groups.values()):
                raise ValueError("group weights are all zero")
            object.__setattr__(self, "group_weights", groups)


METRICS: tuple[str, ...] = ("euclidean", "cosine")
Metric = Literal["euclidean", "cosine"]


@dataclass(frozen=True, eq=False)
class Matching(Objective):
    """Gradient matching (GRAD-MATCH, Killamsetty et al. 2021): choose records ``S`` and weights
    ``w >= 0`` minimizing ``||Σ_{i∈S} w_i f_i − t||²``.

    ``features`` holds one row per pool record (an array or a row source such as a stored
    ``FeatureSet``; it is streamed in chunks of ``memory_limit`` bytes). ``target`` is a *mean*
    gradient (the pool's mean when ``None``); with ``scale_to_budget`` the solver matches
    ``t = k · target`` for a selection of ``k`` records, so the weights average about 1 whatever
    the budget and a weighted loss over the selection has the scale of a plain mean loss.
    Without it ``t = target`` is matched as given (pass a gradient sum to get the paper's
    scale, weights summing to about the number of records it sums). ``l2`` adds the paper's
    ridge term ``l2 · ||w||²``.

    ``values`` is each record's alignment ``<f_i, target>`` with the target: the first
    correlation of OMP, kept for reporting and tie-breaking. It and the pool's mean are computed
    (one streaming pass each) when first asked for, by the solver.
    """

    features: Any
    target: np.ndarray | None = None
    scale_to_budget: bool = field(default=True, kw_only=True)
    l2: float = field(default=0.0, kw_only=True)
    memory_limit: int = field(default=DEFAULT_MEMORY, kw_only=True)

    def __post_init__(self) -> None:
        rows = _rows(self, self.features, self.memory_limit)
        if not (self.l2 >= 0 and np.isfinite(self.l2)):
            raise ParamError(f"l2 must be a finite number >= 0, got {self.l2}")
        if self.target is None:
            if rows.num_rows == 0:
                raise ParamError("there are no feature rows to average")
        else:
            target = np.asarray(self.target, dtype=np.float64)
            if target.shape != (rows.dim,):
                raise ParamError(
                    f"the matching target has shape {target.shape} but the features have "
                    f"dim {rows.dim}; give one target vector of length {rows.dim}"
                )
            if not np.isfinite(target).all():
                raise ParamError("the matching target has a non-finite entry")
            object.__setattr__(self, "target", target)
        object.__setattr__(self, "scale_to_budget", bool(self.scale_to_budget))
        object.__setattr__(self, "l2", float(self.l2))
        super().__post_init__()

    def __len__(self) -> int:
        return self.features.num_rows

    @cached_property
    def target_row(self) -> np.ndarray:
        """The vector matched before scaling: ``target``, or the pool's mean row (float64)."""
        if self.target is not None:
            return self.target
        return row_mean(self.features, self.memory_limit)

    @cached_property
    def values(self) -> np.ndarray:
        return matvec(self.features, self.target_row, self.memory_limit)


class SetEvaluator(Protocol):
    """A set function's state while a greedy solver grows a selection."""

    value: float

    def gains(self, candidates: np.ndarray) -> np.ndarray:
        """Marginal gain of adding each candidate to the current selection."""
        ...

    def add(self, index: int) -> None:
        """Add a record to the current selection."""
        ...

    def weights(self, selected: np.ndarray) -> np.ndarray | None:
        """Training weights of the selected records (aligned with ``selected``), if any."""
        ...


@dataclass(frozen=True, eq=False)
class SetFunction(Objective):
    """A monotone submodular set function ``F`` with ``F(∅) = 0``, maximized by a greedy solver.

    ``values`` are the singleton values ``F({i})``, which by submodularity bound every later
    marginal gain of record ``i`` (lazy greedy starts from them).
    """

    @abstractmethod
    def evaluator(self) -> SetEvaluator:
        """A fresh evaluator at the empty selection."""

    def describe(self) -> dict[str, Any]:
        """What the solver reports about the function in its details."""
        return {"set_function": type(self).__name__}


@dataclass(frozen=True, eq=False)
class FacilityLocation(SetFunction):
    """Facility location (CRAIG, Mirzasoleiman et al. 2020): ``F(S) = Σ_{i∈pool} max_{j∈S}
    sim(i, j)``; selected records' weights are their cluster sizes (how many pool records are
    most similar to them), which sum to the pool size.

    ``metric="euclidean"`` is CRAIG's ``sim(i, j) = D − ||f_i − f_j||`` with ``D =
    2 · max_i ||f_i − mean||``, an upper bound on the largest distance computed in one pass
    (CRAIG uses the exact largest distance, an extra O(n²) pass; above it the greedy's choices do
    not depend on ``D``, only the reported value does). ``metric="cosine"`` is ``(1 + cos)/2``
    in [0, 1]. When the solver first evaluates the function, the features are read into memory
    as float32 (``n × dim × 4`` bytes: centred for euclidean, unit rows for cosine);
    similarities are computed in column blocks of ``memory_limit`` bytes, never as an ``n × n``
    matrix. ``values`` (one O(n² · dim) pass) are the singleton values ``F({j})``.
    """

    features: Any
    metric: Metric = field(default="euclidean", kw_only=True)
    memory_limit: int = field(default=DEFAULT_MEMORY, kw_only=True)

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if _rows(self, self.features, self.memory_limit).num_rows == 0:
            raise ParamError("facility location needs at least one feature row")
        super().__post_init__()

    def __len__(self) -> int:
        return self.features.num_rows

    @cached_property
    def similarity(self) -> Similarity:
        """The pool's rows in memory and their pairwise similarities, built once."""
        return Similarity(self.features, self.metric, self.memory_limit)

    @cached_property
    def values(self) -> np.ndarray:
        return singleton_values(self.similarity)

    def evaluator(self) -> SetEvaluator:
        return FacilityState(self.similarity)

    def describe(self) -> dict[str, Any]:
        return {
            "set_function": "FacilityLocation",
            "metric": self.metric,
            "max_similarity": self.similarity.top,
        }


@dataclass(frozen=True, eq=False)
class KCenter(Objective):
    """k-center (Sener and Savarese 2018): records whose features leave every pool record close
    to one of them, solved by farthest-first traversal (the ``kcenter`` solver). A diversity
    objective: it ignores how typical a record is and covers the outskirts of the pool too.

    ``metric="euclidean"`` is the distance of the feature rows; ``"cosine"`` that of the rows
    scaled to unit length. ``weighted`` puts cluster sizes (how many pool records have each
    center as their nearest) on the selection as training weights. When the solver starts, the
    rows are read into memory as float32 (:class:`~selectkit.rows.CentredRows`). ``values`` are
    each record's distance to the pool's mean (how atypical it is), reported beside the
    selection; the solver does not use them.
    """

    features: Any
    metric: Metric = field(default="euclidean", kw_only=True)
    weighted: bool = field(default=False, kw_only=True)
    memory_limit: int = field(default=DEFAULT_MEMORY, kw_only=True)

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if _rows(self, self.features, self.memory_limit).num_rows == 0:
            raise ParamError("k-center needs at least one feature row")
        object.__setattr__(self, "weighted", bool(self.weighted))
        super().__post_init__()

    def __len__(self) -> int:
        return self.features.num_rows

    @cached_property
    def centred(self) -> CentredRows:
        """The pool's rows in memory, centred (unit length first for cosine), read once."""
        return CentredRows.read(self.features, self.memory_limit, unit=self.metric == "cosine")

    @cached_property
    def values(self) -> np.ndarray:
        return np.sqrt(self.centred.sq)


def _rows(objective: Objective, features: Any, memory_limit: int) -> RowSource:
    """Check the feature-row inputs every row objective shares, and keep ``features`` as a
    row source (an array is wrapped) and ``memory_limit`` as an int; nothing is read."""
    if (
        isinstance(memory_limit, bool)
        or not isinstance(memory_limit, int | np.integer)
        or memory_limit < 1
    ):
        raise ParamError(f"memory_limit must be a positive number of bytes, got {memory_limit!r}")
    rows = as_rows(features)
    object.__setattr__(objective, "features", rows)
    object.__setattr__(objective, "memory_limit", int(memory_limit))
    return rows


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ParamError(f"metric must be {' or '.join(METRICS)}, not '{metric}'")
