"""The pool: normalized records with ids, groups, costs and a content fingerprint.

:class:`Pool` holds its records in memory (notebooks, tests, rows built in Python); its subclass
:class:`~selectkit.data.columnar.ColumnarPool` reads them on demand from a columnar file, for
pools larger than memory. Both answer the same questions, and the ones a large pool needs
answered without holding its records (:meth:`Pool.ids_of`, :meth:`Pool.texts_of`,
:attr:`Pool.id_positions`, :meth:`Pool.json_lines`) are part of the interface.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

import numpy as np

from selectkit.errors import OutputError


@dataclass(frozen=True)
class Record:
    """One training example in a shape every method understands.

    ``prompt`` is what the model is conditioned on and ``response`` what it is trained to
    produce (the loss mask covers only the response). Raw text has an empty prompt.
    ``messages`` keeps chat records whole so a tokenizer's chat template can render them.
    ``raw`` is the record as read, made of JSON values only (:mod:`selectkit.data.values`),
    and written back unchanged by ``--out``.
    """

    id: str
    prompt: str
    response: str
    group: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    source: str | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)

    @property
    def text(self) -> str:
        """Prompt and response as one text, for model-free methods (n-grams, lengths)."""
        if not self.prompt:
            return self.response
        return f"{self.prompt}\n{self.response}"


def word_count(text: str) -> int:
    """The cost of a text when no tokenizer is given."""
    return len(text.split())


#: ``json.dumps(..., ensure_ascii=False)`` of a text, and of a record's raw values (one encoder,
#: made once: ``json.dumps`` with options makes one per call).
_text = encode_basestring
_RAW = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_ANY = json.JSONEncoder(ensure_ascii=False)


def fingerprint_row(
    record_id: str, group: str | None, prompt: str, response: str, messages: Any, cost: int
) -> tuple[str, str]:
    """One record's lines in :attr:`Pool.fingerprint` and :attr:`Pool.content_fingerprint`
    (each hashed followed by a newline): ``json.dumps`` of ``[id, group, prompt, response,
    messages, cost]`` and of ``[id, prompt, response, messages]``, each text encoded once."""
    body = f"{_text(prompt)}, {_text(response)}, " + (
        "null" if messages is None else _ANY.encode(messages)
    )
    rid = _text(record_id)
    full = f"[{rid}, {'null' if group is None else _text(group)}, {body}, {int(cost)!r}]"
    return full, f"[{rid}, {body}]"


def record_line(record: Record) -> str:
    """A record as it was read, as one JSON line; a value JSON cannot hold is an error
    naming the record, never a line that JSON readers reject."""
    try:
        return _RAW.encode(record.raw)
    except (TypeError, ValueError, RecursionError) as exc:
        where = f"{record.source}:{record.line}" if record.source else f"record {record.line}"
        raise OutputError(
            f"{where} (id '{record.id}') holds a value JSON cannot represent ({exc}); convert it "
            "in the input (e.g. NaN to null)"
        ) from None


class Pool(Sequence[Record]):
    """An ordered, immutable collection of records with per-record group and cost.

    ``costs`` are token counts under the pool's tokenizer, or word counts without one.
    ``fingerprint`` is a content hash of every field that reaches a method, so two pools
    with the same fingerprint give the same selection.
    """

    #: Whether pickling the pool (to send it to a worker process) sends a reference to where
    #: its records are stored rather than the records themselves.
    by_reference: bool = False

    def __init__(
        self,
        records: Sequence[Record],
        costs: Sequence[int] | np.ndarray | None = None,
        *,
        response_costs: Sequence[int] | np.ndarray | None = None,
        cost_unit: str = "words",
        origin: dict[str, Any] | None = None,
        skipped: Sequence[str] = (),
    ) -> None:
        self._records = list(records)
        if costs is None:
            costs = [word_count(r.text) for r in self._records]
        if response_costs is None:
            response_costs = [word_count(r.response) for r in self._records]
        self.costs = np.asarray(costs, dtype=np.int64)
        self.response_costs = np.asarray(response_costs, dtype=np.int64)
        if len(self.costs) != len(self._records) or len(self.response_costs) != len(self._records):
            raise ValueError("costs must have one entry per record")
        self.cost_unit = cost_unit
        self.origin = dict(origin or {})
        self.skipped = list(skipped)
        ids = [r.id for r in self._records]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise ValueError(f"record ids must be unique; '{dup}' appears more than once")
        self._index = {rid: i for i, rid in enumerate(ids)}
        self._fingerprint: str | None = None
        self._content_fingerprint: str | None = None

    @classmethod
    def from_texts(cls, texts: Sequence[str], groups: Sequence[str | None] | None = None) -> Pool:
        """A pool of raw texts with positional ids, for notebooks and tests."""
        groups = list(groups) if groups is not None else [None] * len(texts)
        records = [
            Record(id=str(i), prompt="", response=t, group=g, raw={"text": t})
            for i, (t, g) in enumerate(zip(texts, groups, strict=True))
        ]
        return cls(records)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return self._records[index]
        return self._records[index]

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    @property
    def ids(self) -> list[str]:
        """Every record's id, in pool order (a new list: for large pools prefer
        :meth:`ids_of` and :attr:`id_positions`)."""
        return [r.id for r in self._records]

    @property
    def texts(self) -> Sequence[str]:
        """Every record's :attr:`Record.text`, in pool order."""
        return [r.text for r in self._records]

    @property
    def groups(self) -> list[str | None]:
        return [r.group for r in self._records]

    def ids_of(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """The ids of the records at ``indices``, in that order."""
        return [self._records[i].id for i in np.asarray(indices, dtype=np.int64).tolist()]

    def texts_of(self, start: int, stop: int) -> list[str]:
        """The texts of records ``start`` to ``stop - 1``: a chunk for a streaming pass."""
        return [r.text for r in self._records[start:stop]]

    @property
    def id_positions(self) -> Mapping[str, int]:
        """Each id's position, as a mapping (``id in pool.id_positions``)."""
        return self._index

    def position(self, record_id: str) -> int:
        """The index of a record id; KeyError names the id when it is not in the pool."""
        try:
            return self._index[record_id]
        except KeyError:
            raise KeyError(f"no record with id '{record_id}' in the pool") from None

    def json_lines(self, indices: Sequence[int] | np.ndarray) -> Iterator[str]:
        """The records at ``indices``, in that order, as they were read: one JSON line each
        (:func:`record_line`), made one at a time."""
        for i in np.asarray(indices, dtype=np.int64).tolist():
            yield record_line(self._records[i])

    def group_codes(self) -> tuple[np.ndarray, list[str]]:
        """Integer group code per record (-1 for no group) and the sorted group names."""
        names = sorted({g for g in self.groups if g is not None})
        lookup = {g: i for i, g in enumerate(names)}
        codes = np.array([lookup.get(g, -1) if g is not None else -1 for g in self.groups])
        return codes.astype(np.int32), names

    @property
    def fingerprint(self) -> str:
        """SHA-256 over ids, groups, prompts, responses, messages and costs, in order."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(self.cost_unit.encode())
            for record, cost in zip(self._records, self.costs.tolist(), strict=True):
                full, _ = fingerprint_row(
                    record.id, record.group, record.prompt, record.response, record.messages, cost
                )
                digest.update(full.encode())
                digest.update(b"\n")
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    @property
    def content_fingerprint(self) -> str:
        """SHA-256 over ids, prompts, responses and messages, in order: what a model sees.

        Unlike :attr:`fingerprint` it leaves out groups and costs, so features computed from a
        model stay valid when a pool is regrouped or costed in another unit.
        """
        if self._content_fingerprint is None:
            digest = hashlib.sha256()
            for record in self._records:
                _, content = fingerprint_row(
                    record.id, None, record.prompt, record.response, record.messages, 0
                )
                digest.update(content.encode())
                digest.update(b"\n")
            self._content_fingerprint = digest.hexdigest()
        return self._content_fingerprint
