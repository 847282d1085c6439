"""TRAK's model output function for a causal LM, from the per-example response loss.

TRAK (Park et al. 2023) attributes a model output ``f`` and reweights by the out-to-loss
derivative ``Q = ∂ℓ/∂f``. For classification it takes ``f = log(p / (1 − p))`` with ``p`` the
probability of the correct label; DsDm (Engstrom, Feldmann and Madry 2024, "DsDm: Model-Aware
Dataset Selection with Datamodels") uses the same for language models with
``p = exp(−ℓ(z))``, where ``ℓ(z)`` is the example's mean cross-entropy over its response
tokens (the per-example loss selectkit trains on and stores beside each feature row). Then

    f = −ℓ − log(1 − p),   ∇f = −∇ℓ / (1 − p),   Q = |∂ℓ/∂f| = 1 − p.

``1 − p`` is computed as ``−expm1(−ℓ)`` (exact for small losses) and clamped from below at
:data:`MIN_ONE_MINUS_P`: as ``ℓ → 0``, ``1/(1 − p)`` blows up, and a float32 loss below about
1e-6 is mostly rounding (log-softmax near 0 is accurate to ~1e-7), so the floor bounds the
amplification at 1e6 where the loss says nothing more. The same clamped value is used in the
features ``−g/(1 − p)`` and in ``Q``.

:class:`CausalLMModelOutput` is this function for traker's ``TRAKer`` (its default
``FunctionalGradientComputer``), so a traker user can run TRAK with selectkit's output.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor
from trak.modelout_functions import AbstractModelOutput

from selectkit.errors import ParamError
from selectkit.models.losses import response_losses

#: Floor on ``1 − p`` (see the module docstring).
MIN_ONE_MINUS_P = 1e-6


def one_minus_p(losses: np.ndarray) -> np.ndarray:
    """``1 − exp(−ℓ)`` per example as float64, clamped from below at :data:`MIN_ONE_MINUS_P`:
    the out-to-loss weight ``Q`` and the divisor of the features."""
    return np.maximum(-np.expm1(-np.asarray(losses, dtype=np.float64)), MIN_ONE_MINUS_P)


def _one_minus_p(loss: Tensor) -> Tensor:
    return torch.clamp(-torch.expm1(-loss), min=MIN_ONE_MINUS_P)


class CausalLMModelOutput(AbstractModelOutput):
    """``f = log(p / (1 − p))``, ``p = exp(−mean response cross-entropy)``, for a batch
    ``(input_ids, attention_mask, labels)`` of right-padded examples with ``labels = -100``
    outside the response (``selectkit.data.batching.pad_batch``).

    ``get_output`` sees one example inside traker's ``vmap``, where Hugging Face's mask building
    (which branches on the mask's values) cannot run, so it calls the model without the
    attention mask: with right padding the causal mask already keeps padding out of every real
    token, and padding carries no loss. Its gradient is written as ``−∇ℓ / (1 − p)`` with the
    clamped ``1 − p``, exactly the features the ``trak`` method builds from the store.
    """

    def __init__(self) -> None:
        super().__init__()

    @staticmethod
    def get_output(
        model: torch.nn.Module,
        weights: dict[str, Tensor],
        buffers: dict[str, Tensor],
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor,
    ) -> Tensor:
        logits = torch.func.functional_call(model, (weights, buffers), (input_ids[None],)).logits
        loss = response_losses(logits, labels[None])[0]
        fixed = loss.detach()
        q = _one_minus_p(fixed)
        # Value log(p / (1 - p)); the second term is 0 but carries the gradient -∇ℓ / (1 - p).
        return -fixed - torch.log(q) + (fixed - loss) / q

    def get_out_to_loss_grad(
        self,
        model: torch.nn.Module,
        weights: dict[str, Tensor],
        buffers: dict[str, Tensor],
        batch: Iterable[Tensor],
    ) -> Tensor:
        input_ids, attention_mask, labels = batch
        if (attention_mask[:, 1:] > attention_mask[:, :-1]).any():
            raise ParamError(
                "CausalLMModelOutput needs right-padded batches (pad_batch's default side)"
            )
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        with torch.no_grad():
            logits = torch.func.functional_call(model, (weights, buffers), (), inputs).logits
            return _one_minus_p(response_losses(logits, labels))[:, None]
