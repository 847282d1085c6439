"""Store passes as units of work: shard ``i`` of ``n`` of every entry a pass fills, for
gradient features (:func:`featurize_on`) and the forward-only passes, statistics and
embeddings (:func:`forward_on`).

The driver never loads the model: each worker loads it once (its host's
shared model), tokenizes the pool once, and fills its shard of every checkpoint's entry through
:meth:`~selectkit.store.FeatureStore.fill`. The first worker to arrive creates an entry, the
last to finish a shard finalizes it, and the bytes are those of a single-process run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selectkit.errors import ParamError, StoreError
from selectkit.executors import Report, Worker, counting
from selectkit.features.embeddings import EmbeddingConfig, embed, embedding_tokens
from selectkit.features.featurize import (
    DEFAULT_LORA,
    FeaturizeConfig,
    View,
    config_view,
    featurize_views,
    tokenize_pool,
)
from selectkit.features.statistics import StatisticsConfig, statistics_tokens, token_statistics
from selectkit.models.lora import LoraSpec
from selectkit.store import FeatureSet, FeatureStore
from selectkit.store.root import shard_rows

if TYPE_CHECKING:
    from selectkit.data.examples import Tokenized
    from selectkit.data.pool import Pool
    from selectkit.methods import Runner
    from selectkit.models.loading import LoadedModel, ModelOptions


@dataclass(frozen=True)
class FeaturizeShard:
    """Shard ``shard`` of the entries :func:`~selectkit.features.featurize.featurize_views`
    fills for these arguments; returns the entries' ids, per view."""

    pool: Pool
    model: str
    model_options: ModelOptions
    checkpoints: tuple[str, ...]
    lora: LoraSpec | None
    param_names: tuple[str, ...] | None
    config: FeaturizeConfig
    views: tuple[View, ...]
    store_root: str
    file_bytes: int
    shard: tuple[int, int]
    size: int

    @property
    def label(self) -> str:
        return f"featurize shard {self.shard[0]}/{self.shard[1]}"

    def run(self, worker: Worker, report: Report) -> list[list[str]]:
        loaded = worker.host.shared_model(self.model, self.model_options)
        entries = featurize_views(
            self.pool,
            loaded,
            views=self.views,
            tokens=_tokens(worker, self.pool, loaded, self.config),
            checkpoints=self.checkpoints,
            lora=self.lora,
            param_names=list(self.param_names) if self.param_names is not None else None,
            config=self.config,
            store=FeatureStore(self.store_root, file_bytes=self.file_bytes),
            shard=self.shard,
            progress=counting(report),
            host=worker.host,
        )
        return [[entry.id for entry in entries[view]] for view in self.views]


def _tokens(
    worker: Worker, pool: Pool, loaded: LoadedModel, config: FeaturizeConfig
) -> list[Tokenized | None]:
    """``pool`` tokenized once per worker for every shard and checkpoint it fills."""
    shape = (config.template, config.max_length, config.truncation, config.on_invalid)
    return _once(
        worker,
        ("tokens", pool.content_fingerprint, loaded.spec, shape),
        lambda: tokenize_pool(pool, loaded.tokenizer, config),
    )


def _once(worker: Worker, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """``make()``, computed once per worker for ``key`` and kept in its memo."""
    if key not in worker.memo:
        worker.memo[key] = make()
    return worker.memo[key]


def featurize_on(
    executor: Runner,
    pool: Pool,
    model: str,
    model_options: ModelOptions,
    *,
    checkpoints: Sequence[str | Path] = (),
    lora: LoraSpec | None = DEFAULT_LORA,
    param_names: Sequence[str] | None = None,
    config: FeaturizeConfig | None = None,
    views: Sequence[View] = (),
    store: FeatureStore,
    progress: bool = True,
) -> dict[View, list[FeatureSet]]:
    """:func:`~selectkit.features.featurize.featurize_views` split into one shard per worker
    of ``executor`` (which must not be in-process: there, call it with the loaded model);
    each view's entries, complete, as the store holds them."""
    from selectkit.train.checkpoints import find_checkpoints

    config = config or FeaturizeConfig()
    views = tuple(dict.fromkeys(views)) or (config_view(config),)
    if len(pool) == 0:
        raise ParamError("the pool is empty: there is nothing to featurize")
    folders = tuple(str(Path(c.path).resolve()) for p in checkpoints for c in find_checkpoints(p))
    count = executor.workers
    units = [
        FeaturizeShard(
            pool=pool,
            model=model,
            model_options=model_options,
            checkpoints=folders,
            lora=lora,
            param_names=tuple(param_names) if param_names is not None else None,
            config=config,
            views=views,
            store_root=str(store.root.resolve()),
            file_bytes=store.file_bytes,
            shard=(index, count),
            size=shard_rows(len(pool), config.batch_size, (index, count))
            * max(1, len(folders))
            * len(views),
        )
        for index in range(count)
    ]
    results: list[Any] = executor.run(units, label="featurize rows", progress=progress)
    return {
        view: _complete(store, [result[number] for result in results])
        for number, view in enumerate(views)
    }


#: A forward-only store pass: its function, and the one that makes its examples.
PASSES: dict[str, tuple[Callable[..., list[FeatureSet]], Callable[..., list[Any]]]] = {
    "statistics": (token_statistics, statistics_tokens),
    "embeddings": (embed, embedding_tokens),
}


@dataclass(frozen=True)
class ForwardShard:
    """Shard ``shard`` of the entries the forward-only pass ``kind`` (:data:`PASSES`:
    :func:`~selectkit.features.statistics.token_statistics` or
    :func:`~selectkit.features.embeddings.embed`) fills for these arguments; returns the
    entries' ids."""

    kind: str
    pool: Pool
    model: str
    model_options: ModelOptions
    checkpoints: tuple[str, ...]
    config: StatisticsConfig | EmbeddingConfig
    store_root: str
    file_bytes: int
    shard: tuple[int, int]
    size: int

    @property
    def label(self) -> str:
        return f"{self.kind} shard {self.shard[0]}/{self.shard[1]}"

    def run(self, worker: Worker, report: Report) -> list[str]:
        fill, tokenize = PASSES[self.kind]
        loaded = worker.host.shared_model(self.model, self.model_options)
        tokens = _once(
            worker,
            (self.kind, self.pool.content_fingerprint, loaded.spec, self.config),
            lambda: tokenize(self.pool, loaded.tokenizer, self.config),
        )
        entries = fill(
            self.pool,
            loaded,
            tokens=tokens,
            checkpoints=self.checkpoints,
            config=self.config,
            store=FeatureStore(self.store_root, file_bytes=self.file_bytes),
            shard=self.shard,
            progress=counting(report),
            host=worker.host,
        )
        return [entry.id for entry in entries]


def forward_on(
    kind: str,
    executor: Runner,
    pool: Pool,
    model: str,
    model_options: ModelOptions,
    *,
    checkpoints: Sequence[str | Path] = (),
    config: StatisticsConfig | EmbeddingConfig,
    store: FeatureStore,
    progress: bool = True,
) -> list[FeatureSet]:
    """The forward-only pass ``kind`` (``statistics`` or ``embeddings``) split into one shard
    per worker of ``executor`` (which must not be in-process: there, call the pass with the
    loaded model); the entries, complete, as the store holds them."""
    from selectkit.train.checkpoints import find_checkpoints

    if kind not in PASSES:
        raise ParamError(f"no forward-only pass '{kind}': there are {', '.join(PASSES)}")
    if len(pool) == 0:
        raise ParamError("the pool is empty: there is nothing to run the model on")
    folders = tuple(str(Path(c.path).resolve()) for p in checkpoints for c in find_checkpoints(p))
    count = executor.workers
    units = [
        ForwardShard(
            kind=kind,
            pool=pool,
            model=model,
            model_options=model_options,
            checkpoints=folders,
            config=config,
            store_root=str(store.root.resolve()),
            file_bytes=store.file_bytes,
            shard=(index, count),
            size=shard_rows(len(pool), config.batch_size, (index, count)) * max(1, len(folders)),
        )
        for index in range(count)
    ]
    results = executor.run(units, label=f"{kind} rows", progress=progress)
    return _complete(store, results)


def _complete(store: FeatureStore, per_worker: list[list[str]]) -> list[FeatureSet]:
    """The entries every worker named (they must agree), each checked complete."""
    found = []
    for ident in per_worker[0]:
        entry = FeatureSet(store.root / ident)
        if any(ids != per_worker[0] for ids in per_worker) or not entry.complete:
            raise StoreError(
                f"the workers' shards of store entry {ident[:12]} did not complete it; run "
                "the same command again to fill what is missing"
            )
        found.append(entry)
    return found
