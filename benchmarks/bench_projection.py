"""Projection benchmark: per-example gradients of D dims to d in (1024, 4096, 8192), batch 32.

D defaults to the LoRA gradient size of a 4-layer, hidden-256 Llama with r=8 on every linear
layer (q, k, v, o, gate, up, down; 4 heads without grouped KV, intermediate 1024): 188,416.
``--dim 1000000`` runs the million-dimension case (the dense projectors and TRAK then take
minutes per batch on a small CPU).

Prints time per batch and examples/s for ``sjlt``, ``rademacher`` (cached and uncached) and
TRAK's ``BasicProjector`` (via the ``traker`` adapter) in the same run, each one's speed as a
ratio to TRAK's, and the fidelity at d=8192: Spearman of projected vs exact pairwise cosines
over 200 gradient-like vectors (rank-8 shared part plus noise), beside its target >= 0.95 with
PASS or MISS. Reports and always exits 0.

Run: ``python benchmarks/bench_projection.py [--dim D] [--batch 32] [--cache-gib 4]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from selectkit.compute.projectors import (
    DenseProjector,
    Projector,
    SparseJLProjector,
    TrakProjector,
)

FIDELITY_TARGET = 0.95
DIMS = (1024, 4096, 8192)


def lora_gradient_size(
    layers: int = 4, hidden: int = 256, intermediate: int = 1024, rank: int = 8
) -> int:
    """LoRA parameters (A: r x in, B: out x r) on q, k, v, o, gate, up and down of a Llama."""
    attention = 4 * rank * (hidden + hidden)
    mlp = 2 * rank * (hidden + intermediate) + rank * (intermediate + hidden)
    return layers * (attention + mlp)


def per_batch(fn: Callable[[], object]) -> float:
    """Seconds per call: one call, then the median of three more when calls are quick."""
    started = time.perf_counter()
    fn()
    first = time.perf_counter() - started
    if first > 2.0:
        return first
    times = []
    for _ in range(3):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def structured(n: int, dim: int, rank: int = 8, noise: float = 0.6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    basis = torch.randn(rank, dim, generator=gen) / dim**0.5
    return (
        torch.randn(n, rank, generator=gen) @ basis
        + noise * torch.randn(n, dim, generator=gen) / dim**0.5
    )


def cosines(v: torch.Tensor) -> np.ndarray:
    v = v.double()
    v = v / v.norm(dim=1, keepdim=True)
    c = (v @ v.T).numpy()
    return c[np.triu_indices(len(c), k=1)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=lora_gradient_size())
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cache-gib", type=float, default=4.0)
    parser.add_argument("--fidelity-n", type=int, default=200)
    args = parser.parse_args()
    dim, batch = args.dim, args.batch
    budget = int(args.cache_gib * 2**30)
    print(
        f"D={dim:,} (LoRA size of the 4x256 Llama, r=8: {lora_gradient_size():,}), batch {batch}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"rademacher cache budget {args.cache_gib:g} GiB"
    )
    x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0))
    vectors = structured(args.fidelity_n, dim)
    exact = cosines(vectors)
    print(f"{'projector':<22}{'d':>6}{'s/batch':>10}{'examples/s':>12}{'vs traker':>11}  note")
    fidelity: dict[str, float] = {}
    for d in DIMS:
        rows: list[tuple[str, float, str]] = []
        made: dict[str, Projector] = {}

        sj = SparseJLProjector(dim, d, 0)
        made["sjlt"] = sj
        rows.append(("sjlt", per_batch(lambda p=sj: p.project(x)), "count sketch, s=1"))
        sparse = SparseJLProjector(dim, d, 0, method="sparse")
        rows.append(("sjlt (sparse CSR)", per_batch(lambda p=sparse: p.project(x)), ""))

        uncached = DenseProjector(dim, d, 0, max_cached_bytes=0)
        rows.append(("rademacher uncached", per_batch(lambda p=uncached: p.project(x)), ""))
        cached = DenseProjector(dim, d, 0, max_cached_bytes=budget)
        cached.project(x)  # fills the cache
        share = cached.cached_bytes / (dim * d * 4)
        note = "all cached" if share >= 1 else f"{share:.0%} cached (matrix > budget)"
        rows.append(("rademacher cached", per_batch(lambda p=cached: p.project(x)), note))
        made["rademacher"] = cached
        del uncached

        try:
            trak = TrakProjector(dim, d, 0)
        except Exception as exc:  # reported, not fatal
            print(f"traker BasicProjector did not construct: {exc}")
            trak_time = float("nan")
        else:
            made["traker"] = trak
            trak_time = per_batch(lambda p=trak: p.project(x))
            rows.append(("traker BasicProjector", trak_time, "block_size=100"))
        for name, seconds, note in rows:
            ratio = trak_time / seconds
            print(
                f"{name:<22}{d:>6}{seconds:>10.3f}{batch / seconds:>12.1f}{ratio:>10.1f}x  {note}"
            )
        if d == max(DIMS):
            for name, projector in made.items():
                fidelity[name] = spearman(cosines(projector.project(vectors)), exact)
        del made, cached, sj, sparse
    n_pairs = args.fidelity_n * (args.fidelity_n - 1) // 2
    print(
        f"\nfidelity at d={max(DIMS)}: Spearman of projected vs exact cosines, "
        f"{args.fidelity_n} vectors ({n_pairs:,} pairs)"
    )
    for name, rho in fidelity.items():
        verdict = "PASS" if rho >= FIDELITY_TARGET else "MISS"
        print(f"  {name:<20} {rho:.4f}  target >= {FIDELITY_TARGET}  {verdict}")


if __name__ == "__main__":
    main()
