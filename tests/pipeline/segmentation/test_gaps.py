"""Frames a recorder dropped (:mod:`wallwm.pipeline.segmentation.gaps`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from wallwm.pipeline.segmentation import Boundary, Segmentation, SegmentConfig, Signals, segment
from wallwm.pipeline.segmentation.forms import as_read, reading_notes
from wallwm.pipeline.segmentation.gaps import FrameGrid, frame_grid, rising_fit


def dropped(s: Signals, knots: list[int], share: float, seed: int) -> tuple[Signals, list[int]]:
    """``s`` with ``share`` of its frames dropped (their timestamps' gaps left) and its knots
    moved to the stored frames (a knot whose frame was dropped to the next one stored)."""
    t_len = len(s.actions_TA)
    rng = np.random.default_rng(seed)
    gone = rng.choice(np.arange(1, t_len - 1), round(share * t_len), replace=False)
    kept = np.setdiff1d(np.arange(t_len), gone)
    states = None if s.states_TS is None else np.asarray(s.states_TS)[kept]
    stored = dataclasses.replace(
        s, actions_TA=np.asarray(s.actions_TA)[kept], states_TS=states, timestamps_s=kept / s.fps
    )
    return stored, sorted({int(np.searchsorted(kept, k)) for k in knots})


def test_gaps_are_found_and_jitter_is_not():
    period = 1 / 30
    assert frame_grid(np.arange(50) * period, 50) is None  # regular
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, 50)
    assert frame_grid((np.arange(50) + jitter) * period, 50) is None
    late = np.array([0, 1, 2.6, 3, 4, 5, 6, 7]) * period  # late, then a quick one: no drop
    assert frame_grid(late, 8) is None
    grid = frame_grid(np.array([0, 1, 3, 4, 5, 8, 9, 10.2]) * period, 8)
    assert grid is not None and grid.places.tolist() == [0, 1, 3, 4, 5, 8, 9, 10]
    assert grid.dropped == 3
    assert frame_grid(np.array([0, 1, 2, 3, 400.0]) * period, 5) is None  # a clock that jumped
    assert frame_grid(np.arange(5) * period, 6) is None  # not one per frame
    assert frame_grid(np.array([0, 1, np.nan, 4, 5]) * period, 5) is None
    assert frame_grid(None, 5) is None
    assert rising_fit(np.array([0.0, 0.6, 0.0, 1.0])).tolist() == [0.0, 0.3, 0.3, 1.0]


def test_the_grid_fills_a_line_and_keeps_a_gripper_level():
    grid = FrameGrid(np.array([0, 1, 4, 5]))
    actions = np.array([[0.0, 0.0], [1.0, 0.0], [4.0, 1.0], [5.0, 1.0]])  # a line, a gripper
    s = Signals(actions, 10.0, states_TS=actions[:, :1] * 2, timestamps_s=np.zeros(4))
    on = grid.signals(s)
    assert on.actions_TA[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert on.actions_TA[:, 1].tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]  # switches when seen
    assert on.states_TS is not None and on.states_TS[:, 0].tolist()[2:4] == [4.0, 6.0]
    assert on.timestamps_s is None


def test_a_cut_of_the_grid_comes_back_in_stored_frames():
    grid = FrameGrid(np.array([*range(10), *range(12, 20)]))  # places 10 and 11 dropped
    cut = Segmentation(
        [0, 10, 12, 17],
        [10, 12, 17, 20],
        [
            Boundary(10, 0.9, ("action_change",)),
            Boundary(12, 0.5, ("action_change",)),
            Boundary(17, 0.7, ("action_change",)),
        ],
        np.arange(20) / 10,
        {"action_change": np.arange(20.0)},
    )
    frames = grid.segmentation(cut)
    # the event of the two filled places is the fill's: its less confident cut goes
    assert (frames.starts, frames.ends) == ([0, 10, 15], [10, 15, 18])
    assert [(b.frame, b.confidence) for b in frames.boundaries] == [(10, 0.9), (15, 0.7)]
    assert frames.score_T.tolist()[9:11] == [0.9, 1.2]
    assert frames.cues_CT["action_change"].tolist()[9:11] == [9.0, 12.0]
    assert grid.runs([(10, 12), (5, 11)]) == [(5, 10)]  # a run inside the gap is no frames
    near = dataclasses.replace(cut, boundaries=[Boundary(9, 0.9, ("action_change",)),
                                                Boundary(14, 0.5, ("action_change",))])  # fmt: skip
    assert [b.frame for b in grid.segmentation(near).boundaries] == [9]  # 2 stored, 2 filled
    gripper = dataclasses.replace(cut, boundaries=[Boundary(10, 0.9, ("action_change",)),
                                                   Boundary(12, 1.0, ("gripper",))])  # fmt: skip
    assert [(b.frame, b.cues) for b in grid.segmentation(gripper).boundaries] == [
        (10, ("gripper",))
    ]


def test_a_waypoint_plan_with_dropped_frames_is_cut_at_its_knots(waypoint_plan, dataset_f1):
    """Each dropped frame is a step to a line in time; on the time axis the plan is lines."""
    for share in (0.03, 0.1):
        pairs = [dropped(Signals(p, 30.0), k, share, seed)
                 for seed, (p, k) in enumerate(waypoint_plan(s) for s in range(6))]  # fmt: skip
        assert dataset_f1(pairs, SegmentConfig()) >= 0.95
        assert dataset_f1(pairs, SegmentConfig(read_held_samples=False)) < 0.8
        without = [(dataclasses.replace(s, timestamps_s=None), k) for s, k in pairs]
        assert dataset_f1(without, SegmentConfig()) < 0.8  # the frames alone cannot tell


def test_a_law_on_the_state_reads_the_stored_rows(closed_loop):
    s, _ = closed_loop(0)
    gappy, _ = dropped(s, [], 0.1, 0)
    cfg = SegmentConfig(action_model="state_feedback", state_pairing="index", quiet_dims=[])
    read = as_read(gappy, cfg)
    assert read.grid is None and read.kinds == ()
    assert len(read.signals.actions_TA) == len(gappy.actions_TA)
    assert read.signals.timestamps_s is None  # read here, never carried further


def test_the_reading_names_dropped_frames_and_maps_the_cut_back(waypoint_plan):
    plan, knots = waypoint_plan(2)
    gappy, _ = dropped(Signals(plan, 30.0), knots, 0.1, 2)
    read = as_read(gappy, SegmentConfig())
    assert read.kinds == ("frames_dropped",) and read.grid is not None
    assert len(read.signals.actions_TA) == len(plan)
    cut = segment(gappy, SegmentConfig())
    assert cut.reading == ("frames_dropped",)
    assert cut.ends[-1] == len(gappy.actions_TA) and len(cut.score_T) == len(gappy.actions_TA)
    assert all(len(trace) == len(gappy.actions_TA) for trace in cut.cues_CT.values())
    assert any("frames dropped" in note for note in reading_notes(gappy))
    # a held stream whose frames were also dropped: both read, both mapped back
    stairs = plan[(np.arange(len(plan)) // 3) * 3]
    both, _ = dropped(Signals(stairs, 30.0), knots, 0.05, 3)
    cut = segment(both, SegmentConfig())
    assert cut.reading == ("frames_dropped", "commands_held")
    assert cut.ends[-1] == len(both.actions_TA) and cut.starts == sorted(set(cut.starts))


def test_wallwm_segment_reads_a_recorders_dropped_frames(tmp_path, write_source, waypoint_plan):
    from typer.testing import CliRunner

    from wallwm.cli.main import app

    episodes = [dropped(Signals(p, 30.0), k, 0.1, seed)
                for seed, (p, k) in enumerate(waypoint_plan(s) for s in range(4))]  # fmt: skip
    src, ds = tmp_path / "src", tmp_path / "ds"
    write_source(src, episodes, "plan")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(src), "--dataset", str(ds)]).exit_code == 0
    cut = runner.invoke(app, ["segment", "--dataset", str(ds)])
    assert cut.exit_code == 0, cut.output
    assert "4 of 4 episodes: frames dropped" in " ".join(cut.output.split())
    scored = runner.invoke(app, ["eval", "segmentation", "--dataset", str(ds), "--json"])
    import json

    assert json.loads(scored.output)["overall"]["f1"] >= 0.95, scored.output
    seen = runner.invoke(app, ["inspect", str(src)])
    assert seen.exit_code == 0, seen.output
    assert "frames dropped (gaps in the timestamps)" in " ".join(seen.output.split())
