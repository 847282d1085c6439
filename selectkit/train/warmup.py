"""LESS step 1: a short LoRA warmup on a random slice of the pool.

The warmup trains a fresh LoRA adapter for a few epochs with the Hugging Face Trainer and keeps
a checkpoint, with its AdamW state, at the end of every epoch; LESS then computes gradient
features of every pool example at each checkpoint. ``<out_dir>/warmup.json`` records what was
trained (the subset, the configuration, the versions) and each checkpoint's epoch, step and
mean learning rate, in plain JSON.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selectkit.data.batching import pad_batch
from selectkit.data.pool import Pool
from selectkit.data.tokenize import Template, Tokenized, tokenize_many
from selectkit.errors import ParamError, RecordError
from selectkit.manifest import jsonable, versions
from selectkit.models.lora import LoraSpec, attach_lora
from selectkit.output import atomic_writer
from selectkit.train.checkpoints import Checkpoint, find_checkpoints

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
      render records with, as in :func:`selectkit.data.tokenize.tokenize_many`;
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
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (
                0 <= self.warmup_ratio < 1,
                f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}",
            ),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (
                self.gradient_accumulation >= 1,
                f"gradient_accumulation must be >= 1, got {self.gradient_accumulation}",
            ),
            (
                self.max_length is None or self.max_length >= 1,
                f"max_length must be a positive number of tokens or None, got {self.max_length}",
            ),
            (
                self.template in ("auto", "chat", "plain"),
                f"template must be auto, chat or plain, not '{self.template}'",
            ),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (
                isinstance(self.lora, LoraSpec),
                f"lora must be a LoraSpec, not {type(self.lora).__name__}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ParamError(f"warmup: {message}")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["lora"] = self.lora.to_dict()
        return values


def warmup_subset(pool_size: int, fraction: float, seed: int) -> np.ndarray:
    """The sorted pool positions of the warmup subset: ``round(fraction * pool_size)`` records
    (at least one) drawn without replacement by ``numpy.random.default_rng(seed)``."""
    if pool_size < 1:
        raise ParamError("warmup needs a pool with at least one record")
    size = min(pool_size, max(1, round(fraction * pool_size)))
    chosen = np.random.default_rng(seed).choice(pool_size, size=size, replace=False)
    return np.sort(chosen)


def _tokenize(
    pool: Pool, indices: np.ndarray, tokenizer: Any, config: WarmupConfig
) -> list[Tokenized]:
    records = [pool[int(i)] for i in indices]
    examples: list[Tokenized] = []
    for result in tokenize_many(
        records, tokenizer, template=config.template, max_length=config.max_length
    ):
        if isinstance(result, RecordError):
            raise result
        examples.append(result)
    return examples


def _pad_id(tokenizer: Any) -> int:
    for attribute in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attribute, None)
        if value is not None:
            return int(value)
    raise ParamError(
        "the tokenizer has neither a pad nor an EOS token, so batches cannot be padded; set "
        "tokenizer.pad_token before the warmup"
    )


def _check_scheduler(name: str) -> None:
    from transformers.trainer_utils import SchedulerType

    names = [kind.value for kind in SchedulerType]
    if name not in names:
        raise ParamError(f"warmup: lr_scheduler must be one of {names}, not '{name}'")


def _trainable_copy(model: Any, config: WarmupConfig) -> Any:
    """A deep copy of ``model`` wrapped in a fresh LoRA adapter, or a deep copy of a PEFT model
    as given, so the caller's model is never changed."""
    from peft import PeftModel

    trained = copy.deepcopy(model)
    if not isinstance(trained, PeftModel):
        trained = attach_lora(trained, config.lora, seed=config.seed)
    if not any(p.requires_grad for p in trained.parameters()):
        raise ParamError(
            "the PEFT model has no trainable parameters; load its adapter with "
            "is_trainable=True (selectkit.models.lora.load_adapter does)"
        )
    return trained


def _adapter_description(peft_model: Any) -> dict[str, Any]:
    adapter = peft_model.peft_config[peft_model.active_adapter]
    targets = adapter.target_modules
    return {
        "type": str(adapter.peft_type.value),
        "r": getattr(adapter, "r", None),
        "alpha": getattr(adapter, "lora_alpha", None),
        "dropout": getattr(adapter, "lora_dropout", None),
        "target_modules": sorted(targets) if isinstance(targets, (set, list)) else targets,
    }


def _model_description(peft_model: Any) -> dict[str, Any]:
    base = peft_model.get_base_model()
    config_json = base.config.to_json_string(use_diff=False)
    return {
        "class": type(base).__name__,
        "name_or_path": getattr(base.config, "_name_or_path", "") or None,
        "config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
    }


_IDENTITY_KEYS = ("pool_fingerprint", "config", "adapter", "model")


def _claim(out: Path, manifest: dict[str, Any]) -> None:
    """Make sure ``out`` is empty or holds this same run, so checkpoints are never mixed."""
    if out.exists() and not out.is_dir():
        raise ParamError(f"warmup output {out} is a file; give a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    previous_path = out / MANIFEST_NAME
    if not previous_path.is_file():
        raise ParamError(
            f"warmup output {out} is not empty and holds no {MANIFEST_NAME}, so it is not a "
            "warmup run; give an empty or new folder"
        )
    try:
        previous = json.loads(previous_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ParamError(f"{previous_path} is not valid JSON ({exc}); remove the folder") from exc
    differs = [key for key in _IDENTITY_KEYS if previous.get(key) != manifest[key]]
    if previous.get("kind") != MANIFEST_KIND:
        differs.insert(0, "kind")
    if differs:
        raise ParamError(
            f"warmup output {out} holds a different warmup run (it differs in: "
            f"{', '.join(differs)}); give an empty or new folder so checkpoints are never mixed"
        )


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    with atomic_writer(out / MANIFEST_NAME) as handle:
        json.dump(manifest, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


@contextlib.contextmanager
def _own_rng() -> Iterator[None]:
    """Run with the global random states restored afterwards: the Trainer reseeds Python,
    NumPy and PyTorch, which should not leak into the caller's program."""
    import torch

    python_state = random.getstate()
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


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
    from transformers.trainer_callback import PrinterCallback

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
    if not progress:
        trainer.remove_callback(PrinterCallback)
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
    overwritten; a different run there is refused so checkpoints are never mixed.
    """
    out = Path(out_dir)
    _check_scheduler(config.lr_scheduler)
    indices = warmup_subset(len(pool), config.fraction, config.seed)
    examples = _tokenize(pool, indices, tokenizer, config)
    pad_id = _pad_id(tokenizer)
    peft_model = _trainable_copy(model, config)
    manifest: dict[str, Any] = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "status": "running",
        "pool_fingerprint": pool.fingerprint,
        "config": config.to_dict(),
        "adapter": _adapter_description(peft_model),
        "model": _model_description(peft_model),
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
    _claim(out, manifest)
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, manifest)

    with _own_rng():
        _train(peft_model, examples, pad_id, out, config, progress)

    checkpoints = find_checkpoints(out)
    manifest["status"] = "complete"
    manifest["checkpoints"] = [
        {
            "path": c.path.name,
            "epoch": c.epoch,
            "step": c.step,
            "learning_rate": c.learning_rate,
            "has_optimizer_state": c.has_optimizer_state,
        }
        for c in checkpoints
    ]
    _write_manifest(out, manifest)
    return checkpoints
