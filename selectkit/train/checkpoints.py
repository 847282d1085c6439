"""Reading warmup checkpoints: Hugging Face Trainer folders holding a LoRA adapter.

LESS scores an example at every warmup checkpoint and weights each checkpoint's scores by the
mean learning rate of the epoch that ends there; its Adam gradient features also need the
optimizer's first and second moments at that checkpoint. This module reads both, and never
unpickles arbitrary objects: ``optimizer.pt`` is opened with PyTorch's restricted
``weights_only`` loader, which rebuilds only tensors and plain containers and runs no code.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selectkit.errors import ParamError

if TYPE_CHECKING:
    import torch

TRAINER_STATE = "trainer_state.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
OPTIMIZER_STATE = "optimizer.pt"

_CHECKPOINT_FOLDER = re.compile(r"checkpoint-(\d+)")
# How the Trainer tells parameters that get no weight decay: by name, or inside a LayerNorm
# (transformers.Trainer.get_decay_parameter_names).
_NO_DECAY_PATTERNS = tuple(
    re.compile(p)
    for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
)
# Log entries carry the epoch as a float (epoch + step / steps_in_epoch); this absorbs rounding.
_EPOCH_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint of a run.

    ``epoch`` is the Trainer's epoch count when it was saved (``2.0`` after the second epoch).
    ``learning_rate`` is the mean learning rate over the optimizer steps of the epoch that ends
    here, the weight LESS gives this checkpoint's scores.
    """

    path: Path
    step: int
    epoch: float
    learning_rate: float
    has_optimizer_state: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "step": self.step,
            "epoch": self.epoch,
            "learning_rate": self.learning_rate,
            "has_optimizer_state": self.has_optimizer_state,
        }


def _mean_learning_rate(log_history: list[dict[str, Any]], epoch: float, folder: Path) -> float:
    """Mean of the logged per-step learning rates whose epoch lies in the epoch ending at
    ``epoch`` (exact when every step is logged, as the warmup trainer does)."""
    start = math.ceil(epoch - _EPOCH_TOLERANCE) - 1
    rates = [
        float(entry["learning_rate"])
        for entry in log_history
        if "learning_rate" in entry
        and start + _EPOCH_TOLERANCE < float(entry.get("epoch", -1.0)) <= epoch + _EPOCH_TOLERANCE
    ]
    if not rates:
        raise ParamError(
            f"{folder}: {TRAINER_STATE} logs no learning rate for the epoch ending at epoch "
            f"{epoch:g}, so the checkpoint cannot be weighted; train with logging_steps=1"
        )
    return sum(rates) / len(rates)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The step, epoch and mean epoch learning rate of one checkpoint folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise ParamError(f"checkpoint folder {folder} does not exist")
    for name, what in (
        (TRAINER_STATE, "the Trainer's state (step, epoch, learning rates)"),
        (ADAPTER_CONFIG, "a PEFT adapter config"),
        (ADAPTER_WEIGHTS, "the adapter weights"),
    ):
        if not (folder / name).is_file():
            raise ParamError(
                f"checkpoint {folder} has no {name}, so it lacks {what}; a warmup checkpoint is "
                "a Hugging Face Trainer checkpoint of a LoRA model"
            )
    try:
        state = json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
        step = int(state["global_step"])
        epoch = float(state["epoch"])
        log_history = list(state.get("log_history", []))
    except (ValueError, KeyError, TypeError) as exc:
        raise ParamError(f"{folder / TRAINER_STATE} is not a Trainer state: {exc}") from exc
    return Checkpoint(
        path=folder,
        step=step,
        epoch=epoch,
        learning_rate=_mean_learning_rate(log_history, epoch, folder),
        has_optimizer_state=(folder / OPTIMIZER_STATE).is_file(),
    )


def find_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The checkpoints of a run sorted by step: its ``checkpoint-<step>`` subfolders, or the
    folder itself when it is a single checkpoint."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise ParamError(f"run folder {folder} does not exist")
    if (folder / TRAINER_STATE).is_file():
        return [read_checkpoint(folder)]
    found = [
        (int(match.group(1)), child)
        for child in folder.iterdir()
        if child.is_dir() and (match := _CHECKPOINT_FOLDER.fullmatch(child.name))
    ]
    if not found:
        raise ParamError(
            f"{folder} holds no checkpoint-<step> folders and is not a checkpoint itself "
            f"(no {TRAINER_STATE})"
        )
    return [read_checkpoint(child) for _, child in sorted(found)]


def trainer_parameter_groups(model: Any) -> tuple[list[str], list[str]]:
    """The names of ``model``'s trainable parameters in the two groups the Hugging Face Trainer
    gives its optimizer: with weight decay, then without, each in ``named_parameters`` order.

    Biases, norm weights (by name) and everything inside a ``torch.nn.LayerNorm`` get no decay.
    """
    from torch import nn

    layer_norms = [
        f"{name}." for name, module in model.named_modules() if isinstance(module, nn.LayerNorm)
    ]
    decay: list[str] = []
    no_decay: list[str] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lowered = name.lower()
        excluded = any(p.search(lowered) for p in _NO_DECAY_PATTERNS) or any(
            name.startswith(prefix) for prefix in layer_norms
        )
        (no_decay if excluded else decay).append(name)
    return decay, no_decay


def _no_optimizer_state(folder: Path) -> ParamError:
    return ParamError(
        f"checkpoint {folder} has no optimizer state; gradient type 'adam' needs the moments of "
        "the warmup optimizer (save checkpoints with optimizer state, or use gradient type 'sgd')"
    )


def adam_moments(
    checkpoint: Checkpoint | str | Path, model: Any
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """AdamW's first and second moments (``exp_avg``, ``exp_avg_sq``) at ``checkpoint`` for
    every trainable parameter of ``model``, keyed by ``model.named_parameters()`` names in that
    order.

    ``model`` is a PEFT model with the checkpoint's adapter loaded trainable (e.g.
    ``load_adapter(base, checkpoint)``). ``optimizer.pt`` stores parameters by position only, so
    the names come from rebuilding the Trainer's parameter groups for ``model``; every shape and
    the total count are checked. The file is read with ``torch.load(weights_only=True)``, the
    restricted unpickler that cannot run code.
    """
    import torch

    if not isinstance(checkpoint, Checkpoint):
        checkpoint = read_checkpoint(checkpoint)
    folder = checkpoint.path
    if not checkpoint.has_optimizer_state:
        raise _no_optimizer_state(folder)
    try:
        saved = torch.load(folder / OPTIMIZER_STATE, map_location="cpu", weights_only=True)
        saved_groups = [list(group["params"]) for group in saved["param_groups"]]
        states = saved["state"]
    except FileNotFoundError:
        raise _no_optimizer_state(folder) from None
    except (KeyError, TypeError, RuntimeError, pickle.UnpicklingError) as exc:
        raise ParamError(
            f"{folder / OPTIMIZER_STATE} is not a PyTorch optimizer state dict that loads "
            f"without running code (weights_only): {exc}"
        ) from exc

    groups = trainer_parameter_groups(model)
    expected = [len(names) for names in groups]
    found = [len(ids) for ids in saved_groups]
    if found != expected:
        raise ParamError(
            f"checkpoint {folder}: its optimizer holds {sum(found)} parameters in groups of "
            f"{found}, but the model has {sum(expected)} trainable parameters in groups of "
            f"{expected} (with, without weight decay); pass the warmup model with this "
            "checkpoint's adapter loaded trainable, e.g. load_adapter(base_model, checkpoint)"
        )

    params = dict(model.named_parameters())
    moments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for names, ids in zip(groups, saved_groups, strict=True):
        for name, index in zip(names, ids, strict=True):
            entry = states.get(index)
            if entry is None:
                raise ParamError(
                    f"checkpoint {folder}: the optimizer has no state for parameter '{name}' "
                    "(it never took a step with a gradient for it)"
                )
            if "exp_avg" not in entry or "exp_avg_sq" not in entry:
                raise ParamError(
                    f"checkpoint {folder}: the optimizer state is not Adam's (it holds "
                    f"{sorted(entry)}, no exp_avg/exp_avg_sq); gradient type 'adam' needs an "
                    "Adam or AdamW warmup (or use gradient type 'sgd')"
                )
            shape = tuple(params[name].shape)
            for key in ("exp_avg", "exp_avg_sq"):
                if tuple(entry[key].shape) != shape:
                    raise ParamError(
                        f"checkpoint {folder}: {key} of parameter '{name}' has shape "
                        f"{tuple(entry[key].shape)}, but the parameter has shape {shape}; the "
                        "model does not match the one the checkpoint was trained with"
                    )
            moments[name] = (entry["exp_avg"], entry["exp_avg_sq"])
    return {name: moments[name] for name, param in params.items() if param.requires_grad}
