"""Benchmark selectkit's ``dsir`` against the reference implementation on real text.

The reference is ``HashedNgramDSIR`` from the ``data-selection`` package (the DSIR authors'
code; Xie et al. 2023, "Data Selection for Language Models via Importance Resampling"), in
selectkit's ``bench`` extra. Both run on the same files, with all cores, ``num_buckets=10000``,
``ngrams=2`` (unigrams and bigrams) and no minimum example length, and both are timed from the
JSONL files on disk to one log importance weight per pool document:

- reference: ``fit_importance_estimator`` (target and raw bags of n-grams) plus
  ``compute_importance_weights`` (which writes the weights to its cache directory);
- selectkit: reading the JSONL files into Pools plus ``DSIR.objective`` (the scoring alone is
  printed too).

selectkit runs three ways, its default configuration first: its defaults (the ``hashing`` and
``smoothing`` defaults of ``DSIRParams``); the same with ``smoothing=0``, which is exactly the
reference's estimator (log of probabilities plus 1e-8), i.e. the reference's settings; and that
with the other ``hashing``. Only ``hashing=reference``
(the reference's SHA-256 buckets) reproduces the reference's choice: with 10,000 buckets the
top-k moves with the hash's collisions, and on the GSM8K target two of selectkit's own fast
hashes with other constants agree on only about 65% of the top 10%.

The corpus is everything under ``../shared/data`` that is prose or instruction text, about 32k
documents and 23M characters: the Pile toy sample, the C4 and Wikipedia demos, the Alpaca demo,
GSM8K train, the T0 sample and MMLU test questions. Two targets are scored against it: the GSM8K
test questions and 20 Pile Github chunks (every 4th one), both left out of the pool. For each,
the benchmark prints documents per second, the ratio to the reference beside its target (>= 10x)
and the overlap of the deterministic top-10% sets beside its target (>= 0.8, a target at the
reference's settings, so the first row's default smoothing is there for information), each
with PASS/MISS.

Both are given every core (``--n-jobs``; the reference's ``num_proc``): the reference spreads
its passes over them, while selectkit stays in one process below 64M characters, where
starting workers costs more than they save (``MIN_PARALLEL_CHARS``), as here. Timings are single
runs: on a shared machine they vary by 10-25% from run to run, the reference's as much.

Run: ``python benchmarks/bench_dsir.py [--n-jobs N] [--fraction F]`` (about 1.5 minutes on two
cores). Exits 0; prints a message and exits 0 if ``data_selection`` or the data is missing.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from selectkit_dsir.engine import resolve_jobs
from selectkit_dsir.method import DSIR, DSIRParams

from selectkit.data.pool import Pool, Record
from selectkit.host import get_host
from selectkit.methods import Context

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"

SPEED_TARGET = 10.0
OVERLAP_TARGET = 0.8
TARGET_GITHUB_DOCS = 20


@dataclass
class Corpus:
    pool: list[tuple[str, str]]  # (source, text)
    targets: dict[str, list[str]]


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_corpus() -> Corpus:
    """The pool and the two targets, from ``../shared/data``."""
    pool: list[tuple[str, str]] = []
    github: list[str] = []
    seen_github = 0
    for row in _jsonl(DATA / "pile-toy" / "toy_pile_data.jsonl"):
        name = row["metadata"]["pile_set_name"]
        # Every 4th Github chunk: consecutive chunks often come from one file.
        if name == "Github" and seen_github % 4 == 0 and len(github) < TARGET_GITHUB_DOCS:
            github.append(row["contents"])
        else:
            pool.append((f"pile:{name}", row["contents"]))
        seen_github += name == "Github"
    demo = DATA / "alpaca-demo"
    pool += [("c4", row["text"]) for row in _jsonl(demo / "c4_demo.jsonl")]
    with (demo / "wiki_demo.txt").open(encoding="utf-8") as f:
        pool += [("wikipedia", line.strip()) for line in f if line.strip()]
    with (demo / "alpaca_en_demo.json").open(encoding="utf-8") as f:
        alpaca = json.load(f)
    pool += [
        ("alpaca", "\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p))
        for r in alpaca
    ]
    gsm8k = DATA / "gsm8k"
    pool += [("gsm8k", f"{r['question']}\n{r['answer']}") for r in _jsonl(gsm8k / "train.jsonl")]
    pool += [
        ("t0", f"{r['prompt']}\n{r['completion']}") for r in _jsonl(DATA / "t0" / "t0_sample.jsonl")
    ]
    for path in sorted((DATA / "mmlu" / "test").glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                choices = " ".join(row[f"choice{i}"] for i in range(4))
                pool.append(("mmlu", f"{row['question']}\n{choices}"))
    targets = {
        "gsm8k-test": [r["question"] for r in _jsonl(gsm8k / "test.jsonl")],
        "pile-github-20": github,
    }
    return Corpus(pool, targets)


def _write_jsonl(path: Path, texts: list[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}) + "\n")


def _read_pool(path: Path) -> Pool:
    records = [
        Record(id=str(i), prompt="", response=row["text"]) for i, row in enumerate(_jsonl(path))
    ]
    return Pool(records)


def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run_reference(
    pool_path: Path, target_path: Path, n_jobs: int, work: Path, num_buckets: int, ngrams: int
) -> tuple[np.ndarray, float]:
    """Reference log importance weights in pool order, and the seconds they took."""
    from data_selection import HashedNgramDSIR

    cache = work / "reference-cache"
    shutil.rmtree(cache, ignore_errors=True)

    def run() -> np.ndarray:
        dsir = HashedNgramDSIR(
            [str(pool_path)],
            [str(target_path)],
            cache_dir=str(cache),
            num_proc=n_jobs,
            ngrams=ngrams,
            num_buckets=num_buckets,
            min_example_length=0,
        )
        dsir.fit_importance_estimator(num_tokens_to_fit="all")
        dsir.compute_importance_weights()
        # One dataset split into num_proc virtual shards: shard j holds documents j, j+n, ...
        shards = dsir._get_virtually_sharded_datasets([str(pool_path)])
        parts = [
            np.load(dsir.log_importance_weights_dir / f"{s['overall_idx']}.npy") for s in shards
        ]
        weights = np.empty(sum(len(p) for p in parts))
        for shard, part in zip(shards, parts, strict=True):
            weights[shard["shard_idx"] :: shard["num_shards"]] = part
        return weights

    return _timed(run)


def run_selectkit(
    pool_path: Path, target_path: Path, n_jobs: int, params: DSIRParams
) -> tuple[np.ndarray, float, float]:
    """selectkit's log-weights, the seconds from the files (read, build Pools, score) and the
    seconds of the scoring alone."""
    start = time.perf_counter()
    pool, target = _read_pool(pool_path), _read_pool(target_path)
    scoring = time.perf_counter()
    objective = DSIR(params).objective(
        pool, target, Context(host=get_host(), seed=0, n_jobs=n_jobs)
    )
    end = time.perf_counter()
    return objective.values, end - start, end - scoring


def top_k(values: np.ndarray, k: int) -> set[int]:
    """Indices of the k largest values, ties broken by position (deterministic top-k)."""
    return set(np.argsort(-values, kind="stable")[:k].tolist())


def _mix(labels: np.ndarray) -> str:
    names, counts = np.unique(labels, return_counts=True)
    return ", ".join(f"{name} {count}" for name, count in zip(names, counts, strict=True))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=0, help="cores for both (0: all)")
    parser.add_argument("--fraction", type=float, default=0.1, help="top-k fraction of the pool")
    args = parser.parse_args(argv)
    try:
        import data_selection  # noqa: F401
    except ImportError:
        print("SKIP: data_selection is not installed (pip install 'selectkit[bench]')")
        return 0
    if not (DATA / "pile-toy" / "toy_pile_data.jsonl").exists():
        print(f"SKIP: no benchmark data under {DATA.resolve()}")
        return 0

    n_jobs = resolve_jobs(args.n_jobs)
    defaults = DSIRParams(sample=False)
    corpus = load_corpus()
    texts = [text for _, text in corpus.pool]
    sources = np.array([source.split(":")[0] for source, _ in corpus.pool])
    k = max(1, round(args.fraction * len(texts)))
    counts = _mix(sources)
    print(
        f"pool: {len(texts):,} documents, {sum(map(len, texts)) / 1e6:.1f}M characters ({counts})"
    )
    print(
        f"settings for both: num_buckets={defaults.num_buckets} ngrams={defaults.ngrams} "
        f"min_example_length=0, {n_jobs} cores; deterministic top-k, k={k:,} ({args.fraction:.0%})"
    )
    print(
        "the overlap target is at the reference's settings: its smoothing (rows 2 and 3); "
        "row 1 is selectkit's default configuration"
    )
    with tempfile.TemporaryDirectory(prefix="bench-dsir-") as tmp:
        work = Path(tmp)
        pool_path = work / "pool.jsonl"
        _write_jsonl(pool_path, texts)
        for name, target_texts in corpus.targets.items():
            target_path = work / f"{name}.jsonl"
            _write_jsonl(target_path, target_texts)
            print(f"\ntarget {name} ({len(target_texts):,} documents)")
            ref, ref_s = run_reference(
                pool_path, target_path, n_jobs, work, defaults.num_buckets, defaults.ngrams
            )
            ref_rate = len(texts) / ref_s
            ref_top = top_k(ref, k)
            print(f"  {'reference HashedNgramDSIR':<52} {ref_s:7.2f} s {ref_rate:9,.0f} docs/s")
            like_reference = dataclasses.replace(defaults, smoothing=0.0)
            other = "fast" if defaults.hashing == "reference" else "reference"
            own = f"hashing={defaults.hashing} smoothing={defaults.smoothing}"
            runs = {
                f"selectkit defaults ({own})": defaults,
                "selectkit defaults but smoothing=0": like_reference,
                f"selectkit hashing={other} smoothing=0": dataclasses.replace(
                    like_reference, hashing=other
                ),
            }
            tops = {"reference": ref_top}
            for label, params in runs.items():
                ours, ours_s, scoring_s = run_selectkit(pool_path, target_path, n_jobs, params)
                rate = len(texts) / ours_s
                ratio = rate / ref_rate
                tops[label] = ours_top = top_k(ours, k)
                overlap = len(ours_top & ref_top) / k
                print(
                    f"  {label:<52} {ours_s:7.2f} s {rate:9,.0f} docs/s "
                    f"(scoring alone {scoring_s:.2f} s)"
                )
                print(
                    f"      speed {ratio:6.2f}x (target >= {SPEED_TARGET:.0f}x) "
                    f"{verdict(ratio >= SPEED_TARGET)}   top-k overlap {overlap:.3f} "
                    f"(target >= {OVERLAP_TARGET}) {verdict(overlap >= OVERLAP_TARGET)}"
                )
            print("  sources of the top-k:")
            for label, top in tops.items():
                print(f"    {label:<52} {_mix(sources[sorted(top)])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
