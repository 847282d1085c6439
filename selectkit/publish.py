"""Publishing outputs: all of them or none, never over an input, whatever stops the process.

Every file selectkit writes is first written under a temporary name beside its final path
(``.picked.jsonl.selectkit-<hex>.tmp``), synced, and renamed into place only when it is
complete. A :class:`Publication` does this for a set of outputs at once (a selection's records,
scores and manifest; a training run's adapter files): it creates the temporaries when the
outputs are named, before any heavy work, so an unwritable path fails at once; then, when all
are written, it records the renames in a journal and performs them with SIGINT, SIGTERM and
SIGHUP held back (:func:`selectkit.signals.deferred`).

A process that dies anyway (SIGKILL, a power cut) leaves only hidden ``.selectkit-`` files.
Their writer holds an advisory lock on each of them for as long as it lives, so the next run
knows a dead one's from a live one's: :func:`clear_stale` deletes dead temporaries and
completes a dead writer's journal (its renames were decided: the journal is written only when
every output is complete), so the outputs are then the complete new set.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from selectkit import locks
from selectkit.errors import OutputError
from selectkit.signals import deferred

_MARK = "selectkit-"
_LEFTOVER = re.compile(rf"^\..+\.{_MARK}[0-9a-f]{{12}}\.(tmp|old|journal)$")
_HINTS = {
    errno.EACCES: "check the folder's permissions, or choose another path",
    errno.EPERM: "check the folder's permissions, or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.ENOSPC: "the disk is full: free some space, or choose another disk",
    errno.EDQUOT: "the disk quota is exhausted: free some space, or choose another disk",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder: give a file name",
    errno.ENAMETOOLONG: "shorten the path",
}


def _temp_name(final: Path, kind: str) -> Path:
    return final.with_name(f".{final.name}.{_MARK}{secrets.token_hex(6)}.{kind}")


def fsync_path(path: Path) -> None:
    """Sync a file's data, or a folder's names (so the names just created or renamed in it
    survive a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_file(path: Path) -> None:
    """An empty file at ``path`` (which must not exist), with the mode the umask gives."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _reserved(final: Path, make: Callable[[Path], None]) -> tuple[Path, int]:
    """A new temporary beside ``final`` (made by ``make``) and the descriptor of the lock held
    on it. A cleaner in another process that finds the temporary in the instant before it is
    locked takes it for a dead writer's and removes it; the lock then fails or finds it gone,
    and another name is tried."""
    for _ in range(8):
        temp = _temp_name(final, "tmp")
        make(temp)
        fd = locks.hold(temp)
        if fd is not None:
            return temp, fd
    raise OutputError(f"could not reserve a temporary file for {final}; retry")


def _fsync_tree(path: Path) -> None:
    """Sync a written file, or every file and folder of a written folder."""
    inside = path.rglob("*") if path.is_dir() else ()
    for item in [*inside, path]:
        fsync_path(item)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def output_error(exc: OSError, final: Path, what: str = "write") -> OutputError:
    """``exc``, raised while writing output ``final``, as a one-line :class:`OutputError`."""
    hint = _HINTS.get(exc.errno, "check the path")
    return OutputError(f"cannot {what} {final}: {exc.strerror or exc}; {hint}")


class Publication:
    """Outputs published together: all of them or none.

    Name each output with :meth:`file` (a file to write) or :meth:`into` (a folder whose
    named entries are replaced); write them; :meth:`commit`. Used as a context manager it
    commits when the body succeeds and otherwise removes every temporary, leaving the previous
    outputs as they were::

        with Publication() as outputs:
            records = outputs.file("picked.jsonl")
            manifest = outputs.file("picked.manifest.json")
            ... heavy work ...
            records.write_text(...)
            manifest.write_text(...)
    """

    def __init__(self) -> None:
        self._moves: list[tuple[Path, Path]] = []  # (temporary, final)
        self._locks: list[int] = []
        self._staging: list[Path] = []
        self._done = False

    def __enter__(self) -> Publication:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if kind is None:
            self.commit()
            return
        self.abort()
        if isinstance(exc, OSError):
            explained = self.explain(exc)
            if explained is not None:
                raise explained from exc

    def explain(self, exc: OSError) -> OutputError | None:
        """An error met while writing one of this publication's temporaries, as an
        :class:`OutputError` naming the output it stands for (``None`` for other errors)."""
        final = self._final_of(exc.filename)
        return output_error(exc, final) if final is not None else None

    def _final_of(self, filename: Any) -> Path | None:
        """The output a temporary (or a file inside a staged folder) stands for."""
        if filename is None:
            return None
        path = Path(os.fsdecode(filename))
        for temp, final in self._moves:
            if path == temp or temp in path.parents:
                return final
        for staging in self._staging:
            if path == staging or staging in path.parents:
                return staging
        return None

    def file(self, path: str | os.PathLike[str]) -> Path:
        """A temporary file beside output ``path``, created now (empty, with the umask's
        mode), that becomes ``path`` at commit. Creating it now makes an unwritable path fail
        before any work."""
        final = Path(path)
        if final.is_dir():
            raise OutputError(f"output {final} is a folder; give a file name")
        self._prepare(final)
        try:
            temp, fd = _reserved(final, _new_file)
        except OSError as exc:
            raise output_error(exc, final) from exc
        self._locks.append(fd)
        self._moves.append((temp, final))
        return temp

    @contextlib.contextmanager
    def open(self, path: str | os.PathLike[str], *, binary: bool = False) -> Iterator[IO[Any]]:
        """:meth:`file` opened for writing (text in UTF-8, or ``binary``)."""
        temp = self.file(path)
        mode, encoding = ("wb", None) if binary else ("w", "utf-8")
        with open(temp, mode, encoding=encoding) as handle:
            yield handle

    def into(self, folder: str | os.PathLike[str]) -> Path:
        """A staging folder for output folder ``folder``: at commit every top-level entry of
        the staging folder replaces the entry of the same name in ``folder`` (created if
        absent); the folder's other entries are kept."""
        final = Path(folder)
        if final.exists() and not final.is_dir():
            raise OutputError(f"output folder {final} is a file; give a folder")
        self._prepare(final)
        try:
            staging, fd = _reserved(final, lambda temp: temp.mkdir(0o777))
        except OSError as exc:
            raise output_error(exc, final, "create") from exc
        self._locks.append(fd)
        self._staging.append(staging)
        self._moves.append((staging, final))
        return staging

    def _prepare(self, final: Path) -> None:
        if self._done:
            raise RuntimeError("this publication is finished")
        if not final.name:
            raise OutputError("an output path is empty; give a file name")
        for folder in final.parents:
            if folder.exists() and not folder.is_dir():
                raise OutputError(f"cannot write {final}: {folder} is a file, not a folder")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(exc, final.parent, "create the folder of") from exc
        clear_stale(final.parent)

    def commit(self) -> list[Path]:
        """Sync every output, then put them all in place; returns the final paths."""
        if self._done:
            raise RuntimeError("this publication is finished")
        moves = self._expand()
        try:
            for temp, _ in moves:
                _fsync_tree(temp)
        except OSError as exc:
            self.abort()
            raise output_error(exc, self._final_of(exc.filename) or moves[0][1]) from exc
        with deferred():  # from here to the last rename, no signal splits the outputs
            try:
                journal = self._write_journal(moves) if len(moves) > 1 else None
            except OSError as exc:
                self.abort()
                raise output_error(exc, moves[0][1]) from exc
            try:
                _apply(moves)
                for folder in {final.parent for _, final in moves}:
                    fsync_path(folder)
                if journal is not None:
                    journal.unlink()
            except OSError as exc:
                # Past the journal the renames are decided: keep it and the temporaries (the
                # locks go with this process), so the next run that writes here finishes them.
                self._release()
                where = moves[0][1].parent
                raise OutputError(
                    f"publishing into {where} stopped part-way ({exc.strerror or exc}); the next "
                    f"selectkit command writing into {where} completes it"
                ) from exc
        self._finish()
        return [final for _, final in self._moves]

    def _expand(self) -> list[tuple[Path, Path]]:
        """Staged folders become one move per entry; files stay one move each."""
        moves = []
        for temp, final in self._moves:
            if temp in self._staging:
                final.mkdir(parents=True, exist_ok=True)
                moves += [(child, final / child.name) for child in sorted(temp.iterdir())]
            else:
                moves.append((temp, final))
        return moves

    def _write_journal(self, moves: list[tuple[Path, Path]]) -> Path:
        final = moves[0][1]
        journal = _temp_name(final, "journal")
        temp, fd = _reserved(final, _new_file)
        self._locks.append(fd)  # held until the renames are done, so no one else completes them
        entries = [[str(a.absolute()), str(b.absolute())] for a, b in moves]
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump({"moves": entries}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temp, journal)
        fsync_path(journal.parent)
        return journal

    def abort(self) -> None:
        """Remove every temporary; the outputs stay as they were."""
        if self._done:
            return
        for temp, _ in self._moves:
            _remove(temp)
        self._finish()

    def _finish(self) -> None:
        for staging in self._staging:
            _remove(staging)
        self._release()

    def _release(self) -> None:
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()
        self._done = True


def _apply(moves: Iterable[tuple[Path, Path]]) -> None:
    """Rename each temporary over its final path; a folder replacing a folder moves the old
    one aside first (a rename cannot replace a non-empty folder) and deletes it after."""
    for temp, final in moves:
        if not temp.exists() and not temp.is_symlink():
            continue  # already moved: a journal being completed a second time
        old = None
        if temp.is_dir() and final.is_dir() and not final.is_symlink():
            old = _temp_name(final, "old")
            os.rename(final, old)
        os.replace(temp, final)
        if old is not None:
            _remove(old)


def is_temporary(name: str) -> bool:
    """Whether a file name is one of this module's temporaries, journals or set-aside folders
    (a writer's work in progress, not an output)."""
    return bool(_LEFTOVER.match(name))


def check_writable(path: str | os.PathLike[str], *, folder: bool = False) -> None:
    """Fail now, with an :class:`OutputError` that says why, if output ``path`` (a file, or
    with ``folder`` a folder to fill) could not be published; leaves nothing behind but the
    output's parent folders. For commands that load a model before they write."""
    probe = Publication()
    try:
        if folder:
            probe.into(path)
            if Path(path).is_dir():
                probe.file(Path(path) / ".write-check")
        else:
            probe.file(path)
    finally:
        probe.abort()


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, binary: bool = False) -> Iterator[IO[Any]]:
    """Write one file through a temporary beside it, renamed into place only if the ``with``
    body succeeds."""
    with Publication() as outputs, outputs.open(path, binary=binary) as handle:
        yield handle


def clear_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove what dead writers left in ``folder``: complete their journals (rename the
    outputs they had finished into place), delete their temporaries. Leftovers of live
    writers are not touched. Returns what was cleared."""
    root = Path(folder)
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    leftovers = [root / name for name in names if _LEFTOVER.match(name)]
    cleared = []
    for journal in (p for p in leftovers if p.name.endswith(".journal")):
        with _held(journal) as dead, contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if dead:
                moves = json.loads(journal.read_text(encoding="utf-8"))["moves"]
                _apply((Path(a), Path(b)) for a, b in moves)
                journal.unlink()
                cleared.append(journal)
    for path in leftovers:
        if path.name.endswith(".journal") or path in cleared:
            continue
        with _held(path) as dead:
            if dead:
                _remove(path)
                cleared.append(path)
    return cleared


@contextlib.contextmanager
def _held(path: Path) -> Iterator[bool]:
    """Hold the lock on a leftover for the ``with`` body, yielding whether its writer is dead
    (no live process held it, so this one could take it)."""
    fd = locks.hold(path)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            locks.release(fd)


def _identity(path: Path) -> tuple[Path, tuple[int, int] | None]:
    """Where ``path`` really is: its resolved path (symlinks followed, also for a file that
    does not exist yet) and, for an existing file, its device and inode (hard links)."""
    resolved = path.expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return resolved, None
    return resolved, (stat.st_dev, stat.st_ino)


def check_paths(
    *,
    inputs: Mapping[str, str | os.PathLike[str] | None],
    files: Mapping[str, str | os.PathLike[str] | None] | None = None,
    folders: Mapping[str, str | os.PathLike[str] | None] | None = None,
) -> None:
    """Refuse, before any work, an output that would overwrite or write into an input, and two
    outputs that are one path. Keys say how the user gave each path (``--out``, ``pool``);
    ``None`` values are left out.

    Inputs are files or folders (a saved dataset, a checkpoint); values that name nothing on
    disk (a model name) are left out. Nothing may be written inside an input folder, since a
    file added there changes what it holds, and an output folder may not hold an input.
    """
    outputs = []
    for kind, given in (("file", files), ("folder", folders)):
        for label, path in (given or {}).items():
            if path is not None and not os.fspath(path).strip():
                raise OutputError(f"{label} is empty; give a path")
            if path is not None:
                outputs.append((label, Path(path), kind))
    seen: dict[Any, str] = {}
    for label, path, _ in outputs:
        resolved, inode = _identity(path)
        for key in (resolved, inode):
            if key is not None and key in seen:
                raise OutputError(
                    f"{label} ({path}) and {seen[key]} are the same path; give each output its own"
                )
        seen.update({key: f"{label} ({path})" for key in (resolved, inode) if key is not None})
    for in_label, raw in inputs.items():
        if raw is None or not Path(raw).expanduser().exists():
            continue  # not a path (a model name, say): nothing on disk to protect
        source, source_inode = _identity(Path(raw))
        for label, path, kind in outputs:
            resolved, inode = _identity(path)
            if resolved == source or (inode is not None and inode == source_inode):
                raise OutputError(
                    f"{label} ({path}) is the input {in_label} ({raw}); writing it would destroy "
                    "the input: choose another output path"
                )
            if source.is_dir() and source in resolved.parents:
                raise OutputError(
                    f"{label} ({path}) is inside the input {in_label} ({raw}); writing there "
                    "would change the input: choose a path outside it"
                )
            if kind == "folder" and resolved in source.parents:
                raise OutputError(
                    f"the input {in_label} ({raw}) is inside the output folder {label} ({path}); "
                    "keep inputs out of output folders"
                )
