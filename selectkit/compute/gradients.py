"""Per-example gradients of the response-only loss, for a whole batch in one backward pass.

The loss of an example is the mean token cross-entropy over its response tokens (its loss mask),
and the gradient is taken over the model's trainable parameters (a LoRA adapter, or any named
subset), flattened in ``named_parameters`` order into one row per example.

Two exact ways, picked automatically:

- ``hooks``: when every trainable parameter is the weight or bias of an ``nn.Linear`` (LoRA's A
  and B matrices are), the per-example weight gradient is ``sum_t g_t x_t^T`` from the layer's
  input ``x`` and output gradient ``g``, captured by hooks during one batched backward of the
  summed per-example losses. Costs about one extra batched matmul per layer.
- ``func``: any other parameter subset (norms, embeddings): ``torch.func.vmap(grad(...))`` over
  a functional call of the model, one example per vmapped lane.

Examples are right-padded; under a causal mask no real token attends to padding and padding
carries no loss, so padding does not change any example's gradient (up to float rounding).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from selectkit.data.batching import IGNORE_INDEX
from selectkit.errors import ParamError
from selectkit.models.losses import (
    head_matches,
    next_token_losses,
    packed_response_losses,
    response_logits,
    takes_logits_to_keep,
)
from selectkit.models.recompute import recomputing

if TYPE_CHECKING:
    import torch

#: How per-example gradients are computed: layer hooks (every trainable parameter in an
#: nn.Linear), torch.func, or "auto" (hooks when they apply).
GradientBackend = Literal["auto", "hooks", "func"]


@dataclass(frozen=True)
class ParamSlice:
    """Where one parameter's flattened gradient sits in an example's gradient row."""

    name: str
    shape: tuple[int, ...]
    start: int
    stop: int


def trainable_layout(model: Any, names: Sequence[str] | None = None) -> list[ParamSlice]:
    """The gradient row layout: the trainable parameters (or the named ones, which are then
    made the only trainable ones) in ``named_parameters`` order."""
    params = dict(model.named_parameters())
    if names is not None:
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ParamError(
                f"no parameter named {unknown[0]!r} in the model; names look like "
                f"{list(params)[:3]}"
            )
        wanted = set(names)
        for name, param in params.items():
            param.requires_grad_(name in wanted)
    layout, offset = [], 0
    for name, param in params.items():
        if param.requires_grad:
            layout.append(ParamSlice(name, tuple(param.shape), offset, offset + param.numel()))
            offset += param.numel()
    if not layout:
        raise ParamError(
            "the model has no trainable parameters: attach a LoRA adapter or name parameters"
        )
    return layout


class PerExampleGradients:
    """Computes one flattened gradient row per example of a padded batch.

    ``model`` is put in eval mode (no dropout: a feature must not depend on a random mask).
    ``names`` restricts the gradient to those parameters; by default every trainable one.
    ``recompute`` keeps only each decoder layer's input in the forward pass and runs the layer
    again in the backward pass (:mod:`selectkit.models.recompute`): a fraction of the memory
    for about a quarter more time, and the same gradients.
    """

    def __init__(
        self,
        model: Any,
        names: Sequence[str] | None = None,
        method: GradientBackend = "auto",
        *,
        recompute: bool = False,
    ) -> None:
        import torch

        self.model = model.eval()
        self.layout = trainable_layout(model, names)
        self.dim = self.layout[-1].stop
        linear_params = self._linear_params(torch.nn.Linear)
        all_linear = all(p.name in linear_params for p in self.layout)
        if method == "auto":
            method = "hooks" if all_linear else "func"
        if method == "hooks" and not all_linear:
            first = next(p.name for p in self.layout if p.name not in linear_params)
            raise ParamError(
                f"method 'hooks' needs every trainable parameter to belong to an nn.Linear, "
                f"and {first} does not; use method 'func'"
            )
        if method not in ("hooks", "func"):
            raise ParamError(f"method must be auto, hooks or func, not '{method}'")
        if recompute and method != "hooks":
            raise ParamError(
                "recompute needs per-example gradients by layer hooks (backend hooks), which "
                "every trainable parameter in an nn.Linear allows"
            )
        self.method = method
        self.recompute = recompute
        self._linear = linear_params
        # Layer hooks see whole batches, so their losses can come from exactly the response
        # positions; torch.func's vmap needs one position set for the batch.
        self._packed = method == "hooks" and head_matches(self.model)

    def _linear_params(self, linear: type) -> dict[str, tuple[Any, str]]:
        """Trainable-parameter name -> (its nn.Linear module, 'weight' or 'bias')."""
        found = {}
        for module_name, module in self.model.named_modules():
            if isinstance(module, linear):
                for attr in ("weight", "bias"):
                    param = getattr(module, attr, None)
                    if param is not None and param.requires_grad:
                        full = f"{module_name}.{attr}" if module_name else attr
                        found[full] = (module, attr)
        return found

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gradients, losses)``: a float32 ``(batch, dim)`` tensor and each example's loss."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if bool(((batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1) == 0).any()):
            raise ParamError("an example in the batch has no response token to take a loss over")
        if self.method == "hooks":
            return self._hooks(batch)
        return self._func(batch)

    def _hooks(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        n = batch["input_ids"].shape[0]
        grads = torch.zeros((n, self.dim), dtype=torch.float32, device=self.device)
        slices = {p.name: p for p in self.layout}
        by_module: dict[int, list[tuple[str, ParamSlice]]] = {}
        modules = {}
        for name, (module, attr) in self._linear.items():
            if name in slices:
                by_module.setdefault(id(module), []).append((attr, slices[name]))
                modules[id(module)] = module

        def forward_hook(module: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            x = inputs[0].detach().float()
            targets = by_module[id(module)]

            def backward_hook(g: torch.Tensor) -> None:
                g = g.float()
                for attr, where in targets:
                    if attr == "weight":
                        per_example = torch.bmm(
                            g.reshape(n, -1, g.shape[-1]).transpose(1, 2),
                            x.reshape(n, -1, x.shape[-1]),
                        )
                    else:
                        per_example = g.reshape(n, -1, g.shape[-1]).sum(dim=1)
                    grads[:, where.start : where.stop] += per_example.reshape(n, -1)

            output.register_hook(backward_hook)

        handles = [m.register_forward_hook(forward_hook) for m in modules.values()]
        activations = recomputing(self.model) if self.recompute else contextlib.nullcontext()
        try:
            with torch.enable_grad(), activations:
                inputs = (self.model, batch["input_ids"], batch["labels"])
                # No KV cache: nothing reads it, and a recomputed layer would write it twice.
                mask = {"attention_mask": batch["attention_mask"], "use_cache": False}
                if self._packed:
                    losses = packed_response_losses(*inputs, **mask)
                else:
                    losses = next_token_losses(*response_logits(*inputs, **mask))
                params = [p for _, p in self.model.named_parameters() if p.requires_grad]
                torch.autograd.grad(losses.sum(), params, allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
        return grads, losses.detach()

    def _func(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        from torch.func import functional_call, grad_and_value, vmap

        params = dict(self.model.named_parameters())
        trainable = {p.name: params[p.name].detach() for p in self.layout}
        model = self.model

        # An all-ones mask, built outside vmap so the model's mask checks see a plain tensor;
        # padding sits at the right end, where causal attention keeps it out of every real token.
        ones = torch.ones((1, batch["input_ids"].shape[1]), dtype=torch.long, device=self.device)
        # The positions that predict a response token in any example (every one without
        # logits_to_keep), chosen outside vmap: one set for the batch.
        labels = batch["labels"]
        positions = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
        keep = {"logits_to_keep": positions} if takes_logits_to_keep(model) else {}
        if not keep:
            positions = torch.arange(labels.shape[1] - 1, device=self.device)
        next_labels = labels[:, positions + 1]

        def loss_of_one(weights: dict[str, torch.Tensor], ids: torch.Tensor, targets: torch.Tensor):
            inputs = {"attention_mask": ones, **keep}
            logits = functional_call(model, weights, (ids[None],), inputs, strict=False).logits
            if not keep:
                logits = logits[:, :-1]
            return next_token_losses(logits, targets[None])[0]

        per_example = vmap(grad_and_value(loss_of_one), in_dims=(None, 0, 0))
        with torch.enable_grad():
            grads, losses = per_example(trainable, batch["input_ids"], next_labels)
        n = batch["input_ids"].shape[0]
        rows = torch.cat([grads[p.name].reshape(n, -1).float() for p in self.layout], dim=1)
        return rows, losses.detach()
