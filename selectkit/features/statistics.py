"""Forward-only passes into the store: each record's statistics under a model state (its mean
response loss, EL2N's error norm), the pass EL2N and IFD score from.

One store entry per model state holds the statistics as columns and no feature row (``dim``
0). Its key is everything that determines those numbers (see :func:`statistics_key`), so a
second run reads them instead of running the model. Records are processed in fixed blocks, as
gradient features are: a block's numbers depend only on the block, so a killed run resumes
where it stopped, and shards filled by separate processes, in any order, end with the bytes of
one run. Everything the pass needs is plain data (a model spec, checkpoint folders, the
config, a store, a shard), so a worker process can run a shard of it on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from selectkit.compute.token_stats import STATISTICS, forward_statistics
from selectkit.data.batching import pad_batch
from selectkit.data.examples import Template, Tokenized, Truncation
from selectkit.errors import ParamError
from selectkit.features.featurize import (
    FeaturizeConfig,
    block_order,
    checkpoint_info,
    tokenize_pool,
)
from selectkit.params import help_text
from selectkit.provenance import versions
from selectkit.store import FeatureSet, FeatureStore, Layout, RowStatus
from selectkit.store.fingerprints import tensors_digest, tokenizer_digest
from selectkit.store.root import Block

if TYPE_CHECKING:
    from selectkit.data.pool import Pool, Record
    from selectkit.methods import Services
    from selectkit.models.loading import LoadedModel, ModelOptions
    from selectkit.train.checkpoints import Checkpoint

#: Bumped whenever the way the statistics are computed or stored changes, so old entries are
#: never reused wrongly.
STATISTICS_FORMAT = 1
COLUMNS = tuple(STATISTICS)
#: What each kind of example is, as the key records it.
EXAMPLES = {
    "whole": "each record as training sees it",
    "response": "the response alone, as raw text",
}
#: How blocks are formed, as the key records it (a block's numbers depend on its examples).
ORDERS = {"length": "longest first", "pool": "pool order"}


@dataclass(frozen=True)
class StatisticsConfig:
    """How records become examples and examples become blocks, for a forward-only pass.

    ``examples``: each record whole, or its response alone as raw text (IFD's ``s(A)``).
    ``order``: blocks of examples of similar length (they pad little), or consecutive records
    in pool order. ``batch_size`` is fixed into a new store entry (numbers depend on their
    batch through float rounding); later runs on that entry use the entry's value.
    """

    batch_size: int = field(default=16, metadata=help_text("examples per forward pass"))
    template: Template = field(default="auto", metadata=help_text("how records become text"))
    max_length: int | None = field(
        default=512, metadata=help_text("tokens per example; none: no truncation")
    )
    truncation: Truncation = field(default="left", metadata=help_text("which side is cut first"))
    examples: Literal["whole", "response"] = field(
        default="whole",
        metadata=help_text("whole: each record as training sees it; response: its response alone"),
    )
    order: Literal["length", "pool"] = field(
        default="length",
        metadata=help_text("blocks of similar length (pad little), or in pool order"),
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ParamError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.examples not in EXAMPLES:
            raise ParamError(f"examples must be whole or response, not '{self.examples}'")
        if self.order not in ORDERS:
            raise ParamError(f"order must be length or pool, not '{self.order}'")


def without_instruction(records: Sequence[Record]) -> list[Record]:
    """Each record's response alone, as raw text (IFD's ``s(A)``), still naming its file and
    line."""
    return [dataclasses.replace(record, prompt="", messages=None) for record in records]


def statistics_tokens(
    pool: Sequence[Record], tokenizer: Any, config: StatisticsConfig
) -> list[Tokenized | None]:
    """The examples of ``pool`` a pass under ``config`` runs on (the first record that cannot
    be one raises its :class:`~selectkit.errors.RecordError`)."""
    records = list(pool) if config.examples == "whole" else without_instruction(pool)
    shape = FeaturizeConfig(
        template=config.template, max_length=config.max_length, truncation=config.truncation
    )
    return tokenize_pool(records, tokenizer, shape, skip_hint=False)


def statistics_key(
    pool: Pool,
    loaded: LoadedModel,
    base_weights: str,
    adapter: str | None,
    config: StatisticsConfig,
) -> dict[str, Any]:
    """Everything that determines the bytes of a statistics entry, as JSON: the model's weights
    (``base_weights``, and the attached ``adapter``'s, both :func:`tensors_digest`), its dtype,
    the pool's content, how records become examples, the statistics and the block order."""
    return {
        "format": STATISTICS_FORMAT,
        "pass": "forward-only statistics",
        "base_weights": base_weights,
        "adapter_weights": adapter,
        "compute_dtype": str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
        "pool": pool.content_fingerprint,
        "examples": EXAMPLES[config.examples],
        "tokenizer": tokenizer_digest(loaded.tokenizer),
        "template": config.template,
        "max_length": config.max_length,
        "truncation": config.truncation,
        "statistics": STATISTICS,
        "order": ORDERS[config.order],
    }


def token_statistics(
    pool: Pool,
    model: str | LoadedModel,
    *,
    tokens: list[Tokenized | None] | None = None,
    checkpoints: Sequence[str | Path] = (),
    config: StatisticsConfig = StatisticsConfig(),
    store: FeatureStore | None = None,
    shard: tuple[int, int] = (0, 1),
    model_options: ModelOptions | None = None,
    progress: bool | Callable[[int], None] = True,
    host: Services,
) -> list[FeatureSet]:
    """The statistics of ``pool`` (the columns of :data:`COLUMNS`: ``column("loss")``,
    ``column("el2n")``) under each checkpoint's adapter, or under the model as loaded when no
    checkpoint is given: one store entry each, read when it is there, else filled (shard
    ``shard`` of it; the entry is complete once every shard is).

    ``model``: a spec, loaded through ``host`` with ``model_options``, or a loaded model, which
    ends as it started. ``checkpoints``: adapter checkpoint folders or warmup run folders (all
    of whose ``checkpoint-*`` folders are used, in step order). ``tokens``: the examples
    :func:`statistics_tokens` gives for ``pool`` under ``config`` with the model's tokenizer,
    when the caller has them already; ``None`` marks a record stored as skipped.
    ``progress``: a bar per entry, or a callable told how many rows are done (as
    :meth:`FeatureStore.fill` takes it). A statistic that is not finite is stored as it came:
    what it means is for the method to say.
    """
    from selectkit.models.loading import ModelOptions
    from selectkit.train.checkpoints import find_checkpoints

    if len(pool) == 0:
        raise ParamError("the pool is empty: there is nothing to run the model on")
    found = [c for path in checkpoints for c in find_checkpoints(path)]
    store = store or FeatureStore()
    if isinstance(model, str):
        model = host.load_model(model, model_options or ModelOptions())
    if tokens is None:
        tokens = statistics_tokens(pool, model.tokenizer, config)
    if len(tokens) != len(pool):
        raise ParamError(f"{len(tokens)} tokenized examples given for a pool of {len(pool)}")
    order = block_order(tokens) if config.order == "length" else None
    layout = Layout(len(pool), 0, "float32", config.batch_size, order, COLUMNS)
    return fill_each_state(
        pool,
        model,
        found,
        layout,
        key=lambda adapted, base, adapter: statistics_key(pool, adapted, base, adapter, config),
        block=lambda adapted: _BlockComputer(adapted, tokens),
        what="statistics",
        config=config,
        store=store,
        shard=shard,
        progress=progress,
    )


def fill_each_state(
    pool: Pool,
    model: LoadedModel,
    checkpoints: Sequence[Checkpoint],
    layout: Layout,
    *,
    key: Callable[[LoadedModel, str, str | None], dict[str, Any]],
    block: Callable[[LoadedModel], Callable[[Layout, int], Block]],
    what: str,
    config: Any,
    store: FeatureStore,
    shard: tuple[int, int],
    progress: bool | Callable[[int], None],
) -> list[FeatureSet]:
    """One entry of a forward-only pass per model state: each checkpoint's adapter attached
    in turn (the model as loaded when there is none), in eval mode, the entry keyed by
    ``key(adapted, base weights digest, adapter weights digest or None)`` and its blocks
    computed by ``block(adapted)``; the model ends as it started."""
    base = {id(p) for p in model.model.parameters()}
    base_weights = tensors_digest(model.model.named_parameters(), memo=model.digests)
    entries = []
    for checkpoint in checkpoints or [None]:
        with model.adapted(checkpoint.path if checkpoint else None) as adapted:
            added = [(n, p) for n, p in adapted.model.named_parameters() if id(p) not in base]
            info = checkpoint_info(checkpoint.path, checkpoint.learning_rate) if checkpoint else {}
            with _evaluating(adapted.model):
                entries.append(
                    store.fill(
                        key(adapted, base_weights, tensors_digest(added) if added else None),
                        layout,
                        block(adapted),
                        meta=describe_pass(pool, adapted, info, config, what),
                        shard=shard,
                        progress=progress,
                    )
                )
    return entries


@contextlib.contextmanager
def _evaluating(model: Any) -> Iterator[None]:
    """``model`` in eval mode (no dropout) for the ``with`` block, then as it was."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class _BlockComputer:
    """One block's statistics under one model state: what :meth:`FeatureStore.fill` asks for."""

    def __init__(self, loaded: LoadedModel, tokens: list[Tokenized | None]) -> None:
        from selectkit.train.common import pad_token_id

        self.model = loaded.model
        self.tokens = tokens
        self.pad = pad_token_id(loaded.tokenizer)
        self.device = next(self.model.parameters()).device

    def __call__(self, layout: Layout, block: int) -> Block:
        import torch

        rows = layout.block_rows_of(block)
        usable = [j for j, row in enumerate(rows) if self.tokens[row] is not None]
        status = np.full(len(rows), RowStatus.SKIPPED_EMPTY, dtype=np.uint8)
        columns = {name: np.full(len(rows), np.nan, dtype=np.float32) for name in COLUMNS}
        if usable:
            batch = pad_batch([self.tokens[rows[j]] for j in usable], self.pad)
            with torch.no_grad():
                values = forward_statistics(
                    self.model, {k: v.to(self.device) for k, v in batch.items()}
                )
            for name in COLUMNS:
                columns[name][usable] = values[name].cpu().numpy()
            status[usable] = RowStatus.DONE
        return np.zeros((len(rows), 0), dtype=np.float32), status, columns


def describe_pass(
    pool: Pool, loaded: LoadedModel, checkpoint: dict[str, Any], config: Any, what: str
) -> dict[str, Any]:
    """What the manifest of a forward-only pass's entry records beside its key (``what`` it
    holds, under which model state, of which pool): provenance that does not change bytes."""
    state = Path(checkpoint["path"]).name if checkpoint else "as loaded"
    source = Path(pool.origin["path"]).name if pool.origin.get("path") else "in-memory pool"
    return {
        "summary": f"{loaded.spec} {what} {state} {source}",
        "model": loaded.spec,
        "device": str(next(loaded.model.parameters()).device),
        "pool_origin": pool.origin,
        "checkpoint": checkpoint,
        "config": asdict(config),
        "versions": versions(),
    }
