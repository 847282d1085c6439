"""TRAK's kernel: both forms against a direct inverse, the ensemble, singular kernels, traker."""

from __future__ import annotations

import numpy as np
import pytest
from selectkit_trak.kernel import ScaledRows, checkpoint_scores, trak_scores

from selectkit.errors import ParamError
from selectkit.rows import ArrayRows


def direct(phi: np.ndarray, targets: np.ndarray, damping: float) -> np.ndarray:
    """``Φ (ΦᵀΦ + λI)⁻¹ targetsᵀ`` with ``λ = damping · trace(ΦᵀΦ) / min(n, d)``, by
    np.linalg.inv."""
    n, d = phi.shape
    kernel = phi.T @ phi
    lam = damping * np.trace(kernel) / min(n, d)
    return phi @ np.linalg.inv(kernel + lam * np.eye(d)) @ targets.T


def random_case(n: int, d: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 2.0, size=d)  # unequal directions, so the ridge matters
    return rng.normal(size=(n, d)) * scale, rng.normal(size=(m, d)) * scale


@pytest.mark.parametrize(
    ("n", "d", "damping"),
    [(60, 12, 0.1), (60, 12, 0.0), (12, 12, 0.0), (9, 40, 0.1), (40, 40, 1.0), (5, 3, 0.01)],
)
def test_both_forms_equal_a_direct_inverse(n, d, damping):
    phi, targets = random_case(n, d, 4, seed=n * d)
    expected = direct(phi, targets, damping)
    forms = ["auto", "primal", "dual"] if damping > 0 or n == d else ["auto", "primal"]
    for form in forms:
        got = checkpoint_scores(ArrayRows(phi), targets, damping, form=form, chunk_rows=7)
        assert got.shape == (n, 4) and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())


def test_primal_and_dual_agree_on_float32_rows():
    phi, targets = random_case(300, 256, 10, seed=1)
    rows = ArrayRows(phi.astype(np.float32))
    primal = checkpoint_scores(rows, targets, 0.1, form="primal", chunk_rows=64)
    dual = checkpoint_scores(rows, targets, 0.1, form="dual")
    np.testing.assert_allclose(primal, dual, rtol=1e-9, atol=1e-12 * np.abs(dual).max())


def test_the_ensemble_is_the_mean_score_times_the_mean_out_to_loss_weight():
    rng = np.random.default_rng(3)
    n, d, m, count = 30, 6, 3, 3
    pools = [rng.normal(size=(n, d)) for _ in range(count)]
    targets = [rng.normal(size=(m, d)) for _ in range(count)]
    weights = [rng.uniform(0.1, 1.0, size=n) for _ in range(count)]
    got = trak_scores([ArrayRows(p) for p in pools], [ArrayRows(t) for t in targets], weights, 0.1)
    for i in (0, 17):
        for j in range(m):
            tau = [direct(p, t, 0.1)[i, j] for p, t in zip(pools, targets, strict=True)]
            q = [w[i] for w in weights]
            assert got[i, j] == pytest.approx(np.mean(tau) * np.mean(q), rel=1e-9)


def test_scaled_rows_multiply_each_row_by_its_factor():
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    scaled = ScaledRows(ArrayRows(rows), np.array([1.0, -2.0, 0.5, 3.0]))
    np.testing.assert_array_equal(scaled.read(1, 3), [[-6.0, -8.0, -10.0], [3.0, 3.5, 4.0]])
    assert scaled.dtype == np.float64
    with pytest.raises(ParamError, match="not finite"):
        ScaledRows(ArrayRows(rows), np.array([1.0, np.inf, 1.0, 1.0]))


class Unreadable:
    """A RowSource that fails if read: proves an error comes before any work."""

    num_rows, dim = 10, 20

    def read(self, start: int, stop: int) -> np.ndarray:
        raise AssertionError("read before the damping check")


def test_an_undamped_kernel_of_too_few_rows_is_refused_before_any_work():
    with pytest.raises(ParamError, match=r"rank is at most the 10 pool records < dim 20"):
        checkpoint_scores(Unreadable(), np.zeros((2, 20)), 0.0)
    with pytest.raises(ParamError, match=r"damping > 0 .* or use projection.dim <= 10"):
        trak_scores([Unreadable()], [ArrayRows(np.zeros((2, 20)))], [np.ones(10)], 0.0)


def test_a_numerically_singular_kernel_names_its_rank():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 8))
    duplicates = np.repeat(basis, 10, axis=0)  # 30 rows, rank 3 < dim 8
    with pytest.raises(ParamError, match=r"numerical rank 3 of 8"):
        checkpoint_scores(ArrayRows(duplicates), rng.normal(size=(2, 8)), 0.0)
    square = np.vstack([basis, basis[:1], rng.normal(size=(4, 8))])  # n = d = 8, rank 7
    with pytest.raises(ParamError, match=r"numerical rank 7 of 8"):
        checkpoint_scores(ArrayRows(square), rng.normal(size=(2, 8)), 0.0)
    # Damping makes the same kernel invertible.
    assert np.isfinite(checkpoint_scores(ArrayRows(duplicates), basis, 0.1)).all()


def test_zero_and_non_finite_features_are_refused():
    targets = np.ones((2, 4))
    with pytest.raises(ParamError, match="every pool feature is zero"):
        checkpoint_scores(ArrayRows(np.zeros((10, 4))), targets, 0.1)
    bad = np.ones((10, 4))
    bad[6, 2] = np.nan
    with pytest.raises(ParamError, match="row 6 has a non-finite"):
        checkpoint_scores(ArrayRows(bad), targets, 0.1, chunk_rows=4)
    with pytest.raises(ParamError, match="target has a non-finite"):
        checkpoint_scores(ArrayRows(np.ones((10, 4))), bad[5:7], 0.1)
    weights = np.ones(10)
    weights[3] = np.inf
    with pytest.raises(ParamError, match="out-to-loss weight is not finite"):
        trak_scores([ArrayRows(np.eye(10, 4))], [ArrayRows(targets)], [weights], 0.1)


def test_traker_basic_score_computer_agrees_up_to_its_rescaling():
    import torch
    from trak.score_computers import BasicScoreComputer

    phi, targets = random_case(200, 16, 5, seed=7)
    lam = 0.1 * np.trace(phi.T @ phi) / min(phi.shape)
    computer = BasicScoreComputer(dtype=torch.float32, device="cpu", lambda_reg=float(lam))
    grads = torch.from_numpy(phi.astype(np.float32))
    features = computer.get_x_xtx_inv(grads, computer.get_xtx(grads))
    theirs = torch.zeros(200, 5)
    computer.get_scores(features, torch.from_numpy(targets.astype(np.float32)), theirs)
    # traker divides (XᵀX + λI)⁻¹ by the mean absolute value of its entries.
    rescale = np.abs(np.linalg.inv(phi.T @ phi + lam * np.eye(16))).mean()
    ours = checkpoint_scores(ArrayRows(phi), targets, 0.1)
    # Measured: 3e-7 of the largest score apart (traker inverts in float32).
    np.testing.assert_allclose(theirs.numpy() * rescale, ours, rtol=0, atol=1e-5 * abs(ours).max())
