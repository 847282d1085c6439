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

from collections.abc import Sequence

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
    raw = np.asarray(raw_counts, dtype=np.float64)
    p_raw = raw / raw.sum()
    total = np.sum(fold_counts, axis=0, dtype=np.float64)
    found = 0.0
    for counts in fold_counts:
        held = np.asarray(counts, dtype=np.float64)
        rest = total - held
        p_rest = rest / rest.sum()
        seen = held > 0
        mixture = (1 - smoothing) * p_rest[seen] + smoothing * p_raw[seen]
        found += float(held[seen] @ np.log(np.maximum(mixture, FLOOR)))
    return found


def choose_smoothing(fold_counts: Sequence[np.ndarray], raw_counts: np.ndarray) -> float | None:
    """The smoothing in ``[0, MAX_SMOOTHING]`` that maximizes the held-out log-likelihood of
    the folds (:func:`held_out_log_likelihood`); ``None`` when fewer than two folds hold
    n-grams (nothing is left to hold out)."""
    from scipy.optimize import minimize_scalar

    folds = [np.asarray(c, dtype=np.float64) for c in fold_counts if np.any(c)]
    if len(folds) < 2:
        return None
    found = minimize_scalar(
        lambda s: -held_out_log_likelihood(s, folds, raw_counts),
        bounds=(0.0, MAX_SMOOTHING),
        method="bounded",
        options={"xatol": 1e-5},
    )
    # The bounded search stops short of an end; an optimum at an end is taken exactly.
    candidates = (float(found.x), 0.0, MAX_SMOOTHING)
    return max(candidates, key=lambda s: held_out_log_likelihood(s, folds, raw_counts))


def folds_of(texts: Sequence[str], folds: int = FOLDS) -> list[list[str]]:
    """``texts`` split into ``min(folds, len(texts))`` folds, example ``i`` in fold ``i % k``."""
    k = min(folds, len(texts))
    return [list(texts[f::k]) for f in range(k)]
