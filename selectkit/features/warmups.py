"""The warmup cache: LoRA warmup runs on a pool, kept by content in ``warmup/`` beside the
store, so every method (and every later run) that warms up the same model on the same pool
with the same settings reads the same checkpoints.

A run's folder is named by a hash of what determines it: the model's weights and tokenizer, the
pool's content and the warmup's settings. A complete run is only read (no lock, no write
access); a missing one is trained under a lock, so two processes never train the same run; a
part-way or damaged one is trained again. :class:`WarmupRun` is one run as a unit of work, so
a run with an executor trains on a worker, where the model is, and an ensemble of warmup runs
trains in parallel.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from selectkit import locks
from selectkit.errors import ParamError, StoreError
from selectkit.executors import Report, Worker
from selectkit.features.params import ModelParams
from selectkit.store.fingerprints import tensors_digest, tokenizer_digest

if TYPE_CHECKING:
    from selectkit.data.pool import Pool
    from selectkit.models.loading import LoadedModel, ModelOptions
    from selectkit.train.checkpoints import Checkpoint


def cached_warmup(
    pool: Pool,
    loaded: LoadedModel,
    params: ModelParams,
    index: int,
    root: Path,
    *,
    progress: bool = True,
) -> list[Checkpoint]:
    """Warmup run ``index`` of ``params`` on ``pool`` under ``loaded``: read from the cache
    folder ``root``, or trained into it."""
    from selectkit.train.warmup import warmup

    config = params.warmup.run(index)
    shape = {"lora": params.lora, "max_length": params.max_length, "template": "auto"}
    identity = {
        "weights": tensors_digest(loaded.model.named_parameters(), memo=loaded.digests),
        "tokenizer": tokenizer_digest(loaded.tokenizer),
        "pool": pool.content_fingerprint,
        "config": config.to_dict(**shape),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    out = root / digest[:24]
    found = complete_warmup(out)
    if found is not None:  # a complete warmup is only read: no lock, no write access
        return found
    with contextlib.ExitStack() as held:
        try:
            root.mkdir(parents=True, exist_ok=True)
            held.enter_context(locks.exclusive(root / f"{digest[:24]}.lock"))
        except OSError as exc:
            raise _not_writable(root, exc) from None
        found = complete_warmup(out)  # another process may have finished it meanwhile
        if found is not None:
            return found
        if out.exists():  # a part-way or damaged run of this very warmup: only a cache
            shutil.rmtree(out)
        return warmup(pool, loaded.model, loaded.tokenizer, out, config, **shape, progress=progress)


@dataclass(frozen=True)
class WarmupRun:
    """Warmup run ``index`` of ``params`` on ``pool``, read from or trained into ``root`` by a
    worker with the model; returns its checkpoints."""

    pool: Pool
    params: ModelParams
    model_options: ModelOptions
    index: int
    root: str
    size: int = 1

    @property
    def label(self) -> str:
        return f"warmup run {self.index}"

    def run(self, worker: Worker, report: Report) -> list[Checkpoint]:
        loaded = worker.host.shared_model(self.params.model, self.model_options)
        found = cached_warmup(
            self.pool, loaded, self.params, self.index, Path(self.root), progress=False
        )
        report(1)
        return found


def complete_warmup(out: Path) -> list[Checkpoint] | None:
    """The checkpoints of the cached warmup in ``out`` when it is complete and readable;
    ``None`` when it is missing, part-way or damaged (it is then trained again)."""
    from selectkit.train.checkpoints import find_checkpoints

    try:
        manifest = json.loads((out / "warmup.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("status") != "complete":
            return None
        return find_checkpoints(out)
    except (OSError, ValueError, RecursionError, ParamError):
        return None


def check_creatable(root: Path) -> None:
    """Refuse now, before the model loads, a warmup cache that cannot be made: when ``root``
    does not exist, no cached warmup can be read from it either."""
    if root.exists():
        if not root.is_dir():
            raise StoreError(f"the warmup cache {root} is a file; give --cache-dir a folder")
        return
    parent = next(p for p in root.parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(
            f"the warmup cache {root} does not exist and cannot be made ({parent} is not a "
            "writable folder); give a writable --cache-dir (or SELECTKIT_CACHE_DIR), or pass "
            "checkpoints= from an earlier warmup"
        )


def _not_writable(root: Path, exc: OSError) -> StoreError:
    return StoreError(
        f"the warmup this run needs is not in the cache {root}, and it cannot be written there "
        f"({exc.strerror or exc}); give a writable --cache-dir (or SELECTKIT_CACHE_DIR), or "
        "pass checkpoints= from an earlier warmup"
    )
