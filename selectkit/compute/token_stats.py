"""Per-example statistics of one forward pass over the response tokens (no gradients): the mean
response loss and EL2N's error norm, each a float32 number per example of a padded batch.

:func:`forward_statistics` is the pass's one model call; everything after it works on the
logits of the positions that predict a label and those labels (:func:`logit_statistics`), so
the logits may as well be only those at response positions (what
:func:`selectkit.models.losses.response_logits` gives) without changing anything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from selectkit.data.batching import IGNORE_INDEX
from selectkit.models.losses import next_token_losses

if TYPE_CHECKING:
    import torch

#: Each statistic's name (a store column) and its definition (part of the store key).
STATISTICS = {
    "loss": "mean cross-entropy over response tokens",
    "el2n": "mean over response tokens of the L2 norm of softmax(logits) - onehot(label) "
    "(Paul et al. 2021)",
}


def forward_statistics(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every statistic of :data:`STATISTICS` for each example of ``batch`` (padded on the right,
    on the model's device), from one forward pass of the model as it is (call it under
    ``torch.no_grad()`` in eval mode)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logit_statistics(logits[:, :-1], batch["labels"][:, 1:])


def logit_statistics(logits: torch.Tensor, next_labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The statistics from ``logits[:, t]`` and the label it predicts, ``next_labels[:, t]``
    (:data:`~selectkit.data.batching.IGNORE_INDEX` where the loss does not count)."""
    return {"loss": next_token_losses(logits, next_labels), "el2n": el2n(logits, next_labels)}


def el2n(logits: torch.Tensor, next_labels: torch.Tensor) -> torch.Tensor:
    """EL2N per example: the mean over its counted positions of ``||softmax(logits) - e_y||_2``
    (Paul et al. 2021), in float32."""
    import torch

    mask = next_labels != IGNORE_INDEX
    probs = torch.softmax(logits.float(), dim=-1)
    target = probs.gather(-1, next_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    # ||p - e_y||^2 = ||p||^2 - 2 p_y + 1
    error = (probs.square().sum(-1) - 2 * target + 1).clamp(min=0).sqrt()
    return (error * mask).sum(1) / mask.sum(1)
