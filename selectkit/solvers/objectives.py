"""What a method hands to the solver: the kinds of objective selectkit knows how to optimize.

A method never selects by itself; it returns one of these and the solver chooses under the
budget and constraints. New kinds (set functions, gradient matching) are new subclasses with a
solver registered for them through the plugin host; nothing here has to change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from selectkit.errors import ParamError


@dataclass(frozen=True)
class Objective:
    """Base class: one value per pool record, aligned with the pool's order.

    ``eligible`` (optional, boolean per record) is the method's own filter: records it marks
    False are never selected, as if the user had excluded them (e.g. IFD drops records whose
    instruction does not help predict the response). ``ruled_out`` says why, for errors.
    """

    values: np.ndarray
    eligible: np.ndarray | None = field(default=None, kw_only=True)
    ruled_out: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        values = np.ascontiguousarray(self.values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"{type(self).__name__} values must be 1-D, got shape {values.shape}")
        if np.isnan(values).any():
            bad = int(np.flatnonzero(np.isnan(values))[0])
            raise ValueError(f"{type(self).__name__} value of record {bad} is NaN")
        object.__setattr__(self, "values", values)
        if self.eligible is not None:
            eligible = np.asarray(self.eligible)
            if eligible.dtype != np.bool_ or eligible.shape != values.shape:
                raise ValueError(
                    f"{type(self).__name__} eligible must be a boolean mask of shape "
                    f"{values.shape}, got {eligible.dtype} of shape {eligible.shape}"
                )
            object.__setattr__(self, "eligible", eligible)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class Scores(Objective):
    """Linear utilities: the solver maximizes the sum of the selected records' values."""


@dataclass(frozen=True)
class LogWeights(Objective):
    """Log importance weights: sample without replacement with probability proportional to
    ``exp(value)`` (seeded Gumbel top-k), or take the top values when ``sample`` is false."""

    sample: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if np.isposinf(self.values).any():
            raise ValueError("LogWeights may not contain +inf")


@dataclass(frozen=True)
class Weights(Objective):
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


#: Bytes the matching and facility-location objectives use for a chunk of rows by default.
CHUNK_MEMORY = 256 << 20


@dataclass(frozen=True, init=False)
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

    ``values`` (computed here, one streaming pass) is each record's alignment ``<f_i, target>``
    with the target: the first correlation of OMP, kept for reporting and tie-breaking.
    """

    features: Any
    target: np.ndarray
    scale_to_budget: bool
    l2: float
    memory_limit: int

    def __init__(
        self,
        features: Any,
        target: np.ndarray | None = None,
        *,
        scale_to_budget: bool = True,
        l2: float = 0.0,
        memory_limit: int = CHUNK_MEMORY,
    ) -> None:
        from selectkit.solvers.rows import as_rows, matvec, row_mean

        rows = as_rows(features)
        if not (l2 >= 0 and np.isfinite(l2)):
            raise ParamError(f"l2 must be a finite number >= 0, got {l2}")
        if memory_limit < 1:
            raise ParamError(f"memory_limit must be a positive number of bytes, got {memory_limit}")
        if target is None:
            vector = row_mean(rows, memory_limit)
        else:
            vector = np.asarray(target, dtype=np.float64)
            if vector.shape != (rows.dim,):
                raise ParamError(
                    f"the matching target has shape {vector.shape} but the features have "
                    f"dim {rows.dim}; give one target vector of length {rows.dim}"
                )
            if not np.isfinite(vector).all():
                raise ParamError("the matching target has a non-finite entry")
        for name, value in (
            ("features", rows),
            ("target", vector),
            ("scale_to_budget", bool(scale_to_budget)),
            ("l2", float(l2)),
            ("memory_limit", int(memory_limit)),
            ("values", matvec(rows, vector, memory_limit)),
        ):
            object.__setattr__(self, name, value)
        self.__post_init__()


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


@dataclass(frozen=True)
class SetFunction(Objective, ABC):
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


@dataclass(frozen=True, init=False)
class FacilityLocation(SetFunction):
    """Facility location (CRAIG, Mirzasoleiman et al. 2020): ``F(S) = Σ_{i∈pool} max_{j∈S}
    sim(i, j)``; selected records' weights are their cluster sizes (how many pool records are
    most similar to them), which sum to the pool size.

    ``metric="euclidean"`` is CRAIG's ``sim(i, j) = D − ||f_i − f_j||`` with ``D =
    2 · max_i ||f_i − mean||``, an upper bound on the largest distance computed in one pass
    (CRAIG uses the exact largest distance, an extra O(n²) pass; above it the greedy's choices do
    not depend on ``D``, only the reported value does). ``metric="cosine"`` is ``(1 + cos)/2``
    in [0, 1]. The features are held in memory as float32 (``n × dim × 4`` bytes); similarities
    are computed in column blocks of ``memory_limit`` bytes, never as an ``n × n`` matrix.
    ``values`` (computed here, one O(n² · dim) pass) are the singleton values ``F({j})``.
    """

    similarity: Any
    metric: str

    def __init__(
        self,
        features: Any,
        *,
        metric: Literal["euclidean", "cosine"] = "euclidean",
        memory_limit: int = CHUNK_MEMORY,
    ) -> None:
        from selectkit.solvers.facility import Similarity, singleton_values
        from selectkit.solvers.rows import as_rows

        similarity = Similarity(as_rows(features), metric, memory_limit)
        object.__setattr__(self, "similarity", similarity)
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "values", singleton_values(similarity))
        self.__post_init__()

    def evaluator(self) -> SetEvaluator:
        from selectkit.solvers.facility import FacilityState

        return FacilityState(self.similarity)

    def describe(self) -> dict[str, Any]:
        return {
            "set_function": "FacilityLocation",
            "metric": self.metric,
            "max_similarity": self.similarity.top,
        }


@dataclass(frozen=True, init=False)
class KCenter(Objective):
    """k-center (Sener and Savarese 2018): records whose features leave every pool record close
    to one of them, solved by farthest-first traversal (``kcenter`` solver). A diversity
    objective: it ignores how typical a record is and covers the outskirts of the pool too.

    ``metric="euclidean"`` is the distance of the feature rows; ``"cosine"`` that of the rows
    scaled to unit length. ``weighted`` puts cluster sizes (how many pool records have each
    center as their nearest) on the selection as training weights. The rows are held in memory
    as float32. ``values`` are each record's distance to the pool's mean (how atypical it is),
    reported beside the selection; the solver does not use them.
    """

    distances: Any
    metric: str
    weighted: bool

    def __init__(
        self,
        features: Any,
        *,
        metric: Literal["euclidean", "cosine"] = "euclidean",
        weighted: bool = False,
        memory_limit: int = CHUNK_MEMORY,
    ) -> None:
        from selectkit.solvers.kcenter import Distances
        from selectkit.solvers.rows import as_rows, read_all

        if metric not in ("euclidean", "cosine"):
            raise ParamError(f"metric must be euclidean or cosine, not '{metric}'")
        source = as_rows(features)
        if source.num_rows == 0:
            raise ParamError("k-center needs at least one feature row")
        rows = read_all(source, memory_limit)
        if metric == "cosine":
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
            rows = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
        distances = Distances(rows)
        object.__setattr__(self, "distances", distances)
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "weighted", bool(weighted))
        object.__setattr__(self, "values", np.sqrt(distances.sq))
        self.__post_init__()
