"""One pass, every view: several gradient types and projections stored from one
forward-backward per block, each entry byte-identical to its view extracted alone; methods run
together find what the first one's pass stored."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from click.testing import CliRunner

from selectkit.api import featurize, featurize_views, load_records_from_list, select
from selectkit.cli import cli
from selectkit.compute.projectors import ProjectionConfig
from selectkit.data.synthetic import make_records
from selectkit.features.featurize import FeaturizeConfig, View
from selectkit.host import get_host
from selectkit.params import build_params
from selectkit.store import FeatureStore

CONFIG = FeaturizeConfig(projection=ProjectionConfig(dim=64), batch_size=4, max_length=96)


def digests(entry) -> dict[str, str]:
    assert entry.complete
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in entry.path.glob("*.npy")}


def test_views_of_one_pass_have_the_bytes_of_each_alone(tmp_path):
    pool = load_records_from_list(make_records(2, seed=4))
    views = [
        View("sgd", CONFIG.projection),
        View("sign", CONFIG.projection),
        View("sgd", ProjectionConfig(dim=32, seed=7)),
    ]
    together = featurize_views(
        pool, "tiny-llama", views=views, config=CONFIG, store=FeatureStore(tmp_path / "together"),
        progress=False,
    )  # fmt: skip
    for number, view in enumerate(views):
        config = replace(CONFIG, gradient=view.gradient, projection=view.projection)
        store = FeatureStore(tmp_path / f"alone-{number}")
        (alone,) = featurize(pool, "tiny-llama", config=config, store=store, progress=False)
        (stored,) = together[view]
        assert stored.id == alone.id
        assert digests(stored) == digests(alone)


def test_a_second_pass_only_fills_the_views_still_missing(tmp_path):
    pool = load_records_from_list(make_records(2, seed=4))
    store = FeatureStore(tmp_path)
    (first,) = featurize(pool, "tiny-llama", config=CONFIG, store=store, progress=False)
    before = digests(first)
    also = View("sign", CONFIG.projection)
    (again,) = featurize(
        pool, "tiny-llama", config=CONFIG, also=[also], store=store, progress=False
    )
    assert again.id == first.id and digests(again) == before
    assert len([p for p in tmp_path.iterdir() if len(p.name) == 64]) == 2


def test_featurize_command_refuses_an_unknown_gradient_type(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"instruction": "a", "output": "b c d"}\n')
    result = CliRunner().invoke(cli, ["featurize", str(pool), "--gradient", "adam,sdg"])
    assert result.exit_code == 2
    assert "--gradient adam,sdg: give one or more of sgd, adam, sign" in result.output


def test_methods_run_together_read_the_pool_features_of_the_first_pass(
    targeted, gradient_params, tmp_path
):
    pool, target = targeted
    host = get_host()
    tracin = host.method("tracin")(
        build_params(host.method("tracin").Params, gradient_params, "tracin")
    )
    cache = tmp_path / "features"
    select(pool, "less", "5%", target=target, params=gradient_params, cache_dir=cache,
           alongside=[tracin])  # fmt: skip
    entries = {p.name for p in cache.iterdir() if len(p.name) == 64}
    select(pool, tracin, "5%", target=target, cache_dir=cache)
    assert {p.name for p in cache.iterdir() if len(p.name) == 64} == entries
