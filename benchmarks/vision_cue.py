"""Would the camera find the boundaries the signals miss? (issue #25, item 5: vision as a cue)

For each recording of the multi-robot suite (`benchmarks/segmentation_robots.py --root DIR`):
cut every episode with the product's chosen model, then score each frame window by how much the
*image* motion changes there -- the mean absolute grey-level difference between consecutive
frames, its mean over the 4 frames after minus the 4 before, in units of the episode's
standard deviation, the window's maximum within +/- 3 frames -- and compare three sets of
windows: true boundaries the signals found, true boundaries they missed, and windows at least
6 frames from any boundary. A cue worth fusing must rank the missed boundaries well above the
non-boundaries (AUC near 1): each cut it adds at a non-boundary costs precision.

    python benchmarks/vision_cue.py --root bench-data/robots metaworld-noise0.3 jaco-noise0.3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np
from scipy.stats import mannwhitneyu

sys.path.insert(0, str(Path(__file__).parent))
from segmentation_robots import load, product_config

from wallwm.pipeline.segmentation import segment

WINDOW = 4  # frames each side of a candidate change
TOLERANCE = 3  # the F1@3 tolerance of the segmentation benchmarks


def image_motion(video: Path, frames: int) -> np.ndarray:
    """Mean absolute grey-level difference to the previous frame, per frame (T,)."""
    with av.open(str(video)) as container:
        grey = np.stack(
            [f.to_ndarray(format="gray").astype(np.float32) for f in container.decode(video=0)]
        )[:frames]
    diff = np.abs(np.diff(grey, axis=0)).mean((1, 2))
    return np.concatenate([diff[:1], diff])


def change_score(motion_T: np.ndarray) -> np.ndarray:
    """|mean of the next WINDOW frames - mean of the previous WINDOW| / the episode's std."""
    score = np.zeros(len(motion_T))
    scale = motion_T.std() + 1e-6
    for t in range(WINDOW, len(motion_T) - WINDOW):
        after, before = motion_T[t : t + WINDOW].mean(), motion_T[t - WINDOW : t].mean()
        score[t] = abs(after - before) / scale
    return score


def windows(root: Path) -> dict[str, list[float]]:
    """The cue's score at found boundaries, missed boundaries and non-boundaries."""
    episodes = load(root)
    cfg, _ = product_config(episodes)
    out: dict[str, list[float]] = {"found": [], "missed": [], "none": []}
    for ep in episodes:
        video = sorted((root / ep["key"]).glob("*.mp4"))[0]
        n = ep["frames"]
        score = change_score(image_motion(video, n))
        cuts = segment(ep["signals"], cfg, traces=False).starts
        truth = [t for t in ep["truth"] if TOLERANCE < t < n - TOLERANCE]
        for t in truth:
            found = any(abs(c - t) <= TOLERANCE for c in cuts)
            out["found" if found else "missed"].append(float(score[t - 3 : t + 4].max()))
        truth_arr = np.array(truth or [-100])
        for t in range(2 * WINDOW, n - 2 * WINDOW, 5):
            if np.abs(truth_arr - t).min() > 2 * TOLERANCE:
                out["none"].append(float(score[t - 3 : t + 4].max()))
    return out


def main() -> None:
    """Print the table: per recording, the AUC of found and missed boundaries vs the rest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="bench-data/robots")
    parser.add_argument("recordings", nargs="+")
    args = parser.parse_args()
    print("| recording | found | missed | non-boundary windows | AUC found | AUC missed |"
          " missed / non-boundary above 1 SD |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|")
    for name in args.recordings:
        w = windows(Path(args.root) / name)
        none = np.array(w["none"])
        auc = {
            k: mannwhitneyu(w[k], none).statistic / (len(w[k]) * len(none))
            for k in ("found", "missed")
        }
        above = (np.array(w["missed"]) > 1).mean(), (none > 1).mean()
        counts = f"{len(w['found'])} | {len(w['missed'])} | {len(none)}"
        print(f"| {name} | {counts} | {auc['found']:.2f} | {auc['missed']:.2f} | "
              f"{above[0]:.0%} / {above[1]:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
