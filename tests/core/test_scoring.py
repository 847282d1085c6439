"""Streaming scoring: agreement with a direct numpy computation, chunking, aggregates, zero
rows, memory planning, reads in bounded chunks, and errors that say what to do."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

from selectkit.errors import ParamError
from selectkit.rows import ArrayRows, RowSource
from selectkit.scoring import (
    iter_similarity,
    score_pool,
    similarity_matrix,
    subtask_matrix,
)

N_POOL, N_TARGET = 103, 11
DIMS = (32, 24, 40)  # dims may differ between checkpoints
WEIGHTS = (0.5, 2.0, -0.25)
SUBTASKS = ["qa", "qa", "math", "code", "math", "qa", "code", "code", "math", "qa", "bio"]


class RecordingRows(ArrayRows):
    """A RowSource over an array that records every range read, and stores float16."""

    def __init__(self, array: np.ndarray) -> None:
        super().__init__(array.astype(np.float16))
        self.reads: list[tuple[int, int]] = []

    def read(self, start: int, stop: int) -> np.ndarray:
        self.reads.append((start, stop))
        return super().read(start, stop).copy()


def _arrays(n: int, dims=DIMS, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, d)).astype(np.float32) for d in dims]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    a = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
    b = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
    return a @ b.T


def _direct(pools, targets, weights, metric: str) -> np.ndarray:
    """Σ_c w_c sim(pool_c, target_c) in float64 numpy, the whole matrix at once."""
    sim = _cosine if metric == "cosine" else lambda a, b: a.astype(np.float64) @ b.T
    return sum(w * sim(p, t) for p, t, w in zip(pools, targets, weights, strict=True))


def _stacked(*args, **kw) -> np.ndarray:
    """All chunks, collected before any is used: each must stay valid after the next one."""
    chunks = list(iter_similarity(*args, **kw))
    starts = [start for start, _ in chunks]
    assert starts == sorted(starts)
    return np.concatenate([s.numpy() for _, s in chunks]) if chunks else np.empty((0,))


@pytest.fixture
def data():
    pools, targets = _arrays(N_POOL, seed=1), _arrays(N_TARGET, seed=2)
    return pools, targets


def _sources(arrays) -> list[ArrayRows]:
    return [ArrayRows(a) for a in arrays]


# -- agreement with numpy ---------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "inner"])
def test_one_checkpoint_matches_numpy(data, metric):
    pools, targets = data
    got = _stacked(_sources(pools[:1]), _sources(targets[:1]), metric=metric, chunk_rows=17)
    expected = _direct(pools[:1], targets[:1], [1.0], metric)
    assert got.dtype == np.float32
    assert got.shape == (N_POOL, N_TARGET)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "inner"])
def test_weighted_checkpoints_match_numpy(data, metric):
    pools, targets = data
    got = _stacked(_sources(pools), _sources(targets), WEIGHTS, metric=metric, chunk_rows=17)
    expected = _direct(pools, targets, WEIGHTS, metric)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_weights_default_to_one(data):
    pools, targets = data
    got = _stacked(_sources(pools), _sources(targets))
    np.testing.assert_allclose(got, _direct(pools, targets, [1, 1, 1], "cosine"), atol=1e-5)


def test_cosine_ignores_row_scale(data):
    pools, targets = data
    scaled = [p * np.linspace(0.01, 100, N_POOL, dtype=np.float32)[:, None] for p in pools]
    a = _stacked(_sources(pools), _sources(targets))
    b = _stacked(_sources(scaled), _sources(targets))
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "inner"])
@pytest.mark.parametrize("aggregate", ["mean", "max", "subtask_max"])
def test_aggregates_match_numpy(data, metric, aggregate):
    pools, targets = data
    subtasks = SUBTASKS if aggregate == "subtask_max" else None
    got = score_pool(
        _sources(pools),
        _sources(targets),
        WEIGHTS,
        metric=metric,
        aggregate=aggregate,
        subtasks=subtasks,
        chunk_rows=17,
    )
    sims = _direct(pools, targets, WEIGHTS, metric)
    if aggregate == "mean":
        expected = sims.mean(axis=1)
    elif aggregate == "max":
        expected = sims.max(axis=1)
    else:
        labels = np.array(SUBTASKS)
        expected = np.max(
            [sims[:, labels == s].mean(axis=1) for s in dict.fromkeys(SUBTASKS)], axis=0
        )
    assert got.dtype == np.float64
    assert got.shape == (N_POOL,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_subtask_max_is_not_mean_or_max(data):
    """The three aggregates really differ on this data (so the test above can fail)."""
    pools, targets = data
    scores = {
        agg: score_pool(
            _sources(pools),
            _sources(targets),
            aggregate=agg,
            subtasks=SUBTASKS if agg == "subtask_max" else None,
        )
        for agg in ("mean", "max", "subtask_max")
    }
    assert not np.allclose(scores["mean"], scores["subtask_max"])
    assert not np.allclose(scores["max"], scores["subtask_max"])
    assert np.all(scores["mean"] <= scores["subtask_max"] + 1e-6)
    assert np.all(scores["subtask_max"] <= scores["max"] + 1e-6)


def test_subtask_matrix_columns_average_each_label():
    matrix = subtask_matrix(["b", "a", "b", 3, "b"], 5)
    expected = np.array(
        [[1 / 3, 0, 0], [0, 1, 0], [1 / 3, 0, 0], [0, 0, 1], [1 / 3, 0, 0]], dtype=np.float32
    )
    np.testing.assert_allclose(matrix, expected)


# -- chunking -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 7, 50, 102, 103, 1000])
def test_chunk_sizes_give_identical_results(data, chunk_rows):
    pools, targets = data
    one = _stacked(_sources(pools), _sources(targets), WEIGHTS, chunk_rows=N_POOL)
    got = _stacked(_sources(pools), _sources(targets), WEIGHTS, chunk_rows=chunk_rows)
    np.testing.assert_allclose(got, one, rtol=1e-6, atol=1e-6)
    scores = score_pool(
        _sources(pools),
        _sources(targets),
        WEIGHTS,
        aggregate="subtask_max",
        subtasks=SUBTASKS,
        chunk_rows=chunk_rows,
    )
    whole = score_pool(
        _sources(pools),
        _sources(targets),
        WEIGHTS,
        aggregate="subtask_max",
        subtasks=SUBTASKS,
        chunk_rows=N_POOL,
    )
    np.testing.assert_allclose(scores, whole, rtol=1e-6, atol=1e-6)


def test_pool_rows_are_read_in_chunks_no_larger_than_chunk_rows(data):
    pools, targets = data
    pool_sets = [RecordingRows(p) for p in pools]
    target_sets = [RecordingRows(t) for t in targets]
    got = score_pool(pool_sets, target_sets, WEIGHTS, aggregate="max", chunk_rows=10)
    for source in pool_sets:
        assert all(stop - start <= 10 for start, stop in source.reads)
        covered = sorted(source.reads)
        assert covered[0][0] == 0 and covered[-1][1] == N_POOL
        assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
        assert len(source.reads) == 11
    for source in target_sets:
        assert source.reads == [(0, N_TARGET)]  # targets are loaded once
    fp16 = [p.array.astype(np.float32) for p in pool_sets]
    fp16_targets = [t.array.astype(np.float32) for t in target_sets]
    expected = _direct(fp16, fp16_targets, WEIGHTS, "cosine").max(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_memory_limit_sets_the_chunk_size(data):
    pools, targets = data
    pool_sets = [RecordingRows(p) for p in pools]
    target_sets = _sources(targets)
    resident = sum(4 * N_TARGET * d for d in DIMS)
    loading = N_TARGET * max(DIMS) * (4 + 4)
    per_row = max(DIMS) * (2 + 4) + 3 * 4 * N_TARGET + 32
    limit = resident + loading + 5 * per_row
    list(iter_similarity(pool_sets, target_sets, memory_limit=limit))
    sizes = {stop - start for start, stop in pool_sets[0].reads}
    largest = (limit - int(limit / 6) - resident) // per_row
    assert max(sizes) == largest
    assert largest < N_POOL
    pool_sets[0].reads.clear()
    list(iter_similarity(pool_sets, target_sets, memory_limit=limit, chunk_rows=3))
    assert max(stop - start for start, stop in pool_sets[0].reads) == 3


def test_pool_is_never_read_whole_by_default(data):
    pools, targets = data
    big = np.repeat(pools[0], 200, axis=0)  # 20,600 rows of 32 dims
    source = RecordingRows(big)
    list(iter_similarity([source], _sources(targets[:1]), memory_limit=1 << 20))
    assert max(stop - start for start, stop in source.reads) < len(big) // 4


# -- zero rows and empty pools ---------------------------------------------------------------


@pytest.mark.parametrize("aggregate", ["mean", "max", "subtask_max"])
def test_zero_rows_score_zero_not_nan(data, aggregate):
    pools, targets = data
    pools = [p.copy() for p in pools]
    targets = [t.copy() for t in targets]
    for p in pools:
        p[[0, 5, 50]] = 0
    for t in targets:
        t[[1, 2]] = 0
    sims = _stacked(_sources(pools), _sources(targets), WEIGHTS, chunk_rows=8)
    assert np.isfinite(sims).all()
    assert np.all(sims[[0, 5, 50]] == 0)
    assert np.all(sims[:, [1, 2]] == 0)
    np.testing.assert_allclose(sims, _direct(pools, targets, WEIGHTS, "cosine"), atol=1e-5)
    scores = score_pool(
        _sources(pools),
        _sources(targets),
        WEIGHTS,
        aggregate=aggregate,
        subtasks=SUBTASKS if aggregate == "subtask_max" else None,
    )
    assert np.isfinite(scores).all()
    assert np.all(scores[[0, 5, 50]] == 0)


def test_empty_pool_gives_no_chunks_and_no_scores(data):
    _, targets = data
    empty = [np.zeros((0, d), dtype=np.float32) for d in DIMS]
    assert list(iter_similarity(_sources(empty), _sources(targets))) == []
    scores = score_pool(_sources(empty), _sources(targets))
    assert scores.shape == (0,) and scores.dtype == np.float64


def test_float32_source_is_not_modified(data):
    pools, targets = data
    before = [p.copy() for p in pools]
    score_pool(_sources(pools), _sources(targets), aggregate="max", metric="cosine")
    _stacked(_sources(pools), _sources(targets), metric="inner")
    for a, b in zip(pools, before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_read_only_arrays_are_accepted(data):
    pools, targets = data
    frozen = [p.copy() for p in pools]
    for p in frozen:
        p.flags.writeable = False
    got = score_pool(_sources(frozen), _sources(targets))
    np.testing.assert_allclose(got, score_pool(_sources(pools), _sources(targets)))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_stored_dtypes_match_float32(data, dtype):
    pools, targets = data
    stored = [p.astype(dtype) for p in pools]
    got = _stacked(_sources(stored), _sources(targets), WEIGHTS, chunk_rows=40)
    expected = _direct([p.astype(np.float32) for p in stored], targets, WEIGHTS, "cosine")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_progress_bar_does_not_change_scores(data, capsys):
    pools, targets = data
    quiet = score_pool(_sources(pools), _sources(targets), chunk_rows=30)
    shown = score_pool(_sources(pools), _sources(targets), chunk_rows=30, progress=True)
    np.testing.assert_array_equal(quiet, shown)
    assert "scoring" in capsys.readouterr().err


def test_sources_satisfy_the_protocol(data):
    pools, _ = data
    assert isinstance(ArrayRows(pools[0]), RowSource)
    assert isinstance(RecordingRows(pools[0]), RowSource)


# -- errors ----------------------------------------------------------------------------------------


def test_mismatched_pool_rows_name_the_checkpoint(data):
    pools, targets = data
    pools = [pools[0], pools[1][:-1], pools[2]]
    with pytest.raises(ParamError, match=r"checkpoint 1: pool set has 102 rows .* has 103"):
        score_pool(_sources(pools), _sources(targets))


def test_mismatched_target_rows_name_the_checkpoint(data):
    pools, targets = data
    targets = [targets[0], targets[1], targets[2][:5]]
    with pytest.raises(ParamError, match=r"checkpoint 2: target set has 5 rows .* has 11"):
        iter_similarity(_sources(pools), _sources(targets))


def test_mismatched_dims_name_the_checkpoint(data):
    pools, targets = data
    targets = [targets[0], targets[0], targets[2]]
    with pytest.raises(ParamError, match=r"checkpoint 1: pool features have dim 24 .* dim 32"):
        score_pool(_sources(pools), _sources(targets))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": [1.0, 2.0]}, "2 weights for 3 checkpoints"),
        ({"weights": [1.0, float("nan"), 1.0]}, "finite"),
        ({"metric": "euclid"}, "metric must be one of"),
        ({"chunk_rows": 0}, "chunk_rows must be a positive int"),
        ({"memory_limit": -5}, "memory_limit must be a positive int"),
        ({"device": "nonsense"}, "unknown device"),
    ],
)
def test_bad_arguments(data, kwargs, message):
    pools, targets = data
    with pytest.raises(ParamError, match=message):
        iter_similarity(_sources(pools), _sources(targets), **kwargs)


def test_wrong_number_of_target_sets(data):
    pools, targets = data
    with pytest.raises(ParamError, match="one target set per pool set"):
        score_pool(_sources(pools), _sources(targets[:2]))
    with pytest.raises(ParamError, match="at least one checkpoint"):
        score_pool([], [])


def test_empty_targets_are_refused(data):
    pools, _ = data
    empty = [np.zeros((0, d), dtype=np.float32) for d in DIMS]
    with pytest.raises(ParamError, match="target sets have no rows"):
        score_pool(_sources(pools), _sources(empty))


def test_subtask_max_needs_subtasks(data):
    pools, targets = data
    with pytest.raises(ParamError, match="needs subtasks"):
        score_pool(_sources(pools), _sources(targets), aggregate="subtask_max")
    with pytest.raises(ParamError, match="12 subtask labels for 11 target rows"):
        score_pool(
            _sources(pools), _sources(targets), aggregate="subtask_max", subtasks=[*SUBTASKS, "x"]
        )
    with pytest.raises(ParamError, match="only used by aggregate='subtask_max'"):
        score_pool(_sources(pools), _sources(targets), aggregate="max", subtasks=SUBTASKS)
    with pytest.raises(ParamError, match="aggregate must be one of"):
        score_pool(_sources(pools), _sources(targets), aggregate="median")


def test_memory_limit_smaller_than_the_targets(data):
    pools, targets = data
    with pytest.raises(ParamError, match=r"the targets alone need .* raise memory_limit"):
        score_pool(_sources(pools), _sources(targets), aggregate="max", memory_limit=4096)


def test_memory_limit_without_room_for_a_row(data):
    """One target row loads in less than one pool row's working set."""
    pools, targets = data
    one = [t[:1] for t in targets]
    resident = sum(4 * d for d in DIMS)
    loading = max(DIMS) * 8
    limit = resident + loading
    with pytest.raises(ParamError, match="no room for one pool row"):
        iter_similarity(_sources(pools), _sources(one), memory_limit=limit)
    per_row = max(DIMS) * (4 + 4) + 3 * 4 + 32
    fits = -(-(resident + per_row) * 6 // 5)
    assert next(iter_similarity(_sources(pools), _sources(one), memory_limit=fits))[1].shape[0] == 1


def test_bad_read_is_reported(data):
    pools, targets = data

    class Short(ArrayRows):
        def read(self, start: int, stop: int) -> np.ndarray:
            return self.array[start : stop - 1]

    chunks = iter_similarity([Short(pools[0])], _sources(targets[:1]), chunk_rows=10)
    with pytest.raises(ParamError, match=r"pool set 0: read\(0, 10\) returned .* \(9, 32\)"):
        next(chunks)


def test_array_rows_needs_a_2d_float_array():
    with pytest.raises(ParamError, match="2-D"):
        ArrayRows(np.zeros(5, dtype=np.float32))
    with pytest.raises(ParamError, match="floating-point"):
        ArrayRows(np.zeros((5, 2), dtype=np.int64))


def test_results_are_on_the_device_in_float32(data):
    pools, targets = data
    start, sims = next(iter_similarity(_sources(pools), _sources(targets), device="cpu"))
    assert start == 0
    assert sims.dtype == torch.float32 and sims.device.type == "cpu"


def test_import_does_not_load_torch():
    code = (
        "import sys; import selectkit.scoring; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_similarity_matrix_is_every_pair_of_a_weighted_sum_of_checkpoints():
    rng = np.random.default_rng(3)
    pools = [rng.normal(size=(37, 16)).astype(np.float32) for _ in range(2)]
    targets = [rng.normal(size=(5, 16)).astype(np.float32) for _ in range(2)]
    matrix = similarity_matrix(
        [ArrayRows(a) for a in pools],
        [ArrayRows(t) for t in targets],
        [0.25, 2.0],
        metric="inner",
        memory_limit=4096,
    )
    expected = 0.25 * pools[0] @ targets[0].T + 2.0 * pools[1] @ targets[1].T
    assert matrix.shape == (37, 5) and matrix.dtype == np.float64
    np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-5)
