"""Selecting again with another ``--seed``: everything the first run computed is reused.

`selectkit select -m less` is run twice as a user runs it (a new process each time, one feature
store): first with ``--seed 0`` into an empty store (the warmup and every extraction run), then
the same command with ``--seed 1``. The selection's seed drives only sampling; the warmup and the
projection have their own seeds, so the second run must add no warmup and no store entry and
take a small fraction of the first run's time.

Figure: second run's wall time / first run's, target < 0.10 (issue 14). Printed beside it: the
store entries and warmups each run added (the second must add none), whether the two selections
are the same records (LESS is a deterministic top-k, so they must be), and each run's peak RSS.

Run: ``python benchmarks/bench_reseed.py [--model smollm2] [--per-family 20]
[--warmup-epochs 4] [--warmup-fraction 0.05]``. The default is a LESS run at LESS's own warmup
settings (SmolLM2-135M, 200 records in ten task families, 20 targets, budget 5%, a warmup of 4
epochs on 5% of the pool: four checkpoints); ``--warmup-epochs 1 --warmup-fraction 0.1`` is the
demo's shortened setting. The first run takes minutes on 2 CPU cores. Prints PASS or MISS and
always exits 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selectkit.data.synthetic import make_records
from selectkit.train.warmup import WarmupConfig

TARGET = 0.10


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _run(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one ``selectkit`` process."""
    command = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "selectkit", *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"selectkit {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, int(done.stderr.strip().splitlines()[-1])


def _contents(cache: Path) -> tuple[set[str], set[str]]:
    """The store's entries and the warmup runs beside it."""
    entries = {p.name for p in (cache / "features").glob("[!.]*") if p.is_dir()}
    warmups = {p.name for p in (cache / "warmup").glob("[!.]*") if p.is_dir()}
    return entries, warmups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--per-family", type=int, default=20)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument(
        "--warmup-epochs",
        type=int,
        default=WarmupConfig.epochs,
        help="LESS's warmup by default (4 epochs on 5%%); the demo's is 1 epoch on 10%%",
    )
    parser.add_argument("--warmup-fraction", type=float, default=WarmupConfig.fraction)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_reseed_") as work:
        root = Path(work)
        pool_rows = make_records(args.per_family, seed=0)
        target_rows = make_records(
            args.targets, seed=0, families=["units"], id_prefix="target", avoid=pool_rows
        )
        _write(root / "pool.jsonl", pool_rows)
        _write(root / "target.jsonl", target_rows)
        cache = root / "cache"
        common = [
            "select", "-m", "less", "--pool", str(root / "pool.jsonl"),
            "--target", str(root / "target.jsonl"), "--group-by", "family", "-b", "5%",
            "--cache-dir", str(cache / "features"), "-q",
            "-p", f"model={args.model}", "-p", "max_length=256",
            "-p", f"warmup.fraction={args.warmup_fraction}",
            "-p", f"warmup.epochs={args.warmup_epochs}",
        ]  # fmt: skip
        first_s, first_kib = _run([*common, "--seed", "0", "--out", str(root / "seed0.jsonl")])
        entries, warmups = _contents(cache)
        second_s, second_kib = _run([*common, "--seed", "1", "--out", str(root / "seed1.jsonl")])
        entries_after, warmups_after = _contents(cache)
        same = (root / "seed0.jsonl").read_text() == (root / "seed1.jsonl").read_text()
    ratio = second_s / first_s
    print(
        f"model {args.model}, {len(pool_rows)} pool records, {len(target_rows)} targets, "
        f"warmup: {args.warmup_epochs} epochs on {args.warmup_fraction:g} of the pool"
    )
    print(
        f"first run (--seed 0): {first_s:.1f} s, peak RSS {first_kib / 1024:.0f} MiB, "
        f"{len(entries)} store entries and {len(warmups)} warmup(s) made"
    )
    print(
        f"second run (--seed 1): {second_s:.1f} s, peak RSS {second_kib / 1024:.0f} MiB, "
        f"{len(entries_after - entries)} entries and {len(warmups_after - warmups)} warmups "
        f"added; same selection: {same}"
    )
    reused = entries_after == entries and warmups_after == warmups and same
    verdict = "PASS" if ratio < TARGET and reused else "MISS"
    print(f"second / first: {ratio:.3f} (target < {TARGET:.2f}, nothing recomputed)  {verdict}")


if __name__ == "__main__":
    main()
