"""The ``trak`` method.

Park, Georgiev, Ilyas, Leclerc and Madry (2023), "TRAK: Attributing Model Behavior at Scale"
(ICML), for a causal LM as DsDm does (Engstrom, Feldmann and Madry 2024): the model output is
``f = log(p / (1 − p))`` with ``p = exp(−ℓ)`` and ``ℓ`` an example's mean response-token
cross-entropy (``output.py``). At each checkpoint ``c`` the features are ``φ_i = P∇f(z_i) =
−g_i / (1 − p_i)``, with ``g_i`` the store's projected SGD gradient of ``ℓ`` and ``p_i`` from the
loss stored beside it; pool record ``i``'s score for target ``j`` is ``τ_c[i, j] = φ_tj (Φ_cᵀΦ_c +
λ_c I)⁻¹ φ_iᵀ``, and the checkpoints are ensembled with equal weights as TRAK does: ``τ =
mean_c(τ_c) · mean_c(1 − p_c)`` (``kernel.py``). A larger ``τ[i, j]`` means training on ``i``
raises ``f`` on target ``j``, i.e. lowers its loss.

Selection follows DsDm: the records with the largest mean attribution to the target set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from selectkit.sdk import (
    Context,
    FeatureSet,
    GradientParams,
    GradientPipeline,
    Method,
    ParamError,
    Pool,
    PoolView,
    Scores,
    check_memory,
)
from selectkit_trak.kernel import ScaledRows, check_damping, memory_needed, trak_scores


@dataclass(frozen=True)
class TRAKParams(GradientParams):
    """Parameters of ``trak``: the shared gradient parameters and the kernel's damping.

    ``damping`` 0.1 (kronfluence's heuristic) keeps the kernel invertible when the pool has
    fewer records than ``dim`` (the default 8192 exceeds most pools) at a ridge small next to the
    kernel's leading eigenvalues. On the tests' targeted pool (300 records, dim 256), 0.01, 0.1
    and 1 all fill the top 5% with the target's family (15 of 15), no damping only 5 of 15.
    """

    damping: float = field(
        default=0.1,
        metadata={
            "help": "ridge added to the TRAK kernel, relative to its mean non-zero eigenvalue "
            "(kronfluence's heuristic 0.1); 0: none, which needs dim <= pool records"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.damping) or self.damping < 0:
            raise ParamError(f"damping must be a finite number >= 0, got {self.damping}")


def _one_minus_p(features: FeatureSet, pool: Pool, checkpoint: int) -> np.ndarray:
    """``1 − p`` per record from the loss stored beside its features."""
    from selectkit_trak.output import one_minus_p

    losses = features.column("loss")
    missing = ~np.isfinite(losses)
    if missing.any():
        record = pool[int(np.argmax(missing))]
        raise ParamError(
            f"record '{record.id}' has no loss in feature set {features.id[:12]} (checkpoint "
            f"{checkpoint}): its row was skipped; fix or drop the record"
        )
    return one_minus_p(losses)


class TRAK(Method):
    """TRAK: kernel-regression attribution of target loss to pool records (Park et al. 2023).

    Ensembled over checkpoints; selects the top mean attribution to the target (DsDm)."""

    name = "trak"
    Params = TRAKParams
    needs_target = True

    def pool_views(self) -> tuple[PoolView, ...]:
        return (self.params.pool_view("sgd"),)

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        assert target is not None
        return Scores(self.attribute(pool, target, context).mean(axis=1))

    def attribute(self, pool: Pool, target: Pool, context: Context) -> np.ndarray:
        """TRAK's ``τ`` (float64, ``(len(pool), len(target))``) from the store's SGD features
        and losses at each checkpoint (see the module docstring)."""
        params: TRAKParams = self.params
        check_damping(len(pool), params.projection.dim, params.damping)
        dim = params.projection.dim
        check_memory(
            memory_needed(len(pool), len(target), dim),
            f"trak on {len(pool)} pool records and {len(target)} targets at dim {dim}",
            "lower projection.dim (the kernel is dim x dim), or score a smaller pool or target",
        )
        pool_sets, target_sets = GradientPipeline(params, context).pool_and_target_features(
            pool, target
        )
        out_to_loss, pool_phi, target_phi = [], [], []
        for c, (pool_set, target_set) in enumerate(zip(pool_sets, target_sets, strict=True)):
            q = _one_minus_p(pool_set, pool, c)
            out_to_loss.append(q)
            pool_phi.append(ScaledRows(pool_set, -1.0 / q))
            target_phi.append(ScaledRows(target_set, -1.0 / _one_minus_p(target_set, target, c)))
        return trak_scores(
            pool_phi, target_phi, out_to_loss, params.damping, progress=context.progress
        )
