"""balanced_random: equal shares per group, a small group's leftover shared by the others,
random within each group, reproducible for its seed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from selectkit_baselines.balanced_random import balanced_scores

from selectkit import Pool, select
from selectkit.errors import ParamError


def _pool(sizes: dict[str | None, int]) -> Pool:
    groups = [name for name, size in sizes.items() for _ in range(size)]
    texts = [f"record {i} of {group}" for i, group in enumerate(groups)]
    return Pool.from_texts(texts, groups)


def _shares(pool: Pool, selection) -> Counter:
    return Counter(pool[i].group for i in selection.indices.tolist())


def test_every_group_gets_the_same_share():
    pool = _pool({"a": 50, "b": 80, "c": 60})
    assert _shares(pool, select(pool, "balanced_random", 30, seed=0)) == {"a": 10, "b": 10, "c": 10}


def test_a_small_group_is_taken_whole_and_the_others_share_the_rest():
    pool = _pool({"a": 2, "b": 80, "c": 60, None: 40})  # no group is a group of its own
    shares = _shares(pool, select(pool, "balanced_random", 32, seed=0))
    assert shares == {"a": 2, "b": 10, "c": 10, None: 10}


def test_the_remainder_goes_to_groups_drawn_at_random():
    pool = _pool({"a": 50, "b": 50, "c": 50})
    seen = set()
    for seed in range(12):
        shares = _shares(pool, select(pool, "balanced_random", 31, seed=seed))
        assert sorted(shares.values()) == [10, 10, 11]
        seen.add(max(shares, key=shares.get))
    assert seen == {"a", "b", "c"}


def test_records_are_random_within_a_group_and_reproducible_for_a_seed():
    pool = _pool({"a": 100, "b": 100})
    first = select(pool, "balanced_random", 20, seed=1)
    assert select(pool, "balanced_random", 20, seed=1).indices.tolist() == first.indices.tolist()
    other = select(pool, "balanced_random", 20, seed=2)
    assert set(other.indices.tolist()) != set(first.indices.tolist())
    # every record of a group is as likely: over many seeds each is picked about 10% of the time
    codes = np.repeat([0, 1], 100)
    picked = np.zeros(200)
    for seed in range(400):
        picked[np.argsort(-balanced_scores(codes, seed))[:20]] += 1
    assert np.abs(picked / 400 - 0.1).max() < 0.06


def test_only_count_budgets_are_taken():
    pool = _pool({"a": 10, "b": 10})
    with pytest.raises(ParamError, match="'balanced_random' selects a number of records"):
        select(pool, "balanced_random", "5tok")
