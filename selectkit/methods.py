"""The method contract: a selection method turns a pool (and maybe a target) into an Objective."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, get_args

import numpy as np

from selectkit.data.pool import Pool
from selectkit.errors import ParamError
from selectkit.params import NoParams
from selectkit.solvers.budget import Unit
from selectkit.solvers.objectives import Objective

if TYPE_CHECKING:
    from selectkit.models.loading import LoadedModel, ModelOptions

#: Every budget unit a method can declare in :attr:`Method.budgets`.
BUDGET_UNITS: tuple[Unit, ...] = get_args(Unit)


class Services(Protocol):
    """What a method may ask of the run's plugin host (:class:`selectkit.host.Host` is one):
    other registered classes, and models and tokenizers through the loader hooks. Declared
    here, where methods live, so the method contract does not depend on the host."""

    def method(self, name: str) -> type: ...

    def projector(self, name: str) -> type: ...

    def load_tokenizer(self, spec: str, *, trust_remote_code: bool = False) -> Any: ...

    def load_model(self, spec: str, options: ModelOptions | None = None) -> LoadedModel: ...

    def shared_model(self, spec: str, options: ModelOptions) -> LoadedModel: ...

    def shared_model_if_loaded(self, spec: str, options: ModelOptions) -> LoadedModel | None: ...


class Runner(Protocol):
    """Where a run's heavy passes go as units of work (:class:`selectkit.executors.Executor`
    is one: local processes or Ray actors). Declared here, like :class:`Services`, so the
    method contract does not depend on the executors."""

    @property
    def workers(self) -> int: ...

    def run(self, units: Sequence[Any], *, label: str, progress: bool) -> list[Any]: ...


@dataclass(frozen=True)
class Context:
    """What a run gives every method besides its parameters.

    ``host`` is the run's plugin host: models, tokenizers, projectors and other methods come
    from it, never from a process-wide one. ``store_root`` is the feature store's folder
    (warmups beside it; ``None``: ``SELECTKIT_CACHE_DIR`` or the user cache). ``seed`` is the
    selection's seed: sampling and the randomness of methods that sample, never the warmup's
    or the projection's (those are parameters of the methods that use them, so a new seed
    reuses their work). ``n_jobs`` bounds parallelism (0 means all cores); ``progress`` asks
    for progress bars on long work. ``budget_records`` is the number of records a count or
    fraction budget selects (``None`` for a token budget), for methods whose work depends on
    it; a method that needs it declares ``budgets = ("items",)``, so it never sees ``None``
    from :func:`selectkit.select`. ``executor`` runs the heavy passes (feature extraction,
    token statistics) as units of work on other processes or a Ray cluster; ``None`` runs
    them in this process. ``views`` are what the methods of this run (this one and those
    that will run after it on the same pool) will read about the pool
    (:meth:`Method.pool_views`), so a pass can store them all at once.
    """

    host: Services
    store_root: Path | None = None
    seed: int = 0
    n_jobs: int = 0
    progress: bool = False
    budget_records: int | None = None
    executor: Runner | None = None
    views: frozenset[Any] = frozenset()


class Method(ABC):
    """A data-selection method. Subclass it, set the class attributes and implement
    :meth:`objective`; register the class through ``selectkit_register_methods``.

    ``name`` is what users type after ``--method``. ``Params`` is a frozen dataclass whose fields
    (with defaults and ``metadata={"help": ...}``) are the method's parameters.
    ``needs_target`` says whether the method requires a target set. ``budgets`` are the budget
    units the method honours: ``"items"`` (count and fraction budgets: a number of records)
    and ``"tokens"`` (a total cost); :func:`selectkit.select` refuses any other before the
    method runs. A method whose work needs the number of records (``context.budget_records``),
    or whose objective only count-budget solvers take, declares ``("items",)``.
    """

    name: ClassVar[str]
    Params: ClassVar[type] = NoParams
    needs_target: ClassVar[bool] = False
    budgets: ClassVar[tuple[Unit, ...]] = BUDGET_UNITS

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    @abstractmethod
    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Objective:
        """Score the pool; the solver does the choosing."""

    def attribute(self, pool: Pool, target: Pool, context: Context) -> np.ndarray:
        """Per-example attribution: a float64 ``(len(pool), len(target))`` array whose entry
        ``[i, j]`` is how much training on pool record ``i`` is predicted to *lower* target
        ``j``'s loss (larger helps more; only the order within a column matters to LDS).

        Methods that score each (pool, target) pair override this; the linear datamodeling
        score (:mod:`selectkit.retraining.lds`) is defined for exactly those methods.
        """
        raise ParamError(
            f"method '{self.name}' gives no per-example attribution scores (pool × target), so "
            "it has no linear datamodeling score; `selectkit methods` marks the methods that do "
            "with (attribution)"
        )

    def pool_views(self) -> tuple[Any, ...]:
        """What this method, with its parameters, will read from the feature store about the
        pool; opaque to the core, understood by the method's pipeline (gradient methods give
        :meth:`GradientParams.pool_view`). :func:`selectkit.select` passes every view of the
        methods of a run to each of them, so the first pass over the model stores them all."""
        return ()

    @classmethod
    def attributes(cls) -> bool:
        """Whether the method overrides :meth:`attribute`."""
        return cls.attribute is not Method.attribute

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""
