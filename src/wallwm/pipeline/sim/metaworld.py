"""MetaWorld recorder (extra ``sim``): scripted expert episodes with ground-truth event boundaries.

MetaWorld's scripted policies pick their sub-goal with an if/elif/else chain (``_desired_pos`` in
most v3 policies, ``get_action`` in a few), each branch carrying a comment by the MetaWorld
authors ("drop end effector down on top of puck"). We trace which branch executes at every control
step with ``sys.settrace`` -- the package is not modified -- and every change of branch is a
ground-truth event start, named after the branch's comment.

Flicker (a branch taken for one step between two steps of the same other branch, when the hand
hovers at a threshold) is merged away; a genuine one-step phase between two different phases is
kept. The raw per-step phase labels are stored too (``meta.json: raw_phases``).

Operator-like disturbances that are *not* decisions (``hesitations``, ``corrections``): with
those probabilities per phase, six steps into it the operator pauses for 8-20 steps (a zero
position command; the gripper command and the execution noise stay), or swerves for 4-8 steps
(a fixed sideways command of 0.15, ~1.5 mm per step) that the closed-loop expert then takes back.
The expert's branch -- the ground truth -- does not change for either (``meta.json:
disturbances``): a segmenter must not cut them.

Rendering runs offscreen on the CPU (``MUJOCO_GL=egl``, Mesa); shadows, reflections and
multisampling are turned off, which makes CPU rendering ~20x faster. The ``corner`` cameras render
upside down and are rotated by 180 degrees. MetaWorld ships no language instructions: the ones
below are our own wording, written per task.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, Literal

import numpy as np

from wallwm.pipeline.sim.reach import Reacher
from wallwm.pipeline.sources.folder import write_folder_episode

# MuJoCo picks its GL backend when it is first imported: offscreen EGL (Mesa on CPU machines)
# unless the user chose another one.
os.environ.setdefault("MUJOCO_GL", "egl")

MT10 = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)

#: Our own instructions (MetaWorld has none); tasks not listed get one built from their name.
INSTRUCTIONS = {
    "reach-v3": "reach the red goal position",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "door-open-v3": "open the door by pulling its handle",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
    "assembly-v3": "put the ring onto the peg",
    "basketball-v3": "dunk the ball into the basket",
    "bin-picking-v3": "move the block from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "coffee-push-v3": "push the mug under the coffee machine",
    "door-close-v3": "close the door",
    "faucet-open-v3": "turn the faucet on",
    "faucet-close-v3": "turn the faucet off",
    "hammer-v3": "hammer the nail into the wall",
    "lever-pull-v3": "pull the lever up",
    "shelf-place-v3": "place the puck on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
}


def instruction_for(task: str) -> str:
    """Instruction for a MetaWorld task (ours; listed, or derived from the task name)."""
    if task in INSTRUCTIONS:
        return INSTRUCTIONS[task]
    return "complete the task: " + task.removesuffix("-v3").replace("-", " ")


@dataclass(frozen=True)
class MetaWorldConfig:
    """Options of ``wallwm sim record``."""

    tasks: tuple[str, ...] = ("pick-place-v3",)
    episodes: int = 5
    #: MetaWorld camera names, each recorded as its own video (e.g. ``corner``, ``corner2``,
    #: ``gripperPOV``: a second view resolves the depth a single corner view leaves open).
    cameras: tuple[str, ...] = ("corner",)
    size: int = 128
    action_noise: float = 0.3
    #: Which action each step records. ``executed``: the noisy command the robot ran (what a
    #: real log holds). ``expert``: the expert's clean command, while the noisy one is executed
    #: -- noise injection as in DART (Laskey et al. 2017): the states visit the disturbances a
    #: learned policy will meet, the labels say how the expert recovers from them.
    action_labels: Literal["executed", "expert"] = "executed"
    #: What each step records as the robot state. ``proprio``: hand position and gripper
    #: opening (what a real robot reports). ``observation``: MetaWorld's whole observation
    #: vector as its multi-task benchmarks define it (hand, gripper, object poses, the previous
    #: step's copy of those, and the goal position) -- privileged simulator state, for
    #: separating what a policy can learn from what it can see.
    state: Literal["proprio", "observation"] = "proprio"
    #: Episodes recorded in parallel (one process each; MuJoCo rendering is single-threaded).
    workers: int = 1
    max_steps: int = 200
    steps_after_success: int = 10
    seed: int = 0
    #: Share of phases in which the operator pauses part-way (see the module docstring).
    hesitations: float = 0.0
    #: Share of phases in which the operator swerves a few millimetres part-way.
    corrections: float = 0.0
    #: How each phase's sub-goal is reached. ``scripted``: MetaWorld's own experts (a
    #: proportional step toward the sub-goal, clipped). ``smooth``: a person's reach -- a
    #: minimum-jerk path to the same sub-goal over a Fitts-like duration (``sim.reach``), the
    #: expert still deciding every phase and the gripper; use a larger ``max_steps``.
    operator: Literal["scripted", "smooth"] = "scripted"
    #: MetaWorld steps the controller at 80 Hz of simulated time; videos are written at this
    #: rate so that seconds in the dataset are simulated seconds.
    fps: float = 80.0


class _FunctionTrace:
    """Which branch one traced function took on its last call."""

    def __init__(self, fn: Callable[..., Any], by_return: bool) -> None:
        self.fn = fn
        self.code: CodeType = fn.__code__
        self.by_return = by_return
        self.lines: list[int] = []
        self.signature: tuple[int, ...] = ()

    def local(self, frame: FrameType, event: str, _arg: object) -> Callable[..., Any]:
        if event == "line":
            self.lines.append(frame.f_lineno)
        elif event == "return":
            # A helper's branch is its return line; for get_action, the set of lines it ran.
            self.signature = (frame.f_lineno,) if self.by_return else tuple(sorted(set(self.lines)))
        return self.local


class PhaseTracer:
    """Records the scripted expert's discrete decisions at each step.

    The decision state is the branch of its target function (``_desired_pos``, else
    ``get_action``) together with the branch of its gripper function (``_grab_effort``, when it
    has one): moving to a new sub-goal and closing/opening the gripper are both event joints.
    """

    def __init__(self, policy: Any) -> None:
        """Prepare traces for the policy's decision functions."""
        cls = type(policy)
        target = getattr(cls, "_desired_pos", None)
        self.traces = [
            _FunctionTrace(target, True) if target else _FunctionTrace(cls.get_action, False)
        ]
        grab = getattr(cls, "_grab_effort", None)
        if grab is not None:
            self.traces.append(_FunctionTrace(grab, True))
        self._by_code = {t.code: t for t in self.traces}

    def _global(self, frame: FrameType, event: str, _arg: object) -> Callable[..., Any] | None:
        trace = self._by_code.get(frame.f_code) if event == "call" else None
        if trace is None:
            return None
        trace.lines = []
        return trace.local

    def call(self, policy: Any, obs: np.ndarray) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
        """Run ``policy.get_action(obs)`` under the tracer; returns (action, decision state)."""
        previous = sys.gettrace()
        sys.settrace(self._global)
        try:
            action = policy.get_action(obs)
        finally:
            sys.settrace(previous)
        return np.asarray(action, dtype=np.float32), tuple(t.signature for t in self.traces)

    def name(self, state: tuple[tuple[int, ...], ...], index: int, grip_cmd: float) -> str:
        """The MetaWorld authors' comment over the target branch, plus the gripper decision."""
        target = self.traces[0]
        text = _branch_comment(target.fn, state[0][0]) if target.by_return and state[0] else None
        name = text or f"phase {index}"
        if len(self.traces) > 1:
            name += "; gripper closing" if grip_cmd > 0 else "; gripper open"
        return name


def _branch_comment(fn: Callable[..., Any], line: int) -> str | None:
    """Comment lines above a return statement or above the if/elif/else holding it."""
    lines, first = inspect.getsourcelines(fn)
    comments: list[str] = []
    i = line - first - 1
    while i >= 0:
        text = lines[i].strip()
        if text.startswith("#"):
            comments.insert(0, text.lstrip("# ").strip())
        elif not (re.match(r"(if|elif|else)\b", text) and not comments):
            break
        i -= 1
    return " ".join(comments) or None


def phase_events(signatures: list[Any]) -> list[tuple[int, Any]]:
    """Event starts from per-step branch signatures, with A-B-A one-step flicker removed."""
    labels = list(signatures)
    for t in range(1, len(labels) - 1):
        if labels[t - 1] == labels[t + 1] != labels[t]:
            labels[t] = labels[t - 1]
    return [(t, labels[t]) for t in range(len(labels)) if t == 0 or labels[t] != labels[t - 1]]


def _fast_render(env: Any) -> None:
    model = env.model
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    model.mat_reflectance[:] = 0


def make_env(task: str, seed: int, index: int, camera: str, size: int) -> Any:
    """A MetaWorld v3 env for ``task`` rendering ``camera`` at ``size`` px, fast CPU settings."""
    import metaworld

    bench = metaworld.MT1(task, seed=seed)
    env = bench.train_classes[task](
        render_mode="rgb_array", camera_name=camera, width=size, height=size
    )
    env.set_task(bench.train_tasks[index % len(bench.train_tasks)])
    _fast_render(env)
    return env


def render(env: Any, camera: str) -> np.ndarray:
    """The current frame of the named camera, upright (the corner cameras render upside down).

    The env renders the camera it was built with; any other camera of the model is rendered
    by pointing the env's renderer at it for this one frame.
    """
    import mujoco

    renderer = env.mujoco_renderer
    camera_id = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if camera_id < 0:
        raise ValueError(f"MetaWorld has no camera {camera!r}")
    previous, renderer.camera_id = renderer.camera_id, camera_id
    try:
        img = env.render()
    finally:
        renderer.camera_id = previous
    return np.ascontiguousarray(img[::-1, ::-1] if camera.startswith("corner") else img)


PROPRIO = ["hand_x", "hand_y", "hand_z", "gripper_distance"]


def state_names(state: str) -> list[str]:
    """Names of the recorded state dims: the leading entries of MetaWorld's observation.

    MetaWorld v3 observations are 39-D: hand xyz, gripper opening, two objects (xyz +
    quaternion each), the same 18 values of the previous step, and the goal xyz.
    """
    if state == "proprio":
        return list(PROPRIO)
    objects = [f"obj{i}_{c}" for i in (1, 2) for c in ("x", "y", "z", "qw", "qx", "qy", "qz")]
    current = [*PROPRIO, *objects]
    return [*current, *(f"prev_{n}" for n in current), "goal_x", "goal_y", "goal_z"]


class _Operator:
    """Pauses and swerves inside phases (not decisions): see the module docstring.

    ``log`` holds each disturbance's kind, first step and the steps it lasted; one the expert
    interrupts by deciding (its branch changes) ends there and is marked ``cut``.
    """

    def __init__(self, cfg: MetaWorldConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        self.signature: Any = None
        self.step, self.in_phase = 0, 0
        self.left = 0  # steps of the current disturbance still to run
        self.position = np.zeros(3, np.float32)  # its position command
        self.log: list[dict[str, Any]] = []
        self.disturbing = False  # whether this step's command is a pause or a swerve

    def _draw(self) -> None:
        """At six steps into a phase: maybe a pause or a swerve starting now."""
        u = self.rng.random()
        if u < self.cfg.hesitations:
            kind, self.left = "pause", int(self.rng.integers(8, 21))
            self.position = np.zeros(3, np.float32)
        elif u < self.cfg.hesitations + self.cfg.corrections:
            kind, self.left = "swerve", int(self.rng.integers(4, 9))
            direction = self.rng.normal(size=3)
            direction[2] = 0.0  # sideways: a swerve, not a new approach height
            unit = direction / max(float(np.linalg.norm(direction)), 1e-9)
            self.position = (0.15 * unit).astype(np.float32)
        else:
            return
        self.log.append({"kind": kind, "start": self.step, "steps": 0, "cut": False})

    def command(self, expert: np.ndarray, signature: Any) -> np.ndarray:
        """The operator's command this step: the expert's, or a pause / swerve in progress."""
        if signature != self.signature:  # the expert decided: a new phase
            if self.left:
                self.log[-1]["cut"] = True
            self.signature, self.in_phase, self.left = signature, 0, 0
        self.in_phase += 1
        if self.in_phase == 6:
            self._draw()
        self.step += 1
        self.disturbing = False
        if not self.left:
            return expert
        self.left -= 1
        self.log[-1]["steps"] += 1
        self.disturbing = True
        out = expert.copy()
        out[:3] = self.position
        return out


class _SmoothOperator:
    """``operator="smooth"``: the hand follows a person's reach to the expert's sub-goal.

    The sub-goal is the expert's own (``_desired_pos``; for a policy without one, where its
    proportional step points), so the decisions -- the ground truth -- stay the expert's; the
    reference re-plans smoothly when the sub-goal moves on (``sim.reach.Reacher``).
    """

    #: MetaWorld moves the hand's mocap target by ``action / 100`` per step.
    ACTION_PER_M = 100.0
    #: Feedback on the hand's lag behind the reference: the experts' own proportional gain.
    GAIN = 10.0

    def __init__(self, policy: Any, rng: np.random.Generator, fps: float) -> None:
        self.policy, self.dt = policy, 1.0 / fps
        self.pace = float(rng.uniform(0.8, 1.25))  # this operator's speed
        self.reacher: Reacher | None = None

    def _goal(self, obs: np.ndarray, expert: np.ndarray) -> np.ndarray:
        desired = getattr(self.policy, "_desired_pos", None)
        if desired is not None:
            return np.asarray(desired(self.policy._parse_obs(obs)), dtype=np.float64)
        return np.asarray(obs[:3], dtype=np.float64) + expert[:3] / self.GAIN

    def command(self, expert: np.ndarray, obs: np.ndarray, hold: bool) -> np.ndarray:
        """This step's command: the expert's gripper, the reference's motion.

        ``hold``: the reference stays where it is (the operator is pausing or swerving).
        """
        hand = np.asarray(obs[:3], dtype=np.float64)
        if self.reacher is None:
            self.reacher = Reacher(hand, self.pace)
        ref = self.reacher.position.copy()
        ref_next = ref if hold else self.reacher.step(self._goal(obs, expert), self.dt)
        out = expert.copy()
        step = self.ACTION_PER_M * (ref_next - ref) + self.GAIN * (ref - hand)
        out[:3] = np.clip(step, -1.0, 1.0)
        return out


def record_episode(task: str, index: int, cfg: MetaWorldConfig, out: Path) -> dict[str, Any]:
    """Record one episode of ``task`` with the scripted expert; returns its summary."""
    from metaworld.policies import ENV_POLICY_MAP

    # The experts' gains ask for more than the [-1, 1] the environment clips to, and MetaWorld
    # warns so at every such step (a clipped command is what the recording stores).
    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
    seed = cfg.seed * 100_003 + index
    rng = np.random.default_rng(seed)
    env = make_env(task, seed, index, cfg.cameras[0], cfg.size)
    policy = ENV_POLICY_MAP[task]()
    tracer = PhaseTracer(policy)
    obs, _info = env.reset(seed=seed)
    actions, states, signatures = [], [], []
    frames: dict[str, list[np.ndarray]] = {c: [] for c in cfg.cameras}
    success_at = None
    state_dim = len(state_names(cfg.state))
    operator = _Operator(cfg, rng)
    smooth = _SmoothOperator(policy, rng, cfg.fps) if cfg.operator == "smooth" else None
    try:
        for step in range(cfg.max_steps):
            expert, signature = tracer.call(policy, obs)
            expert = np.clip(expert, -1.0, 1.0).astype(np.float32)
            command = operator.command(expert, signature)
            if smooth is not None:  # a disturbance holds the reference where it is
                motion = smooth.command(expert, obs, operator.disturbing)
                if not operator.disturbing:
                    command[:3] = motion[:3]
            expert = command
            action = expert.copy()
            action[:3] += rng.normal(0.0, cfg.action_noise, size=3).astype(np.float32)
            action = np.clip(action, -1.0, 1.0)
            for camera, views in frames.items():
                views.append(render(env, camera))
            states.append(np.asarray(obs[:state_dim], dtype=np.float32))
            actions.append(expert if cfg.action_labels == "expert" else action)
            signatures.append(signature)
            obs, _r, _term, truncated, info = env.step(action)
            if success_at is None and info.get("success"):
                success_at = step
            if truncated:  # the task's own step limit: the next step would need a reset
                break
            if success_at is not None and step >= success_at + cfg.steps_after_success:
                break
    finally:
        env.close()
    events = phase_events(signatures)
    names: dict[Any, str] = {}
    for t, sig in events:
        names.setdefault(sig, tracer.name(sig, len(names), float(actions[t][3] - 0.0)))
    states_TS = np.stack(states)
    key = f"{task}-{cfg.seed:03d}-{index:04d}"
    write_folder_episode(
        out,
        key,
        instruction=instruction_for(task),
        fps=cfg.fps,
        actions_TA=np.stack(actions),
        frames_by_camera={c: np.stack(v) for c, v in frames.items()},
        states_TS=states_TS,
        gripper_T=states_TS[:, 3],
        robot="sawyer",
        events=[{"start_frame": t, "name": names[s]} for t, s in events],
        extra_meta={
            "task": task,
            "simulator": "metaworld",
            "success": success_at is not None,
            "success_step": success_at,
            "action_names": ["dx", "dy", "dz", "gripper"],
            "state_names": state_names(cfg.state),
            "raw_phases": [names.get(sig, str(sig)) for sig in signatures],
            "action_noise": cfg.action_noise,
            "action_labels": cfg.action_labels,
            "operator": cfg.operator,
            "disturbances": operator.log,
            "seed": seed,
        },
    )
    return {
        "key": key,
        "task": task,
        "frames": len(actions),
        "success": success_at is not None,
        "events": len(events),
    }


def record_metaworld(
    out: str | Path,
    cfg: MetaWorldConfig,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Record ``cfg.episodes`` episodes of every task in the folder format under ``out``."""
    unknown = [t for t in cfg.tasks if not _known(t)]
    if unknown:
        import difflib

        from metaworld.policies import ENV_POLICY_MAP

        hints = {t: difflib.get_close_matches(t, list(ENV_POLICY_MAP), n=1) for t in unknown}
        detail = ", ".join(
            f"{t!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for t, h in hints.items()
        )
        raise ValueError(f"unknown MetaWorld task {detail}")
    jobs = [(task, i) for task in cfg.tasks for i in range(cfg.episodes)]
    from wallwm.pipeline.sim.parallel import run_jobs

    return run_jobs(record_episode, jobs, cfg, Path(out), cfg.workers, on_episode)


def _known(task: str) -> bool:
    from metaworld.policies import ENV_POLICY_MAP

    return task in ENV_POLICY_MAP
