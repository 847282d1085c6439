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

from selectkit.api import select
from selectkit.data.formats import LoadOptions
from selectkit.data.load import load_pool
from selectkit.data.pool import Pool
from selectkit.data.synthetic import make_records
from selectkit.output import write_selection
from selectkit.publish import atomic_writer
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
    """Write a pool and a target, select from the pool with each method, report and plot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pool_rows = make_records(per_family, seed=seed)
    target_rows = make_records(
        target_size, seed=seed, families=[TARGET_FAMILY], id_prefix="target", avoid=pool_rows
    )
    pool_file, target_file = out_dir / "pool.jsonl", out_dir / "target.jsonl"
    _write_jsonl(pool_file, pool_rows)
    _write_jsonl(target_file, target_rows)
    pool = load_pool(pool_file, LoadOptions(group_field="family"))
    target = load_pool(target_file, LoadOptions(group_field="family"))
    gradient_params = {
        "model": model,
        "max_length": 256,
        "warmup_fraction": 0.1,
        "warmup_epochs": 1,
        "cache_dir": cache_dir or "",
    }
    echo(
        f"pool: {len(pool)} records in {len(set(pool.groups))} task families; "
        f"target: {len(target)} '{TARGET_FAMILY}' examples; budget {budget}; "
        f"gradient methods on {model} (first run: warmup and extraction, then cached)"
    )
    random_share = pool.groups.count(TARGET_FAMILY) / len(pool)
    echo(f"{'method':<12}{'target share':>14}{'vs random':>11}{'selected':>16}{'time':>9}")
    results: dict[str, Selection] = {}
    for name in methods:
        params = gradient_params if name in GRADIENT_METHODS else {}
        if name == "dsir":
            params = {"sample": "false"}
        started = time.perf_counter()
        selection = select(
            pool, name, budget, target=target, params=params, seed=seed, progress=progress
        )
        elapsed = time.perf_counter() - started
        share = selection.group_shares(pool).get(TARGET_FAMILY, 0.0)
        cost = selection.manifest["selection"]["cost"]
        echo(
            f"{name:<12}{share:>13.1%}{share / random_share:>10.1f}x"
            f"{cost:>10,} {pool.cost_unit:<5}{elapsed:>8.1f}s"
        )
        write_selection(selection, pool, out_dir / f"{name}.jsonl")
        results[name] = selection
    plotted = {name: results[name] for name in PLOTTED if name in results}
    plot = _plot_scores(plotted, pool, out_dir / "scores_by_family.png")
    echo(f"wrote the selections and their manifests to {out_dir}/, the score plot to {plot}")
    return results


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_writer(path) as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def _plot_scores(selections: dict[str, Selection], pool: Pool, path: Path) -> Path:
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
    with atomic_writer(path, binary=True) as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return path
