"""The retraining harness: train M LoRA models on random subsets of a pool and record each
model's loss on each target example, the ground truth that attribution methods are judged
against (datamodels, Ilyas et al. 2022; the linear datamodeling score, Park et al. 2023, §2).

Model ``m`` fine-tunes a fresh LoRA adapter on its subset (:mod:`selectkit.retraining.subsets`)
with the same loop, schedule and step count rule as :func:`selectkit.train.finetune.finetune`,
then its per-example response loss on every target example is recorded. Every model starts from
the same adapter initialisation, data order seed and dropout seed (common random numbers), so
the outcomes differ because the subsets do; ``vary_seed`` gives each model a training seed of
its own instead. Models are independent, so a run can be split over processes (``shard``),
killed and resumed, and always ends with the same bytes (:mod:`selectkit.retraining.runs`).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from selectkit.data.examples import Tokenized
from selectkit.data.pool import Pool
from selectkit.errors import ParamError, TrainingDiverged
from selectkit.provenance import jsonable, versions
from selectkit.retraining.runs import (
    IDENTITY,
    LOCKS_DIR,
    MANIFEST_KIND,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    RetrainRuns,
    is_finished,
    load_runs,
    model_lock,
    open_run_folder,
    write_model,
)
from selectkit.retraining.subsets import subset_masks
from selectkit.store.fingerprints import tensors_digest, tokenizer_digest
from selectkit.train.common import claim_run_folder, pad_token_id, tokenize_subset, trainable_copy
from selectkit.train.evaluate import example_losses
from selectkit.train.finetune import FinetuneConfig, train_steps, training_plan


@dataclass(frozen=True)
class RetrainConfig:
    """How many models to train, on what share of the pool, and how.

    - ``models``: the number of models M, each trained on its own random subset;
    - ``fraction``: each subset holds ``round(fraction * n)`` of the pool's n records (a proper
      subset: at least 1, at most n - 1). LDS (Park et al. 2023) uses 0.5;
    - ``seed``: draws the subsets (model m's from ``default_rng([seed, m])``);
    - ``finetune``: the training of every model (steps, learning rate, LoRA, batch size, ...);
      ``finetune.batch_size``, ``max_length`` and ``template`` also apply to the target loss;
    - ``vary_seed``: give model m a training seed derived from ``(finetune.seed, m)`` (adapter
      init, data order, dropout) instead of ``finetune.seed`` for every model.
    """

    models: int = field(default=64, metadata={"help": "models to train"})
    fraction: float = field(default=0.5, metadata={"help": "share of the pool in each subset"})
    seed: int = field(default=0, metadata={"help": "seed of the subsets"})
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    vary_seed: bool = field(
        default=False,
        metadata={"help": "give each model its own training seed, from finetune.seed and m"},
    )

    def __post_init__(self) -> None:
        checks = [
            (self.models >= 1, f"models must be >= 1, got {self.models}"),
            (0 < self.fraction < 1, f"fraction must be in (0, 1), got {self.fraction}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (
                isinstance(self.finetune, FinetuneConfig),
                f"finetune must be a FinetuneConfig, not {type(self.finetune).__name__}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ParamError(f"retrain: {message}")

    def training_seed(self, model: int) -> int:
        """Model ``model``'s training seed: ``finetune.seed``, or with ``vary_seed`` a 32-bit
        seed drawn from ``SeedSequence([finetune.seed, model])``."""
        if not self.vary_seed:
            return self.finetune.seed
        return int(np.random.SeedSequence([self.finetune.seed, model]).generate_state(1)[0])


def describe_model(model: Any, tokenizer: Any) -> dict[str, Any]:
    """What the models start from: the class and name of the base model, and digests of all of
    its weights (a given adapter's included) and of the tokenizer, so a folder is never reused
    for another model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        "class": type(base).__name__,
        "name_or_path": getattr(base.config, "_name_or_path", "") or None,
        "peft": hasattr(model, "peft_config"),
        "weights": tensors_digest(model.named_parameters()),
        "tokenizer": tokenizer_digest(tokenizer),
    }


def _manifest(
    pool: Pool, target: Pool, model: Any, tokenizer: Any, config: RetrainConfig, size: int
) -> dict[str, Any]:
    manifest = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "pool": {"content_fingerprint": pool.content_fingerprint, "records": len(pool)},
        "target": {
            "content_fingerprint": target.content_fingerprint,
            "records": len(target),
            "ids": target.ids,
        },
        "fraction": config.fraction,
        "subset_size": size,
        "models": config.models,
        "seed": config.seed,
        "vary_seed": config.vary_seed,
        "finetune": config.finetune.to_dict(),
        "model": describe_model(model, tokenizer),
        "versions": versions(),
    }
    return json.loads(json.dumps(jsonable(manifest)))  # exactly as it reads back


def _check_shard(shard: tuple[int, int]) -> None:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ParamError(f"shard must be (i, n) with 0 <= i < n, got {shard}")


def train_model(
    model: Any,
    examples: list[Tokenized],
    target: list[Tokenized],
    pad_id: int,
    config: FinetuneConfig,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fine-tune a fresh copy of ``model`` on ``examples`` and return its loss on each
    ``target`` example with a record of the training: status ``done``, or ``diverged`` with the
    step and loss where the training loss (or a target loss) became non-finite."""
    plan = training_plan(len(examples), config)
    trained = trainable_copy(model, config.lora, config.seed)
    record: dict[str, Any] = {"seed": config.seed, "records": len(examples), "steps": len(plan)}
    try:
        log = train_steps(trained, examples, np.ones(len(examples)), plan, pad_id, config)
    except TrainingDiverged as exc:
        record.update(status="diverged", stage="training", step=exc.step, loss=str(exc.loss))
        record["trained_steps"] = exc.step - 1
        return np.full(len(target), np.nan), record
    losses = example_losses(trained, target, pad_id, batch_size=config.batch_size)
    record.update(trained_steps=len(log), final_train_loss=log[-1]["loss"])
    bad = np.flatnonzero(~np.isfinite(losses))
    if len(bad):
        record.update(status="diverged", stage="target loss", step=len(log))
        record.update(loss=str(losses[bad[0]]), target=int(bad[0]))
    else:
        record["status"] = "done"
    return losses, record


def retrain(
    pool: Pool,
    target: Pool,
    model: Any,
    tokenizer: Any,
    out_dir: str | Path,
    config: RetrainConfig = RetrainConfig(),
    *,
    shard: tuple[int, int] = (0, 1),
    progress: bool | Callable[[int], None] = True,
) -> RetrainRuns:
    """Train this process's share of ``config.models`` models on random subsets of ``pool``,
    record each one's loss on every ``target`` example in ``out_dir``, and return the whole
    run as it stands (:func:`load_runs`).

    ``model`` is a causal LM (each model gets a fresh adapter from ``config.finetune.lora``)
    or a PEFT model whose adapter each model trains further; it is deep-copied and never
    changed. ``shard=(i, n)`` trains the models ``m`` with ``m % n == i``; models already
    finished in ``out_dir`` are skipped, and a model another process is training (it holds the
    model's lock) is left to it. A model whose training loss becomes non-finite is recorded as
    diverged and the others go on. ``out_dir`` must be new, empty or hold this same run
    (same pool and target content, fraction, models, seeds, fine-tuning and model).
    ``progress``: a bar of the shard's models, or a callable told how many of them are done
    (:mod:`selectkit.retraining.units` runs each model as a unit of work on an executor).

    Everything is checked, and pool and target tokenized once, before any model trains.
    """
    _check_shard(shard)
    if len(target) == 0:
        raise ParamError("the target is empty; give at least one target example")
    masks = subset_masks(len(pool), config.fraction, config.models, config.seed)
    out = Path(out_dir)
    manifest = _manifest(pool, target, model, tokenizer, config, int(masks[0].sum()))
    claim_run_folder(
        out, manifest, name=MANIFEST_NAME, identity=IDENTITY, what="retrain", ignore=(LOCKS_DIR,)
    )
    finetune = config.finetune
    tokens = {"template": finetune.template, "max_length": finetune.max_length}
    pool_examples = tokenize_subset(pool, range(len(pool)), tokenizer, **tokens)
    target_examples = tokenize_subset(target, range(len(target)), tokenizer, **tokens)
    pad_id = pad_token_id(tokenizer)
    open_run_folder(out, manifest, masks)
    _train_models(
        out, masks, model, pool_examples, target_examples, pad_id, config, shard, progress
    )
    return load_runs(out)


def _train_models(
    out: Path,
    masks: np.ndarray,
    model: Any,
    pool_examples: list[Tokenized],
    target_examples: list[Tokenized],
    pad_id: int,
    config: RetrainConfig,
    shard: tuple[int, int],
    progress: bool | Callable[[int], None],
) -> None:
    from tqdm.auto import tqdm

    mine = range(shard[0], config.models, shard[1])
    counts = {"done": 0, "diverged": 0, "skipped": 0}
    label = "retrain" if shard == (0, 1) else f"retrain {shard[0]}/{shard[1]}"
    report = progress if callable(progress) else None
    with tqdm(total=len(mine), desc=label, unit="model", disable=progress is not True) as bar:
        for index in mine:
            with model_lock(out, index) as held:
                if not held or is_finished(out, index):
                    counts["skipped"] += 1
                else:
                    started = time.perf_counter()
                    finetune = replace(config.finetune, seed=config.training_seed(index))
                    examples = [pool_examples[i] for i in np.flatnonzero(masks[index])]
                    losses, record = train_model(model, examples, target_examples, pad_id, finetune)
                    record = {"model": index, **record}
                    record["seconds"] = round(time.perf_counter() - started, 3)
                    write_model(out, index, losses, record)
                    counts[record["status"]] += 1
            bar.update(1)
            bar.set_postfix(counts)
            if report:
                report(bar.n)
