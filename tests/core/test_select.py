"""select(): the path the CLI and Python share — checks, objective, solver, manifest, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from selectkit import Constraints, Context, Host, Method, Pool, Scores, hookimpl, select
from selectkit.errors import BudgetError, ParamError, PluginError
from selectkit.output import write_selection


def _pool(n=40):
    groups = ["even" if i % 2 == 0 else "odd" for i in range(n)]
    return Pool.from_texts([" ".join(["w"] * (1 + i % 7)) for i in range(n)], groups)


def test_random_is_seeded_and_respects_quotas():
    pool = _pool()
    quota = Constraints.build({"even": "3:3"})
    first = select(pool, "random", 10, constraints=quota, seed=1)
    again = select(pool, "random", 10, constraints=quota, seed=1)
    other = select(pool, "random", 10, constraints=quota, seed=2)
    assert first.indices.tolist() == again.indices.tolist()
    assert first.indices.tolist() != other.indices.tolist()
    assert sum(pool[i].group == "even" for i in first.indices) == 3
    assert len(set(first.indices.tolist())) == 10


def test_longest_takes_the_longest_responses_ties_by_position():
    pool = _pool(14)
    selection = select(pool, "longest", 3)
    assert selection.indices.tolist() == [6, 13, 5]
    assert selection.solution.status == "optimal"


def test_manifest_records_configuration_and_fingerprints():
    pool = _pool()
    selection = select(pool, "longest", "10%", constraints=Constraints.build({"odd": ":1"}), seed=7)
    manifest = selection.manifest
    assert manifest["seed"] == 7
    assert manifest["method"]["name"] == "longest"
    assert manifest["budget"] == {"spec": "10%", "unit": "items", "limit": 4}
    assert manifest["constraints"]["quotas"] == {"odd": ":1"}
    assert manifest["pool"]["fingerprint"] == pool.fingerprint
    assert manifest["selection"]["ids"] == selection.ids
    assert manifest["versions"]["selectkit"]
    json.dumps(manifest, allow_nan=False)


def test_method_needing_a_target_fails_before_work():
    with pytest.raises(ParamError, match="needs a target"):
        select(_pool(), "dsir", 5)


def test_infeasible_budget_fails_before_the_method_runs():
    calls = []

    class Spy(Method):
        name = "spy"

        def objective(self, pool, target, context: Context):
            calls.append(1)
            return Scores(np.zeros(len(pool)))

    class SpyPlugin:
        @hookimpl
        def selectkit_register_methods(self):
            return [Spy]

    host = Host.from_env()
    host.register(SpyPlugin(), name="spy")
    with pytest.raises(BudgetError):
        select(_pool(), "spy", 100, host=host)
    assert calls == []


def test_method_returning_no_objective_is_a_plugin_error_naming_it():
    class Wrong(Method):
        name = "wrong"

        def objective(self, pool, target, context: Context):
            return np.zeros(len(pool))  # an array, not Scores(...)

    class WrongPlugin:
        @hookimpl
        def selectkit_register_methods(self):
            return [Wrong]

    host = Host.from_env()
    host.register(WrongPlugin(), name="wrong-plugin")
    with pytest.raises(PluginError, match=r"method .wrong. .* returned ndarray .* an Objective"):
        select(_pool(), "wrong", 3, host=host)


def test_method_returning_wrong_length_is_named():
    class Short(Method):
        name = "short"

        def objective(self, pool, target, context: Context):
            return Scores(np.zeros(len(pool) - 1))

    class ShortPlugin:
        @hookimpl
        def selectkit_register_methods(self):
            return [Short]

    host = Host.from_env()
    host.register(ShortPlugin(), name="short")
    with pytest.raises(PluginError, match=r"method .short. .* returned 39 values for a pool of 40"):
        select(_pool(), "short", 3, host=host)


def test_write_selection_writes_records_manifest_and_scores(tmp_path):
    pool = _pool()
    selection = select(pool, "longest", 5)
    written = write_selection(
        selection, pool, tmp_path / "picked.jsonl", scores_out=tmp_path / "scores.jsonl"
    )
    assert [p.name for p in written] == ["picked.jsonl", "scores.jsonl", "picked.manifest.json"]
    rows = [json.loads(line) for line in (tmp_path / "picked.jsonl").read_text().splitlines()]
    assert rows == [pool[i].raw for i in selection.indices]
    scores = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == len(pool) and scores[3] == {
        "index": 3,
        "id": "3",
        "group": "odd",
        "score": 4.0,
    }


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    pool = _pool()
    selection = select(pool, "longest", 5)
    out = tmp_path / "picked.jsonl"
    real_lines = Pool.json_lines

    def failing_lines(self, indices):
        for number, line in enumerate(real_lines(self, indices)):
            if number == 2:
                raise OSError("disk full")
            yield line

    monkeypatch.setattr(Pool, "json_lines", failing_lines)
    with pytest.raises(OSError, match="disk full"):
        write_selection(selection, pool, out)
    assert list(tmp_path.iterdir()) == []


def test_selection_records_refuse_another_pool():
    selection = select(_pool(), "longest", 2)
    with pytest.raises(ValueError, match="different pool"):
        selection.records(_pool(12))


def test_manifest_sits_beside_the_output():
    from selectkit.output import manifest_path

    assert manifest_path("out/picked.jsonl").as_posix() == "out/picked.manifest.json"
    assert manifest_path("run.v2.jsonl").name == "run.v2.manifest.json"
    assert manifest_path("picked").name == "picked.manifest.json"


def test_failed_manifest_leaves_no_records_file_either(tmp_path, monkeypatch):
    pool = _pool()
    selection = select(pool, "longest", 5)

    def failing_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", failing_dump)
    with pytest.raises(OSError, match="disk full"):
        write_selection(selection, pool, tmp_path / "picked.jsonl", scores_out=tmp_path / "s.jsonl")
    assert list(tmp_path.iterdir()) == []


class _EveryThirdRuledOut(Method):
    """Scores by position; the method's own filter drops every third record."""

    name = "every-third-out"

    def objective(self, pool, target, context: Context):
        positions = np.arange(len(pool))
        return Scores(positions.astype(float), eligible=positions % 3 != 0, ruled_out="test")


def test_a_methods_filter_excludes_records_and_the_manifest_counts_them():
    selection = select(_pool(), _EveryThirdRuledOut(), 5)
    assert selection.indices.tolist() == [38, 37, 35, 34, 32]
    ruled = selection.manifest["constraints"]["ruled_out_by_method"]
    assert ruled == {"count": 14, "why": "test"}
    assert select(_pool(), "longest", 5).manifest["constraints"]["ruled_out_by_method"] is None


def test_a_filter_that_drops_a_required_record_is_an_error():
    with pytest.raises(BudgetError, match=r"method 'every-third-out' \(test\) rules out 1 requir"):
        select(_pool(), _EveryThirdRuledOut(), 5, constraints=Constraints.build(required=["3"]))


@pytest.mark.parametrize(
    ("budget", "quotas", "message"),
    [
        (30, {}, "only 26 selectable records"),
        (20, {"even": "10:"}, "group 'even' needs at least 10 items but has only 8"),
    ],
)
def test_a_filter_that_leaves_the_budget_unfillable_says_how_many_it_dropped(
    budget, quotas, message
):
    pool = Pool.from_texts(["x"] * 40, ["even"] * 12 + ["odd"] * 28)
    with pytest.raises(BudgetError, match=message) as caught:
        select(pool, _EveryThirdRuledOut(), budget, constraints=Constraints.build(quotas))
    assert "ruled out 14 of 40 records" in str(caught.value)


@pytest.mark.parametrize(
    "eligible", [np.ones(4, dtype=np.int64), np.ones(3, dtype=bool), np.ones((4, 1), dtype=bool)]
)
def test_an_eligibility_mask_must_be_boolean_and_one_per_record(eligible):
    with pytest.raises(ValueError, match="eligible must be a boolean mask of shape"):
        Scores(np.zeros(4), eligible=eligible)
