"""The solver contract: turn an objective into a selection under a resolved budget."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from selectkit.params import NoParams
from selectkit.solvers.budget import Problem
from selectkit.solvers.objectives import Objective


@dataclass(frozen=True)
class Solution:
    """What a solver chose, and how good that choice provably is.

    ``indices`` are pool positions in selection order (best first, or sampling order).
    ``bound`` is an upper bound on the objective (an LP relaxation) when the solver knows one;
    ``gap`` is then the relative distance of the objective below it. ``weights``, when a
    solver sets it, holds one non-negative training weight per selected record, aligned with
    ``indices`` (gradient matching's fitted weights, CRAIG's cluster sizes).
    """

    indices: np.ndarray
    objective: float
    solver: str
    status: Literal["optimal", "feasible", "sampled"]
    used: int
    bound: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.weights is None:
            return
        weights = np.asarray(self.weights, dtype=np.float64)
        if weights.shape != (len(self.indices),):
            raise ValueError(
                f"solver '{self.solver}' gave {weights.shape} weights for "
                f"{len(self.indices)} selected records; give one per selected record"
            )
        if not (np.isfinite(weights) & (weights >= 0)).all():
            raise ValueError(f"solver '{self.solver}' gave weights that are negative or not finite")
        object.__setattr__(self, "weights", weights)

    @property
    def gap(self) -> float | None:
        if self.bound is None:
            return None
        return max(0.0, self.bound - self.objective) / max(abs(self.bound), 1e-12)


class Solver(ABC):
    """A way of choosing records. Subclass, set ``name`` and ``objectives``, and register the
    class through ``selectkit_register_solvers``. ``Params`` is a dataclass of options."""

    name: ClassVar[str]
    objectives: ClassVar[tuple[type[Objective], ...]]
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    def accepts(self, objective: Objective, problem: Problem) -> bool:
        """Whether this solver can handle the objective under this problem."""
        return isinstance(objective, self.objectives)

    @abstractmethod
    def solve(self, objective: Objective, problem: Problem, *, seed: int) -> Solution:
        """Choose records; must be deterministic for a given seed."""
