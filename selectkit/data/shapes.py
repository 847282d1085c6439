"""Record shapes: how a row's fields become a prompt and a response.

A shape names the fields it reads by their canonical names (``instruction``, ``output``, ...);
``LoadOptions.field_map`` maps a canonical name to the field that holds it in the user's data
(``{"output": "response"}``: the alpaca output comes from the field ``response``), and every
field name may be a dotted path into nested objects. Shapes raise :class:`RecordError` naming the
field; the loader adds the path and line.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from selectkit.data.fields import MISSING, field_names, get_field, is_empty, kind, text_value
from selectkit.data.formats import LoadOptions
from selectkit.errors import RecordError
from selectkit.markers import hookimpl


@dataclass(frozen=True)
class Parsed:
    """What a shape makes of a row: the prompt, the response, and (chat only) the messages."""

    prompt: str
    response: str
    messages: tuple[dict[str, str], ...] | None = None


class Shape(ABC):
    """A record shape. ``name`` is what users pass to ``--shape``; ``fields`` are the canonical
    field names ``field_map`` may rename; ``required`` those that :meth:`matches` looks for."""

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]] = ()
    required: ClassVar[tuple[str, ...]] = ()

    def field(self, canonical: str, options: LoadOptions) -> str:
        """The (dotted) name of the data field holding canonical field ``canonical``."""
        return options.field_map.get(canonical, canonical)

    def matches(self, row: Mapping[str, Any], options: LoadOptions) -> bool:
        """Whether ``row`` looks like this shape; used to pick a shape when none is named."""
        return all(
            get_field(row, self.field(name, options)) is not MISSING for name in self.required
        )

    @abstractmethod
    def parse(self, row: Mapping[str, Any], options: LoadOptions) -> Parsed:
        """Turn ``row`` into a :class:`Parsed`, or raise :class:`RecordError` with ``field``."""

    # -- helpers for subclasses ---------------------------------------------------------

    def _role(self, canonical: str, options: LoadOptions) -> str:
        """How the shape uses a field, for messages: says so when the field map renamed it."""
        if self.field(canonical, options) == canonical:
            return f"the {self.name} shape's '{canonical}'"
        return f"the {self.name} shape's '{canonical}', per the field map"

    def _text(
        self,
        row: Mapping[str, Any],
        canonical: str,
        options: LoadOptions,
        *,
        required: bool = True,
        nonempty: bool = False,
    ) -> str:
        """The text of a field (null is empty text): a missing required field, a value that
        is not text, or (with ``nonempty``) an empty value raises a RecordError naming the
        field."""
        actual = self.field(canonical, options)
        value = get_field(row, actual)
        if value is MISSING:
            if not required:
                return ""
            hint = (
                f"; if your data calls it something else, use --field {canonical}=NAME"
                if actual == canonical
                else ""
            )
            raise RecordError(
                f"missing ({self._role(canonical, options)}); this row has: "
                f"{', '.join(field_names(row)) or 'no fields'}{hint}",
                field=actual,
            )
        text = as_text(value, options)
        if text is None:
            raise not_text(value, f"must be text ({self._role(canonical, options)})", actual)
        if nonempty and is_empty(text):
            raise RecordError(
                f"empty response ({self._role(canonical, options)}): a record needs a "
                "response to train on",
                field=actual,
            )
        return text


_CONVERT_HINT = (
    "pass --convert-values (or LoadOptions(convert_values=True)) to read numbers and booleans "
    "as text"
)


def as_text(value: Any, options: LoadOptions) -> str | None:
    """A text field's value: text as it is, null as empty text, and numbers and booleans as
    text only when ``options.convert_values`` says so; ``None`` when it is not text."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return text_value(value, numbers=options.convert_values)


def not_text(value: Any, what: str, field: str) -> RecordError:
    """The error for a value :func:`as_text` refused: ``what`` is how the field is used."""
    found = kind(value)
    hint = ""
    if found in ("a number", "a boolean"):
        hint = f"; {_CONVERT_HINT}"
    elif found in ("NaN", "an infinite number"):
        hint = "; NaN and infinities are never text: write the text, or null for none"
    return RecordError(f"{what}, not {found}{hint}", field=field)


class AlpacaShape(Shape):
    """``instruction``, optional ``input`` and ``output``: the prompt is the instruction
    followed by the input as a new paragraph when there is one."""

    name = "alpaca"
    fields = ("instruction", "input", "output")
    required = ("instruction", "output")

    def parse(self, row: Mapping[str, Any], options: LoadOptions) -> Parsed:
        instruction = self._text(row, "instruction", options)
        extra = self._text(row, "input", options, required=False)
        response = self._text(row, "output", options, nonempty=True)
        if is_empty(extra):
            prompt = instruction
        elif is_empty(instruction):
            prompt = extra
        else:
            prompt = f"{instruction}\n\n{extra}"
        return Parsed(prompt, response)


class PromptCompletionShape(Shape):
    """``prompt`` and ``completion``."""

    name = "prompt_completion"
    fields = ("prompt", "completion")
    required = ("prompt", "completion")

    def parse(self, row: Mapping[str, Any], options: LoadOptions) -> Parsed:
        prompt = self._text(row, "prompt", options)
        response = self._text(row, "completion", options, nonempty=True)
        return Parsed(prompt, response)


class TextShape(Shape):
    """Raw text from field ``text`` (or ``--text-field``): no prompt, all of it is trained on."""

    name = "text"
    fields = ("text",)
    required = ("text",)

    def field(self, canonical: str, options: LoadOptions) -> str:
        if canonical == "text" and options.text_field:
            return options.text_field
        return super().field(canonical, options)

    def parse(self, row: Mapping[str, Any], options: LoadOptions) -> Parsed:
        return Parsed("", self._text(row, "text", options, nonempty=True))


CHAT_ROLES = ("system", "user", "assistant")


def _messages_value(value: Any) -> Any:
    """Messages as stored: a list, or (from CSV and TSV, which hold only text) a string with a
    JSON list in it, which is decoded."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            decoded = json.loads(value)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
            return value
        if isinstance(decoded, list):
            return decoded
    return value


class ChatShape(Shape):
    """``messages``: a list of ``{"role", "content"}`` with roles system, user and assistant.

    The response is the last message, which must be the assistant's; the prompt is everything
    before it as text (just the user's words for a single user turn, else one ``role: content``
    paragraph per message). The messages are kept whole for chat templates. In CSV and TSV,
    which hold only text, the field may be the messages' JSON.
    """

    name = "chat"
    fields = ("messages",)
    required = ("messages",)

    def matches(self, row: Mapping[str, Any], options: LoadOptions) -> bool:
        return isinstance(_messages_value(get_field(row, self.field("messages", options))), list)

    def parse(self, row: Mapping[str, Any], options: LoadOptions) -> Parsed:
        name = self.field("messages", options)
        value = _messages_value(get_field(row, name))
        if value is MISSING:
            self._text(row, "messages", options)  # raises the missing-field error
        if not isinstance(value, list):
            raise RecordError(
                f"must be a list of {{role, content}} messages, not {type(value).__name__}",
                field=name,
            )
        if not value:
            raise RecordError("has no messages", field=name)
        messages: list[dict[str, str]] = []
        for index, message in enumerate(value):
            where = f"{name}[{index}]"
            if not isinstance(message, Mapping):
                raise RecordError(
                    f"message {index} must be an object with role and content", field=where
                )
            role = message.get("role")
            if role not in CHAT_ROLES:
                raise RecordError(
                    f"message {index} has role {role!r}; expected one of {', '.join(CHAT_ROLES)}",
                    field=f"{where}.role",
                )
            content = message.get("content")
            text = as_text(content, options)
            if text is None:
                raise not_text(
                    content, f"message {index} must have text content", f"{where}.content"
                )
            messages.append({"role": role, "content": text})
        last = messages[-1]
        where = f"{name}[{len(messages) - 1}]"
        if last["role"] != "assistant":
            raise RecordError(
                f"the last message is from the {last['role']}, not the assistant: a chat "
                "record must end with the assistant reply to train on",
                field=f"{where}.role",
            )
        if is_empty(last["content"]):
            raise RecordError(
                "the last assistant message is empty: a record must have a response to train on",
                field=f"{where}.content",
            )
        return Parsed(render_messages(messages[:-1]), last["content"], tuple(messages))


def render_messages(messages: list[dict[str, str]]) -> str:
    """Messages as plain text: a lone user turn is its content, otherwise one
    ``role: content`` paragraph per message."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


@hookimpl
def selectkit_register_shapes() -> list[type[Shape]]:
    """The built-in shapes, in auto-detection order."""
    return [ChatShape, AlpacaShape, PromptCompletionShape, TextShape]


def detect_shape(
    row: Mapping[str, Any], options: LoadOptions, shapes: Mapping[str, type[Shape]]
) -> Shape | None:
    """The first shape (in registration order) that matches ``row``, or ``None``.

    ``options.text_field`` means the user said where the text is, so it picks the text shape.
    """
    if options.text_field and "text" in shapes:
        return shapes["text"]()
    for cls in shapes.values():
        shape = cls()
        if shape.matches(row, options):
            return shape
    return None
