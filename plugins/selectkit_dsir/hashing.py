"""Word tokens and stable hashed n-gram features, vectorized over a batch of texts.

The features are those of DSIR (Xie et al. 2023, "Data Selection for Language Models via
Importance Resampling", NeurIPS): the unigrams and bigrams of a simple word tokenization,
hashed into ``num_buckets`` buckets.

Tokenizer (``tokenize``): the text is lowercased with ``str.lower`` and split into maximal runs
of word characters and maximal runs of other non-space characters, i.e. the regular expression
``\\w+|[^\\w\\s]+`` with Python's Unicode ``\\w`` and ``\\s``. That is the rule of NLTK's
``WordPunctTokenizer``, which the reference implementation (``data-selection``) uses, so the
tokens are the same: ``"Don't stop!!"`` gives ``["don", "'", "t", "stop", "!!"]``.

Hash: a token's code points ``x_0 .. x_{L-1}`` give the
polynomial ``sum_j (x_j + 1) * P**j mod 2**64`` with ``P = 0x100000001B3``, passed through the
MurmurHash3 64-bit finalizer ``fmix64``. A bigram ``(a, b)`` hashes to
``fmix64(h(a) * 0x9E3779B97F4A7C15 + h(b) mod 2**64)``, so bigrams cost two multiplications, not
another string hash. The bucket is the hash modulo ``num_buckets``. Everything is unsigned 64-bit
integer arithmetic, so buckets are identical in every process, run and machine (unlike Python's
salted ``hash()``); they depend only on the Unicode tables of the Python version (``str.lower``,
``\\w``, ``\\s``), exactly as the reference's tokens do.

``hashing="reference"`` buckets an n-gram as the reference does instead: SHA-256 of its
tokens joined by one space, UTF-8 encoded, read as a big-endian integer modulo
``num_buckets``. That costs a SHA-256 per distinct n-gram, not per occurrence: the fast
path still gives every unigram and bigram occurrence its 64-bit hash, which stands in for the
n-gram's string as the key of a per-process table of the buckets already computed (a
vectorized open-addressing hash table, ``_BucketTable``). Only n-grams not in it are hashed,
once per batch: their strings are gathered from the token spans of the batch's joined text
and hashed in one C-level loop (``sha256_buckets``). The buckets are exactly the reference's
unless two distinct n-grams share a 64-bit hash; for ``n`` distinct n-grams that happens with
probability about ``n**2 / 2**65`` (3e-8 for a million, 3% for a billion) on text not crafted
against the hash. (Crafted text can collide: the hash is a polynomial modulo ``2**64``, under
which, e.g., the 1,024-character Thue-Morse string over two letters and its complement do.)
An n-gram whose hash collides takes the bucket of the one the process met first, as if the
two had met in one bucket; only then can results depend on ``n_jobs`` or chunk sizes.

The table keeps at most ``MAX_CACHED_NGRAMS`` (2**20) n-grams per process, in at most 40 MB
(up to 65,535 buckets; 48 MB up to 2**32). Once it is full, n-grams not in it are hashed again in
every batch they occur in, without being remembered: slower, same buckets. On the benchmark
corpus (23M characters, 4.8M tokens, 0.8M distinct unigrams and bigrams) a distinct n-gram
costs about 1 us (half of it the SHA-256) and an occurrence about 30 ns for its lookup, so
``"reference"`` takes about 3x as long as ``"fast"``.

The fast path (``batch_features``) computes the same tokens and hashes without building a Python
string per token: the batch is joined, encoded to UTF-32 and classified code point by code point
with a lookup table; token boundaries are where the class changes, and every token's polynomial
comes from one prefix sum (``P`` is odd, hence invertible modulo ``2**64``). It runs at roughly
100 ns per token on one core, against several microseconds for a per-token string hash.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

TOKEN_PATTERN = r"\w+|[^\w\s]+"
_TOKEN_RE = re.compile(TOKEN_PATTERN)

_P = 0x100000001B3
_P_INV = pow(_P, -1, 1 << 64)
_BIGRAM_MULT = 0x9E3779B97F4A7C15
_FMIX_1 = 0xFF51AFD7ED558CCD
_FMIX_2 = 0xC4CEB9FE1A85EC53

HASHINGS = ("fast", "reference")

# Character classes of the tokenizer.
_SPACE, _WORD, _OTHER = 0, 1, 2
_BMP = 0x10000

_U64 = np.uint64


def tokenize(text: str) -> list[str]:
    """The word tokens of ``text``: lowercase, then ``\\w+|[^\\w\\s]+`` (as NLTK's wordpunct).

    The plain-Python definition of the tokenizer; ``batch_features`` gives the same tokens
    without calling it.
    """
    return _TOKEN_RE.findall(text.lower())


@dataclass(frozen=True)
class BatchFeatures:
    """Hashed n-grams of a batch of texts, one entry per n-gram occurrence.

    ``unigram_docs[i]`` is the batch position of the text whose ``i``-th unigram falls in
    bucket ``unigram_buckets[i]`` (likewise for bigrams); ``doc_tokens`` counts the word tokens
    of each text.
    """

    unigram_buckets: np.ndarray
    unigram_docs: np.ndarray
    bigram_buckets: np.ndarray
    bigram_docs: np.ndarray
    doc_tokens: np.ndarray

    def counts(self, num_buckets: int) -> np.ndarray:
        """Total count per bucket over the batch (int64)."""
        counts = np.bincount(self.unigram_buckets, minlength=num_buckets)
        counts += np.bincount(self.bigram_buckets, minlength=num_buckets)
        return counts.astype(np.int64, copy=False)

    def dot(self, values: np.ndarray) -> np.ndarray:
        """Per text, the sum over its n-grams of ``values[bucket]`` (its counts dotted with
        ``values``), summed in a fixed order: unigrams in text order, then bigrams."""
        n_docs = len(self.doc_tokens)
        out = np.bincount(self.unigram_docs, values[self.unigram_buckets], minlength=n_docs)
        if len(self.bigram_buckets):
            out += np.bincount(self.bigram_docs, values[self.bigram_buckets], minlength=n_docs)
        return out


_classes: np.ndarray | None = None  # per process, built on first use
_astral_classes: dict[int, int] = {}
_powers_cache = (np.ones(1, dtype=_U64), np.ones(1, dtype=_U64))


def _class_of(char: str) -> int:
    if re.fullmatch(r"\s", char):
        return _SPACE
    return _WORD if re.fullmatch(r"\w", char) else _OTHER


def _bmp_classes() -> np.ndarray:
    """Class of every code point below 0x10000, read off the tokenizer's own ``\\w``/``\\s``."""
    global _classes
    if _classes is None:
        every = "".join(map(chr, range(_BMP)))

        def members(pattern: str) -> np.ndarray:
            # Replace non-members by NUL (itself neither \w nor \s), keep members.
            kept = re.sub(pattern, "\0", every).encode("utf-32-le", "surrogatepass")
            return np.frombuffer(kept, dtype="<u4") != 0

        classes = np.full(_BMP, _OTHER, dtype=np.uint8)
        classes[members(r"\W")] = _WORD
        classes[members(r"\S")] = _SPACE
        _classes = classes
    return _classes


def _classify(codes: np.ndarray) -> np.ndarray:
    """Tokenizer class of each code point (0 space, 1 word, 2 other)."""
    table = _bmp_classes()
    if codes.dtype == np.uint8 or not len(codes) or int(codes.max()) < _BMP:
        return np.take(table, codes)
    high = codes >= _BMP
    classes = np.take(table, np.where(high, 0, codes))
    astral = codes[high]
    cache = _astral_classes
    for code in np.unique(astral).tolist():
        if code not in cache:
            cache[code] = _class_of(chr(code))
    lookup = np.fromiter((cache[c] for c in astral.tolist()), dtype=np.uint8, count=len(astral))
    classes[high] = lookup
    return classes


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``P**i`` and ``P**-i`` modulo 2**64 for ``i < n`` (cached, grown by doubling)."""
    global _powers_cache
    if len(_powers_cache[0]) < n:
        size = max(n, 2 * len(_powers_cache[0]))
        with np.errstate(over="ignore"):
            base = np.full(size, _P, dtype=_U64)
            base[0] = 1
            powers = np.cumprod(base, dtype=_U64)
            base[1:] = _P_INV
            _powers_cache = (powers, np.cumprod(base, dtype=_U64))
    powers, inverse = _powers_cache
    return powers[:n], inverse[:n]


def _fmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> _U64(33))
    x *= _U64(_FMIX_1)
    x ^= x >> _U64(33)
    x *= _U64(_FMIX_2)
    x ^= x >> _U64(33)
    return x


@dataclass(frozen=True)
class _Scan:
    """A tokenized batch: the joined lowercased text's code points (uint8 if it is ASCII,
    else uint32), token spans, hashes and owners."""

    codes: np.ndarray
    starts: np.ndarray
    stops: np.ndarray
    hashes: np.ndarray
    docs: np.ndarray
    per_doc: np.ndarray


def _scan(texts: Sequence[str]) -> _Scan:
    lowered = [t.lower() for t in texts]
    # Texts are joined by a space, so no token spans two texts.
    joined = " ".join(lowered)
    if joined.isascii():  # O(1) in CPython; one byte per code point is faster from here on
        codes = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    else:
        codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    n = len(codes)
    classes = _classify(codes)
    changes = np.empty(n + 1, dtype=bool)
    changes[0] = changes[n] = True
    np.not_equal(classes[1:], classes[:-1], out=changes[1:n])
    in_token = classes != _SPACE
    starts = np.flatnonzero(changes[:n] & in_token)
    stops = np.flatnonzero(changes[1:] & in_token) + 1  # exclusive
    powers, inverse_powers = _powers(n)
    # prefix[i] = sum_{k < i} (codes[k] + 1) * P**k, so a token's polynomial is
    # (prefix[stop] - prefix[start]) * P**-start, all modulo 2**64.
    prefix = np.empty(n + 1, dtype=_U64)
    prefix[0] = 0
    with np.errstate(over="ignore"):
        np.add(codes, 1, out=prefix[1:], dtype=_U64)
        np.multiply(prefix[1:], powers, out=prefix[1:])
        np.cumsum(prefix, out=prefix)
        hashes = _fmix64((prefix[stops] - prefix[starts]) * inverse_powers[starts])
    # The first code point of every text, then its first token: texts own consecutive tokens.
    lengths = np.fromiter(map(len, lowered), dtype=np.int64, count=len(lowered))
    doc_starts = np.zeros(len(lowered), dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=doc_starts[1:])
    first_token = np.searchsorted(starts, doc_starts)
    per_doc = np.diff(first_token, append=len(starts))
    docs = np.repeat(np.arange(len(lowered), dtype=np.int64), per_doc)
    return _Scan(codes, starts, stops, hashes, docs, per_doc)


try:  # CPython's own SHA-256 (3.11: _sha256, 3.12+: _sha2) costs less per short message
    from _sha256 import sha256 as _sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - other Python versions or builds
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[import-not-found,no-redef]
    except ImportError:
        _sha256 = hashlib.sha256  # type: ignore[assignment]
_sha256_digest = type(_sha256()).digest


def sha256_buckets(ngrams: list[bytes], num_buckets: int) -> np.ndarray:
    """The reference buckets of many UTF-8 encoded n-grams at once: each one's SHA-256 digest
    read as a big-endian integer, modulo ``num_buckets`` (int64; ``num_buckets`` below
    ``2**63``).

    The per-message work is two C calls (no Python bytecode per n-gram); the 256-bit digests
    are reduced modulo ``num_buckets`` with vectorized Horner steps on 32-bit words.
    """
    digests = b"".join(map(_sha256_digest, map(_sha256, ngrams)))
    if num_buckets > 1 << 32:  # rest << 32 below would overflow: Python integers instead
        ints = (int.from_bytes(digests[i : i + 32], "big") for i in range(0, len(digests), 32))
        return np.array([value % num_buckets for value in ints], dtype=np.int64)
    words = np.frombuffer(digests, dtype=">u4").reshape(-1, 8).astype(_U64)
    modulus = _U64(num_buckets)
    rest = words[:, 0] % modulus
    for column in range(1, 8):
        # rest < num_buckets <= 2**32, so rest * 2**32 + word < 2**64.
        rest = ((rest << _U64(32)) | words[:, column]) % modulus
    return rest.astype(np.int64)


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(values, return_index=True, return_inverse=True)``, but with any one
    position of each distinct value (a quicksort, about twice as fast as the stable sort
    ``np.unique`` needs for the first positions)."""
    order = np.argsort(values)
    ordered = values[order]
    starts = np.empty(len(values), dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    inverse = np.empty(len(values), dtype=np.intp)
    inverse[order] = np.cumsum(starts) - 1
    return ordered[starts], order[starts], inverse


# Reference buckets remembered per process: at most this many n-grams, with at least _LOAD
# table slots each (10 bytes a slot below 65,536 buckets: 40 MB when full).
MAX_CACHED_NGRAMS = 1 << 20
_LOAD = 4
_FIRST_SIZE = 1 << 18  # slots at first; then the table grows once, to its full size


class _BucketTable:
    """Reference buckets already computed in this process, keyed by the fast 64-bit n-gram
    hash: a vectorized open-addressing (linear probing) hash table, at most a quarter full.
    Slot ``i`` holds a key in ``keys[i]`` and its bucket + 1 in ``values[i]`` (0: empty, so
    any key value is valid). A key's first slot is its low bits (``fmix64`` output, well
    mixed).

    Holds at most ``max_entries`` keys; n-grams met once it is full are hashed without being
    remembered, so later batches hash them again (slower, same buckets).
    """

    def __init__(self, max_entries: int = MAX_CACHED_NGRAMS) -> None:
        self.max_entries = max_entries
        self.full_size = 1 << (_LOAD * max(max_entries, 1) - 1).bit_length()
        self.lock = threading.Lock()
        self.clear()

    def clear(self, num_buckets: int = 0) -> None:
        """Forget every entry and free the memory; new entries will be for ``num_buckets``."""
        self.num_buckets = num_buckets
        self.size = 0
        self.keys = np.zeros(0, dtype=_U64)
        self.values = np.zeros(0, dtype=np.min_scalar_type(num_buckets))
        self.count = 0

    def buckets(self, keys: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The bucket of every key (int64). ``compute(positions)`` gives the buckets of the
        keys at ``positions`` (distinct keys); it is called once, for the keys not in the
        table, which are then added while there is room."""
        if not self.size:
            self._resize(min(_FIRST_SIZE, self.full_size))
        found, slots = self._lookup(keys)
        missing = np.flatnonzero(found < 0)
        if len(missing):
            new, first, inverse = _distinct(keys[missing])
            at = missing[first]
            buckets = compute(at)
            found[missing] = buckets[inverse]
            room = self.max_entries - self.count
            new, buckets, slots = new[:room], buckets[:room], slots[at[:room]]
            if _LOAD * (self.count + len(new)) > self.size:
                self._resize(self.full_size)
                slots = (new & _U64(self.size - 1)).view(np.intp)
            self._place(new, buckets + 1, slots)
        return found

    def _resize(self, size: int) -> None:
        """Move the entries to a table of ``size`` slots (zeros: the OS maps its pages as
        they are written)."""
        used = np.flatnonzero(self.values)
        keys, values = self.keys[used], self.values[used]
        self.keys = np.zeros(size, dtype=_U64)
        self.values = np.zeros(size, dtype=values.dtype)
        self.size, self.count = size, 0
        self._place(keys, values, (keys & _U64(size - 1)).view(np.intp))

    def _lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bucket of every key (int64, -1 where absent), and the slot where each key is, or
        for an absent key the empty slot its probe ended at (where ``_place`` starts)."""
        table_keys, table_values = self.keys, self.values
        slots = (keys & _U64(self.size - 1)).view(np.intp)
        # Buckets, -1 at empty slots; probe on where the slot holds another key. (Key 0
        # meeting an empty slot's zeros is absent all the same.)
        found = np.subtract(np.take(table_values, slots), 1, dtype=np.int64)
        pending = np.flatnonzero(np.take(table_keys, slots) != keys)
        if len(pending):
            found[pending] = -1
            mask = self.size - 1
            at = slots[pending]
            while len(pending):
                values = np.take(table_values, at)
                ended = values == 0
                slots[pending[ended]] = at[ended]
                match = np.take(table_keys, at) == keys[pending]
                found[pending[match]] = values[match].astype(np.int64) - 1
                on = ~(match | ended)
                pending, at = pending[on], (at[on] + 1) & mask
        return found, slots

    def _place(self, keys: np.ndarray, values: np.ndarray, slots: np.ndarray) -> None:
        """Write distinct absent keys and their values (bucket + 1), each probing on from its
        slot in ``slots``."""
        table_keys, table_values = self.keys, self.values
        mask = self.size - 1
        pending = np.arange(len(keys))
        while len(pending):
            free = np.flatnonzero(np.take(table_values, slots) == 0)
            takers, taken = pending[free], slots[free]
            # Of several keys writing one free slot, one key stays (keys are distinct).
            table_keys[taken] = keys[takers]
            won = np.take(table_keys, taken) == keys[takers]
            table_values[taken[won]] = values[takers[won]]
            left = np.ones(len(pending), dtype=bool)
            left[free[won]] = False
            pending, slots = pending[left], (slots[left] + 1) & mask
        self.count += len(keys)


_reference_table = _BucketTable()


def clear_caches() -> None:
    """Free this process's table of reference buckets (up to 40 MB)."""
    with _reference_table.lock:
        _reference_table.clear()


def _ngram_bytes(codes: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> list[bytes]:
    """The UTF-8 strings of n-grams given as token spans in ``codes`` (the joined text's code
    points): ``starts``/``stops`` have one row per n-gram and one column per token (a bigram's
    second span is empty for a unigram); the tokens are joined by one space.

    Built with one vectorized gather: the n-grams, each followed by a newline (which no token
    contains), are gathered into one buffer, encoded once and split.
    """
    count = len(starts)
    space, newline = len(codes), len(codes) + 1
    source = np.concatenate([codes, np.array([32, 10], dtype=codes.dtype)])
    lengths = stops - starts
    # Per n-gram four pieces: first token, a space (bigrams only), second token, newline.
    piece_starts = np.empty((count, 4), dtype=np.int64)
    piece_lengths = np.empty((count, 4), dtype=np.int64)
    piece_starts[:, 0], piece_lengths[:, 0] = starts[:, 0], lengths[:, 0]
    piece_starts[:, 1], piece_lengths[:, 1] = space, lengths[:, 1] > 0
    piece_starts[:, 2], piece_lengths[:, 2] = starts[:, 1], lengths[:, 1]
    piece_starts[:, 3], piece_lengths[:, 3] = newline, 1
    piece_starts, piece_lengths = piece_starts.ravel(), piece_lengths.ravel()
    offsets = np.cumsum(piece_lengths) - piece_lengths  # where each piece starts in the buffer
    gather = np.repeat(piece_starts - offsets, piece_lengths)
    gather += np.arange(len(gather))
    buffer = source[gather].tobytes()
    if codes.dtype != np.uint8:  # UTF-32 code points; ASCII bytes are already UTF-8
        buffer = buffer.decode("utf-32-le", "surrogatepass").encode("utf-8", "surrogatepass")
    pieces = buffer.split(b"\n")
    pieces.pop()  # after the last newline
    return pieces


def _reference_buckets(
    keys: np.ndarray,
    spans: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    codes: np.ndarray,
    num_buckets: int,
) -> np.ndarray:
    """Reference bucket of every n-gram occurrence, hashing each distinct n-gram once.

    ``keys`` are the occurrences' fast 64-bit hashes; ``spans(positions)`` gives the token
    spans of the occurrences at those positions (as ``_ngram_bytes`` takes them).
    """
    table = _reference_table

    def compute(at: np.ndarray) -> np.ndarray:
        return sha256_buckets(_ngram_bytes(codes, *spans(at)), num_buckets)

    with table.lock:
        if table.num_buckets != num_buckets:
            table.clear(num_buckets)
        return table.buckets(keys, compute)


def batch_features(
    texts: Sequence[str], num_buckets: int, ngrams: int = 2, hashing: str = "fast"
) -> BatchFeatures:
    """Hashed unigram (and, for ``ngrams=2``, bigram) buckets of every text in a batch.

    ``hashing="fast"`` buckets by the 64-bit token and bigram hashes; ``"reference"`` by the
    SHA-256 of each n-gram's string, reproducing ``data-selection``'s buckets exactly (about 3x
    slower: one SHA-256 per distinct n-gram, see the module docstring). Bigrams never span two
    texts. Memory is a few dozen bytes per character of the batch, so callers feed batches of
    bounded size (``selectkit_dsir.engine``).
    """
    if hashing not in HASHINGS:
        raise ValueError(f"hashing must be one of {list(HASHINGS)}, not {hashing!r}")
    scan = _scan(texts)
    hashes, docs = scan.hashes, scan.docs
    if ngrams >= 2 and len(hashes) > 1:
        firsts = np.flatnonzero(docs[1:] == docs[:-1])  # bigram i is tokens firsts[i], +1
        with np.errstate(over="ignore"):
            pairs = _fmix64(hashes[firsts] * _U64(_BIGRAM_MULT) + hashes[firsts + 1])
        bigram_docs = docs[firsts]
    else:
        firsts = np.zeros(0, dtype=np.int64)
        pairs = np.zeros(0, dtype=_U64)
        bigram_docs = np.zeros(0, dtype=np.int64)
    if hashing == "reference":
        n_tokens = len(hashes)

        def spans(at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # Positions below n_tokens are unigrams (token ``at``), the others bigrams.
            first = at.copy()
            bigram = at >= n_tokens
            first[bigram] = firsts[at[bigram] - n_tokens]
            second = first[bigram] + 1
            starts = np.zeros((len(at), 2), dtype=np.int64)
            stops = np.zeros((len(at), 2), dtype=np.int64)
            starts[:, 0], stops[:, 0] = scan.starts[first], scan.stops[first]
            starts[bigram, 1], stops[bigram, 1] = scan.starts[second], scan.stops[second]
            return starts, stops

        buckets = _reference_buckets(
            np.concatenate([hashes, pairs]), spans, scan.codes, num_buckets
        )
        unigrams, bigrams = buckets[:n_tokens], buckets[n_tokens:]
    else:
        modulus = _U64(num_buckets)
        unigrams = (hashes % modulus).astype(np.int64)
        bigrams = (pairs % modulus).astype(np.int64)
    return BatchFeatures(unigrams, docs, bigrams, bigram_docs, scan.per_doc)
