"""DSIR's smoothing chosen from the data: the held-out likelihood, its maximum against a fine
grid, the fallback, and the choice recorded in the manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from selectkit_dsir.method import DSIR, DSIRParams
from selectkit_dsir.smoothing import (
    MAX_SMOOTHING,
    choose_smoothing,
    folds_of,
    held_out_log_likelihood,
)

from selectkit import Pool, select
from selectkit.host import get_host
from selectkit.methods import Context
from selectkit.output import write_selection


def _direct_log_likelihood(s: float, folds: list[np.ndarray], raw: np.ndarray) -> float:
    """The same quantity written out bucket by bucket."""
    p_raw = raw / raw.sum()
    total = 0.0
    for f, held in enumerate(folds):
        rest = sum(c for g, c in enumerate(folds) if g != f)
        for b in range(len(raw)):
            if held[b]:
                p = (1 - s) * rest[b] / rest.sum() + s * p_raw[b]
                total += held[b] * np.log(max(p, 1e-8))
    return total


def test_the_held_out_likelihood_is_the_direct_sum():
    rng = np.random.default_rng(0)
    folds = [rng.poisson(0.8, size=40) for _ in range(4)]
    raw = rng.poisson(3.0, size=40) + 1
    for s in (0.0, 0.3, 0.9):
        assert held_out_log_likelihood(s, folds, raw) == pytest.approx(
            _direct_log_likelihood(s, folds, raw), rel=1e-12
        )


@pytest.mark.parametrize("spread", [0.2, 1.0, 5.0])
def test_the_choice_is_the_best_on_a_fine_grid(spread):
    """Targets close to the pool want much smoothing, sparse or distant ones little or some:
    whatever the case, the choice is at least as likely as every value of a fine grid."""
    rng = np.random.default_rng(int(spread * 10))
    raw = rng.poisson(50, size=200).astype(float)
    center = rng.dirichlet(np.full(200, spread))
    folds = [rng.multinomial(60, 0.5 * center + 0.5 * raw / raw.sum()) for _ in range(5)]
    chosen = choose_smoothing(folds, raw)
    assert chosen is not None and 0 <= chosen <= MAX_SMOOTHING
    grid = np.linspace(0, MAX_SMOOTHING, 2001)
    best = max(held_out_log_likelihood(s, folds, raw) for s in grid)
    assert held_out_log_likelihood(chosen, folds, raw) >= best - 1e-6


def test_a_target_close_to_the_pool_gets_more_smoothing_than_a_distant_one():
    rng = np.random.default_rng(3)
    raw = rng.poisson(50, size=300).astype(float)
    p_raw = raw / raw.sum()
    near = [rng.multinomial(40, p_raw) for _ in range(5)]
    far_center = np.zeros(300)
    far_center[:20] = 1 / 20
    far = [rng.multinomial(40, 0.9 * far_center + 0.1 * p_raw) for _ in range(5)]
    assert choose_smoothing(near, raw) > choose_smoothing(far, raw)


def test_fewer_than_two_folds_with_ngrams_choose_nothing():
    raw = np.ones(10)
    assert choose_smoothing([np.arange(10)], raw) is None
    assert choose_smoothing([np.arange(10), np.zeros(10)], raw) is None
    assert folds_of(["a", "b", "c"]) == [["a"], ["b"], ["c"]]
    assert folds_of([str(i) for i in range(7)], 5) == [["0", "5"], ["1", "6"], ["2"], ["3"], ["4"]]


WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
]


def test_auto_is_recorded_in_the_manifest_and_a_fixed_value_is_used_as_given(tmp_path):
    rng = np.random.default_rng(5)
    pool = Pool.from_texts([" ".join(rng.choice(WORDS, size=12)) for _ in range(300)])
    target = Pool.from_texts([" ".join(rng.choice(WORDS[:5], size=12)) for _ in range(12)])
    auto = select(pool, "dsir", 30, target=target, seed=0, params={"sample": False})
    out = tmp_path / "picked.jsonl"
    write_selection(auto, pool, out)
    report = json.loads(out.with_suffix(".manifest.json").read_text())["method"]["report"]
    assert report["smoothing_chosen_by"] == "5-fold held-out log-likelihood of the target's n-grams"
    context = Context(host=get_host(), n_jobs=1)
    fixed = DSIR(DSIRParams(smoothing=report["smoothing"], sample=False))
    same = fixed.objective(pool, target, context)
    assert same.values.tobytes() == auto.scores.tobytes() and same.report == {}


def test_one_target_example_falls_back_to_the_fixed_default():
    pool = Pool.from_texts([f"{w} {v}" for w in WORDS for v in WORDS])
    target = Pool.from_texts(["alpha beta gamma"])
    objective = DSIR(DSIRParams()).objective(pool, target, Context(host=get_host(), n_jobs=1))
    assert objective.report["smoothing"] == 0.5
    assert objective.report["smoothing_chosen_by"].startswith("the fixed default")
