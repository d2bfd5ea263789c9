"""Idle starts and ends: found on two embodiments, never on episodes that start moving at once,
stored at ingest, applied by materialize and export (``--no-trim`` keeps everything)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wallwm.pipeline.export.lerobot import ExportConfig, export_lerobot
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.segmentation.idle import clip_events, final_hold_start, idle_trim
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic, simulate_episode
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore
from wallwm.pipeline.video import iter_video_frames, write_video

FPS = 20.0


def hold(x_TD: np.ndarray, before: int, after: int, rng, noise: float) -> np.ndarray:
    """The first row held ``before`` frames, the last ``after``; sensor noise on every frame."""
    out = np.concatenate([np.repeat(x_TD[:1], before, 0), x_TD, np.repeat(x_TD[-1:], after, 0)])
    return out + rng.normal(0, 1, out.shape) * noise * np.ptp(x_TD, axis=0)


def gripper_robot(rng) -> tuple[np.ndarray, np.ndarray]:
    """The built-in simulator's 4-D velocity + gripper robot (xyz + gripper states)."""
    cfg = SynthConfig(episodes=1, size=32, seed=3)
    ep = simulate_episode(cfg.tasks[0], rng, cfg)
    return np.asarray(ep["actions"]), np.asarray(ep["states"])


def bimanual_waypoints(rng) -> tuple[np.ndarray, np.ndarray]:
    """A 16-D end-effector-target, 14-D joint bimanual arm driven through waypoints."""
    knots = np.concatenate([[0], np.cumsum(rng.integers(8, 20, size=6))])  # moving from frame 0
    targets = rng.normal(size=(len(knots), 16))
    t = np.arange(knots[-1] + 1)
    actions = np.stack([np.interp(t, knots, targets[:, j]) for j in range(16)], axis=1)
    mix = rng.normal(size=(16, 14)) / 4
    states = np.tanh(actions @ mix)  # joints follow the targets (smoothly, nonlinearly)
    return actions, states


@pytest.mark.parametrize("robot", [gripper_robot, bimanual_waypoints], ids=["gripper", "bimanual"])
def test_idle_margins_are_found_and_real_starts_are_kept(robot):
    rng = np.random.default_rng(0)
    actions, states = robot(rng)
    t_len = len(actions)
    assert idle_trim(actions, states, FPS) == (0, t_len)  # the expert moves from frame 0
    before, after, pad = int(1.5 * FPS), int(2.0 * FPS), int(0.2 * FPS)
    start, end = idle_trim(
        hold(actions, before, after, rng, 0.0), hold(states, before, after, rng, 0.002), FPS
    )
    assert abs(start - (before - pad)) <= 2 and abs(end - (before + t_len + pad)) <= 2
    short = int(0.3 * FPS)  # shorter than min_idle_s: kept
    assert idle_trim(
        hold(actions, short, short, rng, 0.0), hold(states, short, short, rng, 0.002), FPS
    ) == (0, t_len + 2 * short)
    still = np.repeat(actions[:1], 50, 0)
    assert idle_trim(still, None, FPS) == (0, 50)  # nothing moves: not an idle margin


def test_clip_events_drops_and_cuts_at_the_edges():
    events = [{"start_frame": s, "end_frame": e, "id": i} for i, (s, e) in enumerate(
        [(0, 10), (10, 25), (25, 40), (40, 50)])]  # fmt: skip
    assert [(e["id"], e["start_frame"], e["end_frame"]) for e in clip_events(events, 12, 40)] == [
        (1, 12, 25),
        (2, 25, 40),
    ]
    assert clip_events(events, 0, 50) == events


def pad_source_episode(folder: Path, before: int, after: int) -> int:
    """Add held frames (signals and video) before and after one folder-format episode."""
    table = pq.read_table(folder / "steps.parquet").to_pylist()
    rows = [dict(table[0])] * before + table + [dict(table[-1])] * after
    for i, r in enumerate(rows):
        rows[i] = {**r, "frame_index": i, "timestamp": i / FPS}
    pq.write_table(pa.Table.from_pylist(rows), folder / "steps.parquet")
    frames = [np.asarray(f) for _t, f in iter_video_frames(str(folder / "top.mp4"))]
    frames = [frames[0]] * before + frames + [frames[-1]] * after
    write_video(str(folder / "top.mp4"), np.stack(frames), FPS)
    meta = json.loads((folder / "meta.json").read_text())
    for e in meta["events"]:
        e["start_frame"] += before
    (folder / "meta.json").write_text(json.dumps(meta))
    return len(rows)


@pytest.mark.usefixtures("ray_local")
def test_trims_are_stored_at_ingest_and_applied_by_materialize_and_export(tmp_path):
    from wallwm.trainer.view import materialize

    src, ds = tmp_path / "src", tmp_path / "ds"
    record_synthetic(src, SynthConfig(episodes=3, size=32, seed=4, fps=FPS, cameras=("top",)))
    idle = sorted(src.iterdir())[0]
    before, after = int(1.0 * FPS), int(1.5 * FPS)
    t_len = pad_source_episode(idle, before, after)
    run_ingest(IngestConfig(source=str(src), dataset=str(ds), segment=SegmentConfig()))
    store = LanceStore(str(ds))
    rows = {
        r["episode_key"]: r
        for r in store.read(
            schemas.EPISODES,
            columns=[
                "episode_id",
                "episode_key",
                "num_frames",
                "trim_start_frame",
                "trim_end_frame",
            ],
        ).to_pylist()
    }
    padded, others = rows[idle.name], [r for k, r in rows.items() if k != idle.name]
    pad = int(0.2 * FPS)
    assert padded["num_frames"] == t_len
    assert abs(padded["trim_start_frame"] - (before - pad)) <= 2
    assert abs(padded["trim_end_frame"] - (t_len - after + pad)) <= 2
    assert all((r["trim_start_frame"], r["trim_end_frame"]) == (0, r["num_frames"]) for r in others)

    def view_events(trim: bool) -> list[dict]:
        import lance

        view = Path(materialize(str(ds), size=32, trim=trim).path)
        events = lance.dataset(str(view / "events.lance")).to_table().to_pylist()
        return [e for e in events if e["episode_id"] == padded["episode_id"]]

    trimmed, whole = view_events(True), view_events(False)
    assert min(e["start_frame"] for e in trimmed) == padded["trim_start_frame"]
    assert max(e["end_frame"] for e in trimmed) == padded["trim_end_frame"]
    assert min(e["start_frame"] for e in whole) == 0 and max(e["end_frame"] for e in whole) == t_len

    out = export_lerobot(ExportConfig(dataset=str(ds), out=str(tmp_path / "lr")))
    meta = pq.read_table(tmp_path / "lr" / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    mine = [m for m in meta.to_pylist() if m["wallwm/episode_id"] == padded["episode_id"]]
    assert sum(m["length"] for m in mine) == padded["trim_end_frame"] - padded["trim_start_frame"]
    assert mine[0]["wallwm/from_frame"] == padded["trim_start_frame"] and out.episodes_out >= 3
    untrimmed = export_lerobot(ExportConfig(dataset=str(ds), out=str(tmp_path / "lr2"), trim=False))
    assert untrimmed.frames == sum(r["num_frames"] for r in rows.values())


def test_final_hold_starts_where_every_moving_command_freezes_for_good():
    t = np.arange(60, dtype=np.float64)
    arm = np.stack([np.sin(t / 9), np.cos(t / 7)], axis=1)
    arm[44:] = 0.0  # frozen for the last 16 frames (0.8 s at 20 Hz)
    gripper = np.where(t < 50, -1.0, 1.0)[:, None]  # switches inside the hold: its own cut
    quiet = np.sin(t)[:, None]  # a dim the cut leaves out moves on
    actions = np.concatenate([arm, gripper, quiet], axis=1)
    assert final_hold_start(actions, [2], FPS, left_out=[3]) == 44
    assert final_hold_start(actions, [2], FPS) is None  # the left-out dim still moves
    assert final_hold_start(actions[:, :2], [], FPS) == 44
    # held at any value, not only zero (a position target that stays)
    assert final_hold_start(actions[:, :2] + 0.3, [], FPS) == 44
    # too short to be an event of its own: 3 frames at 20 Hz (0.15 s < 0.2 s)
    assert final_hold_start(actions[:47, :2], [], FPS) is None
    # noise never holds exactly; nothing moving has no hold
    noisy = actions[:, :2] + np.random.default_rng(0).normal(0, 1e-3, (60, 2))
    assert final_hold_start(noisy, [], FPS) is None
    assert final_hold_start(np.ones((60, 2)), [], FPS) is None
