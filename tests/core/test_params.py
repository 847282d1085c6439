"""Method parameters: typed conversion from CLI strings and clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from selectkit.errors import ParamError
from selectkit.params import build_params, describe_params, parse_assignments


@dataclass(frozen=True)
class P:
    buckets: int = 10
    smoothing: float = 1.0
    sample: bool = True
    mode: Literal["mean", "max"] = "mean"
    words: tuple[str, ...] = ()
    limit: int | None = field(default=None, metadata={"help": "optional cap"})


def test_strings_convert_to_declared_types():
    params = build_params(
        P,
        parse_assignments(
            ["buckets=20", "smoothing=0.5", "sample=false", "mode=max", "words=a, b", "limit=none"]
        ),
        "method 'x'",
    )
    assert params == P(20, 0.5, False, "max", ("a", "b"), None)
    assert build_params(P, {"limit": "7"}, "m").limit == 7


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bucket": "3"}, r"has no parameter \['bucket'\]; its parameters are: buckets"),
        ({"buckets": "many"}, "parameter 'buckets' must be int"),
        ({"sample": "maybe"}, "must be true or false"),
        ({"mode": "median"}, r"must be one of \['mean', 'max'\]"),
    ],
)
def test_bad_values_name_the_parameter(values, message):
    with pytest.raises(ParamError, match=message):
        build_params(P, values, "method 'x'")


def test_assignment_without_equals_is_rejected():
    with pytest.raises(ParamError, match="key=value"):
        parse_assignments(["buckets"])


def test_describe_lists_defaults_and_help():
    rows = {row["name"]: row for row in describe_params(P)}
    assert rows["buckets"]["default"] == 10
    assert rows["limit"]["help"] == "optional cap"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"buckets": 1.5}, r"parameter 'buckets' must be int, not 1.5 \(float\)"),
        ({"buckets": True}, r"parameter 'buckets' must be int, not True \(bool\)"),
        ({"smoothing": False}, r"parameter 'smoothing' must be float, not False \(bool\)"),
        ({"smoothing": "lots"}, "parameter 'smoothing' must be float, not 'lots'"),
        ({"smoothing": 10**400}, "parameter 'smoothing' is too large for a float"),
        ({"sample": 3}, r"parameter 'sample' must be true or false, not 3"),
        ({"mode": "median"}, r"must be one of \['mean', 'max'\], not 'median'"),
        ({"mode": 1}, r"must be one of \['mean', 'max'\], not 1"),
        ({"words": "a"}, None),
        ({"words": [1, 2]}, r"parameter 'words' item 0 must be str, not 1 \(int\)"),
        ({"words": {"a": 1}}, r"parameter 'words' must be tuple\[str, ...\]"),
        ({"limit": 2.0}, r"parameter 'limit' must be int \| None, not 2.0 \(float\)"),
    ],
)
def test_python_values_are_checked_like_strings(values, message):
    if message is None:
        assert build_params(P, values, "method 'x'").words == ("a",)
        return
    with pytest.raises(ParamError, match=message) as info:
        build_params(P, values, "method 'x'")
    assert str(info.value).startswith("method 'x' parameter")


def test_python_values_of_the_declared_types_are_taken_and_normalized():
    import numpy as np

    params = build_params(
        P,
        {
            "buckets": np.int64(7),
            "smoothing": 2,
            "sample": np.bool_(False),
            "mode": "max",
            "words": ["a", "b"],
            "limit": None,
        },
        "m",
    )
    assert params == P(7, 2.0, False, "max", ("a", "b"), None)
    assert type(params.buckets) is int and type(params.smoothing) is float
    assert type(params.words) is tuple and build_params(P, {"limit": 3}, "m").limit == 3


def test_select_checks_python_params_before_any_work():
    from selectkit import Pool, select

    pool = Pool.from_texts(["a b", "c d e", "f"])
    for params, name in (({"num_buckets": 1.5}, "num_buckets"), ({"sample": 3}, "sample")):
        with pytest.raises(ParamError, match=f"method 'dsir' parameter '{name}' must be"):
            select(pool, "dsir", 1, target=pool, params=params)


def test_describe_gives_the_choices_of_a_literal():
    rows = {row["name"]: row for row in describe_params(P)}
    assert rows["mode"]["choices"] == ["mean", "max"]
    assert rows["buckets"]["choices"] is None
