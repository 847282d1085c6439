"""LoRA adapters: created fresh with a given rank, alpha and target modules, or loaded from a
checkpoint folder (a PEFT adapter, e.g. one saved by the warmup trainer)."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selectkit.errors import ParamError


@dataclass(frozen=True)
class LoraSpec:
    """How to create a LoRA adapter.

    The defaults follow LESS (Xia et al. 2024) except the rank: LESS uses r=128, alpha=512 on
    the attention projections; r=8 keeps per-example gradients small on a CPU. ``target_modules``
    ``"all-linear"`` adapts every linear layer except the output head.
    """

    r: int = field(default=8, metadata={"help": "rank of the LoRA adapter"})
    alpha: float = field(default=32.0, metadata={"help": "alpha of the LoRA adapter"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the adapter's input"})
    target_modules: tuple[str, ...] | str = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"),
        metadata={"help": "module names the adapter wraps, or all-linear"},
    )

    def __post_init__(self) -> None:
        if self.target_modules == ("all-linear",):  # as a comma-separated value reads it
            object.__setattr__(self, "target_modules", "all-linear")
        targets = self.target_modules
        if self.r < 1:
            raise ParamError(f"LoRA rank r must be >= 1, got {self.r}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ParamError(f"LoRA alpha must be a finite number > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ParamError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if targets != "all-linear" and (
            isinstance(targets, str) or not targets or not all(t.isidentifier() for t in targets)
        ):
            raise ParamError(
                "LoRA target modules must be 'all-linear' or module names (e.g. q_proj, "
                f"v_proj), got {targets!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        targets = self.target_modules
        return {
            "r": self.r,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target_modules": targets if isinstance(targets, str) else list(targets),
        }


def _present_targets(model: Any, targets: tuple[str, ...] | str) -> list[str] | str:
    if isinstance(targets, str):
        return targets
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if len(missing) == len(targets):
        raise ParamError(
            f"none of the LoRA target modules {list(targets)} exist in this model; its "
            f"module names include {sorted(names)[:12]} (or use target_modules='all-linear')"
        )
    return [t for t in targets if t in names]


def lora_parameter_count(model: Any, spec: LoraSpec) -> int:
    """How many parameters a fresh LoRA adapter of ``spec`` trains on ``model``:
    ``r · (in + out)`` for every adapted ``nn.Linear`` (all but the output head for
    ``all-linear``), without attaching it. Layers of other types are not counted."""
    from torch import nn

    targets = _present_targets(model, spec.target_modules)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module is head:
            continue
        if targets == "all-linear" or name.rsplit(".", 1)[-1] in targets:
            total += spec.r * (module.in_features + module.out_features)
    return total


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """PEFT calls a transformers method that transformers has deprecated; the warning says
    nothing a selectkit user can act on, so it is kept out of the output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        yield


def attach_lora(model: Any, spec: LoraSpec, *, seed: int = 0) -> Any:
    """Wrap ``model`` in a fresh LoRA adapter; the adapter's A matrices are drawn from ``seed``."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=_present_targets(model, spec.target_modules),
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft calls a transformers method transformers has deprecated: nothing the user can do.
        warnings.filterwarnings(
            "ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning
        )
        torch.manual_seed(seed)
        return get_peft_model(model, config)


@contextlib.contextmanager
def quiet_saving() -> Iterator[None]:
    """Saving an adapter, peft warns when the base model's folder has no config file (the
    bundled SmolLM2 is read from its GGUF file) that it assumes the vocabulary unchanged; a
    LoRA adapter never changes it, so the warning says nothing to the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Could not find a config file in", UserWarning)
        yield


def load_adapter(model: Any, checkpoint: str | Path) -> Any:
    """Wrap ``model`` in the LoRA adapter saved in ``checkpoint``, with trainable weights.

    An adapter that cannot be read (a damaged file) or does not fit ``model`` (another base
    model's) is a :class:`ParamError` naming the folder."""
    import torch
    from peft import PeftModel

    folder = Path(checkpoint)
    if not (folder / "adapter_config.json").is_file():
        raise ParamError(
            f"{folder}: no adapter_config.json, so this is not a PEFT adapter checkpoint"
        )
    try:  # PEFT initialises the layers from torch's global generator before it reads them
        with _quiet_peft(), torch.random.fork_rng(devices=[]):
            return PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    except Exception as exc:  # safetensors, json, torch and PEFT each raise their own errors
        _remove_adapter_layers(model)
        raise ParamError(
            f"the LoRA adapter in {folder} cannot be loaded onto this model ({_reason(exc)}); "
            "train the checkpoint again or replace it, or pass the base model it was trained on"
        ) from None


def _reason(exc: BaseException) -> str:
    """A library error in one line: its first line, and the next when the first only
    introduces it ("Error(s) in loading state_dict ...:")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return text[:300]


def _remove_adapter_layers(model: Any) -> None:
    """Undo what a failed adapter load left in ``model``: PEFT wraps the target layers in
    place before it reads the weights, so put the original layers back."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def remove_adapter(wrapped: Any, base: Any) -> None:
    """Take the adapter off ``wrapped`` (a PEFT model around ``base``), leaving ``base`` the
    model it was before the adapter went on."""
    restored = wrapped.unload()
    if restored is not base:
        raise RuntimeError("removing the adapter gave another model than the one it wrapped")
    _remove_adapter_layers(base)
