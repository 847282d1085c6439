from __future__ import annotations

from selectkit.data.fields import (
    MISSING,
    field_names,
    get_field,
    is_empty,
    kind,
    text_value,
)

ROW = {
    "text": "hello",
    "empty": "",
    "null": None,
    "metadata": {"pile_set_name": "Github", "inner": {"deep": 3}, "blank": ""},
    "a.b": "flat dotted key",
    "a": {"b": "nested"},
    "messages": [{"role": "user", "content": "hi"}],
}


def test_top_level_and_nested_fields():
    assert get_field(ROW, "text") == "hello"
    assert get_field(ROW, "metadata.pile_set_name") == "Github"
    assert get_field(ROW, "metadata.inner.deep") == 3
    assert get_field(ROW, "messages.0.content") == "hi"


def test_missing_is_distinct_from_empty_and_null():
    assert get_field(ROW, "nope") is MISSING
    assert get_field(ROW, "metadata.nope") is MISSING
    assert get_field(ROW, "text.deeper") is MISSING
    assert get_field(ROW, "messages.5.content") is MISSING
    assert get_field(ROW, "messages.x") is MISSING
    assert get_field(ROW, "") is MISSING
    assert get_field(ROW, "empty") == ""
    assert get_field(ROW, "null") is None
    assert get_field(ROW, "metadata.blank") == ""
    assert not MISSING and repr(MISSING) == "MISSING"


def test_literal_dotted_key_wins_over_nesting():
    assert get_field(ROW, "a.b") == "flat dotted key"
    assert get_field({"x": {"y.z": 1}}, "x.y.z") == 1
    assert get_field({"x.y": {"z": 2}}, "x.y.z") == 2


def test_is_empty_and_text_value():
    assert is_empty(None) and is_empty("") and is_empty("  \n")
    assert not is_empty("x") and not is_empty(0)
    assert text_value("s") == "s"
    assert text_value(3) == "3" and text_value(1.5) == "1.5"
    assert text_value(True) == "true"
    assert text_value({"a": 1}) is None and text_value([1]) is None and text_value(None) is None
    assert text_value(float("nan")) is None and text_value(float("inf")) is None  # never text
    assert text_value(3, numbers=False) is None and text_value(True, numbers=False) is None
    assert text_value("s", numbers=False) == "s"


def test_kind_names_values_for_messages():
    assert [kind(v) for v in (None, True, 3, 1.5, "s", [1], (1,), {"a": 1})] == [
        "null",
        "a boolean",
        "a number",
        "a number",
        "a string",
        "a list",
        "a list",
        "an object",
    ]
    assert kind(float("nan")) == "NaN" and kind(-float("inf")) == "an infinite number"
    assert kind(b"x") == "a bytes"


def test_field_names_are_dotted_and_capped():
    names = field_names(ROW)
    assert "metadata.pile_set_name" in names and "metadata.inner" in names
    assert "text" in names and "messages" in names
    many = {f"f{i}": i for i in range(50)}
    capped = field_names(many, limit=5)
    assert len(capped) == 6 and capped[-1] == "... (45 more)"
