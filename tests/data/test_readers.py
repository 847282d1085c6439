"""File formats: rows, their line numbers, format choice, and malformed input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from selectkit.data.formats import LoadOptions
from selectkit.data.readers import read_rows
from selectkit.errors import FormatError, RecordError

ROWS = [
    {"id": 1, "text": "first row", "meta": {"src": "a"}},
    {"id": 2, "text": "second row", "meta": {"src": "b"}},
    {"id": 3, "text": "third row", "meta": {"src": "a"}},
]


def read(path: Path, host, **options):
    return read_rows(path, LoadOptions(**options), host.formats)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv", "parquet", "hf"])
def test_each_format_reads_the_rows_in_order(fmt, write, host):
    rows = read(write(fmt, ROWS), host)
    assert rows.format == fmt
    assert [str(r.data["id"]) for r in rows] == ["1", "2", "3"]
    assert [r.data["text"] for r in rows] == ["first row", "second row", "third row"]
    if fmt in ("csv", "tsv"):
        assert rows[1].data["meta.src"] == "b"  # flat dotted column
    else:
        assert rows[1].data["meta"] == {"src": "b"}


@pytest.mark.parametrize(
    ("fmt", "lines"),
    [
        ("jsonl", [1, 2, 3]),
        ("json", [2, 9, 16]),  # where each object starts in the indented array
        ("csv", [2, 3, 4]),  # the header is line 1
        ("parquet", [1, 2, 3]),  # row numbers
        ("hf", [1, 2, 3]),  # row numbers across both shards, in state.json order
    ],
)
def test_line_numbers(fmt, lines, write, host):
    rows = read(write(fmt, ROWS), host)
    assert [r.line for r in rows] == lines


def test_jsonl_skips_blank_lines_and_counts_them(tmp_path, host):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a"}\n\n   \n{"text": "b"}\n', "utf-8")
    assert [(r.line, r.data["text"]) for r in read(path, host)] == [(1, "a"), (4, "b")]


def test_jsonl_gz_and_bom(tmp_path, host):
    path = tmp_path / "x.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write('\ufeff{"text": "a"}\n{"text": "b"}\n')
    rows = read(path, host)
    assert rows.format == "jsonl" and [r.data["text"] for r in rows] == ["a", "b"]


def test_malformed_jsonl_line_names_file_and_line(tmp_path, host):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b",}\n{"text": "c"}\n', "utf-8")
    with pytest.raises(RecordError) as info:
        read(path, host)
    assert info.value.path == str(path) and info.value.line == 2
    assert f"{path}:2" in str(info.value) and "not valid JSON" in str(info.value)
    rows = read(path, host, on_error="skip")
    assert [r.line for r in rows] == [1, 3]
    assert len(rows.errors) == 1 and rows.errors[0].line == 2


def test_invalid_utf8_line_is_a_record_error(tmp_path, host):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    with pytest.raises(RecordError, match="UTF-8") as info:
        read(path, host)
    assert info.value.line == 2


@pytest.mark.parametrize(
    ("text", "line"),
    [('{"text": "a"}\n[1, 2]\n', 2), ('{"text": "a"}\n"just a string"\n', 2)],
)
def test_non_object_jsonl_row(tmp_path, host, text, line):
    path = tmp_path / "rows.jsonl"
    path.write_text(text, "utf-8")
    with pytest.raises(RecordError, match="expected a JSON object") as info:
        read(path, host)
    assert info.value.path == str(path) and info.value.line == line


def test_json_irregular_layout_reports_start_lines(tmp_path, host):
    path = tmp_path / "x.json"
    path.write_text('[{"text": "a"},\n\n  {"text": "b"}, {"text":\n "c"}\n]', "utf-8")
    assert [r.line for r in read(path, host)] == [1, 3, 3]


def test_json_object_with_one_list_field(tmp_path, host):
    path = tmp_path / "task.json"
    body = {"canary": "do not train", "examples": [{"input": "q", "target": "a"}] * 2}
    path.write_text(json.dumps(body, indent=1), "utf-8")
    rows = read(path, host)
    assert [r.data for r in rows] == body["examples"]
    assert [r.line for r in rows] == [4, 8]


def test_json_object_with_two_lists_is_a_format_error(tmp_path, host):
    path = tmp_path / "two.json"
    path.write_text(json.dumps({"a": [{"x": 1}], "b": [{"x": 2}]}), "utf-8")
    with pytest.raises(FormatError, match="'a', 'b'"):
        read(path, host)


def test_json_non_object_element_and_syntax_error(tmp_path, host):
    path = tmp_path / "x.json"
    path.write_text('[\n {"text": "a"},\n 42,\n {"text": "b"}\n]', "utf-8")
    with pytest.raises(RecordError, match="got a number") as info:
        read(path, host)
    assert info.value.line == 3
    assert [r.line for r in read(path, host, on_error="skip")] == [2, 4]

    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"text": "a"},\n {"text": "b"\n]', "utf-8")
    with pytest.raises(RecordError, match="not valid JSON") as info:
        read(broken, host, on_error="skip")  # a syntax error cannot be skipped past
    assert info.value.path == str(broken) and info.value.line == 4


def test_empty_json_array(tmp_path, host):
    path = tmp_path / "empty.json"
    path.write_text("[ ]", "utf-8")
    assert list(read(path, host)) == []


def test_csv_multiline_values_and_column_count(tmp_path, host):
    path = tmp_path / "x.csv"
    path.write_text('prompt,completion\n"two\nlines",a\nsingle,b\n\nshort\nlast,c\n', "utf-8")
    with pytest.raises(RecordError, match="header has 2 columns") as info:
        read(path, host)
    assert info.value.line == 6
    rows = read(path, host, on_error="skip")
    assert [(r.line, r.data["completion"]) for r in rows] == [(2, "a"), (4, "b"), (7, "c")]
    assert rows[0].data["prompt"] == "two\nlines"


def test_csv_duplicate_header_is_a_format_error(tmp_path, host):
    path = tmp_path / "dup.csv"
    path.write_text("text,text\na,b\n", "utf-8")
    with pytest.raises(FormatError, match="column 'text' twice"):
        read(path, host)


def test_txt_one_record_per_nonempty_line(tmp_path, host):
    path = tmp_path / "notes.txt"
    path.write_text("first line\n\nsecond line\n", "utf-8")
    rows = read(path, host)
    assert rows.format == "txt"
    assert [(r.line, r.data) for r in rows] == [
        (1, {"text": "first line"}),
        (3, {"text": "second line"}),
    ]


def test_unknown_format_lists_known_formats_and_suffixes(tmp_path, host):
    path = tmp_path / "data.xml"
    path.write_text("<rows/>", "utf-8")
    with pytest.raises(FormatError) as info:
        read(path, host)
    message = str(info.value)
    assert str(path) in message and "--format" in message
    for expected in ("jsonl (.jsonl", "json (.json", "csv (.csv", "parquet (.parquet", "hf ("):
        assert expected in message


def test_unknown_format_name(tmp_path, host):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a"}\n', "utf-8")
    with pytest.raises(FormatError, match="no format named 'yaml'; known: jsonl"):
        read(path, host, format="yaml")


def test_format_option_overrides_the_suffix(tmp_path, host):
    path = tmp_path / "rows.data"
    path.write_text('{"text": "a"}\n', "utf-8")
    rows = read(path, host, format="jsonl")
    assert rows.format == "jsonl" and rows[0].data == {"text": "a"}


def test_missing_source(tmp_path, host):
    with pytest.raises(FormatError, match="no such file"):
        read(tmp_path / "absent.jsonl", host)


def test_plain_directory_is_not_a_dataset(tmp_path, host):
    with pytest.raises(FormatError, match="cannot tell the format of directory"):
        read(tmp_path, host)


def test_parquet_garbage_is_a_format_error(tmp_path, host):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(FormatError, match="not a readable Parquet file"):
        read(path, host)


def test_hf_state_listing_a_missing_shard(write, host):
    path = write("hf", ROWS)
    (path / "data-a.arrow").unlink()
    with pytest.raises(FormatError, match=r"data-a\.arrow, which is missing"):
        read(path, host)


def test_real_saved_hf_dataset(tmp_path, host):
    datasets = pytest.importorskip("datasets", reason="needs the datasets package to save one")
    rows = [{"instruction": f"q{i}", "output": f"a{i}", "meta": {"n": i}} for i in range(7)]
    path = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(path), num_shards=3)
    read_back = read(path, host)
    assert read_back.format == "hf"
    assert [r.data for r in read_back] == rows
    assert [r.line for r in read_back] == list(range(1, 8))

    splits = tmp_path / "splits"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:2])}
    ).save_to_disk(str(splits))
    with pytest.raises(FormatError, match="DatasetDict with splits test, train"):
        read(splits, host)
    assert len(read(splits / "train", host)) == 7
