"""The trak method: targeted selection, its attribution against a direct computation from the
store (primal and dual forms), reproducibility, refusals and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from selectkit_trak.method import TRAK, TRAKParams

from selectkit import select
from selectkit.cli import cli
from selectkit.data.pool import Pool
from selectkit.data.synthetic import make_records
from selectkit.errors import ParamError
from selectkit.host import get_host
from selectkit.methods import Context
from selectkit.params import build_params
from selectkit.store import FeatureSet, FeatureStore

RANDOM_SHARE = 0.1  # one family in ten


def sgd_sets(cache_dir: str, num_rows: int, dim: int) -> list[FeatureSet]:
    """The store's SGD feature sets of ``num_rows`` rows and ``dim`` dims, in checkpoint order."""
    entries = [
        e
        for e in FeatureStore(cache_dir).entries()
        if e.key.get("gradient", {}).get("kind") == "sgd" and (e.num_rows, e.dim) == (num_rows, dim)
    ]
    return sorted(entries, key=lambda e: e.meta["checkpoint"]["path"])


def direct_attribution(
    pool_sets: list[FeatureSet], target_sets: list[FeatureSet], damping: float
) -> np.ndarray:
    """TRAK by the formulas, with np.linalg.inv: mean_c(φ_t (ΦᵀΦ + λI)⁻¹ φ_iᵀ) · mean_c(1 − p)."""
    taus, weights = [], []
    for p, t in zip(pool_sets, target_sets, strict=True):
        q = np.maximum(1 - np.exp(-p.column("loss").astype(np.float64)), 1e-6)
        qt = np.maximum(1 - np.exp(-t.column("loss").astype(np.float64)), 1e-6)
        phi = -p.read(0, p.num_rows).astype(np.float64) / q[:, None]
        phi_t = -t.read(0, t.num_rows).astype(np.float64) / qt[:, None]
        kernel = phi.T @ phi
        lam = damping * np.trace(kernel) / min(p.num_rows, p.dim)
        taus.append(phi @ np.linalg.inv(kernel + lam * np.eye(p.dim)) @ phi_t.T)
        weights.append(q)
    return np.mean(taus, axis=0) * np.mean(weights, axis=0)[:, None]


@pytest.fixture(scope="module")
def trak_run(targeted, gradient_params, store_root):
    """The trak selection of 5% of the pool and two attribution runs (primal form: 300 > 256),
    in the session's store (a module's fixture runs before the test's SELECTKIT_CACHE_DIR)."""
    pool, target = targeted
    selection = select(
        pool, "trak", "5%", target=target, params=gradient_params, seed=0, cache_dir=store_root
    )
    method = TRAK(build_params(TRAKParams, gradient_params, "trak"))
    context = Context(host=get_host(), store_root=store_root, seed=0)
    first = method.attribute(pool, target, context)
    second = method.attribute(pool, target, context)
    return selection, first, second


def test_trak_puts_the_target_family_in_its_top_five_percent(targeted, trak_run):
    pool, _ = targeted
    selection, _, _ = trak_run
    assert len(selection.indices) == 15
    # Measured: 1.00 of the 15 selected are unit conversions, against 0.10 at random.
    assert selection.group_shares(pool).get("units", 0.0) >= 0.6 > RANDOM_SHARE


def test_attribution_is_reproducible_and_its_mean_is_the_objective(targeted, trak_run):
    pool, target = targeted
    selection, first, second = trak_run
    assert first.shape == (len(pool), len(target)) and first.dtype == np.float64
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(selection.scores, first.mean(axis=1))


def test_attribution_equals_a_direct_computation_from_the_store(
    targeted, gradient_params, trak_run, store_root
):
    pool, target = targeted
    _, attribution, _ = trak_run
    dim = gradient_params["projection.dim"]
    pool_sets = sgd_sets(store_root, len(pool), dim)
    target_sets = sgd_sets(store_root, len(target), dim)
    assert len(pool_sets) == len(target_sets) == 2
    expected = direct_attribution(pool_sets, target_sets, damping=0.1)
    # Measured: 1e-14 of the largest score apart.
    np.testing.assert_allclose(attribution, expected, rtol=0, atol=1e-9 * abs(expected).max())


def test_the_dual_form_through_the_method(targeted, gradient_params, trak_run, store_root):
    pool, target = targeted
    dim = gradient_params["projection.dim"]
    warmup = {
        str(Path(e.meta["checkpoint"]["path"]).parent) for e in sgd_sets(store_root, len(pool), dim)
    }
    assert len(warmup) == 1
    subset = Pool([pool[i] for i in range(0, len(pool), 10)])  # 30 records < dim 256
    params = build_params(TRAKParams, {**gradient_params, "checkpoints": warmup.pop()}, "trak")
    attribution = TRAK(params).attribute(subset, target, Context(host=get_host(), seed=0))
    expected = direct_attribution(
        sgd_sets(store_root, len(subset), dim),
        sgd_sets(store_root, len(target), dim),
        damping=0.1,
    )
    np.testing.assert_allclose(attribution, expected, rtol=0, atol=1e-9 * abs(expected).max())
    units = np.array([r.group == "units" for r in subset])
    scores = attribution.mean(axis=1)
    auc = (scores[units][:, None] > scores[~units][None, :]).mean()
    # Measured: AUC 0.87 for the 5 unit conversions among 30 records (0.5 at random).
    assert auc >= 0.7


def test_an_ensemble_of_independent_warmups(targeted, gradient_params, tmp_path, monkeypatch):
    pool, target = targeted
    subset = Pool([pool[i] for i in range(0, len(pool), 10)])
    params = build_params(TRAKParams, {**gradient_params, "warmup.runs": 2}, "trak")
    monkeypatch.setenv("SELECTKIT_CACHE_DIR", str(tmp_path / "features"))
    attribution = TRAK(params).attribute(subset, target, Context(host=get_host(), seed=0))
    dim = gradient_params["projection.dim"]
    pool_sets = sgd_sets(tmp_path / "features", len(subset), dim)
    runs = {str(Path(s.meta["checkpoint"]["path"]).parent) for s in pool_sets}
    assert len(pool_sets) == 4 and len(runs) == 2  # two checkpoints of each warmup
    expected = direct_attribution(
        pool_sets, sgd_sets(tmp_path / "features", len(target), dim), damping=0.1
    )
    np.testing.assert_allclose(attribution, expected, rtol=0, atol=1e-9 * abs(expected).max())


def test_bad_requests_fail_before_any_work(targeted, gradient_params, tmp_path, monkeypatch):
    pool, target = targeted
    monkeypatch.setenv("SELECTKIT_CACHE_DIR", str(tmp_path))
    params = dict(gradient_params)
    with pytest.raises(ParamError, match=r"rank is at most the 300 pool records < dim 512"):
        select(
            pool, "trak", 15, target=target, params={**params, "damping": 0, "projection.dim": 512}
        )
    with pytest.raises(ParamError, match="damping must be a finite number >= 0"):
        select(pool, "trak", 15, target=target, params={**params, "damping": -1})
    with pytest.raises(ParamError, match="needs a target set"):
        select(pool, "trak", 15, target=Pool([]), params=params)
    assert not list(tmp_path.iterdir())  # nothing was extracted or trained


def test_trak_from_the_command_line(gradient_params, tmp_path):
    pool_rows = make_records(30, seed=0)
    target_rows = make_records(10, seed=1, families=["units"], id_prefix="target", avoid=pool_rows)
    for name, rows in (("pool", pool_rows), ("target", target_rows)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = [f"-p{key}={value}" for key, value in gradient_params.items()]
    result = CliRunner().invoke(
        cli,
        ["select", "--method", "trak", "--pool", str(tmp_path / "pool.jsonl"), "--target",
         str(tmp_path / "target.jsonl"), "-b", "5%", "-p", "damping=0.1", *params,
         "--out", str(tmp_path / "picked.jsonl"), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    picked = [json.loads(line) for line in (tmp_path / "picked.jsonl").read_text().splitlines()]
    assert len(picked) == 15
    assert sum(r["family"] == "units" for r in picked) >= 9
