"""DSIR's smoothing chosen from the data: the Jelinek-Mercer weight under which the target's
bag of n-grams best predicts its own held-out examples.

The target estimate is ``(1 - s) * p_target + s * p_raw``. A small target leaves most of its
n-grams unseen, and how much weight the pool's distribution should get depends on the target's
size and on how far it is from the pool, so no fixed ``s`` fits every run. Here the target's
examples are split into ``k`` folds (example ``i`` in fold ``i % k``); for each fold, the
target distribution is estimated from the other folds and the fold's n-gram counts are scored
under the mixture. The summed held-out log-likelihood is concave in ``s`` (a sum of logs of
functions linear in ``s``), so its maximum on ``[0, MAX_SMOOTHING]`` is found by a bounded
scalar search, deterministically. Probabilities get the estimator's floor of 1e-8 (see
:func:`~selectkit_dsir.engine.bucket_log_ratio`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

#: Folds of the target's examples, at most (fewer examples: one fold each).
FOLDS = 5
#: The largest weight chosen: at 1 the target would count for nothing.
MAX_SMOOTHING = 0.999
#: The estimator's floor on a probability, as in ``bucket_log_ratio``.
FLOOR = 1e-8


def held_out_log_likelihood(
    smoothing: float, fold_counts: Sequence[np.ndarray], raw_counts: np.ndarray
) -> float:
    """The log-likelihood of each fold's n-gram counts under the target estimate of the other
    folds, smoothed toward the pool's distribution by ``smoothing``, summed over folds."""
    return _held_out(smoothing, *_sparse(fold_counts), _distribution(raw_counts))


Folds = list[tuple[np.ndarray, np.ndarray]]


def _sparse(fold_counts: Iterable[np.ndarray]) -> tuple[Folds, np.ndarray | None]:
    """Each fold's nonzero buckets and counts (folds without n-grams left out), and the total
    over folds: one dense array at a time, so the folds cost what their n-grams do."""
    total = None
    folds = []
    for counts in fold_counts:
        seen = np.flatnonzero(counts)
        if not len(seen):
            continue
        held = np.asarray(counts, dtype=np.float64)[seen]
        if total is None:
            total = np.zeros(len(counts), dtype=np.float64)
        total[seen] += held
        folds.append((seen, held))
    return folds, total


def _distribution(raw_counts: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw_counts, dtype=np.float64)
    return raw / raw.sum()


def _held_out(
    smoothing: float,
    folds: Folds,
    total: np.ndarray,
    p_raw: np.ndarray,
) -> float:
    found = 0.0
    for seen, held in folds:
        rest = total[seen] - held
        mixture = (1 - smoothing) * rest / (total.sum() - held.sum()) + smoothing * p_raw[seen]
        found += float(held @ np.log(np.maximum(mixture, FLOOR)))
    return found


def choose_smoothing(fold_counts: Iterable[np.ndarray], raw_counts: np.ndarray) -> float | None:
    """The smoothing in ``[0, MAX_SMOOTHING]`` that maximizes the held-out log-likelihood of
    the folds (:func:`held_out_log_likelihood`); ``None`` when fewer than two folds hold
    n-grams (nothing is left to hold out)."""
    from scipy.optimize import minimize_scalar

    folds, total = _sparse(fold_counts)
    if len(folds) < 2 or total is None:
        return None
    p_raw = _distribution(raw_counts)

    def likelihood(s: float) -> float:
        return _held_out(s, folds, total, p_raw)

    found = minimize_scalar(
        lambda s: -likelihood(s),
        bounds=(0.0, MAX_SMOOTHING),
        method="bounded",
        options={"xatol": 1e-5},
    )
    # The bounded search stops short of an end; an optimum at an end is taken exactly.
    return max((float(found.x), 0.0, MAX_SMOOTHING), key=likelihood)


def folds_of(texts: Sequence[str], folds: int = FOLDS) -> list[list[str]]:
    """``texts`` split into ``min(folds, len(texts))`` folds, example ``i`` in fold ``i % k``."""
    k = min(folds, len(texts))
    return [list(texts[f::k]) for f in range(k)]
