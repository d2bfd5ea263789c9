"""Group DRO over clusters: the update rule, and a whole (tiny) learn-weights run whose proposal
`clusters import` applies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.clustering.curation import list_clusters
from wallwm.pipeline.tables.store import LanceStore
from wallwm.trainer.learn_weights import (
    LearnWeightsConfig,
    _Probe,
    _Reliability,
    _split_half_agreement,
    _Weights,
    dro_update,
)


def test_the_update_moves_weight_to_clusters_with_excess_loss():
    alpha = np.full(4, 0.25)
    excess = np.array([0.0, 1.0, 0.0, 5.0])
    present = np.array([True, True, True, False])  # cluster 3 was not in the batch
    new = dro_update(alpha, excess, present, eta=1.0, smoothing=0.0)
    assert new.sum() == pytest.approx(1.0) and new[1] > new[0] == pytest.approx(new[2])
    assert new[3] == pytest.approx(new[0])  # an absent cluster is not rewarded for its old loss
    smoothed = dro_update(np.array([1.0, 0.0]), np.zeros(2), np.ones(2, bool), 1.0, 0.1)
    assert smoothed[1] == pytest.approx(0.05)  # never below the uniform share times smoothing


def test_a_common_lag_of_the_proxy_does_not_move_the_weights():
    alpha = np.array([0.1, 0.2, 0.3, 0.4])
    excess = np.array([0.0, 0.5, 0.1, 0.2])
    every = np.ones(4, bool)
    a = dro_update(alpha, excess, every, 1.0, 0.0)
    assert np.allclose(a, dro_update(alpha, excess + 3.0, every, 1.0, 0.0))


def _synthetic_run(noise: float, seed: int, k: int = 12, events: int = 6, repeats: int = 4):
    """The weights' state driven by probe losses with a known excess per cluster plus noise."""
    rng = np.random.default_rng(seed)
    cluster_E = np.repeat(np.arange(k), events)
    probe = _Probe.build(cluster_E, k, per_cluster=events, repeats=repeats, seed=seed)
    true_excess_K = np.linspace(0.0, 0.3, k)
    ref_P = rng.uniform(0.5, 1.5, len(probe.items))
    weights = _Weights(k, LearnWeightsConfig(dataset="-", out="-"), probe, ref_P)
    for _ in range(5):
        lag = rng.uniform(0.2, 1.0)  # the proxy lags everywhere: cancels
        proxy_P = ref_P + lag + true_excess_K[probe.cluster_P]
        weights.update(proxy_P + noise * rng.standard_normal(len(proxy_P)))
    mean_3K = weights.total_3K / weights.updates
    return mean_3K, _split_half_agreement(mean_3K[1:], probe, k)


def test_the_weights_follow_the_clusters_excess_and_the_halves_agree_when_it_is_real():
    mean_3K, agreement = _synthetic_run(noise=0.05, seed=0)
    assert np.all(np.diff(mean_3K[0]) > 0)  # ranked by the true excess
    assert agreement is not None and agreement > 0.9
    _, noisy = _synthetic_run(noise=3.0, seed=0)
    assert noisy is not None and noisy < 0.6  # mostly noise: the halves disagree


def test_probe_items_are_fixed_samples_split_into_halves():
    cluster_E = np.array([0, 0, 0, 1, 1, -1, 2])
    a = _Probe.build(cluster_E, 3, per_cluster=2, repeats=3, seed=1)
    b = _Probe.build(cluster_E, 3, per_cluster=2, repeats=3, seed=1)
    assert a.items == b.items and len(a.items) == (2 + 2 + 1) * 3
    assert {e for e, _ in a.items} <= {0, 1, 2, 3, 4, 6}  # unclustered events never probed
    assert set(a.half_P[a.cluster_P == 1]) == {0, 1}  # two events: one in each half
    assert min(s for _, s in a.items) >= 2**40  # never a training sample's seed


def test_an_unreliable_proposal_stays_near_the_current_weights():
    assert _Reliability.of(0.5).share == pytest.approx(2 / 3)  # Spearman-Brown
    assert _Reliability.of(-0.2).share == 0.0 and _Reliability.of(None).share == 1.0
    learned, current = np.array([4.0, 1.0, 0.25]), np.ones(3)
    assert np.allclose(_Reliability.of(0.0).shrink(learned, current), 1.0)
    full = _Reliability.of(1.0).shrink(learned, current)
    assert np.allclose(full, learned / learned.mean())
    half = _Reliability(0.33, 0.5).shrink(learned, current)
    assert half.mean() == pytest.approx(1.0) and half[0] / half[2] == pytest.approx(4.0)


@pytest.mark.usefixtures("ray_local")
def test_learn_weights_proposes_a_reviewable_import(tmp_path, synth_dataset):
    ds = synth_dataset(tmp_path, episodes=8, size=32, caption=True, cluster_ks=[4, 2])
    store = LanceStore(str(ds))
    runner = CliRunner()
    assert runner.invoke(app, ["clusters", "tag", "v1", "-d", str(ds)]).exit_code == 0
    proposal = tmp_path / "proposal.json"
    args = ["clusters", "learn-weights", "-d", str(ds), "--tag", "v1", "-o", str(proposal)]
    args += ["--preset", "debug", "--steps", "4", "--batch-size", "4", "--size", "32", "--json"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    leaves = json.loads(out.output)
    assert len(leaves) >= 2 and all(c["weight"] > 0 for c in leaves)
    assert np.mean([c["weight"] for c in leaves]) == pytest.approx(1.0, abs=1e-3)
    assert all(c["current_weight"] == 1.0 and c["mean_excess_loss"] >= 0 for c in leaves)
    assert all(c["learned_weight"] > 0 for c in leaves)
    written = json.loads(proposal.read_text())
    assert 0.0 <= written["reliability"] <= 1.0 and "split_half_agreement" in written
    # nothing changed by itself; the reviewed file applies through `clusters import`
    assert all(c["weight"] == 1.0 for c in list_clusters(store, level=1))
    applied = runner.invoke(app, ["clusters", "import", str(proposal), "-d", str(ds)])
    assert applied.exit_code == 0, applied.output
    now = {c["cluster_id"]: c["weight"] for c in list_clusters(store, level=1)}
    assert all(now[c["cluster_id"]] == pytest.approx(c["weight"]) for c in leaves)
