"""What a worker sends back: a result, the user's error as the same class, or a bug with the
worker's traceback."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from selectkit.errors import ParamError, RecordError
from selectkit.executors import ExecutorConfig, InProcess, Worker
from selectkit.executors.outcomes import UnitFailed, attempt
from selectkit.host import Host


class PluginsOwnError(ParamError):
    """An error class a plugin defines: it comes back as the nearest one selectkit knows."""


@dataclass(frozen=True)
class Raising:
    error: BaseException | None
    size: int = 3
    label: str = "unit 0"

    def run(self, worker, report):
        report(2)
        if self.error is not None:
            raise self.error
        return {"ok": 1}


@pytest.fixture
def worker():
    return Worker(Host(entry_points=False))


def test_a_result_comes_back(worker):
    unit = Raising(None)
    assert attempt(unit, worker, lambda done: None).unwrap(unit) == {"ok": 1}


def test_a_record_error_comes_back_with_its_place(worker):
    unit = Raising(RecordError("empty response", path="pool.jsonl", line=7, field="output"))
    with pytest.raises(RecordError) as caught:
        attempt(unit, worker, lambda done: None).unwrap(unit)
    assert str(caught.value) == "pool.jsonl:7: field 'output': empty response"
    assert (caught.value.path, caught.value.line, caught.value.field) == ("pool.jsonl", 7, "output")


def test_a_plugins_error_class_comes_back_as_the_nearest_known_one(worker):
    unit = Raising(PluginsOwnError("bad projection.dim"))
    with pytest.raises(ParamError, match="bad projection"):
        attempt(unit, worker, lambda done: None).unwrap(unit)


def test_a_bug_comes_back_with_the_workers_traceback(worker):
    unit = Raising(ZeroDivisionError("division by zero"))
    with pytest.raises(UnitFailed, match=r"unit 0 failed in a worker:\n(.|\n)*ZeroDivisionError"):
        attempt(unit, worker, lambda done: None).unwrap(unit)


def test_in_process_runs_units_in_order():
    executor = InProcess(Host(entry_points=False))
    units = [Raising(None, label=f"unit {i}") for i in range(3)]
    assert executor.run(units, label="test", progress=False) == [{"ok": 1}] * 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"executor": "spark"}, "executor must be inprocess, processes or ray, not 'spark'"),
        ({"workers": -1}, "workers must be 0"),
        ({"workers": 1.5}, "workers must be a whole number"),
        ({"ray_address": "auto"}, "ray_address is only for executor 'ray'"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ParamError, match=message):
        ExecutorConfig(**settings)
