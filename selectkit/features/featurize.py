"""One extraction pass: a pool's per-example gradients, transformed and projected, into the store.

The store entry's key is everything that determines the bytes written (see :func:`feature_key`),
so asking again for the same features reuses them, and any change of an input makes a new entry.
Examples are processed in fixed blocks (examples of similar length together, to pad little);
a block's rows depend only on the block, so a killed run resumes where it stopped and shards
computed by separate processes end with the same bytes as one run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from selectkit.compute.gradient_types import (
    AdamConstants,
    GradientKind,
    GradientTransform,
    flatten_moments,
)
from selectkit.compute.gradients import GradientBackend, PerExampleGradients
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.batching import pad_batch
from selectkit.data.examples import Template, Tokenized, Truncation, tokenize_many
from selectkit.errors import ParamError, RecordError
from selectkit.models.lora import LoraSpec
from selectkit.params import help_text
from selectkit.provenance import versions
from selectkit.resources import check_memory
from selectkit.store import FeatureSet, FeatureStore, FillRequest, Layout, RowStatus
from selectkit.store.fingerprints import (
    TensorsMemo,
    file_digest,
    tensors_digest,
    tokenizer_digest,
)
from selectkit.store.root import Block

if TYPE_CHECKING:
    from selectkit.data.pool import Pool
    from selectkit.methods import Services
    from selectkit.models.loading import LoadedModel, ModelOptions
    from selectkit.train.checkpoints import Checkpoint

#: Bumped whenever the way rows are computed or stored changes, so old entries are never reused
#: wrongly (2: entries carry per-row checksums; 3: logits only at the positions that predict a
#: response token, which changes rows in their last bits).
FEATURE_FORMAT = 3
COLUMNS = ("loss", "grad_norm")
#: The adapter a pool gets when neither checkpoints nor parameter names are given.
DEFAULT_LORA = LoraSpec()


@dataclass(frozen=True)
class FeaturizeConfig:
    """What to extract: the gradient type, its projection, and how records become examples.

    ``batch_size`` is fixed into a new store entry (rows depend on their batch through float
    rounding); later runs on that entry use the entry's value. ``adapter_seed`` draws the
    fresh LoRA's initial weights when there is no checkpoint; like the projection's seed it
    is not the selection's seed, so selecting again with another seed reuses the features.
    """

    gradient: GradientKind = field(
        default="sgd",
        metadata=help_text("gradient type: sgd, adam (needs optimizer state) or sign"),
    )
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    adapter_seed: int = field(
        default=0, metadata=help_text("seed of a fresh LoRA's weights when no checkpoint is given")
    )
    batch_size: int = field(default=16, metadata=help_text("examples per forward-backward pass"))
    template: Template = field(default="auto", metadata=help_text("how records become text"))
    max_length: int | None = field(
        default=512, metadata=help_text("tokens per example; none: no truncation")
    )
    truncation: Truncation = field(default="left", metadata=help_text("which side is cut first"))
    on_invalid: Literal["error", "skip"] = field(
        default="error",
        metadata=help_text(
            "an example with no response token or a non-finite gradient stops the run "
            "(error) or is stored as a zero row marked skipped (skip)"
        ),
    )
    backend: GradientBackend = field(
        default="auto",
        metadata=help_text("per-example gradients by layer hooks, torch.func, or auto"),
    )
    recompute: bool = field(
        default=False,
        metadata=help_text(
            "keep only each layer's input and run it again in the backward pass: a fraction "
            "of the memory for about a quarter more time, the same features"
        ),
    )
    adam: AdamConstants = field(default_factory=AdamConstants)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ParamError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.on_invalid not in ("error", "skip"):
            raise ParamError(f"on_invalid must be error or skip, not '{self.on_invalid}'")


@dataclass(frozen=True)
class View:
    """One stored view of an extraction pass: a gradient type and its projection. The views
    of one pass share its forward-backward; each is a store entry of its own, the same bytes
    whether it was extracted alone or beside others."""

    gradient: GradientKind
    projection: ProjectionConfig


def config_view(config: FeaturizeConfig) -> View:
    """The view a :class:`FeaturizeConfig` describes."""
    return View(config.gradient, config.projection)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0-based ``i``) as a pair, checked."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ParamError(f"--shard must look like i/n (e.g. 0/4), not '{text}'") from None
    if count < 1 or not 0 <= index < count:
        raise ParamError(f"--shard {text}: need 0 <= i < n")
    return index, count


def tokenize_pool(
    pool: Pool, tokenizer: Any, config: FeaturizeConfig, *, skip_hint: bool = True
) -> list[Tokenized | None]:
    """Each record's tokens, or ``None`` for one that cannot be used (``on_invalid='skip'``);
    with ``on_invalid='error'`` the first unusable record's error is raised, naming how many
    more there are and (``skip_hint``) that they could be stored as skipped rows instead."""
    results = tokenize_many(
        list(pool),
        tokenizer,
        template=config.template,
        max_length=config.max_length,
        truncation=config.truncation,
    )
    errors = [r for r in results if isinstance(r, RecordError)]
    if errors and config.on_invalid == "error":
        more = f" (and {len(errors) - 1} more records)" if len(errors) > 1 else ""
        hint = (
            "; fix the records, or pass on_invalid='skip' (--on-invalid skip) to store them as "
            "skipped rows"
            if skip_hint
            else ""
        )
        first = errors[0]
        raise RecordError(
            f"{first.reason}{more}{hint}", path=first.path, line=first.line, field=first.field
        )
    return [None if isinstance(r, RecordError) else r for r in results]


def block_order(tokens: list[Tokenized | None]) -> np.ndarray:
    """Rows longest first (ties by position), so each block pads little; unusable rows last."""
    lengths = np.array([len(t.input_ids) if t is not None else 0 for t in tokens])
    return np.argsort(-lengths, kind="stable").astype(np.int64)


def feature_key(
    pool: Pool,
    tokenizer: Any,
    grads: PerExampleGradients,
    transform: GradientTransform,
    config: FeaturizeConfig,
    *,
    projection: ProjectionConfig | None = None,
    digests: TensorsMemo | None = None,
) -> dict[str, Any]:
    """Everything that determines the bytes of a feature set, as JSON. ``projection``: the
    view's (default: the config's); ``digests``: the loaded model's memo of base-weight
    digests (:attr:`LoadedModel.digests`)."""
    model = grads.model
    projection = projection or config.projection
    trainable = {p.name for p in grads.layout}
    named = list(model.named_parameters())
    key: dict[str, Any] = {
        "format": FEATURE_FORMAT,
        "base_weights": tensors_digest(
            ((n, p) for n, p in named if n not in trainable), memo=digests
        ),
        "trained_weights": tensors_digest((n, p) for n, p in named if n in trainable),
        "compute_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "pool": pool.content_fingerprint,
        "tokenizer": tokenizer_digest(tokenizer),
        "template": config.template,
        "max_length": config.max_length,
        "truncation": config.truncation,
        "loss": "mean cross-entropy over response tokens",
        "gradient": transform.describe(),
        "projector": {"kind": projection.kind, "seed": projection.seed, "dim": projection.dim},
        "dtype": projection.dtype,
    }
    if transform.kind == "adam":
        key["moments"] = tensors_digest(
            [("exp_avg", transform.exp_avg), ("exp_avg_sq", transform.exp_avg_sq)]
        )
    return key


class Featurizer:
    """Extracts features of pools under one model state (a base model plus adapter).

    Build one per checkpoint; call :meth:`run` for each pool. ``views`` are what one pass
    stores (default: the config's gradient type and projection): each block's per-example
    gradients are computed once and every view transformed and projected from them.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        config: FeaturizeConfig = FeaturizeConfig(),
        *,
        views: Sequence[View] = (),
        store: FeatureStore | None = None,
        moments: Any = None,
        checkpoint: dict[str, Any] | None = None,
        param_names: list[str] | None = None,
        host: Services,
    ) -> None:
        self.loaded = loaded
        self.config = config
        self.views = tuple(dict.fromkeys(views)) or (config_view(config),)
        self.store = store or FeatureStore()
        self.checkpoint = checkpoint or {}
        self.grads = PerExampleGradients(
            loaded.model, param_names, method=config.backend, recompute=config.recompute
        )
        self.transforms = [self._transform(view.gradient, moments) for view in self.views]
        self.projectors = [
            host.projector(view.projection.kind)(
                self.grads.dim, view.projection.dim, view.projection.seed, device=self.grads.device
            )
            for view in self.views
        ]

    def _transform(self, gradient: GradientKind, moments: Any) -> GradientTransform:
        if gradient != "adam":
            return GradientTransform(gradient).to(self.grads.device)
        if moments is None:
            raise ParamError(
                "gradient type 'adam' needs a warmup checkpoint with optimizer state "
                "(its Adam moments precondition the gradients); pass one, or use 'sgd'"
            )
        exp_avg, exp_avg_sq = flatten_moments(moments, self.grads.layout)
        transform = GradientTransform("adam", self.config.adam, exp_avg, exp_avg_sq)
        return transform.to(self.grads.device)

    def describe(self, pool: Pool, view: View) -> dict[str, Any]:
        """What the manifest records beside the key: provenance that does not change bytes."""
        checkpoint = Path(self.checkpoint["path"]).name if self.checkpoint else "fresh adapter"
        source = Path(pool.origin["path"]).name if pool.origin.get("path") else "in-memory pool"
        summary = f"{self.loaded.spec} {view.gradient} {checkpoint} {source}"
        settings = replace(self.config, gradient=view.gradient, projection=view.projection)
        return {
            "summary": summary,
            "model": self.loaded.spec,
            "gradient_dim": self.grads.dim,
            "parameters": [p.name for p in self.grads.layout],
            "method": self.grads.method,
            "device": str(self.grads.device),
            "pool_origin": pool.origin,
            "checkpoint": self.checkpoint,
            "config": {k: v for k, v in asdict(settings).items() if k != "adam"},
            "versions": versions(),
        }

    def run(
        self,
        pool: Pool,
        *,
        shard: tuple[int, int] = (0, 1),
        progress: bool | Callable[[int], None] = True,
        tokens: list[Tokenized | None] | None = None,
    ) -> list[FeatureSet]:
        """Extract (or resume, or reuse) every view of ``pool``; returns the store entries, one
        per view (:meth:`FeatureStore.fill_together`: existing entries are checked and repaired
        first, complete ones only read, and the pass runs for the blocks some entry still
        lacks). ``tokens``: the pool already tokenized by :func:`tokenize_pool` under this
        config (one tokenization serves every checkpoint of a run)."""
        batch = min(self.config.batch_size, len(pool))
        check_memory(  # per-example gradients and their transformed copy: activations come on top
            2 * batch * self.grads.dim * 4,
            f"batch_size={self.config.batch_size} ({batch} per-example gradients of "
            f"{self.grads.dim} trainable parameters each)",
            "lower batch_size, or lora.r",
        )
        if tokens is None:
            tokens = tokenize_pool(pool, self.loaded.tokenizer, self.config)
        order = block_order(tokens)
        requests = []
        for view, transform in zip(self.views, self.transforms, strict=True):
            key = feature_key(
                pool,
                self.loaded.tokenizer,
                self.grads,
                transform,
                self.config,
                projection=view.projection,
                digests=self.loaded.digests,
            )
            layout = Layout(
                num_rows=len(pool),
                dim=view.projection.dim,
                dtype=view.projection.dtype,
                block_rows=self.config.batch_size,
                order=order,
                columns=COLUMNS,
            )
            requests.append(FillRequest(key, layout, self.describe(pool, view)))
        return self.store.fill_together(
            requests,
            lambda layout, block, wanted: self._block(layout, block, wanted, tokens, pool),
            shard=shard,
            progress=progress,
        )

    def _block(
        self,
        layout: Layout,
        block: int,
        wanted: list[int],
        tokens: list[Tokenized | None],
        pool: Pool,
    ) -> list[Block]:
        """Block ``block``'s projected gradient rows, status codes and loss and norm columns,
        for each view in ``wanted``, from one forward-backward."""
        import torch

        rows = layout.block_rows_of(block)
        n = len(rows)
        usable = [j for j, row in enumerate(rows) if tokens[row] is not None]
        projected: list[np.ndarray] = []
        if usable:
            batch = pad_batch([tokens[rows[j]] for j in usable], self._pad_id())
            with torch.no_grad():
                grads, losses = self.grads(batch)
                norms = grads.norm(dim=1)
                projected = [
                    self.projectors[v].project(self.transforms[v](grads)).cpu().numpy()
                    for v in wanted
                ]
            norms, losses = norms.cpu().numpy(), losses.cpu().numpy()
        blocks = []
        for number, view in enumerate(wanted):
            out = np.zeros((n, self.views[view].projection.dim), dtype=np.float32)
            status = np.full(n, RowStatus.SKIPPED_EMPTY, dtype=np.uint8)
            columns = {name: np.full(n, np.nan, dtype=np.float32) for name in COLUMNS}
            if usable:  # each view judged on its own rows: alone or beside others, same bytes
                finite = np.isfinite(projected[number]).all(axis=1) & np.isfinite(norms)
                for k, j in enumerate(usable):
                    if not finite[k]:
                        self._nonfinite(pool, rows[j])
                        status[j] = RowStatus.SKIPPED_NONFINITE
                        continue
                    out[j] = projected[number][k]
                    status[j] = RowStatus.DONE
                    columns["loss"][j] = float(losses[k])
                    columns["grad_norm"][j] = float(norms[k])
            blocks.append((out, status, columns))
        return blocks

    def _pad_id(self) -> int:
        tokenizer = self.loaded.tokenizer
        pad = tokenizer.pad_token_id
        return int(pad if pad is not None else tokenizer.eos_token_id)

    def _nonfinite(self, pool: Pool, row: int) -> None:
        if self.config.on_invalid == "error":
            record = pool[row]
            raise RecordError(
                f"record '{record.id}' has a non-finite (NaN or Inf) gradient; nothing of it was "
                "stored. Check the model and data, or pass on_invalid='skip' (--on-invalid skip)",
                path=record.source,
                line=record.line,
            )


def checkpoint_info(path: str | Path, learning_rate: float | None) -> dict[str, Any]:
    """How the manifest names a checkpoint: folder, adapter hash and learning rate."""
    folder = Path(path)
    adapter = folder / "adapter_model.safetensors"
    return {
        "path": str(folder.resolve()),
        "adapter_sha256": file_digest(adapter) if adapter.is_file() else None,
        "learning_rate": learning_rate,
    }


def featurize(
    pool: Pool,
    model: str | LoadedModel,
    *,
    also: Sequence[View] = (),
    **options: Any,
) -> list[FeatureSet]:
    """Features of ``pool`` under each checkpoint's adapter (one store entry per checkpoint),
    in the view ``config`` describes (:func:`featurize_views`, whose keyword options these
    are); ``also``: more views to store from the same pass."""
    config = options.get("config", FeaturizeConfig())
    view = config_view(config)
    return featurize_views(pool, model, views=(view, *also), **options)[view]


def featurize_views(
    pool: Pool,
    model: str | LoadedModel,
    *,
    views: Sequence[View] = (),
    tokens: list[Tokenized | None] | None = None,
    checkpoints: Sequence[str | Path] = (),
    lora: LoraSpec | None = DEFAULT_LORA,
    param_names: list[str] | None = None,
    config: FeaturizeConfig = FeaturizeConfig(),
    store: FeatureStore | None = None,
    shard: tuple[int, int] = (0, 1),
    model_options: ModelOptions | None = None,
    progress: bool | Callable[[int], None] = True,
    host: Services,
) -> dict[View, list[FeatureSet]]:
    """Each view's features of ``pool`` under each checkpoint's adapter (one store entry per
    view and checkpoint), every view of a checkpoint from one forward-backward per block.

    ``views``: gradient types and projections (default: the one ``config`` describes; its
    other settings apply to all). ``checkpoints`` are adapter checkpoint folders or warmup run
    folders (all of whose ``checkpoint-*`` folders are used, in step order). Without
    ``checkpoints`` the model gets a fresh LoRA adapter from ``lora`` (seeded by
    ``config.adapter_seed``), or, with ``param_names``, gradients over those base parameters
    instead (``lora=None`` and no names: over whatever is trainable already). ``adam``
    features need checkpoints whose optimizer state holds the Adam moments. Adapters attached
    here are removed again afterwards, so ``model`` ends as it started. An identical run (same
    pool, model, adapter, settings, views and shard) that is writing these features now is
    refused before the model loads (:meth:`FeatureStore.claim_request`). ``tokens``: the pool
    already tokenized by :func:`tokenize_pool` with ``model``'s tokenizer under ``config``.
    """
    from selectkit.models.loading import ModelOptions
    from selectkit.train.checkpoints import find_checkpoints

    views = tuple(dict.fromkeys(views)) or (config_view(config),)
    if len(pool) == 0:
        raise ParamError("the pool is empty: there is nothing to featurize")
    if param_names is not None and checkpoints:
        raise ParamError("give adapter checkpoints or parameter names, not both")
    found = [c for path in checkpoints for c in find_checkpoints(path)]
    if any(view.gradient == "adam" for view in views):
        if not found:
            raise ParamError(
                "gradient type 'adam' needs warmup checkpoints with optimizer state (--checkpoint)"
            )
        missing = [c.path for c in found if not c.has_optimizer_state]
        if missing:
            raise ParamError(
                f"checkpoint {missing[0]} has no optimizer state; gradient type 'adam' needs "
                "the warmup optimizer's moments (or use gradient type 'sgd')"
            )
    for view in views:  # an unknown projector is refused before the claim
        host.projector(view.projection.kind)
    store = store or FeatureStore()
    adapter = None if found or param_names is not None else lora
    request = _request(pool, model, model_options, found, adapter, param_names, config, views)
    # Refuses an identical run that is writing these features now, before anything loads.
    with store.claim_request(request, shard) as claim:
        if isinstance(model, str):
            model = host.load_model(model, model_options or ModelOptions())
        if tokens is None:
            tokens = tokenize_pool(pool, model.tokenizer, config)
        options = {"shard": shard, "progress": progress, "tokens": tokens}
        if found:
            per_state = _featurize_checkpoints(
                pool, model, found, config, views, store, host, options
            )
        else:
            with model.adapted(adapter, seed=config.adapter_seed) as adapted:
                featurizer = Featurizer(
                    adapted, config, views=views, store=store, param_names=param_names, host=host
                )
                per_state = [featurizer.run(pool, **options)]
        claim.record([entry.id for entries in per_state for entry in entries])
    return {view: [entries[v] for entries in per_state] for v, view in enumerate(views)}


def _featurize_checkpoints(
    pool: Pool,
    model: LoadedModel,
    found: list[Checkpoint],
    config: FeaturizeConfig,
    views: tuple[View, ...],
    store: FeatureStore,
    host: Services,
    options: dict[str, Any],
) -> list[list[FeatureSet]]:
    """Every view's entry at each checkpoint, its adapter attached to ``model`` and removed
    again."""
    from selectkit.train.checkpoints import adam_moments

    adam = any(view.gradient == "adam" for view in views)
    results = []
    for checkpoint in found:
        with model.adapted(checkpoint.path) as adapted:
            moments = adam_moments(checkpoint, adapted.model) if adam else None
            featurizer = Featurizer(
                adapted,
                config,
                views=views,
                store=store,
                moments=moments,
                checkpoint=checkpoint_info(checkpoint.path, checkpoint.learning_rate),
                host=host,
            )
            results.append(featurizer.run(pool, **options))
    return results


def _request(
    pool: Pool,
    model: str | LoadedModel,
    options: ModelOptions | None,
    found: list[Checkpoint],
    adapter: LoraSpec | None,
    param_names: list[str] | None,
    config: FeaturizeConfig,
    views: tuple[View, ...],
) -> dict[str, Any]:
    """What names a featurize request before anything loads (the store's early claim): the
    pool's content, the model and its dtype, the checkpoints as files, the adapter, every
    setting that shapes the rows and the views."""
    if isinstance(model, str):
        dtype = options.dtype if options is not None else "float32"
        spec = model
    else:
        dtype = str(next(model.model.parameters()).dtype).removeprefix("torch.")
        spec = model.spec
    return {
        "pool": pool.content_fingerprint,
        "model": {"spec": spec, "dtype": dtype},
        "checkpoints": [_folder_identity(c.path) for c in found],
        "adapter": asdict(adapter) if adapter is not None else None,
        "param_names": param_names,
        "config": {k: v for k, v in asdict(config).items() if k not in ("batch_size", "method")},
        "views": [asdict(view) for view in views],
    }


def _folder_identity(folder: Path) -> list[Any]:
    """A checkpoint folder's resolved path and its adapter file's size and modification time."""
    adapter = Path(folder) / "adapter_model.safetensors"
    try:
        stat = adapter.stat()
    except OSError:
        return [str(Path(folder).resolve()), None, None]
    return [str(Path(folder).resolve()), stat.st_size, stat.st_mtime_ns]
