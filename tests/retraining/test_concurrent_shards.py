"""N `selectkit retrain --shard i/N` processes started at the same moment into a new folder,
as the README's `&` example does: every one of them succeeds, round after round, and the run
ends with the bytes of one uninterrupted run (the folder's claim is taken under its lock and
never mistakes another shard's temporary files for a foreign run)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from selectkit.publish import Publication
from selectkit.retraining import load_runs
from selectkit.retraining.runs import MANIFEST_NAME, open_run_folder

from .conftest import outcome_bytes
from .test_cli import write_jsonl

SHARDS = 3
ROUNDS = 2
ARGS = ["--models", "3", "--fraction", "0.5", "--seed", "0", "--model", "tiny-llama",
        "--finetune-max-steps", "1", "--finetune-batch-size", "4", "--finetune-max-length", "64",
        "-q"]  # fmt: skip


def test_shards_started_together_all_succeed(retrain_rows, tmp_path):
    pool_rows, target_rows = retrain_rows
    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows)
    target = write_jsonl(tmp_path / "target.jsonl", target_rows)
    finished = []
    for round_ in range(ROUNDS):
        out = tmp_path / f"run-{round_}"
        command = [sys.executable, "-m", "selectkit", "retrain", str(pool), "--target",
                   str(target), "--out", str(out), *ARGS]  # fmt: skip
        processes = [
            subprocess.Popen(
                [*command, "--shard", f"{i}/{SHARDS}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(SHARDS)
        ]
        for process in processes:
            _, err = process.communicate()
            assert process.returncode == 0, err.decode()
        runs = load_runs(out)
        assert runs.done.all(), runs.summary()
        finished.append(outcome_bytes(out, 3))
    assert all(outcomes == finished[0] for outcomes in finished)


def test_another_shards_temporary_manifest_is_not_a_foreign_run(tmp_path):
    """The race itself, made deterministic: another shard is writing the run's manifest (its
    temporary file exists, locked by it) when this one claims the folder."""
    out = tmp_path / "run"
    other = Publication()
    other.file(out / MANIFEST_NAME).write_text("{")  # half written, by a live writer
    manifest = {"kind": "selectkit.retrain", "pool": {}, "target": {}, "fraction": 0.5,
                "models": 2, "seed": 0, "vary_seed": False, "finetune": {},
                "model": {}}  # fmt: skip
    open_run_folder(out, manifest, np.zeros((2, 4), dtype=bool))
    other.abort()
    assert (out / MANIFEST_NAME).is_file() and (out / "masks.npy").is_file()
