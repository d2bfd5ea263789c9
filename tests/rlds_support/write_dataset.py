"""Write the RLDS fixtures of ``tests/data/rlds`` with TensorFlow Datasets itself.

Run in a scratch environment with ``tensorflow-cpu`` and ``tensorflow-datasets`` (neither is a
dependency of wallwm, and the tests do not run this: they read its committed output)::

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu tensorflow-datasets
    /tmp/tfvenv/bin/python tests/rlds_support/write_dataset.py tests/data/rlds

Two datasets in the two shapes Open X-Embodiment's datasets take:

- ``oxe_template`` -- the RLDS dataset-builder template most OXE conversions follow: one
  ``action`` tensor, ``observation/state``, a JPEG ``image`` and a PNG ``wrist_image``,
  ``language_instruction`` per step, a language embedding, ``episode_metadata/file_path``;
- ``rt1_style`` -- RT-1 / fractal's form: ``action`` a dict of tensors (``world_vector``,
  ``rotation_delta``, ``gripper_closedness_action``, an int32 ``terminate_episode``), the
  instruction inside ``observation`` (``natural_language_instruction``), float64 proprio (one
  tensor stored zlib-compressed).

Beside each dataset, ``expected.npz`` holds what ``tfds`` itself reads back (``as_numpy``):
every episode's flattened action and state, and the first episode's frames decoded by
TensorFlow.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SIZE = 40
EPISODES = 3


def episode_signals(seed: int) -> dict[str, np.ndarray]:
    """One episode: piecewise-constant end-effector velocities (4 phases), their integral."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, 10, size=4)
    vel = np.concatenate([np.tile(rng.normal(0, 0.05, 3), (n, 1)) for n in lengths])
    grip = np.concatenate([np.full(n, float(i >= 2)) for i, n in enumerate(lengths)])
    pos = np.cumsum(vel, axis=0) + rng.normal(0, 0.2, 3)
    return {"vel": vel.astype(np.float32), "grip": grip.astype(np.float32), "pos": pos}


def frame(pos: np.ndarray, t: int, tint: int) -> np.ndarray:
    """A smooth picture (a gradient with a square where the hand is): compresses small."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    img = np.stack([xx * 5 + tint, yy * 5, np.full_like(xx, 40 + 4 * t)], axis=-1)
    cx, cy = (np.clip(pos[:2] * 40 + SIZE / 2, 4, SIZE - 5)).astype(int)
    img[cy - 3 : cy + 3, cx - 3 : cx + 3] = (250, 250, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


def _stacked(steps: list) -> dict | np.ndarray:
    """Per-step values (arrays, or dicts of arrays) stacked over the steps."""
    if isinstance(steps[0], dict):
        return {k: np.stack([s[k] for s in steps]) for k in steps[0]}
    return np.stack(steps)


def main(out: Path) -> None:
    import tensorflow_datasets as tfds

    image = tfds.features.Image(shape=(SIZE, SIZE, 3), dtype=np.uint8, encoding_format="jpeg")
    png = tfds.features.Image(shape=(SIZE, SIZE, 3), dtype=np.uint8, encoding_format="png")
    f32 = np.float32

    class OxeTemplate(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            step = {
                "observation": {
                    "image": image,
                    "wrist_image": png,
                    "state": tfds.features.Tensor(shape=(4,), dtype=f32),
                },
                "action": tfds.features.Tensor(shape=(4,), dtype=f32),
                "discount": tfds.features.Scalar(dtype=f32),
                "reward": tfds.features.Scalar(dtype=f32),
                "is_first": tfds.features.Scalar(dtype=np.bool_),
                "is_last": tfds.features.Scalar(dtype=np.bool_),
                "is_terminal": tfds.features.Scalar(dtype=np.bool_),
                "language_instruction": tfds.features.Text(),
                "language_embedding": tfds.features.Tensor(shape=(16,), dtype=f32),
            }
            features = {
                "steps": tfds.features.Dataset(step),
                "episode_metadata": {"file_path": tfds.features.Text()},
            }
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(range(EPISODES))}

        def _generate_examples(self, seeds):
            for seed in seeds:
                s = episode_signals(seed)
                n = len(s["vel"])
                steps = [
                    {
                        "observation": {
                            "image": frame(s["pos"][t], t, 0),
                            "wrist_image": frame(s["pos"][t], t, 90),
                            "state": np.append(s["pos"][t], s["grip"][t]).astype(f32),
                        },
                        "action": np.append(s["vel"][t], s["grip"][t]).astype(f32),
                        "discount": 1.0,
                        "reward": float(t == n - 1),
                        "is_first": t == 0,
                        "is_last": t == n - 1,
                        "is_terminal": t == n - 1,
                        "language_instruction": f"put the block in bin {seed}",
                        "language_embedding": np.full(16, seed, dtype=f32),
                    }
                    for t in range(n)
                ]
                yield (
                    f"episode_{seed}",
                    {
                        "steps": steps,
                        "episode_metadata": {"file_path": f"/data/raw/episode_{seed}.npy"},
                    },
                )

    class Rt1Style(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("0.1.0")

        def _info(self):
            step = {
                "observation": {
                    "image": image,
                    "natural_language_instruction": tfds.features.Text(),
                    "natural_language_embedding": tfds.features.Tensor(shape=(16,), dtype=f32),
                    "base_pose_tool_reached": tfds.features.Tensor(shape=(3,), dtype=np.float64),
                    # a tensor stored compressed (TFDS ``encoding="zlib"``): one blob per step
                    "base_orientation": tfds.features.Tensor(
                        shape=(2,), dtype=np.float64, encoding="zlib"
                    ),
                    "gripper_closed": tfds.features.Tensor(shape=(1,), dtype=f32),
                },
                "action": {
                    "world_vector": tfds.features.Tensor(shape=(3,), dtype=f32),
                    "rotation_delta": tfds.features.Tensor(shape=(3,), dtype=f32),
                    "gripper_closedness_action": tfds.features.Tensor(shape=(1,), dtype=f32),
                    "terminate_episode": tfds.features.Tensor(shape=(3,), dtype=np.int32),
                },
                "reward": tfds.features.Scalar(dtype=f32),
                "is_first": tfds.features.Scalar(dtype=np.bool_),
                "is_last": tfds.features.Scalar(dtype=np.bool_),
                "is_terminal": tfds.features.Scalar(dtype=np.bool_),
            }
            features = {"steps": tfds.features.Dataset(step)}
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(range(EPISODES))}

        def _generate_examples(self, seeds):
            for seed in seeds:
                s = episode_signals(seed + 10)
                n = len(s["vel"])
                steps = [
                    {
                        "observation": {
                            "image": frame(s["pos"][t], t, 40),
                            "natural_language_instruction": "pick the apple",
                            "natural_language_embedding": np.zeros(16, dtype=f32),
                            "base_pose_tool_reached": s["pos"][t],
                            "base_orientation": np.array([np.cos(t / 9), np.sin(t / 9)]),
                            "gripper_closed": s["grip"][t : t + 1],
                        },
                        "action": {
                            "world_vector": s["vel"][t],
                            "rotation_delta": np.zeros(3, dtype=f32),
                            "gripper_closedness_action": s["grip"][t : t + 1],
                            "terminate_episode": np.array(
                                [0, 1, 0] if t < n - 1 else [1, 0, 0], dtype=np.int32
                            ),
                        },
                        "reward": float(t == n - 1),
                        "is_first": t == 0,
                        "is_last": t == n - 1,
                        "is_terminal": t == n - 1,
                    }
                    for t in range(n)
                ]
                yield f"episode_{seed}", {"steps": steps}

    for builder_class, action_of, state_of, cameras in (
        (OxeTemplate, lambda a: a, lambda o: o["state"], ("image", "wrist_image")),
        (
            Rt1Style,
            lambda a: np.concatenate([a[k].astype(np.float32) for k in sorted(a)], axis=1),
            lambda o: np.concatenate(
                [
                    o[k].astype(np.float32)
                    for k in ("base_orientation", "base_pose_tool_reached", "gripper_closed")
                ],
                axis=1,
            ),
            ("image",),
        ),
    ):
        builder = builder_class(data_dir=str(out))
        builder.download_and_prepare()
        expected: dict[str, np.ndarray] = {}
        # what tfds itself reads back, in the order the shards hold the episodes
        for i, episode in enumerate(tfds.as_numpy(builder.as_dataset(split="train"))):
            steps = list(episode["steps"])
            expected[f"{i}/action"] = action_of(_stacked([s["action"] for s in steps]))
            obs = _stacked([s["observation"] for s in steps])
            expected[f"{i}/state"] = state_of(obs)
            for cam in cameras if i == 0 else ():  # one episode's frames keep the file small
                expected[f"{i}/{cam}"] = obs[cam]
        np.savez_compressed(Path(builder.data_dir) / "expected.npz", **expected)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
