"""load_pool: every format with every shape, ids, groups, skipping, fingerprints and origins."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from selectkit import hookimpl
from selectkit.api import load_pool, load_records_from_list
from selectkit.data.formats import LoadOptions, RawRow
from selectkit.data.load import hash_path
from selectkit.errors import FormatError, ParamError, RecordError
from selectkit.host import reset_host

FORMATS = ["jsonl", "json", "csv", "tsv", "parquet", "hf"]

# The same three records in each shape; ``meta.src`` is the group, ``id`` the id.
SHAPED = {
    "alpaca": [
        {
            "id": 7,
            "instruction": "Add.",
            "input": "2 and 2",
            "output": "4",
            "meta": {"src": "math"},
        },
        {
            "id": 8,
            "instruction": "Greet.",
            "input": "",
            "output": "Hello there",
            "meta": {"src": "chat"},
        },
        {
            "id": 9,
            "instruction": "Name a color.",
            "input": "",
            "output": "Blue",
            "meta": {"src": "art"},
        },
    ],
    "chat": [
        {
            "id": 7,
            "messages": [
                {"role": "user", "content": "Add.\n\n2 and 2"},
                {"role": "assistant", "content": "4"},
            ],
            "meta": {"src": "math"},
        },
        {
            "id": 8,
            "messages": [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Greet."},
                {"role": "assistant", "content": "Hello there"},
            ],
            "meta": {"src": "chat"},
        },
        {
            "id": 9,
            "messages": [
                {"role": "user", "content": "Name a color."},
                {"role": "assistant", "content": "Blue"},
            ],
            "meta": {"src": "art"},
        },
    ],
    "prompt_completion": [
        {"id": 7, "prompt": "Add.\n\n2 and 2", "completion": "4", "meta": {"src": "math"}},
        {"id": 8, "prompt": "Greet.", "completion": "Hello there", "meta": {"src": "chat"}},
        {"id": 9, "prompt": "Name a color.", "completion": "Blue", "meta": {"src": "art"}},
    ],
    "text": [
        {"id": 7, "text": "Add.\n\n2 and 2\n4", "meta": {"src": "math"}},
        {"id": 8, "text": "Hello there", "meta": {"src": "chat"}},
        {"id": 9, "text": "Name a color.\nBlue", "meta": {"src": "art"}},
    ],
}
EXPECTED = {
    "alpaca": [("Add.\n\n2 and 2", "4"), ("Greet.", "Hello there"), ("Name a color.", "Blue")],
    "chat": [
        ("Add.\n\n2 and 2", "4"),
        ("system: Be kind.\n\nuser: Greet.", "Hello there"),
        ("Name a color.", "Blue"),
    ],
    "prompt_completion": [
        ("Add.\n\n2 and 2", "4"),
        ("Greet.", "Hello there"),
        ("Name a color.", "Blue"),
    ],
    "text": [("", "Add.\n\n2 and 2\n4"), ("", "Hello there"), ("", "Name a color.\nBlue")],
}


@pytest.mark.parametrize("shape", list(SHAPED))
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_with_every_shape(fmt, shape, write, host):
    path = write(fmt, SHAPED[shape])
    pool = load_pool(path, host=host, group_field="meta.src")
    assert pool.origin["format"] == fmt and pool.origin["shape"] == shape
    assert [(r.prompt, r.response) for r in pool] == EXPECTED[shape]
    assert pool.ids == ["7", "8", "9"]
    assert pool.groups == ["math", "chat", "art"]
    assert all(r.source == str(path) for r in pool)
    assert pool.cost_unit == "words"
    assert pool.costs.tolist() == [len(r.text.split()) for r in pool]
    if shape == "chat":
        assert pool[1].messages is not None and pool[1].messages[0]["role"] == "system"
    else:
        assert all(r.messages is None for r in pool)
    # the same content gives the same pool, whatever the file format
    same = load_records_from_list(SHAPED[shape], host=host, group_field="meta.src")
    assert pool.fingerprint == same.fingerprint


def test_named_shape_is_used_for_every_row(write, host):
    path = write("jsonl", SHAPED["alpaca"])
    pool = load_pool(path, host=host, shape="text", text_field="output")
    assert [r.response for r in pool] == ["4", "Hello there", "Blue"]
    with pytest.raises(RecordError) as info:
        load_pool(path, host=host, shape="chat")
    assert info.value.field == "messages" and info.value.line == 1


def test_unknown_shape_and_option(write, host):
    path = write("jsonl", SHAPED["text"])
    with pytest.raises(ParamError, match="no shape named 'sharegpt'; known: chat, alpaca"):
        load_pool(path, host=host, shape="sharegpt")
    with pytest.raises(ParamError, match="unknown load option colour"):
        load_pool(path, host=host, colour="red")
    with pytest.raises(ParamError, match="on_error"):
        load_pool(path, host=host, on_error="ignore")


def test_inverted_field_map_is_caught(write, host):
    path = write("jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ParamError, match="did you mean prompt=question"):
        load_pool(path, host=host, field_map={"question": "prompt"})


def test_options_object_and_overrides_combine(write, host):
    path = write("jsonl", SHAPED["alpaca"])
    options = LoadOptions(group_field="meta.src")
    pool = load_pool(path, options, host=host, id_field="nope")
    assert pool.ids == ["0", "1", "2"] and pool.groups == ["math", "chat", "art"]


def test_positional_ids_and_id_field(write, host):
    rows = [{"text": "a", "key": {"n": "x"}}, {"text": "b", "key": {"n": 5}}]
    path = write("jsonl", rows)
    assert load_pool(path, host=host).ids == ["0", "1"]
    assert load_pool(path, host=host, id_field="key.n").ids == ["x", "5"]


def test_positional_ids_stay_put_when_rows_are_skipped(tmp_path, host):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a"}\n{"text": ""}\n{"text": "c"}\n', "utf-8")
    pool = load_pool(path, host=host, on_error="skip")
    assert pool.ids == ["0", "2"] and [r.line for r in pool] == [1, 3]


def assert_names(err: RecordError, path: Path | str, line: int, field: str | None) -> None:
    """The error and its message name the file, the line and (when there is one) the field."""
    message = str(err)
    assert err.path == str(path) and err.line == line and err.field == field
    assert message.startswith(f"{path}:{line}")
    if field is not None:
        assert f"field '{field}'" in message


BAD = {
    # name: (jsonl text, line, field, words in the message)
    "malformed line": ('{"text": "a"}\n{"text": "b"\n', 2, None, "not valid JSON"),
    "non-object row": ('{"text": "a"}\n["text", "b"]\n', 2, None, "expected a JSON object"),
    "missing field": (
        '{"instruction": "i", "output": "o"}\n{"instruction": "i"}\n',
        2,
        "output",
        "missing",
    ),
    "empty response": (
        '{"prompt": "p", "completion": "c"}\n\n{"prompt": "p", "completion": " "}\n',
        3,
        "completion",
        "empty response",
    ),
    "chat without assistant reply": (
        '{"messages": [{"role": "user", "content": "hi"}]}\n',
        1,
        "messages[0].role",
        "not the assistant",
    ),
    "duplicate id": (
        '{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n{"id": "1", "text": "c"}\n',
        3,
        "id",
        "duplicate id '1' (first used at line 1)",
    ),
    "empty id": ('{"id": "", "text": "a"}\n', 1, "id", "the id is empty"),
    "no shape fits": (
        '{"question": "q", "answer": "a", "meta": {"x": 1}}\n',
        1,
        None,
        "has: question, answer, meta.x",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_file_line_and_field(case, tmp_path, host):
    text, line, field, words = BAD[case]
    path = tmp_path / "bad.jsonl"
    path.write_text(text, "utf-8")
    with pytest.raises(RecordError) as info:
        load_pool(path, host=host)
    assert_names(info.value, path, line, field)
    assert words in str(info.value)


def test_no_shape_error_suggests_the_options(tmp_path, host):
    path = tmp_path / "x.jsonl"
    path.write_text('{"question": "q"}\n', "utf-8")
    with pytest.raises(RecordError) as info:
        load_pool(path, host=host)
    assert "--shape" in str(info.value) and "--text-field" in str(info.value)


def test_group_errors(write, host):
    rows = [{"text": "a", "g": "x"}, {"text": "b"}, {"text": "c", "g": ""}, {"text": "d", "g": 3}]
    path = write("jsonl", rows)
    with pytest.raises(RecordError) as info:
        load_pool(path, host=host, group_field="g")
    assert_names(info.value, path, 2, "g")
    assert "missing (the group field)" in str(info.value)
    pool = load_pool(path, host=host, group_field="g", on_error="skip")
    assert pool.ids == ["0", "3"] and pool.groups == ["x", "3"]
    assert len(pool.skipped) == 2
    assert pool.skipped[0].startswith(f"{path}:2: field 'g': missing")
    assert pool.skipped[1].startswith(f"{path}:3: field 'g': the group is empty")


def test_skip_mode_counts_and_keeps_messages_in_line_order(tmp_path, host):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"id": "a", "prompt": "p", "completion": "one"}',
                '{"id": "b", "prompt": "p", "completion": ""}',
                "{broken",
                '{"id": "a", "prompt": "p", "completion": "dup"}',
                "[1]",
                '{"id": "c", "prompt": "p", "completion": "three"}',
                '{"id": "d", "prompt": "p"}',
            ]
        ),
        "utf-8",
    )
    pool = load_pool(path, host=host, on_error="skip")
    assert pool.ids == ["a", "c"] and [r.response for r in pool] == ["one", "three"]
    assert len(pool.skipped) == 5
    assert [int(m.split(":")[1]) for m in pool.skipped] == [2, 3, 4, 5, 7]


def test_all_rows_failing_is_an_error(tmp_path, host):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": ""}\n{"text": "  "}\n', "utf-8")
    with pytest.raises(FormatError, match="no usable records, all 2 failed"):
        load_pool(path, host=host, on_error="skip")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", "utf-8")
    with pytest.raises(FormatError, match="has no records"):
        load_pool(empty, host=host)


def test_unknown_format_through_load_pool(tmp_path, host):
    path = tmp_path / "x.yaml"
    path.write_text("text: a\n", "utf-8")
    with pytest.raises(FormatError, match=r"cannot tell the format .*jsonl \(\.jsonl"):
        load_pool(path, host=host)


def test_origin_names_path_hash_format_and_shape(write, host):
    path = write("jsonl", SHAPED["text"])
    pool = load_pool(str(path), host=host)
    assert pool.origin == {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "format": "jsonl",
        "shape": "text",
    }


def test_directory_hash_changes_with_any_file(write, host):
    path = write("hf", SHAPED["text"])
    pool = load_pool(path, host=host)
    assert pool.origin["sha256"] == hash_path(path)
    before = hash_path(path)
    info = path / "dataset_info.json"
    info.write_text('{"description": "changed"}', "utf-8")
    assert hash_path(path) != before
    (path / "extra.txt").write_text("x", "utf-8")
    assert len({before, hash_path(path)}) == 2


FIELDS_TO_CHANGE = [
    ("id", 70),
    ("prompt", "Add!"),
    ("completion", "5"),
    ("meta", {"src": "maths"}),
]


@pytest.mark.parametrize(("key", "value"), FIELDS_TO_CHANGE)
def test_fingerprint_changes_when_any_content_changes(key, value, write, host):
    rows = json.loads(json.dumps(SHAPED["prompt_completion"]))
    base = load_pool(write("jsonl", rows, "base"), host=host, group_field="meta.src")
    rows[0][key] = value
    changed = load_pool(write("jsonl", rows, "changed"), host=host, group_field="meta.src")
    assert changed.fingerprint != base.fingerprint
    assert changed.origin["sha256"] != base.origin["sha256"]


def test_fingerprint_ignores_fields_no_method_sees(write, host):
    rows = json.loads(json.dumps(SHAPED["prompt_completion"]))
    base = load_pool(write("jsonl", rows, "base"), host=host)
    for row in rows:
        row["unused"] = "anything"
    other = load_pool(write("json", rows, "other"), host=host)
    assert other.fingerprint == base.fingerprint
    assert other.origin["sha256"] != base.origin["sha256"]


def test_load_records_from_list(host):
    pool = load_records_from_list(SHAPED["alpaca"], LoadOptions(group_field="meta.src"), host=host)
    assert pool.origin["format"] == "list" and pool.origin["path"] is None
    assert pool.origin["shape"] == "alpaca" and len(pool.origin["sha256"]) == 64
    assert [r.line for r in pool] == [1, 2, 3]
    with pytest.raises(RecordError) as info:
        load_records_from_list([{"text": "a"}, {"text": ""}], host=host)
    assert info.value.path is None and info.value.line == 2 and info.value.field == "text"
    assert str(info.value).startswith("<records>:2: field 'text': empty response")
    with pytest.raises(RecordError, match="expected an object"):
        load_records_from_list([{"text": "a"}, "b"], host=host)  # type: ignore[list-item]


def test_a_plugin_can_provide_the_rows(host):
    class Memory:
        @hookimpl
        def selectkit_load_records(self, source, options):
            if source.startswith("mem://"):
                return [RawRow(10, {"text": "from memory"}), RawRow(11, {"text": ""})]
            return None

    host.register(Memory(), "memory")
    pool = load_pool("mem://x", host=host, on_error="skip")
    assert [r.response for r in pool] == ["from memory"]
    assert pool.origin == {"path": "mem://x", "sha256": None, "format": None, "shape": "text"}
    assert len(pool.skipped) == 1
    assert pool.skipped[0].startswith("mem://x:11: field 'text': empty response")


def test_a_plugin_format_is_chosen_by_suffix(tmp_path, host):
    from selectkit.data.formats import Format

    class Lines(Format):
        name = "lines"
        suffixes = (".lines",)

        def read(self, path, on_error):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                yield RawRow(number, {"prompt": "say", "completion": line})

    class Plugin:
        @hookimpl
        def selectkit_register_formats(self):
            return [Lines]

    host.register(Plugin(), "lines")
    path = tmp_path / "x.lines"
    path.write_text("a\nb\n", "utf-8")
    pool = load_pool(path, host=host)
    assert pool.origin["format"] == "lines" and [r.response for r in pool] == ["a", "b"]


def test_default_host(write, monkeypatch):
    monkeypatch.setenv("SELECTKIT_LOAD_PLUGINS", "")
    reset_host()
    try:
        pool = load_pool(write("jsonl", SHAPED["text"]))
    finally:
        reset_host()
    assert len(pool) == 3
