"""DSIR's two passes over a pool as chunks of records: plain functions, and units of work.

``hash_chunk(pool, start, stop, config)`` counts the hashed n-grams of records ``start`` to
``stop - 1``; ``weight_chunk`` gives their log importance weights. Each reads only its own
records (a columnar pool reads them from its file), so chunks can run anywhere, in any order:
counts are integers, summed in any order, and each record's weight is summed inside itself, so
the result is bit-identical to :meth:`~selectkit_dsir.engine.HashedNgrams.fit_log_weights` in
one process, whatever the chunking.

:class:`DsirChunk` is that work as a unit for a run's executor (local processes, Ray actors):
a columnar pool travels as a reference to its file; an in-memory pool's chunk as its texts.
:func:`fit_on` runs DSIR end to end on an executor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selectkit.sdk import Pool
from selectkit_dsir.engine import (
    EmptyTargetError,
    HashedNgrams,
    Smoothing,
    _count_task,
    _weight_task,
    bucket_log_ratio,
    resolve,
)

#: Records per unit of work: enough that sending a unit costs little beside hashing it.
UNIT_RECORDS = 1 << 16


@dataclass(frozen=True)
class HashConfig:
    """How n-grams are hashed: the bucket count, 1 or 2 (unigrams, and bigrams), and the hash
    (``fast`` or ``reference``)."""

    num_buckets: int
    ngrams: int = 2
    hashing: str = "fast"


def count_texts(texts: list[str], config: HashConfig) -> np.ndarray:
    """Total count of every bucket over ``texts`` (int64, length ``num_buckets``)."""
    return _count_task(texts, config.num_buckets, config.ngrams, config.hashing)


def weigh_texts(
    texts: list[str], config: HashConfig, log_ratio: np.ndarray, min_length: int = 0
) -> np.ndarray:
    """Each text's bucket counts dotted with ``log_ratio``; ``-inf`` below ``min_length``
    word tokens."""
    ratio = np.ascontiguousarray(log_ratio, dtype=np.float64)
    return _weight_task(texts, ratio, config.ngrams, config.hashing, int(min_length))


def hash_chunk(pool: Pool, start: int, stop: int, config: HashConfig) -> np.ndarray:
    """Bucket counts of the n-grams of records ``start`` to ``stop - 1`` of ``pool``."""
    return count_texts(pool.texts_of(start, stop), config)


def weight_chunk(
    pool: Pool,
    start: int,
    stop: int,
    config: HashConfig,
    log_ratio: np.ndarray,
    min_length: int = 0,
) -> np.ndarray:
    """Log importance weights of records ``start`` to ``stop - 1`` of ``pool``."""
    return weigh_texts(pool.texts_of(start, stop), config, log_ratio, min_length)


@dataclass(frozen=True)
class DsirChunk:
    """Counts (``log_ratio`` is ``None``) or weights of records ``start`` to ``stop - 1``:
    ``source`` is a columnar pool, or those records' texts."""

    source: Pool | tuple[str, ...]
    start: int
    stop: int
    config: HashConfig
    log_ratio: np.ndarray | None = None
    min_length: int = 0

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def label(self) -> str:
        what = "n-gram counts" if self.log_ratio is None else "weights"
        return f"dsir {what} of records {self.start}-{self.stop - 1}"

    def run(self, worker: Any, report: Any) -> np.ndarray:
        if isinstance(self.source, Pool):
            texts = self.source.texts_of(self.start, self.stop)
        else:
            texts = list(self.source)
        if self.log_ratio is None:
            result = count_texts(texts, self.config)
        else:
            result = weigh_texts(texts, self.config, self.log_ratio, self.min_length)
        report(self.size)
        return result


def _units(
    pool: Pool,
    config: HashConfig,
    size: int,
    log_ratio: np.ndarray | None = None,
    min_length: int = 0,
) -> list[DsirChunk]:
    units = []
    for start in range(0, len(pool), size):
        stop = min(start + size, len(pool))
        source = pool if pool.by_reference else tuple(pool.texts_of(start, stop))
        units.append(DsirChunk(source, start, stop, config, log_ratio, min_length))
    return units


def fit_on(
    executor: Any,
    target_texts: Sequence[str],
    pool: Pool,
    config: HashConfig,
    smoothing: Smoothing,
    *,
    min_length: int = 0,
    progress: bool = False,
    unit_records: int = UNIT_RECORDS,
) -> np.ndarray:
    """DSIR's log-weights of every record of ``pool`` toward ``target_texts``, the pool's two
    passes run as units on ``executor`` (the target is counted here); the values of
    :meth:`~selectkit_dsir.engine.HashedNgrams.fit_log_weights`."""
    with HashedNgrams(config.num_buckets, config.ngrams, hashing=config.hashing, n_jobs=1) as here:
        target_counts = here.counts(target_texts)
    if not target_counts.any():
        raise EmptyTargetError("the target texts have no word tokens")
    counts = executor.run(_units(pool, config, unit_records), label="dsir: raw", progress=progress)
    raw_counts = np.zeros(config.num_buckets, dtype=np.int64)
    for part in counts:
        raw_counts += part
    ratio = bucket_log_ratio(target_counts, raw_counts, resolve(smoothing, raw_counts))
    units = _units(pool, config, unit_records, ratio, min_length)
    parts = executor.run(units, label="dsir: weights", progress=progress)
    return np.concatenate([np.zeros(0, dtype=np.float64), *parts])
