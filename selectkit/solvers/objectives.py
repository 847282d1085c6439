"""What a method hands to the solver: the kinds of objective selectkit knows how to optimize.

A method never selects by itself; it returns one of these and the solver chooses under the
budget and constraints. New kinds (set functions, gradient matching) are new subclasses with a
solver registered for them through the plugin host; nothing here has to change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Objective:
    """Base class: one value per pool record, aligned with the pool's order."""

    values: np.ndarray

    def __post_init__(self) -> None:
        values = np.ascontiguousarray(self.values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"{type(self).__name__} values must be 1-D, got shape {values.shape}")
        if np.isnan(values).any():
            bad = int(np.flatnonzero(np.isnan(values))[0])
            raise ValueError(f"{type(self).__name__} value of record {bad} is NaN")
        object.__setattr__(self, "values", values)

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
    Selection so training can use them.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.values < 0).any():
            raise ValueError("Weights must be non-negative")
