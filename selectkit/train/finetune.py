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

With ``group_weights`` (group name → weight, e.g. from a group-reweighting method) the batches
are sampled instead of passed in order: each group's expected share of the trained examples is
``w_g / sum_h w_h`` over the groups present, whatever the groups' sizes (see
:func:`group_plan`).

``<out_dir>`` gets the adapter (PEFT ``save_pretrained``: ``adapter_model.safetensors`` and
``adapter_config.json``) and ``finetune.json``: the records, a digest of the weights, the
configuration, the versions, the pool's fingerprint and the loss and learning rate of every step.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from selectkit.data.batching import pad_batch
from selectkit.data.examples import Template, Tokenized
from selectkit.data.pool import Pool
from selectkit.errors import ParamError, TrainingDiverged
from selectkit.models.lora import LoraSpec, quiet_saving
from selectkit.models.losses import response_losses
from selectkit.params import help_text
from selectkit.provenance import jsonable, versions
from selectkit.publish import Publication
from selectkit.train.common import (
    adapter_description,
    check_input_shape,
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

    epochs: int = field(default=1, metadata=help_text("passes over the records"))
    max_steps: int | None = field(
        default=None,
        metadata=help_text("exactly this many optimizer steps, cycling the records (over epochs)"),
    )
    learning_rate: float = field(default=2e-4, metadata=help_text("peak learning rate"))
    lr_scheduler: str = field(default="linear", metadata=help_text("schedule after the warmup"))
    warmup_ratio: float = field(
        default=0.03, metadata=help_text("share of the steps the learning rate ramps up over")
    )
    weight_decay: float = field(default=0.0, metadata=help_text("AdamW weight decay"))
    max_grad_norm: float | None = field(
        default=1.0, metadata=help_text("gradient norm clipping; none: no clipping")
    )
    batch_size: int = field(default=8, metadata=help_text("examples per forward pass"))
    gradient_accumulation: int = field(default=1, metadata=help_text("passes per optimizer step"))
    lora: LoraSpec = field(default_factory=LoraSpec)
    max_length: int | None = field(
        default=512, metadata=help_text("tokens per example (prompt cut first); none: no cut")
    )
    template: Template = field(default="auto", metadata=help_text("how records become text"))
    seed: int = field(
        default=0, metadata=help_text("draws the adapter's initial weights, data order, dropout")
    )

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
        check_input_shape(self.lora, self.max_length, self.template, "finetune")

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


def check_group_weights(
    groups: Sequence[str | None], group_weights: Mapping[str, float]
) -> dict[str, float]:
    """The weights of the groups present in ``groups`` (one group per trained record), checked.

    Refused: a weight that is not a finite number >= 0, a record without a group or whose group
    has no weight, a positive weight for a group none of the records belongs to (its share could
    not be honoured), and weights that are zero for every present group.
    """
    if not isinstance(group_weights, Mapping):
        raise ParamError(
            f"group weights must map group names to weights, not {type(group_weights).__name__}"
        )
    weights: dict[str, float] = {}
    for name, value in group_weights.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ParamError(f"group weight of '{name}' must be a number, not {value!r}") from None
        if not (math.isfinite(number) and number >= 0):
            raise ParamError(f"group weight of '{name}' must be finite and >= 0, got {value}")
        weights[str(name)] = number
    present = set()
    for position, group in enumerate(groups):
        if group is None:
            raise ParamError(
                f"trained record {position} has no group, but group weights were given; load "
                "the pool with the --group-by (group_field) the group weights were made with"
            )
        if group not in weights:
            raise ParamError(
                f"group '{group}' has no group weight (weighted groups: {sorted(weights)}); "
                "load the pool with the grouping the weights were made with"
            )
        present.add(group)
    absent = sorted(name for name, value in weights.items() if value > 0 and name not in present)
    if absent:
        raise ParamError(
            f"group '{absent[0]}' has a positive group weight but none of the trained records "
            "belongs to it, so its share cannot be trained; select records of every weighted "
            "group or drop its weight"
        )
    weights = {name: weights[name] for name in sorted(present)}
    if not any(value > 0 for value in weights.values()):
        raise ParamError(
            f"the group weights of every trained group ({sorted(present)}) are zero, so there "
            "is nothing to train on"
        )
    return weights


def _systematic_counts(total: int, shares: np.ndarray, offset: float) -> np.ndarray:
    """Integer counts summing to ``total`` whose expectations over ``offset ~ U[0, 1)`` are
    exactly ``total * shares``, each within one of it (systematic sampling: the points
    ``offset + k`` counted in each group's slice of ``[0, total)``)."""
    edges = total * np.cumsum(shares)
    edges[-1] = total
    reached = np.ceil(edges - offset).astype(np.int64)
    return np.diff(np.concatenate([[0], reached]))


def group_plan(
    groups: Sequence[str | None], group_weights: Mapping[str, float], config: FinetuneConfig
) -> list[list[np.ndarray]]:
    """The batches of every optimizer step when groups are sampled by weight, as positions in
    ``0..len(groups)-1`` (``groups[i]`` is record i's group).

    The examples to train are ``max_steps * gradient_accumulation * batch_size`` (full batches,
    exactly ``max_steps`` steps) or ``epochs`` times the number of records of positively
    weighted groups. Each group's count of examples is drawn by systematic sampling, so its
    expected share is exactly ``w_g / sum_h w_h`` over the present groups and its realized share
    within one example of that; the examples' group labels are then shuffled, and within a
    group records are taken in a fresh permutation each time the group's records run out. All
    draws come from ``numpy.random.default_rng(seed)``. Zero-weight groups are never trained on.
    """
    weights = check_group_weights(groups, group_weights)
    names = [name for name, value in weights.items() if value > 0]
    codes = {name: code for code, name in enumerate(names)}
    members = [[] for _ in names]
    for position, group in enumerate(groups):
        if group in codes:
            members[codes[group]].append(position)
    if config.max_steps is not None:
        total = config.max_steps * config.gradient_accumulation * config.batch_size
    else:
        total = config.epochs * sum(len(rows) for rows in members)
    shares = np.array([weights[name] for name in names]) / sum(weights[name] for name in names)
    rng = np.random.default_rng(config.seed)
    counts = _systematic_counts(total, shares, float(rng.random()))
    labels = rng.permutation(np.repeat(np.arange(len(names)), counts))
    slots = np.empty(total, dtype=np.int64)
    for code, rows in enumerate(members):
        need = int(counts[code])
        passes = [rng.permutation(rows) for _ in range(-(-need // len(rows)))]
        slots[labels == code] = np.concatenate([np.empty(0, np.int64), *passes])[:need]
    size, accumulation = config.batch_size, config.gradient_accumulation
    batches = np.array_split(slots, range(size, total, size))
    return [batches[start : start + accumulation] for start in range(0, len(batches), accumulation)]


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


def train_steps(
    peft_model: Any,
    examples: Sequence[Tokenized],
    weights: np.ndarray,
    plan: list[list[np.ndarray]],
    pad_id: int,
    config: FinetuneConfig,
    *,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Train ``peft_model`` in place through ``plan`` (positions into ``examples``, as
    :func:`training_plan` or :func:`group_plan` make them) and return the per-step log.

    Nothing is written to disk and the global random states are restored afterwards, so a
    caller that trains many models (the retraining harness) gets the same model for the same
    inputs whatever it trained before. Raises :class:`TrainingDiverged` at the first step whose
    loss is not finite.
    """
    with own_rng():
        return _train(peft_model, examples, weights, plan, pad_id, config, progress)


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
    group_weights: Mapping[str, float] | None = None,
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
    with a zero weight is exactly training without that record. ``group_weights`` (group name
    → weight >= 0) sample the batches so that each group's expected share of the trained
    examples is its weight over the sum of the present groups' weights (:func:`group_plan`; the
    group of a record is ``pool[i].group``); per-example weights still weight the loss. ``source``
    describes where the indices came from (e.g. a selection manifest) and is recorded in the
    manifest.

    Every trained record is tokenized before training starts; one that cannot be raises its
    :class:`RecordError`. ``out_dir`` must be new, empty, or hold this same run, which is then
    trained again and replaced; a different run there is refused. The adapter and
    ``finetune.json`` are written aside and put in place together once training is done, so
    ``out_dir`` never holds a half-trained run.
    """
    out = Path(out_dir)
    positions = _check_indices(indices, len(pool))
    unweighted = weights is None
    values = np.ones(len(positions)) if unweighted else check_weights(weights, len(positions))
    kept = np.flatnonzero(values > 0)
    if group_weights is None:
        plan = training_plan(len(kept), config)
        sampled_groups = None
    else:
        groups = [pool[int(i)].group for i in positions[kept]]
        group_weights = check_group_weights(groups, group_weights)
        plan = group_plan(groups, group_weights, config)
        sampled = Counter(groups[i] for step in plan for batch in step for i in batch.tolist())
        sampled_groups = {name: sampled[name] for name in group_weights}
    examples = tokenize_subset(
        pool, positions[kept], tokenizer, template=config.template, max_length=config.max_length
    )
    pad_id = pad_token_id(tokenizer)
    peft_model = trainable_copy(model, config.lora, config.seed)
    manifest: dict[str, Any] = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "pool": {"fingerprint": pool.fingerprint, "records": len(pool)},
        "selection": {
            "count": len(positions),
            "indices": positions.tolist(),
            "ids": [pool[int(i)].id for i in positions],
            "weights_sha256": None if unweighted else _weights_digest(values),
            "zero_weight": int(len(positions) - len(kept)),
            "group_weights": group_weights,
            "sampled_groups": sampled_groups,
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
    with Publication() as outputs:
        staging = outputs.into(out)
        log = train_steps(
            peft_model, examples, values[kept], plan, pad_id, config, progress=progress
        )
        with quiet_saving():
            peft_model.save_pretrained(str(staging), safe_serialization=True)
        manifest["status"] = "complete"
        manifest["log"] = log
        write_manifest(staging / MANIFEST_NAME, manifest)
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
    """:func:`finetune` on a selection's records, with its weights and group weights when it
    has them; the selection must have been made on ``pool``."""
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
        group_weights=selected_groups(pool, selection.indices, selection.group_weights),
        source=source,
        progress=progress,
    )


def selected_groups(
    pool: Pool, indices: Sequence[int] | np.ndarray, group_weights: Mapping[str, float] | None
) -> dict[str, float] | None:
    """A selection's group weights restricted to the groups of its records: a method weighs
    every group of the pool, and the budget may leave some out, which training cannot sample."""
    if group_weights is None:
        return None
    present = {pool[int(i)].group for i in indices}
    return {name: value for name, value in group_weights.items() if name in present}


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
