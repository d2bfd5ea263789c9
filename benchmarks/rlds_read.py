"""Reading RLDS without TensorFlow: wallwm's reader against TensorFlow Datasets' own.

One dataset in the shape most Open X-Embodiment conversions take (the RLDS dataset-builder
template: a JPEG ``image`` and a JPEG ``wrist_image`` per step, an 8-D state, a 7-D action, a
language instruction and embedding), written by TensorFlow Datasets itself, is read whole --
every step's action and state and every frame decoded to RGB -- by:

- ``tfds`` (the baseline): ``builder_from_directory(...).as_dataset()`` iterated with
  ``tfds.as_numpy`` (TensorFlow decodes the JPEGs inside its input pipeline, on its own threads);
- ``wallwm reader``: ``RldsSource`` -- the TFRecord framing and ``tf.train.Example`` decoded in
  Python, the JPEGs by OpenCV -- in one process, as one ingest worker reads an episode;
- ``wallwm ingest``: the product path, ``wallwm ingest`` with its embedded Ray (two workers on
  two cores; cold: Ray starts inside the run), which also validates and writes the episodes.

The ratio is frames per second against the baseline's. TensorFlow is no dependency of wallwm:
``--tf-python`` names a Python that has ``tensorflow-cpu`` and ``tensorflow-datasets``
(``python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu
tensorflow-datasets``); it writes the data and runs the baseline in a child process.
Usage: ``python benchmarks/rlds_read.py --tf-python /tmp/tfvenv/bin/python [--episodes 40]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

WRITE = r"""
import sys, numpy as np, tensorflow_datasets as tfds
out, episodes, steps, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
img = tfds.features.Image(shape=(size, size, 3), dtype=np.uint8, encoding_format="jpeg")

class BenchRlds(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    def _info(self):
        step = {"observation": {"image": img, "wrist_image": img,
                                "state": tfds.features.Tensor(shape=(8,), dtype=np.float32)},
                "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
                "is_first": tfds.features.Scalar(dtype=np.bool_),
                "language_instruction": tfds.features.Text(),
                "language_embedding": tfds.features.Tensor(shape=(512,), dtype=np.float32)}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"steps": tfds.features.Dataset(step)}))
    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}
    def _generate_examples(self):
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:size, 0:size]
        for e in range(episodes):
            steps_ = []
            for t in range(steps):
                frame = np.stack([xx * 2 + t, yy * 2, (xx + yy + 3 * e) % 256], -1)
                frame = (frame + rng.normal(0, 6, frame.shape)).clip(0, 255).astype(np.uint8)
                steps_.append({"observation": {"image": frame, "wrist_image": frame[::-1],
                                               "state": rng.normal(size=8).astype(np.float32)},
                               "action": rng.normal(size=7).astype(np.float32),
                               "is_first": t == 0, "language_instruction": "pick up the cup",
                               "language_embedding": np.zeros(512, np.float32)})
            yield f"e{e}", {"steps": steps_}

BenchRlds(data_dir=out).download_and_prepare()
"""

READ = r"""
import sys, time, json, tensorflow_datasets as tfds
builder = tfds.builder_from_directory(sys.argv[1])
t0 = time.perf_counter()
frames = steps = 0
for episode in tfds.as_numpy(builder.as_dataset(split="train")):
    for step in episode["steps"]:
        steps += 1
        for cam in ("image", "wrist_image"):
            frames += int(step["observation"][cam].shape[0] > 0)
print(json.dumps({"seconds": time.perf_counter() - t0, "frames": frames, "steps": steps}))
"""


def tfds_read(tf_python: str, version_dir: Path) -> dict[str, float]:
    """TensorFlow Datasets reading every episode (a child process of ``tf_python``)."""
    out = subprocess.run(
        [tf_python, "-c", READ, str(version_dir)], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def wallwm_read(version_dir: Path) -> dict[str, float]:
    """wallwm's reader: every episode's signals and every frame, in this process."""
    from wallwm.pipeline.image_frames import stored_frames
    from wallwm.pipeline.sources.rlds import RldsSource

    t0 = time.perf_counter()
    source = RldsSource(version_dir, fps=10.0)
    refs, _ = source.list_episodes()
    frames = steps = 0
    for ref in refs:
        record = source.read(ref)
        steps += len(record.actions_TA)
        for camera in record.cameras:
            frames += sum(1 for _ in stored_frames(camera.uri) or ())
    return {"seconds": time.perf_counter() - t0, "frames": frames, "steps": steps}


def wallwm_ingest(version_dir: Path, dataset: Path) -> dict[str, float]:
    """``wallwm ingest`` (embedded Ray, cold), validating every frame and writing the rows."""
    from wallwm.pipeline.ingest import IngestConfig, run_ingest

    t0 = time.perf_counter()
    report = run_ingest(
        IngestConfig(source=str(version_dir), dataset=str(dataset), fps=10.0, instruction="x")
    )
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "frames": report.video_frames, "steps": report.frames}


def main() -> None:
    """Write the dataset with TFDS, read it three ways, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf-python", required=True, help="A Python with TensorFlow Datasets.")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wallwm-rlds-bench-"))
    try:
        cmd = [args.tf_python, "-c", WRITE, str(root)]
        subprocess.run([*cmd, str(args.episodes), str(args.steps), str(args.size)],
                       check=True, capture_output=True)  # fmt: skip
        version_dir = root / "bench_rlds" / "1.0.0"
        rows = {
            "tfds (baseline)": tfds_read(args.tf_python, version_dir),
            "wallwm reader (1 proc)": wallwm_read(version_dir),
            "wallwm ingest (cold, 2 workers)": wallwm_ingest(version_dir, root / "ds"),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = rows["tfds (baseline)"]
    table = Table(title=f"RLDS: {args.episodes} episodes x {args.steps} steps x 2 JPEG cameras "
                  f"({args.size} px)")  # fmt: skip
    for col in ("path", "seconds", "frames/s", "vs tfds"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for name, row in rows.items():
        fps = row["frames"] / row["seconds"]
        ratio = fps / (base["frames"] / base["seconds"])
        table.add_row(name, f"{row['seconds']:.2f}", f"{fps:,.0f}", f"{ratio:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
