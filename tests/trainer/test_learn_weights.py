"""Group DRO over clusters: the update rule, and a whole (tiny) learn-weights run whose proposal
`clusters import` applies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.clustering.curation import list_clusters
from wallwm.pipeline.store import LanceStore
from wallwm.trainer.learn_weights import dro_update


def test_the_update_moves_weight_to_clusters_with_excess_loss():
    alpha = np.full(4, 0.25)
    excess = np.array([0.0, 1.0, 0.0, 5.0])
    present = np.array([True, True, True, False])  # cluster 3 was not in the batch
    new = dro_update(alpha, excess, present, eta=1.0, smoothing=0.0)
    assert new.sum() == pytest.approx(1.0) and new[1] > new[0] == pytest.approx(new[2])
    assert new[3] == pytest.approx(new[0])  # an absent cluster is not rewarded for its old loss
    smoothed = dro_update(np.array([1.0, 0.0]), np.zeros(2), np.ones(2, bool), 1.0, 0.1)
    assert smoothed[1] == pytest.approx(0.05)  # never below the uniform share times smoothing


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
    # nothing changed by itself; the reviewed file applies through `clusters import`
    assert all(c["weight"] == 1.0 for c in list_clusters(store, level=1))
    applied = runner.invoke(app, ["clusters", "import", str(proposal), "-d", str(ds)])
    assert applied.exit_code == 0, applied.output
    now = {c["cluster_id"]: c["weight"] for c in list_clusters(store, level=1)}
    assert all(now[c["cluster_id"]] == pytest.approx(c["weight"]) for c in leaves)
