"""The ``dsir`` method: importance resampling on hashed n-grams.

Xie, Santurkar, Ma and Liang (2023), "Data Selection for Language Models via Importance
Resampling" (NeurIPS). Fit a bag of hashed unigrams and bigrams to the target set and to the
pool, weight every pool record by how much more likely its n-grams are under the target than
under the pool, and let the solver resample (Gumbel top-k) or take the top weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Literal

import numpy as np

from selectkit.sdk import Context, LogWeights, Method, ParamError, Pool, check_memory
from selectkit_dsir.chunks import HashConfig, fit_on
from selectkit_dsir.engine import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_NGRAMS,
    DEFAULT_NUM_BUCKETS,
    DEFAULT_SMOOTHING,
    MIN_PARALLEL_CHARS,
    EmptyTargetError,
    HashedNgrams,
    Smoothing,
    memory_needed,
    uses_workers,
)
from selectkit_dsir.smoothing import choose_smoothing, folds_of

#: Bucket ids are stored as uint32 between DSIR's two passes.
MAX_BUCKETS = 1 << 32


@dataclass(frozen=True)
class DSIRParams:
    """Parameters of ``dsir``; the defaults follow the paper and its reference implementation
    (``data-selection``'s HashedNgramDSIR) except where noted."""

    num_buckets: int = field(
        default=DEFAULT_NUM_BUCKETS,
        metadata={"help": "hash buckets for the n-gram features (the reference uses 10000)"},
    )
    ngrams: int = field(
        default=DEFAULT_NGRAMS,
        metadata={"help": "2: unigrams and bigrams (as the paper); 1: unigrams only"},
    )
    hashing: Literal["fast", "reference"] = field(
        default="fast",
        metadata={
            "help": "fast: selectkit's vectorized 64-bit n-gram hash; reference: the "
            "SHA-256 buckets of the reference implementation, bit for bit (one SHA-256 per "
            "distinct n-gram: about 3x the hashing time of fast, 2x end to end on the "
            "benchmark). With 10k buckets the top-k depends on the hash (fast agrees with "
            "the reference on about 60-90% of a top 10%), so use reference to reproduce the "
            "reference's choice"
        },
    )
    smoothing: float | Literal["auto"] = field(
        default="auto",
        metadata={
            "help": "weight in [0, 1) of the pool's n-gram distribution mixed into the "
            "target's (Jelinek-Mercer), or auto: the weight under which the target's n-grams "
            "best predict its own held-out examples (5 folds; recorded in the manifest). 0 is "
            "exactly the reference implementation's estimator"
        },
    )
    sample: bool = field(
        default=True,
        metadata={
            "help": "true: resample in proportion to the importance weights (seeded Gumbel "
            "top-k, as the paper); false: take the highest weights"
        },
    )
    min_example_length: int = field(
        default=0,
        metadata={
            "help": "records with fewer word tokens are never chosen before the others "
            "(log-weight -inf); the reference uses 100 for pretraining text, 0 keeps "
            "short instruction data"
        },
    )
    chunk_size: int = field(
        default=DEFAULT_CHUNK_SIZE,
        metadata={"help": "records per parallel task; changes speed and memory, never results"},
    )

    def __post_init__(self) -> None:
        checks = [
            (
                1 <= self.num_buckets <= MAX_BUCKETS,
                f"num_buckets must be in [1, 2**32], got {self.num_buckets}",
            ),
            (
                self.hashing in ("fast", "reference"),
                f"hashing must be fast or reference, got '{self.hashing}'",
            ),
            (self.ngrams in (1, 2), f"ngrams must be 1 or 2, got {self.ngrams}"),
            (
                self.smoothing == "auto" or 0 <= self.smoothing < 1,
                f"smoothing must be auto or in [0, 1), got {self.smoothing}",
            ),
            (
                self.min_example_length >= 0,
                f"min_example_length must be >= 0, got {self.min_example_length}",
            ),
            (self.chunk_size >= 1, f"chunk_size must be >= 1, got {self.chunk_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ParamError(message)
        self.check_fits(workers=0)

    def check_fits(self, workers: int) -> None:
        """Refuse ``num_buckets`` whose arrays do not fit in the memory available."""
        where = f" with {workers} worker processes" if workers else ""
        check_memory(
            memory_needed(self.num_buckets, workers),
            f"num_buckets={self.num_buckets} (DSIR's bucket counts and log-weights{where})",
            f"use fewer buckets (the reference uses {DEFAULT_NUM_BUCKETS})"
            + (", or fewer processes (-j)" if workers else ""),
        )


class DSIR(Method):
    """Importance resampling toward a target on hashed n-grams (Xie et al. 2023, DSIR).

    Every record's log importance weight is ``sum_b count_b * (log p_target(b) - log p_raw(b))``
    over hashed unigram and bigram buckets, with ``p_target`` fit on the target set and
    ``p_raw`` on the pool. The solver then samples without replacement in proportion to the
    weights (``sample=true``) or takes the top ones. Hashing streams the pool in chunks, on
    ``Context.n_jobs`` worker processes, or, when the run has an executor, as units of work on
    its workers (:mod:`selectkit_dsir.chunks`); the weights are the same bits either way.

    As in the paper and its reference code there is no length normalization: a weight sums over
    a record's n-grams, so its magnitude grows with length and very short records sit near 0.
    ``min_example_length`` keeps short records out of the top, as the reference does.
    """

    name = "dsir"
    Params = DSIRParams
    needs_target = True

    def objective(self, pool: Pool, target: Pool | None, context: Context) -> LogWeights:
        if target is None or len(target) == 0:
            raise ParamError("method 'dsir' needs a non-empty target set (--target FILE)")
        p: DSIRParams = self.params
        report: dict[str, Any] = {}
        try:
            values = self._log_weights(pool, target, context, self._smoothing(target, report))
        except EmptyTargetError:
            raise ParamError("method 'dsir': the target set has no word tokens") from None
        return LogWeights(values, sample=p.sample, report=report)

    def _smoothing(self, target: Pool, report: dict[str, Any]) -> Smoothing:
        """The fixed weight, or (``auto``) the rule that chooses it once the pool's n-grams
        are counted, noting its choice in ``report``."""
        p: DSIRParams = self.params
        if p.smoothing != "auto":
            return p.smoothing

        def choose(raw_counts: np.ndarray) -> float:
            # Counted now, after the pool's pass and its memory check; kept sparse by the rule.
            with HashedNgrams(p.num_buckets, p.ngrams, hashing=p.hashing, n_jobs=1) as engine:
                folds = folds_of(list(target.texts))
                chosen = choose_smoothing((engine.counts(f) for f in folds), raw_counts)
            if chosen is None:
                report["smoothing"] = DEFAULT_SMOOTHING
                report["smoothing_chosen_by"] = (
                    "the fixed default: fewer than two target examples have n-grams, so none "
                    "can be held out"
                )
                return DEFAULT_SMOOTHING
            report["smoothing"] = chosen
            report["smoothing_chosen_by"] = (
                f"{len(folds)}-fold held-out log-likelihood of the target's n-grams"
            )
            return chosen

        return choose

    def _log_weights(
        self, pool: Pool, target: Pool, context: Context, smoothing: Smoothing
    ) -> np.ndarray:
        p: DSIRParams = self.params
        if context.executor is not None:
            p.check_fits(0)
            config = HashConfig(p.num_buckets, p.ngrams, p.hashing)
            return fit_on(
                context.executor,
                target.texts,
                pool,
                config,
                smoothing,
                min_length=p.min_example_length,
                progress=context.progress,
            )
        # Whether hashing is worth worker processes: count characters up to the threshold
        # only, so a large pool is not read once just to be measured.
        chars = _characters(chain(target.texts, pool.texts), MIN_PARALLEL_CHARS)
        try:
            workers = uses_workers(chars, context.n_jobs)
        except ValueError as exc:  # a negative n_jobs
            raise ParamError(f"method 'dsir': {exc}") from None
        p.check_fits(workers)
        with HashedNgrams(
            p.num_buckets,
            p.ngrams,
            hashing=p.hashing,
            n_jobs=context.n_jobs,
            chunk_size=p.chunk_size,
            progress=context.progress,
        ) as engine:
            return engine.fit_log_weights(
                target.texts,
                pool.texts,
                smoothing,
                min_length=p.min_example_length,
                desc="dsir",
            )


def _characters(texts: Iterable[str], limit: int) -> int:
    """The characters of ``texts``, counted until there are ``limit`` of them."""
    total = 0
    for text in texts:
        total += len(text)
        if total >= limit:
            break
    return total
