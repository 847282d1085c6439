"""The loss every part of selectkit means: a causal LM's mean cross-entropy over an example's
response tokens. Gradient features, training, evaluation and TRAK's output all take it from here,
so they cannot disagree about which tokens count.

The LM head over the whole vocabulary at every position is a fifth of a small model's FLOPs
(SmolLM2: 49,152 words) and its logits the largest tensors of the pass, yet only the positions
that predict a response token carry loss. Two ways to compute no more than those:

- :func:`packed_response_losses`: the model's final hidden states at exactly those positions,
  packed across the batch, through its head (:func:`head_logits`: the output embedding, tied
  or not, then what the model's forward does after it: Gemma 2's soft-capping, Cohere's and
  Granite's logit scales). Used for a model only when :func:`head_matches` finds it gives the
  model's own logits, so an architecture with some other post-head step is never got wrong;
- :func:`response_logits`: the model's own ``logits_to_keep`` for the union of those positions
  over the batch (one index set for every example: what ``vmap`` needs).

A model with neither gets full logits, sliced after.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from selectkit.data.batching import IGNORE_INDEX

if TYPE_CHECKING:
    import torch


def response_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example mean cross-entropy over response tokens (labels not IGNORE_INDEX), in float32.

    Position t predicts label t + 1, as in Hugging Face causal LMs.
    """
    return next_token_losses(logits[:, :-1], labels[:, 1:])


def next_token_losses(logits: torch.Tensor, next_labels: torch.Tensor) -> torch.Tensor:
    """Per-example mean cross-entropy of ``logits[:, t]`` against ``next_labels[:, t]`` over the
    positions whose label counts (not IGNORE_INDEX), in float32."""
    import torch

    mask = next_labels != IGNORE_INDEX
    token_loss = torch.nn.functional.cross_entropy(
        logits.float().transpose(1, 2),
        next_labels.masked_fill(~mask, 0),
        reduction="none",
    )
    return (token_loss * mask).sum(dim=1) / mask.sum(dim=1)


def takes_logits_to_keep(model: Any) -> bool:
    """Whether ``model`` (or the model a PEFT wrapper holds) can compute only some positions'
    logits (transformers' ``logits_to_keep``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def head_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from a causal LM's final (normed) hidden states: its output embedding, then the
    scalings its forward applies after it (Cohere's ``logit_scale``, Granite's
    ``logits_scaling``, Gemma 2's ``final_logit_softcapping``)."""
    import torch

    config = model.config
    logits = model.get_output_embeddings()(hidden)
    if getattr(config, "logit_scale", None):
        logits = logits * config.logit_scale
    if getattr(config, "logits_scaling", None):
        logits = logits / config.logits_scaling
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def head_matches(model: Any) -> bool:
    """Whether :func:`head_logits` over ``model``'s last hidden state gives its own logits (to
    float tolerance) on a short probe, and the model can skip its own head; only then are its
    response losses packed."""
    import torch

    if not takes_logits_to_keep(model) or model.get_output_embeddings() is None:
        return False
    device = next(model.parameters()).device
    probe = torch.arange(1, 9, device=device)[None] % model.config.vocab_size
    with torch.no_grad():
        out = model(input_ids=probe, output_hidden_states=True)
        if not out.hidden_states:
            return False
        ours = head_logits(model, out.hidden_states[-1]).float()
    return ours.shape == out.logits.shape and torch.allclose(
        ours, out.logits.float(), rtol=1e-4, atol=1e-5
    )


def packed_response_losses(
    model: Any, input_ids: torch.Tensor, labels: torch.Tensor, **inputs: Any
) -> torch.Tensor:
    """Per-example mean cross-entropy over response tokens (as :func:`response_losses`), from
    the logits of exactly the positions that predict a response token, packed across the
    batch. For a model where :func:`head_matches`; ``inputs`` go to the model (the attention
    mask)."""
    import torch

    counted = labels[:, 1:] != IGNORE_INDEX
    nothing = torch.empty(0, dtype=torch.long, device=input_ids.device)
    out = model(input_ids=input_ids, logits_to_keep=nothing, output_hidden_states=True, **inputs)
    token_loss = _head_losses(model, out.hidden_states[-1][:, :-1][counted], labels[:, 1:][counted])
    per_position = torch.zeros(counted.shape, dtype=token_loss.dtype, device=token_loss.device)
    per_position[counted] = token_loss  # back in place: each example's sum in the usual order
    return per_position.sum(dim=1) / counted.sum(dim=1)


#: Bytes of float32 logits computed at once: positions beyond it go through the head in chunks,
#: each recomputed in the backward pass instead of kept (at SmolLM2's 49,152 words, a batch of
#: 16 x 256 tokens has 0.8 GB of logits, and the loss keeps about three such tensors).
HEAD_CHUNK_BYTES = 256 << 20


def _head_losses(model: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each position's cross-entropy through the head, in chunks of at most
    :data:`HEAD_CHUNK_BYTES` of logits whose logits are recomputed in the backward pass rather
    than kept; in one piece when the head is trainable (a second forward through it would
    add its per-example gradients twice) or the logits are small."""
    import torch
    from torch.utils.checkpoint import checkpoint

    def losses(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logits = head_logits(model, h).float()
        return torch.nn.functional.cross_entropy(logits, t, reduction="none")

    rows = max(1, HEAD_CHUNK_BYTES // (4 * model.config.vocab_size))
    trainable = any(p.requires_grad for p in model.get_output_embeddings().parameters())
    if len(hidden) <= rows or trainable:
        return losses(hidden, targets)
    chunks = [
        checkpoint(losses, hidden[at : at + rows], targets[at : at + rows], use_reentrant=False)
        for at in range(0, len(hidden), rows)
    ]
    return torch.cat(chunks)


def response_logits(
    model: Any, input_ids: torch.Tensor, labels: torch.Tensor, **inputs: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, next_labels)`` for :func:`next_token_losses`: the logits of the positions
    that predict a response token in any example of the batch (every position ``t < T - 1``
    for a model without ``logits_to_keep``), and the label each one predicts. ``inputs`` go to
    the model as they are (the attention mask)."""
    if not takes_logits_to_keep(model):
        logits = model(input_ids=input_ids, **inputs).logits
        return logits[:, :-1], labels[:, 1:]
    positions = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    logits = model(input_ids=input_ids, logits_to_keep=positions, **inputs).logits
    return logits, labels[:, positions + 1]
