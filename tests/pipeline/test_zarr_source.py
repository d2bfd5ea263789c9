"""Zarr replay buffers (Diffusion Policy / UMI layout): every episode's rows in one store."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.pipeline.ingest import IngestConfig, load_episode, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sources.base import EpisodeError
from wallwm.pipeline.sources.registry import detect_format, open_source
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore
from wallwm.pipeline.video import read_frames


@pytest.fixture
def replay_buffer(tmp_path, synth_episodes):
    """A UMI-like buffer: 4-D actions, eef position + gripper width as state, one RGB camera
    stored channels-last uint8 in JPEG-sized chunks, a per-episode array (not per frame)."""
    import zarr

    def make(name="buffer.zarr", zip_it=False, fps=None, episodes=3):
        eps = synth_episodes(episodes, seed=3, size=48)
        path = tmp_path / name
        store = zarr.ZipStore(str(path), mode="w") if zip_it else str(path)
        root = zarr.open_group(store, mode="w")
        data = root.create_group("data")
        data["action"] = np.concatenate([e["actions"] for e in eps])
        data["robot0_eef_pos"] = np.concatenate([e["states"][:, :3] for e in eps])
        data["robot0_gripper_width"] = np.concatenate([e["states"][:, 3:] for e in eps])
        data.create_dataset(
            "camera0_rgb",
            data=np.concatenate([e["frames"]["top"] for e in eps]),
            chunks=(8, 48, 48, 3),
        )
        data["demo_start_pose"] = np.zeros((episodes, 6))  # one row per episode: not a signal
        root.create_group("meta")["episode_ends"] = np.cumsum([len(e["actions"]) for e in eps])
        if fps is not None:
            root.attrs["fps"] = fps
        if zip_it:
            store.close()
        return path, eps

    return make


def test_a_replay_buffer_reads_episode_by_episode(replay_buffer):
    path, eps = replay_buffer(fps=10)
    assert detect_format(path) == "zarr"
    source = open_source(path, instruction="fold the cloth")
    refs, errors = source.list_episodes()
    assert errors == [] and [r.episode_key for r in refs] == [f"episode_{i:06d}" for i in range(3)]
    for ref, ep in zip(refs, eps, strict=True):
        rec = load_episode(source, ref, frame_tolerance=0)
        np.testing.assert_allclose(rec.actions_TA, ep["actions"], rtol=1e-6)
        # the state: the per-frame arrays by name (eef xyz, then the width); not the pose table
        np.testing.assert_allclose(rec.states_TS, ep["states"], rtol=1e-6)
        assert rec.state_names == ["robot0_eef_pos_0", "robot0_eef_pos_1", "robot0_eef_pos_2",
                                   "robot0_gripper_width"]  # fmt: skip
        np.testing.assert_allclose(rec.gripper_TG[:, 0], ep["states"][:, 3], rtol=1e-6)
        assert rec.fps == 10 and rec.instruction == "fold the cloth"
        (cam,) = rec.probed
        assert (cam.name, cam.num_frames, cam.width) == ("camera0_rgb", len(ep["actions"]), 48)
        np.testing.assert_array_equal(np.stack(list(read_frames(cam))), ep["frames"]["top"])


def test_a_zipped_buffer_runs_through_the_pipeline(replay_buffer, tmp_path):
    path, eps = replay_buffer("buffer.zarr.zip", zip_it=True)
    ds = tmp_path / "ds"
    cfg = IngestConfig(
        source=str(path), dataset=str(ds), executor="local", fps=10.0, instruction="push the T"
    )
    report = run_ingest(cfg.model_copy(update={"segment": SegmentConfig()}))
    assert (report.written, report.failed) == (3, 0) and report.events >= 3
    rows = LanceStore(str(ds)).read(schemas.EPISODES).to_pylist()
    assert sorted(r["num_frames"] for r in rows) == sorted(len(e["actions"]) for e in eps)
    assert {c["codec"] for r in rows for c in r["cameras"]} == {"blosc"}


def test_wallwm_run_takes_the_buffers_fps(replay_buffer, tmp_path):
    """`wallwm run` had no --fps: a source that stores none (Zarr, HDF5) could not be run."""
    path, _ = replay_buffer()
    args = ["run", str(path), "-d", str(tmp_path / "ds"), "--fps", "10", "--instruction", "x"]
    out = CliRunner().invoke(app, [*args, "--no-cluster", "--local"])
    assert out.exit_code == 0, out.output
    assert LanceStore(str(tmp_path / "ds")).count(schemas.EVENTS) >= 3


def test_a_buffer_without_fps_or_with_broken_episode_ends_says_so(replay_buffer, tmp_path):
    import zarr

    path, _ = replay_buffer()
    out = CliRunner().invoke(
        app, ["ingest", str(path), "-d", str(tmp_path / "ds"), "--instruction", "x"]
    )
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "stores no frame rate: pass --fps" in " ".join(out.output.split())
    zarr.open_group(str(path), mode="a")["meta/episode_ends"][1] = 5  # falls back
    with pytest.raises(EpisodeError, match="episode 1 does not"):
        open_source(path).list_episodes()


def test_float_frames_are_scaled_by_their_episodes_range(replay_buffer):
    """Frames stored as 0-255 floats, the first one dark (max 1.0): the range is the episode
    stream's, so the dark frame stays dark (judged alone it read as [0, 1], white)."""
    import zarr

    path, _ = replay_buffer(fps=10)
    root = zarr.open_group(str(path), mode="a")
    pixels = np.asarray(root["data/camera0_rgb"][:]).astype(np.float32)
    pixels[0] = np.minimum(pixels[0], 1.0)
    del root["data/camera0_rgb"]
    root["data"].create_dataset("camera0_rgb", data=pixels, chunks=(8, 48, 48, 3))
    source = open_source(path, instruction="push the T")
    rec = load_episode(source, source.list_episodes()[0][0], frame_tolerance=0)
    got = np.stack(list(read_frames(rec.probed[0])))
    np.testing.assert_array_equal(got, pixels[: len(got)].astype(np.uint8))
