"""Bad input files: each is one clear error naming the file (and the line or row where it can
be known), through the loader and through ``selectkit select``, never a traceback, never a
crash, never a hang, and nothing written."""

from __future__ import annotations

import errno
import gzip
import json
import os
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from selectkit import hookimpl
from selectkit.api import load_pool
from selectkit.cli import cli
from selectkit.data import load as load_module
from selectkit.data import readers
from selectkit.data.formats import Format, LoadOptions, RawRow, unreadable
from selectkit.data.readers import read_rows
from selectkit.errors import FormatError, RecordError

from .conftest import write_rows

ROWS = [{"id": i, "instruction": f"question {i}", "output": f"answer {i}"} for i in range(60)]
JSONL = "".join(json.dumps(row) + "\n" for row in ROWS).encode()
TEXT_SUFFIXES = ("jsonl", "json", "csv", "tsv", "txt")


def select(pool: Path | str, tmp_path: Path, *extra: str):
    """``selectkit select -m random --pool POOL --budget 2 --out out.jsonl`` in ``tmp_path``."""
    out = tmp_path / "out" / "out.jsonl"
    out.parent.mkdir(exist_ok=True)
    args = ["select", "-m", "random", "--pool", str(pool), "--budget", "2", "--out", str(out)]
    return CliRunner().invoke(cli, [*args, *extra]), out


def refused(result, out: Path, *needles: str) -> str:
    """Assert a bad-input exit: status 2, one ``error:`` line containing ``needles``, no
    traceback, nothing written; returns the line."""
    output = result.output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, output
    assert len(lines) == 1 and "Traceback" not in output and "Aborted" not in output, output
    assert "internal error" not in lines[0], output
    for needle in needles:
        assert needle in lines[0], output
    assert list(out.parent.iterdir()) == [], "nothing may be written"
    return lines[0]


def read(path: Path, host, **options):
    return read_rows(path, LoadOptions(**options), host.formats)


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def as_format(suffix: str) -> bytes:
    """The test rows in a text format, as bytes."""
    if suffix in ("jsonl", "txt"):
        return JSONL
    if suffix == "json":
        return json.dumps(ROWS, indent=1).encode()
    sep = "," if suffix == "csv" else "\t"
    lines = [sep.join(("id", "instruction", "output"))]
    lines += [sep.join((str(r["id"]), r["instruction"], r["output"])) for r in ROWS]
    return ("\n".join(lines) + "\n").encode()


# -- compressed files -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", TEXT_SUFFIXES)
def test_a_gz_file_that_is_not_gzip(suffix, tmp_path, host):
    path = tmp_path / f"pool.{suffix}.gz"
    path.write_bytes(as_format(suffix))
    with pytest.raises(FormatError, match="not gzip data") as info:
        read(path, host)
    assert str(path) in str(info.value)
    refused(select(path, tmp_path)[0], select(path, tmp_path)[1], str(path), "not gzip")


@pytest.mark.parametrize("suffix", TEXT_SUFFIXES)
def test_a_truncated_gz_file_says_how_far_it_was_read(suffix, tmp_path, host):
    path = tmp_path / f"pool.{suffix}.gz"
    path.write_bytes(gzipped(as_format(suffix) * 20)[:-40])
    with pytest.raises(FormatError, match="truncated") as info:
        read(path, host, on_error="skip")  # a file error, whatever --skip-bad says
    message = str(info.value)
    assert message.startswith(f"{path}: cannot be read")
    if suffix != "json":  # read line by line: the error says where it stopped
        assert " past line " in message
    result, out = select(path, tmp_path)
    refused(result, out, str(path), "truncated")  # was "Aborted!" (click's EOFError)


@pytest.mark.parametrize("suffix", TEXT_SUFFIXES)
def test_corrupt_compressed_data(suffix, tmp_path, host):
    data = gzipped(as_format(suffix) * 20)
    path = tmp_path / f"pool.{suffix}.gz"
    path.write_bytes(data[:40] + bytes(200) + data[240:])
    with pytest.raises(FormatError, match=f"{path}: cannot be read"):
        read(path, host)


# -- Parquet and saved datasets ---------------------------------------------------------------


def test_parquet_with_corrupt_pages(tmp_path, host):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "pool.parquet"
    rows = [{"id": i, "text": f"row number {i} " * 5} for i in range(2000)]
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(range(200))
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError) as info:
        read(path, host)
    assert str(info.value).startswith(f"{path}: cannot be read")
    refused(*select(path, tmp_path), str(path), "cannot be read")


def test_parquet_with_a_column_twice(tmp_path, host):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "pool.parquet"
    columns = [pa.array(["a", "b"]), pa.array(["x", "y"])]
    pq.write_table(pa.Table.from_arrays(columns, names=["text", "text"]), str(path))
    with pytest.raises(FormatError, match="has the column 'text' twice"):
        read(path, host)  # was: each row silently kept the second column only


def _hf_dir(path: Path, arrow: bytes) -> Path:
    path.mkdir()
    (path / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}), "utf-8"
    )
    (path / "dataset_info.json").write_text("{}", "utf-8")
    (path / "data-00000-of-00001.arrow").write_bytes(arrow)
    return path


def _arrow_stream(rows: list[dict]) -> bytes:
    pa = pytest.importorskip("pyarrow")
    table = pa.Table.from_pylist(rows)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=500)
    return sink.getvalue().to_pybytes()


def test_saved_dataset_with_a_garbage_arrow_file(tmp_path, host):
    garbage = bytes((i * 151 + 7) % 256 for i in range(5000))
    path = _hf_dir(tmp_path / "saved", garbage)
    with pytest.raises(FormatError, match="not an Arrow file") as info:
        read(path, host)
    assert "data-00000-of-00001.arrow" in str(info.value)
    refused(*select(path, tmp_path), "data-00000-of-00001.arrow", "not an Arrow file")


def test_saved_dataset_with_damaged_offsets_is_an_error_not_a_crash(tmp_path, host):
    # Overwritten string offsets used to crash the interpreter (SIGSEGV) in pyarrow's
    # conversion: every batch is now validated before its rows are read.
    stream = _arrow_stream([{"text": f"row {i} " * (i % 7 + 1)} for i in range(2000)])
    path = _hf_dir(tmp_path / "saved", stream[:600] + b"\xfe\xff\xff\x7f" * 200 + stream[1400:])
    with pytest.raises(FormatError, match=r"data-00000-of-00001\.arrow: cannot be read"):
        read(path, host)


def test_saved_dataset_truncated_says_which_row(tmp_path, host):
    stream = _arrow_stream([{"text": f"row {i}"} for i in range(2000)])
    path = _hf_dir(tmp_path / "saved", stream[: len(stream) * 3 // 4])
    with pytest.raises(FormatError, match=r"cannot be read past row 1500: it is damaged"):
        read(path, host)


def test_saved_dataset_state_cannot_point_outside_its_folder(tmp_path, host):
    path = _hf_dir(tmp_path / "saved", _arrow_stream([{"text": "a"}]))
    state = {"_data_files": [{"filename": "../../etc/passwd"}]}
    (path / "state.json").write_text(json.dumps(state), "utf-8")
    with pytest.raises(FormatError, match="which is not a file name"):
        read(path, host)


# -- JSON that Python parses but cannot keep ----------------------------------------------------


def test_a_jsonl_line_nested_100000_levels(tmp_path, host):
    path = tmp_path / "deep.jsonl"
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    path.write_text(f'{{"text": "fine"}}\n{deep}\n{{"text": "also fine"}}\n', "utf-8")
    with pytest.raises(RecordError, match="nested more than 100 levels deep") as info:
        read(path, host)
    assert info.value.path == str(path) and info.value.line == 2
    assert [r.line for r in read(path, host, on_error="skip")] == [1, 3]  # a bad row: skippable
    refused(*select(path, tmp_path), f"{path}:2", "nested more than 100 levels")


def test_a_json_element_nested_100000_levels_stops_the_file(tmp_path, host):
    path = tmp_path / "deep.json"
    path.write_text('[\n{"text": "a"},\n' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "]", "utf-8")
    with pytest.raises(RecordError, match="nested more than 100") as info:
        read(path, host, on_error="skip")  # its end cannot be found, so it cannot be skipped
    assert info.value.line == 3


def test_an_integer_too_long_for_python(tmp_path, host):
    path = tmp_path / "big.jsonl"
    path.write_text('{"text": "a", "n": 1' + "0" * 5000 + "}\n", "utf-8")
    with pytest.raises(RecordError, match="integer with thousands of digits") as info:
        read(path, host)
    assert info.value.line == 1


def test_trailing_data_after_a_json_array(tmp_path, host):
    path = tmp_path / "x.json"
    path.write_text('[{"text": "a"}]\n{"text": "b"}', "utf-8")
    with pytest.raises(RecordError, match="Extra data") as info:
        read(path, host)
    assert info.value.line == 2


# -- odd files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", TEXT_SUFFIXES)
@pytest.mark.parametrize("content", [b"", b"  \n\t\n"])
def test_empty_and_blank_files(suffix, content, tmp_path):
    path = tmp_path / f"pool.{suffix}"
    path.write_bytes(content)
    with pytest.raises(FormatError) as info:
        load_pool(path)
    assert str(path) in str(info.value)
    refused(*select(path, tmp_path), str(path))


@pytest.mark.parametrize("suffix", TEXT_SUFFIXES)
def test_utf16_text_is_named_as_such(suffix, tmp_path, host):
    path = tmp_path / f"pool.{suffix}"
    path.write_bytes(as_format(suffix).decode().encode("utf-16"))
    with pytest.raises(FormatError, match="UTF-16"):
        read(path, host)


@pytest.mark.parametrize("suffix", TEXT_SUFFIXES)
def test_invalid_utf8_names_file_and_line(suffix, tmp_path, host):
    path = tmp_path / f"pool.{suffix}"
    path.write_bytes(as_format(suffix) + b"\x80\xfe broken\n")
    with pytest.raises(RecordError, match="not valid UTF-8") as info:
        read(path, host)
    assert info.value.path == str(path) and info.value.line == as_format(suffix).count(b"\n") + 1


@pytest.mark.parametrize("text", ['"just text"', "42", "null", "true"])
def test_a_json_file_that_is_not_a_list(text, tmp_path, host):
    path = tmp_path / "x.json"
    path.write_text(text, "utf-8")
    with pytest.raises(RecordError, match="expected a JSON array of objects") as info:
        read(path, host)
    assert info.value.path == str(path)


@pytest.mark.parametrize("header", ["text,text", "text,", ",text"])
def test_csv_header_with_duplicate_or_empty_names(header, tmp_path):
    path = tmp_path / "x.csv"
    path.write_text(f"{header}\na,b\n", "utf-8")
    refused(*select(path, tmp_path), f"{path}:1: the header row has")


def test_csv_with_nul_bytes_and_huge_fields_reads(tmp_path, host):
    path = tmp_path / "x.csv"
    path.write_text('text\n"a\0b"\n"' + "x" * 300_000 + '"\n', "utf-8")  # past csv's 128 KiB
    rows = read(path, host)
    assert [len(r.data["text"]) for r in rows] == [3, 300_000]


def test_a_folder_given_as_a_file(tmp_path, host):
    path = tmp_path / "pool.jsonl"
    path.mkdir()
    with pytest.raises(FormatError, match=r"pool\.jsonl: cannot be read: it is a folder"):
        read(path, host, format="jsonl")


def test_devices_and_pipes_are_refused_without_reading(tmp_path, host):
    fifo = tmp_path / "pool.jsonl"
    os.mkfifo(fifo)  # reading would block forever: refused before opening
    with pytest.raises(FormatError, match="not a regular file or a folder"):
        read(fifo, host)
    refused(*select(fifo, tmp_path), str(fifo), "not a regular file")
    with pytest.raises(FormatError, match="/dev/zero is not a regular file"):
        read(Path("/dev/zero"), host, format="jsonl")  # would be read forever


def test_a_symbolic_link_loop(tmp_path, host):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop.name)
    with pytest.raises(FormatError, match=r"loop\.jsonl: cannot be read: Too many levels"):
        read(loop, host)


def test_an_unreadable_file(tmp_path, host, monkeypatch):
    # chmod 000 cannot stop root, who runs CI: make opening fail as it does for a user.
    path = tmp_path / "pool.jsonl"
    path.write_bytes(JSONL)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(readers, "open", denied, raising=False)
    with pytest.raises(FormatError, match=r"pool\.jsonl: cannot be read: Permission denied"):
        read(path, host)


def test_a_gzip_of_garbage_in_every_text_format_never_escapes(tmp_path, host):
    noise = bytes((i * 131 + 17) % 256 for i in range(4000))
    for suffix in TEXT_SUFFIXES:
        for name, data in ((f"a.{suffix}", noise), (f"b.{suffix}.gz", gzipped(noise))):
            path = tmp_path / name
            path.write_bytes(data)
            with pytest.raises((FormatError, RecordError)) as info:
                load_pool(path, host=host, on_error="skip")
            assert str(path) in str(info.value)


def test_a_good_file_still_reads_the_same_in_every_format(tmp_path, host):
    for fmt in ("jsonl", "json", "csv", "tsv", "parquet", "hf"):
        pool = load_pool(write_rows(tmp_path, fmt, ROWS, name=f"p-{fmt}"), host=host)
        assert [r.response for r in pool] == [r["output"] for r in ROWS]


def test_a_plugin_formats_library_errors_name_the_file(tmp_path, host):
    class Broken(Format):
        name = "broken"
        suffixes = (".broken",)

        def read(self, path, on_error):
            yield RawRow(1, {"text": "a"})
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    class Plugin:
        @hookimpl
        def selectkit_register_formats(self):
            return [Broken]

    host.register(Plugin(), "broken-format")
    path = tmp_path / "x.broken"
    path.write_text("anything", "utf-8")
    with pytest.raises(FormatError, match=r"x\.broken: cannot be read: its compressed data ends"):
        load_pool(path, host=host)


def test_a_path_with_a_nul_byte(host):
    with pytest.raises(FormatError, match="is not a usable path"):
        read(Path("bad\0name.jsonl"), host)


def test_a_file_that_cannot_be_fingerprinted(tmp_path, monkeypatch):
    path = tmp_path / "pool.jsonl"
    path.write_bytes(JSONL)

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(load_module, "hash_path", denied)
    with pytest.raises(FormatError, match="cannot be read to fingerprint it: Permission denied"):
        load_pool(path)


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (gzip.BadGzipFile("Not a gzipped file"), "not gzip data"),
        (EOFError("ended"), "ends early (the file is truncated)"),
        (zlib.error("Error -3"), "compressed data is corrupt (Error -3)"),
        (MemoryError(), "does not fit in memory"),
        (IsADirectoryError(errno.EISDIR, "Is a directory"), "it is a folder"),
        (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
        (OSError("Corrupt snappy\ncompressed data."), "damaged (Corrupt snappy compressed data.)"),
    ],
)
def test_file_errors_are_one_line_naming_the_file(exc, says):
    message = str(unreadable(Path("pool.jsonl"), exc, 41))
    assert message.startswith("pool.jsonl: cannot be read past line 41: ")
    assert says in message and "\n" not in message
