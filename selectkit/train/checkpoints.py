"""Reading warmup checkpoints: Hugging Face Trainer folders holding a LoRA adapter.

LESS scores an example at every warmup checkpoint and weights each checkpoint's scores by the
mean learning rate of the epoch that ends there; its Adam gradient features also need the
optimizer's first and second moments at that checkpoint. This module reads both, and never
unpickles arbitrary objects: ``optimizer.pt`` is opened with PyTorch's restricted
``weights_only`` loader, which rebuilds only tensors and plain containers and runs no code.

A checkpoint is checked when it is read, before any model loads: its Trainer state and adapter
config must parse, its adapter weights' header must be whole (:func:`read_checkpoint`), and,
when Adam features need it, its optimizer state must load (:func:`check_optimizer_state`). A
damaged file is a :class:`ParamError` naming it, never a library traceback.
"""

from __future__ import annotations

import json
import math
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


def _first_line(exc: BaseException) -> str:
    """A library error's first line, for a one-line message."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _damaged(path: Path, what: str, exc: BaseException) -> ParamError:
    return ParamError(
        f"{path} is damaged or not {what} ({_first_line(exc)}); train the checkpoint again or "
        "replace the file"
    )


def _mean_learning_rate(log_history: list[Any], epoch: float, folder: Path) -> float:
    """Mean of the logged per-step learning rates whose epoch lies in the epoch ending at
    ``epoch`` (exact when every step is logged, as the warmup trainer does)."""
    start = math.ceil(epoch - _EPOCH_TOLERANCE) - 1
    try:
        rates = [
            float(entry["learning_rate"])
            for entry in log_history
            if isinstance(entry, dict)
            and "learning_rate" in entry
            and start + _EPOCH_TOLERANCE
            < float(entry.get("epoch", -1.0))
            <= epoch + _EPOCH_TOLERANCE
        ]
    except (TypeError, ValueError) as exc:
        raise _damaged(folder / TRAINER_STATE, "a Trainer state", exc) from None
    if not rates:
        raise ParamError(
            f"{folder}: {TRAINER_STATE} logs no learning rate for the epoch ending at epoch "
            f"{epoch:g}, so the checkpoint cannot be weighted; train with logging_steps=1"
        )
    if not all(math.isfinite(rate) for rate in rates):
        raise ParamError(
            f"{folder / TRAINER_STATE} logs a learning rate that is not a finite number, so the "
            "checkpoint cannot be weighted; train the checkpoint again"
        )
    return sum(rates) / len(rates)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise _damaged(path, what, exc) from None


def _check_adapter_weights(path: Path) -> None:
    """The adapter weights' header must parse and cover the file (a truncated or overwritten
    file fails here); the tensors themselves are not read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            handle.keys()
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError)
        raise _damaged(path, "a safetensors file", exc) from None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The step, epoch and mean epoch learning rate of one checkpoint folder, whose Trainer
    state, adapter config and adapter weights' header are checked to be readable."""
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
    state = _read_json(folder / TRAINER_STATE, "a Trainer state")
    try:
        step = int(state["global_step"])
        epoch = float(state["epoch"])
        log_history = list(state.get("log_history", []))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _damaged(folder / TRAINER_STATE, "a Trainer state", exc) from None
    if not math.isfinite(epoch) or epoch < 0 or step < 0:
        raise ParamError(
            f"{folder / TRAINER_STATE} gives epoch {epoch} at step {step}; train the "
            "checkpoint again or replace the file"
        )
    config = _read_json(folder / ADAPTER_CONFIG, "a PEFT adapter config")
    if not isinstance(config, dict) or "peft_type" not in config:
        raise ParamError(
            f"{folder / ADAPTER_CONFIG} is not a PEFT adapter config (a JSON object with a "
            "peft_type); train the checkpoint again or replace the file"
        )
    _check_adapter_weights(folder / ADAPTER_WEIGHTS)
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


def _load_optimizer_state(folder: Path, *, mmap: bool = False) -> tuple[list[list[int]], dict]:
    """The parameter ids of each optimizer group and the per-parameter states of
    ``optimizer.pt``, read with the restricted ``weights_only`` loader (``mmap``: tensors
    mapped, not read)."""
    import torch

    path = folder / OPTIMIZER_STATE
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        groups = [[int(i) for i in group["params"]] for group in saved["param_groups"]]
        states = saved["state"]
        if not isinstance(states, dict):
            raise TypeError(f"its 'state' is a {type(states).__name__}, not a mapping")
    except FileNotFoundError:
        raise _no_optimizer_state(folder) from None
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        if mmap and "mmap can only be used" in str(exc):
            return _load_optimizer_state(folder)  # an older file format: read it whole
        raise _damaged(
            path, "an optimizer state dict that loads without running code (weights_only)", exc
        ) from None
    return groups, states


def check_optimizer_state(checkpoint: Checkpoint) -> None:
    """Refuse, before any model loads, a checkpoint without optimizer state or whose
    ``optimizer.pt`` does not load as one (its tensors are mapped, not read)."""
    if not checkpoint.has_optimizer_state:
        raise _no_optimizer_state(checkpoint.path)
    _load_optimizer_state(checkpoint.path, mmap=True)


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
    saved_groups, states = _load_optimizer_state(folder)

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
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(key), torch.Tensor) for key in ("exp_avg", "exp_avg_sq")
            ):
                raise ParamError(
                    f"checkpoint {folder}: the optimizer state is not Adam's (it holds "
                    f"{sorted(entry) if isinstance(entry, dict) else type(entry).__name__}, no "
                    "exp_avg/exp_avg_sq tensors); gradient type 'adam' needs an "
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
