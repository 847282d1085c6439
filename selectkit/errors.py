"""Errors that tell the user what went wrong, where, and what to do about it.

Every :class:`SelectkitError` is a problem with the request or its environment that the user
can fix; the command line prints it as one ``error:`` line and exits with
:data:`EXIT_BAD_INPUT`. Anything else that escapes a command is a bug
(:data:`EXIT_INTERNAL`).
"""

from __future__ import annotations

#: A bug in selectkit or in a plugin: the message says where, and how to report it.
EXIT_INTERNAL = 1
#: Bad input or an environment the command cannot work in (the message says what to change).
EXIT_BAD_INPUT = 2
#: A check ran and found problems (``selectkit cache verify``, ``selectkit plugins --strict``).
EXIT_PROBLEMS = 3


class SelectkitError(Exception):
    """Base class of every error selectkit raises on purpose."""


class RecordError(SelectkitError):
    """A record that cannot be used: names the file, the line (or row) and the field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.path or "<records>"
        if self.line is not None:
            where += f":{self.line}"
        if self.field is not None:
            where += f": field '{self.field}'"
        return f"{where}: {self.reason}"


class FormatError(SelectkitError):
    """A file whose format is unknown or unreadable as a whole."""


class BudgetError(SelectkitError):
    """A budget or constraint that cannot be met or makes no sense for the pool."""


class ParamError(SelectkitError):
    """A method, solver or parameter that does not exist or has a bad value."""


class PluginError(SelectkitError):
    """A plugin that could not be loaded or that broke the plugin contract."""


class OutputError(SelectkitError):
    """An output that cannot be written where asked, or that would overwrite an input."""


class StoreError(SelectkitError):
    """A feature-store entry that cannot be created, opened, written or read as asked."""


class TrainingDiverged(SelectkitError):
    """A training run whose loss became NaN or infinite: names the step and the loss."""

    def __init__(self, step: int, loss: float, what: str = "training") -> None:
        self.step = step
        self.loss = loss
        super().__init__(
            f"{what} diverged: the loss of step {step} is {loss}; lower the learning rate or "
            "check the records for empty or extreme examples"
        )
