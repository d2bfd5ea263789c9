"""The MetaWorld recorder (extra ``sim``): real scripted episodes with traced phases."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("metaworld", reason="MetaWorld is the optional 'sim' extra")

from wallwm.pipeline.sim.metaworld import (
    MetaWorldConfig,
    instruction_for,
    phase_events,
    record_metaworld,
)


def test_phase_events_merge_flicker_but_keep_real_one_step_phases():
    assert phase_events(["a", "a", "b", "a", "a", "c", "c"]) == [(0, "a"), (5, "c")]
    assert phase_events(["a", "a", "b", "c", "c"]) == [(0, "a"), (2, "b"), (3, "c")]


def test_record_pick_place(tmp_path):
    cfg = MetaWorldConfig(tasks=("pick-place-v3",), episodes=1, size=48, max_steps=120)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        results = record_metaworld(tmp_path, cfg)
    assert len(results) == 1 and results[0]["frames"] > 10
    # MetaWorld warns at every step its expert asks for more than the clip: not the user's news
    assert not [w for w in said if "may be too high" in str(w.message)]
    ep = tmp_path / results[0]["key"]
    meta = json.loads((ep / "meta.json").read_text())
    steps = pq.read_table(ep / "steps.parquet")
    assert meta["instruction"] == instruction_for("pick-place-v3") and meta["fps"] == 80.0
    assert steps.num_rows == results[0]["frames"] == len(meta["raw_phases"])
    starts = [e["start_frame"] for e in meta["events"]]
    assert starts[0] == 0 and starts == sorted(starts) and len(starts) >= 3
    # the first phase is named after the MetaWorld authors' comment over its branch
    assert "XY" in meta["events"][0]["name"]
    # a gripper decision is one of the event joints
    assert any("gripper closing" in e["name"] for e in meta["events"])
    actions = np.array(steps.column("action").to_pylist())
    assert actions.shape[1] == 4 and np.abs(actions).max() <= 1.0
    assert (ep / "corner.mp4").stat().st_size > 0


def test_unknown_task_suggests(tmp_path):
    with pytest.raises(ValueError, match="did you mean 'pick-place-v3'"):
        record_metaworld(tmp_path, MetaWorldConfig(tasks=("pick-plase-v3",), episodes=1))


def test_expert_labels_and_parallel_recording_match_the_sequential_one(tmp_path):
    """DART-style recording: the states follow the noisy execution, the labels are the expert's.

    Two worker processes write the same episodes, in the same order, as one process.
    """
    base = MetaWorldConfig(tasks=("reach-v3", "push-v3"), episodes=2, size=32, max_steps=30)
    executed = record_metaworld(tmp_path / "executed", base)
    expert_cfg = MetaWorldConfig(**{**base.__dict__, "action_labels": "expert", "workers": 2})
    expert = record_metaworld(tmp_path / "expert", expert_cfg)
    assert [r["key"] for r in expert] == [r["key"] for r in executed]
    for r in expert:
        a = tmp_path / "executed" / r["key"]
        b = tmp_path / "expert" / r["key"]
        assert json.loads((b / "meta.json").read_text())["action_labels"] == "expert"
        states_a = np.array(pq.read_table(a / "steps.parquet").column("state").to_pylist())
        states_b = np.array(pq.read_table(b / "steps.parquet").column("state").to_pylist())
        # same seed, same executed (noisy) actions: the same trajectory
        np.testing.assert_allclose(states_a, states_b, atol=1e-6)
        act_a = np.array(pq.read_table(a / "steps.parquet").column("action").to_pylist())
        act_b = np.array(pq.read_table(b / "steps.parquet").column("action").to_pylist())
        # labels differ from the executed commands by the injected noise (0.3 on x, y, z)
        noise = act_a[:, :3] - act_b[:, :3]
        assert 0.1 < noise.std() < 0.5 and np.abs(act_b).max() <= 1.0
        np.testing.assert_allclose(act_a[:, 3], act_b[:, 3])  # the gripper is never noised


def test_several_cameras_are_recorded_and_rendered_for_evaluation(tmp_path):
    import av

    from wallwm.pipeline.sim.metaworld import make_env, render

    cfg = MetaWorldConfig(
        tasks=("reach-v3",), episodes=1, size=32, max_steps=6, cameras=("corner", "corner2")
    )
    (result,) = record_metaworld(tmp_path, cfg)
    ep = tmp_path / result["key"]
    videos = {}
    for cam in cfg.cameras:
        with av.open(str(ep / f"{cam}.mp4")) as c:
            videos[cam] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert {len(v) for v in videos.values()} == {result["frames"]}
    assert np.abs(videos["corner"].astype(int) - videos["corner2"].astype(int)).mean() > 10
    env = make_env("reach-v3", 0, 0, "corner", 32)
    try:
        env.reset(seed=0)
        other = render(env, "corner2")  # another camera than the env was built with...
        assert not np.array_equal(other, render(env, "corner"))
        assert np.array_equal(env.render()[::-1, ::-1], render(env, "corner"))  # ...restored
        with pytest.raises(ValueError, match="no camera 'wrist'"):
            render(env, "wrist")
    finally:
        env.close()


def test_observation_state_records_and_evaluates_metaworlds_whole_observation(tmp_path):
    """``state="observation"``: the 39-D observation (object poses, goal) as the robot state."""
    from wallwm.pipeline.sim.metaworld import make_env, state_names
    from wallwm.trainer.evaluate import evaluate_metaworld

    cfg = MetaWorldConfig(tasks=("reach-v3",), episodes=1, size=32, max_steps=5)
    (result,) = record_metaworld(tmp_path / "obs", dataclasses.replace(cfg, state="observation"))
    (plain,) = record_metaworld(tmp_path / "proprio", cfg)
    meta = json.loads((tmp_path / "obs" / result["key"] / "meta.json").read_text())
    names = meta["state_names"]
    assert names == state_names("observation") and len(names) == 39 and names[-1] == "goal_z"
    states = np.array(
        pq.read_table(tmp_path / "obs" / result["key"] / "steps.parquet")
        .column("state")
        .to_pylist()
    )
    proprio = np.array(
        pq.read_table(tmp_path / "proprio" / plain["key"] / "steps.parquet")
        .column("state")
        .to_pylist()
    )
    assert states.shape == (result["frames"], 39)
    np.testing.assert_allclose(states[:, :4], proprio)  # the same episode, more of it
    env = make_env("reach-v3", 0, 0, "corner", 32)
    try:
        env.reset(seed=0)
        goal = np.asarray(env._target_pos)  # the task's goal
    finally:
        env.close()
    np.testing.assert_allclose(states[0, 36:39], goal, atol=1e-5)  # observed, not zeroed

    class Recorder:
        def __init__(self) -> None:
            self.dims: set[int] = set()

        def reset(self) -> None:
            pass

        def act(self, obs):
            self.dims.add(obs.state_S.shape[0])
            return np.zeros(4, np.float32)

    policy = Recorder()
    evaluate_metaworld(policy, ["reach-v3"], 1, image_size=32, max_steps=2, state_dim=39)
    evaluate_metaworld(policy, ["reach-v3"], 1, image_size=32, max_steps=2)
    assert policy.dims == {39, 4}
    with pytest.raises(ValueError, match="4-D or 39-D"):
        evaluate_metaworld(policy, ["reach-v3"], 1, image_size=32, max_steps=2, state_dim=7)


@pytest.mark.parametrize("kind", ["pause", "swerve"])
def test_operator_disturbances_are_not_decisions(tmp_path, kind):
    """A pause holds the position command at zero for 8-20 steps, a swerve sends 4-8 steps of
    a fixed sideways command; the expert's phase (the ground truth) does not change at either."""
    share = {"hesitations": 1.0} if kind == "pause" else {"corrections": 1.0}
    cfg = MetaWorldConfig(tasks=("pick-place-v3",), episodes=1, size=32, max_steps=120,
                          action_noise=0.0, **share)  # fmt: skip
    (result,) = record_metaworld(tmp_path, cfg)
    ep = tmp_path / result["key"]
    meta = json.loads((ep / "meta.json").read_text())
    actions = np.array(pq.read_table(ep / "steps.parquet").column("action").to_pylist())
    log = meta["disturbances"]
    assert log and all(d["kind"] == kind for d in log)
    phases = meta["raw_phases"]
    for d in log:
        t, n = d["start"], d["steps"]
        shortest, longest = (8, 20) if kind == "pause" else (4, 8)
        # whole, or cut short where the expert decided (its branch changed)
        assert n <= longest if d["cut"] else shortest <= n <= longest
        assert not d["cut"] or phases[t + n] != phases[t + n - 1]
        held = actions[t : t + n, :3]
        if kind == "pause":
            assert np.abs(held).max() == 0.0
        else:  # one sideways direction, 0.15 long
            assert np.allclose(held, held[0]) and held[0, 2] == 0.0
            assert np.linalg.norm(held[0]) == pytest.approx(0.15, abs=1e-6)
        assert phases[t] == phases[t - 1]  # it starts inside a phase, six steps in
    plain = MetaWorldConfig(**{**cfg.__dict__, "hesitations": 0.0, "corrections": 0.0})
    (clean,) = record_metaworld(tmp_path / "clean", plain)
    assert (
        json.loads((tmp_path / "clean" / clean["key"] / "meta.json").read_text())["disturbances"]
        == []
    )


def test_a_smooth_operator_reaches_the_experts_sub_goals_without_jumps(tmp_path):
    """``operator="smooth"``: the same expert decides every phase (its phases, the task
    succeeds; a slower hand may skip its wait for the fingers) while the hand moves on
    minimum-jerk reaches -- at every decision the commanded motion changes by a small step,
    where the scripted expert's jumps."""

    def record(operator: str) -> tuple[dict, np.ndarray]:
        cfg = MetaWorldConfig(tasks=("pick-place-v3",), episodes=1, size=32, max_steps=400,
                              action_noise=0.0, operator=operator)  # fmt: skip
        (result,) = record_metaworld(tmp_path / operator, cfg)
        ep = tmp_path / operator / result["key"]
        actions = np.array(pq.read_table(ep / "steps.parquet").column("action").to_pylist())
        return json.loads((ep / "meta.json").read_text()), actions

    smooth, moves = record("smooth")
    scripted, jumps = record("scripted")
    assert smooth["success"] and smooth["operator"] == "smooth"
    names = [e["name"] for e in smooth["events"]]
    assert len(names) >= 3 and set(names) <= {e["name"] for e in scripted["events"]}
    assert len(moves) > len(jumps)  # a person is slower than the scripted expert

    def largest_step_at_decisions(meta: dict, actions: np.ndarray) -> float:
        motion = actions[:, :3]
        steps = np.abs(np.diff(motion, axis=0)).max(axis=1) / np.abs(motion).max()
        return float(max(steps[e["start_frame"] - 1] for e in meta["events"][1:]))

    assert largest_step_at_decisions(smooth, moves) < 0.1
    assert largest_step_at_decisions(scripted, jumps) > 0.5
