"""Fixtures for the data tests: an isolated plugin host, file writers for every format, and the
shared real data (skipped when absent)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from selectkit.host import Host

DATA_PLUGINS = ("selectkit.data.readers", "selectkit.data.shapes", "selectkit.data.tokenizers")

# tests/data/conftest.py -> parents[2] is the repository root; shared/ sits beside it.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

FORMAT_SUFFIX = {
    "jsonl": ".jsonl",
    "json": ".json",
    "csv": ".csv",
    "tsv": ".tsv",
    "parquet": ".parquet",
    "hf": "",
}


@pytest.fixture
def host() -> Host:
    """The data built-ins only, no entry points: other plugins cannot change these tests."""
    built = Host(builtins=DATA_PLUGINS, entry_points=False)
    assert not built.failures, built.failures
    return built


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A row as CSV cells: nested objects become dotted columns, lists become JSON text."""
    flat: dict[str, str] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = "" if value is None else str(value)
    return flat


def _write_arrow_stream(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa

    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def write_rows(directory: Path, fmt: str, rows: list[dict[str, Any]], name: str = "data") -> Path:
    """Write ``rows`` in format ``fmt`` under ``directory`` and return the path to load."""
    path = directory / f"{name}{FORMAT_SUFFIX[fmt]}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows, indent=2), "utf-8")
    elif fmt in ("csv", "tsv"):
        flat = [_flatten(row) for row in rows]
        header: list[str] = []
        for row in flat:
            header.extend(key for key in row if key not in header)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(
                handle, header, delimiter="," if fmt == "csv" else "\t", restval=""
            )
            writer.writeheader()
            writer.writerows(flat)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), str(path))
    elif fmt == "hf":
        # The layout of Dataset.save_to_disk, made without the datasets package; two shards
        # whose order only state.json gives (their names sort the other way round).
        path.mkdir()
        half = (len(rows) + 1) // 2
        shards = {"data-b.arrow": rows[:half], "data-a.arrow": rows[half:]}
        for filename, part in shards.items():
            _write_arrow_stream(path / filename, part)
        state = {"_data_files": [{"filename": f} for f in shards], "_split": None}
        (path / "state.json").write_text(json.dumps(state), "utf-8")
        (path / "dataset_info.json").write_text("{}", "utf-8")
    else:
        raise ValueError(fmt)
    return path


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """``write(fmt, rows, name="data")``: rows written to a new file under tmp_path."""

    def _write(fmt: str, rows: list[dict[str, Any]], name: str = "data") -> Path:
        return write_rows(tmp_path, fmt, rows, name)

    return _write


@pytest.fixture
def shared_data() -> Path:
    """The real data beside the repository; skips when a fresh clone has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


TINY_CORPUS = [
    "what is two plus two",
    "two plus two is four",
    "the cat sat on the mat",
    "be brief and kind",
    "hello there , how are you ?",
    "name a color . blue is a color",
]

# A small chat template in the usual style: each turn wrapped in role tokens, the generation
# prompt opening the assistant turn.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="session")
def make_tokenizer() -> Callable[..., Any]:
    """``make_tokenizer(chat=False, pre_tokenize=True)``: a byte-level BPE tokenizer trained
    on a few sentences, with BOS added like Llama's and EOS defined, as a transformers fast
    tokenizer; ``chat=True`` sets a chat template; ``pre_tokenize=False`` trains BPE over raw
    text, so merges cross the newline between prompt and response."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

    def build(chat: bool = False, pre_tokenize: bool = True) -> Any:
        backend = Tokenizer(models.BPE(unk_token="<unk>"))
        if pre_tokenize:
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            backend.decoder = decoders.ByteLevel()
            corpus = TINY_CORPUS
            alphabet = pre_tokenizers.ByteLevel.alphabet()
        else:
            corpus = [f"{a}\n{b}" for a in TINY_CORPUS for b in TINY_CORPUS] * 3
            alphabet = sorted(set("".join(corpus)))
        trainer = trainers.BpeTrainer(
            vocab_size=400 if pre_tokenize else 90,
            special_tokens=specials,
            initial_alphabet=alphabet,
            show_progress=False,
        )
        backend.train_from_iterator(corpus, trainer)
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))]
        )
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
        if chat:
            tokenizer.chat_template = TINY_CHAT_TEMPLATE
        return tokenizer

    return build
