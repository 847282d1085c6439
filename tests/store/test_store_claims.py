"""The early claim on a featurize request: an identical second run is refused before it loads
anything, other shards and other requests go ahead, and runs that only read are never refused.
Flocks exclude per open file description, so two claims in one process stand for two processes
(the kill test in test_store_kills.py does it with a real second process)."""

from __future__ import annotations

import numpy as np
import pytest

from selectkit.api import featurize, load_records_from_list
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.synthetic import make_records
from selectkit.errors import StoreError
from selectkit.features.featurize import FeaturizeConfig
from selectkit.host import Host
from selectkit.store import FeatureStore, Layout, RowStatus

CONFIG = FeaturizeConfig(projection=ProjectionConfig(dim=16), batch_size=4, max_length=96)
REQUEST = {"pool": "abc", "model": {"spec": "tiny-llama"}}


def test_a_request_has_one_writer_at_a_time(tmp_path):
    store = FeatureStore(tmp_path)
    with store.claim_request(REQUEST, (0, 1)) as claim:
        with pytest.raises(StoreError) as info, store.claim_request(REQUEST, (0, 1)):
            pass
        assert str(info.value).startswith("another process (pid ")
        assert "is already extracting these features (shard 0/1)" in str(info.value)
        with store.claim_request(REQUEST, (1, 2)), store.claim_request({"pool": "x"}, (0, 1)):
            pass  # another shard, another request
        entry = store.open({"k": 1}, Layout(2, 2, "float32", 2))
        claim.record([entry.id])
    with store.claim_request(REQUEST, (0, 1)) as claim:
        # What it resolved to last time is not complete: an identical run would write.
        with (
            pytest.raises(StoreError, match="already extracting"),
            store.claim_request(REQUEST, (0, 1)),
        ):
            pass
        entry.write_block(0, np.ones((2, 2)), np.full(2, RowStatus.DONE, np.uint8))
        assert entry.finalize()
        with store.claim_request(REQUEST, (0, 1)):
            pass  # now complete: both only read


def test_an_identical_featurize_is_refused_before_it_loads_the_model(tmp_path, monkeypatch):
    pool = load_records_from_list(make_records(1, seed=6))
    store = FeatureStore(tmp_path)
    real = Host.load_model
    loads: list[str] = []
    inner: list[object] = []

    def load_and_start_another(host, spec, options=None):
        loads.append(spec)
        if len(loads) == 1:  # the first run holds its claim: an identical one starts now
            try:
                featurize(pool, "tiny-llama", config=CONFIG, store=store, progress=False)
            except StoreError as exc:
                inner.append(exc)
        return real(host, spec, options)

    monkeypatch.setattr(Host, "load_model", load_and_start_another)
    (entry,) = featurize(pool, "tiny-llama", config=CONFIG, store=store, progress=False)
    assert loads == ["tiny-llama"]  # the second run never loaded the model
    (refused,) = inner
    assert "is already extracting these features (shard 0/1)" in str(refused)

    # The entry is complete now: a run that only reads it does not refuse another.
    loads.clear()
    (again,) = featurize(pool, "tiny-llama", config=CONFIG, store=store, progress=False)
    assert again.id == entry.id and loads == ["tiny-llama", "tiny-llama"] and inner == [refused]
