"""Counts, log-ratio and log-weights: the hand formula, determinism, streaming, parallelism."""

from __future__ import annotations

import numpy as np
import pytest
from selectkit_dsir import hashing
from selectkit_dsir.engine import (
    HashedNgrams,
    bucket_log_ratio,
    hashed_counts,
    importance_log_weights,
)

TARGET = [
    "def add(x, y):\n    return x + y",
    "for i in range(10):\n    print(i)",
    "import numpy as np\nx = np.zeros(3)",
]
RAW = [
    "The cat sat on the mat and looked out of the window.",
    "def mul(x, y):\n    return x * y",
    "Stocks fell on Monday as investors weighed the news.",
    "",
    "while True:\n    print(x)",
    "She sells sea shells by the sea shore, said the old rhyme.",
    "x = np.ones(5)  # numpy",
]


def _dense(texts: list[str], num_buckets: int, ngrams: int = 2) -> np.ndarray:
    """Texts-by-buckets count matrix, each text hashed alone (tiny corpora only; the buckets
    themselves are checked against their definition in test_hashing)."""
    matrix = np.zeros((len(texts), num_buckets), dtype=np.int64)
    for i, text in enumerate(texts):
        features = hashing.batch_features([text], num_buckets, ngrams)
        np.add.at(matrix[i], features.unigram_buckets, 1)
        np.add.at(matrix[i], features.bigram_buckets, 1)
    return matrix


@pytest.mark.parametrize("ngrams", [1, 2])
@pytest.mark.parametrize("num_buckets", [13, 10_000])
def test_log_weights_equal_dense_numpy(ngrams: int, num_buckets: int) -> None:
    smoothing = 0.5
    target, raw = _dense(TARGET, num_buckets, ngrams), _dense(RAW, num_buckets, ngrams)
    counts_t, counts_r = target.sum(0), raw.sum(0)
    assert hashed_counts(TARGET, num_buckets, ngrams, n_jobs=1).tolist() == counts_t.tolist()
    assert hashed_counts(RAW, num_buckets, ngrams, n_jobs=1).tolist() == counts_r.tolist()
    p_r = counts_r / counts_r.sum()
    p_t = (1 - smoothing) * counts_t / counts_t.sum() + smoothing * p_r
    log_ratio = np.log(p_t + 1e-8) - np.log(p_r + 1e-8)
    ratio = bucket_log_ratio(counts_t, counts_r, smoothing)
    np.testing.assert_allclose(ratio, log_ratio, rtol=1e-12)
    expected = raw @ log_ratio
    got = importance_log_weights(RAW, ratio, ngrams, n_jobs=1)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert got[3] == 0.0  # no tokens, weight 1


def test_target_like_text_scores_higher() -> None:
    target = hashed_counts(TARGET, 512)
    pool = [
        "def sub(x, y):\n    return x - y",
        "The weather in spring is mild and the gardens bloom.",
        *RAW,
    ]
    ratio = bucket_log_ratio(target, hashed_counts(pool, 512), smoothing=0.1)
    weights = importance_log_weights(pool, ratio)
    assert weights[0] > weights[1] + 10


def test_min_length_gives_minus_infinity() -> None:
    ratio = bucket_log_ratio(hashed_counts(TARGET), hashed_counts(RAW))
    weights = importance_log_weights(RAW, ratio, min_length=12)
    tokens = np.array([len(hashing.tokenize(t)) for t in RAW])
    assert (np.isneginf(weights) == (tokens < 12)).all()
    assert np.isfinite(weights[tokens >= 12]).all() and (tokens >= 12).any()


def _corpus() -> list[str]:
    rng = np.random.default_rng(0)
    words = np.array(
        [
            "alpha",
            "beta",
            "gamma",
            "delta",
            "(",
            ")",
            "{",
            "}",
            ";",
            "=",
            "+",
            "the",
            "of",
            "and",
            "x",
            "y",
            "z",
            "0",
            "1",
            "2",
            "é",
            "ж",
            "😀",
        ]
    )
    texts = []
    for _ in range(300):
        n = int(rng.integers(0, 60))
        texts.append(" ".join(rng.choice(words, n)) + ("" if n % 3 else "\n\tend."))
    return texts


@pytest.mark.parametrize("hashing_name", ["fast", "reference"])
def test_bit_identical_across_jobs_and_chunk_sizes(hashing_name: str) -> None:
    texts = _corpus()
    results = []
    for n_jobs, chunk_size in [(1, 1000), (1, 1), (1, 7), (2, 16), (2, 1000)]:
        with HashedNgrams(
            97,
            2,
            hashing=hashing_name,
            n_jobs=n_jobs,
            chunk_size=chunk_size,
            min_parallel_chars=0,  # start workers even for this small input
        ) as engine:
            counts = engine.counts(texts)
            ratio = bucket_log_ratio(engine.counts(texts[:40]), counts)
            weights = engine.log_weights(iter(texts), ratio, min_length=3)  # no len()
            assert engine.parallel == (n_jobs > 1)
            # End to end, with all, some or none of the raw pass's buckets kept for the second.
            for cache_bytes in (1 << 30, 2000, 0):
                fitted = engine.fit_log_weights(
                    texts[:40], texts, 0.5, min_length=3, cache_bytes=cache_bytes
                )
                assert fitted.tobytes() == weights.tobytes()
        results.append((counts, weights))
    first_counts, first_weights = results[0]
    for counts, weights in results[1:]:
        assert np.array_equal(counts, first_counts)
        assert np.array_equal(weights, first_weights)  # bit for bit, -inf included
        assert weights.tobytes() == first_weights.tobytes()


def test_streams_any_iterable_and_shows_progress(capsys: pytest.CaptureFixture[str]) -> None:
    texts = _corpus()
    expected = hashed_counts(texts, n_jobs=1)
    got = hashed_counts((t for t in texts), n_jobs=1, chunk_size=10, progress=True)
    assert np.array_equal(got, expected)
    assert "300" in capsys.readouterr().err


def test_small_input_stays_in_process() -> None:
    with HashedNgrams(n_jobs=2) as engine:
        engine.counts(TARGET)
        assert not engine.parallel


def test_bad_arguments() -> None:
    counts = hashed_counts(TARGET)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="smoothing"):
            bucket_log_ratio(counts, counts, smoothing=bad)
    with pytest.raises(ValueError, match="at least one n-gram"):
        bucket_log_ratio(np.zeros_like(counts), counts)
    with pytest.raises(ValueError, match="shape"):
        bucket_log_ratio(counts, counts[:10])
    with pytest.raises(ValueError, match="ngrams"):
        hashed_counts(TARGET, ngrams=3)
    with pytest.raises(ValueError, match="n_jobs"):
        hashed_counts(TARGET, n_jobs=-1)
    with pytest.raises(ValueError, match="shape"):
        HashedNgrams(10, n_jobs=1).log_weights(TARGET, np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        importance_log_weights(TARGET, np.full(10, np.nan))
    with pytest.raises(TypeError, match="strings"):
        hashed_counts([b"bytes"])  # type: ignore[list-item]


def test_fit_log_weights_reads_a_stream_once_whatever_the_cache() -> None:
    """Buckets that do not fit in memory go to a temporary file, so the raw texts are read
    once (a generator will do) and the weights are the same bits."""
    texts = _corpus()
    with HashedNgrams(97, n_jobs=1) as engine:
        whole = engine.fit_log_weights(TARGET, iter(texts), cache_bytes=1 << 30)  # all kept
        for cache_bytes in (0, 3000):  # none, or some, in memory
            spilled = engine.fit_log_weights(TARGET, iter(texts), cache_bytes=cache_bytes)
            assert spilled.tobytes() == whole.tobytes()
        with pytest.raises(ValueError, match="no word tokens"):
            engine.fit_log_weights(["", "  \n"], texts)
