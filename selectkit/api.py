"""The Python entry points: ``select`` (a method by name under a budget and constraints, giving a
Selection) and ``load_pool``. Here, and in the command line, is where a run takes the
process-wide host when it is not given one; everything below receives it."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from selectkit.data import load
from selectkit.data.formats import LoadOptions
from selectkit.data.pool import Pool
from selectkit.errors import BudgetError, ParamError, PluginError
from selectkit.executors import Executor, ExecutorConfig, make_executor
from selectkit.host import Host, get_host
from selectkit.manifest import build_manifest, plugin_of
from selectkit.methods import BUDGET_UNITS, Context, Method
from selectkit.params import build_params
from selectkit.seeds import check_seed
from selectkit.selection import Selection
from selectkit.solvers.budget import Budget, Constraints, Problem, resolve, rule_out
from selectkit.solvers.dispatch import solve
from selectkit.solvers.objectives import Objective, Weights

if TYPE_CHECKING:
    from selectkit.models.loading import LoadedModel, ModelOptions
    from selectkit.retraining.lds import LdsResult
    from selectkit.retraining.runs import RetrainRuns
    from selectkit.store import FeatureSet, FeatureStore


def select(
    pool: Pool,
    method: str | Method,
    budget: Budget | str | int | float,
    *,
    target: Pool | None = None,
    constraints: Constraints | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    solver: str | None = None,
    solver_params: Mapping[str, Any] | None = None,
    n_jobs: int = 0,
    progress: bool = False,
    allow_empty: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    host: Host | None = None,
    executor: Executor | ExecutorConfig | None = None,
    alongside: Sequence[Method] = (),
) -> Selection:
    """Select records of ``pool`` with ``method`` under ``budget`` and ``constraints``.

    ``method`` is a registered name (``"dsir"``) or a configured Method instance; ``params``
    are that method's parameters (strings are converted to their declared types). The budget
    (in a unit the method declares: :attr:`Method.budgets`), quotas, target, seed and
    parameters are all checked before the method does any work. A selection of no records is
    an error (it is never what a training run wants) unless ``allow_empty``. ``cache_dir`` is
    the feature store's folder (default: ``SELECTKIT_CACHE_DIR`` or the user cache); ``host``
    the plugin host (default: the process-wide one, built from the environment); ``executor``
    where the method's heavy passes run (an :class:`Executor` kept by the caller, or an
    :class:`ExecutorConfig` whose workers live for this call; default: this process);
    ``alongside`` the other methods of the same run on this pool (a comparison, the demo), whose
    features the method's pass stores too (:meth:`Method.pool_views`).
    """
    host = host or get_host()
    store_root = _store_root(cache_dir)
    started = time.perf_counter()
    seed = check_seed(seed)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 0:
        raise ParamError(f"n_jobs must be 0 (every core) or a positive number, not {n_jobs!r}")
    method_obj = _method(host, method, params)
    budget = Budget.parse(budget)
    check_budget_unit(method_obj, budget, host)
    constraints = constraints or Constraints()
    if method_obj.needs_target and (target is None or len(target) == 0):
        raise ParamError(f"method '{method_obj.name}' needs a target set (--target FILE)")
    codes, group_names = pool.group_codes()
    problem = resolve(
        budget,
        constraints,
        costs=pool.costs,
        group_codes=codes,
        group_names=group_names,
        id_positions=pool.id_positions,
    )
    solver_obj = None
    if solver is not None:
        solver_cls = host.solver(solver)
        solver_obj = solver_cls(build_params(solver_cls.Params, solver_params or {}, solver))
    elif solver_params:
        raise ParamError("solver parameters were given without --solver NAME")

    if not allow_empty and problem.unit == "tokens":
        _check_fits_one(problem, budget, pool.cost_unit)
    checked = time.perf_counter()
    device = getattr(method_obj.params, "device", "auto")
    with running(executor, host, device) as runner:
        context = Context(
            host=host,
            store_root=store_root,
            seed=seed,
            n_jobs=n_jobs,
            progress=progress,
            budget_records=problem.limit if problem.unit != "tokens" else None,
            executor=runner,
            views=frozenset(v for m in (method_obj, *alongside) for v in m.pool_views()),
        )
        objective = method_obj.objective(pool, target, context)
    _check_objective(method_obj, objective, len(pool), host)
    if objective.eligible is not None:
        why = f"method '{method_obj.name}'" + (
            f" ({objective.ruled_out})" if objective.ruled_out else ""
        )
        problem = rule_out(problem, ~objective.eligible, why)
    scored = time.perf_counter()
    solution = solve(objective, problem, seed=seed, solver=solver_obj, host=host)
    solved = time.perf_counter()

    indices = np.asarray(solution.indices, dtype=np.int64)
    if len(indices) == 0 and not allow_empty:
        raise BudgetError(
            f"the selection is empty: {solution.solver} chose no record under budget {budget} "
            f"({solution.status}); nothing was written. A token budget leaves out records whose "
            "score is not positive; raise the budget, or allow an empty selection (--allow-empty)"
        )
    weights = solution.weights
    group_weights = objective.group_weights if isinstance(objective, Weights) else None
    if weights is None and isinstance(objective, Weights) and group_weights is None:
        weights = objective.values[indices]
    ids = pool.ids_of(indices)
    timings = {
        "checks_s": checked - started,
        "method_s": scored - checked,
        "solver_s": solved - scored,
        "total_s": solved - started,
    }
    manifest = build_manifest(
        host=host,
        method=method_obj,
        pool=pool,
        target=target,
        budget=budget,
        constraints=constraints,
        problem=problem,
        objective=objective,
        solution=solution,
        indices=indices,
        ids=ids,
        weights=weights,
        group_weights=group_weights,
        seed=seed,
        timings=timings,
    )
    return Selection(indices, ids, objective.values, weights, solution, manifest, group_weights)


#: For each budget unit: what a method that takes only that unit selects, what the budget is
#: called, and how it is written.
_UNIT_WORDS = {
    "items": ("selects a number of records", "a count budget", "-b 500 or -b 5%"),
    "tokens": ("selects up to a total cost", "a token budget", "-b 200000tok"),
}


def check_budget_unit(method: Method, budget: Budget, host: Host) -> None:
    """A budget in a unit the method does not declare (:attr:`Method.budgets`) is refused
    before the method runs; a declaration that names no known unit is a bug of its plugin."""
    declared = method.budgets
    if not (isinstance(declared, tuple) and declared and set(declared) <= set(BUDGET_UNITS)):
        raise PluginError(
            f"method '{method.name}' ({_provider(host, method)}) declares budgets {declared!r}, "
            f"not a tuple of {' and '.join(map(repr, BUDGET_UNITS))}; this is a bug in that "
            "plugin: report it to its authors"
        )
    if budget.unit not in declared:
        selects, name, written = _UNIT_WORDS[declared[0]]
        raise ParamError(
            f"method '{method.name}' {selects}: use {name} ({written}), not "
            f"{_UNIT_WORDS[budget.unit][1]} ({budget})"
        )


def _check_fits_one(problem: Problem, budget: Budget, unit: str) -> None:
    """A token budget below every selectable record's cost can only select nothing: say so
    before the method runs."""
    selectable = problem.costs[~problem.excluded]
    if len(selectable) and int(selectable.min()) > problem.limit:
        raise BudgetError(
            f"budget {budget} is smaller than every record (the cheapest costs "
            f"{int(selectable.min())} {unit}), so nothing could be selected; raise the budget "
            "(or allow an empty selection: --allow-empty)"
        )


def _check_objective(method: Method, objective: Any, size: int, host: Host) -> None:
    """A method must return one :class:`Objective` value per pool record; anything else is a
    bug of its plugin, named as such."""
    if not isinstance(objective, Objective):
        raise PluginError(
            f"method '{method.name}' ({_provider(host, method)}) returned "
            f"{type(objective).__name__} from objective(), not an Objective (Scores, LogWeights, "
            "Weights, ...); this is a bug in that plugin: report it to its authors"
        )
    if len(objective) != size:
        raise PluginError(
            f"method '{method.name}' ({_provider(host, method)}) returned {len(objective)} "
            f"values for a pool of {size}; this is a bug in that plugin: report it to its authors"
        )


def _provider(host: Host, method: Method) -> str:
    """Which plugin and distribution provide a method, for error messages."""
    plugin = plugin_of(host, method)
    if plugin is None:
        return "an in-process plugin"
    dist = f"{plugin['distribution']} {plugin['version']}" if plugin["distribution"] else "local"
    return f"plugin '{plugin['name']}' from {dist}"


def _method(host: Host, method: str | Method, params: Mapping[str, Any] | None) -> Method:
    if isinstance(method, Method):
        if params:
            raise ParamError("pass params either in the Method instance or as params, not both")
        return method
    method_cls = host.method(method)
    return method_cls(build_params(method_cls.Params, params or {}, f"method '{method}'"))


def load_pool(
    source: str | os.PathLike[str],
    options: LoadOptions | None = None,
    *,
    host: Host | None = None,
    columnar: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    **option_overrides: Any,
) -> Pool:
    """Read ``source`` into a :class:`Pool` (:func:`selectkit.data.load.load_pool`; with
    ``columnar``, read on demand from a file cached beside the store at ``cache_dir``), with
    the process-wide host unless given one."""
    return load.load_pool(
        source,
        options,
        host=host or get_host(),
        columnar=columnar,
        cache_dir=cache_dir,
        **option_overrides,
    )


def load_records_from_list(
    rows: Sequence[Mapping[str, Any]],
    options: LoadOptions | None = None,
    *,
    host: Host | None = None,
    **option_overrides: Any,
) -> Pool:
    """A pool from in-memory rows (:func:`selectkit.data.load.load_records_from_list`), with
    the process-wide host unless given one."""
    return load.load_records_from_list(rows, options, host=host or get_host(), **option_overrides)


def load_model(
    spec: str, options: ModelOptions | None = None, *, host: Host | None = None
) -> LoadedModel:
    """Model ``spec`` on its device, in eval mode (:meth:`Host.load_model`), from the
    process-wide host unless given one."""
    return (host or get_host()).load_model(spec, options)


def evaluate_lds(
    method: str | Method,
    pool: Pool,
    target: Pool,
    runs: RetrainRuns,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    host: Host | None = None,
    models: Sequence[int] | np.ndarray | None = None,
) -> LdsResult:
    """The linear datamodeling score of ``method`` (a registered name with ``params``, or a
    configured Method) on the retrained models of ``runs``
    (:func:`selectkit.retraining.lds.evaluate_lds`)."""
    from selectkit.retraining.lds import evaluate_lds as score

    host = host or get_host()
    context = Context(
        host=host, store_root=_store_root(cache_dir), seed=check_seed(seed), progress=progress
    )
    return score(_method(host, method, params), pool, target, runs, context, models=models)


def featurize(
    pool: Pool,
    model: str | LoadedModel,
    *,
    host: Host | None = None,
    executor: Executor | ExecutorConfig | None = None,
    **options: Any,
) -> list[FeatureSet]:
    """Features of ``pool`` under each checkpoint (:func:`selectkit.features.featurize.featurize`,
    whose keyword options these are, ``also`` included), with the process-wide host unless
    given one; ``executor`` as for :func:`featurize_views`."""
    from selectkit.features.featurize import FeaturizeConfig, config_view

    view = config_view(options.get("config") or FeaturizeConfig())
    views = (view, *options.pop("also", ()))
    return featurize_views(pool, model, views=views, host=host, executor=executor, **options)[view]


def featurize_views(
    pool: Pool,
    model: str | LoadedModel,
    *,
    host: Host | None = None,
    executor: Executor | ExecutorConfig | None = None,
    **options: Any,
) -> dict[Any, list[FeatureSet]]:
    """Each view's features of ``pool`` under each checkpoint, from one pass
    (:func:`selectkit.features.featurize.featurize_views`, whose keyword options these are),
    with the process-wide host unless given one. ``executor``: split the pass into one shard
    per worker (``model`` a spec the workers load; ``shard`` and ``tokens`` are then the
    executor's to choose)."""
    from selectkit.features.featurize import featurize_views as extract
    from selectkit.features.units import featurize_on
    from selectkit.models.loading import ModelOptions

    host = host or get_host()
    model_options = options.pop("model_options", None) or ModelOptions()
    with running(executor, host, model_options.device) as runner:
        if runner is None:
            return extract(pool, model, host=host, model_options=model_options, **options)
        spec, store = _for_workers("featurize", model, options)
        return featurize_on(runner, pool, spec, model_options, store=store, **options)


def embed(
    pool: Pool,
    model: str | LoadedModel,
    *,
    host: Host | None = None,
    executor: Executor | ExecutorConfig | None = None,
    **options: Any,
) -> list[FeatureSet]:
    """Each record's pooled hidden states under each checkpoint, one store entry per model
    state (:func:`selectkit.features.embeddings.embed`, whose keyword options these are: the
    ``config``, ``checkpoints``, ``store``, ...), with the process-wide host unless given one.
    ``executor``: split the pass into one shard per worker (``model`` a spec they load)."""
    from selectkit.features.embeddings import embed as embed_here
    from selectkit.features.units import forward_on
    from selectkit.models.loading import ModelOptions

    host = host or get_host()
    model_options = options.pop("model_options", None) or ModelOptions()
    with running(executor, host, model_options.device) as runner:
        if runner is None:
            return embed_here(pool, model, host=host, model_options=model_options, **options)
        spec, store = _for_workers("embed", model, options)
        return forward_on("embeddings", runner, pool, spec, model_options, store=store, **options)


def _for_workers(
    what: str, model: str | LoadedModel, options: dict[str, Any]
) -> tuple[str, FeatureStore]:
    """The model spec and store a pass on workers takes, ``options`` left with the rest: the
    model must be a spec the workers load, and the shard and tokens are the executor's."""
    from selectkit.store import FeatureStore

    if not isinstance(model, str):
        raise ParamError(
            f"{what} on workers needs the model as a spec they can load (a name or folder), "
            "not a model loaded in this process"
        )
    for mine in ("shard", "tokens"):
        if options.pop(mine, None) is not None:
            raise ParamError(f"{what}: {mine} is the executor's to choose; leave it out")
    return model, options.pop("store", None) or FeatureStore()


@contextlib.contextmanager
def running(
    executor: Executor | ExecutorConfig | None, host: Host, device: str = "auto"
) -> Iterator[Executor | None]:
    """The executor a call runs on: one given, kept open; one made from a config, closed when
    the call ends; ``None`` (this process) for none or the in-process default."""
    if isinstance(executor, ExecutorConfig):
        if executor.executor == "inprocess":
            yield None
            return
        with make_executor(executor, host, device=device) as made:
            yield made
        return
    if executor is not None and not isinstance(executor, Executor):
        raise ParamError(
            f"executor must be an Executor or an ExecutorConfig, not {type(executor).__name__}"
        )
    yield None if executor is None or executor.in_process else executor


def _store_root(cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """The store folder asked for, refused now when it is a file."""
    if cache_dir is None or os.fspath(cache_dir) == "":
        return None
    root = Path(cache_dir).expanduser()
    if root.is_file():
        raise ParamError(f"the cache folder {root} is a file; give a folder (--cache-dir)")
    return root
