"""File formats: how rows come out of a file. Each format is a small plugin-registered class."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from selectkit.errors import RecordError

OnError = Callable[[RecordError], None]


@dataclass(frozen=True)
class RawRow:
    """One row as read from a source, with its 1-based line (text files) or row number."""

    line: int
    data: dict[str, Any]


@dataclass(frozen=True)
class LoadOptions:
    """How to read a pool: every choice the user can make about records, in one place.

    Field names may be dotted paths into nested objects (``metadata.pile_set_name``).
    ``tokenizer`` is a spec for the ``selectkit_load_tokenizer`` hook or, from Python, a
    tokenizer object.
    """

    format: str | None = None
    shape: str | None = None
    id_field: str = "id"
    group_field: str | None = None
    text_field: str | None = None
    field_map: dict[str, str] = field(default_factory=dict)
    on_error: Literal["raise", "skip"] = "raise"
    tokenizer: Any = None
    template: Literal["auto", "chat", "plain"] = "auto"
    max_length: int | None = None
    truncation: Literal["left", "right"] = "left"
    trust_remote_code: bool = False


class Format(ABC):
    """A file format. ``name`` is what users pass to ``--format``; ``suffixes`` are matched
    against the file name when they do not."""

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = ()

    def detect(self, path: Path) -> bool:
        """Whether this format can read ``path`` by its name (or layout, for directories)."""
        name = path.name.lower()
        return path.is_file() and any(name.endswith(suffix) for suffix in self.suffixes)

    @abstractmethod
    def read(self, path: Path, on_error: OnError) -> Iterator[RawRow]:
        """Yield rows in file order. For a malformed row call ``on_error`` with a
        :class:`RecordError` naming the path and line, then go on: ``on_error`` raises when the
        user did not ask to skip bad records."""
