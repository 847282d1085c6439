"""What every training run shares (warmup and fine-tuning): tokenized examples, a trainable
copy of the model, run folders that are never mixed, manifests, and isolated random state."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from selectkit.data.examples import Template, Tokenized, tokenize_many
from selectkit.data.pool import Pool
from selectkit.errors import ParamError, RecordError
from selectkit.models.lora import LoraSpec, attach_lora
from selectkit.publish import atomic_writer, is_temporary


def check_training_config(config: Any, owner: str, checks: list[tuple[bool, str]]) -> None:
    """Raise a :class:`ParamError` for the first failed check: ``checks`` specific to the
    run kind, then those every training schedule shares."""
    common = [
        (config.learning_rate > 0, f"learning_rate must be > 0, got {config.learning_rate}"),
        (
            0 <= config.warmup_ratio < 1,
            f"warmup_ratio must be in [0, 1), got {config.warmup_ratio}",
        ),
        (config.weight_decay >= 0, f"weight_decay must be >= 0, got {config.weight_decay}"),
        (config.batch_size >= 1, f"batch_size must be >= 1, got {config.batch_size}"),
        (
            config.gradient_accumulation >= 1,
            f"gradient_accumulation must be >= 1, got {config.gradient_accumulation}",
        ),
        (config.seed >= 0, f"seed must be >= 0, got {config.seed}"),
    ]
    _refuse_first([*checks, *common], owner)


def check_input_shape(lora: Any, max_length: int | None, template: str, owner: str) -> None:
    """What a training run is given besides its schedule: a LoRA spec, a token limit of at
    least two (a causal LM predicts each token from the ones before it) and a known
    template."""
    _refuse_first(
        [
            (
                max_length is None or max_length >= 2,
                f"max_length must be >= 2 tokens or None (a causal LM predicts each token from "
                f"the ones before it), got {max_length}",
            ),
            (
                template in ("auto", "chat", "plain"),
                f"template must be auto, chat or plain, not '{template}'",
            ),
            (isinstance(lora, LoraSpec), f"lora must be a LoraSpec, not {type(lora).__name__}"),
        ],
        owner,
    )


def _refuse_first(checks: list[tuple[bool, str]], owner: str) -> None:
    for ok, message in checks:
        if not ok:
            raise ParamError(f"{owner}: {message}")


def training_config_dict(config: Any) -> dict[str, Any]:
    """A training configuration as plain JSON, its LoRA spec included."""
    values = dataclasses.asdict(config)
    values["lora"] = config.lora.to_dict()
    return values


def tokenize_subset(
    pool: Pool,
    indices: Sequence[int] | np.ndarray,
    tokenizer: Any,
    *,
    template: Template,
    max_length: int | None,
) -> list[Tokenized]:
    """The records at ``indices``, tokenized for training; the first one that cannot be raises
    its :class:`RecordError`, before any training starts."""
    records = [pool[int(i)] for i in indices]
    examples: list[Tokenized] = []
    for result in tokenize_many(records, tokenizer, template=template, max_length=max_length):
        if isinstance(result, RecordError):
            raise result
        examples.append(result)
    return examples


def pad_token_id(tokenizer: Any) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its EOS token."""
    for attribute in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attribute, None)
        if value is not None:
            return int(value)
    raise ParamError(
        "the tokenizer has neither a pad nor an EOS token, so batches cannot be padded; set "
        "tokenizer.pad_token before training"
    )


def trainable_copy(model: Any, lora: LoraSpec, seed: int) -> Any:
    """A deep copy of ``model`` wrapped in a fresh LoRA adapter (``lora``, initial weights drawn
    from ``seed``), or a deep copy of a PEFT model as given, so the caller's model is never
    changed."""
    from peft import PeftModel

    trained = copy.deepcopy(model)
    if not isinstance(trained, PeftModel):
        trained = attach_lora(trained, lora, seed=seed)
    if not any(p.requires_grad for p in trained.parameters()):
        raise ParamError(
            "the PEFT model has no trainable parameters; load its adapter with "
            "is_trainable=True (selectkit.models.lora.load_adapter does)"
        )
    return trained


def adapter_description(peft_model: Any) -> dict[str, Any]:
    """The active adapter's type, rank, alpha, dropout and target modules, for manifests."""
    adapter = peft_model.peft_config[peft_model.active_adapter]
    targets = adapter.target_modules
    return {
        "type": str(adapter.peft_type.value),
        "r": getattr(adapter, "r", None),
        "alpha": getattr(adapter, "lora_alpha", None),
        "dropout": getattr(adapter, "lora_dropout", None),
        "target_modules": sorted(targets) if isinstance(targets, (set, list)) else targets,
    }


def model_description(peft_model: Any) -> dict[str, Any]:
    """The base model's class, name and a hash of its full config, for manifests."""
    base = peft_model.get_base_model()
    config_json = base.config.to_json_string(use_diff=False)
    return {
        "class": type(base).__name__,
        "name_or_path": getattr(base.config, "_name_or_path", "") or None,
        "config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
    }


def claim_run_folder(
    out: Path,
    manifest: dict[str, Any],
    *,
    name: str,
    identity: Sequence[str],
    what: str,
    ignore: Sequence[str] = (),
) -> None:
    """Make sure ``out`` is empty or holds this same ``what`` run: a manifest file ``name`` of
    the same ``kind`` and the same values under the ``identity`` keys. Runs are never mixed.
    Files named in ``ignore`` (e.g. the run's own lock file) do not make a folder non-empty."""
    if out.exists() and not out.is_dir():
        raise ParamError(f"{what} output {out} is a file; give a folder")
    # Another process may be writing this run's files: its temporaries are not a foreign run.
    if not out.is_dir() or all(
        entry.name in ignore or is_temporary(entry.name) for entry in out.iterdir()
    ):
        return
    previous_path = out / name
    if not previous_path.is_file():
        raise ParamError(
            f"{what} output {out} is not empty and holds no {name}, so it is not a "
            f"{what} run; give an empty or new folder"
        )
    try:
        previous = json.loads(previous_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ParamError(f"{previous_path} is not valid JSON ({exc}); remove the folder") from exc
    differs = [key for key in identity if previous.get(key) != manifest[key]]
    if previous.get("kind") != manifest["kind"]:
        differs.insert(0, "kind")
    if differs:
        raise ParamError(
            f"{what} output {out} holds a different {what} run (it differs in: "
            f"{', '.join(differs)}); give an empty or new folder so runs are never mixed"
        )


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` as indented JSON, atomically."""
    with atomic_writer(path) as handle:
        json.dump(manifest, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


@contextlib.contextmanager
def own_rng() -> Iterator[None]:
    """Run with the global random states restored afterwards: training reseeds Python, NumPy
    and PyTorch (the Trainer does, and dropout draws), which should not leak into the caller's
    program."""
    import torch

    python_state = random.getstate()
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
