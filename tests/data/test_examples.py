"""Examples: templates, response-only loss masks, truncation and token costs."""

from __future__ import annotations

import pytest

from selectkit import hookimpl
from selectkit.api import load_pool
from selectkit.data.examples import Tokenized, tokenize_many
from selectkit.data.pool import Record
from selectkit.errors import ParamError, RecordError

QA = Record(id="0", prompt="what is two plus two", response="two plus two is four")
RAW = Record(id="1", prompt="", response="the cat sat on the mat")
CHAT = Record(
    id="2",
    prompt="system: be brief\n\nuser: hello there\n\nassistant: how are you ?\n\nuser: what is two",
    response="two plus two is four",
    messages=(
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "how are you ?"},
        {"role": "user", "content": "what is two"},
        {"role": "assistant", "content": "two plus two is four"},
    ),
)


@pytest.fixture(scope="module")
def plain_tok(make_tokenizer):
    return make_tokenizer()


@pytest.fixture(scope="module")
def chat_tok(make_tokenizer):
    return make_tokenizer(chat=True)


def masked(tokenizer, result, value=True):
    """The text of the tokens whose loss-mask entry is ``value``."""
    ids = [i for i, m in zip(result.input_ids, result.loss_mask, strict=True) if m == value]
    return tokenizer.decode(ids)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def one(record, tokenizer, **options) -> Tokenized | RecordError:
    """``tokenize_many`` of one record: its example, or its error in its place."""
    (result,) = tokenize_many([record], tokenizer, **options)
    return result


def example(record, tokenizer, **options) -> Tokenized:
    """The example of a record that has one."""
    result = one(record, tokenizer, **options)
    assert isinstance(result, Tokenized), result
    return result


def test_plain_template_masks_exactly_the_response_and_eos(plain_tok):
    result = example(QA, plain_tok)
    bos, eos = plain_tok.bos_token_id, plain_tok.eos_token_id
    prompt_ids = ids(plain_tok, "what is two plus two\n")
    response_ids = ids(plain_tok, "two plus two is four")
    assert result.input_ids == [bos, *prompt_ids, *response_ids, eos]
    assert result.loss_mask == [False] * (1 + len(prompt_ids)) + [True] * (len(response_ids) + 1)
    assert masked(plain_tok, result) == "two plus two is four</s>"
    assert masked(plain_tok, result, False) == "<s>what is two plus two\n"
    assert result.response_length == len(response_ids) + 1


def test_raw_text_is_all_response_after_bos(plain_tok, chat_tok):
    for tokenizer in (plain_tok, chat_tok):  # raw text is never chat-templated
        result = example(RAW, tokenizer)
        assert result.input_ids[0] == tokenizer.bos_token_id and not result.loss_mask[0]
        assert all(result.loss_mask[1:])
        assert masked(tokenizer, result) == "the cat sat on the mat</s>"


def test_chat_template_for_a_prompt_completion_record(chat_tok):
    result = example(QA, chat_tok)
    assert chat_tok.decode(result.input_ids) == (
        "<s><|user|>what is two plus two<|end|><|assistant|>two plus two is four<|end|>"
    )
    assert masked(chat_tok, result) == "two plus two is four<|end|>"


def test_chat_template_multi_turn_masks_only_the_last_reply(chat_tok):
    result = example(CHAT, chat_tok)
    assert masked(chat_tok, result, False) == (
        "<s><|system|>be brief<|end|><|user|>hello there<|end|>"
        "<|assistant|>how are you ?<|end|><|user|>what is two<|end|><|assistant|>"
    )
    assert masked(chat_tok, result) == "two plus two is four<|end|>"


def test_template_choice(plain_tok, chat_tok):
    plain = example(QA, chat_tok, template="plain")
    assert masked(chat_tok, plain, False) == "<s>what is two plus two\n"
    # a chat record under the plain template uses its text rendering
    as_plain = example(CHAT, chat_tok, template="plain")
    assert masked(chat_tok, as_plain, False) == f"<s>{CHAT.prompt}\n"
    assert example(QA, chat_tok, template="chat") == example(QA, chat_tok)
    with pytest.raises(ParamError, match="needs a tokenizer with a chat template"):
        one(QA, plain_tok, template="chat")
    with pytest.raises(ParamError, match="template must be"):
        one(QA, plain_tok, template="fancy")


def test_prompt_and_response_merging_across_the_boundary_uses_offsets(make_tokenizer):
    tokenizer = make_tokenizer(pre_tokenize=False)
    prefix = ids(tokenizer, "what is two plus two\n")
    full = ids(tokenizer, "what is two plus two\ntwo plus two is four")
    assert full[: len(prefix)] != prefix  # the case the offsets fallback is for
    result = example(QA, tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(result.input_ids)
    first = result.loss_mask.index(True)
    assert not any(result.loss_mask[:first]) and all(result.loss_mask[first:])
    # the response starts inside the first masked token, never before it
    assert "".join(tokens[1:first]) == "what is two plus two"
    assert tokens[first].startswith("\n") and "".join(tokens[first:-1]).endswith("four")
    assert tokens[-1] == "</s>"


def test_template_that_rewrites_the_prefix_falls_back_to_the_response_text(make_tokenizer):
    tokenizer = make_tokenizer(chat=True)
    # the generation prompt differs from how the assistant turn is written in the full text
    tokenizer.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant]:{% endif %}"
    )
    result = example(QA, tokenizer)
    assert masked(tokenizer, result) == "two plus two is four\n"
    assert masked(tokenizer, result, False) == "[user]\nwhat is two plus two\n[assistant]\n"


def test_template_errors_are_record_errors(chat_tok, make_tokenizer):
    tokenizer = make_tokenizer(chat=True)
    tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    record = Record(id="x", prompt="p", response="r", source="data.jsonl", line=4)
    error = one(record, tokenizer)
    assert isinstance(error, RecordError) and "roles must alternate" in str(error)
    assert error.path == "data.jsonl" and error.line == 4


def test_left_truncation_drops_prompt_first(plain_tok):
    full = example(QA, plain_tok)
    n_response = full.response_length
    cut = example(QA, plain_tok, max_length=n_response + 2)
    assert cut.input_ids == full.input_ids[-(n_response + 2) :]
    assert cut.loss_mask == [False, False] + [True] * n_response
    exact = example(QA, plain_tok, max_length=n_response)
    assert exact.input_ids == full.input_ids[-n_response:] and all(exact.loss_mask)
    untouched = example(QA, plain_tok, max_length=len(full.input_ids))
    assert untouched == full


def test_left_truncation_keeps_the_start_of_a_long_response(plain_tok):
    full = example(QA, plain_tok)
    first = full.loss_mask.index(True)
    cut = example(QA, plain_tok, max_length=3)
    assert cut.input_ids == full.input_ids[first : first + 3]
    assert cut.loss_mask == [True, True, True]


def test_right_truncation(plain_tok):
    full = example(QA, plain_tok)
    n_prompt = full.loss_mask.count(False)
    cut = example(QA, plain_tok, max_length=n_prompt + 1, truncation="right")
    assert cut.input_ids == full.input_ids[: n_prompt + 1]
    assert cut.loss_mask == [False] * n_prompt + [True]


def test_record_truncated_away_is_an_error(plain_tok):
    record = Record(id="q", prompt=QA.prompt, response=QA.response, source="pool.jsonl", line=12)
    n_prompt = example(record, plain_tok).loss_mask.count(False)
    error = one(record, plain_tok, max_length=n_prompt, truncation="right")
    assert isinstance(error, RecordError) and "truncated away" in str(error)
    assert error.path == "pool.jsonl" and error.line == 12
    assert str(error).startswith("pool.jsonl:12:")
    with pytest.raises(ParamError, match="max_length"):
        one(record, plain_tok, max_length=0)
    with pytest.raises(ParamError, match="truncation"):
        one(record, plain_tok, truncation="middle")


def test_batches_match_one_by_one_in_any_batch_size(chat_tok):
    records = [QA, RAW, CHAT, QA, RAW]
    one_by_one = [example(r, chat_tok) for r in records]
    for batch_size in (1, 2, 64):
        assert tokenize_many(records, chat_tok, batch_size=batch_size) == one_by_one
    capped = tokenize_many(records, chat_tok, max_length=6)
    assert max(len(t.input_ids) for t in capped) == 6
    assert all(t.response_length <= len(t.input_ids) for t in capped)


def test_tokenize_many_returns_errors_in_place(plain_tok):
    n_prompt = example(QA, plain_tok).loss_mask.count(False)
    results = tokenize_many([RAW, QA, RAW], plain_tok, max_length=n_prompt, truncation="right")
    assert isinstance(results[1], RecordError)
    assert not isinstance(results[0], RecordError) and not isinstance(results[2], RecordError)


ROWS = [
    {"prompt": "what is two plus two", "completion": "two plus two is four"},
    {"prompt": "be brief and kind " * 5, "completion": "hello there"},
    {"prompt": "name a color", "completion": "blue is a color"},
]


def test_load_pool_with_a_tokenizer_object(write, host, chat_tok):
    path = write("jsonl", ROWS)
    pool = load_pool(path, host=host, tokenizer=chat_tok)
    examples = tokenize_many(list(pool), chat_tok)
    assert pool.cost_unit == "tokens"
    assert pool.costs.tolist() == [len(t.input_ids) for t in examples]
    assert pool.response_costs.tolist() == [t.response_length for t in examples]
    assert pool.fingerprint != load_pool(path, host=host).fingerprint  # words are not tokens


def test_load_pool_with_a_tokenizer_from_a_plugin(write, host, plain_tok):
    class Tiny:
        @hookimpl
        def selectkit_load_tokenizer(self, spec, trust_remote_code):
            return plain_tok if spec == "tiny" else None

    host.register(Tiny(), "tiny")
    path = write("jsonl", ROWS)
    pool = load_pool(path, host=host, tokenizer="tiny", template="plain")
    assert pool.costs.tolist() == [len(t.input_ids) for t in tokenize_many(list(pool), plain_tok)]
    assert pool.origin["tokenizer"] == "tiny"
    with pytest.raises(ParamError, match=r"no tokenizer '\./no/such/tokenizer'"):
        load_pool(path, host=host, tokenizer="./no/such/tokenizer")


def test_load_pool_truncation_errors_name_file_and_line(write, host, plain_tok):
    path = write("jsonl", ROWS)
    with pytest.raises(RecordError, match="truncated away") as info:
        load_pool(path, host=host, tokenizer=plain_tok, max_length=8, truncation="right")
    assert info.value.path == str(path) and info.value.line == 2
    pool = load_pool(
        path, host=host, tokenizer=plain_tok, max_length=8, truncation="right", on_error="skip"
    )
    assert pool.ids == ["0", "2"] and len(pool.skipped) == 1
    assert pool.skipped[0].startswith(f"{path}:2:")
    assert pool.costs.max() <= 8
