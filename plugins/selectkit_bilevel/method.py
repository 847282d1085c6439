"""The ``bilevel`` method: weights learned so that training on the pool lowers the target loss.

Learning-to-reweight with a one-step lookahead (Ren et al. 2018) and persistent weights moved
by exponentiated-gradient steps (ScaleBiO, Pan et al. 2024; DoReMi's multiplicative domain
updates, Xie et al. 2023): :mod:`selectkit_bilevel.reweighting` derives and runs the loop. A
fresh, seeded LoRA adapter on a copy of the model is trained along the way, so the loaded model
is left as found. The result is a :class:`~selectkit.solvers.objectives.Weights` objective: the
solver keeps the highest-weighted records under the budget and the weights travel on the
selection to training; at ``level=group`` the group weights travel instead, and training samples
groups in proportion to them (each record's value is then its group's weight).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from selectkit.sdk import Context, Method, ModelParams, ModelPipeline, ParamError, Pool, Weights
from selectkit_bilevel.reweighting import ReweightConfig


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class BilevelParams(ModelParams):
    """Parameters of ``bilevel``: the shared model fields (``model``, ``max_length``,
    ``device``, ``model_dtype``), the ``lora`` group and the reweighting loop's.

    The loop trains its own adapter from a fresh LoRA and stores nothing, so the ``warmup``
    group is unused; ``checkpoints`` must stay empty.
    ``batch_size`` is the number of pool records per outer step.
    """

    batch_size: int = field(default=16, metadata=_help("pool records per outer step"))
    epochs: int = field(default=1, metadata=_help("passes over the pool, each a new order"))
    target_batch_size: int = field(
        default=16,
        metadata=_help("target records whose mean gradient a step aligns with (all if fewer)"),
    )
    inner_lr: float = field(
        default=2e-4, metadata=_help("AdamW learning rate of the weighted LoRA training step")
    )
    outer_lr: float = field(
        default=1.0,
        metadata=_help("log-weight step: a typical record of a batch moves its log-weight by this"),
    )
    max_log_weight: float = field(
        default=5.0,
        metadata=_help("centred log-weights are clipped to +-this (inf: no clipping)"),
    )
    level: Literal["example", "group"] = field(
        default="example",
        metadata=_help("example: a weight per record; group: a weight per group (--group-by)"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.level not in ("example", "group"):
            raise ParamError(f"level must be example or group, not '{self.level}'")
        if self.checkpoints:
            raise ParamError(
                "bilevel trains its own adapter from a fresh LoRA; leave checkpoints empty"
            )
        self.reweight_config(seed=0)  # every loop setting checked now, before any work

    def reweight_config(self, seed: int) -> ReweightConfig:
        return ReweightConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            target_batch_size=self.target_batch_size,
            inner_lr=self.inner_lr,
            outer_lr=self.outer_lr,
            max_log_weight=self.max_log_weight,
            seed=seed,
        )


class Bilevel(Method):
    """Bilevel reweighting: weights under which training lowers the target loss (Ren et al. 2018).

    Per record or per group, persistent, moved by exponentiated-gradient steps."""

    name = "bilevel"
    Params = BilevelParams
    needs_target = True

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Weights:
        from selectkit.train.common import pad_token_id, tokenize_subset, trainable_copy
        from selectkit_bilevel.reweighting import reweight

        assert target is not None
        p: BilevelParams = self.params
        config = p.reweight_config(context.seed)
        codes, names = group_codes(pool) if p.level == "group" else (None, [])
        if len(pool) == 0:
            raise ParamError("the pool is empty: there is nothing to weight")
        pipeline = ModelPipeline(p, context)
        pipeline.check(pool, target, checkpoints=False)
        loaded = pipeline.loaded
        pool_examples, target_examples = (
            tokenize_subset(
                records,
                range(len(records)),
                loaded.tokenizer,
                template="auto",
                max_length=p.max_length,
            )
            for records in (pool, target)
        )
        model = trainable_copy(loaded.model, p.lora, context.seed)
        result = reweight(
            model,
            pool_examples,
            target_examples,
            config,
            pad_id=pad_token_id(loaded.tokenizer),
            groups=codes,
            progress=context.progress,
        )
        if result.group_weights is None:
            return Weights(result.weights)
        return Weights(
            result.weights, group_weights=dict(zip(names, result.group_weights, strict=True))
        )


def group_codes(pool: Pool) -> tuple[np.ndarray, list[str]]:
    """Each record's group code and the group names; every record must have a group."""
    codes, names = pool.group_codes()
    if (codes < 0).any():
        first = pool[int(np.flatnonzero(codes < 0)[0])].id
        raise ParamError(
            f"level=group weights groups, but record '{first}' has no group: load the pool "
            "with --group-by FIELD (group_field= in Python), or use level=example"
        )
    return codes, names
