"""Record ids seen so far, held compactly: which are new, and where a repeated one was first used.

A set of ten million ids as Python strings costs about a gigabyte; this index keeps each id's
64-bit hash (XXH3) in sorted runs, merged as they grow (a log-structured merge), with the id's
UTF-8 bytes and first line beside it: about 32 bytes and the id's length per id. Lookups go a
block of ids at a time, vectorized over the runs; two ids whose hashes match are compared as
text, so a hash collision never makes two different ids a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xxhash


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """The XXH3-64 hash of each id's UTF-8 bytes (a lone surrogate kept as its own bytes)."""
    digest = xxhash.xxh3_64_intdigest
    return np.fromiter(
        (digest(i.encode("utf-8", "surrogatepass")) for i in ids), dtype=np.uint64, count=len(ids)
    )


def _line_array(lines: Sequence[int | None]) -> np.ndarray:
    return np.fromiter((-1 if x is None else x for x in lines), dtype=np.int64, count=len(lines))


class _Texts:
    """Ids by registration number, as UTF-8 bytes in blocks (one bytes object and its offsets
    per block), so a few million ids are a few arrays rather than millions of objects."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._blobs: list[bytes] = []
        self._offsets: list[np.ndarray] = []
        self.count = 0

    def add(self, ids: Sequence[str]) -> None:
        encoded = [i.encode("utf-8", "surrogatepass") for i in ids]
        self._starts.append(self.count)
        self._blobs.append(b"".join(encoded))
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        self._offsets.append(np.concatenate(([0], np.cumsum(lengths))))
        self.count += len(ids)

    def get(self, number: int) -> str:
        block = int(np.searchsorted(self._starts, number, side="right")) - 1
        local = number - self._starts[block]
        offsets = self._offsets[block]
        raw = self._blobs[block][offsets[local] : offsets[local + 1]]
        return raw.decode("utf-8", "surrogatepass")


class IdIndex:
    """Ids registered so far, each with the line it was first used on.

    :meth:`check` takes the ids of consecutive rows (a block) and says, for each, the line of
    its first use when it was used before (earlier in the block included); the others are
    registered. Memory grows by about ``32 + len(id)`` bytes per registered id.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, numbers)
        self._lines = np.empty(0, dtype=np.int64)  # first line by number; -1 for none
        self._texts = _Texts()

    def __len__(self) -> int:
        return self._texts.count

    def check(self, ids: Sequence[str], lines: Sequence[int | None]) -> list[int | bool | None]:
        """For each id: ``False`` when it is new (now registered), else the line where it was
        first used (``None`` for a row without a line)."""
        hashes = id_hashes(ids)
        earlier = self._earlier(ids, hashes)
        if not earlier and len(np.unique(hashes)) == len(ids):  # the usual case: all new
            self._register(list(ids), _line_array(lines), hashes)
            return [False] * len(ids)
        found: list[int | bool | None] = []
        in_block: dict[str, int | None] = {}
        new: list[int] = []
        for k, record_id in enumerate(ids):
            if k in earlier:
                found.append(earlier[k])
            elif record_id in in_block:
                found.append(in_block[record_id])
            else:
                in_block[record_id] = lines[k]
                found.append(False)
                new.append(k)
        if new:
            self._register([ids[k] for k in new], _line_array([lines[k] for k in new]), hashes[new])
        return found

    def _earlier(self, ids: Sequence[str], hashes: np.ndarray) -> dict[int, int | None]:
        """Positions in the block whose id was registered before, with its first line."""
        found: dict[int, int | None] = {}
        order = np.argsort(hashes)
        ordered = hashes[order]  # sorted queries: searchsorted walks each run once
        for run, numbers in self._runs:
            left = np.searchsorted(run, ordered, side="left")
            hit = run[np.minimum(left, len(run) - 1)] == ordered
            for j in np.flatnonzero(hit).tolist():
                k = int(order[j])
                stop = int(np.searchsorted(run, ordered[j], side="right"))
                for number in numbers[left[j] : stop].tolist():
                    if self._texts.get(number) == ids[k]:
                        found[k] = self._line(number)
        return found

    def _line(self, number: int) -> int | None:
        line = int(self._lines[number])
        return None if line < 0 else line

    def _register(self, ids: list[str], lines: np.ndarray, hashes: np.ndarray) -> None:
        first = self._texts.count
        self._texts.add(ids)
        self._append_lines(lines)
        numbers = np.arange(first, first + len(ids), dtype=np.int64)
        order = np.argsort(hashes, kind="stable")
        self._runs.append((hashes[order], numbers[order]))
        # Merge while the newest run is at least half the size of the one before it: every
        # id is merged O(log n) times and there are O(log n) runs to search.
        while len(self._runs) > 1 and 2 * len(self._runs[-1][0]) >= len(self._runs[-2][0]):
            (a, na), (b, nb) = self._runs[-2], self._runs.pop()
            merged = np.concatenate((a, b))
            order = np.argsort(merged, kind="stable")
            self._runs[-1] = (merged[order], np.concatenate((na, nb))[order])

    def _append_lines(self, lines: np.ndarray) -> None:
        """Lines by number, in an array that doubles when full."""
        count, needed = self._texts.count - len(lines), self._texts.count
        if needed > len(self._lines):
            grown = np.empty(max(needed, 2 * len(self._lines)), dtype=np.int64)
            grown[:count] = self._lines[:count]
            self._lines = grown
        self._lines[count:needed] = lines
