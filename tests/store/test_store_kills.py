"""``selectkit featurize`` killed while it creates an entry and while it finalizes one: the next
run clears what the dead process left (never what a live one is using), and an identical second
run is refused before it loads anything.

The moments are hit exactly, without any hook in selectkit: the child process gets a
``sitecustomize`` (through ``PYTHONPATH``) whose audit hook stops the process (SIGSTOP) when it
opens or renames the file that marks the moment; the test then sees it stopped, looks at the
store while it is alive, and kills it with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from selectkit.cli import cli
from selectkit.data.synthetic import make_records
from selectkit.store import FeatureStore

ARGS = [
    "--model",
    "tiny-llama",
    "--projection-dim",
    "64",
    "--batch-size",
    "2",
    "--max-length",
    "96",
]

# Stops the process as it creates status.npy in the temporary folder of a new entry.
WHILE_CREATING = r"""
import os, re, signal, sys

def _stop(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        if re.search(r"/\.tmp-[0-9a-f]{12}-\d+-[0-9a-f]{8}/status\.npy$", os.fsdecode(args[0])):
            os.kill(os.getpid(), signal.SIGSTOP)

sys.addaudithook(_stop)
"""

# Stops the process as it renames the manifest that says "complete" into an entry.
WHILE_FINALIZING = r"""
import os, re, signal, sys

def _stop(event, args):
    if event == "os.rename" and re.search(r"/[0-9a-f]{64}/manifest\.json$", os.fsdecode(args[1])):
        with open(args[0], encoding="utf-8") as handle:
            if '"complete": true' in handle.read():
                os.kill(os.getpid(), signal.SIGSTOP)

sys.addaudithook(_stop)
"""


def _stopped_featurize(tmp_path: Path, pool: Path, store: Path, hook: str) -> subprocess.Popen:
    """A real ``python -m selectkit featurize``, stopped by ``hook`` at its moment."""
    folder = tmp_path / f"hook-{len(list(tmp_path.glob('hook-*')))}"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(hook)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "selectkit", "featurize", str(pool), *ARGS]
    process = subprocess.Popen(
        [*command, "--cache-dir", str(store), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while _state(process.pid) != "T":
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"featurize ended (exit {process.returncode}) before its moment:\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("featurize never reached its moment")
        time.sleep(0.02)
    return process


def _state(pid: int) -> str:
    """The process state letter of ``/proc/<pid>/stat`` (``T``: stopped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return text.rsplit(")", 1)[1].split()[0]


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def _cli(*args: str):
    return CliRunner().invoke(cli, [*args])


def _npy_bytes(root: Path) -> dict[str, bytes]:
    (entry,) = FeatureStore(root).entries()
    return {p.name: p.read_bytes() for p in sorted(entry.path.glob("*.npy"))}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see a stop")
def test_featurize_killed_while_creating_and_while_finalizing(tmp_path, monkeypatch):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in make_records(3, seed=5)))
    store = tmp_path / "store"
    featurize = ["featurize", str(pool), *ARGS, "--cache-dir", str(store), "--quiet"]
    verify = ["cache", "verify", "--cache-dir", str(store)]

    # 1. Stopped while it builds the entry in a temporary folder.
    creating = _stopped_featurize(tmp_path, pool, store, WHILE_CREATING)
    try:
        (temp,) = store.glob(".tmp-*")
        # Alive: its folder is no problem, and nobody removes it.
        assert _cli(*verify).output == f"no feature sets in {store}\n"
        assert FeatureStore(store).clear_leftovers() == [] and temp.is_dir()
        # An identical run is refused at once, before it loads the model.
        from selectkit.host import Host

        def no_loading(*args, **kwargs):
            raise AssertionError("the refused run loaded the model")

        with monkeypatch.context() as patched:
            patched.setattr(Host, "load_model", no_loading)
            refused = _cli(*featurize)
        assert refused.exit_code == 2, refused.output
        assert f"another process (pid {creating.pid}) is already extracting these features" in (
            refused.output
        )
        assert "Traceback" not in refused.output
    finally:
        _kill(creating)
    dead = _cli(*verify)
    assert dead.exit_code == 3 and f"{temp.name}  1 problem(s)" in dead.output
    assert "left over by a killed process" in dead.output

    # 2. The next run clears it; killed again while it finalizes the entry.
    finalizing = _stopped_featurize(tmp_path, pool, store, WHILE_FINALIZING)
    _kill(finalizing)
    assert not temp.exists()
    (entry,) = FeatureStore(store).entries()
    (leftover,) = entry.path.glob(".manifest.json.*.tmp")
    dead = _cli(*verify)
    assert dead.exit_code == 3, dead.output
    assert f"{leftover.name}: left over by a killed process" in dead.output
    assert "not finalized" in dead.output

    # 3. The next run finishes it and leaves nothing behind: verify is clean.
    rerun = _cli(*featurize)
    assert rerun.exit_code == 0, rerun.output
    assert f"{entry.id}  sgd  30 rows done of 30, complete" in rerun.output
    clean = _cli(*verify)
    assert clean.exit_code == 0 and clean.output == f"{entry.id[:12]}  OK\n"
    assert sorted(p.name for p in store.iterdir()) == [".claims", entry.id]
    assert not list(entry.path.glob(".*"))

    # Same bytes as an uninterrupted run.
    fresh = tmp_path / "fresh"
    assert _cli("featurize", str(pool), *ARGS, "--cache-dir", str(fresh), "--quiet").exit_code == 0
    assert _npy_bytes(store) == _npy_bytes(fresh)
