"""How well does each attribution method predict retraining? The linear datamodeling score.

Ground truth: ``--eval-models`` LoRA models of a tiny random Llama, each trained on its own
random half of a generated pool (10 task families), and every model's loss on each target
example (3 held-out records from each of 4 families, so an attribution must tell *which*
records help *which* target). A second, independent set of ``--fit-models`` retrainings (another
seed) is what the regression datamodels are fitted on; LDS is always measured on the held-out
evaluation models.

For TRAK (at its default damping 0.1; at 1 and 10, to show how the ridge moves it; and over 4
independent warmups at damping 0.1 and 10, as the TRAK paper ensembles independently trained
models), the datamodels (TRAK-estimated is TRAK itself; and ridge regression on the fit models),
TracIn, LESS and a random attribution the benchmark prints the LDS (mean over targets of the
Spearman correlation between predicted and measured target loss across the held-out models, ±
its standard error), the LDS of the mean target loss, and the seconds each took (the gradient
methods share one warmup and one feature store, so the first pays for them).
Targets: TRAK's and the regression datamodel's LDS at least 0.1 above random's and beyond two
standard errors of it.

The gradient methods' warmup follows the retraining recipe (the same fraction, epochs and
learning rate), so their checkpoints are models of the kind being predicted. Run:
``python benchmarks/bench_lds.py [--per-family 12] [--eval-models 48] [--fit-models 192]``;
about 5 minutes on 2 CPU cores. ``--model smollm2`` retrains LoRA adapters of SmolLM2-135M
instead (about 50 s per model and epoch on 2 cores: use fewer models, e.g. ``--eval-models 32
--epochs 1 --fit-models 0``; ``--fit-models 0`` leaves the regression datamodel out). Reports and
always exits 0.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from selectkit import load_model
from selectkit.api import evaluate_lds, load_records_from_list
from selectkit.data.synthetic import make_records
from selectkit.models.lora import LoraSpec
from selectkit.retraining import RetrainConfig, retrain
from selectkit.train.finetune import FinetuneConfig

TARGET_FAMILIES = ["units", "reverse", "dates", "acronym"]
MARGIN = 0.1


def pools(per_family: int):
    pool_rows = make_records(per_family, seed=0)
    target_rows = make_records(
        3, seed=1, families=TARGET_FAMILIES, id_prefix="target", avoid=pool_rows
    )
    pool = load_records_from_list(pool_rows, group_field="family")
    target = load_records_from_list(target_rows, group_field="family")
    return pool, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-family", type=int, default=12)
    parser.add_argument("--eval-models", type=int, default=48)
    parser.add_argument("--fit-models", type=int, default=192)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--model", default="tiny-llama", help="e.g. smollm2 (LoRA on SmolLM2)")
    parser.add_argument("--dim", type=int, default=1024, help="projected gradient dimension")
    parser.add_argument("--work-dir", default="", help="keep runs and store here (default: temp)")
    args = parser.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="selectkit-lds-"))
    pool, target = pools(args.per_family)
    loaded = load_model(args.model)
    lora = LoraSpec(r=8, alpha=32.0, target_modules="all-linear")
    training = FinetuneConfig(
        epochs=args.epochs, learning_rate=args.lr, batch_size=8, max_length=128, lora=lora
    )
    print(
        f"pool {len(pool)} records ({args.per_family} per family), target {len(target)} "
        f"({', '.join(TARGET_FAMILIES)}), model {args.model}, subsets of {args.fraction:.0%}, "
        f"{args.epochs} epochs at lr {args.lr}"
    )
    runs = {}
    for name, models, seed in (("eval", args.eval_models, 1), ("fit", args.fit_models, 2)):
        if models == 0:
            continue
        started = time.perf_counter()
        config = RetrainConfig(models=models, fraction=args.fraction, seed=seed, finetune=training)
        runs[name] = retrain(
            pool, target, loaded.model, loaded.tokenizer, work / f"runs-{name}", config
        )
        seconds = time.perf_counter() - started
        print(f"retrained {name}: {runs[name].summary()} in {seconds:.0f} s")

    gradient = {
        "model": args.model,
        "max_length": 128,
        "lora.target_modules": "all-linear",
        "warmup.fraction": args.fraction,
        "warmup.epochs": args.epochs,
        "warmup.learning_rate": args.lr,
        "projection.dim": args.dim,
    }
    methods = [
        ("trak", "trak", gradient),
        ("trak damping=1", "trak", {**gradient, "damping": 1.0}),
        ("trak damping=10", "trak", {**gradient, "damping": 10.0}),
        ("trak warmup.runs=4", "trak", {**gradient, "warmup.runs": 4}),
        ("trak damping=10 warmup.runs=4", "trak", {**gradient, "damping": 10.0, "warmup.runs": 4}),
        (
            "datamodels (regression)",
            "datamodels",
            {"estimator": "regression", "runs": str(work / "runs-fit")},
        ),
        ("tracin", "tracin", gradient),
        ("less", "less", gradient),
        ("random", "random", {}),
    ]
    if "fit" not in runs:
        methods = [method for method in methods if method[1] != "datamodels"]
    results = {}
    width = max(len(label) for label, _, _ in methods)
    print(f"\n{'method':{width}} {'LDS':>15} {'mean-loss LDS':>14} {'seconds':>8}")
    for label, method, params in methods:
        result = evaluate_lds(
            method, pool, target, runs["eval"], params=params, seed=0, cache_dir=work / "features"
        )
        results[label] = result
        print(
            f"{label:{width}} {result.mean:7.3f} ± {result.stderr:5.3f} "
            f"{result.mean_loss:14.3f} {result.seconds:8.1f}"
        )
    random = results["random"]
    print()
    for label in ("trak", "datamodels (regression)"):
        if label not in results:
            continue
        result = results[label]
        gap = result.mean - random.mean
        spread = 2 * np.hypot(result.stderr, random.stderr)
        verdict = "PASS" if gap >= MARGIN and gap > spread else "MISS"
        print(
            f"{label}: LDS {result.mean:.3f} vs random {random.mean:.3f}: +{gap:.3f} "
            f"(target >= +{MARGIN} and > 2 s.e. = {spread:.3f}) {verdict}"
        )
    print(f"\nruns and store in {work}")


if __name__ == "__main__":
    main()
