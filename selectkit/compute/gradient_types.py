"""What a feature row holds: the raw gradient, its sign, or LESS's Adam-preconditioned gradient.

``adam`` follows LESS (Xia et al. 2024): the warmup optimizer's moments ``m`` and ``v`` are each
updated once with the example's gradient ``g`` (``m' = b1 m + (1 - b1) g``,
``v' = b2 v + (1 - b2) g^2``, no bias correction) and the feature is ``m' / sqrt(v' + eps)``,
which is what the LESS reference code computes by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from selectkit.errors import ParamError

if TYPE_CHECKING:
    import torch

    from selectkit.compute.gradients import ParamSlice

GradientKind = Literal["sgd", "adam", "sign"]
GRADIENT_KINDS = ("sgd", "adam", "sign")


@dataclass(frozen=True)
class AdamConstants:
    """The Adam constants of the one-step update (LESS's values by default)."""

    beta1: float = field(default=0.9, metadata={"help": "Adam's first-moment decay"})
    beta2: float = field(default=0.999, metadata={"help": "Adam's second-moment decay"})
    eps: float = field(default=1e-8, metadata={"help": "Adam's denominator epsilon"})


@dataclass
class GradientTransform:
    """Turns raw per-example gradient rows into the rows a gradient type stores."""

    kind: GradientKind = "sgd"
    constants: AdamConstants = field(default_factory=AdamConstants)
    exp_avg: torch.Tensor | None = None
    exp_avg_sq: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in GRADIENT_KINDS:
            raise ParamError(f"gradient type must be one of {GRADIENT_KINDS}, not '{self.kind}'")
        if self.kind == "adam" and (self.exp_avg is None or self.exp_avg_sq is None):
            raise ParamError("gradient type 'adam' needs the optimizer's first and second moments")

    def describe(self) -> dict[str, Any]:
        """The settings that determine the output bytes (part of the store key)."""
        if self.kind != "adam":
            return {"kind": self.kind}
        c = self.constants
        return {"kind": "adam", "beta1": c.beta1, "beta2": c.beta2, "eps": c.eps}

    def to(self, device: Any) -> GradientTransform:
        if self.exp_avg is None or self.exp_avg_sq is None:
            return self
        return GradientTransform(
            self.kind, self.constants, self.exp_avg.to(device), self.exp_avg_sq.to(device)
        )

    def __call__(self, grads: torch.Tensor) -> torch.Tensor:
        import torch

        if self.kind == "sgd":
            return grads
        if self.kind == "sign":
            return torch.sign(grads)
        c = self.constants
        m = c.beta1 * self.exp_avg + (1 - c.beta1) * grads
        v = c.beta2 * self.exp_avg_sq + (1 - c.beta2) * grads.square()
        return m / torch.sqrt(v + c.eps)


def flatten_moments(
    moments: Mapping[str, tuple[torch.Tensor, torch.Tensor]], layout: Sequence[ParamSlice]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The moments of each parameter, flattened in the gradient row's layout."""
    import torch

    firsts, seconds = [], []
    for where in layout:
        if where.name not in moments:
            raise ParamError(f"the optimizer state has no moments for parameter {where.name}")
        m, v = moments[where.name]
        if tuple(m.shape) != where.shape or tuple(v.shape) != where.shape:
            raise ParamError(
                f"optimizer moments of {where.name} have shape {tuple(m.shape)}, "
                f"but the parameter has shape {where.shape}"
            )
        firsts.append(m.reshape(-1).float())
        seconds.append(v.reshape(-1).float())
    return torch.cat(firsts), torch.cat(seconds)
