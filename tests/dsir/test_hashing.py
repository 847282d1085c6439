"""Tokenizer and hashes: their definitions, stability, and the vectorized path agreeing."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from selectkit_dsir import hashing

MASK = (1 << 64) - 1

TRICKY = [
    "Don't stop!!  Hello, World... foo_bar 3.14",
    "",
    "   ",
    "a",
    "İstanbul ǅ ﬁ straße ΣΑΣ",  # str.lower changes length or case-folds oddly
    "emoji😀x 𝐀𝐁 𠀀 \U00010400",  # astral code points, word and not
    "ctrl\x1cchars\x1f\x85nbsp\xa0ideo\u3000end",  # Unicode whitespace outside ASCII
    "lone \ud800 surrogate",
    "tab\tnew\nline\r\nmixed—dash «quotes» ¿qué?",
    "<a href='x'>code();</a> // comment\n\tif (x != y) { return 0; }",
]


# The documented definitions, written out in plain Python: the vectorized code is checked
# against them.


def _fmix64(value: int) -> int:
    """MurmurHash3's 64-bit finalizer."""
    value &= MASK
    for shift, mult in ((33, 0xFF51AFD7ED558CCD), (33, 0xC4CEB9FE1A85EC53), (33, None)):
        value ^= value >> shift
        if mult is not None:
            value = (value * mult) & MASK
    return value


def _independent_hash(token: str) -> int:
    """A token's hash: Horner's rule from the last code point, then the finalizer."""
    value = 0
    for code in [ord(c) for c in token][::-1]:
        value = (value * 0x100000001B3 + code + 1) % (1 << 64)
    return _fmix64(value)


def _bigram_hash(first: int, second: int) -> int:
    """A bigram's hash, from its two tokens' hashes (order matters)."""
    return _fmix64(first * 0x9E3779B97F4A7C15 + second)


def _plain_buckets(text: str, num_buckets: int, ngrams: int = 2) -> list[int]:
    """Buckets of the unigrams, then the bigrams, of one text under the fast hashing."""
    hashes = [_independent_hash(t) for t in hashing.tokenize(text)]
    buckets = [h % num_buckets for h in hashes]
    if ngrams >= 2:
        buckets += [_bigram_hash(a, b) % num_buckets for a, b in pairwise(hashes)]
    return buckets


def _sha256_bucket(ngram: str, num_buckets: int) -> int:
    """The bucket ``data-selection`` gives an n-gram string (tokens joined by one space): its
    SHA-256 digest read as a big-endian integer, modulo ``num_buckets``."""
    digest = hashlib.sha256(ngram.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest, "big") % num_buckets


def test_tokenizer_is_lowercase_wordpunct() -> None:
    assert hashing.tokenize("Don't stop!! x_1+y") == [
        "don",
        "'",
        "t",
        "stop",
        "!!",
        "x_1",
        "+",
        "y",
    ]
    assert hashing.tokenize("") == []
    for text in TRICKY:
        assert hashing.tokenize(text) == re.findall(r"\w+|[^\w\s]+", text.lower())


def test_tokenizer_matches_nltk_wordpunct() -> None:
    nltk = pytest.importorskip("nltk.tokenize")
    tokenizer = nltk.WordPunctTokenizer()
    for text in TRICKY:
        assert hashing.tokenize(text) == tokenizer.tokenize(text.lower())


def test_hash_known_values() -> None:
    # Regression values: if these change, every stored selection changes.
    assert _independent_hash("the") == 0xB6B0F34B49DE314F
    assert _independent_hash("") == 0
    assert _independent_hash("a") == 0xAC62ED3C7549B674
    first, second = _independent_hash("hello"), _independent_hash("world")
    assert _bigram_hash(first, second) == 0xCEE0F74A86CA3625
    assert _bigram_hash(first, second) != _bigram_hash(second, first)
    assert hashing._scan(["the a", ""]).hashes.tolist() == [
        0xB6B0F34B49DE314F,
        0xAC62ED3C7549B674,
    ]
    features = hashing.batch_features(["Hello world"], 10_000)
    assert features.unigram_buckets.tolist() == [first % 10_000, second % 10_000]
    assert features.bigram_buckets.tolist() == [0xCEE0F74A86CA3625 % 10_000]


def test_vectorized_hashes_match_definition() -> None:
    texts = [*TRICKY, " ".join(TRICKY), "x" * 5000]
    scan = hashing._scan(texts)
    tokens = [hashing.tokenize(t) for t in texts]
    assert scan.hashes.tolist() == [_independent_hash(t) for toks in tokens for t in toks]
    assert scan.per_doc.tolist() == [len(toks) for toks in tokens]
    assert scan.docs.tolist() == [i for i, toks in enumerate(tokens) for _ in toks]


@pytest.mark.parametrize("ngrams", [1, 2])
@pytest.mark.parametrize("num_buckets", [1, 7, 10_000, 2**40 + 15])
def test_batch_features_match_definition(ngrams: int, num_buckets: int) -> None:
    features = hashing.batch_features(TRICKY, num_buckets, ngrams)
    for i, text in enumerate(TRICKY):
        got = features.unigram_buckets[features.unigram_docs == i].tolist()
        got += features.bigram_buckets[features.bigram_docs == i].tolist()
        assert got == _plain_buckets(text, num_buckets, ngrams)
    # Bigrams never span two texts: "a" then "" then "   " contribute none between them.
    n_bigrams = sum(max(len(hashing.tokenize(t)) - 1, 0) for t in TRICKY)
    assert len(features.bigram_buckets) == (n_bigrams if ngrams == 2 else 0)


def test_reference_buckets_are_sha256_of_the_ngram() -> None:
    features = hashing.batch_features(["Hello world!"], 10_000, 2, hashing="reference")
    names = ["hello", "world", "!"]
    assert features.unigram_buckets.tolist() == [_sha256_bucket(t, 10_000) for t in names]
    assert features.bigram_buckets.tolist() == [
        _sha256_bucket("hello world", 10_000),
        _sha256_bucket("world !", 10_000),
    ]


def test_reference_hashing_reproduces_data_selection() -> None:
    ref = pytest.importorskip("data_selection.hashed_ngram_dsir")
    texts = [t for t in TRICKY if "\ud800" not in t]  # the reference cannot encode a surrogate
    for num_buckets in (7, 10_000):
        for ngrams in (1, 2):
            features = hashing.batch_features(texts, num_buckets, ngrams, hashing="reference")
            for i, text in enumerate(texts):
                ours = np.bincount(
                    np.concatenate(
                        [
                            features.unigram_buckets[features.unigram_docs == i],
                            features.bigram_buckets[features.bigram_docs == i],
                        ]
                    ),
                    minlength=num_buckets,
                )
                expected = ref.get_ngram_counts(text, n=ngrams, num_buckets=num_buckets)
                assert ours.tolist() == expected.tolist()


def test_buckets_identical_in_other_processes() -> None:
    """No salted hash(): a fresh interpreter with another hash seed gives the same buckets."""
    text = " ".join(TRICKY[:5])
    here = hashing.batch_features([text], 10_000, 2)
    expected = here.unigram_buckets.tolist() + here.bigram_buckets.tolist()
    plugins = str(Path(hashing.__file__).resolve().parents[1])
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from selectkit_dsir import hashing; "
        "f = hashing.batch_features([sys.argv[2]], 10_000, 2); "
        "print(f.unigram_buckets.tolist() + f.bigram_buckets.tolist())"
    )
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, plugins, text],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == str(expected)


def test_bad_hashing_name() -> None:
    with pytest.raises(ValueError, match="hashing"):
        hashing.batch_features(["x"], 10, 2, hashing="md5")


# Unicode (accents, CJK, astral, a lone surrogate), punctuation runs, repeated n-grams within
# and across texts, and texts without tokens.
REFERENCE_TEXTS = [
    *TRICKY,
    "The cat sat on the mat. The cat sat on the mat!",
    "",
    "naïve café — déjà vu, 東京タワー 😀😀 x²+y² ≠ z²",
    "C'est-à-dire: l'été «très» chaud... C'EST-À-DIRE",
    "x = f(x) + f(y); // the cat sat",
    " \n\t ",
]


def _plain_reference(texts: list[str], num_buckets: int, ngrams: int) -> list[list[int]]:
    """Per text, its unigrams' then its bigrams' buckets: SHA-256 of each n-gram string."""
    buckets = []
    for text in texts:
        tokens = hashing.tokenize(text)
        grams = tokens + ([f"{a} {b}" for a, b in pairwise(tokens)] if ngrams == 2 else [])
        buckets.append([_sha256_bucket(gram, num_buckets) for gram in grams])
    return buckets


def _per_text(features: hashing.BatchFeatures) -> list[list[int]]:
    return [
        features.unigram_buckets[features.unigram_docs == i].tolist()
        + features.bigram_buckets[features.bigram_docs == i].tolist()
        for i in range(len(features.doc_tokens))
    ]


def _batches_of(texts: list[str]) -> list[list[str]]:
    """The texts in three batches, then the first batch again (its n-grams all remembered)."""
    third = len(texts) // 3
    batches = [texts[:third], texts[third : 2 * third], texts[2 * third :]]
    return [*batches, batches[0]]


@pytest.mark.parametrize("ngrams", [1, 2])
@pytest.mark.parametrize("num_buckets", [1, 7, 10_000, 70_000, 2**40 + 15])
def test_reference_buckets_equal_plain_sha256(ngrams: int, num_buckets: int) -> None:
    hashing.clear_caches()
    for batch in _batches_of(REFERENCE_TEXTS):
        features = hashing.batch_features(batch, num_buckets, ngrams, hashing="reference")
        assert _per_text(features) == _plain_reference(batch, num_buckets, ngrams)
        assert features.unigram_buckets.dtype == features.bigram_buckets.dtype == np.int64


def test_reference_table_is_per_number_of_buckets() -> None:
    hashing.clear_caches()
    for num_buckets in (7, 10_000, 7):  # a table left from another num_buckets is not reused
        features = hashing.batch_features(REFERENCE_TEXTS, num_buckets, 2, hashing="reference")
        assert _per_text(features) == _plain_reference(REFERENCE_TEXTS, num_buckets, 2)


@pytest.mark.parametrize("max_entries", [0, 1, 40, 1 << 20])
def test_reference_buckets_with_a_small_table(
    monkeypatch: pytest.MonkeyPatch, max_entries: int
) -> None:
    """A table of a few slots that grows: long probes, wrap-around, a full table (new n-grams
    are then hashed without being remembered). The buckets do not change, and n-grams
    remembered are not hashed again."""
    monkeypatch.setattr(hashing, "_FIRST_SIZE", 16)
    table = hashing._BucketTable(max_entries)
    monkeypatch.setattr(hashing, "_reference_table", table)
    hashed: list[int] = []
    sha256_buckets = hashing.sha256_buckets

    def counting(ngrams: list[bytes], num_buckets: int) -> np.ndarray:
        hashed.append(len(ngrams))
        return sha256_buckets(ngrams, num_buckets)

    monkeypatch.setattr(hashing, "sha256_buckets", counting)
    # First three n-grams, which fit the first 16 slots, then the rest: the table grows.
    texts = ["a b", *(t for t in REFERENCE_TEXTS if t.strip())]
    distinct = {g for t in texts for g in hashing.tokenize(t)}
    distinct |= {f"{a} {b}" for t in texts for a, b in pairwise(hashing.tokenize(t))}
    for batch in [texts[:1], *_batches_of(texts[1:])]:
        features = hashing.batch_features(batch, 10_000, 2, hashing="reference")
        assert _per_text(features) == _plain_reference(batch, 10_000, 2)
    # (Distinct n-grams here have distinct 64-bit keys but for a ~1e-15 accident.)
    assert table.count == min(max_entries, len(distinct))
    assert table.size >= 4 * table.count
    hashed.clear()
    features = hashing.batch_features(texts, 10_000, 2, hashing="reference")
    assert _per_text(features) == _plain_reference(texts, 10_000, 2)
    assert sum(hashed) == len(distinct) - table.count  # only those not remembered


def test_bucket_table_probes_past_colliding_slots() -> None:
    """Keys crafted to share their first slots (and 0, and wrap-around past the last slot),
    looked up many times in one call; ``compute`` sees each absent key once."""
    table = hashing._BucketTable(max_entries=8)  # 32 slots
    table.clear(num_buckets=1000)
    size = table.full_size
    assert size == 32
    distinct = np.array([0, size, 2 * size, size - 1, 2 * size - 1, 3 * size - 1], dtype=np.uint64)
    calls: list[list[int]] = []

    def compute(keys: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        def at(positions: np.ndarray) -> np.ndarray:
            calls.append(sorted(keys[positions].tolist()))
            return (keys[positions] % np.uint64(997)).astype(np.int64)

        return at

    keys = distinct[np.array([0, 1, 2, 1, 3, 4, 5, 0, 5, 2])]
    expected = (keys % np.uint64(997)).astype(np.int64).tolist()
    assert table.buckets(keys, compute(keys)).tolist() == expected
    assert calls == [sorted(distinct.tolist())]
    assert table.count == len(distinct)
    # All remembered now: no call, same buckets, also in another order.
    again = keys[::-1].copy()
    assert table.buckets(again, compute(again)).tolist() == expected[::-1]
    assert len(calls) == 1
    # Three more keys, but room for two: all three computed, two remembered.
    more = np.array([4 * size, 5 * size, 4 * size - 1], dtype=np.uint64)
    assert table.buckets(more, compute(more)).tolist() == (more % np.uint64(997)).tolist()
    assert table.count == 8
    table.buckets(more, compute(more))
    assert len(calls[-1]) == 1  # the one left out is computed again
    table.clear(num_buckets=1000)
    table.buckets(keys, compute(keys))
    assert calls[-1] == sorted(distinct.tolist())


def test_bucket_table_grows_and_keeps_its_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "_FIRST_SIZE", 16)
    table = hashing._BucketTable(max_entries=1000)
    table.clear(num_buckets=1 << 16)
    keys = np.random.default_rng(0).integers(0, 2**64, 800, dtype=np.uint64, endpoint=False)
    computed: list[int] = []

    def compute(batch: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        def at(positions: np.ndarray) -> np.ndarray:
            computed.append(len(positions))
            return (batch[positions] >> np.uint64(48)).astype(np.int64)

        return at

    for batch in (keys[:4], keys[4:300], keys[300:]):  # 16 slots, then 4,096
        table.buckets(batch, compute(batch))
    assert table.size == table.full_size == 4096 and table.count == 800
    assert sum(computed) == 800
    got = table.buckets(keys, compute(keys))
    assert sum(computed) == 800  # all found
    assert got.tolist() == (keys >> np.uint64(48)).tolist()


@pytest.mark.parametrize("num_buckets", [1, 10_000, 2**32, 2**32 + 1, 2**62 + 7])
def test_sha256_buckets_match_the_definition(num_buckets: int) -> None:
    grams = ["the", "hello world", "ǅ ﬁ", "😀", "x", "a" * 200, "lone \ud800"]
    encoded = [g.encode("utf-8", "surrogatepass") for g in grams]
    got = hashing.sha256_buckets(encoded, num_buckets)
    assert got.dtype == np.int64
    assert got.tolist() == [_sha256_bucket(g, num_buckets) for g in grams]
    assert hashing.sha256_buckets([], num_buckets).tolist() == []


def test_distinct_is_unique_with_any_position() -> None:
    values = np.random.default_rng(0).integers(0, 50, 500).astype(np.uint64)
    distinct, positions, inverse = hashing._distinct(values)
    assert distinct.tolist() == np.unique(values).tolist()
    assert (values[positions] == distinct).all()
    assert (distinct[inverse] == values).all()


def test_reference_hashing_of_texts_without_tokens() -> None:
    features = hashing.batch_features(["", " \n ", "!"], 10, 2, hashing="reference")
    assert features.doc_tokens.tolist() == [0, 0, 1]
    assert features.unigram_buckets.tolist() == [_sha256_bucket("!", 10)]
    assert len(features.bigram_buckets) == 0
    empty = hashing.batch_features(["", "  "], 10, 2, hashing="reference")
    assert len(empty.unigram_buckets) == len(empty.bigram_buckets) == 0


def test_fast_hash_collides_on_thue_morse_strings() -> None:
    """The documented limit of the 64-bit keys (and of the fast hash): a polynomial modulo
    2**64 gives the 1,024-letter Thue-Morse string and its complement one hash."""
    bits = [0]
    while len(bits) < 1024:
        bits += [1 - b for b in bits]
    word = "".join("ab"[b] for b in bits)
    other = word.translate(str.maketrans("ab", "ba"))
    assert word != other and _independent_hash(word) == _independent_hash(other)
    first, second = hashing._scan([word, other]).hashes.tolist()
    assert first == second == _independent_hash(word)
