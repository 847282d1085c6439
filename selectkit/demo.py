"""``selectkit demo``: targeted selection on a generated pool, every method side by side.

The gradient methods (LESS, TracIn, TRAK, gradient matching) run on a real model (the bundled
SmolLM2-135M-Instruct by default) with a short LoRA warmup; everything they compute goes to the
feature store, so a second run of the demo reuses it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from selectkit.api import load_records_from_list, select
from selectkit.data.formats import LoadOptions
from selectkit.data.pool import Pool
from selectkit.data.synthetic import make_records
from selectkit.host import get_host
from selectkit.output import SelectionOutputs
from selectkit.params import build_params
from selectkit.publish import Publication, check_paths
from selectkit.selection import Selection

TARGET_FAMILY = "units"
GRADIENT_METHODS = ("less", "tracin", "trak", "gradmatch")
METHODS = (*GRADIENT_METHODS, "dsir", "random", "longest")
PLOTTED = ("less", "tracin", "trak", "dsir")
SCORE_LABELS = {
    "less": "LESS: lr-weighted cosine to the target",
    "tracin": "TracIn: lr-weighted gradient inner product",
    "trak": "TRAK: mean attribution to the target",
    "dsir": "DSIR: importance log-weight",
}


def run_demo(
    out_dir: Path,
    *,
    model: str = "smollm2",
    seed: int = 0,
    per_family: int = 20,
    target_size: int = 20,
    budget: str = "5%",
    cache_dir: str | None = None,
    methods: tuple[str, ...] = METHODS,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Selection]:
    """Write a pool and a target, select from the pool with each method, report and plot.

    Everything the demo writes into ``out_dir`` is published together at the end: a demo
    stopped part-way leaves the previous run's files as they were."""
    check_paths(inputs={}, folders={"--out": out_dir})
    pool_rows = make_records(per_family, seed=seed)
    target_rows = make_records(
        target_size, seed=seed, families=[TARGET_FAMILY], id_prefix="target", avoid=pool_rows
    )
    pool = load_records_from_list(pool_rows, LoadOptions(group_field="family"))
    target = load_records_from_list(target_rows, LoadOptions(group_field="family"))
    with Publication() as outputs:
        _write_jsonl(outputs.file(out_dir / "pool.jsonl"), pool_rows)
        _write_jsonl(outputs.file(out_dir / "target.jsonl"), target_rows)
        files = {
            name: SelectionOutputs(out_dir / f"{name}.jsonl", publication=outputs)
            for name in methods
        }
        plot = out_dir / "scores_by_family.png"
        plot_file = outputs.file(plot)
        gradient_params = {
            "model": model,
            "max_length": 256,
            "warmup.fraction": 0.1,
            "warmup.epochs": 1,
        }
        echo(
            f"pool: {len(pool)} records in {len(set(pool.groups))} task families; "
            f"target: {len(target)} '{TARGET_FAMILY}' examples; budget {budget}; "
            f"gradient methods on {model} (first run: warmup and extraction, then cached)"
        )
        # Every gradient method's pool features come from LESS's pass over the model: each
        # method is told what the others will read.
        host = get_host()
        planned = [
            host.method(name)(build_params(host.method(name).Params, gradient_params, name))
            for name in methods
            if name in GRADIENT_METHODS
        ]
        random_share = pool.groups.count(TARGET_FAMILY) / len(pool)
        echo(f"{'method':<12}{'target share':>14}{'vs random':>11}{'selected':>16}{'time':>9}")
        results: dict[str, Selection] = {}
        for name in methods:
            params = gradient_params if name in GRADIENT_METHODS else {}
            if name == "dsir":
                params = {"sample": "false"}
            started = time.perf_counter()
            selection = select(
                pool,
                name,
                budget,
                target=target,
                params=params,
                seed=seed,
                progress=progress,
                cache_dir=cache_dir,
                host=host,
                alongside=planned if name in GRADIENT_METHODS else (),
            )
            elapsed = time.perf_counter() - started
            share = selection.group_shares(pool).get(TARGET_FAMILY, 0.0)
            cost = selection.manifest["selection"]["cost"]
            echo(
                f"{name:<12}{share:>13.1%}{share / random_share:>10.1f}x"
                f"{cost:>10,} {pool.cost_unit:<5}{elapsed:>8.1f}s"
            )
            files[name].write(selection, pool)
            results[name] = selection
        plotted = {name: results[name] for name in PLOTTED if name in results}
        _plot_scores(plotted, pool, plot_file)
    echo(f"wrote the selections and their manifests to {out_dir}/, the score plot to {plot}")
    return results


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def _plot_scores(selections: dict[str, Selection], pool: Pool, path: Path) -> None:
    """For each method, one box per family of its scores, the target family highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = np.array(pool.groups)
    fig, axes = plt.subplots(1, len(selections), figsize=(5 * len(selections), 4.5), squeeze=False)
    for ax, (name, selection) in zip(axes[0], selections.items(), strict=True):
        scores = selection.scores
        families = sorted(set(pool.groups), key=lambda g: -np.median(scores[groups == g]))
        boxes = ax.boxplot(
            [scores[groups == family] for family in families],
            orientation="horizontal",
            patch_artist=True,
            medianprops={"color": "black"},
        )
        ax.set_yticks(range(1, len(families) + 1), families)
        for box, family in zip(boxes["boxes"], families, strict=True):
            box.set_facecolor("tab:orange" if family == TARGET_FAMILY else "lightgray")
        ax.invert_yaxis()
        ax.set_xlabel(SCORE_LABELS.get(name, "score"))
        ax.set_title(f"{name} (target: {TARGET_FAMILY})")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
