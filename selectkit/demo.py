"""``selectkit demo``: targeted selection on a generated pool, every method side by side."""

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
from selectkit.output import atomic_writer, write_selection
from selectkit.selection import Selection

TARGET_FAMILY = "units"
METHODS = (("dsir", {"sample": "false"}), ("dsir", {}), ("random", {}), ("longest", {}))


def run_demo(
    out_dir: Path,
    *,
    seed: int = 0,
    per_family: int = 300,
    target_size: int = 20,
    budget: str = "5%",
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
    echo(
        f"pool: {len(pool)} records in {len(set(pool.groups))} task families; "
        f"target: {len(target)} '{TARGET_FAMILY}' examples; budget {budget}"
    )
    random_share = pool.groups.count(TARGET_FAMILY) / len(pool)
    echo(f"{'method':<22}{'target share':>14}{'vs random':>11}{'selected':>16}{'time':>9}")
    results: dict[str, Selection] = {}
    for name, params in METHODS:
        label = name + (
            "" if not params else "(" + ",".join(f"{k}={v}" for k, v in params.items()) + ")"
        )
        started = time.perf_counter()
        selection = select(pool, name, budget, target=target, params=params, seed=seed)
        elapsed = time.perf_counter() - started
        share = selection.group_shares(pool).get(TARGET_FAMILY, 0.0)
        cost = selection.manifest["selection"]["cost"]
        echo(
            f"{label:<22}{share:>13.1%}{share / random_share:>10.1f}x"
            f"{cost:>10,} {pool.cost_unit:<5}{elapsed:>8.2f}s"
        )
        write_selection(selection, pool, out_dir / f"{label}.jsonl")
        results[label] = selection
    plot = _plot_scores(results["dsir(sample=false)"], pool, out_dir / "dsir_scores_by_family.png")
    echo(f"wrote the selections and their manifests to {out_dir}/, the score plot to {plot}")
    return results


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_writer(path) as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def _plot_scores(selection: Selection, pool: Pool, path: Path) -> Path:
    """One box per family of the method's scores, the target family highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = np.array(pool.groups)
    families = sorted(set(pool.groups), key=lambda g: -np.median(selection.scores[groups == g]))
    data = [selection.scores[groups == family] for family in families]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    boxes = ax.boxplot(
        data, orientation="horizontal", patch_artist=True, medianprops={"color": "black"}
    )
    ax.set_yticks(range(1, len(families) + 1), families)
    for box, family in zip(boxes["boxes"], families, strict=True):
        box.set_facecolor("tab:orange" if family == TARGET_FAMILY else "lightgray")
    ax.invert_yaxis()
    ax.set_xlabel("DSIR importance log-weight")
    ax.set_title(f"DSIR scores by task family (target: {TARGET_FAMILY})")
    fig.tight_layout()
    with atomic_writer(path, binary=True) as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return path
