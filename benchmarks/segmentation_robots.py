"""Segmentation on robots it must carry to, with the model chosen per dataset.

Records (unless present under ``--root``) the suite of ``wallwm sim``:

- ``metaworld``: Sawyer, end-effector deltas from closed-loop scripted experts; twelve tasks
  outside MT10 (the defaults' tuning set), ``--episodes`` each;
- ``aloha``: bimanual ViperX, 16-D absolute end-effector targets from our open-loop waypoint
  experts (transfer-cube, insertion), 14 joint angles as the state;
- ``jaco``: Kinova Jaco, 9-D joint and finger velocities from our resolved-rate phase expert
  (lift, stack);
- ``aloha-joint``: the ALOHA rollouts recorded as a joint-space dataset (LeRobot's scripted
  ALOHA sim datasets): 14-D joint positions one step ahead with the gripper commands -- the
  waypoints' kinks smoothed by the arm's dynamics and curved by its kinematics;

- ``panda``: robosuite's Panda under its OSC_POSE controller -- robomimic's and LIBERO's action
  space: 7-D end-effector position and rotation deltas with a +/-1 gripper -- from our
  phase-scripted expert (lift, stack), ``2 x --episodes`` each. Held out from every tuning (it
  joined the suite on 2026-12-07, after every constant was set). robosuite pins numpy and
  mujoco versions of its own, so it records in a scratch venv (``--robosuite-python``,
  ``benchmarks/robosuite_support/README.md``); without one, a missing Panda recording is
  skipped with a line saying so;

each at action noise 0 and 0.3 and with operator-like hesitations at noise 0.3
(ALOHA: pauses and few-millimetre swerves; Jaco: pauses). MetaWorld, Jaco and ALOHA are also
recorded with a person's smooth reaching in place of the experts' controllers
(``operator="smooth"``: minimum-jerk moves to the experts' own sub-goals, re-planned when the
expert decides; ALOHA's between the waypoint plan's keyframes at their times, from rest to rest;
MetaWorld
on the eleven tasks where that operator succeeds, up to 500 steps), and so again with the
person's hesitations (pauses, and on MetaWorld sideways swerves, six steps into most phases;
no action noise). A person's commands are never exact (a hand's tremor, a leader arm's encoders):
``smooth 2% noise`` is the smooth recording with Gaussian noise of 2 % of each motion command's
spread over its episode added to the recorded commands (seeded; derived, not recorded);
``smooth 2% speed noise`` the same in RMS, each frame's share proportional to the command's
speed there (a person's motor noise grows with the movement's speed). Ground truth: each
expert's own decisions.

For every recording the product path runs as ``wallwm run`` does: the within-event model is
chosen on a spread sample of up to 24 episodes, then every episode is cut with it. Boundary F1
within 3 frames (episode ends excluded) per robot, variant and task, against the best fixed
chunk length of {4, 8, 16, 24, 32, 48}; the line in time and the state-feedback model forced
on every robot are shown beside it.

Leave-one-robot-out: the one threshold of the choice (``SWITCH_RATIO``) is picked on the other
robots' recordings from a grid and the table reports the held-out robot at that value (both
ALOHA action spaces are one robot). Likewise the noise multiple of position targets
(``POSITION_TARGET_NOISE``), on the three robots' position-target recordings: ALOHA's joints,
MetaWorld's and Jaco's rollouts as the states reached; the rates' clearance above which those
are cut on their rates (``RATES_CLEARANCE``, on the same recordings); and the smooth model's
degree (``SMOOTH_DEGREE``) on the smooth-operator recordings.

    python benchmarks/segmentation_robots.py [--root bench-data/robots] [--episodes 8]
        [--workers 2] [--size 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from wallwm.pipeline.segmentation import SegmentConfig, segment
from wallwm.pipeline.segmentation import channels as channels_module
from wallwm.pipeline.segmentation import selection as selection_module
from wallwm.pipeline.segmentation.evaluate import (
    EMPTY,
    BoundaryScore,
    match_boundaries,
    scored_frames,
)
from wallwm.pipeline.segmentation.selection import resolve
from wallwm.pipeline.segmentation.stage import record_signals, spread_sample
from wallwm.pipeline.sources.folder import FolderSource

METAWORLD_OTHER = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "coffee-push-v3", "faucet-open-v3",
    "hammer-v3", "handle-press-v3", "lever-pull-v3", "plate-slide-v3", "shelf-place-v3",
    "stick-push-v3", "sweep-into-v3",
)  # fmt: skip
#: The MetaWorld tasks (of the twelve above and MT10) where the smooth operator succeeds.
METAWORLD_SMOOTH = (
    "bin-picking-v3", "button-press-topdown-v3", "door-open-v3", "drawer-close-v3",
    "faucet-open-v3", "handle-press-v3", "lever-pull-v3", "pick-place-v3", "plate-slide-v3",
    "window-close-v3", "window-open-v3",
)  # fmt: skip
VARIANTS: dict[str, dict[str, Any]] = {
    "noise 0": {"action_noise": 0.0},
    "noise 0.3": {"action_noise": 0.3},
    "hesitations": {"action_noise": 0.3, "hesitations": 0.4, "corrections": 0.3},
    "smooth": {"action_noise": 0.0, "operator": "smooth"},
    "smooth hesitations": {
        "action_noise": 0.0,
        "operator": "smooth",
        "hesitations": 0.4,
        "corrections": 0.3,
    },
}
#: The recorders with a smooth operator.
SMOOTH_ROBOTS = ("metaworld", "jaco", "aloha")
#: Variants derived from a recording: its name, the noise added to its motion commands (a share
#: of each command's spread over its episode, in RMS), and whether the noise grows with the
#: command's speed (a person's motor noise does: Harris & Wolpert 1998) or is even.
DERIVED: dict[str, tuple[str, float, bool]] = {
    "smooth 2% noise": ("smooth", 0.02, False),
    "smooth 2% speed noise": ("smooth", 0.02, True),
}
CHUNKS = (4, 8, 16, 24, 32, 48)
ROBOTS = ("metaworld", "aloha", "jaco", "aloha-joint", "panda")
#: Robots whose simulator cannot share the project's environment: recorded by a script of
#: their own in a scratch venv (``--robosuite-python``).
EXTERNAL = ("panda",)
SUPPORT = Path(__file__).parent / "robosuite_support"
RATIOS = (0.5, 0.6, 0.75, 0.9, 1.0)
DEFAULT_TARGET_NOISE = channels_module.POSITION_TARGET_NOISE
#: Multiples of the local-fit noise variance tried for position targets (POSITION_TARGET_NOISE).
TARGET_NOISES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: Clearances of the rates over their noise tried as the threshold of cutting position targets
#: on their rates (RATES_CLEARANCE).
CLEARANCES = (5.0, 10.0, 15.4, 20.0, 30.0, 50.0, 100.0)
#: The smooth model's polynomial degrees tried (SMOOTH_DEGREE).
SMOOTH_DEGREES = (2, 3, 4, 5, 6, 7)
#: The module (the package re-exports its ``segment`` function under the same name).
segment_module: Any = importlib.import_module("wallwm.pipeline.segmentation.segment")
DEFAULT_SMOOTH_DEGREE = segment_module.SMOOTH_DEGREE


def variants(robot: str) -> list[str]:
    """The recordings made of ``robot``."""
    return [v for v in VARIANTS if not v.startswith("smooth") or robot in SMOOTH_ROBOTS]


def record(robot: str, variant: str, out: Path, args: argparse.Namespace) -> None:
    """Record one robot's recording of one variant into ``out`` (the folder format)."""
    kw: dict[str, Any] = dict(VARIANTS[variant])
    common = {"episodes": args.episodes, "size": args.size, "seed": 1, "workers": args.workers}
    if robot == "metaworld":
        from wallwm.pipeline.sim.metaworld import MetaWorldConfig, record_metaworld

        smooth = kw.get("operator") == "smooth"
        tasks = METAWORLD_SMOOTH if smooth else METAWORLD_OTHER
        cfg = MetaWorldConfig(tasks=tasks, max_steps=500 if smooth else 200, **kw, **common)
        record_metaworld(out, cfg)
    elif robot in ("aloha", "aloha-joint"):
        from wallwm.pipeline.sim.aloha import AlohaConfig, record_aloha

        space = "joint" if robot == "aloha-joint" else "ee"
        record_aloha(out, AlohaConfig(**kw, **common, action_space=space))
    else:
        from wallwm.pipeline.sim.jaco import JacoConfig, record_jaco

        kw.pop("corrections", None)
        record_jaco(out, JacoConfig(**kw, **common))


def record_external(robot: str, variant: str, out: Path, args: argparse.Namespace) -> bool:
    """Record ``robot`` with its scratch venv's Python (False: none given, nothing recorded).

    ``args.workers`` recorder processes share the episodes; their episodes are turned into a
    folder source at ``out`` in this environment.
    """
    python = args.robosuite_python
    if not python:
        return False
    kw = VARIANTS[variant]
    raw = out.with_name(out.name + "-raw")
    flags = ["--episodes", str(2 * args.episodes), "--noise", str(kw["action_noise"])]
    flags += ["--hesitations", str(kw.get("hesitations", 0.0))]
    script = str(SUPPORT / "record_panda.py")
    shards = [
        subprocess.Popen([python, script, str(raw), *flags, "--shard", f"{i}/{args.workers}"])
        for i in range(args.workers)
    ]
    if any(p.wait() != 0 for p in shards):
        raise SystemExit(f"{robot} {variant}: the recorder failed (see its output above)")
    subprocess.run([sys.executable, str(SUPPORT / "to_folder.py"), str(raw), str(out)], check=True)
    return True


def load(root: Path) -> list[dict[str, Any]]:
    """Every episode's signals, task and ground truth (no video is decoded)."""
    source = FolderSource(root)
    refs, _ = source.list_episodes()
    out = []
    for ref in refs:
        rec = source.read(ref)
        meta = json.loads((root / ref.episode_key / "meta.json").read_text())
        out.append(
            {
                "key": ref.episode_key,
                "task": meta.get("task", "-"),
                "signals": record_signals(rec),
                "frames": len(rec.actions_TA),
                "truth": [t for t, _ in rec.gt_events or []],
                "success_frame": rec.success_frame,
            }
        )
    return out


def score(
    episodes: list[dict[str, Any]], cfg: SegmentConfig, until_success: bool = False
) -> dict[str, BoundaryScore]:
    """F1 inputs per task and overall with ``cfg`` (resolved or not); ``until_success``: each
    episode scored before its first successful frame where the recorder marks one (the
    protocol of #25: decisions after the task is done are no part of the ground truth)."""
    per: dict[str, BoundaryScore] = defaultdict(lambda: EMPTY)
    for ep in episodes:
        cut = segment(ep["signals"], cfg, traces=False).starts
        end = scored_frames(ep["frames"], ep.get("success_frame"), until_success)
        per[ep["task"]] += match_boundaries(cut, ep["truth"], end, 3)
    per["overall"] = sum((v for k, v in per.items() if k != "overall"), EMPTY)
    return per


def product_config(
    episodes: list[dict[str, Any]], **stated: Any
) -> tuple[SegmentConfig, dict[str, Any]]:
    """The config ``wallwm run`` resolves for this recording (choice on a spread sample), with
    any ``stated`` options."""
    keys = spread_sample([e["key"] for e in episodes])
    sample = [e["signals"] for e in episodes if e["key"] in set(keys)]
    cfg, choice = resolve(SegmentConfig(**stated), sample)
    return cfg, choice.as_dict()


def rolled(episodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The episodes with their state columns rolled by one (the states' order unlike the
    actions': what a robot whose vectors list other quantities first looks like)."""
    out = []
    for ep in episodes:
        s = ep["signals"]
        states = None if s.states_TS is None else np.roll(s.states_TS, 1, axis=1)
        out.append({**ep, "signals": dataclasses.replace(s, states_TS=states)})
    return out


def as_position_targets(episodes: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The episodes recorded as position targets: each motion action dim replaced by the state
    it is paired with (by index), one step ahead -- what a dataset whose actions are the
    positions the arm reached holds. None where the actions already are (aloha-joint) or have
    no same-index state (ALOHA's end-effector targets)."""
    out = []
    for ep in episodes:
        s = ep["signals"]
        actions = np.asarray(s.actions_TA, dtype=np.float64).copy()
        states = np.asarray(s.states_TS, dtype=np.float64)
        motion = [j for j in range(actions.shape[1]) if j not in s.gripper_action_dims]
        if actions.shape[1] > states.shape[1] or np.allclose(
            actions[:-1, motion], states[1:, motion]
        ):
            return None
        ahead = np.concatenate([states[1:], states[-1:]])
        actions[:, motion] = ahead[:, motion]
        out.append({**ep, "signals": dataclasses.replace(s, actions_TA=actions)})
    return out


def with_command_noise(
    episodes: list[dict[str, Any]], share: float, seed: int = 0, with_speed: bool = False
) -> list[dict[str, Any]]:
    """The episodes with Gaussian noise of ``share`` of each motion command's spread over its
    episode added to the commands (gripper commands stay exact); ``with_speed``: each frame's
    noise proportional to the command's speed there, ``share`` in RMS over the episode."""
    rng = np.random.default_rng(seed)
    out = []
    for ep in episodes:
        s = ep["signals"]
        actions = np.asarray(s.actions_TA, dtype=np.float64).copy()
        for j in range(actions.shape[1]):
            if j not in s.gripper_action_dims:
                profile = np.ones(len(actions))
                if with_speed:
                    speed = np.abs(np.gradient(actions[:, j])) if len(actions) > 1 else profile
                    rms = float(np.sqrt(np.mean(speed**2)))
                    profile = speed / rms if rms > 0 else np.zeros(len(actions))
                noise = rng.normal(0.0, share * actions[:, j].std(), len(actions))
                actions[:, j] += noise * profile
        out.append({**ep, "signals": dataclasses.replace(s, actions_TA=actions)})
    return out


def fixed_best(episodes: list[dict[str, Any]]) -> tuple[int, BoundaryScore]:
    """The chunk length with the best F1@3 and its score."""
    best: tuple[int, BoundaryScore] | None = None
    for h in CHUNKS:
        s = sum(
            (match_boundaries(range(0, e["frames"], h), e["truth"], e["frames"], 3)
             for e in episodes),
            EMPTY,
        )  # fmt: skip
        if best is None or s.f1 > best[1].f1:
            best = (h, s)
    assert best is not None
    return best


def leave_one_robot_out(data: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    """Per held-out robot: the ratio picked on the other two and the held-out F1 at it."""
    f1: dict[float, dict[tuple[str, str], float]] = {}
    for ratio in RATIOS:
        selection_module.SWITCH_RATIO = ratio
        f1[ratio] = {k: score(eps, product_config(eps)[0])["overall"].f1 for k, eps in data.items()}
    selection_module.SWITCH_RATIO = 0.75

    def body(robot: str) -> str:
        return robot.split("-", maxsplit=1)[0]  # aloha-joint is aloha: the same arms

    out: dict[str, Any] = {}
    for held in sorted({body(r) for r, _ in data}):
        train = [k for k in data if body(k[0]) != held]
        best = max(RATIOS, key=lambda r: (statistics.mean(f1[r][k] for k in train), -abs(r - 0.75)))
        out[held] = {
            "ratio": best,
            "held_out_f1": {f"{r} {v}": f1[best][(r, v)] for r, v in data if body(r) == held},
        }
    return out


def target_recordings(
    data: dict[tuple[str, str], list[dict[str, Any]]],
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The three robots' position-target recordings by (robot body, variant): aloha-joint, and
    MetaWorld's and Jaco's rollouts as the states reached."""
    targets = {}
    for (robot, variant), eps in data.items():
        if variant in DERIVED:  # the same states as the recording it derives from
            continue
        # aloha-joint already is one; ALOHA's end-effector targets have no same-index state (None)
        pt = eps if robot == "aloha-joint" else as_position_targets(eps)
        if pt is not None:
            targets[(robot.split("-", maxsplit=1)[0], variant)] = pt
    return targets


def rates_clearance_loro(
    targets: dict[tuple[str, str], list[dict[str, Any]]],
) -> dict[str, Any]:
    """Per held-out robot: the rates' clearance above which position targets are cut on their
    rates (RATES_CLEARANCE), picked on the other two robots' position-target recordings from
    :data:`CLEARANCES` (their mean F1; ties to the middle of the tied range), and the held-out
    recordings' form and F1 at it."""
    measured = {}
    for key, eps in targets.items():
        choice = product_config(eps)[1]
        f1 = {
            form: score(eps, product_config(eps, action_form=form)[0])["overall"].f1
            for form in ("values", "rates")
        }
        measured[key] = (choice["rates_clearance"], f1)

    def f1_at(key: tuple[str, str], threshold: float) -> float:
        clearance, f1 = measured[key]
        rates = clearance is not None and clearance >= threshold
        return f1["rates" if rates else "values"]

    out: dict[str, Any] = {"recordings": {f"{r} {v}": m for (r, v), m in measured.items()}}
    for held in sorted({r for r, _ in targets}):
        train = [key for key in targets if key[0] != held]
        means = {c: statistics.mean(f1_at(key, c) for key in train) for c in CLEARANCES}
        tied = [c for c in CLEARANCES if means[c] >= max(means.values()) - 1e-9]
        best = tied[len(tied) // 2]
        out[held] = {
            "clearance": best,
            "held_out_f1": {v: f1_at((r, v), best) for r, v in targets if r == held},
        }
    return out


def position_targets_loro(
    targets: dict[tuple[str, str], list[dict[str, Any]]],
) -> dict[str, Any]:
    """Per held-out robot: the position-target noise multiple picked on the other two robots'
    position-target recordings (:func:`target_recordings`)."""
    # the model choice does not read the multiple (it compares models at the local misfit)
    cfgs = {key: product_config(eps)[0] for key, eps in targets.items()}
    f1: dict[float, dict[tuple[str, str], float]] = {}
    for k in TARGET_NOISES:
        channels_module.POSITION_TARGET_NOISE = k
        f1[k] = {key: score(eps, cfgs[key])["overall"].f1 for key, eps in targets.items()}
    channels_module.POSITION_TARGET_NOISE = DEFAULT_TARGET_NOISE
    out: dict[str, Any] = {}
    for held in sorted({r for r, _ in targets}):
        train = [key for key in targets if key[0] != held]
        if not train:
            continue
        best = max(TARGET_NOISES, key=lambda k: statistics.mean(f1[k][key] for key in train))
        out[held] = {
            "noise": best,
            "held_out_f1": {v: f1[best][(r, v)] for r, v in targets if r == held},
            "held_out_f1_by_noise": {
                str(k): {v: f1[k][(r, v)] for r, v in targets if r == held} for k in TARGET_NOISES
            },
        }
    return out


def smooth_degree_loro(data: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    """Per held-out robot: the smooth model's degree picked on the other robots'
    smooth-operator recordings (their mean F1), and the held-out F1 at it (the product path)."""
    smooth = {robot: eps for (robot, variant), eps in data.items() if variant == "smooth"}
    f1: dict[int, dict[str, float]] = {}
    for degree in SMOOTH_DEGREES:
        segment_module.SMOOTH_DEGREE = degree  # the choice and the cut both read it
        f1[degree] = {
            r: score(eps, product_config(eps)[0])["overall"].f1 for r, eps in smooth.items()
        }
    segment_module.SMOOTH_DEGREE = DEFAULT_SMOOTH_DEGREE
    out: dict[str, Any] = {}
    for held in sorted(smooth):
        train = [r for r in smooth if r != held]
        if not train:
            continue
        best = max(SMOOTH_DEGREES, key=lambda d: statistics.mean(f1[d][r] for r in train))
        out[held] = {
            "degree": best,
            "held_out_f1": f1[best][held],
            "f1_by_degree": {str(d): f1[d][held] for d in SMOOTH_DEGREES},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="bench-data/robots")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--robots", nargs="+", default=list(ROBOTS), choices=ROBOTS)
    parser.add_argument("--no-loro", action="store_true", help="Skip leave-one-robot-out.")
    parser.add_argument(
        "--robosuite-python",
        default=os.environ.get("WALLWM_ROBOSUITE_PYTHON"),
        help="Python of a scratch venv with robosuite, to record the Panda "
        "(benchmarks/robosuite_support/README.md)",
    )
    args = parser.parse_args()
    root = Path(args.root)
    data = {}
    for robot in args.robots:
        for variant in variants(robot):
            out = root / f"{robot}-{variant.replace(' ', '')}"
            if not (out / ".complete").exists():
                t = time.perf_counter()
                if robot not in EXTERNAL:
                    record(robot, variant, out, args)
                elif not record_external(robot, variant, out, args):
                    print(f"{robot} {variant}: not recorded -- it needs --robosuite-python "
                          f"(see {SUPPORT / 'README.md'}); skipped")  # fmt: skip
                    continue
                (out / ".complete").write_text(f"{time.perf_counter() - t:.0f} s\n")
            data[(robot, variant)] = load(out)
        for name, (variant, share, with_speed) in DERIVED.items():
            if (robot, variant) in data:
                data[(robot, name)] = with_command_noise(
                    data[(robot, variant)], share, with_speed=with_speed
                )
    rows: list[dict[str, Any]] = []
    print("| robot | recording | episodes | chosen model | wallwm (chosen) | P / R | "
          "line in time | state feedback | best fixed | vs fixed | states rolled: chosen / "
          "by index | as position targets: chosen / best fixed |")  # fmt: skip
    print("|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for (robot, variant), eps in data.items():
        cfg, choice = product_config(eps)
        ours = score(eps, cfg)
        until = score(eps, cfg, until_success=True)["overall"]
        time_f1 = score(eps, SegmentConfig(action_model="time"))["overall"].f1
        sf_f1 = score(eps, SegmentConfig(action_model="state_feedback"))["overall"].f1
        h, fixed = fixed_best(eps)
        o = ours["overall"]
        mixed = rolled(eps)
        rolled_cfg, _ = product_config(mixed)
        rolled_f1 = score(mixed, rolled_cfg)["overall"].f1
        index_f1 = score(mixed, rolled_cfg.model_copy(update={"state_pairing": "index"}))
        rolled_index_f1 = index_f1["overall"].f1
        # a derived recording's noise is on its commands, which its position targets replace
        targets = None if variant in DERIVED else as_position_targets(eps)
        target_f1 = target_fixed = None
        if targets is not None:
            target_f1 = score(targets, product_config(targets)[0])["overall"].f1
            target_fixed = fixed_best(targets)[1].f1
        rows.append({"robot": robot, "variant": variant, "choice": choice,
                     "f1": o.f1, "precision": o.precision, "recall": o.recall,
                     "until_success": {"f1": until.f1, "precision": until.precision,
                                       "recall": until.recall,
                                       "episodes": sum(e.get("success_frame") is not None
                                                       for e in eps)},
                     "per_task": {k: v.f1 for k, v in ours.items()},
                     "time_f1": time_f1, "state_feedback_f1": sf_f1,
                     "fixed": {"chunk": h, "f1": fixed.f1},
                     "rolled_f1": rolled_f1, "rolled_index_f1": rolled_index_f1,
                     "position_targets_f1": target_f1,
                     "position_targets_fixed_f1": target_fixed})  # fmt: skip
        print(f"| {robot} | {variant} | {len(eps)} | {cfg.action_model} | **{o.f1:.3f}** | "
              f"{o.precision:.2f} / {o.recall:.2f} | {time_f1:.3f} | {sf_f1:.3f} | "
              f"{fixed.f1:.3f} (H={h}) | {o.f1 - fixed.f1:+.3f} | {rolled_f1:.3f} / "
              f"{rolled_index_f1:.3f} | "
              + ("-" if target_f1 is None else f"{target_f1:.3f} / {target_fixed:.3f}")
              + " |", flush=True)  # fmt: skip
    print("\nbefore the first success (each episode up to the frame its recorder marks the "
          "task done, where it marks one):")  # fmt: skip
    print("| robot | recording | episodes with a success frame | whole episodes | "
          "before the first success (P / R) |")  # fmt: skip
    print("|---|---|---:|---:|---:|")
    for r in rows:
        u = r["until_success"]
        print(f"| {r['robot']} | {r['variant']} | {u['episodes']} | {r['f1']:.3f} | "
              f"**{u['f1']:.3f}** ({u['precision']:.2f} / {u['recall']:.2f}) |")  # fmt: skip
    print("\nper task (chosen model):")
    for r in rows:
        tasks = ", ".join(f"{k} {v:.2f}" for k, v in r["per_task"].items() if k != "overall")
        print(f"- {r['robot']} / {r['variant']}: {tasks}")
    loro = {} if args.no_loro else leave_one_robot_out(data)
    print("\nleave-one-robot-out (SWITCH_RATIO picked on the other two robots):")
    for robot, v in loro.items():
        held = ", ".join(f"{k} {f:.3f}" for k, f in v["held_out_f1"].items())
        print(f"- {robot}: ratio {v['ratio']} -> {held}")
    recorded_targets = {} if args.no_loro else target_recordings(data)
    targets_loro = position_targets_loro(recorded_targets) if recorded_targets else {}
    print("\nleave-one-robot-out, position targets (noise multiple picked on the other two):")
    for robot, v in targets_loro.items():
        held = ", ".join(f"{k} {f:.3f}" for k, f in v["held_out_f1"].items())
        print(f"- {robot}: x{v['noise']:g} -> {held}")
    clearance_loro = rates_clearance_loro(recorded_targets) if recorded_targets else {}
    print("\nposition targets, values vs rates (the rates' clearance over their noise):")
    for key, (clearance, f1) in clearance_loro.get("recordings", {}).items():
        print(f"- {key}: clearance {clearance}, values {f1['values']:.3f}, "
              f"rates {f1['rates']:.3f}")  # fmt: skip
    print("leave-one-robot-out (the clearance threshold picked on the other two):")
    for robot, v in clearance_loro.items():
        if robot != "recordings":
            held = ", ".join(f"{k} {f:.3f}" for k, f in v["held_out_f1"].items())
            print(f"- {robot}: {v['clearance']:g} -> {held}")
    degree_loro = {} if args.no_loro else smooth_degree_loro(data)
    print(
        "\nleave-one-robot-out, smooth operators (the smooth model's degree picked on the other):"
    )
    for robot, v in degree_loro.items():
        by = ", ".join(f"{d}: {f:.3f}" for d, f in v["f1_by_degree"].items())
        print(f"- {robot}: degree {v['degree']} -> {v['held_out_f1']:.3f} (by degree {by})")
    if args.json:
        results = {"rows": rows, "loro": loro, "position_targets_loro": targets_loro,
                   "rates_clearance_loro": clearance_loro,
                   "smooth_degree_loro": degree_loro}  # fmt: skip
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
