"""`selectkit select` stopped at random moments of its write step, by SIGTERM, SIGHUP, SIGINT
or SIGKILL: the visible outputs are always the previous selection or the complete new one,
never a mix, and nothing is left behind (after SIGKILL, once the next run has cleared it)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selectkit.publish import clear_stale, is_temporary

NAMES = ("out.jsonl", "scores.jsonl", "out.manifest.json")


@pytest.fixture(scope="module")
def big_pool(tmp_path_factory) -> Path:
    """A pool large enough (about 12 MB) that writing half of it takes a while."""
    folder = tmp_path_factory.mktemp("kills")
    rows = [
        {"id": f"r{i}", "instruction": "word " * (40 + i % 90), "output": "answer " * (50 + i % 70)}
        for i in range(12_000)
    ]
    path = folder / "pool.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _command(pool: Path, folder: Path, seed: int) -> list[str]:
    return [
        sys.executable, "-m", "selectkit", "select", "-m", "random", "--pool", str(pool),
        "--budget", "50%", "--seed", str(seed), "--out", str(folder / "out.jsonl"),
        "--scores-out", str(folder / "scores.jsonl"), "-q",
    ]  # fmt: skip


def _writing_started(folder: Path) -> bool:
    return any(
        p.name.startswith(".out.jsonl.") and is_temporary(p.name) and p.stat().st_size > 0
        for p in folder.iterdir()
    )


def _run_until_writing(command: list[str], folder: Path) -> tuple[subprocess.Popen, float]:
    """Start ``command`` and return once it has begun writing the records, with the time."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while process.poll() is None and not _writing_started(folder):
        time.sleep(0.001)
    return process, time.perf_counter()


def _generation(folder: Path, old: dict[str, bytes], new: dict[str, bytes]) -> str:
    """Which selection the folder shows: "old" or "new"; fails on a mix or a partial file."""
    records, scores = ((folder / name).read_bytes() for name in NAMES[:2])
    manifest = json.loads((folder / NAMES[2]).read_text())
    for label, files in (("old", old), ("new", new)):
        if records == files[NAMES[0]] and scores == files[NAMES[1]]:
            assert manifest["selection"]["ids"] == json.loads(files[NAMES[2]])["selection"]["ids"]
            return label
    raise AssertionError(f"{folder} holds neither the old nor the new selection")


def test_kills_during_the_write_step_never_mix_selections(big_pool, tmp_path):
    generations = {}
    for label, seed in (("old", 1), ("new", 2)):
        folder = tmp_path / label
        folder.mkdir()
        process, began = _run_until_writing(_command(big_pool, folder, seed), folder)
        while not (folder / NAMES[2]).exists() and process.poll() is None:
            time.sleep(0.001)
        window = time.perf_counter() - began  # how long the write step takes here
        assert process.wait() == 0, process.stderr.read()
        generations[label] = {name: (folder / name).read_bytes() for name in NAMES}
    signals = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL] * 3
    # Moments spread evenly over the write step and past its end (a slower trial still ends
    # inside the last ones), dealt to the signals in a seeded order, so the kills cover the
    # writing, the commit and the exit.
    moments = [2.5 * window * k / (len(signals) - 1) for k in range(len(signals))]
    random.Random(0).shuffle(moments)
    seen = []
    for trial, (signum, moment) in enumerate(zip(signals, moments, strict=True)):
        folder = tmp_path / f"trial-{trial}"
        shutil.copytree(tmp_path / "old", folder)
        process, _ = _run_until_writing(_command(big_pool, folder, 2), folder)
        time.sleep(moment)
        process.send_signal(signum)
        status = process.wait()
        if signum == signal.SIGKILL:
            clear_stale(folder)  # what the next run does first
        elif status == 128 + signum:
            assert b"interrupted by" in process.stderr.read()
        else:  # done before the signal, or stopped as the interpreter was exiting
            assert status in (0, -signum), process.stderr.read()
        assert not [p.name for p in folder.iterdir() if is_temporary(p.name)]
        seen.append(_generation(folder, generations["old"], generations["new"]))
    assert "old" in seen, "no kill landed inside the write step; the test did not test it"
    assert "new" in seen, "no run finished; the kills all came too early to test the commit"
