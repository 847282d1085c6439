"""Scoring benchmark: cosine similarity of an on-disk float16 pool to a target set, streamed.

Three figures, each measured in this run (the machine is noisy, so speed is a ratio):

1. the machine's float32 matmul peak: ``torch.mm`` of the scoring GEMM's shape,
   ``(peak-rows x dim) @ (dim x targets)``, best of ``--peak-repeats`` run both before and
   after the scoring runs, in GFLOP/s;
2. scoring throughput: ``--rows`` x ``--dim`` pool rows stored as float16 in a temp dir, scored
   by cosine against ``--targets`` rows with ``score_pool(aggregate="max")`` (which needs the
   full similarity matrix), best of ``--repeats``; GFLOP/s = 2·N·M·d / time, as a ratio to the
   peak, target >= 50%. The pool was just written, so it is read from the page cache;
3. peak memory: the same pool scored in a fresh subprocess with ``memory_limit=--cap-mib``; its
   peak RSS growth over the baseline after imports (VmHWM, reset through
   ``/proc/self/clear_refs`` when allowed, else ``ru_maxrss``), target: under the cap. Pool rows
   are read with ``pread`` into fresh buffers, not through a memmap, whose pages would count
   toward RSS;
4. the cost of the row checksums every ``FeatureSet.read`` verifies: the seconds XXH3-64 (the
   store's checksum, seeded with the row's side values) takes over the pool's rows in the
   chunks scoring reads, as a share of the read+score time of figure 2, target <= 10%; and its
   share when the targets are folded into one centroid first (``aggregate="mean"``, LESS's
   case), where scoring is mostly reading, target <= 15%. Beside it, alternatives measured on
   the same rows: CRC-32 (zlib), Adler-32, and a numpy-vectorised sum of the row's 64-bit
   words times odd weights (fast, but two flips of a word's top bit cancel).

Pool and targets are feature-store entries (``FeatureSet``), written block by block and read
in chunks by ``FeatureSet.read``. Reports and always exits 0.

Run: ``python benchmarks/bench_scoring.py [--rows 65536] [--dim 8192] [--targets 1024]
[--cap-mib 256] [--device cpu|cuda]`` (on a GPU, figures 1, 2 and 4 run there; figure 3, peak
host memory, stays on the CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import peak_memory
import torch

from selectkit.rows import RowSource
from selectkit.scoring import score_pool
from selectkit.store import FeatureSet, FeatureStore, Layout, RowStatus, key_id
from selectkit.store.npyfiles import row_checksums

THROUGHPUT_TARGET = 0.50
CHECKSUM_TARGET = 0.10
READ_HEAVY_TARGET = 0.15
WRITE_ROWS = 4096


class RecordedReads:
    """A feature set as a RowSource that remembers its largest read, to report chunk sizes."""

    def __init__(self, features: FeatureSet) -> None:
        self.features = features
        self.num_rows, self.dim, self.dtype = features.num_rows, features.dim, features.dtype
        self.largest_read = 0

    def read(self, start: int, stop: int) -> np.ndarray:
        self.largest_read = max(self.largest_read, stop - start)
        return self.features.read(start, stop)


def feature_source(root: Path, name: str) -> RecordedReads:
    """The store entry written by :func:`write_features` under ``name``."""
    return RecordedReads(FeatureStore(root).get(key_id({"bench_scoring": name})))


def write_features(root: Path, name: str, rows: int, dim: int, seed: int) -> None:
    """A complete float16 store entry of ``rows`` x ``dim`` features (a shared low-rank part
    plus noise), written block by block like the featurizer writes."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((8, dim), dtype=np.float32)
    layout = Layout(rows, dim, "float16", WRITE_ROWS)
    features = FeatureStore(root).open({"bench_scoring": name}, layout)
    for block in range(layout.num_blocks):
        n = len(layout.block_rows_of(block))
        rows_block = rng.standard_normal((n, 8), dtype=np.float32) @ basis
        rows_block += rng.standard_normal((n, dim), dtype=np.float32)
        features.write_block(block, rows_block, np.full(n, RowStatus.DONE, dtype=np.uint8))
    features.finalize()


def synchronize(device: str) -> None:
    """Wait for the device's queued work, so a timer measures it (a no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gflops(rows: int, dim: int, targets: int, repeats: int, device: str = "cpu") -> float:
    """Best float32 ``torch.mm`` GFLOP/s of ``(rows x dim) @ (dim x targets)`` on ``device``."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(rows, dim, generator=gen).to(device)
    b = torch.randn(targets, dim, generator=gen).to(device)
    torch.mm(a, b.T)
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b.T)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * rows * dim * targets / best / 1e9


def read_seconds(source: RowSource, chunk_rows: int) -> float:
    """Seconds to read every row of ``source`` once, ``chunk_rows`` at a time."""
    started = time.perf_counter()
    for start in range(0, source.num_rows, chunk_rows):
        source.read(start, min(start + chunk_rows, source.num_rows))
    return time.perf_counter() - started


def checksum_seconds(source: RowSource, chunk_rows: int) -> dict[str, float]:
    """Seconds each row checksum takes over every row of ``source``, ``chunk_rows`` at a time
    (the rows read first, untimed): the store's XXH3-64 of each row and its status byte, and
    three alternatives."""
    dim_words = source.dim * np.dtype(source.dtype).itemsize // 8
    weights = np.random.default_rng(0).integers(0, 2**62, dim_words, dtype=np.uint64) * 2 + 1
    candidates = {
        "xxh3_64 (used)": lambda rows, status: row_checksums(rows, [status]),
        "crc32": lambda rows, status: [
            zlib.crc32(s, zlib.crc32(r))
            for r, s in zip(rows.view(np.uint8), status.reshape(-1, 1), strict=True)
        ],
        "adler32": lambda rows, status: [zlib.adler32(r) for r in rows.view(np.uint8)],
        "numpy weighted word sum": lambda rows, status: rows.view(np.uint64) @ weights,
    }
    spent = dict.fromkeys(candidates, 0.0)
    for start in range(0, source.num_rows, chunk_rows):
        rows = source.read(start, min(start + chunk_rows, source.num_rows))
        status = np.full(len(rows), RowStatus.DONE, np.uint8)
        for name, checksum in candidates.items():
            started = time.perf_counter()
            checksum(rows, status)
            spent[name] += time.perf_counter() - started
    return spent


def memory_child(root: Path, cap: int) -> None:
    """In a fresh process: score under ``memory_limit=cap``, print peak RSS growth as JSON."""
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))  # BLAS start-up is not scoring memory
    baseline = peak_memory.start()
    pool_source = feature_source(root, "pool")
    targets = [feature_source(root, "targets")]
    scores = score_pool([pool_source], targets, aggregate="max", memory_limit=cap)
    print(
        json.dumps(
            {
                "growth": peak_memory.growth(baseline),
                "baseline": baseline[0],
                "chunk_rows": pool_source.largest_read,
                "method": "VmHWM after clear_refs" if baseline[1] else "ru_maxrss",
                "finite": bool(np.isfinite(scores).all()),
            }
        )
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=65536, help="pool rows")
    parser.add_argument("--dim", type=int, default=8192, help="feature dimension")
    parser.add_argument("--targets", type=int, default=1024, help="target rows")
    parser.add_argument("--cap-mib", type=int, default=256, help="memory cap for figure 3")
    parser.add_argument("--peak-rows", type=int, default=4096, help="rows of the peak GEMM")
    parser.add_argument("--repeats", type=int, default=3, help="scoring runs (best is kept)")
    parser.add_argument("--peak-repeats", type=int, default=5, help="peak GEMMs, twice")
    parser.add_argument("--device", default="cpu", help="where scoring runs (cpu, cuda)")
    parser.add_argument("--child", nargs=2, metavar=("STORE", "CAP"), help="internal")
    args = parser.parse_args()
    if args.child:
        memory_child(Path(args.child[0]), int(args.child[1]))
        return

    n, m, d = args.rows, args.targets, args.dim
    cap = args.cap_mib << 20
    pool_bytes = n * d * 2
    print(
        f"pool {n:,} x {d:,} float16 ({pool_bytes / 2**30:.2f} GiB), {m:,} targets, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, on {args.device}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_scoring_") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        write_features(root, "pool", n, d, seed=1)
        write_features(root, "targets", m, d, seed=2)
        print(f"wrote the features in {time.perf_counter() - started:.1f} s")

        before = peak_gflops(args.peak_rows, d, m, args.peak_repeats, args.device)
        pool = feature_source(root, "pool")
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            scores = score_pool(
                [pool], [feature_source(root, "targets")], aggregate="max", device=args.device
            )
            best = min(best, time.perf_counter() - started)
        after = peak_gflops(args.peak_rows, d, m, args.peak_repeats, args.device)
        peak = max(before, after)
        reading = read_seconds(feature_source(root, "pool"), pool.largest_read)
        print(
            f"\n1. matmul peak, float32 ({args.peak_rows} x {d}) @ ({d} x {m}), best of "
            f"{args.peak_repeats} before and after scoring: {peak:.1f} GFLOP/s "
            f"(before {before:.1f}, after {after:.1f})"
        )
        rate = 2 * n * m * d / best / 1e9
        ratio = rate / peak
        print(
            f"\n2. scoring throughput (cosine, aggregate=max, {pool.largest_read:,} rows per "
            f"chunk), best of {args.repeats}: {best:.2f} s, {rate:.1f} GFLOP/s, "
            f"{n / best:,.0f} rows/s"
        )
        print(
            f"   reading the pool alone (checked) takes {reading:.2f} s of that (warm page cache)"
        )
        print(
            f"   ratio to peak {ratio:.0%}  target >= {THROUGHPUT_TARGET:.0%}  "
            f"{verdict(ratio >= THROUGHPUT_TARGET and bool(np.isfinite(scores).all()))}"
        )

        folded = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            pool_rows = [feature_source(root, "pool")]
            score_pool(
                pool_rows, [feature_source(root, "targets")], aggregate="mean", device=args.device
            )
            folded = min(folded, time.perf_counter() - started)
        spent = checksum_seconds(feature_source(root, "pool"), pool.largest_read)
        gib = pool_bytes / 2**30
        print(
            f"\n4. row checksums over the pool ({gib:.2f} GiB, {pool.largest_read:,} rows per "
            "chunk), verified by every FeatureSet.read:"
        )
        for name, seconds in spent.items():
            print(f"   {name:<24} {seconds:6.2f} s  {gib / seconds:5.2f} GiB/s")
        used = spent["xxh3_64 (used)"]
        share, read_heavy = used / best, used / folded
        print(
            f"   the checksum's share of the read+score time {share:.1%}  target <= "
            f"{CHECKSUM_TARGET:.0%}  {verdict(share <= CHECKSUM_TARGET)}"
        )
        print(
            f"   with aggregate=mean (read+score {folded:.2f} s, mostly reading): "
            f"{read_heavy:.1%}  target <= {READ_HEAVY_TARGET:.0%}  "
            f"{verdict(read_heavy <= READ_HEAVY_TARGET)}"
        )

        child = subprocess.run(
            [sys.executable, __file__, "--child", str(root), str(cap)],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            print(f"\n3. peak memory: the subprocess failed:\n{child.stderr}")
            return
        result = json.loads(child.stdout.strip().splitlines()[-1])
        growth = result["growth"]
        print(
            f"\n3. peak memory, pool {pool_bytes / cap:.1f}x the cap, memory_limit={args.cap_mib} "
            f"MiB ({result['chunk_rows']:,} rows per chunk, {result['method']}):"
        )
        print(
            f"   peak RSS growth {growth / 2**20:.1f} MiB  target < {args.cap_mib} MiB  "
            f"{verdict(growth < cap and result['finite'])}"
        )


if __name__ == "__main__":
    main()
