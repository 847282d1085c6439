"""LESS step 1: a short LoRA warmup on a random slice of the pool.

The warmup trains a fresh LoRA adapter for a few epochs with the Hugging Face Trainer and keeps
a checkpoint, with its AdamW state, at the end of every epoch; LESS then computes gradient
features of every pool example at each checkpoint. ``<out_dir>/warmup.json`` records what was
trained (the subset, the configuration, the versions) and each checkpoint's epoch, step and
mean learning rate, in plain JSON.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selectkit.data.batching import pad_batch
from selectkit.data.examples import Template, Tokenized
from selectkit.data.pool import Pool
from selectkit.errors import ParamError
from selectkit.models.lora import LoraSpec
from selectkit.provenance import jsonable, versions
from selectkit.publish import Publication
from selectkit.train.checkpoints import Checkpoint, find_checkpoints
from selectkit.train.common import (
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

MANIFEST_NAME = "warmup.json"
MANIFEST_KIND = "selectkit.warmup"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class WarmupConfig:
    """How to warm up. The defaults follow LESS (Xia et al. 2024):

    - ``fraction=0.05``: train on a seeded random 5% of the pool (at least one record);
    - ``epochs=4``: one checkpoint per epoch, four checkpoints;
    - ``learning_rate=2e-5`` with a ``"linear"`` schedule (any transformers scheduler name) after
      a linear warmup over ``warmup_ratio=0.03`` of the steps, and no weight decay;
    - ``batch_size=8`` examples per device and step, times ``gradient_accumulation``;
    - ``lora``: the adapter to create (see :class:`LoraSpec` for how its rank differs from LESS);
    - ``max_length`` tokens per example (``None``: no truncation) and the ``template`` to
      render records with, as in :func:`selectkit.data.examples.tokenize_many`;
    - ``seed`` draws the subset, the adapter's initial weights, the data order and dropout.
    """

    fraction: float = 0.05
    epochs: int = 4
    learning_rate: float = 2e-5
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    batch_size: int = 8
    gradient_accumulation: int = 1
    lora: LoraSpec = field(default_factory=LoraSpec)
    max_length: int | None = None
    template: Template = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (
                math.isfinite(self.learning_rate),
                f"learning_rate must be a finite number, got {self.learning_rate}",
            ),
            (
                self.max_length is None or self.max_length >= 2,
                f"max_length must be >= 2 tokens or None (a causal LM predicts each token from "
                f"the ones before it), got {self.max_length}",
            ),
        ]
        check_training_config(self, "warmup", checks)

    def to_dict(self) -> dict[str, Any]:
        return training_config_dict(self)


def warmup_subset(pool_size: int, fraction: float, seed: int) -> np.ndarray:
    """The sorted pool positions of the warmup subset: ``round(fraction * pool_size)`` records
    (at least one) drawn without replacement by ``numpy.random.default_rng(seed)``."""
    if pool_size < 1:
        raise ParamError("warmup needs a pool with at least one record")
    size = min(pool_size, max(1, round(fraction * pool_size)))
    chosen = np.random.default_rng(seed).choice(pool_size, size=size, replace=False)
    return np.sort(chosen)


#: Schedulers that need settings a warmup does not pass (``lr_scheduler_kwargs``).
_NEEDS_SETTINGS = ("cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay")


def _check_scheduler(name: str) -> None:
    from transformers.trainer_utils import SchedulerType

    names = [kind.value for kind in SchedulerType if kind.value not in _NEEDS_SETTINGS]
    if name not in names:
        raise ParamError(f"warmup: lr_scheduler must be one of {names}, not '{name}'")


_IDENTITY_KEYS = ("pool_fingerprint", "config", "adapter", "model")


def _train(
    peft_model: Any,
    examples: Sequence[Tokenized],
    pad_id: int,
    out: Path,
    config: WarmupConfig,
    progress: bool,
) -> None:
    import torch
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a fraction of all steps
        weight_decay=config.weight_decay,
        optim="adamw_torch",
        save_strategy="epoch",
        save_only_model=False,
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        disable_tqdm=not progress,
    )
    trainer = Trainer(
        model=peft_model,
        args=args,
        train_dataset=list(examples),
        data_collator=functools.partial(pad_batch, pad_id=pad_id),
    )
    # Per-step losses go to trainer_state.json; the terminal gets a progress bar at most.
    trainer.remove_callback(PrinterCallback)
    if progress:

        class BarOnly(ProgressCallback):
            """The Trainer's progress bar without the log line it prints every step."""

            def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                return None

        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(BarOnly())
    trainer.train()


def warmup(
    pool: Pool,
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    config: WarmupConfig = WarmupConfig(),
    *,
    progress: bool = True,
) -> list[Checkpoint]:
    """Train a LoRA adapter on a seeded random ``config.fraction`` of ``pool`` and return the
    checkpoint saved at the end of each epoch, sorted by step.

    ``model`` is a causal LM, which gets a fresh adapter from ``config.lora``, or a PEFT model
    whose trainable adapter is trained as it is (``config.lora`` is then unused). Either way
    warmup trains a deep copy: the model passed in is left unchanged (this costs memory for one
    more copy of it), and so are the global random states.

    Every record of the subset is tokenized before training starts; one that cannot be raises
    its :class:`RecordError`. ``out_dir`` must be new, empty, or hold this same run (same
    pool, configuration, adapter and model config), which is then trained again and
    replaced; a different run there is refused so checkpoints are never mixed. The
    checkpoints and ``warmup.json`` are written aside and put in place together when the last
    epoch is done, so ``out_dir`` never holds an unfinished warmup.
    """
    out = Path(out_dir)
    _check_scheduler(config.lr_scheduler)
    indices = warmup_subset(len(pool), config.fraction, config.seed)
    examples = tokenize_subset(
        pool, indices, tokenizer, template=config.template, max_length=config.max_length
    )
    pad_id = pad_token_id(tokenizer)
    peft_model = trainable_copy(model, config.lora, config.seed)
    manifest: dict[str, Any] = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "pool_fingerprint": pool.fingerprint,
        "config": config.to_dict(),
        "adapter": adapter_description(peft_model),
        "model": model_description(peft_model),
        "seed": config.seed,
        "subset": {
            "pool_records": len(pool),
            "indices": indices.tolist(),
            "ids": [pool[int(i)].id for i in indices],
        },
        "versions": versions(),
        "checkpoints": [],
    }
    manifest = json.loads(json.dumps(jsonable(manifest)))  # exactly as it reads back
    claim_run_folder(out, manifest, name=MANIFEST_NAME, identity=_IDENTITY_KEYS, what="warmup")
    with Publication() as outputs:
        staging = outputs.into(out)
        with own_rng():
            _train(peft_model, examples, pad_id, staging, config, progress)
        manifest["status"] = "complete"
        manifest["checkpoints"] = [
            {
                "path": c.path.name,
                "epoch": c.epoch,
                "step": c.step,
                "learning_rate": c.learning_rate,
                "has_optimizer_state": c.has_optimizer_state,
            }
            for c in find_checkpoints(staging)
        ]
        write_manifest(staging / MANIFEST_NAME, manifest)
    return find_checkpoints(out)
