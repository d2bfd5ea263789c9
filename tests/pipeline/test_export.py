"""``wallwm export lerobot``: what curation kept goes out as LeRobot v3.0, and comes back exactly.

Round trip: export -> ingest the export -> every exported episode's actions, states and event
bounds equal the source's (cut at the kept spans). The `lerobot` library itself (``.venv-lerobot``)
loads the export and iterates a DataLoader with ``delta_timestamps``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.clustering.curation import exclude, list_clusters, tag_snapshot
from wallwm.pipeline.export.lerobot import (
    ExportConfig,
    Span,
    decode_span,
    export_lerobot,
    kept_spans,
)
from wallwm.pipeline.ingest import load_episode
from wallwm.pipeline.sources.base import CameraInfo
from wallwm.pipeline.sources.registry import open_source
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore
from wallwm.pipeline.video import iter_video_frames

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-lerobot"
READER = ROOT / "tests" / "lerobot_support" / "read_export.py"


def test_kept_spans_split_an_episode_at_left_out_events():
    events = [{"start_frame": s, "end_frame": e, "k": k} for k, (s, e) in enumerate(
        [(0, 5), (5, 9), (9, 14), (14, 20), (20, 26)])]  # fmt: skip
    spans = kept_spans(events, lambda e: e["k"] not in (2, 4))
    assert [(s.start, s.end, [e["k"] for e in s.events]) for s in spans] == [
        (0, 9, [0, 1]),
        (14, 20, [3]),
    ]
    assert kept_spans(events, lambda e: True) == [Span(0, 26, tuple(events))]
    assert kept_spans(events, lambda e: False) == []


@pytest.fixture(scope="module")
def curated(tmp_path_factory, synth_dataset):
    """A captioned, clustered dataset with one cluster excluded, tagged ``v1``."""
    root = tmp_path_factory.mktemp("export")
    ds = synth_dataset(root, episodes=6, size=32, caption=True, cluster_ks=[4, 2])
    store = LanceStore(str(ds))
    exclude(store, list_clusters(store, level=1)[0]["cluster_id"], "not this behaviour")
    tag_snapshot(store, "v1")
    return ds


def expected_spans(store: LanceStore) -> dict[str, list[Span]]:
    excluded = {c["cluster_id"] for c in list_clusters(store, version="v1") if c["excluded"]}
    events = store.read(schemas.EVENTS, version="v1").to_pylist()
    out = {}
    for ep in {e["episode_id"] for e in events}:
        mine = sorted((e for e in events if e["episode_id"] == ep), key=lambda e: e["start_frame"])
        out[ep] = kept_spans(mine, lambda e: e["cluster_id"] not in excluded and e["weight"] > 0)
    return out


@pytest.mark.parametrize("reencode", [False, True], ids=["copy", "reencode"])
@pytest.mark.usefixtures("ray_local")
def test_export_round_trips_actions_states_and_event_bounds(curated, tmp_path, reencode):
    store = LanceStore(str(curated))
    out = tmp_path / "lerobot"
    told: list[int] = []
    summary = export_lerobot(
        ExportConfig(dataset=str(curated), tag="v1", out=str(out), reencode=reencode),
        on_start=told.append,
        on_episode=lambda: told.append(-1),
    )
    assert told == [summary.episodes_in] + [-1] * summary.episodes_in  # a progress bar's calls
    spans = expected_spans(store)
    assert summary.episodes_out == sum(len(s) for s in spans.values())
    assert summary.events_left_out > 0 and summary.episodes_out > summary.episodes_in  # a split
    assert (summary.videos_encoded > 0) == reencode and (summary.videos_copied > 0) != reencode

    episodes = {r["episode_id"]: r for r in store.read(schemas.EPISODES, version="v1").to_pylist()}
    meta = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert sum(m["sampling_weight"] for m in meta) == pytest.approx(1.0)
    source = open_source(out)
    refs, errors = source.list_episodes()
    assert errors == [] and len(refs) == len(meta)
    for ref, m in zip(refs, meta, strict=True):
        rec = load_episode(source, ref, frame_tolerance=0)  # every video window holds its frames
        src = episodes[m["wallwm/episode_id"]]
        span = next(s for s in spans[src["episode_id"]] if s.start == m["wallwm/from_frame"])
        np.testing.assert_array_equal(
            rec.actions_TA, np.asarray(src["actions"], np.float32)[span.start : span.end]
        )
        np.testing.assert_array_equal(
            rec.states_TS, np.asarray(src["states"], np.float32)[span.start : span.end]
        )
        assert rec.instruction == src["instruction"] and rec.fps == src["fps"]
        if span.start > 0:  # a cut episode's video shows its own frames, not its neighbours'
            source_cam = CameraInfo(**src["cameras"][0])
            if reencode:  # decoded from a seek to the span's first frame, frame-exact ...
                np.testing.assert_array_equal(
                    decode_span(source_cam, span.start, span.end, src["fps"]),
                    _frames(source_cam)[span.start : span.end],
                )  # ... and encoded again (lossy: close, not equal)
                assert (
                    np.abs(
                        _frames(rec.probed[0]) - _frames(source_cam)[span.start : span.end]
                    ).mean()
                    < 6
                )
            else:  # the copied file's window decodes to exactly the span's frames
                np.testing.assert_array_equal(
                    _frames(rec.probed[0]), _frames(source_cam)[span.start : span.end]
                )
        starts = [s for s, _label in rec.gt_events]
        assert starts == [e["start_frame"] - span.start for e in span.events]
        assert [label for _s, label in rec.gt_events] == [e["caption"] for e in span.events]
    assert list(store.read(schemas.RUNS, where="stage = 'export'").to_pylist())


def _frames(cam: CameraInfo) -> np.ndarray:
    window = iter_video_frames(cam.uri, cam.from_timestamp_s, cam.to_timestamp_s, "rgb24")
    return np.stack([np.asarray(f, np.float32) for _t, f in window])


def test_export_cli_refuses_what_it_cannot_write(curated, tmp_path):
    runner = CliRunner()
    out = tmp_path / "o"
    ok = runner.invoke(
        app, ["export", "lerobot", "-d", str(curated), "--tag", "v1", "-o", str(out)]
    )
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(
        app, ["export", "lerobot", "-d", str(curated), "--tag", "v1", "-o", str(out)]
    )
    assert again.exit_code == 1 and "exists and is not empty (--overwrite" in again.output
    nosuch = runner.invoke(
        app, ["export", "lerobot", "-d", str(curated), "--tag", "x", "-o", str(tmp_path / "p")]
    )
    assert nosuch.exit_code == 1 and "no tag 'x'" in nosuch.output


def test_the_lerobot_library_loads_the_export(curated, tmp_path):
    if not (VENV / ".wallwm-lerobot-ready").exists():
        pytest.skip(f"{VENV} could not be built (see scripts/build_lerobot_env.sh in `make test`)")
    out = tmp_path / "lerobot"
    summary = export_lerobot(ExportConfig(dataset=str(curated), tag="v1", out=str(out)))
    report = tmp_path / "report.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [str(VENV / "bin" / "python"), str(READER), str(out), str(report)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads(report.read_text())
    assert seen["num_episodes"] == summary.episodes_out and seen["num_frames"] == summary.frames
    assert seen["iterated"] == summary.frames
    first = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet").to_pylist()[:4]
    np.testing.assert_allclose(seen["first"]["action"], [r["action"] for r in first], rtol=1e-6)
    assert seen["first"]["images"] == {"observation.images.top": [3, 32, 32]}
    assert seen["last_action_is_pad"] == [False, True, True, True]  # the horizon ends with it


@pytest.mark.usefixtures("ray_local")
def test_hdf5_frames_are_encoded_and_round_trip(hdf5_source, tmp_path):
    """ALOHA/robomimic frames live in HDF5: the export encodes them (one file per camera). One
    LeRobot dataset has one set of cameras: episodes lacking the export's are left out, unless
    the cameras were given one name at ingest (``--camera-map``)."""
    from wallwm.pipeline.ingest import IngestConfig, run_ingest
    from wallwm.pipeline.segmentation import SegmentConfig

    root, _ = hdf5_source()  # ALOHA files call the camera cam_high, robomimic agentview_image
    for name, camera_map, skipped in (
        ("as-is", {}, 2),
        ("mapped", {"agentview_image": "cam_high"}, 0),
    ):
        ds = tmp_path / name
        cfg = IngestConfig(
            source=str(root), dataset=str(ds), executor="local", camera_map=camera_map
        )
        run_ingest(cfg.model_copy(update={"segment": SegmentConfig()}))
        out = tmp_path / f"lerobot-{name}"
        exported = export_lerobot(ExportConfig(dataset=str(ds), out=str(out), trim=False))
        assert exported.videos_copied == 0 and exported.videos_encoded == 1  # one file, one camera
        assert len(exported.episodes_skipped) == skipped
        assert exported.episodes_out == 4 - skipped
        episodes = {
            r["episode_id"]: r for r in LanceStore(str(ds)).read(schemas.EPISODES).to_pylist()
        }
        source = open_source(out)
        refs, errors = source.list_episodes()
        meta = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
        assert errors == [] and len(refs) == len(meta) == 4 - skipped
        for ref, m in zip(refs, meta.to_pylist(), strict=True):
            rec = load_episode(source, ref, frame_tolerance=0)  # every window holds its frames
            src = episodes[m["wallwm/episode_id"]]
            np.testing.assert_array_equal(rec.actions_TA, np.asarray(src["actions"], np.float32))
            assert rec.probed[0].num_frames == src["num_frames"]


def test_an_odd_sized_camera_is_reencoded(tmp_path, synth_dataset):
    """The re-encode passes a video's YUV 4:2:0 planes through, which exist only for even
    sides: a 33 px camera is re-encoded from RGB (it raised out of the export)."""
    ds = synth_dataset(tmp_path, episodes=2, size=33, seed=6)
    out = tmp_path / "lerobot"
    summary = export_lerobot(ExportConfig(dataset=str(ds), out=str(out), reencode=True))
    assert summary.videos_encoded == 1 and summary.episodes_out == 2
    source = open_source(out)
    refs, errors = source.list_episodes()
    assert errors == [] and len(refs) == 2
    rec = load_episode(source, refs[0], frame_tolerance=0)
    assert (rec.probed[0].width, rec.probed[0].height) == (33, 33)
