"""Closed-loop failures mapped to clusters: each failed rollout's last event, through the
dataset's captions, to the cluster of the events that carry it; shown by eval and the report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.clustering.attribution import failure_attribution
from wallwm.clustering.report import write_report
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore

pytestmark = pytest.mark.usefixtures("ray_local")


def rollouts(last_events: list[str | None], successes: int) -> dict:
    failed = [{"success": False, "last_event": e, "events": [e]} for e in last_events]
    won = [{"success": True, "last_event": "x", "events": ["x"]}] * successes
    return {"per_task": {"reach-v3": {"rollouts": [*failed, *won]}}}


def test_failures_land_on_the_clusters_of_their_events(tmp_path, synth_dataset):
    ds = synth_dataset(tmp_path, episodes=9, size=32, caption=True, cluster_ks=[4, 2])
    store = LanceStore(str(ds))
    events = store.read(schemas.EVENTS, columns=["caption", "cluster_id"]).to_pylist()
    owners: dict[str, set[str]] = {}
    for e in events:
        owners.setdefault(e["caption"], set()).add(e["cluster_id"])
    caption = next(c for c, cl in owners.items() if len(cl) == 1)  # a caption of one cluster
    [cluster] = owners[caption]
    result = rollouts([caption, caption, caption, "a text no event has"], successes=5)
    rows = {r["cluster_id"]: r for r in failure_attribution(store, result)}
    assert rows[cluster]["failures"] == 3 and rows[cluster]["failure_share"] == pytest.approx(0.75)
    assert rows["unmapped"]["failures"] == 1
    assert sum(r["failures"] for r in rows.values()) == 4  # successes are not failures
    assert sum(r["sample_share"] for r in rows.values()) == pytest.approx(1.0)

    page = write_report(store, tmp_path / "report", rollouts=result).read_text()
    assert "<th>failure share</th>" in page and "0.750" in page
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(result))
    runner = CliRunner()
    ok = runner.invoke(
        app, ["report", "-d", str(ds), "-o", str(tmp_path / "r2"), "--rollouts", str(path)]
    )
    assert ok.exit_code == 0, ok.output
    path.write_text("{}")
    bad = runner.invoke(
        app, ["report", "-d", str(ds), "-o", str(tmp_path / "r3"), "--rollouts", str(path)]
    )
    assert bad.exit_code == 2 and "not an `eval policy --json` result" in bad.output
