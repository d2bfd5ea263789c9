"""Embed, cluster, curate on real Ray and Lance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from wallwm.captioner.stage import CaptionStageConfig, run_caption
from wallwm.cli.main import app
from wallwm.clustering.curation import (
    CurationError,
    diff_clusters,
    exclude,
    list_clusters,
    set_weight,
    tag_snapshot,
)
from wallwm.clustering.embed import EmbedConfig, HashingEmbedder
from wallwm.clustering.embed_stage import run_embed, similar_events
from wallwm.clustering.stage import ClusterConfig, run_cluster
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore

pytestmark = pytest.mark.usefixtures("ray_local")


def hashing():
    return HashingEmbedder(48)


def test_embed_cluster_curate_assign_only(tmp_path, synth_dataset):
    ds = synth_dataset(tmp_path, episodes=12, size=32, caption=True)
    src = tmp_path / "src"
    store = LanceStore(str(ds))
    emb = run_embed(str(ds), EmbedConfig(), text_factory=hashing)
    assert emb.embedded == store.count(schemas.EVENTS) and emb.dims["text_embedding"] == 48
    schema = store.schema(schemas.EVENTS)
    assert schema.field("embedding").type.list_size == emb.dims["embedding"]
    summary = run_cluster(str(ds), ClusterConfig(ks=[8, 2]))
    assert summary.clusters == {1: 8, 2: 2}
    events = store.read(
        schemas.EVENTS, columns=["event_id", "cluster_id", "weight", "is_duplicate"]
    ).to_pylist()
    assert all(e["cluster_id"] for e in events)
    assert sum(e["weight"] for e in events) == pytest.approx(1.0, abs=1e-4)
    leaves = list_clusters(store, level=1)
    assert len(leaves) == 8 and all(c["parent_id"] for c in leaves)
    assert sum(c["size"] for c in leaves) == len(events)
    assert all(c["label"] != "unlabelled" for c in leaves)  # captions exist (signals backend)

    # curation: weight and exclusion change event weights; each edit is a new version
    v = store.version(schemas.CLUSTERS)
    set_weight(store, leaves[0]["cluster_id"], 4.0, "more of these")
    exclude(store, leaves[1]["cluster_id"])
    assert store.version(schemas.CLUSTERS) == v + 2
    mass = {}
    for e in store.read(schemas.EVENTS, columns=["cluster_id", "weight"]).to_pylist():
        mass[e["cluster_id"]] = mass.get(e["cluster_id"], 0.0) + e["weight"]
    assert mass[leaves[1]["cluster_id"]] == 0
    assert mass[leaves[0]["cluster_id"]] == pytest.approx(
        4 * mass[leaves[2]["cluster_id"]], rel=1e-3
    )
    runs = [r for r in store.read(schemas.RUNS).to_pylist() if r["stage"] == "curate"]
    assert (
        next(r["message"] for r in sorted(runs, key=lambda r: r["finished_at"])) == "more of these"
    )
    with pytest.raises(CurationError, match="unknown cluster"):
        set_weight(store, "L1-nope", 1.0)
    with pytest.raises(CurationError, match="finite number"):
        set_weight(store, leaves[0]["cluster_id"], -1.0)

    # new episodes arrive: --assign-only places them, keeps curation, reports drift
    tag_snapshot(store, "before")
    record_synthetic(src, SynthConfig(episodes=4, size=32, seed=9))
    run_ingest(
        IngestConfig(source=str(src), dataset=str(ds), executor="local", segment=SegmentConfig())
    )
    run_caption(CaptionStageConfig(dataset=str(ds)))
    run_embed(str(ds), EmbedConfig(), text_factory=hashing)
    assigned = run_cluster(str(ds), ClusterConfig(assign_only=True))
    assert assigned.assigned > 0 and set(assigned.drift) == {
        "new_events",
        "mean_distance_ratio",
        "fraction_beyond_p95",
    }
    after = {c["cluster_id"]: c for c in list_clusters(store, level=1)}
    assert (
        after[leaves[0]["cluster_id"]]["weight"] == 4.0
        and after[leaves[1]["cluster_id"]]["excluded"]
    )
    events = store.read(schemas.EVENTS, columns=["cluster_id", "weight"]).to_pylist()
    assert all(e["cluster_id"] for e in events)
    assert sum(e["weight"] for e in events if e["cluster_id"] == leaves[1]["cluster_id"]) == 0
    tag_snapshot(store, "after")
    d = diff_clusters(store, "before", "after")
    assert not d["added"] and not d["removed"]
    assert any("size" in c for c in d["changed"])  # the new events landed somewhere
    with pytest.raises(CurationError, match="already exists"):
        tag_snapshot(store, "after")

    near = similar_events(
        store, events and store.read(schemas.EVENTS, columns=["event_id"])[0][0].as_py(), 3
    )
    assert len(near) == 3 and near == sorted(near, key=lambda r: r["distance"])


def test_real_text_model_and_cli(tmp_path, synth_dataset):
    ds = synth_dataset(tmp_path, episodes=6, size=32, caption=True)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    out = invoke("embed", "--dataset", ds)  # the packaged all-MiniLM-L6-v2
    assert out.exit_code == 0 and "'text_embedding': 384" in out.output
    out = invoke("cluster", "--dataset", ds, "--levels", "2", "--k", "6,2")
    assert out.exit_code == 0 and "clusters per level {1: 6, 2: 2}" in out.output
    rows = json.loads(invoke("clusters", "list", "--dataset", ds, "--json").output)
    leaf = next(r for r in rows if r["level"] == 1)
    shown = json.loads(
        invoke("clusters", "show", leaf["cluster_id"], "--dataset", ds, "--json").output
    )
    assert shown["examples"] and shown["examples"][0]["event_id"] == shown["representatives"][0]
    assert (
        invoke(
            "clusters", "set-weight", leaf["cluster_id"], "2.5", "--dataset", ds, "-m", "x"
        ).exit_code
        == 0
    )
    assert invoke("clusters", "tag", "curated-v1", "--dataset", ds).exit_code == 0
    export = tmp_path / "clusters.json"
    assert invoke("clusters", "export", export, "--dataset", ds).exit_code == 0
    data = json.loads(export.read_text())
    data["clusters"][0]["excluded"] = True
    export.write_text(json.dumps(data))
    assert invoke("clusters", "import", export, "--dataset", ds).exit_code == 0
    assert invoke("clusters", "tag", "curated-v2", "--dataset", ds).exit_code == 0
    diff = json.loads(
        invoke("clusters", "diff", "curated-v1", "curated-v2", "--dataset", ds, "--json").output
    )
    assert diff["changed"] and "excluded" in diff["changed"][0]
    event = json.loads(invoke("events", "list", "--dataset", ds, "--json").output)[0]["event_id"]
    sim = json.loads(
        invoke("events", "similar", event, "--dataset", ds, "-k", "2", "--json").output
    )
    assert len(sim) == 2 and all(0 <= s["distance"] <= 2 for s in sim)
    bad = invoke("cluster", "--dataset", ds, "--levels", "2", "--k", "6")
    assert bad.exit_code != 0 and "levels" in bad.output
    assert invoke("clusters", "show", "L1-nope", "--dataset", ds).exit_code == 1
    assert np.isfinite(sum(s["distance"] for s in sim))


def test_visual_encoder_from_a_local_torchscript_file(tmp_path, synth_dataset):
    import torch

    ds = synth_dataset(tmp_path, episodes=3, size=32, caption=True)
    encoder = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    weights = tmp_path / "encoder.pt"
    torch.jit.save(torch.jit.script(encoder), str(weights))
    cfg = EmbedConfig(
        visual_weights=str(weights), weights={"text": 1.0, "traj": 0.5, "visual": 0.5}
    )
    summary = run_embed(str(ds), cfg, text_factory=hashing)
    assert summary.dims["visual_embedding"] == 8
    assert summary.dims["embedding"] == 48 + summary.dims["traj_embedding"] + 8
    rows = (
        LanceStore(str(ds))
        .read(schemas.EVENTS, columns=["visual_embedding", "embedding"])
        .to_pylist()
    )
    assert all(r["visual_embedding"] is not None for r in rows)
    assert all(abs(np.linalg.norm(r["embedding"]) - 1) < 1e-4 for r in rows)


def test_dedup_marks_a_recording_twice_not_repeats_of_a_task(tmp_path):
    """Trajectory dedup (the default) marks the copied episode's events only; SemDeDup on the
    embedding also marks distinct demonstrations of the same motion."""
    import shutil

    from wallwm.captioner.stage import CaptionStageConfig, run_caption

    src, ds = tmp_path / "src", tmp_path / "ds"
    record_synthetic(src, SynthConfig(episodes=10, size=32, seed=3))
    first = sorted(p for p in src.iterdir() if p.is_dir())[0]
    shutil.copytree(first, src / "copy-of-first")  # the same recording ingested twice
    run_ingest(IngestConfig(source=str(src), dataset=str(ds), segment=SegmentConfig()))
    run_caption(CaptionStageConfig(dataset=str(ds)))
    run_embed(str(ds), EmbedConfig(), text_factory=hashing)
    store = LanceStore(str(ds))
    episodes = store.read(schemas.EPISODES, columns=["episode_id", "episode_key"]).to_pylist()
    copy_ids = {
        e["episode_id"] for e in episodes if e["episode_key"] in (first.name, "copy-of-first")
    }

    def marked(cfg: ClusterConfig) -> list[str]:
        summary = run_cluster(str(ds), cfg)
        events = store.read(schemas.EVENTS, columns=["episode_id", "is_duplicate"]).to_pylist()
        assert summary.duplicates == sum(e["is_duplicate"] for e in events)
        return [e["episode_id"] for e in events if e["is_duplicate"]]

    one_copy = sorted(copy_ids)[0]
    per_copy = sum(
        e["episode_id"] == one_copy
        for e in store.read(schemas.EVENTS, columns=["episode_id"]).to_pylist()
    )
    by_trajectory = marked(ClusterConfig(ks=[4, 2]))
    assert len(by_trajectory) == per_copy and set(by_trajectory) <= copy_ids  # one copy's events
    assert marked(ClusterConfig(ks=[4, 2], dedup="off")) == []
    by_embedding = marked(ClusterConfig(ks=[4, 2], dedup="embedding", dedup_threshold=0.9))
    assert set(by_embedding) - copy_ids  # distinct episodes of the same task look alike
    result = CliRunner().invoke(app, ["cluster", "--dataset", str(ds), "--dedup", "nope"])
    assert result.exit_code == 2 and "dedup" in result.output and "Traceback" not in result.output
