"""The loss of a model on a target set: how well a model trained on a selection fits the target.

An example's loss is its mean cross-entropy over its response tokens, the same per-example loss
that fine-tuning minimizes and gradient features are taken of; the target loss is the mean of
the examples' losses, so each example counts once whatever its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selectkit.data.batching import pad_batch
from selectkit.data.examples import Template, Tokenized
from selectkit.data.pool import Pool
from selectkit.errors import ParamError
from selectkit.models.losses import response_losses
from selectkit.train.common import pad_token_id, tokenize_subset


@dataclass(frozen=True)
class TargetLoss:
    """Per-example losses in pool order (``losses[i]`` is record ``ids[i]``'s) and their mean."""

    losses: np.ndarray
    ids: list[str]

    @property
    def mean(self) -> float:
        return float(self.losses.mean())

    def __len__(self) -> int:
        return len(self.losses)


def target_loss(
    model: Any,
    tokenizer: Any,
    pool: Pool,
    *,
    batch_size: int = 8,
    max_length: int | None = 512,
    template: Template = "auto",
    progress: bool = False,
) -> TargetLoss:
    """Each record's mean response-token cross-entropy under ``model`` (a causal LM or a PEFT
    model), in eval mode (no dropout) and without gradients.

    Records are tokenized as for training (``max_length`` truncates the prompt first) and run
    as :func:`example_losses` runs them. A record that cannot be tokenized raises its
    RecordError.
    """
    if len(pool) == 0:
        raise ParamError("the target pool is empty; give at least one record to evaluate on")
    if batch_size < 1:
        raise ParamError(f"batch_size must be >= 1, got {batch_size}")
    examples = tokenize_subset(
        pool, range(len(pool)), tokenizer, template=template, max_length=max_length
    )
    losses = example_losses(
        model, examples, pad_token_id(tokenizer), batch_size=batch_size, progress=progress
    )
    return TargetLoss(losses, pool.ids)


def example_losses(
    model: Any,
    examples: Sequence[Tokenized],
    pad_id: int,
    *,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "target loss",
) -> np.ndarray:
    """The mean response-token cross-entropy of each pre-tokenized example (float64, in the
    given order), so a caller evaluating many models on one target tokenizes it once.

    Examples run longest first in batches of ``batch_size``, so a batch pads little; the
    model's train or eval mode is restored afterwards.
    """
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ParamError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort([-len(example.input_ids) for example in examples], kind="stable")
    losses = np.empty(len(examples), dtype=np.float64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=len(examples), desc=desc, unit="ex", disable=not progress)
        with torch.no_grad(), bar:
            for start in range(0, len(order), batch_size):
                positions = order[start : start + batch_size]
                batch = pad_batch([examples[i] for i in positions], pad_id)
                batch = {key: value.to(device) for key, value in batch.items()}
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
                losses[positions] = response_losses(logits, batch["labels"]).cpu().numpy()
                bar.update(len(positions))
    finally:
        model.train(was_training)
    return losses
