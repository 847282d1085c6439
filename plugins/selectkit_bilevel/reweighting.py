"""Validation-driven reweighting: persistent per-record (or per-group) weights learned by
alternating a one-step-lookahead hypergradient step on the weights with a weighted training
step on the model.

Following Ren, Zeng, Yang and Urtasun (2018), "Learning to Reweight Examples for Robust Deep
Learning" (ICML): one inner SGD step on a pool batch ``B`` with weights ``w``,

    θ'(w) = θ − η · Σ_{i∈B} w_i ∇ℓ_i(θ) / Σ_{i∈B} w_i,

changes the target loss ``L_T`` by, to first order (``∇L_T`` evaluated at θ, as in L2RW and in
GLISTER's Taylor term, Killamsetty et al. 2021),

    ∂L_T(θ') / ∂w_i ≈ −η · ⟨∇ℓ_i(θ), ∇L_T(θ)⟩ / Σ_{j∈B} w_j,

so raising the weight of a record whose gradient aligns with the target's lowers the target
loss. (Through the normalization ``Σw`` the exact derivative also subtracts
``⟨ḡ_w, ∇L_T⟩`` — ``ḡ_w`` the batch's weighted mean gradient — a term shared by every record
of the batch; L2RW differentiates the unnormalized step, without it, and so does this loop.)

L2RW keeps a fresh weight per batch; here, as in global-weight bilevel reweighting
(ScaleBiO, Pan et al. 2024) and DoReMi's domain weights (Xie et al. 2023), the weights persist
over the whole pool and move by exponentiated-gradient (mirror-descent) steps on the simplex,
i.e. additive steps on log-weights with the hypergradient ``h_i = ⟨g_i, g_T⟩`` (the constant
``η / Σw`` is absorbed in the step size):

    log w_i += outer_lr · h_i / RMS_{j∈B}(h_j).

Dividing by the batch's root-mean-square hypergradient makes ``outer_lr`` a step in log-weight
units (a typical record of the batch moves by about ``outer_lr``) whatever the scale of the
gradients, which shrinks as training lowers the losses and differs between models; when every
``h`` is 0 nothing moves. Log-weights are then re-centred to mean 0 over the pool (no weight
ratio changes, so neither the training step nor the result does) and clipped to
``±max_log_weight``, which keeps every weight finite and within ``e^{2·max_log_weight}`` of any
other.

Group level: one log-weight per group, every record weighted by its group's. A group's step is
the *mean* of its batch records' normalized hypergradients — DoReMi likewise averages each
domain's signal over the domain's examples in the batch — so a group's weight says how well a
typical record of it serves the target, and does not grow with how many of its records the
batch happened to draw (the chain-rule sum would). Re-centring is then record-weighted.

The training step then applies ``Σ_{i∈B} w_i g_i / Σ_{i∈B} w_i`` — the per-example gradients
already at hand, no second backward — with AdamW (``inner_lr``, no weight decay), so the
model trains on the weighted loss ``Σ w_i ℓ_i / Σ w_i`` that fine-tuning on the selection uses.
Gradients are exact per-example gradients of the response loss over the trainable (LoRA)
parameters (:class:`selectkit.compute.gradients.PerExampleGradients`), never projected, from
one batched backward per outer step over the pool batch and the target batch together.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from selectkit.data.batching import pad_batch
from selectkit.data.examples import Tokenized
from selectkit.errors import ParamError, TrainingDiverged

if TYPE_CHECKING:
    import torch

WHAT = "bilevel reweighting"


@dataclass(frozen=True)
class ReweightConfig:
    """The alternating loop's settings.

    ``epochs`` passes over the pool, each a fresh permutation drawn from ``seed``, in batches of
    ``batch_size`` records (one outer step each); the target gradient of a step is the mean over
    ``target_batch_size`` target records (all of them when the target is that small, else
    cycling through seeded permutations of it). ``outer_lr`` is the log-weight step,
    ``inner_lr`` AdamW's learning rate, ``max_log_weight`` the clipping range of the centred
    log-weights (``inf``: none).
    """

    epochs: int = 1
    batch_size: int = 16
    target_batch_size: int = 16
    inner_lr: float = 2e-4
    outer_lr: float = 1.0
    max_log_weight: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (
                self.target_batch_size >= 1,
                f"target_batch_size must be >= 1, got {self.target_batch_size}",
            ),
            (
                math.isfinite(self.inner_lr) and self.inner_lr > 0,
                f"inner_lr must be a finite number > 0, got {self.inner_lr}",
            ),
            (
                math.isfinite(self.outer_lr) and self.outer_lr > 0,
                f"outer_lr must be a finite number > 0, got {self.outer_lr}",
            ),
            (self.max_log_weight > 0, f"max_log_weight must be > 0, got {self.max_log_weight}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParamError(f"reweighting: {message}")


@dataclass(frozen=True)
class ReweightResult:
    """The learned weights, and a log of every outer step.

    ``weights`` has one value per pool record, with mean 1 over the pool. At group level
    ``group_weights`` has one value per group code (each record's weight is its group's, on the
    same scale) and ``log_weights`` is per group; otherwise ``group_weights`` is ``None`` and
    ``log_weights`` is per record. ``log[k]`` holds step ``k + 1``'s epoch, mean pool-batch
    loss, target-batch loss and the RMS of its hypergradients.
    """

    weights: np.ndarray
    log_weights: np.ndarray
    group_weights: np.ndarray | None
    log: list[dict[str, float]]


def pool_batches(count: int, config: ReweightConfig) -> list[np.ndarray]:
    """The pool positions of every outer step: ``epochs`` seeded permutations, each cut into
    batches of ``batch_size`` (the last of a pass may be smaller)."""
    rng = np.random.default_rng([config.seed, 0])
    cuts = range(config.batch_size, count, config.batch_size)
    return [
        part for _ in range(config.epochs) for part in np.array_split(rng.permutation(count), cuts)
    ]


def target_batches(count: int, config: ReweightConfig) -> Iterator[np.ndarray]:
    """Endless target batches: all of the target when it fits in one, else seeded
    permutations cut into batches of ``target_batch_size``, one pass after another."""
    if count <= config.target_batch_size:
        while True:
            yield np.arange(count)
    rng = np.random.default_rng([config.seed, 1])
    cuts = range(config.target_batch_size, count, config.target_batch_size)
    while True:
        yield from np.array_split(rng.permutation(count), cuts)


def log_weight_step(
    log_weights: np.ndarray,
    batch: np.ndarray,
    hypergradients: np.ndarray,
    config: ReweightConfig,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """The log-weights after one outer step on ``batch`` (pool positions) with its
    hypergradients ``h``: RMS-normalized step, re-centred, clipped (module docstring).

    ``groups`` (a group code per pool record) makes ``log_weights`` per group; each group in
    the batch moves by the mean of its records' normalized steps."""
    rms = float(np.sqrt(np.mean(hypergradients**2)))
    step = config.outer_lr * (hypergradients / rms if rms > 0 else np.zeros_like(hypergradients))
    updated = log_weights.copy()
    if groups is None:
        updated[batch] += step
        centre = updated.mean()
    else:
        codes = groups[batch]
        sums = np.bincount(codes, weights=step, minlength=len(updated))
        counts = np.bincount(codes, minlength=len(updated))
        updated += sums / np.maximum(counts, 1)
        sizes = np.bincount(groups, minlength=len(updated))
        centre = float(sizes @ updated) / len(groups)
    return np.clip(updated - centre, -config.max_log_weight, config.max_log_weight)


def mean_one(log_weights: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """``exp(log_weights)`` scaled so the pool's records average 1 (each record weighted by its
    group's value when ``groups`` is given)."""
    values = np.exp(log_weights - log_weights.max())
    per_record = values if groups is None else values[groups]
    return values / per_record.mean()


def reweight(
    model: Any,
    pool_examples: Sequence[Tokenized],
    target_examples: Sequence[Tokenized],
    config: ReweightConfig,
    *,
    pad_id: int,
    groups: np.ndarray | None = None,
    progress: bool = False,
) -> ReweightResult:
    """Learn weights of ``pool_examples`` for ``target_examples`` and train ``model``'s
    trainable parameters (a LoRA adapter) along the way; pass a copy to keep a model as it was.

    ``groups`` (a code ``0..G-1`` per pool example) learns one weight per group instead of one
    per example. Global random states are left as found. A non-finite loss or gradient raises
    :class:`TrainingDiverged` naming the step.
    """
    import torch
    from tqdm.auto import tqdm

    from selectkit.compute.gradients import PerExampleGradients
    from selectkit.train.common import own_rng

    count = len(pool_examples)
    if count == 0 or len(target_examples) == 0:
        raise ParamError("bilevel needs a non-empty pool and target")
    if groups is not None:
        groups = np.asarray(groups, dtype=np.int64)
        if groups.shape != (count,) or (groups < 0).any():
            raise ParamError("groups must hold one group code >= 0 per pool example")
    log_weights = np.zeros(count if groups is None else int(groups.max()) + 1)
    plan = pool_batches(count, config)
    targets = target_batches(len(target_examples), config)
    log: list[dict[str, float]] = []
    with own_rng():
        torch.manual_seed(config.seed)
        per_example = PerExampleGradients(model)
        params = dict(model.named_parameters())
        layout = [(params[s.name], s) for s in per_example.layout]
        optimizer = torch.optim.AdamW(
            [param for param, _ in layout], lr=config.inner_lr, weight_decay=0.0
        )
        seen = 0
        with tqdm(total=len(plan), desc="bilevel", unit="step", disable=not progress) as bar:
            for step, batch in enumerate(plan, start=1):
                chosen = [pool_examples[i] for i in batch]
                chosen += [target_examples[i] for i in next(targets)]
                all_grads, all_losses = _gradients(per_example, chosen, pad_id, step)
                grads, losses = all_grads[: len(batch)], all_losses[: len(batch)]
                target_grad = all_grads[len(batch) :].double().mean(dim=0)
                target_loss = float(all_losses[len(batch) :].mean())
                hyper = (grads.double() @ target_grad).cpu().numpy()
                log_weights = log_weight_step(log_weights, batch, hyper, config, groups)
                records = batch if groups is None else groups[batch]
                _train_step(optimizer, layout, grads, log_weights[records])
                seen += len(batch)
                entry = {
                    "step": step,
                    "epoch": seen / count,
                    "loss": float(losses.mean()),
                    "target_loss": target_loss,
                    "hypergradient_rms": float(np.sqrt(np.mean(hyper**2))),
                }
                log.append(entry)
                bar.update(1)
                bar.set_postfix(loss=f"{entry['loss']:.4f}", target=f"{entry['target_loss']:.4f}")
    weights = mean_one(log_weights, groups)
    if groups is None:
        return ReweightResult(weights, log_weights, None, log)
    return ReweightResult(weights[groups], log_weights, weights, log)


def _gradients(
    per_example: Any, examples: list[Tokenized], pad_id: int, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example gradients and losses of ``examples`` (one batched backward), all finite."""
    import torch

    grads, losses = per_example(pad_batch(examples, pad_id))
    if not bool(torch.isfinite(losses).all()):
        raise TrainingDiverged(step, float(losses.mean()), what=WHAT)
    if not bool(torch.isfinite(grads).all()):
        what = f"{WHAT} (a gradient is not finite)"
        raise TrainingDiverged(step, float(losses.mean()), what=what)
    return grads, losses


def _train_step(
    optimizer: Any, layout: list[tuple[Any, Any]], grads: Any, logs: np.ndarray
) -> None:
    """One optimizer step along ``Σ w_i g_i / Σ w_i`` with ``w = exp(logs)`` (the batch's
    log-weights), set as the trainable parameters' gradients."""
    import torch

    mix = np.exp(logs - logs.max())
    mix = torch.as_tensor(mix / mix.sum(), dtype=grads.dtype, device=grads.device)
    direction = mix @ grads
    for param, where in layout:
        param.grad = direction[where.start : where.stop].view(where.shape).to(param.dtype)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
