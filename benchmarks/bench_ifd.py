"""IFD on a real model and real data: does it flag mismatched pairs, and what does it cost?

Pool: ``--records`` Alpaca instructions from ``../shared/data`` (``alpaca-demo``), of which a
share (``--mismatched``, default 20%) get another mismatched record's response, the kind of
pair Cherry LLM's ``IFD > 1`` filter is meant to catch. Model: the bundled SmolLM2-135M-Instruct
(``--model``; ``tiny-llama`` for a quick run), used as it is (Superfiltering's setting).

Prints, from one ``ifd`` selection at ``--budget``:

- quality: the AUC of IFD for telling mismatched from intact pairs (0.5 = chance), the share
  of each kind that the ``IFD > 1`` filter rules out, and how many mismatched records the
  selection keeps. Targets: AUC >= 0.9; the filter rules out most mismatched pairs (> 50%)
  and few intact ones (< 20%).
- speed: the seconds the ``ifd`` selection takes beside the floor, one forward pass over the
  same records with their instructions, in the same run (the model is loaded before both). IFD
  adds a pass over the responses alone, which are shorter; target: at most 2.2x the floor. The
  selection fills a store of its own (a temporary folder); a second selection reads both losses
  from it instead of running the model (informative: what is left is tokenizing and hashing).

Run: ``python benchmarks/bench_ifd.py [--records 200] [--model smollm2]``; about 10 minutes on
2 CPU cores with SmolLM2. Reports and always exits 0.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from selectkit_ifd.method import IFDParams

from selectkit import select
from selectkit.api import load_records_from_list
from selectkit.features.featurize import FeaturizeConfig, tokenize_pool
from selectkit.features.pipeline import GradientPipeline
from selectkit.host import get_host
from selectkit.methods import Context
from selectkit.train.common import pad_token_id
from selectkit.train.evaluate import example_losses

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def alpaca_rows(count: int, mismatched: float, seed: int) -> tuple[list[dict], np.ndarray]:
    """``count`` Alpaca rows, a share of them with responses rotated among themselves."""
    alpaca = json.loads((DATA / "alpaca-demo" / "alpaca_en_demo.json").read_text())
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(alpaca), size=count, replace=False)
    rows = [
        {
            "id": f"alpaca-{i}",
            "instruction": f"{alpaca[i]['instruction']}\n{alpaca[i]['input']}".strip(),
            "output": alpaca[i]["output"],
        }
        for i in picked.tolist()
    ]
    swapped = np.sort(rng.choice(count, size=round(mismatched * count), replace=False))
    outputs = [rows[i]["output"] for i in swapped]
    for position, output in zip(swapped, outputs[1:] + outputs[:1], strict=True):
        rows[position]["output"] = output
    flags = np.zeros(count, dtype=bool)
    flags[swapped] = True
    return rows, flags


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--mismatched", type=float, default=0.2)
    parser.add_argument("--budget", default="10%")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (DATA / "alpaca-demo").is_dir():
        print(f"skipped: {DATA / 'alpaca-demo'} is absent (see README, Data)")
        return
    rows, mismatched = alpaca_rows(args.records, args.mismatched, args.seed)
    pool = load_records_from_list(rows)
    params = {"model": args.model, "max_length": args.max_length}
    print(f"pool {len(pool)} Alpaca records, {int(mismatched.sum())} with a mismatched response")

    # The method's own loader, so that select() below reuses the model it loads here.
    loaded = GradientPipeline(IFDParams(**params), Context(host=get_host())).loaded
    tokens = tokenize_pool(pool, loaded.tokenizer, FeaturizeConfig(max_length=args.max_length))
    started = time.perf_counter()
    example_losses(loaded.model, tokens, pad_token_id(loaded.tokenizer), batch_size=16)
    floor = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        selection = select(pool, "ifd", args.budget, params=params, seed=args.seed, cache_dir=cache)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = select(pool, "ifd", args.budget, params=params, seed=args.seed, cache_dir=cache)
        reread = time.perf_counter() - started
    assert np.array_equal(again.scores, selection.scores)

    ifd = selection.scores
    ruled_out = ifd > 1.0
    print(
        f"IFD median: intact {np.median(ifd[~mismatched]):.3f}, "
        f"mismatched {np.median(ifd[mismatched]):.3f}"
    )
    area = auc(ifd, mismatched)
    print(f"AUC (mismatched vs intact): {area:.3f} (target >= 0.9) {verdict(area >= 0.9)}")
    bad_out, good_out = ruled_out[mismatched].mean(), ruled_out[~mismatched].mean()
    print(
        f"ruled out by IFD > 1: {bad_out:.1%} of mismatched (target > 50%), {good_out:.1%} of "
        f"intact (target < 20%) {verdict(bad_out > 0.5 and good_out < 0.2)}"
    )
    kept = mismatched[selection.indices].mean()
    print(
        f"selection of {len(selection)} ({args.budget}): {kept:.0%} mismatched, against "
        f"{mismatched.mean():.0%} of the pool (informative: the highest IFD under 1 is where "
        "mismatched pairs that slip under the filter sit)"
    )
    ratio = seconds / floor
    print(
        f"ifd {seconds:.1f} s, floor (one forward pass with instructions) {floor:.1f} s: "
        f"{ratio:.2f}x (target <= 2.2x) {verdict(ratio <= 2.2)}"
    )
    print(f"ifd again, reading both losses from the store: {reread:.1f} s (informative)")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


if __name__ == "__main__":
    main()
