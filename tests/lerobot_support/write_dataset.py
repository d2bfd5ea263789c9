"""Writes a small dataset with the `lerobot` library itself (run inside .venv-lerobot).

Usage: python write_dataset.py OUT_DIR MANIFEST_JSON [so100|aloha|so100-images]
With lerobot 0.4 it writes format v3.0; with lerobot 0.3 (on PYTHONPATH) format v2.1.
so100: two cameras of different sizes, SO-100 joint names (gripper last); aloha: a bimanual
robot, 14-D actions (two arms, two grippers that close at different times), three cameras;
so100-images: so100 with its cameras as ``image`` features (frames in the data parquet, no
videos).
Three episodes of different lengths and two tasks; the manifest records what was written so
the test can compare.
"""

import inspect
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
ALOHA = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
ROBOTS = {
    "so100": {
        "names": [f"{j}.pos" for j in JOINTS],
        "cameras": {"front": (64, 64), "wrist": (48, 64)},
        "type": "so100_follower",
    },
    "aloha": {
        "names": [f"{side}_{j}" for side in ("left", "right") for j in ALOHA],
        "cameras": {"cam_high": (48, 64), "cam_left_wrist": (48, 64), "cam_right_wrist": (48, 64)},
        "type": "aloha",
    },
}


def _action(names: list[str], t: int, length: int) -> np.ndarray:
    """Smooth joints; each gripper closes at its own time (left at 1/3, right at 2/3)."""
    action = np.sin(np.arange(len(names)) + t / 6.0)
    for j, name in enumerate(names):
        if "gripper" in name:
            fraction = {"left": 1 / 3, "right": 2 / 3}.get(name.split("_")[0], 1 / 2)
            action[j] = 1.0 if t > int(length * fraction) else 0.0
    return action.astype(np.float32)


def picture(t: int, k: int, h: int, w: int) -> np.ndarray:
    """Camera k's frame t: a grey level that changes per frame, and a white block that moves."""
    image = np.full((h, w, 3), (t * 7 + 40 * k) % 255, np.uint8)
    image[10:20, t % (w - 4) : t % (w - 4) + 4] = 255
    return image


def main(out: Path, manifest: Path, robot: str = "so100") -> None:
    shutil.rmtree(out, ignore_errors=True)
    images = robot.endswith("-images")
    spec = ROBOTS[robot.removesuffix("-images")]
    names = spec["names"]
    features = {
        f"observation.images.{cam}": {
            "dtype": "image" if images else "video",
            "shape": (h, w, 3),
            "names": ["height", "width", "channels"],
        }
        for cam, (h, w) in spec["cameras"].items()
    }
    features["observation.state"] = {"dtype": "float32", "shape": (len(names),), "names": names}
    features["action"] = {"dtype": "float32", "shape": (len(names),), "names": names}
    ds = LeRobotDataset.create(
        repo_id="wallwm/lerobot-written",
        fps=15,
        root=out,
        robot_type=spec["type"],
        features=features,
        use_videos=not images,
        image_writer_threads=2,
    )
    rng = np.random.default_rng(0)
    episodes = []
    for length, task in [(30, "pick the cube"), (45, "place the cube"), (38, "pick the cube")]:
        actions = []
        for t in range(length):
            action = _action(names, t, length)
            actions.append(action.tolist())
            frame = {
                "observation.state": (action + rng.normal(0, 0.01, len(names))).astype(np.float32),
                "action": action,
                "task": task,
            }
            for k, (cam, (h, w)) in enumerate(spec["cameras"].items()):
                frame[f"observation.images.{cam}"] = picture(t, k, h, w)
            if "task" in inspect.signature(ds.add_frame).parameters:  # lerobot < 0.4 (v2.1)
                ds.add_frame(frame, task=frame.pop("task"))
            else:
                ds.add_frame(frame)
        ds.save_episode()
        episodes.append({"length": length, "task": task, "actions": actions})
    if hasattr(ds, "finalize"):
        ds.finalize()
    manifest.write_text(
        json.dumps(
            {
                "fps": 15,
                "episodes": episodes,
                "names": names,
                "cameras": spec["cameras"],
                "images": images,
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:])
