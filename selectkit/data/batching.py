"""Padding tokenized examples into model batches, with labels that carry the loss mask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from selectkit.data.examples import Tokenized

#: The label PyTorch's cross-entropy (and Hugging Face models) ignore.
IGNORE_INDEX = -100


def pad_batch(
    items: Sequence[Tokenized], pad_id: int, side: Literal["left", "right"] = "right"
) -> dict[str, Any]:
    """``input_ids``, ``attention_mask`` and ``labels`` tensors for a batch of examples.

    ``labels`` repeat the input ids where the loss mask is on and hold :data:`IGNORE_INDEX`
    elsewhere (prompt and padding); models shift them by one position themselves.
    """
    import torch

    if not items:
        raise ValueError("cannot pad an empty batch")
    width = max(len(item.input_ids) for item in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        span = slice(0, n) if side == "right" else slice(width - n, width)
        ids = torch.tensor(item.input_ids, dtype=torch.long)
        mask = torch.tensor(item.loss_mask, dtype=torch.bool)
        input_ids[row, span] = ids
        attention[row, span] = 1
        labels[row, span] = torch.where(mask, ids, torch.full_like(ids, IGNORE_INDEX))
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
