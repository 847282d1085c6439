"""LESS step 1: a short LoRA warmup on a random slice of the pool.

The warmup trains a fresh LoRA adapter for a few epochs with the Hugging Face Trainer and keeps
a checkpoint, with its AdamW state, at the end of every epoch; LESS then computes gradient
features of every pool example at each checkpoint. ``<out_dir>/warmup.json`` records what was
trained (the subset, the configuration, the versions) and each checkpoint's epoch, step and
mean learning rate, in plain JSON.
"""

from __future__ import annotations

import dataclasses
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
from selectkit.models.lora import LoraSpec, quiet_saving
from selectkit.params import help_text
from selectkit.provenance import jsonable, versions
from selectkit.publish import Publication
from selectkit.train.checkpoints import Checkpoint, find_checkpoints
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
    write_manifest,
)

MANIFEST_NAME = "warmup.json"
MANIFEST_KIND = "selectkit.warmup"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class WarmupConfig:
    """How to warm up; the adapter, the token limit and the template are the caller's (they
    are shared with what is done after the warmup). The defaults follow LESS (Xia et al.
    2024): 5% of the pool, four epochs (one checkpoint each), peak learning rate 2e-5 on a
    linear schedule after a linear warmup over 3% of the steps, no weight decay, 8 examples
    per step.
    """

    fraction: float = field(default=0.05, metadata=help_text("seeded random share of the pool"))
    epochs: int = field(default=4, metadata=help_text("epochs, one checkpoint each"))
    learning_rate: float = field(default=2e-5, metadata=help_text("peak learning rate"))
    lr_scheduler: str = field(
        default="linear", metadata=help_text("a transformers scheduler name (linear, cosine, ...)")
    )
    warmup_ratio: float = field(
        default=0.03, metadata=help_text("share of the steps the learning rate ramps up over")
    )
    weight_decay: float = field(default=0.0, metadata=help_text("AdamW weight decay"))
    batch_size: int = field(default=8, metadata=help_text("examples per device and step"))
    gradient_accumulation: int = field(default=1, metadata=help_text("passes per optimizer step"))
    seed: int = field(
        default=0,
        metadata=help_text(
            "draws the subset, the adapter's initial weights, the data order, dropout"
        ),
    )

    def __post_init__(self) -> None:
        checks = [
            (0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (
                math.isfinite(self.learning_rate),
                f"learning_rate must be a finite number, got {self.learning_rate}",
            ),
        ]
        check_training_config(self, "warmup", checks)

    def to_dict(self, lora: LoraSpec, max_length: int | None, template: Template) -> dict[str, Any]:
        """The run's whole configuration as plain JSON: these settings and the adapter, token
        limit and template it was given (the warmup's identity and its manifest)."""
        values = dataclasses.asdict(self)
        return {**values, "lora": lora.to_dict(), "max_length": max_length, "template": template}


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
    with quiet_saving():  # the Trainer saves the adapter at every epoch
        trainer.train()


def warmup(
    pool: Pool,
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    config: WarmupConfig = WarmupConfig(),
    *,
    lora: LoraSpec = LoraSpec(),
    max_length: int | None = None,
    template: Template = "auto",
    progress: bool = True,
) -> list[Checkpoint]:
    """Train a LoRA adapter on a seeded random ``config.fraction`` of ``pool`` and return the
    checkpoint saved at the end of each epoch, sorted by step.

    ``model`` is a causal LM, which gets a fresh ``lora`` adapter, or a PEFT model whose
    trainable adapter is trained as it is (``lora`` is then unused). Records are rendered
    with ``template`` and cut to ``max_length`` tokens (``None``: no truncation), as in
    :func:`selectkit.data.examples.tokenize_many`. Either way
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
    check_input_shape(lora, max_length, template, "warmup")
    examples = tokenize_subset(pool, indices, tokenizer, template=template, max_length=max_length)
    pad_id = pad_token_id(tokenizer)
    peft_model = trainable_copy(model, lora, config.seed)
    manifest: dict[str, Any] = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "pool_fingerprint": pool.fingerprint,
        "config": config.to_dict(lora, max_length, template),
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
