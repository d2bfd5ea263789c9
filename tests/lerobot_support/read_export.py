"""Loads a wallwm export with the `lerobot` library itself (run inside .venv-lerobot).

Usage: python read_export.py DATASET_DIR REPORT_JSON
Opens it as a ``LeRobotDataset`` with ``delta_timestamps`` on the actions, iterates a DataLoader
over every frame and writes what it saw (sizes, shapes, values to compare) as JSON.
"""

import json
import sys
from pathlib import Path

import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def main(root: Path, report: Path) -> None:
    probe = LeRobotDataset("wallwm/export", root=root)
    fps = probe.fps
    horizon = [k / fps for k in range(4)]
    ds = LeRobotDataset("wallwm/export", root=root, delta_timestamps={"action": horizon})
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False, num_workers=0)
    frames, first = 0, None
    cameras = [k for k in ds.meta.features if k.startswith("observation.images.")]
    for batch in loader:
        if first is None:
            first = {
                "action": batch["action"][0].tolist(),
                "action_is_pad": batch["action_is_pad"][0].tolist(),
                "images": {c: list(batch[c].shape[1:]) for c in cameras},
                "subtask_index": int(batch["subtask_index"][0]),
                "task": batch["task"][0],
            }
        for c in cameras:
            assert torch.isfinite(batch[c]).all() and batch[c].max() <= 1.0
        frames += len(batch["index"])
    last = ds[len(ds) - 1]
    report.write_text(
        json.dumps(
            {
                "num_episodes": ds.num_episodes,
                "num_frames": ds.num_frames,
                "iterated": frames,
                "fps": fps,
                "first": first,
                "last_action_is_pad": last["action_is_pad"].tolist(),
                "last_episode_index": int(last["episode_index"]),
            },
            default=lambda t: t.tolist(),  # tensors among the library's answers
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
