"""LoRA adapters: created fresh with a given rank, alpha and target modules, or loaded from a
checkpoint folder (a PEFT adapter, e.g. one saved by the warmup trainer)."""

from __future__ import annotations

from dataclasses import dataclass
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

    r: int = 8
    alpha: float = 32.0
    dropout: float = 0.1
    target_modules: tuple[str, ...] | str = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ParamError(f"LoRA rank r must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ParamError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def load_adapter(model: Any, checkpoint: str | Path) -> Any:
    """Wrap ``model`` in the LoRA adapter saved in ``checkpoint``, with trainable weights."""
    from peft import PeftModel

    folder = Path(checkpoint)
    if not (folder / "adapter_config.json").is_file():
        raise ParamError(
            f"{folder}: no adapter_config.json, so this is not a PEFT adapter checkpoint"
        )
    return PeftModel.from_pretrained(model, str(folder), is_trainable=True)
