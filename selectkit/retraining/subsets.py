"""The random training subsets of the retraining harness, one per model.

Model ``m`` trains on an exact-size uniform random subset of the pool drawn from
``numpy.random.default_rng([seed, m])``, so its subset depends only on the seed and its own
index: a shard process, a resumed run and a single run all train model ``m`` on the same records.
Datamodels (Ilyas et al. 2022) and the linear datamodeling score (Park et al. 2023, §2) sample
subsets this way, at a fixed fraction of the pool.
"""

from __future__ import annotations

import numpy as np

from selectkit.errors import ParamError


def subset_size(pool_size: int, fraction: float) -> int:
    """``round(fraction * pool_size)`` records, refused unless it is a proper, non-empty subset
    (at least 1 and at most ``pool_size - 1`` records): otherwise every model would train on the
    same data and the outcomes would say nothing about single records."""
    if not 0 < fraction < 1:
        raise ParamError(f"fraction must be in (0, 1), got {fraction}")
    size = round(fraction * pool_size)
    if not 1 <= size <= pool_size - 1:
        raise ParamError(
            f"fraction {fraction} of a pool of {pool_size} records is {size} records; a subset "
            f"must hold between 1 and {pool_size - 1} of them, so use a fraction in "
            f"[{1 / pool_size:.3g}, {(pool_size - 1) / pool_size:.3g}] (or a larger pool)"
        )
    return size


def subset_mask(pool_size: int, size: int, seed: int, model: int) -> np.ndarray:
    """Model ``model``'s subset as a bool mask over the pool: the first ``size`` positions of a
    permutation drawn from ``default_rng([seed, model])``."""
    chosen = np.random.default_rng([seed, model]).permutation(pool_size)[:size]
    mask = np.zeros(pool_size, dtype=bool)
    mask[chosen] = True
    return mask


def subset_masks(pool_size: int, fraction: float, models: int, seed: int) -> np.ndarray:
    """The ``(models, pool_size)`` bool masks of every model's subset (see :func:`subset_mask`)."""
    if models < 1:
        raise ParamError(f"models must be >= 1, got {models}")
    if seed < 0:
        raise ParamError(f"seed must be >= 0, got {seed}")
    size = subset_size(pool_size, fraction)
    masks = np.zeros((models, pool_size), dtype=bool)
    for model in range(models):
        masks[model] = subset_mask(pool_size, size, seed, model)
    return masks
