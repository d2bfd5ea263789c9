"""Each source reader reads exactly what its format stores (no Ray here)."""

from __future__ import annotations

import numpy as np
import pytest

from wallwm.pipeline.ingest import load_episode
from wallwm.pipeline.sources.base import UnknownFormatError
from wallwm.pipeline.sources.registry import detect_format, open_source


def test_detect_formats(folder_source, lerobot_v3, hdf5_source, tmp_path):
    assert detect_format(folder_source(2)) == "folder"
    assert detect_format(lerobot_v3(2)[0]) == "lerobot"
    assert detect_format(hdf5_source()[0]) == "hdf5"
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(UnknownFormatError, match="unknown source format"):
        detect_format(tmp_path / "junk")
    with pytest.raises(UnknownFormatError, match="does not exist"):
        detect_format(tmp_path / "nope")


def test_unknown_format_name_suggests(tmp_path):
    with pytest.raises(UnknownFormatError, match="did you mean 'lerobot'"):
        open_source(tmp_path, "lerobt")


def test_folder_source_reads_signals_video_and_ground_truth(folder_source):
    root = folder_source(3)
    source = open_source(root)
    refs, errors = source.list_episodes()
    assert errors == [] and len(refs) == 3
    rec = load_episode(source, refs[0], frame_tolerance=0)
    t = rec.actions_TA.shape[0]
    assert rec.actions_TA.shape == (t, 4) and rec.states_TS.shape == (t, 4)
    assert rec.gripper_TG.shape == (t, 1)
    assert [c.name for c in rec.probed] == ["side", "top"]
    assert all(c.num_frames == t and c.codec == "h264" and c.width == 64 for c in rec.probed)
    assert rec.gt_events[0][0] == 0 and len(rec.gt_events) >= 3
    assert rec.instruction and rec.fps == 20.0


def test_lerobot_v3_offsets_into_shared_files(lerobot_v3):
    root, eps = lerobot_v3(4)
    source = open_source(root)
    assert source.version == "v3.0"
    refs, errors = source.list_episodes()
    assert errors == [] and [r.episode_key for r in refs] == [f"episode_{i:06d}" for i in range(4)]
    for ref, ep in zip(refs, eps, strict=True):
        rec = load_episode(source, ref, frame_tolerance=0)
        np.testing.assert_allclose(rec.actions_TA, ep["actions"], rtol=1e-6)
        np.testing.assert_allclose(rec.states_TS, ep["states"], rtol=1e-6)
        assert rec.instruction == ep["instruction"]
        # every camera window holds exactly this episode's frames (AV1 in shared files)
        assert {c.name: c.num_frames for c in rec.probed} == {
            "observation.images.top": len(ep["actions"]),
            "observation.images.side": len(ep["actions"]),
        }
        assert all(c.codec == "av1" for c in rec.probed)
        # the subtask_index annotation column becomes ground-truth events with names
        assert rec.gt_events == [(e["start_frame"], e["name"]) for e in ep["events"]]
        assert rec.gt_events_source == "column subtask_index"
        assert rec.gripper_TG.shape == (len(ep["actions"]), 1)  # the action named "gripper"


def test_lerobot_v3_video_window_frames_match_source(lerobot_v3):
    """The decoded window of episode 2 matches that episode's frames, not its neighbours'."""
    from wallwm.pipeline.video import read_frames

    root, eps = lerobot_v3(3, cameras=("top",))
    source = open_source(root)
    refs, _ = source.list_episodes()
    rec = load_episode(source, refs[2], 0)
    frames = np.stack(list(read_frames(rec.probed[0])))
    want = eps[2]["frames"]["top"].astype(np.float32)
    err_own = np.abs(frames.astype(np.float32) - want).mean()
    err_prev = np.abs(
        frames[: len(eps[1]["frames"]["top"])].astype(np.float32)
        - eps[1]["frames"]["top"][: len(frames)].astype(np.float32)
    ).mean()
    assert err_own < 12 and err_own < err_prev


def test_lerobot_v21(lerobot_v21):
    root, eps = lerobot_v21(3)
    source = open_source(root, "lerobot")
    refs, errors = source.list_episodes()
    assert errors == [] and len(refs) == 3
    rec = load_episode(source, refs[1], 0)
    np.testing.assert_allclose(rec.actions_TA, eps[1]["actions"], rtol=1e-6)
    assert rec.probed[0].num_frames == len(eps[1]["actions"])
    assert rec.instruction == eps[1]["instruction"] and rec.gt_events is None


def test_hdf5_aloha_and_robomimic(hdf5_source):
    root, eps = hdf5_source()
    source = open_source(root)
    refs, errors = source.list_episodes()
    assert errors == []
    assert sorted(r.episode_key for r in refs) == [
        "episode_0.hdf5",
        "episode_1.hdf5",
        "robomimic.hdf5:demo_0",
        "robomimic.hdf5:demo_1",
    ]
    by_key = {r.episode_key: r for r in refs}
    raw = load_episode(source, by_key["episode_0.hdf5"], 0)
    jpeg = load_episode(source, by_key["episode_1.hdf5"], 0)
    demo = load_episode(source, by_key["robomimic.hdf5:demo_1"], 0)
    assert raw.probed[0].codec == "raw-rgb24" and jpeg.probed[0].codec == "jpeg"
    assert raw.fps == 20.0 and demo.fps == 20.0
    np.testing.assert_allclose(demo.actions_TA, eps[3]["actions"])
    assert demo.states_TS.shape[1] == 4 and demo.gripper_TG.shape[1] == 1
    assert demo.instruction == eps[3]["instruction"]
    assert demo.probed[0].name == "agentview_image" and demo.probed[0].num_frames == len(
        eps[3]["actions"]
    )
