"""Selection at scale: ``selectkit select -m random`` and ``-m dsir`` on generated pools of 1M and
10M records, time per record and peak memory side by side.

The pools are alpaca-shaped JSONL (``id``, ``instruction``, ``input``, ``output``, ``source``:
one of 20 groups), about 735 bytes a record as in the issue's measurements (1M records: 735 MB;
10M: 7.3 GB), generated with a fixed seed from a vocabulary of 5,000 made-up words; the DSIR
target is 2,000 records drawn mostly from a tenth of the vocabulary. Every run selects 5% of
the pool with 20 quotas (each group at least 3% and at most 10% of the selection), as
subprocesses of the command line, each with its own cache folder beside the pools:

- ``random (first)``: the first run on a pool, which reads the JSONL into the columnar cache;
- ``random``: the same again, reading the cached pool;
- ``random, hf out``: the same, its selection written as a saved Hugging Face dataset;
- ``dsir``: DSIR toward the target, on the cached pool (hashing on every core).

Each run's CPU time (user and system, of the command and its workers) is printed beside its
wall time: where wall time grows faster than CPU time, the difference is waiting for the disk
(a 10M pool and its cache do not fit in this machine's page cache). Peak memory is of the
whole process tree (the command and DSIR's worker processes): the largest sum of resident set
sizes seen by polling every 50 ms, and, as an upper bound that no poll can
miss, the sum of each process's own high-water mark. Targets: peak under 4 GB for every run at
every size, and the time per record at the largest size no worse than at the smallest (within
10%, for a shared machine's noise). Before this work (the issue's figures, 1M records on this
machine): random 36 s and 2.1 GB, dsir 45 s and 3.2 GB; the 10M pool did not fit.

Run: ``python benchmarks/bench_scale.py [--records 1000000,10000000] [--folder DIR]``; the folder
(default: a new temporary folder) holds the pools and caches (about 3x the JSONL: 23 GB at
10M) and is removed at the end unless ``--keep``. A quick run: ``--records 20000,200000``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GROUPS = [f"g{k:02d}" for k in range(20)]
VOCABULARY = 5000
TARGET_RECORDS = 2000
GIB = 1 << 30
PEAK_TARGET = 4 * GIB
#: Bytes of disk a pool needs per byte of JSONL: the file, its columnar cache (raw records and
#: texts) and the outputs.
DISK_FACTOR = 3.2


def _words(rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 10, size=VOCABULARY)
    return np.array(["".join(rng.choice(letters, size=n)) for n in lengths])


def _texts(rng: np.random.Generator, words: np.ndarray, n: int, length: int, top: int) -> list[str]:
    """``n`` texts of about ``length`` words, drawn from the first ``top`` words (Zipf-like)."""
    sizes = rng.integers(length // 2, length * 3 // 2 + 1, size=n)
    ranks = np.minimum(rng.zipf(1.3, size=int(sizes.sum())) - 1, top - 1)
    picked = words[ranks]
    ends = np.cumsum(sizes)
    return [" ".join(picked[end - size : end]) for end, size in zip(ends, sizes, strict=True)]


def write_pool(path: Path, records: int, seed: int, *, top: int = VOCABULARY) -> int:
    """Write ``records`` alpaca records to ``path``; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    words = _words(np.random.default_rng(0))
    chunk = 100_000
    with open(path, "w", encoding="utf-8") as handle:
        for start in range(0, records, chunk):
            n = min(chunk, records - start)
            instructions = _texts(rng, words, n, 14, top)
            inputs = _texts(rng, words, n, 10, top)
            outputs = _texts(rng, words, n, 82, top)
            groups = rng.integers(0, len(GROUPS), size=n)
            has_input = rng.random(n) < 0.4
            lines = []
            for k in range(n):
                row = {
                    "id": f"{seed}-{start + k}",
                    "instruction": instructions[k],
                    "input": inputs[k] if has_input[k] else "",
                    "output": outputs[k],
                    "source": GROUPS[groups[k]],
                }
                lines.append(json.dumps(row))
            handle.write("\n".join(lines) + "\n")
    return path.stat().st_size


@dataclass
class Run:
    name: str
    records: int
    seconds: float
    cpu: float  # user + system seconds of the command and the children it waited for
    peak: int  # the largest sum of the tree's resident sizes seen
    bound: int  # the sum of each process's high-water mark
    ok: bool
    note: str = ""

    @property
    def per_record_us(self) -> float:
        return 1e6 * self.seconds / self.records


def _hwm(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(args: list[str], name: str, records: int) -> Run:
    """Run ``args``; its time and the peak memory of its process tree."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(process.pid)
    peak = 0
    marks: dict[int, int] = {}
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for proc in tree:
                try:
                    total += proc.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                marks[proc.pid] = max(marks.get(proc.pid, 0), _hwm(proc.pid))
            peak = max(peak, total)
            time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    done.set()
    watcher.join()
    note = "" if process.returncode == 0 else output.strip().splitlines()[-1][:200]
    ok = process.returncode == 0
    return Run(name, records, seconds, cpu, peak, sum(marks.values()), ok, note)


def _select(
    method: str, pool: Path, out: Path, cache: Path, target: Path | None, out_format: str
) -> list[str]:
    quotas = [f"--quota={g}=3%:10%" for g in GROUPS]
    args = [sys.executable, "-m", "selectkit", "select", "-m", method, "--pool", str(pool)]
    args += ["-b", "5%", "--group-by", "source", *quotas, "--out", str(out), "-q"]
    args += ["--out-format", out_format]
    args += ["--cache-dir", str(cache)]
    return args + (["--target", str(target)] if target is not None else [])


def _load() -> str:
    """How busy the machine is: load averages and the cores."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="1000000,10000000", help="pool sizes, comma-separated")
    parser.add_argument("--folder", type=Path, help="where the pools go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the folder at the end")
    options = parser.parse_args()
    sizes = sorted(int(s) for s in options.records.split(","))
    folder = options.folder or Path(tempfile.mkdtemp(prefix="selectkit-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    need = int(DISK_FACTOR * 735 * sum(sizes))
    free = shutil.disk_usage(folder).free
    if free < need:
        sys.exit(f"{folder}: {free / GIB:.1f} GB free, the pools need about {need / GIB:.1f} GB")
    print(f"pools in {folder}; {_load()}")
    runs: list[Run] = []
    try:
        target = folder / "target.jsonl"
        write_pool(target, TARGET_RECORDS, seed=1, top=VOCABULARY // 10)
        for size in sizes:
            pool = folder / f"pool-{size}.jsonl"
            started = time.perf_counter()
            written = write_pool(pool, size, seed=0)
            print(
                f"{size:,} records: {written / 1e6:,.0f} MB of JSONL, generated in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            cache = folder / f"cache-{size}"
            for name, method, goal, out_format in (
                ("random (first)", "random", None, "jsonl"),
                ("random", "random", None, "jsonl"),
                ("random, hf out", "random", None, "hf"),
                ("dsir", "dsir", target, "jsonl"),
            ):
                out = folder / f"out-{size}-{method}-{out_format}"
                run = measure(_select(method, pool, out, cache, goal, out_format), name, size)
                runs.append(run)
                print(
                    f"  {name:15s} {run.seconds:8.1f} s ({run.cpu:7.1f} s CPU)  "
                    f"{run.per_record_us:6.1f} us/record  "
                    f"peak {run.peak / GIB:5.2f} GB (bound {run.bound / GIB:5.2f} GB)  "
                    f"{'' if run.ok else 'FAILED: ' + run.note}  [{_load()}]",
                    flush=True,
                )
            pool.unlink()
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        if not options.keep:
            shutil.rmtree(folder, ignore_errors=True)
    _report(runs, sizes)


def _report(runs: list[Run], sizes: list[int]) -> None:
    print()
    names = list(dict.fromkeys(run.name for run in runs))
    header = "".join(f"{f'{s:,} records':>28s}" for s in sizes)
    print(f"{'us per record / peak GB':24s}{header}   per record, largest vs smallest")
    for name in names:
        cells, by_size = [], {}
        for size in sizes:
            run = next((r for r in runs if r.name == name and r.records == size), None)
            by_size[size] = run
            cells.append(
                f"{run.per_record_us:14.1f} / {run.peak / GIB:5.2f} GB" if run else " " * 28
            )
        first, last = by_size.get(sizes[0]), by_size.get(sizes[-1])
        verdict = ""
        if first and last and len(sizes) > 1:
            ratio = last.per_record_us / first.per_record_us
            verdict = f"{ratio:5.2f}x (target <= 1.10x) {'PASS' if ratio <= 1.10 else 'MISS'}"
        print(f"{name:24s}{''.join(f'{c:>28s}' for c in cells)}   {verdict}")
    worst = max(runs, key=lambda r: r.peak)
    verdict = "PASS" if worst.peak < PEAK_TARGET and all(r.ok for r in runs) else "MISS"
    print(
        f"peak memory of any run: {worst.peak / GIB:.2f} GB ({worst.name}, {worst.records:,} "
        f"records; target < 4 GB) {verdict}"
    )


if __name__ == "__main__":
    main()
