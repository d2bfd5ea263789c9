"""One-frame glitches in the commands (:mod:`wallwm.pipeline.segmentation.glitches`)."""

from __future__ import annotations

import numpy as np

from wallwm.pipeline.segmentation import SegmentConfig, Signals, segment
from wallwm.pipeline.segmentation.forms import as_read, reading_notes
from wallwm.pipeline.segmentation.glitches import glitch_frames, without_glitches


def glitched(x_TA: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, list[int]]:
    """``x_TA`` with ``share`` of its frames off by 30 % of a command's range for one frame."""
    rng = np.random.default_rng(seed)
    out = np.array(x_TA, dtype=np.float64)
    frames = rng.choice(np.arange(2, len(out) - 2), round(share * len(out)), replace=False)
    for f in frames:
        j = rng.integers(out.shape[1])
        out[f, j] += rng.choice([-1.0, 1.0]) * 0.3 * np.ptp(out[:, j])
    return out, sorted(frames.tolist())


def test_a_glitch_is_found_and_a_step_a_bend_or_noise_are_not():
    line = np.linspace(0.0, 1.0, 60)
    spike = line.copy()
    spike[30] += 0.2
    assert glitch_frames(spike).tolist() == [30]
    step = np.where(np.arange(60) < 30, 0.0, 1.0)
    assert glitch_frames(step).size == 0
    bend = np.minimum(np.arange(60.0), 30.0)
    assert glitch_frames(bend).size == 0
    noise = np.random.default_rng(0).normal(0.0, 1.0, 5000)
    assert glitch_frames(noise).size == 0  # 8 robust standard deviations: never by chance
    loud = noise.copy()
    loud[2500] += 15.0
    assert 2500 in glitch_frames(loud).tolist()
    two = line.copy()
    two[30:32] += 0.2  # off for two frames: not one frame's glitch
    assert glitch_frames(two).size == 0


def test_glitches_are_read_between_their_neighbours_and_a_gripper_is_left():
    t = np.arange(60.0)
    actions = np.column_stack([t / 60, np.where((t > 20) & (t < 40), 1.0, 0.0)])
    actions[30, 0] += 0.5
    actions[45, 1] = 1.0  # a gripper's one-frame blip is its own to make
    s = Signals(actions, 20.0, gripper_action_dims=[1])
    mended = without_glitches(s)
    assert mended.actions_TA[30, 0] == np.float64(30 / 60)
    assert mended.actions_TA[45, 1] == 1.0
    clean = Signals(np.column_stack([t / 60, t / 30]), 20.0)
    assert without_glitches(clean) is clean


def test_a_waypoint_plan_with_glitches_is_cut_at_its_knots(waypoint_plan, dataset_f1):
    """A glitch is two changes a frame apart to a line in time; read between its neighbours
    it is none."""
    pairs = []
    for seed in range(6):
        plan, knots = waypoint_plan(seed)
        pairs.append((Signals(glitched(plan, 0.02, seed)[0], 30.0), knots))
    assert dataset_f1(pairs, SegmentConfig()) >= 0.95
    assert dataset_f1(pairs, SegmentConfig(mend_glitches=False)) < 0.8


def test_the_reading_names_glitches_and_a_law_reads_the_commands_as_stored(waypoint_plan):
    plan, _ = waypoint_plan(3)
    s = Signals(glitched(plan, 0.02, 3)[0], 30.0)
    assert as_read(s, SegmentConfig()).kinds == ("glitches",)
    assert segment(s, SegmentConfig()).reading == ("glitches",)
    law = SegmentConfig(action_model="state_feedback", state_pairing="index", quiet_dims=[])
    assert as_read(s, law).kinds == ()
    assert as_read(s, SegmentConfig(mend_glitches=False)).kinds == ()
    assert any("off their neighbours for one frame" in note for note in reading_notes(s))
