"""Writing selections to disk: all files appear complete or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from selectkit.data.pool import Pool
from selectkit.manifest import jsonable
from selectkit.selection import Selection


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, binary: bool = False) -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        mode, encoding = ("wb", None) if binary else ("w", "utf-8")
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def manifest_path(out: str | os.PathLike) -> Path:
    """``picked.jsonl`` -> ``picked.manifest.json``, beside it (only the last suffix goes)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.manifest.json")


def write_selection(
    selection: Selection,
    pool: Pool,
    out: str | os.PathLike,
    *,
    scores_out: str | os.PathLike | None = None,
) -> list[Path]:
    """Write the selected records unchanged (JSONL, selection order), the manifest beside
    them and, if asked, one score line per pool record. Returns the paths written.

    Every file is written to a temporary name first and renamed only once all are complete,
    so a failure leaves none of them behind.
    """
    records = selection.records(pool)
    paths = [Path(out), *([Path(scores_out)] if scores_out is not None else [])]
    paths.append(manifest_path(out))
    manifest = dict(selection.manifest)
    manifest["outputs"] = {"records": str(out), "scores": str(scores_out) if scores_out else None}
    with contextlib.ExitStack() as stack:
        # Entered in reverse so the renames run records first and the manifest last.
        handles = [stack.enter_context(atomic_writer(path)) for path in reversed(paths)][::-1]
        for record in records:
            handles[0].write(json.dumps(record.raw, ensure_ascii=False) + "\n")
        if scores_out is not None:
            for index, (record, score) in enumerate(
                zip(pool, selection.scores.tolist(), strict=True)
            ):
                row = {"index": index, "id": record.id, "group": record.group}
                row["score"] = jsonable(score)
                handles[1].write(json.dumps(row, ensure_ascii=False) + "\n")
        json.dump(manifest, handles[-1], indent=2, ensure_ascii=False, allow_nan=False)
        handles[-1].write("\n")
    return paths
