"""TracIn-CP: a brute-force sum of inner products, and targeted selection."""

from __future__ import annotations

import numpy as np

from selectkit import select
from selectkit.host import get_host
from selectkit.store import FeatureStore


def test_tracin_equals_a_brute_force_sum_of_inner_products(targeted, gradient_params, store_root):
    pool, target = targeted
    selection = select(pool, "tracin", 15, target=target, params=gradient_params, seed=0)
    entries = FeatureStore(store_root).entries()
    sgd = [e for e in entries if e.key.get("gradient", {}).get("kind") == "sgd"]
    by_checkpoint: dict[str, dict[int, object]] = {}
    for entry in sgd:
        by_checkpoint.setdefault(entry.meta["checkpoint"]["path"], {})[entry.num_rows] = entry
    assert len(by_checkpoint) == 2
    expected = np.zeros(len(pool))
    for sets in by_checkpoint.values():
        p, t = sets[len(pool)], sets[len(target)]
        rate = p.meta["checkpoint"]["learning_rate"]
        for i in range(len(pool)):
            for j in range(len(target)):
                row, other = p.read(i, i + 1)[0], t.read(j, j + 1)[0]
                expected[i] += rate * float(np.dot(row.astype(np.float64), other))
    np.testing.assert_allclose(selection.scores, expected, rtol=1e-4)
    # Measured: 0.60 of the top 5% are unit conversions, against 0.10 at random.
    assert selection.group_shares(pool).get("units", 0.0) >= 0.4


def test_tracin_attribution_sums_to_its_score(targeted, gradient_params):
    from selectkit_tracin.method import TracIn

    from selectkit.features.params import GradientParams
    from selectkit.methods import Context
    from selectkit.params import build_params

    pool, target = targeted
    method = TracIn(build_params(GradientParams, gradient_params, "tracin"))
    attribution = method.attribute(pool, target, Context(host=get_host(), seed=0))
    assert attribution.shape == (len(pool), len(target))
    scores = method.objective(pool, target, Context(host=get_host(), seed=0)).values
    np.testing.assert_allclose(attribution.sum(axis=1), scores, rtol=1e-5)
    # Per target, not only in total: measured 0.39 of each target's 15 most influential
    # records are unit conversions, against 0.10 at random.
    units = np.array([record.group == "units" for record in pool])
    top = np.argsort(-attribution, axis=0)[:15]
    assert units[top].mean() >= 0.25
