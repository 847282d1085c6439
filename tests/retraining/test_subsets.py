"""The retraining subsets: exact sizes, one seeded draw per model whatever the sharding or the
number of models, and refused fractions."""

from __future__ import annotations

import numpy as np
import pytest

from selectkit.errors import ParamError
from selectkit.retraining import subset_mask, subset_masks, subset_size


def test_each_subset_has_the_exact_size_and_its_own_draw():
    masks = subset_masks(40, 0.3, 50, seed=7)
    assert masks.shape == (50, 40) and masks.dtype == np.bool_
    assert (masks.sum(axis=1) == 12).all()
    assert len({row.tobytes() for row in masks}) == 50  # every model its own subset
    # Every record is in about 30% of the subsets: the draw is uniform over records.
    assert masks.mean(axis=0).min() > 0.05 and masks.mean(axis=0).max() < 0.6


def test_model_m_depends_only_on_the_seed_and_m():
    many = subset_masks(30, 0.5, 10, seed=3)
    few = subset_masks(30, 0.5, 4, seed=3)
    np.testing.assert_array_equal(many[:4], few)
    for model in (0, 5, 9):
        np.testing.assert_array_equal(many[model], subset_mask(30, 15, 3, model))
        chosen = np.random.default_rng([3, model]).permutation(30)[:15]
        assert sorted(np.flatnonzero(many[model])) == sorted(chosen)
    assert not np.array_equal(subset_masks(30, 0.5, 4, seed=4), few)


@pytest.mark.parametrize(
    ("size", "fraction", "expected"), [(10, 0.5, 5), (10, 0.14, 1), (10, 0.86, 9), (7, 0.5, 4)]
)
def test_size_is_the_rounded_fraction(size, fraction, expected):
    assert subset_size(size, fraction) == expected


@pytest.mark.parametrize(
    ("size", "fraction", "message"),
    [
        (10, 0.0, r"fraction must be in \(0, 1\)"),
        (10, 1.0, r"fraction must be in \(0, 1\)"),
        (10, 0.04, "is 0 records; a subset must hold between 1 and 9"),
        (10, 0.96, "is 10 records"),
        (1, 0.5, "between 1 and 0"),
    ],
)
def test_fractions_leaving_no_proper_subset_are_refused(size, fraction, message):
    with pytest.raises(ParamError, match=message):
        subset_size(size, fraction)


def test_bad_model_counts_and_seeds_are_refused():
    with pytest.raises(ParamError, match="models must be >= 1"):
        subset_masks(10, 0.5, 0, seed=0)
    with pytest.raises(ParamError, match="seed must be >= 0"):
        subset_masks(10, 0.5, 3, seed=-1)
