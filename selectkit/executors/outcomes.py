"""A unit's outcome as plain data, so a worker in another process can send it back: its result,
or its error. A :class:`~selectkit.errors.SelectkitError` (bad input the user can fix) comes back
as the same class with the same message and fields; anything else is a bug, reported with the
worker's traceback."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from selectkit import errors
from selectkit.executors.base import Report, Unit, Worker


class UnitFailed(Exception):
    """A unit raised something that is not a :class:`~selectkit.errors.SelectkitError`: a bug,
    shown with the traceback from the worker it ran on."""


@dataclass(frozen=True)
class Outcome:
    result: Any = None
    error: tuple[str, str, dict[str, Any]] | None = None  # class name, message, attributes
    trace: str | None = None

    def unwrap(self, unit: Unit) -> Any:
        """The result, or the unit's error raised here."""
        if self.error is not None:
            name, message, attributes = self.error
            kind = getattr(errors, name)
            error = kind.__new__(kind)
            Exception.__init__(error, message)
            error.__dict__.update(attributes)
            raise error
        if self.trace is not None:
            raise UnitFailed(f"{unit.label} failed in a worker:\n{self.trace}")
        return self.result


def attempt(unit: Unit, worker: Worker, report: Report) -> Outcome:
    """Run ``unit`` and catch what it raises into an :class:`Outcome` (what a worker sends)."""
    try:
        return Outcome(result=unit.run(worker, report))
    except errors.SelectkitError as exc:
        plain = {k: v for k, v in vars(exc).items() if isinstance(v, str | int | float | None)}
        # A plugin's own error class comes back as the nearest class selectkit knows.
        known = next(c for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c)
        return Outcome(error=(known.__name__, str(exc), plain))
    except Exception:
        return Outcome(trace=traceback.format_exc())
