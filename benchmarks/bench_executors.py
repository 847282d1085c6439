"""Executor benchmark: one featurize pass in this process, on local worker processes and on Ray
actors, timed side by side in one run, with the bytes of each checked against this process's.

Every backend starts from an empty store. Start-up (starting the workers and loading the model
where the work runs, once per session) is timed apart from the pass (tokenization, extraction and
store writes), and the target is on the pass. On a CPU machine this process already uses every
core, so workers gain little; the target is that their overhead stays small (<= 1.3x this
process's time). On GPUs each worker has a device of its own (or shares one), which is where
the executor pays. Peak memory is the resident set of this process and all its children
(sampled), which for Ray includes its raylet and object store.

Run: ``python benchmarks/bench_executors.py [--model tiny-llama|smollm2] [--records 400]
[--workers 2] [--device cpu|cuda] [--backends inprocess,processes,ray]``. Prints figures beside
their targets with PASS or MISS; always exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import tempfile
import threading
import time
from pathlib import Path

import psutil

from selectkit.api import featurize, load_records_from_list
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.synthetic import make_records
from selectkit.executors import ExecutorConfig, make_executor
from selectkit.features.featurize import FeaturizeConfig
from selectkit.host import get_host
from selectkit.models.loading import ModelOptions
from selectkit.store import FeatureStore

OVERHEAD_TARGET = 1.3


def entry_bytes(entries) -> str:
    digest = hashlib.sha256()
    for entry in entries:
        for path in sorted(entry.path.glob("*.npy")):
            digest.update(path.read_bytes())
    return digest.hexdigest()


class PeakMemory:
    """The largest resident set of this process and its children, sampled every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_backend(kind: str, args, pool, config, root: Path) -> dict:
    """Start-up (the executor, and the model loaded where the work runs: for workers, by a
    pass over a few records) and the timed pass over the whole pool, on an empty store."""
    options = ModelOptions(device=args.device)
    warm = load_records_from_list(make_records(1, seed=9)[: args.workers * args.batch_size])
    with PeakMemory() as memory, contextlib.ExitStack() as stack:
        started = time.perf_counter()
        if kind == "inprocess":
            model = get_host().load_model(args.model, options)
            executor = None
        else:
            settings = ExecutorConfig(executor=kind, workers=args.workers)
            executor = stack.enter_context(make_executor(settings, get_host(), device=args.device))
            model = args.model
            featurize(
                warm, model, config=config, store=FeatureStore(root / f"{kind}-warm"),
                model_options=options, executor=executor, progress=False,
            )  # fmt: skip
        ready = time.perf_counter()
        entries = featurize(
            pool, model, config=config, store=FeatureStore(root / kind),
            model_options=options, executor=executor, progress=False,
        )  # fmt: skip
        done = time.perf_counter()
    return {
        "startup": ready - started,
        "seconds": done - ready,
        "bytes": entry_bytes(entries),
        "peak": memory.peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--backends", default="inprocess,processes,ray")
    args = parser.parse_args()

    families = 10
    rows = make_records(-(-args.records // families), seed=0)[: args.records]
    pool = load_records_from_list(rows, group_field="family")
    config = FeaturizeConfig(
        projection=ProjectionConfig(dim=args.dim), batch_size=args.batch_size, max_length=128
    )
    backends = args.backends.split(",")
    if backends[0] != "inprocess":
        backends.insert(0, "inprocess")
    print(
        f"featurize {len(pool)} records, {args.model} on {args.device}, batch {args.batch_size}, "
        f"dim {args.dim}, {args.workers} workers; {psutil.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as folder:
        results = {kind: run_backend(kind, args, pool, config, Path(folder)) for kind in backends}
    base = results["inprocess"]
    print(f"{'backend':<10} {'start-up':>8} {'pass s':>7} {'ratio':>6} {'peak RSS':>9}  bytes   "
          "target (pass time, bytes)")  # fmt: skip
    for kind, result in results.items():
        ratio = result["seconds"] / base["seconds"]
        same = result["bytes"] == base["bytes"]
        verdict = (
            "" if kind == "inprocess" else ("PASS" if same and ratio <= OVERHEAD_TARGET else "MISS")
        )
        target = "" if kind == "inprocess" else f"<= {OVERHEAD_TARGET}x, same  {verdict}"
        print(
            f"{kind:<10} {result['startup']:8.1f} {result['seconds']:7.1f} {ratio:5.2f}x "
            f"{result['peak'] / 2**30:6.2f} GB  {'same' if same else 'DIFF':<6}  {target}"
        )


if __name__ == "__main__":
    main()
