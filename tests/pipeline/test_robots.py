"""The other two robots of the segmentation suite: bimanual ALOHA and a Kinova Jaco arm.

Each recorder writes real simulated episodes in the folder format with the expert's decisions
as ground truth; ``wallwm run`` chooses the within-event model per dataset from the data.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.pipeline.sim.aloha import ACTION_NAMES, STATE_NAMES, AlohaConfig, record_aloha
from wallwm.pipeline.sim.jaco import JacoConfig, record_jaco
from wallwm.pipeline.sim.waypoints import (
    Keyframe,
    Plan,
    add_hesitations,
    changed_runs,
    commands,
    decisions,
)


def test_waypoint_plans_know_their_decisions():
    keys = [
        Keyframe(0, (0, 0, 0), (1, 0, 0, 0), 0.0, "start"),
        Keyframe(20, (1, 0, 0), (1, 0, 0, 0), 0.0, "move"),
        Keyframe(40, (2, 0, 0), (1, 0, 0, 0), 0.0, "same line, same speed: no decision"),
        Keyframe(50, (2, 0, 0), (1, 0, 0, 0), 1.0, "open"),
        Keyframe(80, (2, 1, 0), (1, 0, 0, 0), 1.0, "move on"),
    ]
    other = [Keyframe(0, (5, 5, 5), (1, 0, 0, 0), 0.0, "start"),
             Keyframe(52, (5, 5, 5), (1, 0, 0, 0), 0.0, "wait"),
             Keyframe(70, (5, 6, 5), (1, 0, 0, 0), 0.0, "move")]  # fmt: skip
    plan = Plan([keys, other])
    cmd = commands(plan)
    assert cmd.shape == (81, 16)
    # 52 is 2 frames after 50 (another arm): one moment; 80 is the last frame, no decision
    assert [t for t, _ in decisions(plan, cmd)] == [40, 50, 70]
    held = add_hesitations(plan, np.random.default_rng(0), rate=1.0)
    assert held.holds and commands(held).shape[0] == 81 + sum(n for _, n in held.holds)
    shifted = [t for t, _ in decisions(held, commands(held))]
    assert len(shifted) == 3 and shifted[0] >= 40  # the same decisions, later by the holds


def test_a_person_s_waypoint_moves_are_minimum_jerk_between_the_same_keyframes():
    """The smooth operator passes every keyframe at its time, at rest, with a bell of speed
    between (no jump anywhere); the decisions are the plan's; the gripper stays linear."""
    keys = [
        Keyframe(0, (0, 0, 0), (1, 0, 0, 0), 0.0, "start"),
        Keyframe(30, (0.1, 0, 0), (1, 0, 0, 0), 0.0, "move"),
        Keyframe(50, (0.1, 0.05, 0), (1, 0, 0, 0), 1.0, "open and move on"),
    ]
    plan = Plan([keys])
    linear, smooth = commands(plan), commands(plan, smooth=True)
    assert np.allclose(smooth[[0, 30, 50]], linear[[0, 30, 50]])  # through the keyframes
    speed = np.linalg.norm(np.diff(smooth[:, :3], axis=0), axis=1)
    assert speed[0] < 0.1 * speed[15] and speed[29] < 0.1 * speed[15]  # from rest to rest
    assert speed[15] == pytest.approx(1.875 * 0.1 / 30, rel=0.02)  # the min-jerk peak
    assert np.abs(np.diff(speed)).max() < 0.5 * speed.max()  # no jump
    assert np.allclose(smooth[:, 7], linear[:, 7])  # the gripper command is the expert's
    assert decisions(plan, smooth) == decisions(plan, linear)
    with pytest.raises(ValueError, match="operator"):
        AlohaConfig(operator="person")
    bad = CliRunner().invoke(app, ["sim", "aloha", "--out", "x", "--operator", "person"])
    assert bad.exit_code == 2 and "--operator" in bad.output and "Traceback" not in bad.output


def _record_one_aloha(tmp_path, cfg):
    """Record one episode; its summary, folder, meta, actions (T, A) and states (T, S)."""
    (result,) = record_aloha(tmp_path, cfg)
    ep = tmp_path / result["key"]
    steps = pq.read_table(ep / "steps.parquet")
    actions = np.array(steps.column("action").to_pylist())
    states = np.array(steps.column("state").to_pylist())
    return result, ep, json.loads((ep / "meta.json").read_text()), actions, states


def test_aloha_records_bimanual_waypoint_episodes(tmp_path):
    cfg = AlohaConfig(tasks=("transfer-cube",), episodes=1, size=32, action_noise=0.3)
    result, ep, meta, actions, states = _record_one_aloha(tmp_path, cfg)
    assert actions.shape == (result["frames"], 16) and states.shape == (result["frames"], 14)
    assert meta["action_names"] == ACTION_NAMES and meta["state_names"] == STATE_NAMES
    starts = [e["start_frame"] for e in meta["events"]]
    assert starts[0] == 0 and starts == sorted(starts) and len(starts) >= 8
    assert min(np.diff(starts)) >= 5  # decisions of the two arms are moments apart, or one
    assert "open the right gripper" in [e["name"] for e in meta["events"]]
    assert (ep / "top.mp4").exists() and meta["simulator"] == "aloha"
    # the grippers follow their commands (0 closed .. 1 open): the joints are measured
    assert states[:, 13].max() > 0.8 and states[:, 13].min() < 0.3


def test_aloha_records_where_its_operator_swerved(tmp_path):
    """The swerves (a few millimetres out and back inside a motion) are in the metadata, as
    the hesitations are: a benchmark can tell a false cut at a swerve from any other."""
    cfg = AlohaConfig(tasks=("transfer-cube",), episodes=1, size=32, corrections=1.0)
    result, _, meta, _, _ = _record_one_aloha(tmp_path, cfg)
    assert meta["corrections"] and meta["hesitations"] == []
    for arm, start, length in meta["corrections"]:  # one arm's hand, out and back
        assert arm in (0, 1) and 8 <= length <= 15  # 10-16 frames, the ends on the path
        assert 0 < start < start + length < result["frames"]
    after = np.array([[0, 0], [1, 0], [0, 2], [0, 0], [0, 0], [3, 3]])
    assert changed_runs(np.zeros((6, 2)), after) == [(1, 2), (5, 1)]


def test_aloha_joint_space_records_the_joints_reached_and_the_gripper_commands(tmp_path):
    cfg = AlohaConfig(tasks=("insertion",), episodes=1, size=32, action_space="joint")
    result, _, meta, actions, states = _record_one_aloha(tmp_path, cfg)
    assert actions.shape == states.shape == (result["frames"], 14)
    assert meta["action_names"] == STATE_NAMES and meta["action_space"] == "joint"
    joints = [j for j in range(14) if j not in (6, 13)]
    assert np.allclose(actions[:-1, joints], states[1:, joints], atol=1e-6)  # a step ahead
    assert set(np.round(actions[:, 13], 3)) >= {0.0, 1.0}  # commanded: closed and open
    with pytest.raises(ValueError, match="action_space"):
        AlohaConfig(action_space="cartesian")
    bad = CliRunner().invoke(app, ["sim", "aloha", "--out", str(tmp_path / "x"),
                                   "--action-space", "cartesian"])  # fmt: skip
    assert bad.exit_code == 2 and "--action-space" in bad.output and "Traceback" not in bad.output
    # the segmenter sees position targets and says how it measures their noise
    ds, runner = tmp_path / "ds", CliRunner()
    ran = runner.invoke(app, ["run", str(tmp_path), "-d", str(ds), "--local", "--no-cluster"])
    assert ran.exit_code == 0, ran.output
    again = runner.invoke(app, ["segment", "-d", str(ds), "--reselect"])
    assert again.exit_code == 0 and "position targets" in again.output, again.output


@pytest.mark.slow
def test_jaco_records_joint_velocity_episodes(tmp_path):
    cfg = JacoConfig(tasks=("lift",), episodes=1, size=32, hesitations=1.0)
    (result,) = record_jaco(tmp_path, cfg)
    ep = tmp_path / result["key"]
    meta = json.loads((ep / "meta.json").read_text())
    actions = np.array(pq.read_table(ep / "steps.parquet").column("action").to_pylist())
    assert actions.shape[1] == 9 and meta["robot"] == "jaco"
    names = [e["name"] for e in meta["events"]]
    assert names[:3] == ["move above the brick", "lower the hand around the brick",
                         "close the fingers on the brick"]  # fmt: skip
    assert meta["hesitations"]  # the operator paused inside motions: no events of their own
    assert np.abs(actions[:, :6]).max() <= 0.84  # the joints' velocity limits


@pytest.mark.slow
def test_a_smooth_jaco_operator_starts_each_reach_from_rest(tmp_path):
    """``operator="smooth"``: the same phases, each a minimum-jerk reach -- the arm's speed
    starts near zero and peaks inside the phase, where the scripted expert starts at speed."""

    def first_phase_speed(operator: str) -> tuple[list[str], np.ndarray]:
        cfg = JacoConfig(tasks=("lift",), episodes=1, size=32, operator=operator)  # type: ignore[arg-type]
        (result,) = record_jaco(tmp_path / operator, cfg)
        ep = tmp_path / operator / result["key"]
        meta = json.loads((ep / "meta.json").read_text())
        actions = np.array(pq.read_table(ep / "steps.parquet").column("action").to_pylist())
        speed = np.linalg.norm(actions[: meta["events"][1]["start_frame"], :6], axis=1)
        return [e["name"] for e in meta["events"]], speed

    smooth_names, smooth = first_phase_speed("smooth")
    scripted_names, scripted = first_phase_speed("scripted")
    assert smooth_names == scripted_names
    assert smooth[1] < 0.2 * smooth.max() and 0.2 * len(smooth) < np.argmax(smooth)
    assert scripted[1] > 0.5 * scripted.max()


def test_run_on_aloha_chooses_the_line_in_time(tmp_path):
    src, ds = tmp_path / "src", tmp_path / "ds"
    record_aloha(src, AlohaConfig(episodes=1, size=32, seed=3))  # both tasks
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(src), "--dataset", str(ds), "--local", "--no-cluster"])
    assert result.exit_code == 0, result.output
    evaluated = runner.invoke(app, ["eval", "segmentation", "--dataset", str(ds), "--json"])
    scores = json.loads(evaluated.output)
    assert scores["per_robot"]["aloha"]["f1"] >= 0.95 and len(scores["per_task"]) == 2
    plot = runner.invoke(app, ["events", "list", "--dataset", str(ds), "--json"])
    episode = json.loads(plot.output)[0]["episode_id"]
    out = tmp_path / "ep.png"
    shown = runner.invoke(app, ["episode", "plot", episode, "-d", str(ds), "--out", str(out)])
    assert shown.exit_code == 0 and out.read_bytes()[:4] == b"\x89PNG"
