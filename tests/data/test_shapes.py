"""Record shapes: parsing, field maps, dotted paths and auto-detection."""

from __future__ import annotations

import pytest

from selectkit.data.formats import LoadOptions
from selectkit.data.shapes import (
    AlpacaShape,
    ChatShape,
    Parsed,
    PromptCompletionShape,
    TextShape,
    detect_shape,
)
from selectkit.errors import RecordError

OPTS = LoadOptions()


def test_alpaca_with_and_without_input():
    shape = AlpacaShape()
    assert shape.parse({"instruction": "Sum.", "input": "2 2", "output": "4"}, OPTS) == Parsed(
        "Sum.\n\n2 2", "4"
    )
    assert shape.parse({"instruction": "Sum.", "input": "  ", "output": "4"}, OPTS).prompt == "Sum."
    assert shape.parse({"instruction": "Sum.", "output": "4"}, OPTS).prompt == "Sum."
    assert shape.parse({"instruction": "Sum.", "input": None, "output": "4"}, OPTS).prompt == "Sum."
    assert shape.parse({"instruction": "", "input": "2 2", "output": "4"}, OPTS).prompt == "2 2"


def test_alpaca_field_map_and_dotted_paths():
    options = LoadOptions(
        field_map={"output": "response", "instruction": "q.text", "input": "q.context"}
    )
    row = {"q": {"text": "Sum.", "context": "2 2"}, "response": "4"}
    assert AlpacaShape().matches(row, options)
    assert AlpacaShape().parse(row, options) == Parsed("Sum.\n\n2 2", "4")


@pytest.mark.parametrize(
    ("value", "found"), [(2, "a number"), (2.5, "a number"), (True, "a boolean")]
)
def test_numbers_are_refused_as_text_unless_converted(value, found):
    row = {"prompt": "1+1", "completion": value}
    with pytest.raises(RecordError, match=rf"must be text .*, not {found}; pass --convert-values"):
        PromptCompletionShape().parse(row, OPTS)
    converted = PromptCompletionShape().parse(row, LoadOptions(convert_values=True))
    assert converted.response == {2: "2", 2.5: "2.5", True: "true"}[value]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_never_text(value):
    row = {"prompt": "x", "completion": value}
    for options in (OPTS, LoadOptions(convert_values=True)):
        with pytest.raises(RecordError, match="never text") as info:
            PromptCompletionShape().parse(row, options)
        assert info.value.field == "completion"


def test_chat_content_numbers_follow_the_same_rule():
    row = {"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": "x"}]}
    with pytest.raises(RecordError, match="not a number; pass --convert-values") as info:
        ChatShape().parse(row, OPTS)
    assert info.value.field == "messages[0].content"
    assert ChatShape().parse(row, LoadOptions(convert_values=True)).prompt == "7"


def test_objects_are_never_text():
    for options in (OPTS, LoadOptions(convert_values=True)):
        with pytest.raises(RecordError, match=r"must be text .*, not an object") as info:
            PromptCompletionShape().parse({"prompt": {"a": 1}, "completion": "x"}, options)
        assert info.value.field == "prompt"


def test_missing_field_names_the_field_and_the_map():
    with pytest.raises(RecordError) as info:
        AlpacaShape().parse({"instruction": "x"}, OPTS)
    assert info.value.field == "output"
    assert "--field output=NAME" in str(info.value)
    assert "this row has: instruction" in str(info.value)
    assert info.value.path is None and info.value.line is None  # the loader adds those

    mapped = LoadOptions(field_map={"output": "answer"})
    with pytest.raises(RecordError) as info:
        AlpacaShape().parse({"instruction": "x"}, mapped)
    assert info.value.field == "answer" and "per the field map" in str(info.value)


@pytest.mark.parametrize("empty", ["", "   \n", None])
def test_empty_response_names_the_field(empty):
    with pytest.raises(RecordError, match="empty response") as info:
        PromptCompletionShape().parse({"prompt": "p", "completion": empty}, OPTS)
    assert info.value.field == "completion"


def test_prompt_may_be_present_but_empty():
    assert PromptCompletionShape().parse({"prompt": "", "completion": "c"}, OPTS) == Parsed("", "c")


def test_text_shape_and_text_field():
    assert TextShape().parse({"text": "hello"}, OPTS) == Parsed("", "hello")
    options = LoadOptions(text_field="doc.body")
    assert TextShape().parse({"doc": {"body": "hi"}}, options).response == "hi"
    with pytest.raises(RecordError) as info:
        TextShape().parse({"text": "hello"}, options)
    assert info.value.field == "doc.body"
    assert TextShape().parse({"contents": "x"}, LoadOptions(field_map={"text": "contents"})) == (
        Parsed("", "x")
    )


CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Two plus two?"},
    {"role": "assistant", "content": "Four."},
]


def test_chat_multi_turn():
    parsed = ChatShape().parse({"messages": CHAT}, OPTS)
    assert parsed.response == "Four."
    assert parsed.prompt == (
        "system: Be brief.\n\nuser: Hi\n\nassistant: Hello.\n\nuser: Two plus two?"
    )
    assert parsed.messages == tuple(CHAT)


def test_chat_single_turn_prompt_is_the_user_text():
    parsed = ChatShape().parse({"messages": CHAT[1:3]}, OPTS)
    assert parsed == Parsed("Hi", "Hello.", tuple(CHAT[1:3]))


def test_chat_keeps_only_role_and_content_and_reads_json_text():
    row = {"messages": [{"role": "user", "content": "Hi", "name": "x"}, CHAT[2]]}
    assert ChatShape().parse(row, OPTS).messages == ({"role": "user", "content": "Hi"}, CHAT[2])
    import json

    as_text = {"messages": json.dumps(CHAT[1:3])}  # how CSV holds a list
    assert ChatShape().matches(as_text, OPTS)
    assert ChatShape().parse(as_text, OPTS).response == "Hello."
    assert not ChatShape().matches({"messages": "[not json"}, OPTS)


@pytest.mark.parametrize(
    ("messages", "field", "match"),
    [
        (CHAT[:4], "messages[3].role", "not the assistant"),
        ([CHAT[1], {"role": "assistant", "content": " "}], "messages[1].content", "empty"),
        ([CHAT[1], {"role": "robot", "content": "x"}], "messages[1].role", "role 'robot'"),
        ([CHAT[1], "hello"], "messages[1]", "must be an object"),
        ([CHAT[1], {"role": "assistant", "content": ["x"]}], "messages[1].content", "text"),
        ([], "messages", "no messages"),
        ("hello", "messages", "must be a list"),
    ],
)
def test_chat_errors_name_the_field(messages, field, match):
    with pytest.raises(RecordError, match=match) as info:
        ChatShape().parse({"messages": messages}, OPTS)
    assert info.value.field == field


def test_chat_field_map():
    options = LoadOptions(field_map={"messages": "conversation.turns"})
    row = {"conversation": {"turns": CHAT[1:3]}}
    assert ChatShape().matches(row, options)
    assert ChatShape().parse(row, options).response == "Hello."
    with pytest.raises(RecordError) as info:
        ChatShape().parse({"turns": []}, options)
    assert info.value.field == "conversation.turns"


def test_detection_order(host):
    shapes = host.shapes
    assert list(shapes) == ["chat", "alpaca", "prompt_completion", "text"]

    def detected(row, options=OPTS):
        shape = detect_shape(row, options, shapes)
        return shape.name if shape else None

    everything = {
        "messages": CHAT[1:3],
        "instruction": "i",
        "output": "o",
        "prompt": "p",
        "completion": "c",
        "text": "t",
    }
    assert detected(everything) == "chat"
    assert detected({k: v for k, v in everything.items() if k != "messages"}) == "alpaca"
    assert detected({"prompt": "p", "completion": "c", "text": "t"}) == "prompt_completion"
    assert detected({"text": "t", "other": 1}) == "text"
    assert detected({"question": "q", "answer": "a"}) is None
    mapped = LoadOptions(field_map={"prompt": "question", "completion": "answer"})
    assert detected({"question": "q", "answer": "a"}, mapped) == "prompt_completion"
    # naming the text field says the row is raw text, even when another shape would match
    assert detected(everything, LoadOptions(text_field="text")) == "text"
