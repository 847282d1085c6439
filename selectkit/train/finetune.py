"""Train on a selection: fine-tune a LoRA adapter on chosen pool records, optionally weighted.

This is how a selection is judged: train on a method's selection and on a random one of the
same size for the same number of optimizer steps (``max_steps``), then compare the loss on the
target (:func:`selectkit.train.evaluate.target_loss`).

The training loop is a small one of its own (AdamW and a transformers learning-rate schedule)
rather than the Hugging Face Trainer, because the loss is per-example weighted: the loss of an
optimizer step over examples ``i`` is ``sum_i w_i * loss_i / sum_i w_i``, where ``loss_i`` is the
example's mean cross-entropy over its response tokens. Without weights every ``w_i`` is 1, so the
loss is the plain mean of per-example losses. This differs from the Trainer's mean over all
response tokens of the batch: here each example counts once whatever its length, which is how
selection methods score examples. Normalizing by the step's weights keeps the loss on the same
scale as unweighted training (the learning rate needs no retuning) and makes multiplying all
weights by a constant change nothing.

``<out_dir>`` gets the adapter (PEFT ``save_pretrained``: ``adapter_model.safetensors`` and
``adapter_config.json``) and ``finetune.json``: the records, a digest of the weights, the
configuration, the versions, the pool's fingerprint and the loss and learning rate of every step.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from selectkit.data.batching import pad_batch
from selectkit.data.pool import Pool
from selectkit.data.tokenize import Template, Tokenized
from selectkit.errors import ParamError, TrainingDiverged
from selectkit.features.gradients import response_losses
from selectkit.manifest import jsonable, versions
from selectkit.models.lora import LoraSpec
from selectkit.train.runs import (
    adapter_description,
    check_training_config,
    claim_run_folder,
    model_description,
    own_rng,
    pad_token_id,
    tokenize_subset,
    trainable_copy,
    training_config_dict,
    write_manifest,
)

if TYPE_CHECKING:
    import torch

    from selectkit.selection import Selection

MANIFEST_NAME = "finetune.json"
MANIFEST_KIND = "selectkit.finetune"
MANIFEST_VERSION = 1
_IDENTITY_KEYS = ("pool", "selection", "config", "adapter", "model")

#: transformers schedules that need nothing beyond warmup and total steps.
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune on a selection.

    - ``epochs`` passes over the records, or, when ``max_steps`` is set, exactly that many
      optimizer steps, cycling through the records in a new order each pass: two selections of
      the same size then get the same number of steps and the same amount of data;
    - ``learning_rate`` with the ``lr_scheduler`` schedule (one of :data:`SCHEDULERS`) after a
      linear warmup over ``warmup_ratio`` of the steps, AdamW with ``weight_decay``, and the
      gradient norm clipped to ``max_grad_norm`` (``None``: no clipping), as the HF Trainer does;
    - ``batch_size`` examples per forward pass, ``gradient_accumulation`` passes per step;
    - ``lora``: the adapter to create (unused when training a given PEFT model);
    - ``max_length`` tokens per example (prompt truncated first; ``None``: no truncation) and the
      ``template`` to render records with;
    - ``seed`` draws the adapter's initial weights, the data order and dropout.
    """

    epochs: int = 1
    max_steps: int | None = None
    learning_rate: float = 2e-4
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    batch_size: int = 8
    gradient_accumulation: int = 1
    lora: LoraSpec = field(default_factory=LoraSpec)
    max_length: int | None = 512
    template: Template = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (
                self.max_steps is None or self.max_steps >= 1,
                f"max_steps must be >= 1 or None, got {self.max_steps}",
            ),
            (
                self.lr_scheduler in SCHEDULERS,
                f"lr_scheduler must be one of {list(SCHEDULERS)}, not '{self.lr_scheduler}'",
            ),
            (
                self.max_grad_norm is None or self.max_grad_norm > 0,
                f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}",
            ),
        ]
        check_training_config(self, "finetune", checks)

    def to_dict(self) -> dict[str, Any]:
        return training_config_dict(self)


@dataclass
class FinetuneResult:
    """The trained model (a PEFT model, in eval mode), where its adapter was saved, and the
    per-step log: ``log[k]`` has the step, epoch (passes over the records so far), loss and
    learning rate of step ``k + 1``."""

    model: Any
    out_dir: Path
    log: list[dict[str, float]]
    manifest: dict[str, Any]

    @property
    def steps(self) -> int:
        return len(self.log)

    @property
    def losses(self) -> list[float]:
        return [entry["loss"] for entry in self.log]


def check_weights(weights: Any, count: int) -> np.ndarray:
    """``weights`` as a float64 array of ``count`` finite, non-negative values, not all zero."""
    try:
        values = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ParamError(f"weights must be numbers: {exc}") from None
    if values.ndim != 1 or len(values) != count:
        raise ParamError(
            f"weights must have one value per selected record ({count}), got shape {values.shape}"
        )
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ParamError(f"weights must be finite; weight {bad} is {values[bad]}")
    if (values < 0).any():
        bad = int(np.flatnonzero(values < 0)[0])
        raise ParamError(f"weights must be >= 0; weight {bad} is {values[bad]}")
    if not (values > 0).any():
        raise ParamError("weights are all zero, so there is nothing to train on")
    return values


def _check_indices(indices: Sequence[int] | np.ndarray, pool_size: int) -> np.ndarray:
    values = np.asarray(indices)
    if values.size == 0:
        raise ParamError("the selection is empty; select at least one record to train on")
    if values.ndim != 1 or values.dtype.kind not in "iu":
        raise ParamError(
            f"indices must be a flat list of integer pool positions, got {values.dtype} "
            f"of shape {values.shape}"
        )
    outside = (values < 0) | (values >= pool_size)
    if outside.any():
        bad = int(values[np.flatnonzero(outside)[0]])
        raise ParamError(
            f"index {bad} is outside the pool of {pool_size} records; was the selection made "
            "on another pool?"
        )
    return values.astype(np.int64)


def training_plan(count: int, config: FinetuneConfig) -> list[list[np.ndarray]]:
    """The batches of every optimizer step, as positions in ``0..count-1``.

    Each pass over the records is a new permutation drawn from
    ``numpy.random.default_rng(seed)``, cut into batches of ``batch_size`` (the last of a pass
    may be smaller); ``gradient_accumulation`` consecutive batches make one step. With
    ``max_steps`` passes repeat until exactly ``max_steps`` steps are planned; otherwise
    ``epochs`` passes are, and the last step may hold fewer batches.
    """
    if count < 1:
        raise ParamError("nothing to train on: no record has a positive weight")
    rng = np.random.default_rng(config.seed)
    accumulation = config.gradient_accumulation
    if config.max_steps is not None:
        total = config.max_steps * accumulation
    else:
        total = config.epochs * math.ceil(count / config.batch_size)
    batches: list[np.ndarray] = []
    while len(batches) < total:
        order = rng.permutation(count)
        batches.extend(np.array_split(order, range(config.batch_size, count, config.batch_size)))
    batches = batches[:total]
    return [batches[start : start + accumulation] for start in range(0, total, accumulation)]


def weighted_loss(
    model: Any, batch: dict[str, torch.Tensor], weights: torch.Tensor, normalizer: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_i weights_i * loss_i / normalizer, losses)`` for one padded batch, where
    ``loss_i`` is example i's mean cross-entropy over its response tokens.

    ``normalizer`` is the total weight of the optimizer step the batch belongs to, so the
    batches of an accumulated step add up to the step's weighted mean.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    losses = response_losses(logits, batch["labels"])
    return (losses * weights).sum() / normalizer, losses.detach()


def _train(
    peft_model: Any,
    examples: Sequence[Tokenized],
    weights: np.ndarray,
    plan: list[list[np.ndarray]],
    pad_id: int,
    config: FinetuneConfig,
    progress: bool,
) -> list[dict[str, float]]:
    import torch
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=math.ceil(config.warmup_ratio * len(plan)),
        num_training_steps=len(plan),
    )
    device = next(peft_model.parameters()).device
    torch.manual_seed(config.seed)  # dropout masks
    peft_model.train()
    log: list[dict[str, float]] = []
    seen = 0
    with tqdm(total=len(plan), desc="finetune", unit="step", disable=not progress) as bar:
        for step, batches in enumerate(plan, start=1):
            normalizer = float(weights[np.concatenate(batches)].sum())
            step_loss = 0.0
            for positions in batches:
                batch = pad_batch([examples[i] for i in positions], pad_id)
                batch = {key: value.to(device) for key, value in batch.items()}
                batch_weights = torch.as_tensor(weights[positions], dtype=torch.float32)
                loss, _ = weighted_loss(peft_model, batch, batch_weights.to(device), normalizer)
                loss.backward()
                step_loss += float(loss.detach())
                seen += len(positions)
            if not math.isfinite(step_loss):
                raise TrainingDiverged(step, step_loss, what="fine-tuning")
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            rate = float(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            log.append(
                {
                    "step": step,
                    "epoch": seen / len(examples),
                    "loss": step_loss,
                    "learning_rate": rate,
                }
            )
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
    peft_model.eval()
    return log


def _weights_digest(weights: np.ndarray) -> str:
    return hashlib.sha256(weights.astype("<f8").tobytes()).hexdigest()


def finetune(
    pool: Pool,
    indices: Sequence[int] | np.ndarray,
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    weights: Sequence[float] | np.ndarray | None = None,
    source: dict[str, Any] | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune on the records of ``pool`` at ``indices`` (repeats allowed) and save the
    adapter and ``finetune.json`` in ``out_dir``.

    ``model`` is a causal LM, which gets a fresh adapter from ``config.lora``, or a PEFT model
    whose trainable adapter is trained further. Either way a deep copy is trained: the model
    passed in is left unchanged, and so are the global random states.

    ``weights`` (one per index; finite, >= 0, not all zero) weight each example's loss within
    its optimizer step, as the module docstring describes. Records of weight 0 are left out
    before training, so they cost nothing and do not change the order of the others: training
    with a zero weight is exactly training without that record. ``source`` describes where the
    indices came from (e.g. a selection manifest) and is recorded in the manifest.

    Every trained record is tokenized before training starts; one that cannot be raises its
    :class:`RecordError`. ``out_dir`` must be new, empty, or hold this same run, which is then
    trained again and overwritten; a different run there is refused.
    """
    out = Path(out_dir)
    positions = _check_indices(indices, len(pool))
    unweighted = weights is None
    values = np.ones(len(positions)) if unweighted else check_weights(weights, len(positions))
    kept = np.flatnonzero(values > 0)
    examples = tokenize_subset(
        pool, positions[kept], tokenizer, template=config.template, max_length=config.max_length
    )
    plan = training_plan(len(examples), config)
    pad_id = pad_token_id(tokenizer)
    peft_model = trainable_copy(model, config.lora, config.seed)
    manifest: dict[str, Any] = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "status": "running",
        "pool": {"fingerprint": pool.fingerprint, "records": len(pool)},
        "selection": {
            "count": len(positions),
            "indices": positions.tolist(),
            "ids": [pool[int(i)].id for i in positions],
            "weights_sha256": None if unweighted else _weights_digest(values),
            "zero_weight": int(len(positions) - len(kept)),
            "source": source,
        },
        "config": config.to_dict(),
        "adapter": adapter_description(peft_model),
        "model": model_description(peft_model),
        "seed": config.seed,
        "versions": versions(),
        "steps": len(plan),
        "log": [],
    }
    manifest = json.loads(json.dumps(jsonable(manifest)))  # exactly as it reads back
    claim_run_folder(out, manifest, name=MANIFEST_NAME, identity=_IDENTITY_KEYS, what="finetune")
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out / MANIFEST_NAME, manifest)

    with own_rng():
        log = _train(peft_model, examples, values[kept], plan, pad_id, config, progress)

    peft_model.save_pretrained(str(out), safe_serialization=True)
    manifest["status"] = "complete"
    manifest["log"] = log
    write_manifest(out / MANIFEST_NAME, manifest)
    return FinetuneResult(peft_model, out, log, manifest)


def finetune_selection(
    pool: Pool,
    selection: Selection,
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    progress: bool = True,
) -> FinetuneResult:
    """:func:`finetune` on a selection's records, with its weights when it has them; the
    selection must have been made on ``pool``."""
    check_pool(pool, selection.manifest["pool"]["fingerprint"])
    source = {"method": selection.manifest.get("method", {}).get("name")}
    return finetune(
        pool,
        selection.indices,
        model,
        tokenizer,
        out_dir,
        config,
        weights=selection.weights,
        source=source,
        progress=progress,
    )


def check_pool(
    pool: Pool,
    fingerprint: str,
    hint: str = "the same file and the same record, group and cost (tokenizer) options",
) -> None:
    """Refuse to train on ``pool`` when a selection was made on a pool with another
    ``fingerprint`` (its positions would name other records); ``hint`` says how to load it."""
    if pool.fingerprint != fingerprint:
        raise ParamError(
            f"the selection was made on another pool (fingerprint {fingerprint[:12]}...), not "
            f"this one ({pool.fingerprint[:12]}..., {len(pool)} records, costs in "
            f"{pool.cost_unit}); load the pool exactly as for the selection: {hint}"
        )
