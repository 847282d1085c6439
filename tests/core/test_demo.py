"""selectkit demo, small: it writes what it says and DSIR finds the target's family."""

from __future__ import annotations

import json

from selectkit.data.synthetic import FAMILIES, make_records
from selectkit.demo import METHODS, TARGET_FAMILY, run_demo


def test_demo_selects_the_target_family_and_writes_outputs(tmp_path):
    lines = []
    results = run_demo(
        tmp_path / "out",
        model="tiny-llama",
        per_family=20,
        target_size=10,
        cache_dir=str(tmp_path / "store"),
        progress=False,
        echo=lines.append,
    )
    shares = {}
    pool_size = 20 * len(FAMILIES)
    for label, selection in results.items():
        assert len(selection) == round(0.05 * pool_size)
        path = tmp_path / "out" / f"{label}.jsonl"
        records = [json.loads(x) for x in path.read_text().splitlines()]
        shares[label] = sum(r["family"] == TARGET_FAMILY for r in records) / len(records)
        assert (tmp_path / "out" / f"{label}.manifest.json").exists()
    # Measured with the tiny random Llama: LESS and DSIR pick only unit conversions (1.0),
    # TracIn 0.5, random 0.1, longest 0.
    assert set(results) == set(METHODS)
    for method in ("less", "dsir"):
        assert shares[method] >= 0.8 > 3 * shares["random"]
    assert shares["less"] > shares["longest"]
    assert (tmp_path / "out" / "scores_by_family.png").stat().st_size > 10_000
    assert any("target share" in line for line in lines)


def test_generator_is_seeded_and_target_avoids_the_pool():
    pool = make_records(20, seed=1)
    assert pool == make_records(20, seed=1)
    assert pool != make_records(20, seed=2)
    target = make_records(20, seed=1, families=["reverse"], id_prefix="target", avoid=pool)
    seen = {(r["input"], r["output"]) for r in pool}
    assert not any((r["input"], r["output"]) in seen for r in target)
    assert {r["family"] for r in pool} == set(FAMILIES)
