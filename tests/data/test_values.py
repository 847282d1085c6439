"""Record values: what loads is JSON and can be written back; numbers are not silently text."""

from __future__ import annotations

import base64
import datetime
import decimal
import json

import numpy as np
import pytest

from selectkit import hookimpl
from selectkit.api import load_pool, load_records_from_list
from selectkit.data.formats import LoadOptions, RawRow
from selectkit.data.readers import read_rows
from selectkit.data.values import MAX_DEPTH, json_row
from selectkit.errors import FormatError, RecordError

from .test_bad_files import refused, select


def nested(depth: int) -> str:
    """A JSON row nested ``depth`` levels deep, the row itself being level 1."""
    return '{"text": "deep", "a":' + '{"a":' * (depth - 1) + "1" + "}" * depth


# -- NaN and infinities: not JSON ---------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1E999"])
def test_non_standard_numbers_in_jsonl_are_bad_records(literal, tmp_path, host):
    path = tmp_path / "x.jsonl"
    path.write_text(f'{{"text": "a"}}\n{{"text": "b", "score": {literal}}}\n', "utf-8")
    with pytest.raises(RecordError) as info:
        read_rows(path, LoadOptions(), host.formats)
    assert info.value.path == str(path) and info.value.line == 2
    assert "not JSON" in str(info.value) or "too large for JSON" in str(info.value)
    rows = read_rows(path, LoadOptions(on_error="skip"), host.formats)
    assert [r.line for r in rows] == [1]


def test_non_standard_numbers_in_a_json_array_are_skippable(tmp_path, host):
    path = tmp_path / "x.json"
    path.write_text('[\n {"text": "a"},\n {"text": "b", "n": NaN},\n {"text": "c"}\n]', "utf-8")
    with pytest.raises(RecordError, match="NaN is not a JSON value") as info:
        read_rows(path, LoadOptions(), host.formats)
    assert info.value.line == 3
    rows = read_rows(path, LoadOptions(on_error="skip"), host.formats)
    assert [r.data["text"] for r in rows] == ["a", "c"]


def test_a_nan_response_is_refused_from_the_command_line(tmp_path):
    path = tmp_path / "pool.jsonl"
    good = "".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(5))
    path.write_text(good + '{"instruction": "q", "output": NaN}\n', "utf-8")
    refused(*select(path, tmp_path), f"{path}:6", "NaN is not a JSON value")
    result, out = select(path, tmp_path, "--skip-bad")
    assert result.exit_code == 0, result.output
    for line in out.read_text("utf-8").splitlines():
        json.loads(line, parse_constant=pytest.fail)  # strict JSON


# -- numbers and booleans where text is expected ------------------------------------------------


@pytest.mark.parametrize("value", ["42", "4.5", "true"])
def test_numeric_responses_need_convert_values(value, tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = [f'{{"id": {i}, "instruction": "q{i}", "output": {value}}}\n' for i in range(4)]
    path.write_text("".join(rows), "utf-8")
    line = refused(*select(path, tmp_path), f"{path}:1: field 'output'", "--convert-values")
    assert "not a number" in line or "not a boolean" in line
    result, out = select(path, tmp_path, "--convert-values")
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert all(row["output"] == json.loads(value) for row in written)  # written back unchanged
    pool = load_pool(path, convert_values=True)
    assert {r.response for r in pool} == {value}


def test_numbers_stay_fine_as_ids_and_groups_but_nan_is_not():
    pool = load_records_from_list(
        [{"id": 7, "text": "a", "g": 1.5}, {"id": 8, "text": "b", "g": True}], group_field="g"
    )
    assert pool.ids == ["7", "8"] and pool.groups == ["1.5", "true"]
    for bad in ({"id": float("nan"), "text": "a"}, {"id": 1, "text": "a", "g": float("inf")}):
        with pytest.raises(RecordError, match="JSON cannot hold") as info:
            load_records_from_list([bad], group_field="g")
        assert info.value.line == 1 and info.value.field in ("id", "g")


# -- nesting -------------------------------------------------------------------------------------


def test_rows_up_to_the_depth_limit_load_and_are_written_back(tmp_path):
    path = tmp_path / "pool.jsonl"
    lines = [nested(MAX_DEPTH)] * 3 + [nested(MAX_DEPTH + 1)]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    with pytest.raises(RecordError, match=f"nested more than {MAX_DEPTH}") as info:
        load_pool(path)
    assert (info.value.line, info.value.field) == (4, "a")
    result, out = select(path, tmp_path, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert all(json.loads(line)["text"] == "deep" for line in out.read_text().splitlines())


def test_deep_in_memory_rows_and_csv_messages_cannot_break_loading():
    deep: dict = {"text": "x"}
    for _ in range(2 * MAX_DEPTH):
        deep = {"text": "x", "a": deep}
    with pytest.raises(RecordError, match="nested more than") as info:
        load_records_from_list([deep])
    assert info.value.field == "a"
    # A CSV cell holding messages' JSON is decoded; one nested too deep for Python is text.
    messages = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecordError, match="must be a list of"):
        load_records_from_list([{"messages": messages}], shape="chat")


# -- the conversion rule -------------------------------------------------------------------------


def test_the_json_rule_for_values_that_are_not_json():
    row = {
        "when": datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2024, 5, 1),
        "at": datetime.time(1, 2, 3),
        "took": datetime.timedelta(minutes=1, milliseconds=500),
        "price": decimal.Decimal("12.50"),
        "blob": b"\x00\xff",
        "pairs": (("k", 1),),
        "n": np.int64(3),
        "x": np.float32(0.5),
        "v": np.array([1, 2]),
        "nested": {"list": [decimal.Decimal("1"), None, True, "s"]},
    }
    assert json_row(row) == {
        "when": "2024-05-01T12:00:00+00:00",
        "day": "2024-05-01",
        "at": "01:02:03",
        "took": 60.5,
        "price": "12.50",
        "blob": base64.b64encode(b"\x00\xff").decode(),
        "pairs": [["k", 1]],
        "n": 3,
        "x": 0.5,
        "v": [1, 2],
        "nested": {"list": ["1", None, True, "s"]},
    }


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"a": {"b": [1.0, float("nan")]}}, "a.b.1", "is NaN"),
        ({"a": -float("inf")}, "a", "is infinite"),
        ({"a": decimal.Decimal("NaN")}, "a", "decimal NaN"),
        ({"a": {1: "x"}}, "a", "JSON object keys are text"),
        ({"a": object()}, "a", "type object"),
        ({"a": "\ud800"}, "a", "lone UTF-16 surrogate"),
    ],
)
def test_values_json_cannot_hold_are_named(row, field, reason):
    with pytest.raises(RecordError, match=reason) as info:
        json_row(row)
    assert info.value.field == field


def test_a_lone_surrogate_escape_in_jsonl(tmp_path, host):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "ok \\ud83d\\ude00"}\n{"text": "bad \\ud800"}\n', "utf-8")
    rows = read_rows(path, LoadOptions(on_error="skip"), host.formats)
    assert [r.data["text"] for r in rows] == ["ok \U0001f600"]  # a pair is one character
    assert "lone UTF-16 surrogate" in str(rows.errors[0]) and rows.errors[0].line == 2


def test_parquet_values_become_json_by_the_rule(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    when = datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.timezone.utc)
    table = pa.table(
        {
            "text": ["a b", "c d"],
            "when": pa.array([when, None], pa.timestamp("ns", tz="UTC")),
            "blob": [b"\x00\x01", None],
            "price": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(5, 2)),
            "pairs": pa.array([[("k", 1)], []], pa.map_(pa.string(), pa.int64())),
            "meta": [{"score": 0.5, "tags": ["x"]}, {"score": None, "tags": []}],
        }
    )
    path = tmp_path / "pool.parquet"
    pq.write_table(table, str(path))
    pool = load_pool(path)
    assert pool[0].raw == {
        "text": "a b",
        "when": "2024-01-01T12:00:00+00:00",
        "blob": "AAE=",
        "price": "1.50",
        "pairs": [["k", 1]],
        "meta": {"score": 0.5, "tags": ["x"]},
    }
    assert pool[1].raw["when"] is None and pool[1].raw["pairs"] == []
    result, out = select(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert {json.loads(line)["text"] for line in out.read_text().splitlines()} == {"a b", "c d"}


def test_nan_in_parquet_is_a_bad_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "pool.parquet"
    table = pa.table(
        {"text": ["a", "b", "c"], "meta": [{"s": 1.0}, {"s": float("nan")}, {"s": 2.0}]}
    )
    pq.write_table(table, str(path))
    refused(*select(path, tmp_path), f"{path}:2: field 'meta.s': is NaN")
    pool = load_pool(path, on_error="skip")
    assert [r.response for r in pool] == ["a", "c"] and "meta.s" in pool.skipped[0]


def test_a_parquet_column_nested_too_deep_is_a_file_error(tmp_path, host):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    kind = pa.int64()
    for _ in range(MAX_DEPTH):
        kind = pa.list_(kind)
    path = tmp_path / "deep.parquet"
    pq.write_table(pa.table({"text": ["a"], "deep": pa.array([None], kind)}), str(path))
    with pytest.raises(FormatError, match=r"not a readable Parquet file: .* too deeply nested"):
        read_rows(path, LoadOptions(), host.formats)


def test_in_memory_rows_are_converted_too():
    rows = [{"text": "a", "when": datetime.date(2024, 1, 1)}, {"text": "b", "n": np.int32(4)}]
    pool = load_records_from_list(rows)
    assert pool[0].raw["when"] == "2024-01-01" and pool[1].raw["n"] == 4
    assert type(pool[1].raw["n"]) is int
    assert json.dumps([r.raw for r in pool], allow_nan=False)


def test_a_plugins_rows_are_converted_and_checked(host):
    class Memory:
        @hookimpl
        def selectkit_load_records(self, source, options):
            return [
                RawRow(1, {"text": "a", "day": datetime.date(2024, 1, 1)}),
                RawRow(2, {"text": "b", "score": float("nan")}),
            ]

    host.register(Memory(), "memory")
    with pytest.raises(RecordError, match="mem://x:2: field 'score': is NaN"):
        load_pool("mem://x", host=host)
    pool = load_pool("mem://x", host=host, on_error="skip")
    assert pool[0].raw == {"text": "a", "day": "2024-01-01"} and len(pool.skipped) == 1
