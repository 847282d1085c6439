"""Reading the real data kept beside the repository (skipped when ../shared/data is absent)."""

from __future__ import annotations

from collections import Counter

import pytest

from selectkit.api import load_pool

PILE_DOMAINS = {
    "Pile-CC": 200,
    "StackExchange": 131,
    "OpenWebText2": 130,
    "PubMed Central": 105,
    "OpenSubtitles": 97,
    "Github": 85,
    "DM Mathematics": 49,
    "PubMed Abstracts": 46,
    "Wikipedia (en)": 41,
    "FreeLaw": 39,
    "HackerNews": 35,
    "USPTO Backgrounds": 34,
    "NIH ExPorter": 7,
    "Enron Emails": 1,
}


def test_pile_toy_grouped_by_domain(shared_data, host):
    path = shared_data / "pile-toy" / "toy_pile_data.jsonl"
    pool = load_pool(path, host=host, text_field="contents", group_field="metadata.pile_set_name")
    assert len(pool) == 1000 and pool.origin["shape"] == "text"
    assert Counter(pool.groups) == PILE_DOMAINS
    assert pool.ids[:3] == ["0", "1", "2"]
    assert all(r.prompt == "" and r.response for r in pool)
    assert pool[0].response == pool[0].raw["contents"]


def test_pile_toy_without_text_field_says_how_to_fix(shared_data, host):
    from selectkit.errors import RecordError

    with pytest.raises(RecordError, match="--text-field") as info:
        load_pool(shared_data / "pile-toy" / "toy_pile_data.jsonl", host=host)
    assert info.value.line == 1 and "contents" in str(info.value)


def test_alpaca_demo_json(shared_data, host):
    pool = load_pool(shared_data / "alpaca-demo" / "alpaca_en_demo.json", host=host)
    assert len(pool) == 999 and pool.origin["format"] == "json"
    assert pool.origin["shape"] == "alpaca"
    first = pool[0]
    assert first.prompt == "Describe a process of making crepes."
    assert first.response.startswith("Making crepes is an easy and delicious process!")
    assert first.line == 2  # the array opens on line 1
    with_input = next(r for r in pool if r.raw["input"])
    assert with_input.prompt == f"{with_input.raw['instruction']}\n\n{with_input.raw['input']}"


def test_gsm8k_with_a_field_map(shared_data, host):
    pool = load_pool(
        shared_data / "gsm8k" / "train.jsonl",
        host=host,
        field_map={"prompt": "question", "completion": "answer"},
    )
    assert len(pool) == 7473 and pool.origin["shape"] == "prompt_completion"
    assert pool[0].prompt.startswith("Natalia sold clips to 48 of her friends")
    assert pool[0].response.endswith("#### 72")
    assert pool.ids[-1] == "7472" and pool.skipped == []


def test_mmlu_csv(shared_data, host):
    path = shared_data / "mmlu" / "dev" / "abstract_algebra_dev.csv"
    pool = load_pool(path, host=host, field_map={"prompt": "question", "completion": "answer"})
    assert len(pool) == 5 and pool.origin["format"] == "csv"
    assert pool[0].line == 2 and pool[0].response == "1"
    assert pool[0].prompt == "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field."
    assert set(pool[0].raw) == {"question", "choice0", "choice1", "choice2", "choice3", "answer"}


def test_fingerprints_of_real_pools_are_stable(shared_data, host):
    path = shared_data / "alpaca-demo" / "alpaca_en_demo.json"
    first, second = load_pool(path, host=host), load_pool(path, host=host)
    assert first.fingerprint == second.fingerprint
    assert first.origin == second.origin
