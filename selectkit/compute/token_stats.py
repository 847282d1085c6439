"""Per-example statistics of a forward pass over the response tokens (no gradients)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from selectkit.data.batching import IGNORE_INDEX, pad_batch
from selectkit.data.examples import Tokenized


def el2n_scores(
    model: Any,
    tokens: Sequence[Tokenized],
    pad_id: int,
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> np.ndarray:
    """EL2N per example: the mean over its response tokens of ``||softmax(logits) - onehot(y)||_2``
    (Paul et al. 2021), in float64, in the order of ``tokens``."""
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    model.eval()
    scores = np.empty(len(tokens), dtype=np.float64)
    starts = range(0, len(tokens), batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="EL2N", unit="batch", disable=not progress):
            batch = pad_batch(tokens[start : start + batch_size], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            mask = labels != IGNORE_INDEX
            probs = torch.softmax(logits.float(), dim=-1)
            target = probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            # ||p - e_y||^2 = ||p||^2 - 2 p_y + 1
            error = (probs.square().sum(-1) - 2 * target + 1).clamp(min=0).sqrt()
            per_example = (error * mask).sum(1) / mask.sum(1)
            scores[start : start + len(per_example)] = per_example.double().cpu().numpy()
    return scores
