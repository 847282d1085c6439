"""Every command that writes: outputs never over an input, all of them or none, an empty
selection refused, normal file modes, and clear errors for paths that cannot be written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from selectkit.cli import cli

ROWS = [
    {"id": f"r{i}", "instruction": "word " * (3 + i % 5), "output": "answer " * (2 + i % 7),
     "src": "ab"[i % 2]}
    for i in range(40)
]  # fmt: skip


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder with a pool and a target; tests run inside it."""
    monkeypatch.chdir(tmp_path)
    Path("pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    Path("target.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:5]))
    return tmp_path


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def refused(result, *phrases):
    """Exit 2 with one `error:` line that holds every phrase, and no traceback."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for phrase in phrases:
        assert phrase in errors[0], result.output
    return errors[0]


SELECT = ["select", "-m", "random", "--pool", "pool.jsonl", "--budget", "3"]


@pytest.mark.parametrize(
    "extra, phrase",
    [
        (["--out", "pool.jsonl"], "--out (pool.jsonl) is the input --pool"),
        (["--target", "target.jsonl", "--out", "target.jsonl"], "is the input --target"),
        (["--out", "o.jsonl", "--scores-out", "pool.jsonl"], "--scores-out (pool.jsonl) is the"),
        (["--out", "o.jsonl", "--scores-out", "o.jsonl"], "are the same path"),
        (["--out", "o.jsonl", "--scores-out", "o.manifest.json"], "are the same path"),
        (["--out", "link.jsonl"], "--out (link.jsonl) is the input --pool"),
        (["--out", ""], "--out is empty"),
    ],
)
def test_select_refuses_outputs_over_inputs(work, extra, phrase):
    Path("link.jsonl").symlink_to("pool.jsonl")
    before = snapshot(work)
    refused(run(*SELECT, *extra), phrase)
    assert snapshot(work) == before


def test_a_pool_named_like_the_manifest_is_not_overwritten(work):
    Path("X.manifest.json").write_text(Path("pool.jsonl").read_text())
    before = snapshot(work)
    args = ["select", "-m", "random", "--pool", "X.manifest.json", "--format", "jsonl"]
    refused(run(*args, "--budget", "3", "--out", "X.jsonl"), "its manifest (X.manifest.json)")
    assert snapshot(work) == before


def test_an_unpublishable_manifest_leaves_the_previous_selection(work):
    assert run(*SELECT, "--out", "out.jsonl", "--seed", "1").exit_code == 0
    Path("out.manifest.json").unlink()
    Path("out.manifest.json").mkdir()
    before = snapshot(work)
    refused(run(*SELECT, "--out", "out.jsonl", "--scores-out", "s.jsonl"), "is a folder")
    assert snapshot(work) == before


def test_an_empty_selection_is_refused_unless_asked_for(work):
    assert run(*SELECT, "--out", "out.jsonl").exit_code == 0
    before = snapshot(work)
    tiny = ["select", "-m", "random", "--pool", "pool.jsonl", "--budget", "4tok"]  # costs >= 5
    refused(run(*tiny, "--out", "out.jsonl"), "smaller than every record", "--allow-empty")
    assert snapshot(work) == before
    result = run(*tiny, "--out", "out.jsonl", "--allow-empty")
    assert result.exit_code == 0, result.output
    assert Path("out.jsonl").read_text() == ""
    assert json.loads(Path("out.manifest.json").read_text())["selection"]["count"] == 0


def test_a_solver_that_picks_nothing_is_refused(work):
    """longest scores every record positively, but a knapsack over negative scores (here:
    scores negated by a method of the test) takes nothing; the check runs after solving."""
    from selectkit import Host, Method, Scores, hookimpl, select
    from selectkit.api import load_pool
    from selectkit.errors import BudgetError

    class Negative(Method):
        name = "negative"

        def objective(self, pool, target, context):
            import numpy as np

            return Scores(-np.ones(len(pool)))

    class Plugin:
        @hookimpl
        def selectkit_register_methods(self):
            return [Negative]

    host = Host.from_env()
    host.register(Plugin(), name="negative")
    pool = load_pool("pool.jsonl")
    with pytest.raises(BudgetError, match="the selection is empty"):
        select(pool, "negative", "100tok", host=host)
    assert len(select(pool, "negative", "100tok", host=host, allow_empty=True)) == 0


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_modes_the_umask_gives(work, umask):
    previous = os.umask(umask)
    try:
        assert run(*SELECT, "--out", "out.jsonl", "--scores-out", "s.jsonl").exit_code == 0
    finally:
        os.umask(previous)
    for name in ("out.jsonl", "s.jsonl", "out.manifest.json"):
        assert Path(name).stat().st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.parametrize(
    "extra, phrase",
    [
        (["--budget", "1e999"], "beyond any pool"),
        (["--budget", "1e999tok"], "beyond any pool"),
        (["--budget", "2", "--group-by", "src", "--quota", "a=inf:"], "quota 'inf:'"),
        (["--budget", "2", "--group-by", "src", "--quota", "a=:1e999"], "quota ':1e999'"),
    ],
)
def test_absurd_amounts_are_bad_input(work, extra, phrase):
    args = ["select", "-m", "random", "--pool", "pool.jsonl", "--out", "o.jsonl"]
    refused(run(*args, *extra), phrase)
    assert not Path("o.jsonl").exists()


@pytest.mark.parametrize("extra", [["--seed", "-1"], ["-j", "-5"], ["--seed", str(2**32)]])
def test_seeds_and_jobs_out_of_range_are_usage_errors(work, extra):
    result = run(*SELECT, "--out", "o.jsonl", *extra)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is not in the range" in result.output
    assert not Path("o.jsonl").exists()


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); needs root")


@pytest.fixture
def mounted(work):
    mounts: list[Path] = []

    def mount(name: str, options: str) -> Path:
        folder = work / name
        _mount_tmpfs(folder, options)
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_read_only_folder_is_refused_before_any_work(mounted):
    mounted("ro", "ro,size=64k")
    refused(run(*SELECT, "--out", "ro/out.jsonl"), "cannot write ro/out.jsonl", "read-only")


def test_a_full_disk_fails_cleanly_and_keeps_the_previous_selection(mounted):
    full = mounted("full", "size=16k")
    assert run(*SELECT, "--out", "full/out.jsonl").exit_code == 0
    previous = snapshot(full)
    (full / "ballast").write_bytes(os.urandom(4096))
    while True:  # fill what is left of the disk
        try:
            with open(full / "ballast", "ab") as handle:
                handle.write(os.urandom(4096))
        except OSError:
            break
    result = run(*SELECT, "--out", "full/out.jsonl", "--scores-out", "full/s.jsonl", "--seed", "9")
    refused(result, "the disk is full")
    after = snapshot(full)
    after.pop("ballast")
    assert after == previous


def test_train_evaluate_lds_retrain_warmup_and_demo_refuse_outputs_over_inputs(work):
    Path("runs").mkdir()
    Path("run").mkdir()
    Path("run/pool.jsonl").write_text(Path("pool.jsonl").read_text())
    model = ["--model", "tiny-llama"]
    cases = [
        (["train", "run/pool.jsonl", "--all", "--out", "run", *model], "inside the output folder"),
        (["warmup", "run/pool.jsonl", "--out", "run", *model], "inside the output folder"),
        (["evaluate", "target.jsonl", "--out", "target.jsonl", *model], "is the input TARGET"),
        (["lds", "runs", "pool.jsonl", "--target", "target.jsonl", "-m", "random", "--json",
          "pool.jsonl"], "--json (pool.jsonl) is the input POOL"),
        (["lds", "runs", "pool.jsonl", "--target", "target.jsonl", "-m", "random", "--json",
          "runs/lds.json"], "inside the input RUNS_DIR"),
        (["retrain", "pool.jsonl", "--target", "run/pool.jsonl", "--out", "run", *model],
         "inside the output folder"),
        (["demo", "--out", "pool.jsonl", "--model", "tiny-llama"], "pool.jsonl"),
        (["featurize", "run/pool.jsonl", "--cache-dir", "run", *model],
         "inside the output folder --cache-dir"),
    ]  # fmt: skip
    before = snapshot(work)
    for args, phrase in cases:
        refused(run(*args), phrase)
    assert snapshot(work) == before
