"""Writing a selection: its records, its manifest and its scores, published together."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from selectkit.data.pool import Pool
from selectkit.errors import OutputError
from selectkit.provenance import jsonable
from selectkit.publish import Publication
from selectkit.selection import Selection


def manifest_path(out: str | os.PathLike[str]) -> Path:
    """``picked.jsonl`` -> ``picked.manifest.json``, beside it (only the last suffix goes)."""
    out = Path(out)
    if not out.name or not os.fspath(out).strip():
        raise OutputError(f"the output path '{out}' names no file; give a file name")
    return out.with_name(f"{out.stem}.manifest.json")


def output_paths(
    out: str | os.PathLike[str], scores_out: str | os.PathLike[str] | None = None
) -> dict[str, Path | None]:
    """Every file a selection writes, by how the user names it, for
    :func:`selectkit.publish.check_paths`."""
    if not os.fspath(out).strip():
        raise OutputError("--out is empty; give a file name")
    return {
        "--out": Path(out),
        "its manifest": manifest_path(out),
        "--scores-out": Path(scores_out) if scores_out is not None else None,
    }


class SelectionOutputs:
    """The files of one selection, reserved before the selection is made and published
    together: the records (``out``), the manifest beside them and, if asked, one score line per
    pool record (``scores_out``). Reserving them first makes an unwritable path fail before any
    work; leaving the ``with`` block without :meth:`write` (an error, a signal) removes the
    reservations and leaves previous files untouched.

    With ``publication`` the files join that larger publication (the demo's, say), which its
    owner commits; otherwise :meth:`write` publishes them.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        scores_out: str | os.PathLike[str] | None = None,
        *,
        publication: Publication | None = None,
    ) -> None:
        self.out = Path(out)
        self.scores_out = Path(scores_out) if scores_out is not None else None
        self._owned = publication is None
        self._publication = publication if publication is not None else Publication()
        try:
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
        manifest = dict(selection.manifest)
        manifest["outputs"] = {
            "records": str(self.out),
            "scores": str(self.scores_out) if self.scores_out else None,
        }
        with open(self._records, "w", encoding="utf-8") as handle:
            for record in selection.records(pool):
                handle.write(_record_line(record) + "\n")
        if self._scores is not None:
            with open(self._scores, "w", encoding="utf-8") as handle:
                for index, (record, score) in enumerate(
                    zip(pool, selection.scores.tolist(), strict=True)
                ):
                    row = {"index": index, "id": record.id, "group": record.group}
                    row["score"] = jsonable(score)
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        with open(self._manifest, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, ensure_ascii=False, allow_nan=False)
            handle.write("\n")


def _record_line(record: Any) -> str:
    """A record as it was read, as one JSON line; a value JSON cannot hold is an error
    naming the record, never a line that JSON readers reject."""
    try:
        return json.dumps(record.raw, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        where = f"{record.source}:{record.line}" if record.source else f"record {record.line}"
        raise OutputError(
            f"{where} (id '{record.id}') holds a value JSON cannot represent ({exc}); convert it "
            "in the input (e.g. NaN to null)"
        ) from None


def write_selection(
    selection: Selection,
    pool: Pool,
    out: str | os.PathLike[str],
    *,
    scores_out: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write the selected records unchanged (JSONL, selection order), the manifest beside
    them and, if asked, one score line per pool record; all of them or none. Returns the
    paths written."""
    with SelectionOutputs(out, scores_out) as outputs:
        return outputs.write(selection, pool)
