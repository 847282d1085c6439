"""The on-disk format of a retraining run, and :func:`load_runs`, which reads it back.

A run folder holds, all in plain JSON and ``.npy`` (nothing pickled)::

    retrain.json              what was trained: pool and target fingerprints, target ids,
                              fraction, models, seed, fine-tuning config, model, versions
    masks.npy                 (models, pool records) bool: model m trained on masks[m]
    models/model-000012.npy   model 12's loss on each target example (float64)
    models/model-000012.json  its status ("done" or "diverged": step and loss), steps, seconds
    locks/                    flock files: one for the folder, one per model being trained

Every file is written atomically (temporary file, fsync, rename), the outcome before its JSON,
so a killed process leaves no half file and a model is finished exactly when both of its files
exist. Rerunning trains only the models that are not.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selectkit import locks
from selectkit.data.pool import Pool
from selectkit.errors import ParamError
from selectkit.publish import atomic_writer
from selectkit.train.common import claim_run_folder, write_manifest

MANIFEST_NAME = "retrain.json"
MANIFEST_KIND = "selectkit.retrain"
MANIFEST_VERSION = 1
MASKS_NAME = "masks.npy"
MODELS_DIR = "models"
LOCKS_DIR = "locks"
#: What makes two runs the same run; a folder holding a run that differs in any is refused.
IDENTITY = ("pool", "target", "fraction", "models", "seed", "vary_seed", "finetune", "model")


def model_stem(model: int) -> str:
    """``model-000012`` for model 12."""
    return f"model-{model:06d}"


def model_files(root: Path, model: int) -> tuple[Path, Path]:
    """Where model ``model``'s outcome (``.npy``) and its record (``.json``) live."""
    stem = root / MODELS_DIR / model_stem(model)
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def is_finished(root: Path, model: int) -> bool:
    """Whether model ``model`` was trained (done or diverged): both of its files exist."""
    return all(path.is_file() for path in model_files(root, model))


def write_npy(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` atomically."""
    with atomic_writer(path, binary=True) as handle:
        np.save(handle, array, allow_pickle=False)


def write_model(root: Path, model: int, losses: np.ndarray, record: dict[str, Any]) -> None:
    """Write a trained model's target losses, then its record, each atomically."""
    outcome, info = model_files(root, model)
    write_npy(outcome, np.asarray(losses, dtype=np.float64))
    write_manifest(info, record)


@contextlib.contextmanager
def model_lock(root: Path, model: int) -> Iterator[bool]:
    """Try to lock model ``model`` without waiting; yields whether this process holds it, so two
    processes (say, two runs of the same shard) never train the same model. The kernel drops
    the lock when its holder dies."""
    fd = locks.try_lock(root / LOCKS_DIR / f"{model_stem(model)}.lock")
    try:
        yield fd is not None
    finally:
        if fd is not None:
            locks.release(fd)


def open_run_folder(root: Path, manifest: dict[str, Any], masks: np.ndarray) -> None:
    """Create ``root`` for this run, or reopen it when it holds the same run.

    Under the folder lock: a folder holding another run is refused; the manifest is written
    once, so a rerun keeps the first creation time; ``masks.npy`` is written once and must equal
    ``masks`` afterwards.
    """
    claim = {"name": MANIFEST_NAME, "identity": IDENTITY, "what": "retrain", "ignore": (LOCKS_DIR,)}
    (root / LOCKS_DIR).mkdir(parents=True, exist_ok=True)
    with locks.exclusive(root / LOCKS_DIR / "run.lock"):
        claim_run_folder(root, manifest, **claim)
        if not (root / MANIFEST_NAME).is_file():
            write_manifest(root / MANIFEST_NAME, manifest)
        (root / MODELS_DIR).mkdir(exist_ok=True)
        masks_path = root / MASKS_NAME
        if not masks_path.is_file():
            write_npy(masks_path, masks)
        elif not np.array_equal(_read_npy(masks_path), masks):
            raise ParamError(
                f"{masks_path} does not hold the subsets this run's seed draws; the folder was "
                "changed by hand: remove it and retrain"
            )


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ParamError(
            f"{path} is not a readable .npy file ({exc}); delete it and rerun `selectkit "
            "retrain` with the same options to recompute it"
        ) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ParamError(
            f"{path} is not readable JSON ({exc}); delete it and rerun `selectkit retrain` with "
            "the same options to recompute it"
        ) from None


@dataclass(frozen=True)
class RetrainRuns:
    """A retraining run as read from its folder.

    ``masks[m]`` is model m's training subset; ``outcomes[m, j]`` its loss on target example j
    (NaN rows for models not finished or diverged); ``done[m]`` says model m trained and has
    finite losses, ``diverged[m]`` that its training loss became non-finite; ``records[m]`` is
    the model's JSON record (``None`` while pending).
    """

    path: Path
    manifest: dict[str, Any]
    masks: np.ndarray
    outcomes: np.ndarray
    done: np.ndarray
    diverged: np.ndarray
    records: list[dict[str, Any] | None]

    @property
    def models(self) -> int:
        return len(self.masks)

    @property
    def pending(self) -> np.ndarray:
        """Models not trained yet (neither done nor diverged)."""
        return ~(self.done | self.diverged)

    @property
    def pool_fingerprint(self) -> str:
        return self.manifest["pool"]["content_fingerprint"]

    @property
    def target_fingerprint(self) -> str:
        return self.manifest["target"]["content_fingerprint"]

    @property
    def target_ids(self) -> list[str]:
        return list(self.manifest["target"]["ids"])

    def check_matches(self, pool: Pool, target: Pool) -> None:
        """Refuse a pool or target other than the ones the models were trained and evaluated
        on (content fingerprints: ids, prompts, responses), saying which differs."""
        for name, given, recorded in (
            ("pool", pool, self.manifest["pool"]),
            ("target", target, self.manifest["target"]),
        ):
            if given.content_fingerprint != recorded["content_fingerprint"]:
                raise ParamError(
                    f"the {name} ({len(given)} records, content {given.content_fingerprint[:12]}"
                    f"...) is not the one the models in {self.path} were "
                    f"{'trained' if name == 'pool' else 'evaluated'} on ({recorded['records']} "
                    f"records, content {recorded['content_fingerprint'][:12]}...); load the same "
                    "file with the same record options"
                )

    def summary(self) -> str:
        """One line: how many models are done, diverged and pending."""
        pool, target = self.manifest["pool"], self.manifest["target"]
        return (
            f"{self.models} models: {int(self.done.sum())} done, {int(self.diverged.sum())} "
            f"diverged, {int(self.pending.sum())} pending (subsets of {self.manifest['fraction']} "
            f"of {pool['records']} records, {target['records']} targets) in {self.path}"
        )


def load_runs(path: str | Path) -> RetrainRuns:
    """Read a retraining run folder written by :func:`selectkit.retraining.retrain`, finished or
    not: pending models have NaN outcomes and are neither done nor diverged."""
    root = Path(path)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ParamError(
            f"{root} holds no {MANIFEST_NAME}, so it is not a retraining run; give the --out "
            "folder of `selectkit retrain`"
        )
    manifest = _read_json(manifest_path)
    if manifest.get("kind") != MANIFEST_KIND or manifest.get("version") != MANIFEST_VERSION:
        raise ParamError(
            f"{manifest_path} is not a version {MANIFEST_VERSION} {MANIFEST_KIND} manifest "
            f"(kind {manifest.get('kind')!r}, version {manifest.get('version')!r})"
        )
    models, records = manifest["models"], manifest["pool"]["records"]
    targets = len(manifest["target"]["ids"])
    masks_path = root / MASKS_NAME
    if not masks_path.is_file():
        raise ParamError(
            f"{root} has no {MASKS_NAME}: its creation was interrupted; rerun `selectkit "
            "retrain` with the same options"
        )
    masks = _read_npy(masks_path)
    if masks.dtype != np.bool_ or masks.shape != (models, records):
        raise ParamError(
            f"{masks_path} holds {masks.dtype} {masks.shape}, expected bool {(models, records)}"
        )
    outcomes = np.full((models, targets), np.nan)
    done = np.zeros(models, dtype=bool)
    diverged = np.zeros(models, dtype=bool)
    model_records: list[dict[str, Any] | None] = [None] * models
    for model in range(models):
        if not is_finished(root, model):
            continue
        outcome_path, record_path = model_files(root, model)
        record = _read_json(record_path)
        losses = _read_npy(outcome_path)
        if losses.dtype != np.float64 or losses.shape != (targets,):
            raise ParamError(
                f"{outcome_path} holds {losses.dtype} {losses.shape}, expected float64 "
                f"({targets},); delete it and rerun `selectkit retrain` to recompute it"
            )
        model_records[model] = record
        if record.get("status") == "done" and np.isfinite(losses).all():
            done[model] = True
            outcomes[model] = losses
        else:
            diverged[model] = True
    return RetrainRuns(root, manifest, masks, outcomes, done, diverged, model_records)
