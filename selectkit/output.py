"""Writing a selection: its records, its manifest and its scores, published together.

The records are written as they come from the pool (:meth:`Pool.json_lines`), a few at a
time, and the scores a slice of the pool at a time, so writing a selection of a pool larger
than memory holds neither. ``--out`` is JSON lines, or (``out_format="hf"``) a saved Hugging
Face dataset (:mod:`selectkit.data.hf_save`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from selectkit.data.pool import Pool
from selectkit.errors import OutputError
from selectkit.provenance import jsonable
from selectkit.publish import Publication
from selectkit.selection import Selection

OutFormat = Literal["jsonl", "hf"]
OUT_FORMATS: tuple[OutFormat, ...] = ("jsonl", "hf")
#: Pool records per slice when writing the scores.
_SCORE_SLICE = 65536


def manifest_path(out: str | os.PathLike[str]) -> Path:
    """``picked.jsonl`` -> ``picked.manifest.json``, beside it (only the last suffix goes)."""
    out = Path(out)
    if not out.name or not os.fspath(out).strip():
        raise OutputError(f"the output path '{out}' names no file; give a file name")
    return out.with_name(f"{out.stem}.manifest.json")


def output_paths(
    out: str | os.PathLike[str],
    scores_out: str | os.PathLike[str] | None = None,
    out_format: OutFormat = "jsonl",
) -> dict[str, Path | None]:
    """Every file a selection writes, by how the user names it, for
    :func:`selectkit.publish.check_paths` (a dataset ``--out`` is a folder:
    :func:`output_folders`)."""
    if not os.fspath(out).strip():
        raise OutputError("--out is empty; give a file name")
    return {
        "--out": Path(out) if out_format == "jsonl" else None,
        "its manifest": manifest_path(out),
        "--scores-out": Path(scores_out) if scores_out is not None else None,
    }


def output_folders(out: str | os.PathLike[str], out_format: OutFormat = "jsonl") -> dict[str, Path]:
    """The folders a selection writes: ``--out`` when it is a saved dataset."""
    return {"--out": Path(out)} if out_format == "hf" else {}


class SelectionOutputs:
    """The files of one selection, reserved before the selection is made and published
    together: the records (``out``), the manifest beside them and, if asked, one score line per
    pool record (``scores_out``). Reserving them first makes an unwritable path fail before any
    work; leaving the ``with`` block without :meth:`write` (an error, a signal) removes the
    reservations and leaves previous files untouched.

    With ``publication`` the files join that larger publication (the demo's, say), which its
    owner commits; otherwise :meth:`write` publishes them. ``out_format`` ``"hf"`` writes the
    records as a saved Hugging Face dataset, a folder whose files are replaced together.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        scores_out: str | os.PathLike[str] | None = None,
        *,
        publication: Publication | None = None,
        out_format: OutFormat = "jsonl",
    ) -> None:
        if out_format not in OUT_FORMATS:
            raise OutputError(f"the output format must be jsonl or hf, not '{out_format}'")
        self.out = Path(out)
        self.scores_out = Path(scores_out) if scores_out is not None else None
        self.out_format = out_format
        self._owned = publication is None
        self._publication = publication if publication is not None else Publication()
        try:
            if out_format == "hf":
                self._records = self._publication.into(self.out)
            else:
                self._records = self._publication.file(self.out)
            self._scores = self._publication.file(self.scores_out) if self.scores_out else None
            self._manifest = self._publication.file(manifest_path(self.out))
        except BaseException:
            if self._owned:
                self._publication.abort()
            raise

    def __enter__(self) -> SelectionOutputs:
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if self._owned:
            self._publication.abort()  # nothing to do after write() published

    def write(self, selection: Selection, pool: Pool) -> list[Path]:
        """Write the selection's files (and publish them, unless they belong to a larger
        publication); returns their final paths."""
        try:
            self._write(selection, pool)
        except OSError as exc:
            explained = self._publication.explain(exc)
            if explained is None:
                raise
            raise explained from exc
        if self._owned:
            self._publication.commit()
        return [path for path in (self.out, self.scores_out, manifest_path(self.out)) if path]

    def _write(self, selection: Selection, pool: Pool) -> None:
        selection.check_pool(pool)
        manifest = dict(selection.manifest)
        manifest["outputs"] = {
            "records": str(self.out),
            "scores": str(self.scores_out) if self.scores_out else None,
        }
        if self.out_format == "hf":
            from selectkit.data.hf_save import write_dataset

            write_dataset(self._records, lambda: pool.json_lines(selection.indices))
        else:
            with open(self._records, "w", encoding="utf-8") as handle:
                for line in pool.json_lines(selection.indices):
                    handle.write(line + "\n")
        if self._scores is not None:
            with open(self._scores, "w", encoding="utf-8") as handle:
                _write_scores(handle, pool, selection.scores)
        with open(self._manifest, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, ensure_ascii=False, allow_nan=False)
            handle.write("\n")


def _write_scores(handle: Any, pool: Pool, scores: np.ndarray) -> None:
    """One line per pool record (index, id, group, score), a slice of the pool at a time."""
    codes, names = pool.group_codes()
    table: list[str | None] = [*names, None]
    for start in range(0, len(pool), _SCORE_SLICE):
        stop = min(start + _SCORE_SLICE, len(pool))
        ids = pool.ids_of(np.arange(start, stop))
        groups = codes[start:stop].tolist()
        values = scores[start:stop].tolist()
        for offset, (record_id, code, score) in enumerate(zip(ids, groups, values, strict=True)):
            row = {"index": start + offset, "id": record_id, "group": table[code]}
            row["score"] = jsonable(score)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_selection(
    selection: Selection,
    pool: Pool,
    out: str | os.PathLike[str],
    *,
    scores_out: str | os.PathLike[str] | None = None,
    out_format: OutFormat = "jsonl",
) -> list[Path]:
    """Write the selected records unchanged (JSONL or a saved dataset, selection order), the
    manifest beside them and, if asked, one score line per pool record; all of them or none.
    Returns the paths written."""
    with SelectionOutputs(out, scores_out, out_format=out_format) as outputs:
        return outputs.write(selection, pool)
