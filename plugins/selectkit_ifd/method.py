"""The ``ifd`` method: Instruction-Following Difficulty.

Li et al. (2024), "From Quantity to Quality: Boosting LLM Performance with Self-Guided Data
Selection for Instruction Tuning" (NAACL; "Cherry LLM"). For an instruction ``Q`` and its
response ``A``, ``IFD(Q, A) = s(A | Q) / s(A)``: the model's mean cross-entropy on the response
tokens given the instruction, over the same without it. A low IFD means the instruction makes
the response easy to predict (little left to learn); a high IFD, that the model struggles to
follow it. The paper keeps the highest IFD, but drops records with ``IFD > 1``: there the
instruction makes the response *harder* to predict, the sign of a pair that does not belong
together.

Which model scores: Cherry LLM warms a "pre-experienced" model up on a small part of the data
first (``scorer=warmup``: the last checkpoint of the shared LoRA warmup, or of
``checkpoints``); Superfiltering (Li et al. 2024, ACL) shows that a much smaller model, used as
it is, ranks by IFD almost as well (``scorer=base``, the default: e.g. ``model=gpt2``).

Both losses cover what training counts as the response: under a chat template the response and
its end-of-turn tokens, alone the response and EOS. Records with no instruction (raw text) have
no IFD; they are ruled out, and a pool of raw text only is refused before any model loads. Both
losses are forward-only statistics the store keeps
(:func:`~selectkit.features.statistics.token_statistics`): a second run reads them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from selectkit.errors import RecordError
from selectkit.sdk import (
    Context,
    Method,
    ModelParams,
    ModelPipeline,
    ParamError,
    Pool,
    Record,
    Scores,
    StatisticsConfig,
    without_instruction,
)


@dataclass(frozen=True)
class IFDParams(ModelParams):
    """Parameters of ``ifd``: the shared model and warmup options, plus these."""

    scorer: Literal["base", "warmup"] = field(
        default="base",
        metadata={
            "help": "base: the model as loaded (Superfiltering); warmup: the last checkpoint "
            "of the LoRA warmup or of checkpoints (Cherry LLM's pre-experienced model)"
        },
    )
    max_ifd: float = field(
        default=1.0,
        metadata={
            "help": "records with a larger IFD are ruled out (Cherry LLM: 1, where the "
            "instruction stops helping); inf keeps every record"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scorer not in ("base", "warmup"):
            raise ParamError(f"scorer must be base or warmup, not '{self.scorer}'")
        if not self.max_ifd > 0:
            raise ParamError(f"max_ifd must be positive (or inf), got {self.max_ifd}")
        if self.scorer == "base" and self.checkpoints:
            raise ParamError("checkpoints are used only with scorer=warmup")
        if self.scorer == "warmup" and self.warmup.runs != 1:
            raise ParamError("scorer=warmup scores with one pre-experienced model: warmup.runs=1")


class IFD(Method):
    """IFD: loss of the response with its instruction over without (Li et al. 2024).

    Highest first, among records whose IFD is at most max_ifd."""

    name = "ifd"
    Params = IFDParams

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> Scores:
        p: IFDParams = self.params
        has_instruction = np.array([bool(record.prompt) for record in pool])
        if not has_instruction.any():
            raise ParamError(
                "ifd compares a response's loss with and without its instruction, and no record "
                "of the pool has one (raw text only)"
            )
        pipeline = ModelPipeline(p, context)
        alone = without_instruction(pool)
        pipeline.check(pool, alone, checkpoints=p.scorer == "warmup")
        checkpoints = pipeline.checkpoints(pool)[-1:] if p.scorer == "warmup" else []
        # Blocks of similar length, each pass in its own: the batches IFD has always run in.
        config = StatisticsConfig(batch_size=p.batch_size, max_length=p.max_length)
        losses = []
        for examples, records in (("whole", pool), ("response", alone)):
            settings = replace(config, examples=examples)
            (entry,) = pipeline.statistics(pool, checkpoints, settings, examples=records)
            losses.append(entry.column("loss").astype(np.float64))
        ifd = ifd_scores(*losses, pool)
        ifd[~has_instruction] = 1.0
        eligible = has_instruction & (ifd <= p.max_ifd)
        reasons = [f"IFD > {p.max_ifd:g}"] if math.isfinite(p.max_ifd) else []
        if not has_instruction.all():
            reasons.append("no instruction")
        return Scores(ifd, eligible=eligible, ruled_out=" or ".join(reasons))


def ifd_scores(conditioned: np.ndarray, direct: np.ndarray, pool: Sequence[Record]) -> np.ndarray:
    """``s(A | Q) / s(A)`` for every record, from its response loss with its instruction
    (``conditioned``) and alone (``direct``), in pool order (float64). A record whose losses
    are not finite and positive raises :class:`RecordError` naming it."""
    bad = ~(np.isfinite(conditioned) & np.isfinite(direct) & (direct > 0))
    if bad.any():
        record = pool[int(np.flatnonzero(bad)[0])]
        raise RecordError(
            f"IFD is undefined: response loss {direct[bad][0]} alone, "
            f"{conditioned[bad][0]} with the instruction",
            path=record.source,
            line=record.line,
        )
    return conditioned / direct
