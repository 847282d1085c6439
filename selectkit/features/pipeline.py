"""What a method that runs the model does before it scores: model, checkpoints, features.

A method that runs the model but projects no gradients (EL2N, IFD, bilevel) takes
:class:`~selectkit.features.params.ModelParams` and builds a :class:`ModelPipeline`: the
model loaded once per session, every record checked and tokenized once per run, and
checkpoints (given, or a LoRA warmup run cached by content). A gradient method takes
:class:`~selectkit.features.params.GradientParams` and builds a :class:`GradientPipeline`,
which adds feature sets of the pool and target, and their rows. Everything lands in the shared
store, so a second method, or the same method with another target, reuses the warmup and the
pool's features and only computes what is new.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selectkit.cachedirs import beside
from selectkit.compute.gradient_types import GradientKind
from selectkit.errors import ParamError
from selectkit.features.featurize import (
    FeaturizeConfig,
    config_view,
    featurize_views,
    tokenize_pool,
)
from selectkit.features.params import (
    CheckpointsUsed,
    GradientParams,
    ModelParams,
    PoolView,
    checkpoint_folders,
)
from selectkit.features.statistics import StatisticsConfig, token_statistics
from selectkit.features.units import featurize_on, forward_on
from selectkit.features.warmups import WarmupRun, cached_warmup, check_creatable
from selectkit.resources import check_memory
from selectkit.rows import RowSource, combine_checkpoints
from selectkit.store import FeatureSet, FeatureStore
from selectkit.store.fingerprints import tokenizer_digest

if TYPE_CHECKING:
    from selectkit.data.examples import Tokenized
    from selectkit.data.pool import Pool, Record
    from selectkit.methods import Context, Services
    from selectkit.models.loading import LoadedModel, ModelOptions
    from selectkit.train.checkpoints import Checkpoint


class ModelPipeline:
    """Gives a method run its model, its records' tokens and its checkpoints.

    Call :meth:`check` first: it checks everything that can be checked before the model loads
    (the device, given checkpoints, every record under the model's tokenizer, where a warmup
    would be written)."""

    def __init__(self, params: ModelParams, context: Context):
        self.params = params
        self.context = context
        self.host = context.host
        self.store = FeatureStore(context.store_root)
        self._checked: tuple[Sequence[Record], ...] = ()
        self._tokens: dict[int, list[Tokenized | None]] = {}
        self._given: list[Checkpoint] | None = None

    @cached_property
    def loaded(self) -> LoadedModel:
        loaded = self.host.shared_model(self.params.model, self._model_options())
        early = self.__dict__.get("tokenizer")
        if (
            self._checked
            and early is not None
            and early is not loaded.tokenizer
            and tokenizer_digest(early) != tokenizer_digest(loaded.tokenizer)
        ):
            # The records were checked with the tokenizer read before the weights, and the
            # model came with another one (a plugin's): check them again with the model's.
            self._check_records(loaded.tokenizer)
        self.__dict__["tokenizer"] = loaded.tokenizer
        return loaded

    @cached_property
    def tokenizer(self) -> Any:
        """The model's tokenizer, read without the weights when that is cheap and offline
        (tiny models, smollm2, local folders), so records are checked before the model loads;
        otherwise (hub names, models only a plugin knows) it comes with the model."""
        cached = self.host.shared_model_if_loaded(self.params.model, self._model_options())
        if cached is not None:
            return cached.tokenizer
        early = _tokenizer_before_weights(self.params.model, self.host)
        return early if early is not None else self.loaded.tokenizer

    def _model_options(self) -> ModelOptions:
        from selectkit.models.loading import ModelOptions

        return ModelOptions(device=self.params.device, dtype=self.params.model_dtype)

    def check(
        self, *pools: Sequence[Record], gradient: GradientKind = "sgd", checkpoints: bool = True
    ) -> None:
        """Check the run before any model work: ``pools`` (the pool, the target, ...) are not
        empty and every record tokenizes with a response token to take a loss over, naming
        the file and line of the first that does not; the device exists; the projector is
        registered; and, unless the method uses no ``checkpoints`` (it trains its own adapter
        or scores the model as loaded), given checkpoints are readable (with optimizer state
        for ``adam`` features) or a warmup could be written where it would go."""
        from selectkit.models.loading import resolve_device

        p = self.params
        for pool in pools:
            if len(pool) == 0:
                raise ParamError("a pool or target set is empty: there is nothing to score")
        resolve_device(p.device)
        self._check_settings(pools)
        if checkpoints and p.checkpoints:
            self._given = self._read_given(gradient)
        elif checkpoints:
            check_creatable(self._warmup_root())
        tokenizer = self.tokenizer
        self._checked = pools
        self._check_records(tokenizer)

    def _check_settings(self, pools: tuple[Sequence[Record], ...]) -> None:
        """What a kind of pipeline checks of its own settings before the model loads."""

    def _check_records(self, tokenizer: Any) -> None:
        config = FeaturizeConfig(max_length=self.params.max_length)
        for pool in self._checked:
            self._tokens[id(pool)] = tokenize_pool(pool, tokenizer, config, skip_hint=False)

    def tokens(self, pool: Pool) -> list[Tokenized | None]:
        """``pool``'s examples under the model's tokenizer, tokenized once per run (by
        :meth:`check`, which every method calls first)."""
        self.loaded  # noqa: B018 -- the model's tokenizer settles which tokens are valid
        if id(pool) not in self._tokens:
            self.check(*self._checked, pool)
        return self._tokens[id(pool)]

    def _read_given(self, gradient: GradientKind) -> list[Checkpoint]:
        from selectkit.train.checkpoints import check_optimizer_state, find_checkpoints

        found = [
            c
            for folder in checkpoint_folders(self.params.checkpoints)
            for c in find_checkpoints(folder)
        ]
        if gradient == "adam":
            for checkpoint in found:
                check_optimizer_state(checkpoint)
        return found

    def checkpoint_count(self) -> int:
        """How many checkpoints the run scores at: the given ones (after :meth:`check`), or
        one per warmup epoch of every warmup run."""
        if self._given is not None:
            return len(self._given)
        if self.params.checkpoints:
            return len(self._read_given("sgd"))
        return self.params.warmup.epochs * self.params.warmup.runs

    def checkpoints(self, pool: Pool) -> list[Path]:
        """The given checkpoint folders, or those of ``warmup.runs`` warmup runs on ``pool``
        (each reused when a run with the same model, pool, settings and seed is in the cache)."""
        if not self._checked:
            self.check(pool)
        if self.params.checkpoints:
            found = self._given if self._given is not None else self._read_given("sgd")
        else:
            found = self._warmups(pool)
        if found and all(c.learning_rate == 0 for c in found):
            raise ParamError(
                "every checkpoint's mean learning rate is 0, so learning-rate-weighted scores "
                "would all be 0 (a warmup of one step spends it at learning rate 0); warm up "
                "longer (warmup.fraction, warmup.epochs)"
            )
        return [c.path for c in found]

    def _warmups(self, pool: Pool) -> list[Checkpoint]:
        """The checkpoints of every warmup run on ``pool``, in run order: read from the cache,
        or trained into it; on the context's executor when it has one (each run a unit, on a
        worker that holds the model)."""
        p = self.params
        root = self._warmup_root()
        runs = range(p.warmup.runs)
        if self.context.executor is None:
            found = [
                cached_warmup(pool, self.loaded, p, index, root, progress=self.context.progress)
                for index in runs
            ]
        else:
            settings = p.model_settings()
            units = [
                WarmupRun(pool, settings, self._model_options(), index, str(root.resolve()))
                for index in runs
            ]
            found = self.context.executor.run(
                units, label="warmup runs", progress=self.context.progress
            )
        return [checkpoint for run in found for checkpoint in run]

    def _warmup_root(self) -> Path:
        return beside(self.store.root, "warmup")

    def statistics(
        self,
        pool: Pool,
        checkpoints: list[Path],
        config: StatisticsConfig,
        *,
        examples: Sequence[Record] | None = None,
    ) -> list[FeatureSet]:
        """The forward-only statistics of ``pool`` at each checkpoint (the model as loaded
        when there is none): read from the store, else computed, on the context's executor
        when it has one. ``examples``: the records as :meth:`check` tokenized them for this
        pass (``pool``, or its responses alone for ``config.examples='response'``)."""
        if self.context.executor is not None:  # each worker loads the model and fills a shard
            return forward_on(
                "statistics",
                self.context.executor,
                pool,
                self.params.model,
                self._model_options(),
                checkpoints=checkpoints,
                config=config,
                store=self.store,
                progress=self.context.progress,
            )
        return token_statistics(
            pool,
            self.loaded,
            tokens=self.tokens(pool if examples is None else examples),
            checkpoints=checkpoints,
            config=config,
            store=self.store,
            progress=self.context.progress,
            host=self.host,
        )


class GradientPipeline(ModelPipeline):
    """A :class:`ModelPipeline` that also hands out projected gradient features: feature sets
    per checkpoint, and the rows a method holds in memory. :meth:`check` also checks the
    projector and that a block of projected rows fits."""

    params: GradientParams

    def __init__(self, params: GradientParams, context: Context):
        super().__init__(params, context)

    def _check_settings(self, pools: tuple[Sequence[Record], ...]) -> None:
        p = self.params
        self.host.projector(p.projection.kind)
        rows = min(p.batch_size, max((len(pool) for pool in pools), default=0))
        check_memory(  # a block of projected rows, as float32, three copies while written
            3 * rows * p.projection.dim * 4,
            f"projection.dim={p.projection.dim} with batch_size={p.batch_size}",
            "lower projection.dim (LESS uses 8192) or batch_size",
        )

    def check_rows_fit(
        self, rows: int, checkpoints_used: str, *, what: str, copies: int = 1, extra: int = 0
    ) -> None:
        """Refuse, before the model loads, a method that holds ``rows`` feature rows in memory
        (``copies`` float32 copies of each, of the last checkpoint or of all of them side by
        side, plus ``extra`` bytes) when they do not fit in the memory available."""
        p = self.params
        every = checkpoints_used == "all"
        dim = p.projection.dim
        width = dim * (self.checkpoint_count() if every else 1)
        check_memory(
            rows * width * 4 * copies + extra,
            f"{what}: {rows} records x {width} features (dim {dim}"
            + (", every checkpoint side by side)" if every else ")"),
            "lower projection.dim (e.g. 512)" + (", or use checkpoints_used=last" if every else ""),
        )

    def features(
        self, pool: Pool, gradient: GradientKind, checkpoints: list[Path], *, of_pool: bool = True
    ) -> list[FeatureSet]:
        """One feature set of ``pool`` per checkpoint (a fresh LoRA when there is none), in
        ``gradient`` under the method's projection. For the pool (``of_pool``), the same pass
        also stores every other view of it the run's methods will read (``Context.views``
        from the same model settings), so the methods after this one find them done."""
        p = self.params
        config = FeaturizeConfig(
            gradient=gradient,
            projection=p.projection,
            batch_size=p.batch_size,
            max_length=p.max_length,
            recompute=p.recompute,
        )
        view = config_view(config)
        views = [view]
        if of_pool:
            settings = p.model_settings()
            planned = [v for v in self.context.views if isinstance(v, PoolView)]
            views += [v.view for v in planned if v.settings == settings]
        views = list(dict.fromkeys(views))
        if self.context.executor is not None:  # each worker loads the model and fills a shard
            return featurize_on(
                self.context.executor,
                pool,
                p.model,
                self._model_options(),
                checkpoints=checkpoints,
                lora=p.lora,
                config=config,
                views=views,
                store=self.store,
                progress=self.context.progress,
            )[view]
        return featurize_views(
            pool,
            self.loaded,
            views=views,
            tokens=self.tokens(pool),
            checkpoints=checkpoints,
            lora=p.lora,
            config=config,
            store=self.store,
            progress=self.context.progress,
            host=self.host,
        )[view]

    def rows(self, *pools: Pool, checkpoints_used: CheckpointsUsed) -> list[RowSource]:
        """Each pool's SGD features at the run's checkpoints as one row source: the last
        checkpoint's rows, or (``all``) every checkpoint's side by side, scaled by the square
        root of its learning rate; the pools' feature sets are checked to come from the same
        model states and projection. The checkpoints are the first pool's (its warmup)."""
        checkpoints = self.checkpoints(pools[0])
        sets = [
            self.features(pool, "sgd", checkpoints, of_pool=index == 0)
            for index, pool in enumerate(pools)
        ]
        for other in sets[1:]:
            check_pairs(sets[0], other)
        return [combine_checkpoints(s, learning_rates(s), checkpoints_used) for s in sets]

    def pool_and_target_features(
        self, pool: Pool, target: Pool, pool_gradient: GradientKind = "sgd"
    ) -> tuple[list[FeatureSet], list[FeatureSet]]:
        """What a target-driven method scores: ``pool_gradient`` features of the pool and SGD
        features of the target at the same checkpoints, everything checked first and the
        pairs checked to come from the same model states and projection."""
        self.check(pool, target, gradient=pool_gradient)
        checkpoints = self.checkpoints(pool)
        pool_sets = self.features(pool, pool_gradient, checkpoints)
        target_sets = self.features(target, "sgd", checkpoints, of_pool=False)
        check_pairs(pool_sets, target_sets)
        return pool_sets, target_sets


def _tokenizer_before_weights(spec: str, host: Services) -> Any | None:
    """The tokenizer model ``spec`` comes with, without its weights, for the built-in specs
    whose tokenizer is cheap and offline to read: tiny models (the byte tokenizer), smollm2
    and local folders. ``None`` for hub names (the network is asked once, with the model) and
    for specs only a plugin knows; the tokenizer then comes with the model."""
    from selectkit.bundled import SMOLLM2

    try:
        if spec.startswith("tiny-"):
            from selectkit.models.tiny import TinySpec, byte_tokenizer

            TinySpec.parse(spec)
            return byte_tokenizer()
        if spec == SMOLLM2 or Path(spec).expanduser().is_dir():
            return host.load_tokenizer(spec)
    except ParamError:
        return None  # let the model loader say what is wrong with the spec
    return None


def learning_rates(feature_sets: list[FeatureSet]) -> list[float]:
    """Each set's checkpoint learning rate (LESS's and TracIn's checkpoint weights); 1 for a
    set made without a checkpoint."""
    rates = []
    for entry in feature_sets:
        rate = (entry.meta.get("checkpoint") or {}).get("learning_rate")
        rates.append(float(rate) if rate is not None else 1.0)
    return rates


def check_pairs(pool_sets: list[FeatureSet], target_sets: list[FeatureSet]) -> None:
    """Pool and target features must come from the same model states and projection; say which
    checkpoint differs, and how, before any scoring."""
    if len(pool_sets) != len(target_sets):
        raise ParamError(
            f"{len(pool_sets)} pool feature sets but {len(target_sets)} target sets: they must "
            "come from the same checkpoints"
        )
    for index, (a, b) in enumerate(zip(pool_sets, target_sets, strict=True)):
        for name in ("base_weights", "trained_weights", "projector", "compute_dtype"):
            if a.key.get(name) != b.key.get(name):
                raise ParamError(
                    f"checkpoint {index}: pool and target features differ in {name} "
                    f"({a.key.get(name)} vs {b.key.get(name)}); extract both with the same "
                    "model, adapter and projector"
                )
