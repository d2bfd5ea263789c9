"""Commands held over several frames (:mod:`wallwm.pipeline.segmentation.held`)."""

from __future__ import annotations

import numpy as np
import pytest

from wallwm.pipeline.segmentation import Boundary, Segmentation, SegmentConfig, Signals
from wallwm.pipeline.segmentation.forms import reading_notes, reads_held_samples
from wallwm.pipeline.segmentation.held import (
    CommandSamples,
    command_samples,
    repeated_rows,
    with_missed_samples,
    with_states_between_samples,
)
from wallwm.pipeline.segmentation.selection import resolve


def held(x_TA: np.ndarray, hold: int) -> np.ndarray:
    """Each frame takes the command of the last frame a multiple of ``hold`` (a slower stream
    stored at the frames: the latest value)."""
    return x_TA[(np.arange(len(x_TA)) // hold) * hold]


def test_a_held_stream_is_found_with_its_samples(waypoint_plan):
    plan, _ = waypoint_plan(0)
    samples = command_samples(Signals(held(plan, 3), 30.0))
    assert samples is not None and samples.hold == 3.0
    assert samples.frames.tolist() == list(range(0, len(plan), 3))
    assert command_samples(Signals(plan, 30.0)) is None  # it changes every frame


def test_a_pause_keeps_its_duration_and_a_gripper_is_no_motion(waypoint_plan):
    plan, _ = waypoint_plan(1)
    paused = np.concatenate([plan[:60], np.repeat(plan[60:61], 30, axis=0), plan[60:]])
    stream = held(paused, 2)
    gripper = (np.arange(len(stream)) % 7 == 0).astype(float)[:, None]  # switches on its own
    samples = command_samples(Signals(np.hstack([stream, gripper]), 30.0, gripper_action_dims=[4]))
    assert samples is not None and samples.hold == 2.0
    in_pause = [f for f in samples.frames if 60 <= f < 90]
    assert len(in_pause) == 15  # 30 frames of pause, 2 frames a sample: 15 samples


def test_commands_constant_by_design_are_no_held_stream(waypoint_plan):
    """Each event one level, for events of irregular length: the levels are the events."""
    rng = np.random.default_rng(2)
    lengths = rng.integers(15, 40, 14)
    levels = np.repeat(rng.uniform(-1, 1, (len(lengths), 3)), lengths, axis=0)
    assert command_samples(Signals(levels, 10.0)) is None
    stream = held(waypoint_plan(3)[0], 3)
    noisy = stream + rng.normal(0, 0.01, stream.shape)  # noise added after the hold
    assert command_samples(Signals(noisy, 10.0)) is None


def test_a_cut_of_the_samples_comes_back_in_frames():
    samples = CommandSamples(np.array([0, 3, 6, 9, 12]), 15, 3.0)
    cut = Segmentation(
        [0, 2],
        [2, 5],
        [Boundary(2, 0.9, ("action_change",))],
        np.array([0.0, 0.1, 0.9, 0.2, 0.0]),
        {"action_change": np.array([0.0, 0.0, 1.0, 0.0, 0.0])},
    )
    frames = samples.segmentation(cut)
    assert (frames.starts, frames.ends) == ([0, 6], [6, 15])
    assert frames.boundaries == [Boundary(6, 0.9, ("action_change",))]
    assert frames.score_T.tolist() == [0.0] * 3 + [0.1] * 3 + [0.9] * 3 + [0.2] * 3 + [0.0] * 3
    assert frames.cues_CT["action_change"][6:9].tolist() == [1.0, 1.0, 1.0]
    assert samples.runs([(1, 3)]) == [(3, 9)]
    gripper = Segmentation([0, 2], [2, 5], [Boundary(2, 1.0, ("gripper",))], np.zeros(5), {})
    switched = samples.segmentation(gripper, flips=[5])  # between the samples at 3 and 6
    assert switched.starts == [0, 5] and switched.boundaries[0].frame == 5
    assert samples.segmentation(gripper, flips=[9]).starts == [0, 6]  # not in its span


def test_a_waypoint_plan_held_over_frames_is_cut_at_its_knots(waypoint_plan, dataset_f1):
    """The stairs of a held stream are changes to every model in time; read at its samples
    the plan is lines again and its knots are found (within the hold, 3 frames)."""
    pairs = []
    for seed in range(6):
        plan, knots = waypoint_plan(seed)
        pairs.append((Signals(held(plan, 3), 30.0), knots))
    assert dataset_f1(pairs, SegmentConfig()) >= 0.95
    assert dataset_f1(pairs, SegmentConfig(read_held_samples=False)) < 0.6


def test_a_law_on_the_state_reads_the_frames():
    assert reads_held_samples(SegmentConfig())  # the choice reads the samples
    assert reads_held_samples(SegmentConfig(action_model="time"))
    assert not reads_held_samples(SegmentConfig(action_model="state_feedback"))
    assert reads_held_samples(SegmentConfig(action_model="state_feedback", action_form="rates"))
    assert not reads_held_samples(SegmentConfig(read_held_samples=False))


def test_the_episode_plot_says_a_held_stream_was_cut_on_its_samples(waypoint_plan):
    from wallwm.pipeline.inspect import _plot_legend

    plan, _ = waypoint_plan(4)
    cfg = SegmentConfig(action_model="time", state_pairing="index", quiet_dims=[])
    legend = _plot_legend(Signals(held(plan, 3), 30.0), cfg, "data", 6, False)
    assert "commands held 3 frames: cut on their samples" in legend
    assert "held" not in _plot_legend(Signals(plan, 30.0), cfg, "data", 6, False)


def with_repeats(x_TA: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Rows a late recorder stored again: each frame, with probability ``share``, repeats the
    frame before (as stored)."""
    rng = np.random.default_rng(seed)
    index = np.arange(len(x_TA))
    for t in range(1, len(x_TA)):
        if rng.random() < share:
            index[t] = index[t - 1]
    return x_TA[index]


def test_rows_a_recorder_stored_twice_are_missed_samples_and_a_stop_is_not():
    line = np.linspace(0.0, 1.0, 40)[:, None] * np.ones((1, 2))
    stored = line[[0, 1, 2, 2, 4, 5, 5, 5, *range(8, 40)]]  # 3 stored twice, 6 and 7 thrice
    states = stored[:, :1] * 2.0
    assert repeated_rows(Signals(stored, 10.0, states)).tolist() == [3, 6, 7]
    filled = with_missed_samples(
        Signals(stored, 10.0, states), repeated_rows(Signals(stored, 10.0))
    )
    assert np.allclose(filled.actions_TA, line) and np.allclose(filled.states_TS, line[:, :1] * 2)
    stop = line[[*range(10), *([9] * 3), *range(10, 40)]]  # three frames still: a stop
    assert repeated_rows(Signals(stop, 10.0)).tolist() == []
    assert repeated_rows(Signals(line[[*range(39), 38]], 10.0)).tolist() == []  # at the end
    moving_state = Signals(stored, 10.0, np.arange(40.0)[:, None])  # the state moved on
    assert repeated_rows(moving_state).tolist() == []


def test_a_two_level_command_keeps_its_level_at_a_missed_sample():
    line = np.linspace(0.0, 1.0, 40)
    gripper = (np.arange(40) >= 20).astype(float)
    stored = np.column_stack([line, gripper])[[*range(20), 19, *range(21, 40)]]
    s = Signals(stored, 10.0, gripper_action_dims=[1])
    filled = with_missed_samples(s, repeated_rows(s))
    assert filled.actions_TA[20, 1] == 0.0 and np.isclose(filled.actions_TA[20, 0], line[20])


def test_a_waypoint_plan_with_missed_samples_is_cut_at_its_knots(waypoint_plan, dataset_f1):
    pairs = []
    for seed in range(6):
        plan, knots = waypoint_plan(seed)
        pairs.append((Signals(with_repeats(plan, 0.05, seed), 30.0), knots))
    assert dataset_f1(pairs, SegmentConfig()) >= 0.95
    repeated = len(repeated_rows(pairs[0][0]))
    assert repeated and f"{repeated} rows stored twice: the models in time read missed" in " ".join(
        reading_notes(pairs[0][0])
    )
    # a row stored twice is off the line for a frame: the glitch reading mends it too, where
    # the row is off by enough in each command -- off, both
    off = SegmentConfig(read_held_samples=False, mend_glitches=False)
    assert dataset_f1(pairs, off) < 0.85
    assert dataset_f1(pairs, SegmentConfig(read_held_samples=False)) >= 0.85


def test_a_state_stream_slower_than_the_frames_is_read_between_its_samples(closed_loop, dataset_f1):
    """Joint states held 3 frames while the commands move on: the law sees the state stand
    still; read between its samples it is a law again, and the choice keeps it."""
    pairs = []
    for seed in range(6):
        s, knots = closed_loop(seed)
        pairs.append((Signals(s.actions_TA, s.fps, held(s.states_TS, 3)), knots))
    s = pairs[0][0]
    between = with_states_between_samples(s)
    truth = closed_loop(0)[0].states_TS
    assert np.abs(between.states_TS - truth)[:-3].max() < np.abs(s.states_TS - truth).max() / 4
    unheld = closed_loop(0)[0]
    assert with_states_between_samples(unheld) is unheld  # nothing held: as it is
    assert "states held 3 frames: read between their samples" in reading_notes(s)
    assert not any("held" in note for note in reading_notes(unheld))
    signals = [s for s, _ in pairs]
    assert resolve(SegmentConfig(), signals)[1].action_model == "state_feedback"
    assert dataset_f1(pairs, SegmentConfig()) >= 0.95
    # read as stored, the state stands still while the command moves: the law looks worse
    # than a model in time (Jaco's joints held 3 frames: the line in time, F1@3 0.33)
    as_stored = resolve(SegmentConfig(read_held_samples=False), signals)[1]
    assert as_stored.action_model != "state_feedback"


def test_a_rate_the_frames_do_not_divide_is_held_too(waypoint_plan, dataset_f1):
    """Commands at 12 Hz beside 30 Hz frames hold for 2 or 3 frames in turn: one sample each,
    read at 12 Hz, and the plan's knots are still found."""
    pairs = []
    for seed in range(6):
        plan, knots = waypoint_plan(seed)
        sample_at = np.floor(np.arange(len(plan)) * 12 / 30) * 30 / 12  # the latest, frames
        frames = np.arange(len(plan))
        stream = np.column_stack([np.interp(sample_at, frames, plan[:, j]) for j in range(4)])
        pairs.append((Signals(stream, 30.0), knots))
    samples = command_samples(pairs[0][0])
    assert samples is not None and samples.hold == pytest.approx(2.5, abs=0.05)
    assert samples.signals(pairs[0][0]).fps == pytest.approx(12.0, rel=0.02)
    assert dataset_f1(pairs, SegmentConfig()) >= 0.95


def test_the_reading_names_what_it_read_differently(waypoint_plan):
    """Each reading that changed the episode is named (the run summaries count them); one
    that found nothing is not."""
    from wallwm.pipeline.segmentation import segment
    from wallwm.pipeline.segmentation.forms import as_read, reading_summary

    plan, _ = waypoint_plan(5)
    cfg = SegmentConfig()
    assert as_read(Signals(plan, 30.0), cfg).kinds == ()
    assert segment(Signals(plan, 30.0), cfg, traces=False).reading == ()
    stairs = Signals(held(plan, 3), 30.0)
    assert as_read(stairs, cfg).kinds == ("commands_held",)
    assert segment(stairs, cfg, traces=False).reading == ("commands_held",)
    assert as_read(stairs, SegmentConfig(read_held_samples=False)).kinds == ()
    twice = plan.copy()
    twice[[40, 90]] = twice[[39, 89]]  # a late recorder stored two rows again
    assert as_read(Signals(twice, 30.0), cfg).kinds == ("rows_repeated",)
    turning = np.column_stack([plan, np.linspace(2.5, 4.0, len(plan))])  # an angle past pi
    wrapped = np.column_stack([plan, np.angle(np.exp(1j * turning[:, -1]))])
    assert as_read(Signals(wrapped, 30.0), cfg).kinds == ("rotations",)
    lines = reading_summary({"commands_held": 2, "rotations": 1}, 4)
    assert lines[0].startswith("1 of 4 episode: rotations read continuous")
    assert lines[1].startswith("2 of 4 episodes: commands held")


def test_wallwm_segment_and_run_say_how_many_episodes_they_read_held(
    tmp_path, write_source, waypoint_plan
):
    from typer.testing import CliRunner

    from wallwm.cli.main import app
    from wallwm.pipeline.tables import schemas
    from wallwm.pipeline.tables.store import LanceStore

    episodes = []
    for seed in range(4):
        plan, knots = waypoint_plan(seed)
        episodes.append((Signals(held(plan, 3) if seed < 2 else plan, 30.0), knots))
    src, ds, fused = tmp_path / "src", tmp_path / "ds", tmp_path / "fused"
    write_source(src, episodes, "plan")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(src), "--dataset", str(ds)]).exit_code == 0
    cut = runner.invoke(app, ["segment", "--dataset", str(ds)])
    assert cut.exit_code == 0, cut.output
    said = " ".join(cut.output.split())
    assert "read for the cut: 2 of 4 episodes: commands held over several frames" in said
    assert "rotations" not in said
    ran = runner.invoke(app, ["run", str(src), "--dataset", str(fused), "--no-cluster"])
    assert ran.exit_code == 0, ran.output
    assert "read for the cut: 2 episodes: commands held" in " ".join(ran.output.split())
    off = runner.invoke(app, ["segment", "--dataset", str(ds), "--no-read-held-samples"])
    assert off.exit_code == 0 and "read for the cut" not in off.output
    runs = LanceStore(str(ds)).read(schemas.RUNS, columns=["stage", "message"]).to_pylist()
    notes = [r["message"] for r in runs if r["stage"] == "segment"]
    assert any("commands_held=2" in n for n in notes), notes


def two_arms(plan_left: np.ndarray, plan_right: np.ndarray, holds, phases) -> np.ndarray:
    """Two arms' commands, each held for its hold from its phase (a topic per arm)."""
    t = np.arange(len(plan_left))
    arms = []
    for plan, hold, phase in zip((plan_left, plan_right), holds, phases, strict=True):
        arms.append(plan[np.maximum((t - phase) // hold * hold + phase, 0)])
    return np.hstack(arms)


def test_streams_are_told_apart_by_the_frames_they_change_at():
    from wallwm.pipeline.segmentation.held import same_stream, stream_groups

    frames = np.arange(0, 90, 3)
    assert same_stream(frames, frames, 3.0)  # the same frames
    assert not same_stream(frames + 1, frames, 3.0)  # a frame apart: another stream
    assert same_stream(np.arange(120, 150, 3), frames, 3.0)  # never near: says nothing
    assert not same_stream(np.arange(0, 90, 2), frames, 2.0)  # holds of 2 and 3
    changed = np.zeros((90, 3), bool)
    changed[frames, 0] = True
    changed[frames[::2], 1] = True  # saturated or still at every other sample: no change
    changed[frames[:-1] + 1, 2] = True
    assert stream_groups(changed, [3.0, 6.0, 3.0]) == [[0, 1], [2]]


def test_arms_on_streams_of_their_own_are_cut_on_the_slowest(waypoint_plan, dataset_f1):
    """Two arms held a frame apart, at 2 and 3 frames, or one held beside one that is not:
    the union of their changes is no regular stride and each staircase stayed; read on the
    slowest stream's samples the plans are lines again. (Off, the plans a frame apart lost a
    third of their F1; at other rates here the arm not held carried the shared knots.)"""
    for holds, phases in (((3, 3), (0, 1)), ((2, 3), (0, 0)), ((3, 1), (0, 0))):
        pairs = []
        for seed in range(6):
            left, knots = waypoint_plan(seed, dims=3)
            right, _ = waypoint_plan(seed, dims=3)  # the same moves: one knot list
            right = right[:, ::-1] * 0.5
            pairs.append((Signals(two_arms(left, right, holds, phases), 30.0), knots))
        samples = command_samples(pairs[0][0])
        assert samples is not None and samples.hold == pytest.approx(max(holds), abs=0.1)
        assert samples.columns  # the other arm read between its own samples
        notes = " ".join(reading_notes(pairs[0][0]))
        assert f"streams of their own rates, the slowest held {max(holds)} frames" in notes
        assert dataset_f1(pairs, SegmentConfig()) >= 0.9, holds
        if phases == (0, 1):
            assert dataset_f1(pairs, SegmentConfig(read_held_samples=False)) < 0.7


def test_one_stream_whose_arms_rest_in_turn_stays_one(waypoint_plan):
    """A single stream where one arm rests while the other moves, and a command that changes
    seldom (a level per phase): every column takes the stream's samples."""
    left, _ = waypoint_plan(7, dims=3)
    right, _ = waypoint_plan(8, dims=3)
    left, right = left[: len(right)], right[: len(left)]
    half = len(left) // 2
    left[half:] = left[half]  # the left arm rests in the second half
    right[:half] = right[0]  # the right arm in the first
    level = np.where(np.arange(len(left)) < half // 2, 0.0, 1.0)[:, None] * 0.3
    stream = held(np.hstack([left, right, level]), 3)
    samples = command_samples(Signals(stream, 30.0))
    assert samples is not None and samples.hold == 3.0 and not samples.columns
