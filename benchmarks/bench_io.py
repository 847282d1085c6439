"""Reading a pool and publishing a selection: the two ends of every `selectkit select` run.

Two figures, each a ratio to a floor measured in the same run (the machine is noisy):

1. loading: ``load_pool`` of an alpaca-shaped JSONL pool of ``--records`` records (ids,
   groups, word costs; every record checked, every value made JSON, nesting limited), against
   the floor of reading the same file and ``json.loads``-ing every line, best of ``--repeats``;
   target <= 5x (shaping and checking a record in Python should cost a small multiple of
   parsing it). Peak RSS growth of one load is printed beside the file's size.
2. publishing: ``SelectionOutputs`` writing half the pool's records, a score line per pool record
   and the manifest, reserved up front and published together (fsync of each file and of the
   folder, a journal, the renames), against the floor of writing the same bytes into plain
   files with one fsync each, best of ``--repeats``; target <= 1.5x.

Run: ``python benchmarks/bench_io.py [--records 200000] [--repeats 3]``. Prints every figure
beside its target with PASS or MISS; it reports and always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from selectkit.api import load_pool
from selectkit.data.formats import LoadOptions
from selectkit.output import SelectionOutputs, manifest_path
from selectkit.selection import Selection
from selectkit.solvers.base import Solution

LOAD_TARGET = 5.0
PUBLISH_TARGET = 1.5


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn``'s result and its best wall time over ``repeats`` runs."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return result, best


def write_pool(path: Path, records: int) -> None:
    """Alpaca records of a few dozen words, with a source field and a float in metadata."""
    rng = np.random.default_rng(0)
    words = [f"word{i}" for i in range(5000)]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(records):
            pick = rng.integers(0, len(words), 60)
            row = {
                "id": f"r{i}",
                "instruction": " ".join(words[j] for j in pick[:20]),
                "input": "",
                "output": " ".join(words[j] for j in pick[20:]),
                "source": f"s{i % 20}",
                "meta": {"score": float(rng.random()), "tags": ["a", "b"]},
            }
            handle.write(json.dumps(row) + "\n")


def parse_floor(path: Path) -> int:
    """The floor of loading: read the file and parse every line, nothing else."""
    count = 0
    with open(path, "rb") as handle:
        for line in handle:
            json.loads(line)
            count += 1
    return count


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def selection_of(pool: Any) -> Selection:
    """A selection of every second record, with a manifest of the usual size."""
    indices = np.arange(0, len(pool), 2)
    scores = np.linspace(0, 1, len(pool))
    ids = [pool[int(i)].id for i in indices]
    solution = Solution(indices, float(scores[indices].sum()), "exact", "optimal", len(indices))
    manifest = {
        "selection": {"indices": indices.tolist(), "ids": ids},
        "pool": {"fingerprint": pool.fingerprint, "records": len(pool)},
    }
    return Selection(indices, ids, scores, None, solution, manifest)


def publish_floor(folder: Path, selection: Selection, pool: Any) -> None:
    """The floor of publishing: the same bytes into plain files, one fsync each."""
    outputs = {
        folder / "floor.jsonl": "".join(json.dumps(r.raw) + "\n" for r in selection.records(pool)),
        folder / "floor-scores.jsonl": "".join(
            json.dumps({"index": i, "id": r.id, "group": r.group, "score": float(s)}) + "\n"
            for i, (r, s) in enumerate(zip(pool, selection.scores.tolist(), strict=True))
        ),
        folder / "floor.manifest.json": json.dumps(selection.manifest, indent=2),
    }
    for path, text in outputs.items():
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def publish(folder: Path, selection: Selection, pool: Any) -> list[Path]:
    with SelectionOutputs(folder / "picked.jsonl", folder / "scores.jsonl") as outputs:
        return outputs.write(selection, pool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "pool.jsonl"
        write_pool(path, args.records)
        size = path.stat().st_size / 2**20
        print(f"pool: {args.records:,} alpaca records, {size:.0f} MiB of JSONL")

        options = LoadOptions(group_field="source")
        before = max_rss_mib()
        pool = load_pool(path, options)  # the first load alone, for its memory
        growth = max_rss_mib() - before
        del pool
        _, floor = best_of(args.repeats, lambda: parse_floor(path))
        _, seconds = best_of(args.repeats, lambda: load_pool(path, options))
        pool = load_pool(path, options)
        ratio = seconds / floor
        print(
            f"\n1. load_pool {seconds:.2f} s ({args.records / seconds:,.0f} records/s); reading "
            f"and json.loads alone {floor:.2f} s"
        )
        print(f"   ratio {ratio:.2f}x  target <= {LOAD_TARGET}x  {verdict(ratio <= LOAD_TARGET)}")
        print(f"   peak RSS growth {growth:.0f} MiB for a {size:.0f} MiB file")

        selection = selection_of(pool)
        _, floor = best_of(args.repeats, lambda: publish_floor(folder, selection, pool))
        written, seconds = best_of(args.repeats, lambda: publish(folder, selection, pool))
        assert written[-1] == manifest_path(folder / "picked.jsonl")
        ratio = seconds / floor
        print(
            f"\n2. publishing {len(selection):,} records, {len(pool):,} score lines and the "
            f"manifest: {seconds:.2f} s; plain writes with one fsync each {floor:.2f} s"
        )
        print(
            f"   ratio {ratio:.2f}x  target <= {PUBLISH_TARGET}x  "
            f"{verdict(ratio <= PUBLISH_TARGET)}"
        )


if __name__ == "__main__":
    main()
