"""Turn ``record_panda.py``'s episodes (``.npz`` + ``.json``) into a folder source.

Runs in the project's environment. The recorder renders no camera (robosuite's offscreen
rendering costs ~150 ms a step on a CPU, 25x the physics); the segmentation suite reads only the
signals, so each episode gets a small grey video of its length (a folder episode needs one).

Usage: ``python benchmarks/robosuite_support/to_folder.py RECORDED OUT``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wallwm.pipeline.sources.folder import write_folder_episode

ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_qx", "eef_qy", "eef_qz", "eef_qw",
               "finger_left", "finger_right"]  # fmt: skip
FPS = 20.0


def convert(recorded: Path, out: Path) -> int:
    """Write every recorded episode under ``out``; returns how many."""
    count = 0
    for meta_path in sorted(recorded.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        data = np.load(meta_path.with_suffix(".npz"))
        labels = meta.pop("labels")
        events = [
            {"start_frame": t, "name": name}
            for t, name in enumerate(labels)
            if t == 0 or labels[t - 1] != name
        ]
        frames = np.full((len(labels), 32, 32, 3), 128, dtype=np.uint8)
        write_folder_episode(
            out,
            meta_path.stem,
            instruction=meta.pop("instruction"),
            fps=FPS,
            actions_TA=data["actions"],
            frames_by_camera={"blank": frames},
            states_TS=data["states"],
            gripper_T=data["gripper"],
            robot="panda",
            events=events,
            extra_meta={
                **meta,
                "simulator": "robosuite",
                "success": meta["success_step"] is not None,
                "action_names": ACTION_NAMES,
                "state_names": STATE_NAMES,
                "operator": "scripted",
            },
        )
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("recorded")
    parser.add_argument("out")
    args = parser.parse_args()
    print(convert(Path(args.recorded), Path(args.out)), "episodes")


if __name__ == "__main__":
    main()
