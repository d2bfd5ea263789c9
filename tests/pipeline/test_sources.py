"""Each source reader reads exactly what its format stores (no Ray here)."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wallwm.pipeline.ingest import load_episode
from wallwm.pipeline.sources.base import (
    BadSignalError,
    EpisodeError,
    UnknownFormatError,
    gripper_dims,
    start_open_votes,
)
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


def test_a_folder_of_datasets_names_them(lerobot_v21, lerobot_v3, tmp_path):
    """A Hub cache (``cache/lerobot/<name>``) given as SOURCE: "unknown source format" did not
    say that it holds datasets; it names each one to ingest."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(lerobot_v21(1)[0], cache / "lerobot" / "pusht")
    shutil.copytree(lerobot_v3(2)[0], cache / "lerobot" / "aloha_sim")
    with pytest.raises(UnknownFormatError, match=r"a folder of 2: lerobot/aloha_sim \(lerobot\), "
                       r"lerobot/pusht \(lerobot\); ingest each"):  # fmt: skip
        detect_format(cache)


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


@pytest.mark.parametrize(
    "key,value,says",
    [
        ("instruction", 42, "'instruction' must be a string, got 42"),
        ("robot", ["a"], "'robot' must be a string"),
        ("action_names", "dx dy", "'action_names' must be a list of strings"),
        ("state_names", [1, 2], "'state_names' must be a list of strings"),
        ("events", [{"start_frame": 0, "name": 7}], "'events' names must be strings"),
    ],
)
def test_folder_meta_fields_of_the_wrong_type_name_meta_json(folder_source, key, value, says):
    """A field of the wrong JSON type is one line naming meta.json (an instruction of 42 raised
    an AttributeError out of ``wallwm run``'s model choice)."""
    root = folder_source(1, cameras=("top",))
    source = open_source(root)
    ref = source.list_episodes()[0][0]
    meta_path = root / ref.episode_key / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta[key] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BadSignalError, match=says) as err:
        source.read(ref)
    assert err.value.file == str(meta_path)


@pytest.mark.parametrize(
    "fields,says",
    [
        ({"success_step": "5"}, "'success_step' must be a frame of the episode"),
        ({"success_step": True}, "'success_step' must be a frame of the episode"),
        ({"success_step": -1}, "'success_step' must be a frame of the episode"),
        ({"success_step": 10_000}, "'success_step' must be a frame of the episode"),
        ({"success": False, "success_step": 5}, "'success_step' 5 contradicts 'success': false"),
    ],
)
def test_a_folder_success_step_is_the_first_successful_frame(folder_source, fields, says):
    root = folder_source(1, cameras=("top",))
    source = open_source(root)
    ref = source.list_episodes()[0][0]
    meta_path = root / ref.episode_key / "meta.json"
    meta = {k: v for k, v in json.loads(meta_path.read_text()).items() if k != "success"}
    meta_path.write_text(json.dumps({**meta, "success_step": 5}))
    rec = source.read(ref)
    assert (rec.success, rec.success_frame) == (True, 5)  # a success step says it succeeded
    meta_path.write_text(json.dumps({**meta, "success_step": None, "success": False}))
    assert (source.read(ref).success, source.read(ref).success_frame) == (False, None)
    meta_path.write_text(json.dumps({**meta, **fields}))
    with pytest.raises(BadSignalError, match=re.escape(says)) as err:
        source.read(ref)
    assert err.value.file == str(meta_path)


def test_lerobot_next_success_gives_the_first_successful_frame(lerobot_v21):
    """``next.success`` per frame: the outcome is its last frame, the success frame its first
    true one (a task done, then undone, still succeeded there)."""
    root, _eps = lerobot_v21(3)
    data = root / "data" / "chunk-000"
    for i, flags in enumerate(
        [lambda t: t >= 7, lambda t: False, lambda t: 4 <= t < 9]  # the last: undone again
    ):
        path = data / f"episode_{i:06d}.parquet"
        table = pq.read_table(path)
        column = pa.array([bool(flags(t)) for t in range(table.num_rows)])
        pq.write_table(table.append_column("next.success", column), path)
    source = open_source(root, "lerobot")
    refs, errors = source.list_episodes()
    assert errors == []
    outcomes = [(r.success, r.success_frame) for r in map(source.read, refs)]
    assert outcomes == [(True, 7), (False, None), (False, 4)]


def test_a_folder_state_column_null_on_every_row_is_no_states(folder_source):
    root = folder_source(1, cameras=("top",))
    source = open_source(root)
    ref = source.list_episodes()[0][0]
    steps = root / ref.episode_key / "steps.parquet"
    rows = pq.read_table(steps).to_pylist()
    pq.write_table(pa.Table.from_pylist([{**r, "state": None} for r in rows]), steps)
    assert source.read(ref).states_TS is None
    rows[2]["state"] = None  # null on some rows only: a gap in the data, refused by frame
    pq.write_table(pa.Table.from_pylist(rows), steps)
    with pytest.raises(BadSignalError, match="state is null at frame 2"):
        source.read(ref)


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


@pytest.mark.parametrize(
    "change,says",
    [
        ({"fps": "thirty"}, "'fps' is missing or not a number (got 'thirty')"),
        ({"fps": None}, "'fps' is missing or not a number"),
        ({"fps": -30}, "'fps' must be a positive number, got -30"),
        ({"features": [1]}, "must hold an object with a 'features' object"),
    ],
)
def test_lerobot_info_json_of_the_wrong_shape_is_one_line(lerobot_v3, change, says):
    """Each raised a ValueError / KeyError / AttributeError out of ``wallwm ingest``."""
    root, _ = lerobot_v3(1, cameras=("top",))
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info.update(change)
    info_path.write_text(json.dumps(info))
    with pytest.raises(EpisodeError, match=re.escape(says)) as err:
        open_source(root)
    assert err.value.file == str(info_path)


@pytest.mark.parametrize(
    "file,text,says",
    [
        ("episodes.jsonl", '{"episode_index": 0\n', "episodes.jsonl: line 1: "),
        ("episodes.jsonl", "[1, 2]\n", "line 1 is not a JSON object"),
        ("tasks.jsonl", '{"task": "pick"}\n', "every line needs an integer 'task_index'"),
        ("tasks.jsonl", "not json\n", "tasks.jsonl: line 1: "),
    ],
)
def test_lerobot_metadata_lines_that_do_not_parse_are_one_line(lerobot_v21, file, text, says):
    """A broken line of episodes.jsonl or tasks.jsonl raised a JSONDecodeError / KeyError out of
    ``wallwm ingest``; now one line naming the file (and the line)."""
    root, _ = lerobot_v21(2)
    (root / "meta" / file).write_text(text)
    with pytest.raises(EpisodeError) as err:
        open_source(root)
    assert says in f"{err.value.file}: {err.value.problem}"


def test_lerobot_v3_unreadable_episodes_parquet_is_one_line(lerobot_v3):
    root, _ = lerobot_v3(1, cameras=("top",))
    broken = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))[0]
    broken.write_bytes(b"not parquet")
    with pytest.raises(EpisodeError, match="unreadable parquet") as err:
        open_source(root)
    assert err.value.file == str(broken)


def test_lerobot_v21(lerobot_v21):
    root, eps = lerobot_v21(3)
    source = open_source(root, "lerobot")
    refs, errors = source.list_episodes()
    assert errors == [] and len(refs) == 3
    rec = load_episode(source, refs[1], 0)
    np.testing.assert_allclose(rec.actions_TA, eps[1]["actions"], rtol=1e-6)
    assert rec.probed[0].num_frames == len(eps[1]["actions"])
    assert rec.instruction == eps[1]["instruction"] and rec.gt_events is None


@pytest.mark.parametrize(
    "field,value,says",
    [
        ("action", np.array(["a", "b"]).astype("S"), "action: expected numbers"),
        ("action", 3.0, "action: expected numbers, one row per frame"),
        ("action", np.array([[0.0, 1e300]] * 4), "float32 cannot represent (1e+300"),
        ("fps", "fast", "fps attribute 'fast' is not a number"),
    ],
)
def test_hdf5_datasets_and_attributes_of_the_wrong_kind_are_named(hdf5_source, field, value, says):
    """Each was an "unexpected error" (or an infinity reported as NaN/inf) before."""
    import h5py

    root, _ = hdf5_source()
    path = root / "episode_0.hdf5"
    with h5py.File(path, "a") as f:
        if field == "fps":
            f.attrs["fps"] = value
        else:
            del f[field]
            f[field] = value
    source = open_source(root)
    ref = next(r for r in source.list_episodes()[0] if str(path) in str(r.locator["file"]))
    with pytest.raises(EpisodeError, match=re.escape(says)) as err:
        source.read(ref)
    assert err.value.file == str(path)


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


def test_gripper_dims_one_rule_for_every_stage():
    """``*grip*`` in any case: a bare ``grip`` counts as much as ``left_gripper``."""
    assert gripper_dims(["x", "y", "z", "grip"]) == [3]
    assert gripper_dims(["left_gripper", "l_x", "RIGHT_GRIPPER", "r_x"]) == [0, 2]
    assert gripper_dims(["x", "y", "z"]) == []
    assert gripper_dims(None) == []


def test_start_open_votes():
    t = np.linspace(0.0, 1.0, 50)
    opens_high = np.where(t < 0.5, 1.0, 0.2)  # starts open (high), closes on a grasp
    command = np.where(t < 0.5, -1.0, 1.0)  # LIBERO-style: -1 open, +1 close
    flat = np.full_like(t, 0.7)  # never moves: no say
    votes = start_open_votes(np.stack([opens_high, command, flat], axis=1))
    assert votes.tolist() == [1, -1, 0]
    assert start_open_votes(np.full((5, 1), np.nan)).tolist() == [0]
    assert start_open_votes(np.zeros((0, 2))).tolist() == [0, 0]
    # one glitched first frame does not flip the vote (median of the first frames)
    glitch = command.copy()
    glitch[0] = 1.0
    assert start_open_votes(glitch).tolist() == [-1]


def test_lerobot_gripper_command_oriented_open_high(lerobot_v21):
    """The synthetic robot's "gripper" action closes at +1; episodes start open (-1)."""
    root, eps = lerobot_v21(3)
    source = open_source(root)
    refs, _ = source.list_episodes()
    assert source.gripper_signs == [-1]
    assert "'gripper' low = open" in source.gripper_decision
    rec = source.read(refs[0])
    np.testing.assert_allclose(rec.gripper_TG[:, 0], -eps[0]["actions"][:, 3], rtol=1e-6)
    # stated conventions override the vote, and a read before any listing decides too
    high = open_source(root, gripper_open="high")
    np.testing.assert_allclose(
        high.read(refs[0]).gripper_TG[:, 0], eps[0]["actions"][:, 3], rtol=1e-6
    )
    assert high.gripper_signs == [1] and high.gripper_decision == "stated: high = open"
    fresh = open_source(root)
    assert fresh.read(refs[0]).gripper_TG[0, 0] == pytest.approx(-eps[0]["actions"][0, 3])


def test_hdf5_gripper_openings(tmp_path):
    """robomimic: the gap of each arm's mirrored finger joints; ALOHA: qpos dims 6 and 13."""
    import h5py

    t = 12
    fingers = np.linspace(0.04, 0.0, t)[:, None] * np.array([[1.0, -1.0]])
    with h5py.File(tmp_path / "two_arm.hdf5", "w") as f:
        g = f.create_group("data/demo_0")
        g["actions"] = np.zeros((t, 14), np.float32)
        g["obs/robot0_eef_pos"] = np.zeros((t, 3), np.float32)
        g["obs/robot0_gripper_qpos"] = fingers
        g["obs/robot1_gripper_qpos"] = fingers[::-1]
        g["obs/agentview_image"] = np.zeros((t, 8, 8, 3), np.uint8)
    qpos = np.zeros((t, 14), np.float32)
    qpos[:, 6], qpos[:, 13] = np.linspace(1, 0, t), np.linspace(0, 1, t)
    with h5py.File(tmp_path / "aloha.hdf5", "w") as f:
        f["action"] = np.zeros((t, 14), np.float32)
        f["observations/qpos"] = qpos
        f["observations/images/cam_high"] = np.zeros((t, 8, 8, 3), np.uint8)
    source = open_source(tmp_path)
    refs = {r.episode_key: r for r in source.list_episodes()[0]}
    demo = source.read(refs["two_arm.hdf5:demo_0"])
    np.testing.assert_allclose(demo.gripper_TG[:, 0], 2 * fingers[:, 0], rtol=1e-6)
    np.testing.assert_allclose(demo.gripper_TG[:, 1], 2 * fingers[::-1, 0], rtol=1e-6)
    aloha = source.read(refs["aloha.hdf5"])
    np.testing.assert_allclose(aloha.gripper_TG, qpos[:, [6, 13]])
    low = open_source(tmp_path, gripper_open="low").read(refs["aloha.hdf5"])
    np.testing.assert_allclose(low.gripper_TG, -qpos[:, [6, 13]])


def _reencode_camera(episode_dir, ext: str, codec: str, pix_fmt: str) -> None:
    """Replace the episode's top.mp4 with the same frames in another container and codec."""
    from fractions import Fraction

    import av

    from wallwm.pipeline.video import iter_video_frames

    frames = [f for _t, f in iter_video_frames(str(episode_dir / "top.mp4"))]
    (episode_dir / "top.mp4").unlink()
    with av.open(str(episode_dir / f"top{ext}"), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(20))
        stream.width, stream.height, stream.pix_fmt = 64, 64, pix_fmt
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")))
        out.mux(stream.encode())


def test_a_folder_reads_cameras_in_other_containers_and_codecs(folder_source, tmp_path):
    """A team's recorder writes .webm (VP9), .avi (MJPEG) or .mkv (FFV1): the folder source
    listed only .mp4 files, so such an episode had no cameras. One camera in two containers is
    refused for that episode; the export re-encodes what an MP4 file cannot hold as it is."""
    from wallwm.pipeline.export.lerobot import copyable

    src = folder_source(4, cameras=("top",))
    eps = sorted(p for p in src.iterdir() if p.is_dir())
    for ep, (ext, codec, pix_fmt) in zip(
        eps,
        [
            (".webm", "libvpx-vp9", "yuv420p"),
            (".avi", "mjpeg", "yuvj420p"),
            (".mkv", "ffv1", "yuv420p"),
        ],
        strict=False,
    ):
        _reencode_camera(ep, ext, codec, pix_fmt)
    source = open_source(src)
    refs, errors = source.list_episodes()
    assert errors == [] and len(refs) == 4
    codecs = {}
    for ref in refs:
        rec = load_episode(source, ref, frame_tolerance=0)
        (cam,) = rec.probed
        assert cam.name == "top" and cam.num_frames == len(rec.actions_TA)
        codecs[cam.uri.rsplit(".", 1)[1]] = cam.codec
        assert copyable(cam) == (cam.codec == "h264")
    assert codecs == {"webm": "vp9", "avi": "mjpeg", "mkv": "ffv1", "mp4": "h264"}

    (eps[3] / "top.mkv").write_bytes((eps[0] / "top.webm").read_bytes())  # top twice
    ref = next(r for r in source.list_episodes()[0] if r.episode_key == eps[3].name)
    with pytest.raises(EpisodeError, match=r"camera 'top' has 2 videos \(top.mkv, top.mp4\)"):
        source.read(ref)


def test_hdf5_frames_in_other_layouts_are_read_as_rgb(hdf5_source):
    """Channels-first frames (a PyTorch pipeline's (3, H, W)), floats in [0, 1], grey and RGBA:
    read as the same (H, W, 3) uint8 pictures. (3, H, W) was probed as a 3-row image W wide,
    grey frames were refused, floats cast as they were (0.5 -> 0)."""
    import h5py

    from wallwm.pipeline.video import read_frames, rgb_frame

    root, eps = hdf5_source()
    frames = eps[0]["frames"]["top"]
    path = root / "episode_0.hdf5"
    source = open_source(root)
    ref = next(r for r in source.list_episodes()[0] if r.files[0] == str(path))
    for stored, want in (
        (np.moveaxis(frames, -1, 1), frames),
        (frames.astype(np.float32) / 255.0, frames),
        (frames[..., 1], np.repeat(frames[..., 1:2], 3, axis=-1)),
        (np.concatenate([frames, np.full_like(frames[..., :1], 255)], axis=-1), frames),
    ):
        with h5py.File(path, "a") as f:
            del f["observations/images/cam_high"]
            f["observations/images/cam_high"] = stored
        rec = load_episode(source, ref, frame_tolerance=0)
        (cam,) = rec.probed
        assert (cam.height, cam.width, cam.codec) == (*frames.shape[1:3], "raw-rgb24")
        got = np.stack(list(read_frames(cam)))
        np.testing.assert_array_equal(got, want)
    # the value range is the stream's, not each frame's: a dark first frame of a 0-255 float
    # stream (max 1.0) read as [0, 1] and came out white; a dark 16-bit frame read as 8-bit
    dark = frames.copy()
    dark[0] = np.minimum(dark[0], 1)
    for stored, want in ((dark.astype(np.float32), dark),
                         (dark.astype(np.uint16) * 257, dark)):  # fmt: skip
        with h5py.File(path, "a") as f:
            del f["observations/images/cam_high"]
            f["observations/images/cam_high"] = stored
        (cam,) = load_episode(source, ref, frame_tolerance=0).probed
        np.testing.assert_array_equal(np.stack(list(read_frames(cam))), want)
    wide = frames[0].astype(np.int64)  # 8-bit values stored in a wider type stay as they are
    np.testing.assert_array_equal(rgb_frame(wide, "f.hdf5#/x"), frames[0])
    deep = frames[0].astype(np.uint16) * 257  # a 16-bit image: its top 8 bits
    np.testing.assert_array_equal(rgb_frame(deep, "f.hdf5#/x"), frames[0])
    with pytest.raises(EpisodeError, match=r"frames must be images .* got \(2, 5, 7, 9\)"):
        rgb_frame(np.zeros((2, 5, 7, 9), np.uint8), "f.hdf5::/obs/x")


def _as_image_features(root, eps, camera="observation.images.top"):
    """Rewrite a LeRobot fixture's camera as an ``image`` feature: PNG bytes per row of the data
    parquet, as a Hugging Face Image column ({bytes, path}); no videos."""
    import shutil

    import cv2

    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"][camera] = {"dtype": "image", "shape": [64, 64, 3], "names": None}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    shutil.rmtree(root / "videos")
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for data in sorted((root / "data").rglob("*.parquet")):
        table = pq.read_table(data)
        cells = [
            {"bytes": cv2.imencode(".png", eps[e]["frames"]["top"][f][..., ::-1])[1].tobytes(),
             "path": None}
            for e, f in zip(
                table.column("episode_index").to_pylist(),
                table.column("frame_index").to_pylist(),
                strict=True,
            )
        ]  # fmt: skip
        pq.write_table(table.append_column(camera, pa.array(cells, image)), data)


@pytest.mark.parametrize("version", ["v21", "v3"])
def test_lerobot_image_features_are_cameras(lerobot_v21, lerobot_v3, tmp_path, version):
    """LeRobot datasets that keep frames as ``image`` features in the data parquet (converted
    LIBERO and PushT datasets do) had no cameras: episodes were ingested without frames. The
    images are read from the parquet, frame-exact, in episode order; a missing column is named."""
    from wallwm.pipeline.image_frames import split_parquet_uri
    from wallwm.pipeline.video import read_frames

    root, eps = lerobot_v21(3) if version == "v21" else lerobot_v3(4, cameras=("top",))
    _as_image_features(root, eps)
    source = open_source(root)
    refs, errors = source.list_episodes()
    assert errors == [] and len(refs) == len(eps)
    for ref in refs:
        rec = load_episode(source, ref, frame_tolerance=0)
        (cam,) = rec.probed
        index = int(ref.locator["episode_index"])
        assert split_parquet_uri(cam.uri)[1:] == ("observation.images.top", index)
        assert (cam.codec, cam.num_frames, cam.width) == ("png", len(rec.actions_TA), 64)
        np.testing.assert_array_equal(np.stack(list(read_frames(cam))), eps[index]["frames"]["top"])
    data = split_parquet_uri(cam.uri)[0]
    pq.write_table(pq.read_table(data).drop_columns(["observation.images.top"]), data)
    with pytest.raises(EpisodeError, match=r"image column 'observation\.images\.top' is missing"):
        load_episode(source, refs[-1], frame_tolerance=0)


def test_an_image_cell_with_only_a_path_reads_its_file(lerobot_v21):
    """Images not embedded in the parquet (a recording in progress): the cell's path, relative
    to the dataset root, is read; a path that leads nowhere is named."""
    from wallwm.pipeline.image_frames import iter_parquet_frames

    root, eps = lerobot_v21(1)
    _as_image_features(root, eps)
    data = next((root / "data").rglob("*.parquet"))
    table = pq.read_table(data)
    cells = table.column("observation.images.top").to_pylist()
    for t, cell in enumerate(cells):
        rel = f"images/top/frame-{t:06d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(cell["bytes"])
        cells[t] = {"bytes": None, "path": rel}
    column = table.schema.get_field_index("observation.images.top")
    image = table.schema.field(column).type
    pq.write_table(table.set_column(column, "observation.images.top", pa.array(cells, image)), data)
    got = np.stack(list(iter_parquet_frames(str(data), "observation.images.top", 0)))
    np.testing.assert_array_equal(got, eps[0]["frames"]["top"])
    (root / "images" / "top" / "frame-000003.png").unlink()
    with pytest.raises(EpisodeError, match=r"no readable file .*frame-000003\.png"):
        list(iter_parquet_frames(str(data), "observation.images.top", 0))


def test_libero_hdf5_has_its_cameras_instruction_and_gripper(tmp_path, synth_episodes):
    """LIBERO's robomimic-style files name their cameras ``agentview_rgb`` / ``eye_in_hand_rgb``
    (only ``*_image`` was a camera: episodes were ingested without frames), keep the
    instruction in ``data``'s ``problem_info`` JSON and the fingers in ``gripper_states``."""
    import h5py

    eps = synth_episodes(2, seed=4, size=32)
    path = tmp_path / "libero" / "put_the_bowl_on_the_plate_demo.hdf5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps(
            {"problem_name": "libero_tabletop", "language_instruction": "put the bowl on the plate"}
        )
        for i, ep in enumerate(eps):
            g = data.create_group(f"demo_{i}")
            g["actions"] = ep["actions"]
            g["obs/agentview_rgb"] = ep["frames"]["top"]
            g["obs/eye_in_hand_rgb"] = ep["frames"]["top"][:, ::-1]
            g["obs/agentview_depth"] = np.zeros((len(ep["actions"]), 32, 32, 1), np.float32)
            g["obs/ee_pos"] = ep["states"][:, :3]
            half = ep["states"][:, 3:] / 2
            g["obs/gripper_states"] = np.concatenate([half, -half], axis=1)
    source = open_source(tmp_path / "libero")
    refs, errors = source.list_episodes()
    assert errors == [] and len(refs) == 2
    for ref, ep in zip(refs, eps, strict=True):
        rec = load_episode(source, ref, frame_tolerance=0)
        assert rec.instruction == "put the bowl on the plate" and rec.fps == 20.0
        assert [c.name for c in rec.probed] == ["agentview_rgb", "eye_in_hand_rgb"]  # no depth
        assert rec.states_TS.shape[1] == 5  # ee_pos (3) + the two finger joints
        np.testing.assert_allclose(rec.gripper_TG[:, 0], ep["states"][:, 3], rtol=1e-5)
