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
