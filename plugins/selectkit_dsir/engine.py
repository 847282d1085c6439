"""Streaming, parallel DSIR: hashed n-gram counts, the bucket log-ratio and per-text log-weights.

DSIR (Xie et al. 2023, "Data Selection for Language Models via Importance Resampling") fits a
bag of hashed n-grams to the target and to the raw pool and gives each raw text the log
importance weight ``sum_b count_b(text) * (log p_target(b) - log p_raw(b))``.

These functions take any iterable of texts, so a corpus larger than memory can be streamed from
a file; they read it in chunks (``chunk_size`` texts, at most ~8M characters) and keep a few
chunks per worker and O(num_buckets) counts in memory, never a texts-by-buckets matrix (before
starting workers they read ahead up to ``MIN_PARALLEL_CHARS`` to see whether it is worth it).
Weighting needs the raw distribution, so the raw corpus is read twice (once to count, once to
weight)::

    def texts():
        with open("pool.jsonl") as f:
            for line in f:
                yield json.loads(line)["text"]

    target = hashed_counts(target_texts)
    raw = hashed_counts(texts())
    weights = importance_log_weights(texts(), bucket_log_ratio(target, raw))

``HashedNgrams.fit_log_weights`` does all of it in one call and keeps the raw pass's bucket
ids (about a byte per character: up to ``CACHE_BYTES`` in memory, the rest in an unnamed
temporary file), so the weighting pass never tokenizes again and reads the texts only once;
the ``dsir`` method uses it.

With ``hashing="reference"`` every process also keeps the SHA-256 buckets it has computed, in
a table of up to 40 MB (see ``selectkit_dsir.hashing``); ``HashedNgrams.close`` frees the
main process's.

Chunks go to worker processes (``spawn``, so it is safe with threads and on every platform;
a script that calls these at import time needs the usual ``if __name__ == "__main__":`` guard).
Small inputs stay in-process, where starting workers would cost more than it saves. Counts are
integers and every text's weight is summed in a fixed order inside its own chunk, so results
are bit-identical for any ``n_jobs`` and ``chunk_size`` (with ``hashing="reference"``, barring
two n-grams with one 64-bit hash: odds about 3e-8 for a million distinct n-grams).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from selectkit_dsir.hashing import HASHINGS, batch_features, clear_caches

DEFAULT_NUM_BUCKETS = 10_000
DEFAULT_NGRAMS = 2
# Add-one (Laplace) smoothing; see bucket_log_ratio for how it compares with the reference's.
# Weight of the pool's n-gram distribution mixed into the target's (see bucket_log_ratio).
DEFAULT_SMOOTHING = 0.5
# Added to both probabilities before the log, as the reference implementation does.
PROBABILITY_FLOOR = 1e-8
# Texts per task sent to a worker: large enough that inter-process overhead is negligible.
DEFAULT_CHUNK_SIZE = 1024
# ... and at most about this many characters, so memory stays bounded with long texts.
CHUNK_CHARS = 1 << 23
# Characters per vectorized batch inside a task: the arrays then stay in the CPU caches.
BATCH_CHARS = 1 << 17
# Bucket ids kept in memory between the raw pass and the weighting pass; the rest go to a
# temporary file (see fit_log_weights).
CACHE_BYTES = 1 << 29
# Arrays of ``num_buckets`` int64 or float64 values DSIR holds at its peak in the main process:
# the target and raw counts, a counting task's counts and its two bincounts, and the log-ratio
# with its temporaries (bucket_log_ratio); and per worker process: its task's three arrays, the
# log-ratio copy it weights with, and two results in flight back to the main process.
MAIN_ARRAYS = 9
WORKER_ARRAYS = 6
# Below this many characters in all, hashing in-process beats starting worker processes
# (spawning costs ~0.4 s; one core hashes ~30M characters a second; on 2 cores, DSIR on 23M
# characters took 0.7 s in-process and 1.0 s with workers, on 68M 1.7 s and 1.6 s).
MIN_PARALLEL_CHARS = 64_000_000


def memory_needed(num_buckets: int, workers: int = 0) -> int:
    """About the peak bytes DSIR allocates in proportion to ``num_buckets``, hashing in this
    process (``workers=0``) or with ``workers`` worker processes."""
    return 8 * num_buckets * (MAIN_ARRAYS + WORKER_ARRAYS * workers)


def uses_workers(total_chars: int, n_jobs: int) -> int:
    """How many worker processes hashing ``total_chars`` characters with ``n_jobs`` starts
    (0: it stays in-process, as a small input does)."""
    jobs = resolve_jobs(n_jobs)
    return jobs if jobs > 1 and total_chars >= MIN_PARALLEL_CHARS else 0


class EmptyTargetError(ValueError):
    """The target texts have no word tokens, so there is no target distribution to fit."""


def resolve_jobs(n_jobs: int) -> int:
    """Worker count for ``n_jobs`` (0 means every core this process may run on)."""
    if n_jobs < 0:
        raise ValueError(f"n_jobs must be 0 (all cores) or positive, not {n_jobs}")
    if n_jobs:
        return n_jobs
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_ngrams(ngrams: int) -> None:
    if ngrams not in (1, 2):
        raise ValueError(f"ngrams must be 1 (unigrams) or 2 (unigrams and bigrams), not {ngrams}")


def _batches(texts: list[str], max_chars: int = BATCH_CHARS) -> Iterator[list[str]]:
    """Consecutive runs of texts of at most ``max_chars`` characters (at least one text each)."""
    start, size = 0, 0
    for i, text in enumerate(texts):
        if i > start and size + len(text) > max_chars:
            yield texts[start:i]
            start, size = i, 0
        size += len(text) + 1
    if start < len(texts):
        yield texts[start:]


def _count_task(texts: list[str], num_buckets: int, ngrams: int, hashing: str) -> np.ndarray:
    """Worker: n-gram counts per bucket over a chunk of texts."""
    counts = np.zeros(num_buckets, dtype=np.int64)
    for batch in _batches(texts):
        counts += batch_features(batch, num_buckets, ngrams, hashing).counts(num_buckets)
    return counts


def _weight_task(
    texts: list[str], log_ratio: np.ndarray, ngrams: int, hashing: str, min_length: int
) -> np.ndarray:
    """Worker: each text's counts dotted with ``log_ratio``; -inf below ``min_length`` tokens."""
    parts = [np.zeros(0, dtype=np.float64)]
    for batch in _batches(texts):
        features = batch_features(batch, len(log_ratio), ngrams, hashing)
        weights = features.dot(log_ratio)
        if min_length > 0:
            weights[features.doc_tokens < min_length] = -np.inf
        parts.append(weights)
    return np.concatenate(parts)


@dataclass(frozen=True)
class _ChunkBuckets:
    """The bucket of every n-gram of a chunk, compactly, kept between the two passes."""

    unigrams: np.ndarray
    bigrams: np.ndarray
    doc_tokens: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.unigrams.nbytes + self.bigrams.nbytes + self.doc_tokens.nbytes

    def spill(self, handle: Any) -> _Spilled:
        """Write the arrays at the end of ``handle``; where they are, to read them back."""
        offset = handle.seek(0, os.SEEK_END)
        for array in (self.unigrams, self.bigrams, self.doc_tokens):
            handle.write(array.tobytes())
        return _Spilled(
            offset,
            len(self.unigrams),
            len(self.bigrams),
            len(self.doc_tokens),
            self.unigrams.dtype,
            self.doc_tokens.dtype,
        )

    def log_weights(self, log_ratio: np.ndarray, min_length: int) -> np.ndarray:
        """The same sums, in the same order, as ``BatchFeatures.dot`` gives ``_weight_task``."""
        n_docs = len(self.doc_tokens)
        owners = np.arange(n_docs)
        weights = np.bincount(
            np.repeat(owners, self.doc_tokens), log_ratio[self.unigrams], minlength=n_docs
        )
        if len(self.bigrams):
            bigram_owners = np.repeat(owners, np.maximum(self.doc_tokens - 1, 0))
            weights += np.bincount(bigram_owners, log_ratio[self.bigrams], minlength=n_docs)
        if min_length > 0:
            weights[self.doc_tokens < min_length] = -np.inf
        return weights


@dataclass(frozen=True)
class _Spilled:
    """Where a chunk's :class:`_ChunkBuckets` lie in the temporary file."""

    offset: int
    unigrams: int
    bigrams: int
    docs: int
    dtype: np.dtype
    tokens_dtype: np.dtype

    def load(self, handle: Any) -> _ChunkBuckets:
        width = self.dtype.itemsize
        sizes = (
            self.unigrams * width,
            self.bigrams * width,
            self.docs * self.tokens_dtype.itemsize,
        )
        data = os.pread(handle.fileno(), sum(sizes), self.offset)
        unigrams = np.frombuffer(data, self.dtype, self.unigrams, 0)
        bigrams = np.frombuffer(data, self.dtype, self.bigrams, sizes[0])
        tokens = np.frombuffer(data, self.tokens_dtype, self.docs, sizes[0] + sizes[1])
        return _ChunkBuckets(unigrams, bigrams, tokens)


def _count_keep_task(
    texts: list[str], num_buckets: int, ngrams: int, hashing: str
) -> tuple[np.ndarray, _ChunkBuckets]:
    """Worker: n-gram counts per bucket, and every n-gram's bucket for the second pass."""
    counts = np.zeros(num_buckets, dtype=np.int64)
    dtype = np.uint16 if num_buckets <= 1 << 16 else np.uint32
    unigrams, bigrams, tokens = [], [], []
    for batch in _batches(texts):
        features = batch_features(batch, num_buckets, ngrams, hashing)
        counts += features.counts(num_buckets)
        unigrams.append(features.unigram_buckets.astype(dtype))
        bigrams.append(features.bigram_buckets.astype(dtype))
        tokens.append(features.doc_tokens)
    buckets = _ChunkBuckets(
        np.concatenate(unigrams), np.concatenate(bigrams), np.concatenate(tokens)
    )
    return counts, buckets


def _chunks(texts: Iterable[str], size: int, max_chars: int = CHUNK_CHARS) -> Iterator[list[str]]:
    """Consecutive runs of at most ``size`` texts and about ``max_chars`` characters."""
    chunk: list[str] = []
    chars = 0
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}")
        chunk.append(text)
        chars += len(text)
        if len(chunk) >= size or chars >= max_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


class HashedNgrams:
    """Counts and weights hashed n-grams of text streams, sharing one set of worker processes.

    Use it as a context manager when making several passes (target, raw fit, weights), so the
    workers start once; the module functions make a short-lived one per call.
    """

    def __init__(
        self,
        num_buckets: int = DEFAULT_NUM_BUCKETS,
        ngrams: int = DEFAULT_NGRAMS,
        *,
        hashing: str = "fast",
        n_jobs: int = 0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: bool = False,
        min_parallel_chars: int = MIN_PARALLEL_CHARS,
    ) -> None:
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be positive, not {num_buckets}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        _check_ngrams(ngrams)
        if hashing not in HASHINGS:
            raise ValueError(f"hashing must be one of {list(HASHINGS)}, not {hashing!r}")
        self.hashing = hashing
        self.num_buckets = num_buckets
        self.ngrams = ngrams
        self.n_jobs = resolve_jobs(n_jobs)
        self.chunk_size = chunk_size
        self.progress = progress
        self.min_parallel_chars = min_parallel_chars
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> HashedNgrams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes, if any were started, and free in-process caches."""
        clear_caches()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    @property
    def _count_args(self) -> tuple[Any, ...]:
        return (self.num_buckets, self.ngrams, self.hashing)

    @property
    def parallel(self) -> bool:
        """Whether worker processes have been started."""
        return self._executor is not None

    def counts(
        self, texts: Iterable[str], *, desc: str = "hashing n-grams", total: int | None = None
    ) -> np.ndarray:
        """Total count of every bucket over ``texts`` (int64, length ``num_buckets``)."""
        counts = np.zeros(self.num_buckets, dtype=np.int64)
        for part in self._run(_count_task, self._count_args, texts, desc, total):
            counts += part
        return counts

    def log_weights(
        self,
        texts: Iterable[str],
        log_ratio: np.ndarray,
        *,
        min_length: int = 0,
        desc: str = "weighting",
        total: int | None = None,
    ) -> np.ndarray:
        """Per text, its bucket counts dotted with ``log_ratio`` (float64, in input order).

        Texts with fewer than ``min_length`` word tokens get ``-inf`` (never chosen first).
        """
        ratio = np.ascontiguousarray(log_ratio, dtype=np.float64)
        if ratio.shape != (self.num_buckets,):
            raise ValueError(f"log_ratio must have shape ({self.num_buckets},), not {ratio.shape}")
        if not np.isfinite(ratio).all():
            raise ValueError("log_ratio must be finite")
        args = (ratio, self.ngrams, self.hashing, int(min_length))
        parts = [np.zeros(0, dtype=np.float64)]
        parts.extend(self._run(_weight_task, args, texts, desc, total))
        return np.concatenate(parts)

    def fit_log_weights(
        self,
        target_texts: Iterable[str],
        raw_texts: Iterable[str],
        smoothing: Smoothing = DEFAULT_SMOOTHING,
        *,
        min_length: int = 0,
        cache_bytes: int = CACHE_BYTES,
        desc: str = "dsir",
    ) -> np.ndarray:
        """DSIR end to end: fit both bags of n-grams, then weight every raw text.

        The raw pass keeps every n-gram's bucket (2 bytes each up to 65,536 buckets, about
        one byte per character of text): in memory while they fit in ``cache_bytes``, the rest
        in an unnamed temporary file (in ``TMPDIR``), read back a chunk at a time. So the raw
        texts are read once, and may be any iterable. Same results as ``counts`` then
        ``log_weights``.
        """
        target_counts = self.counts(target_texts, desc=f"{desc}: target n-grams")
        if not target_counts.any():
            raise EmptyTargetError("the target texts have no word tokens")
        raw_counts = np.zeros(self.num_buckets, dtype=np.int64)
        kept: list[_ChunkBuckets | _Spilled] = []
        used = 0
        total = len(raw_texts) if hasattr(raw_texts, "__len__") else None  # type: ignore[arg-type]
        with tempfile.TemporaryFile() as spill:
            results = self._run(
                _count_keep_task, self._count_args, raw_texts, f"{desc}: raw", total
            )
            for counts, buckets in results:
                raw_counts += counts
                if used + buckets.nbytes <= cache_bytes:
                    kept.append(buckets)
                    used += buckets.nbytes
                else:
                    kept.append(buckets.spill(spill))
            spill.flush()
            ratio = bucket_log_ratio(target_counts, raw_counts, resolve(smoothing, raw_counts))
            parts = [np.zeros(0, dtype=np.float64)]
            for keep in kept:
                buckets = keep.load(spill) if isinstance(keep, _Spilled) else keep
                parts.append(buckets.log_weights(ratio, int(min_length)))
        return np.concatenate(parts)

    def _run(
        self,
        task: Callable[..., Any],
        args: tuple[Any, ...],
        texts: Iterable[str],
        desc: str,
        total: int | None,
    ) -> Iterator[Any]:
        if total is None and hasattr(texts, "__len__"):
            total = len(texts)  # type: ignore[arg-type]
        bar = tqdm(total=total, desc=desc, unit="doc", disable=not self.progress)
        try:
            for n_docs, result in self._results(task, args, _chunks(texts, self.chunk_size)):
                bar.update(n_docs)
                yield result
        finally:
            bar.close()

    def _results(
        self, task: Callable[..., Any], args: tuple[Any, ...], chunks: Iterator[list[str]]
    ) -> Iterator[tuple[int, Any]]:
        """``(texts in chunk, task result)`` per chunk, in input order."""
        if self._executor is None:
            if self.n_jobs == 1:
                for chunk in chunks:
                    yield len(chunk), task(chunk, *args)
                return
            # Look ahead: a small input is done in-process, without starting workers.
            ahead: list[list[str]] = []
            chars = 0
            for chunk in chunks:
                ahead.append(chunk)
                chars += sum(map(len, chunk))
                if chars >= self.min_parallel_chars:
                    break
            else:
                for chunk in ahead:
                    yield len(chunk), task(chunk, *args)
                return
            chunks = chain(ahead, chunks)
            self._executor = ProcessPoolExecutor(
                max_workers=self.n_jobs, mp_context=multiprocessing.get_context("spawn")
            )
        executor = self._executor
        pending: deque[tuple[int, Future[Any]]] = deque()
        for chunk in chunks:
            pending.append((len(chunk), executor.submit(task, chunk, *args)))
            if len(pending) >= 2 * self.n_jobs:
                n_docs, future = pending.popleft()
                yield n_docs, future.result()
        while pending:
            n_docs, future = pending.popleft()
            yield n_docs, future.result()


def hashed_counts(
    texts: Iterable[str],
    num_buckets: int = DEFAULT_NUM_BUCKETS,
    ngrams: int = DEFAULT_NGRAMS,
    *,
    hashing: str = "fast",
    n_jobs: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
) -> np.ndarray:
    """Bag of hashed n-grams of a text stream: int64 count per bucket.

    ``ngrams=2`` counts unigrams and bigrams, ``ngrams=1`` unigrams only. ``hashing="fast"``
    uses selectkit's vectorized 64-bit hash, ``"reference"`` the SHA-256 buckets of the
    ``data-selection`` package (see ``selectkit_dsir.hashing`` for the tokenizer and hashes).
    """
    with HashedNgrams(
        num_buckets,
        ngrams,
        hashing=hashing,
        n_jobs=n_jobs,
        chunk_size=chunk_size,
        progress=progress,
    ) as engine:
        return engine.counts(texts)


#: A smoothing weight, or a rule that chooses it from the pool's n-gram counts once they are
#: known (``selectkit_dsir.smoothing``).
Smoothing = float | Callable[[np.ndarray], float]


def resolve(smoothing: Smoothing, raw_counts: np.ndarray) -> float:
    """The smoothing weight: ``smoothing`` itself, or what the rule chooses for these counts."""
    return smoothing(raw_counts) if callable(smoothing) else smoothing


def bucket_log_ratio(
    target_counts: np.ndarray, raw_counts: np.ndarray, smoothing: float = DEFAULT_SMOOTHING
) -> np.ndarray:
    """``log p_target(b) - log p_raw(b)`` per bucket.

    ``p_raw`` is the pool's bag of n-grams; ``p_target`` the target's, mixed with the pool's:
    ``(1 - smoothing) * target + smoothing * p_raw`` (Jelinek-Mercer smoothing toward the
    background distribution). An n-gram the target never shows then costs ``log(smoothing)``
    instead of about 18 nats, and one as frequent in the target as in the pool costs nothing.
    Both probabilities get the reference implementation's floor of 1e-8 before the log, so
    ``smoothing=0`` is exactly the estimator of ``data-selection``'s HashedNgramDSIR.

    Why 0.5 when the weight cannot be chosen from the data (``selectkit_dsir.smoothing``, the
    method's default, needs two target examples): small targets (a handful of examples) leave
    most buckets unseen, and an unsmoothed or add-one estimate then ranks by length or noise.
    Measured precision of the deterministic top 10% (target left out of the pool, 10k
    buckets): on the Pile sample with 5 / 20 target chunks of each of its 9 domains with at
    least 40 chunks, 0.39 / 0.51 at 0.5 against 0.20 / 0.22 for the reference's estimator and
    0.25 / 0.44 for add-one; on the generated task families of ``selectkit demo`` with 5
    targets, 0.93 against 0.69 and 0.20.
    """
    target = np.asarray(target_counts, dtype=np.float64)
    raw = np.asarray(raw_counts, dtype=np.float64)
    if target.shape != raw.shape or target.ndim != 1:
        raise ValueError(f"counts must be 1-D of one shape, got {target.shape} and {raw.shape}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), not {smoothing}")
    if (target < 0).any() or (raw < 0).any():
        raise ValueError("counts must be non-negative")
    if not target.any() or not raw.any():
        raise ValueError("both bags of n-grams need at least one n-gram")
    p_raw = raw / raw.sum()
    p_target = (1 - smoothing) * (target / target.sum()) + smoothing * p_raw
    return np.log(p_target + PROBABILITY_FLOOR) - np.log(p_raw + PROBABILITY_FLOOR)


def importance_log_weights(
    texts: Iterable[str],
    log_ratio: np.ndarray,
    ngrams: int = DEFAULT_NGRAMS,
    *,
    hashing: str = "fast",
    min_length: int = 0,
    n_jobs: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
) -> np.ndarray:
    """DSIR log importance weight of every text in a stream (float64, input order).

    ``log_ratio`` comes from :func:`bucket_log_ratio`; its length is the number of buckets, and
    ``ngrams`` and ``hashing`` must be those the counts were made with.
    Texts with fewer than ``min_length`` word tokens get ``-inf``.
    """
    with HashedNgrams(
        len(log_ratio),
        ngrams,
        hashing=hashing,
        n_jobs=n_jobs,
        chunk_size=chunk_size,
        progress=progress,
    ) as engine:
        return engine.log_weights(texts, log_ratio, min_length=min_length)
