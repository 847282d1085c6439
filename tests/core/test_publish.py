"""Publishing outputs: all or none, previous files untouched on failure, umask honoured,
leftovers of dead writers cleared and live ones left alone, outputs checked against inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from selectkit.errors import OutputError
from selectkit.publish import (
    Publication,
    atomic_writer,
    check_paths,
    check_writable,
    clear_stale,
    is_temporary,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if is_temporary(p.name))


def test_files_appear_together_on_commit(tmp_path):
    with Publication() as outputs:
        first, second = outputs.file(tmp_path / "a.jsonl"), outputs.file(tmp_path / "b.json")
        first.write_text("new a")
        assert not (tmp_path / "a.jsonl").exists()  # nothing visible before the commit
        second.write_text("new b")
    assert (tmp_path / "a.jsonl").read_text() == "new a"
    assert (tmp_path / "b.json").read_text() == "new b"
    assert _leftovers(tmp_path) == []


def test_a_failure_leaves_the_previous_files_untouched(tmp_path):
    (tmp_path / "a.jsonl").write_text("old a")
    (tmp_path / "b.json").write_text("old b")
    with pytest.raises(RuntimeError, match="half way"), Publication() as outputs:
        outputs.file(tmp_path / "a.jsonl").write_text("new a")
        outputs.file(tmp_path / "b.json").write_text("new b")
        raise RuntimeError("half way")
    assert (tmp_path / "a.jsonl").read_text() == "old a"
    assert (tmp_path / "b.json").read_text() == "old b"
    assert _leftovers(tmp_path) == []


def test_an_unwritable_output_fails_when_named_not_after_the_work(tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    outputs = Publication()
    outputs.file(tmp_path / "fine.jsonl")
    with pytest.raises(OutputError, match="blocker is a file, not a folder"):
        outputs.file(tmp_path / "blocker" / "out.jsonl")
    outputs.abort()
    assert _leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="is a folder"):
        Publication().file(tmp_path)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_modes_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with atomic_writer(tmp_path / "out.jsonl") as handle:
            handle.write("x")
        with Publication() as outputs:
            (outputs.into(tmp_path / "run") / "adapter.bin").write_bytes(b"y")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_folder_output_replaces_its_entries_and_keeps_the_others(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    (run / "checkpoint-1" / "old.bin").write_text("old")
    (run / "notes.txt").write_text("the user's own file")
    (run / "finetune.json").write_text("old")
    with Publication() as outputs:
        staging = outputs.into(run)
        (staging / "checkpoint-1").mkdir()
        (staging / "checkpoint-1" / "new.bin").write_text("new")
        (staging / "finetune.json").write_text("new")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-1", "finetune.json", "notes.txt"]
    assert [p.name for p in (run / "checkpoint-1").iterdir()] == ["new.bin"]
    assert (run / "finetune.json").read_text() == "new"
    assert _leftovers(tmp_path) == []


_HOLDER = """
import sys, time
from selectkit.publish import Publication
outputs = Publication()
outputs.file(sys.argv[1]).write_text("live work")
print("ready", flush=True)
time.sleep(60)
"""


def test_clear_stale_removes_what_dead_writers_left_and_spares_live_ones(tmp_path):
    live = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "live.jsonl")], stdout=subprocess.PIPE
    )
    try:
        assert live.stdout.readline().strip() == b"ready"
        dead = Publication()
        dead.file(tmp_path / "dead.jsonl").write_text("half")
        for fd in dead._locks:  # the writer dies: the kernel drops its locks
            os.close(fd)
        cleared = clear_stale(tmp_path)
        assert [p.name[:12] for p in cleared] == [".dead.jsonl."]
        remaining = _leftovers(tmp_path)
        assert len(remaining) == 1 and remaining[0].startswith(".live.jsonl.")
    finally:
        live.kill()
        live.wait()
    assert len(clear_stale(tmp_path)) == 1 and _leftovers(tmp_path) == []


def test_a_journal_left_by_a_killed_commit_is_completed(tmp_path):
    """Killed between two renames of a commit: the journal says what was decided, and the
    next run finishes it, so the outputs end as the complete new set."""
    (tmp_path / "a.jsonl").write_text("old a")
    (tmp_path / "b.json").write_text("old b")
    outputs = Publication()
    temp_a, temp_b = outputs.file(tmp_path / "a.jsonl"), outputs.file(tmp_path / "b.json")
    temp_a.write_text("new a")
    temp_b.write_text("new b")
    moves = [[str(temp_a), str(tmp_path / "a.jsonl")], [str(temp_b), str(tmp_path / "b.json")]]
    journal = tmp_path / ".a.jsonl.selectkit-0123456789ab.journal"
    journal.write_text(json.dumps({"moves": moves}))
    os.replace(temp_a, tmp_path / "a.jsonl")  # the first rename happened, then the kill
    for fd in outputs._locks:
        os.close(fd)
    assert (tmp_path / "b.json").read_text() == "old b"  # mixed, until the next run
    clear_stale(tmp_path)
    assert (tmp_path / "a.jsonl").read_text() == "new a"
    assert (tmp_path / "b.json").read_text() == "new b"
    assert _leftovers(tmp_path) == []


def test_check_writable_leaves_nothing_behind(tmp_path):
    check_writable(tmp_path / "new" / "run", folder=True)
    check_writable(tmp_path / "out.jsonl")
    assert [p.name for p in tmp_path.rglob("*")] == ["new"]


def test_outputs_never_overwrite_inputs(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("{}\n")
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (tmp_path / "link.jsonl").symlink_to(pool)
    os.link(pool, tmp_path / "hard.jsonl")
    inputs = {"--pool": pool, "--target": dataset, "--model": "smollm2"}
    cases = {
        "pool.jsonl": "is the input --pool",
        "link.jsonl": "is the input --pool",
        "hard.jsonl": "is the input --pool",
        "dataset/x.jsonl": "is inside the input --target",
        "dataset": "is the input --target",
    }
    for name, message in cases.items():
        with pytest.raises(OutputError, match=message):
            check_paths(inputs=inputs, files={"--out": tmp_path / name})
    with pytest.raises(OutputError, match="is inside the output folder --out"):
        check_paths(inputs=inputs, folders={"--out": tmp_path})
    with pytest.raises(OutputError, match="are the same path"):
        check_paths(inputs=inputs, files={"--out": tmp_path / "o", "--scores-out": tmp_path / "o"})
    with pytest.raises(OutputError, match="--out is empty"):
        check_paths(inputs=inputs, files={"--out": ""})
    check_paths(inputs=inputs, files={"--out": tmp_path / "smollm2"})  # a model name, not a path


def test_a_commit_that_fails_after_its_journal_is_finished_by_the_next_run(tmp_path, monkeypatch):
    """Once the journal is written the renames are decided: a rename that fails midway keeps
    the journal and the rest of the temporaries, and the next run completes the set."""
    from selectkit import publish

    (tmp_path / "a.jsonl").write_text("old a")
    (tmp_path / "b.json").write_text("old b")
    apply = publish._apply

    def first_then_fail(moves):
        moves = list(moves)
        apply(moves[:1])
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(publish, "_apply", first_then_fail)
    with pytest.raises(OutputError, match="stopped part-way"), Publication() as outputs:
        outputs.file(tmp_path / "a.jsonl").write_text("new a")
        outputs.file(tmp_path / "b.json").write_text("new b")
    monkeypatch.setattr(publish, "_apply", apply)
    assert [p.name.endswith(".journal") for p in tmp_path.iterdir()].count(True) == 1
    clear_stale(tmp_path)
    assert (tmp_path / "a.jsonl").read_text() == "new a"
    assert (tmp_path / "b.json").read_text() == "new b"
    assert _leftovers(tmp_path) == []
