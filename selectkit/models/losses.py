"""The loss every part of selectkit means: a causal LM's mean cross-entropy over an example's
response tokens. Gradient features, training, evaluation and TRAK's output all take it from here,
so they cannot disagree about which tokens count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from selectkit.data.batching import IGNORE_INDEX

if TYPE_CHECKING:
    import torch


def response_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example mean cross-entropy over response tokens (labels not IGNORE_INDEX), in float32.

    Position t predicts label t + 1, as in Hugging Face causal LMs.
    """
    import torch

    shifted = labels[:, 1:]
    mask = shifted != IGNORE_INDEX
    token_loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2),
        shifted.masked_fill(~mask, 0),
        reduction="none",
    )
    return (token_loss * mask).sum(dim=1) / mask.sum(dim=1)
