"""Writes a small dataset with the `lerobot` library itself (run inside .venv-lerobot).

Usage: python write_dataset.py OUT_DIR MANIFEST_JSON
Two cameras of different sizes, SO-100-style joint names (gripper last), three episodes of
different lengths and two tasks; the manifest records what was written so the test can compare.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
NAMES = [f"{j}.pos" for j in JOINTS]


def main(out: Path, manifest: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    features = {
        "observation.images.front": {
            "dtype": "video",
            "shape": (64, 64, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.images.wrist": {
            "dtype": "video",
            "shape": (48, 64, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.state": {"dtype": "float32", "shape": (6,), "names": NAMES},
        "action": {"dtype": "float32", "shape": (6,), "names": NAMES},
    }
    ds = LeRobotDataset.create(
        repo_id="wallwm/lerobot-written",
        fps=15,
        root=out,
        robot_type="so100_follower",
        features=features,
        use_videos=True,
        image_writer_threads=2,
    )
    rng = np.random.default_rng(0)
    episodes = []
    for ep, (length, task) in enumerate(
        [(30, "pick the cube"), (45, "place the cube"), (38, "pick the cube")]
    ):
        actions = []
        for t in range(length):
            image = np.full((64, 64, 3), (t * 7) % 255, np.uint8)
            image[10:20, t % 60 : t % 60 + 4] = 255
            grip = 1.0 if t > length // 2 else 0.0  # close the gripper half-way: an event joint
            action = np.append(np.sin(np.arange(5) + t / 6.0), grip).astype(np.float32)
            actions.append(action.tolist())
            ds.add_frame(
                {
                    "observation.images.front": image,
                    "observation.images.wrist": np.full((48, 64, 3), 90 + ep, np.uint8),
                    "observation.state": (action + rng.normal(0, 0.01, 6)).astype(np.float32),
                    "action": action,
                    "task": task,
                }
            )
        ds.save_episode()
        episodes.append({"length": length, "task": task, "actions": actions})
    if hasattr(ds, "finalize"):
        ds.finalize()
    manifest.write_text(json.dumps({"fps": 15, "episodes": episodes}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
