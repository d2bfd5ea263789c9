"""The segment stage on real Ray and Lance: events rows, keyframes, idempotency, replacement."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.inspect import evaluate_segmentation, list_events
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.segmentation.stage import SegmentStageConfig, episode_signals, run_segment
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture
def ingested(folder_source, tmp_path):
    src, ds = folder_source(6), tmp_path / "ds"
    assert run_ingest(IngestConfig(source=str(src), dataset=str(ds))).written == 6
    return src, ds


def test_segment_writes_events_with_keyframes_and_is_idempotent(ingested):
    _src, ds = ingested
    store = LanceStore(str(ds))
    first = run_segment(SegmentStageConfig(dataset=str(ds)))
    assert (first.segmented, first.failed) == (6, 0) and first.events > 6
    rows = store.read(schemas.EVENTS).to_pylist()
    assert len(rows) == first.events
    episodes = {
        r["episode_id"]: r
        for r in store.read(
            schemas.EPISODES, columns=["episode_id", "num_frames", "fps"]
        ).to_pylist()
    }
    for ep_id, ep in episodes.items():
        evs = sorted((r for r in rows if r["episode_id"] == ep_id), key=lambda r: r["event_index"])
        # events tile the episode exactly
        assert evs[0]["start_frame"] == 0 and evs[-1]["end_frame"] == ep["num_frames"]
        assert all(a["end_frame"] == b["start_frame"] for a, b in itertools.pairwise(evs))
        assert all(e["num_events"] == len(evs) for e in evs)
        assert evs[-1]["end_s"] == pytest.approx(ep["num_frames"] / ep["fps"])
        # 3 keyframes per camera (two cameras), JPEG bytes
        kf = evs[0]["keyframes"]
        assert sorted((k["camera"], k["position"]) for k in kf) == sorted(
            (c, p) for c in ("side", "top") for p in ("first", "middle", "last")
        )
        assert all(k["jpeg"][:2] == b"\xff\xd8" for k in kf)
        assert evs[0]["cues"] == ["episode_start"] and all(e["cues"] for e in evs[1:])
    version = store.version(schemas.EVENTS)
    again = run_segment(SegmentStageConfig(dataset=str(ds)))
    assert (again.segmented, again.up_to_date) == (0, 6) and store.version(
        schemas.EVENTS
    ) == version
    forced = run_segment(SegmentStageConfig(dataset=str(ds), force=True))
    assert forced.segmented == 6 and store.version(schemas.EVENTS) == version  # same events
    runs = [r for r in store.read(schemas.RUNS).to_pylist() if r["stage"] == "segment"]
    assert len(runs) == 3 and json.loads(runs[0]["config_json"])["segment"]["method"] == "events"


def test_resegmenting_replaces_each_episode_atomically(ingested):
    _src, ds = ingested
    store = LanceStore(str(ds))
    run_segment(SegmentStageConfig(dataset=str(ds)))
    fixed = run_segment(
        SegmentStageConfig(dataset=str(ds), segment=SegmentConfig(method="fixed", chunk_len=10))
    )
    assert fixed.segmented == 6
    rows = store.read(
        schemas.EVENTS, columns=["episode_id", "start_frame", "segment_method"]
    ).to_pylist()
    assert {r["segment_method"] for r in rows} == {"fixed"}  # no stale events survive
    assert all(r["start_frame"] % 10 == 0 for r in rows)
    assert len(rows) == fixed.events


def test_eval_segmentation_against_ground_truth(ingested):
    _src, ds = ingested
    store = LanceStore(str(ds))
    run_segment(SegmentStageConfig(dataset=str(ds)))
    result = evaluate_segmentation(store, 3)
    assert result["episodes"] == 6 and set(result["per_task"]) and result["overall"]["f1"] > 0.5
    # the recall per ground-truth event: the recorder's event names, adding up to the overall
    per_event = result["per_event"]
    assert per_event and "-" not in per_event and all(m["boundaries"] for m in per_event.values())
    found = sum(m["found"] for m in per_event.values())
    assert found / sum(m["boundaries"] for m in per_event.values()) == pytest.approx(
        result["overall"]["recall"]
    )
    run_segment(
        SegmentStageConfig(dataset=str(ds), segment=SegmentConfig(method="fixed", chunk_len=40))
    )
    worse = evaluate_segmentation(store, 3)
    assert worse["overall"]["f1"] < result["overall"]["f1"]


def test_eval_until_success_scores_each_episode_before_its_success_frame(folder_source, tmp_path):
    """The benchmarks' protocol where the ground truth stops at the task's success: a source's
    success step (meta.json ``success_step``) ends the episode for ``--until-success`` -- cuts
    and boundaries from it on do not count -- and the episodes without one are scored whole."""
    src, ds = folder_source(6), tmp_path / "ds"
    success = {}
    for i, d in enumerate(sorted(src.iterdir())):
        meta = json.loads((d / "meta.json").read_text())
        if i < 4:  # two episodes without a success step: scored whole either way
            frames = len(pq.read_table(d / "steps.parquet"))
            success[d.name] = 10 * (frames // 20) + 5  # between two of the chunks' cuts
            meta = {**meta, "success": True, "success_step": success[d.name]}
        (d / "meta.json").write_text(json.dumps(meta))
    assert run_ingest(IngestConfig(source=str(src), dataset=str(ds))).written == 6
    store = LanceStore(str(ds))
    run_segment(
        SegmentStageConfig(dataset=str(ds), segment=SegmentConfig(method="fixed", chunk_len=10))
    )
    rows = store.read(
        schemas.EPISODES, columns=["episode_key", "num_frames", "gt_events", "success_frame"]
    ).to_pylist()
    assert {r["episode_key"]: r["success_frame"] for r in rows if r["success_frame"]} == success

    def expected(until: bool) -> tuple[int, int]:
        cuts = truths = 0
        for r in rows:
            end = success.get(r["episode_key"], r["num_frames"]) if until else r["num_frames"]
            cuts += len(range(10, end, 10))
            truths += sum(0 < e["start_frame"] < end for e in r["gt_events"])
        return cuts, truths

    whole = evaluate_segmentation(store, 3)
    until = evaluate_segmentation(store, 3, until_success=True)
    assert (whole["overall"]["predicted"], whole["overall"]["actual"]) == expected(False)
    assert (until["overall"]["predicted"], until["overall"]["actual"]) == expected(True)
    assert expected(True) < expected(False)  # the window did shrink
    assert until["episodes_until_success"] == 4 and whole["episodes_until_success"] == 0
    from typer.testing import CliRunner

    from wallwm.cli.main import app

    shown = CliRunner().invoke(app, ["eval", "segmentation", "-d", str(ds), "--until-success"])
    assert shown.exit_code == 0 and "4 scored until their success frame" in " ".join(
        shown.output.split()
    )


def test_a_dataset_from_before_the_success_frame_is_scored_whole_until_read_again(
    folder_source, tmp_path
):
    """A table written before the ``success_frame`` column: ``--until-success`` scores it whole
    (no error), and a forced re-read of its source adds the column and fills it."""
    src = folder_source(2)
    for d in src.iterdir():
        meta = json.loads((d / "meta.json").read_text())
        (d / "meta.json").write_text(json.dumps({**meta, "success": True, "success_step": 25}))
    run_ingest(IngestConfig(source=str(src), dataset=str(tmp_path / "new")))
    rows = LanceStore(str(tmp_path / "new")).read(schemas.EPISODES).drop_columns(["success_frame"])
    old = LanceStore(str(tmp_path / "old"))
    old.upsert(schemas.EPISODES, rows, key="episode_id")  # the layout of an older release
    run_segment(
        SegmentStageConfig(
            dataset=str(tmp_path / "old"), segment=SegmentConfig(method="fixed", chunk_len=10)
        )
    )
    before = evaluate_segmentation(old, 3, until_success=True)
    assert before["episodes"] == 2 and before["episodes_until_success"] == 0
    assert before["overall"] == evaluate_segmentation(old, 3)["overall"]
    read = run_ingest(IngestConfig(source=str(src), dataset=str(tmp_path / "old"), force=True))
    assert read.written == 2
    after = evaluate_segmentation(old, 3, until_success=True)
    assert after["episodes_until_success"] == 2
    assert after["overall"]["predicted"] == 2 * 2  # the chunks' cuts at 10 and 20


def test_missing_video_still_gets_events_and_a_recorded_warning(ingested):
    src, ds = ingested
    victim = sorted(src.iterdir())[0]
    video = (victim / "side.mp4").read_bytes()
    (victim / "side.mp4").unlink()
    summary = run_segment(SegmentStageConfig(dataset=str(ds)))
    assert summary.segmented == 6 and summary.failed == 0
    store = LanceStore(str(ds))
    failures = store.read(schemas.FAILURES, where="stage = 'segment'").to_pylist()
    assert len(failures) == 1 and failures[0]["error_class"] == "KeyframesUnavailable"
    assert "side.mp4" in failures[0]["file"]
    ep_id = store.read(
        schemas.EPISODES, columns=["episode_id"], where=f"episode_key = '{victim.name}'"
    )[0][0].as_py()
    events = list_events(store, ep_id)
    assert events and all(e["episode_id"] == ep_id for e in events)

    # the video is back: a run that segments the episode again resolves the warning
    (victim / "side.mp4").write_bytes(video)
    again = run_segment(SegmentStageConfig(dataset=str(ds), force=True))
    assert again.failed == 0 and again.segmented == 6
    rows = store.read(schemas.FAILURES, where="stage = 'segment'").to_pylist()
    assert [r["resolved"] for r in rows] == [True]


def test_fused_run_equals_ingest_then_segment(folder_source, tmp_path):
    src = folder_source(5)
    two, fused = tmp_path / "two", tmp_path / "fused"
    run_ingest(IngestConfig(source=str(src), dataset=str(two)))
    run_segment(SegmentStageConfig(dataset=str(two)))
    summary = run_ingest(IngestConfig(source=str(src), dataset=str(fused), segment=SegmentConfig()))
    assert summary.written == 5 and summary.events > 5

    def events(ds):
        cols = [
            "event_id",
            "start_frame",
            "end_frame",
            "confidence",
            "cues",
            "keyframes",
            "segment_config_hash",
            "episode_content_hash",
        ]
        return sorted(
            LanceStore(str(ds)).read(schemas.EVENTS, columns=cols).to_pylist(),
            key=lambda r: r["event_id"],
        )

    assert events(fused) == events(two)  # same cuts, keyframe bytes and lineage hash
    # the separate stage sees the fused events as up to date
    again = run_segment(SegmentStageConfig(dataset=str(fused)))
    assert (again.segmented, again.up_to_date) == (0, 5)
    stages = [r["stage"] for r in LanceStore(str(fused)).read(schemas.RUNS).to_pylist()]
    assert sorted(stages) == ["ingest", "segment", "segment"]


def test_every_path_chooses_the_model_on_the_same_episodes(folder_source, tmp_path):
    """More episodes than the choice samples: `wallwm run`, ingest then segment, and a run
    after an interrupted ingest all choose on the same spread sample (by key), so they cut
    alike. Sampled by id in the table and by key in the source, two paths chose different
    pairings on one 40-episode source, and one episode was cut differently."""
    from wallwm.pipeline.segmentation.selection import SAMPLE_EPISODES
    from wallwm.pipeline.tables.lineage import recorded_configs

    src = folder_source(SAMPLE_EPISODES + 12, seed=5, cameras=("top",))
    later = tmp_path / "later"  # what an ingest killed part-way had not stored yet
    later.mkdir()
    local = {"executor": "local"}

    def choice(ds):
        config = recorded_configs(LanceStore(str(ds)), "segment")[-1]  # where it was chosen
        return config["segment"], config["details"]["choice"]

    fused = tmp_path / "fused"
    run_ingest(IngestConfig(source=str(src), dataset=str(fused), segment=SegmentConfig(), **local))
    two = tmp_path / "two"
    run_ingest(IngestConfig(source=str(src), dataset=str(two), **local))
    run_segment(SegmentStageConfig(dataset=str(two), **local))
    resumed = tmp_path / "resumed"
    for episode in [e for i, e in enumerate(sorted(src.iterdir())) if i % 3]:
        episode.rename(later / episode.name)
    run_ingest(IngestConfig(source=str(src), dataset=str(resumed), **local))
    stored = len(list(src.iterdir()))
    for episode in later.iterdir():
        episode.rename(src / episode.name)
    rest = IngestConfig(source=str(src), dataset=str(resumed), segment=SegmentConfig(), **local)
    assert run_ingest(rest).unchanged == stored
    run_segment(SegmentStageConfig(dataset=str(resumed), **local))
    assert choice(two) == choice(fused) and choice(resumed) == choice(fused)
    assert cuts(two) == cuts(fused) and cuts(resumed) == cuts(fused)


def cuts(ds) -> list[tuple[str, int, int]]:
    rows = LanceStore(str(ds)).read(
        schemas.EVENTS, columns=["episode_id", "start_frame", "end_frame"]
    )
    return sorted(tuple(r.values()) for r in rows.to_pylist())


def test_episode_signals_finds_gripper_by_the_sources_rule():
    """A dim named ``grip`` is a gripper for segmentation as it is for the reader's vote."""
    row = {"fps": 10.0, "action_names": ["x", "y", "grip"], "gripper": None}
    sig = episode_signals(row, np.zeros((5, 3), np.float32), None, None)
    assert sig.gripper_action_dims == [2]
