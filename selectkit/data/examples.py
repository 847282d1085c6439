"""Records as training examples: token ids and response-only loss masks, under a chat or
plain template.

The loss mask marks the tokens a model is trained to produce: the response and whatever the
template puts after it to end the turn (the chat template's end-of-turn tokens, or EOS in the
plain template), and nothing of the prompt or the template around it. The prompt part is found
by tokenizing the rendered prompt (with the generation prompt of a chat template) and checking
it is a prefix of the full ids; when tokenization across the boundary differs, character offsets
decide instead.

A causal LM predicts each token from the ones before it, so the loss never covers the first
token of an example (its label is dropped by the one-position shift every loss makes); an
example whose loss mask covers nothing after that first position has nothing to learn from and
is refused here, where its file and line are known, rather than in the gradient pass.

The tokenizer is any Hugging Face tokenizer (duck-typed: nothing here imports transformers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from selectkit.data.pool import Record
from selectkit.errors import ParamError, RecordError

Template = Literal["auto", "chat", "plain"]
Truncation = Literal["left", "right"]


@dataclass(frozen=True)
class Tokenized:
    """A record's token ids and, per token, whether the loss counts it (response tokens)."""

    input_ids: list[int]
    loss_mask: list[bool]

    @property
    def response_length(self) -> int:
        """How many tokens the loss mask marks (the response's token cost)."""
        return sum(self.loss_mask)


def loss_token_count(loss_mask: Sequence[bool]) -> int:
    """The loss-mask entries a causal LM predicts: every one but the first position's (labels
    are shifted by one, as ``models.losses.response_losses`` and Hugging Face models do)."""
    return sum(loss_mask[1:])


@dataclass
class _Rendered:
    """A record as text: the full example, the prompt part (``None`` if the template could not
    render one) and the special ids the plain template adds around the text."""

    full: str
    prefix: str | None
    response: str
    lead: list[int]
    trail: list[int]


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def uses_chat_template(record: Record, tokenizer: Any, template: Template) -> bool:
    """Whether ``record`` is rendered with the tokenizer's chat template.

    Raw text (no prompt, no messages) never is; ``"auto"`` uses the chat template when the
    tokenizer has one; ``"chat"`` requires one.
    """
    if template not in ("auto", "chat", "plain"):
        raise ParamError(f"template must be auto, chat or plain, not '{template}'")
    if record.messages is None and not record.prompt:
        return False
    if template == "plain":
        return False
    has = _has_chat_template(tokenizer)
    if template == "chat" and not has:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ParamError(
            f"template 'chat' needs a tokenizer with a chat template, and {name} has none; "
            "use the plain or auto template"
        )
    return has


def _special_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after one sequence, and EOS at the end when it
    adds nothing there, so a plain example ends the way generation should stop."""
    probe = "a"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    lead: list[int] = []
    trail: list[int] = []
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            lead, trail = full[:start], full[start + len(bare) :]
            break
    eos = getattr(tokenizer, "eos_token_id", None)
    if not trail and eos is not None:
        trail = [int(eos)]
    return lead, trail


def _where(record: Record) -> dict[str, Any]:
    return {"path": record.source, "line": record.line}


def _render(
    record: Record,
    tokenizer: Any,
    template: Template,
    specials: tuple[list[int], list[int]],
) -> _Rendered:
    if uses_chat_template(record, tokenizer, template):
        if record.messages is not None:
            messages = [dict(m) for m in record.messages]
        else:
            messages = [
                {"role": "user", "content": record.prompt},
                {"role": "assistant", "content": record.response},
            ]
        try:
            full = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception as exc:  # jinja errors (e.g. roles must alternate) are about the record
            raise RecordError(
                f"the chat template cannot render it: {exc}", **_where(record)
            ) from exc
        try:
            prefix = tokenizer.apply_chat_template(
                messages[:-1], tokenize=False, add_generation_prompt=True
            )
        except Exception:
            prefix = None
        return _Rendered(full, prefix, messages[-1]["content"], [], [])
    lead, trail = specials
    prefix = f"{record.prompt}\n" if record.prompt else ""
    return _Rendered(prefix + record.response, prefix, record.response, lead, trail)


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    encoded = tokenizer(
        texts, add_special_tokens=False, return_attention_mask=False, verbose=False
    )["input_ids"]
    return [list(ids) for ids in encoded]


def _prompt_length_by_offsets(tokenizer: Any, rendered: _Rendered, record: Record) -> int:
    """How many of the full text's tokens belong to the prompt, from character offsets: a token
    is part of the response when it covers any character of it."""
    if rendered.prefix is not None and rendered.full.startswith(rendered.prefix):
        boundary = len(rendered.prefix)
    else:
        boundary = rendered.full.rfind(rendered.response)
        if boundary < 0:
            raise RecordError(
                "cannot find the response in the text the template renders, so the loss mask "
                "cannot be placed; use the plain template",
                **_where(record),
            )
    try:
        encoded = tokenizer(rendered.full, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as exc:
        raise ParamError(
            "this tokenizer splits prompt and response differently when they are tokenized "
            "apart, and it cannot report character offsets (use a fast tokenizer)"
        ) from exc
    for index, (_, end) in enumerate(encoded["offset_mapping"]):
        if end > boundary:
            return index
    return len(encoded["offset_mapping"])


def _truncate(
    ids: list[int],
    n_prompt: int,
    record: Record,
    max_length: int | None,
    truncation: Truncation,
) -> Tokenized:
    n_response = len(ids) - n_prompt
    if n_response <= 0:
        raise RecordError("the response has no tokens under this tokenizer", **_where(record))
    if max_length is not None and len(ids) > max_length:
        if truncation == "left":
            if n_response >= max_length:
                ids, n_prompt = ids[n_prompt : n_prompt + max_length], 0
            else:
                keep = max_length - n_response
                ids, n_prompt = ids[n_prompt - keep :], keep
        elif truncation == "right":
            if n_prompt >= max_length:
                raise RecordError(
                    f"truncated away: the prompt alone has {n_prompt} tokens, so cutting to "
                    f"--max-length {max_length} from the right leaves no response; raise "
                    "--max-length, or truncate from the left",
                    **_where(record),
                )
            ids = ids[:max_length]
        else:
            raise ParamError(f"truncation must be left or right, not '{truncation}'")
    mask = [False] * n_prompt + [True] * (len(ids) - n_prompt)
    if loss_token_count(mask) == 0:  # one token left: a causal LM predicts none at position 0
        if max_length is not None and max_length < 2:
            reason = (
                f"truncated away: max_length {max_length} (--max-length) keeps one token, which "
                "nothing before it predicts, so no response token is left to take a loss over; "
                "raise max_length to 2 or more"
            )
        else:
            reason = (
                "the example is one token, which nothing before it predicts, so no response "
                "token is left to take a loss over; give the record a prompt or a longer response"
            )
        raise RecordError(reason, **_where(record))
    return Tokenized(list(ids), mask)


def tokenize_many(
    records: Sequence[Record],
    tokenizer: Any,
    *,
    template: Template = "auto",
    max_length: int | None = None,
    truncation: Truncation = "left",
    batch_size: int = 1024,
) -> list[Tokenized | RecordError]:
    """Token ids and response-only loss mask of each record, tokenized in batches; a record
    that cannot be used gets its :class:`RecordError` in its place instead of stopping the
    others (the caller decides whether to raise or skip).

    ``template``: ``"auto"`` uses the tokenizer's chat template when it has one (raw text is
    never templated), ``"plain"`` renders ``prompt + "\\n" + response`` between the tokenizer's
    own special tokens and EOS. ``truncation`` to ``max_length``: ``"left"`` drops prompt tokens
    first and keeps the start of a response longer than ``max_length``; ``"right"`` cuts the end.
    """
    if max_length is not None and max_length < 1:
        raise ParamError(f"max_length must be a positive number of tokens, got {max_length}")
    if truncation not in ("left", "right"):
        raise ParamError(f"truncation must be left or right, not '{truncation}'")
    specials = _special_ids(tokenizer)
    results: list[Tokenized | RecordError] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        rendered: list[_Rendered | RecordError] = []
        for record in chunk:
            try:
                rendered.append(_render(record, tokenizer, template, specials))
            except RecordError as err:
                rendered.append(err)
        ok = [r for r in rendered if isinstance(r, _Rendered)]
        full_ids = iter(_encode(tokenizer, [r.full for r in ok]))
        prefix_ids = iter(_encode(tokenizer, [r.prefix for r in ok if r.prefix is not None]))
        for record, item in zip(chunk, rendered, strict=True):
            if isinstance(item, RecordError):
                results.append(item)
                continue
            body = next(full_ids)
            head = next(prefix_ids) if item.prefix is not None else None
            try:
                if head is not None and body[: len(head)] == head:
                    n_body_prompt = len(head)
                else:
                    n_body_prompt = _prompt_length_by_offsets(tokenizer, item, record)
                ids = item.lead + body + item.trail
                n_prompt = len(item.lead) + n_body_prompt
                results.append(_truncate(ids, n_prompt, record, max_length, truncation))
            except RecordError as err:
                results.append(err)
    return results
