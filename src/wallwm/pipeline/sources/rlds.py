"""RLDS datasets as TensorFlow Datasets writes them: Open X-Embodiment's format (no TensorFlow).

A TFDS dataset version directory holds::

    <name>/<version>/
        dataset_info.json                       splits, their shards and episode counts
        features.json                           the feature tree: shapes, dtypes, encodings
        <name>-<split>.tfrecord-00000-of-000NN  one tf.train.Example per episode

An RLDS episode is a ``steps`` sequence (a ``tfds.features.Dataset``) beside optional
``episode_metadata``. TFDS flattens it into one ``Example``: ``steps/action`` holds every step's
action concatenated (T x A floats), ``steps/observation/image`` one encoded JPEG/PNG per step,
``steps/language_instruction`` one string per step, nested dicts joined by ``/``.

What is read from a step:

- **actions**: ``action`` -- one tensor, or (RT-1 / fractal) a dict of tensors concatenated in
  the feature tree's order (``gripper_closedness_action``, ``rotation_delta``, ...), named;
- **state**: every numeric ``observation`` tensor of at most two dims, concatenated in that order
  -- except language (``*instruction*``, ``*language*``, ``*embedding*``: a sentence embedding is
  no proprioception);
- **cameras**: every ``observation`` Image of 1 or 3 channels not named ``*depth*``;
- **instruction**: the first step's text named ``*instruction*`` / ``*language*`` / ``*task*``
  (``steps/language_instruction``, ``observation/natural_language_instruction``), else
  ``episode_metadata``'s, else an integer tensor named ``*instruction*`` read as code points
  (Language-Table), else ``--instruction``.

RLDS stores no frame rate: it comes from ``--fps`` (each dataset's control rate is listed by
Open X-Embodiment), else every episode fails naming the option. A folder holding version
directories (``bridge/``) reads its newest version, as ``tfds.load`` does.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wallwm.pipeline.image_frames import tfrecord_frames_uri
from wallwm.pipeline.sources import tfrecord
from wallwm.pipeline.sources.base import (
    BadSignalError,
    CameraSpec,
    CorruptVideoError,
    EpisodeError,
    EpisodeRecord,
    EpisodeRef,
    FloatArray,
    GripperOpen,
    MissingFieldError,
    OptionedSource,
    UnknownFormatError,
    orient_gripper,
)

FORMAT = "rlds"
INFO = "dataset_info.json"
FEATURES = "features.json"
#: ``observation`` entries that hold language, not proprioception.
_LANGUAGE = re.compile(r"instruction|language|embedding|lang_", re.IGNORECASE)
#: Text features that may hold an episode's instruction, in order of preference.
_INSTRUCTION = re.compile(r"instruction|language|task", re.IGNORECASE)


@dataclass(frozen=True)
class FeatureSpec:
    """One leaf of the feature tree, as its flattened ``Example`` key."""

    key: str  # "steps/observation/state"
    kind: str  # "tensor" | "image" | "text" | "other"
    dtype: str = "float32"
    shape: tuple[int, ...] = ()
    encoding: str = "none"  # a tensor's: "none" | "bytes" | "zlib"
    per_step: bool = False
    #: The builder's ``doc=`` of the feature (``features.json``'s ``description``).
    doc: str = ""

    @property
    def width(self) -> int:
        """Values per step (the product of the static shape; -1 dims count as unknown)."""
        return int(np.prod(self.shape, dtype=np.int64)) if all(d > 0 for d in self.shape) else -1

    @property
    def leaf(self) -> str:
        """The key below ``steps/`` (``observation/wrist_image``)."""
        return self.key.partition("/")[2] if self.per_step else self.key


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in name.split("."))


def dataset_dir(root: Path) -> Path | None:
    """The TFDS version directory at ``root``, or the newest one below it; None if neither."""
    if (root / INFO).is_file() and (root / FEATURES).is_file():
        return root
    if not root.is_dir():
        return None
    versions = [p for p in root.iterdir() if p.is_dir() and (p / INFO).is_file()]
    versions = [p for p in versions if (p / FEATURES).is_file()]
    return max(versions, key=lambda p: _version_key(p.name)) if versions else None


def looks_like(root: Path) -> bool:
    """Whether ``root`` is a TFDS (RLDS) dataset: a version directory or a folder of them."""
    return dataset_dir(root) is not None


def _shape(info: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in info.get("shape", {}).get("dimensions", []))


def feature_specs(
    tree: dict[str, Any], prefix: str = "", per_step: bool = False
) -> list[FeatureSpec]:
    """Every leaf of a ``features.json`` tree, keyed as TFDS flattens it into an ``Example``."""
    specs: list[FeatureSpec] = []
    if "featuresDict" in tree:
        for name, child in tree["featuresDict"].get("features", {}).items():
            specs += feature_specs(child, f"{prefix}/{name}" if prefix else name, per_step)
    elif "sequence" in tree:  # a Dataset (RLDS steps) or a Sequence: one value per step
        specs += feature_specs(tree["sequence"].get("feature", {}), prefix, True)
    elif "tensor" in tree:
        t = tree["tensor"]
        encoding = str(t.get("encoding", "none")).lower()
        specs.append(
            FeatureSpec(prefix, "tensor", str(t.get("dtype", "float32")), _shape(t), encoding,
                        per_step, str(tree.get("description", "")))
        )  # fmt: skip
    elif "classLabel" in tree:
        specs.append(FeatureSpec(prefix, "tensor", "int64", (), "none", per_step))
    elif "image" in tree:
        i = tree["image"]
        specs.append(FeatureSpec(prefix, "image", str(i.get("dtype", "uint8")), _shape(i), "none",
                                 per_step))  # fmt: skip
    elif "text" in tree:
        specs.append(FeatureSpec(prefix, "text", "string", (), "none", per_step))
    else:
        specs.append(FeatureSpec(prefix, "other", per_step=per_step))
    return specs


def _is_action(spec: FeatureSpec) -> bool:
    return (
        spec.per_step
        and spec.kind == "tensor"
        and (spec.leaf == "action" or spec.leaf.startswith("action/"))
    )


def _is_state(spec: FeatureSpec) -> bool:
    leaf = spec.leaf.removeprefix("observation/")
    return (
        spec.per_step
        and spec.kind == "tensor"
        and spec.leaf.startswith("observation/")
        and len(spec.shape) <= 2
        and spec.dtype != "string"
        and not _LANGUAGE.search(leaf)
    )


def _is_camera(spec: FeatureSpec) -> bool:
    channels = spec.shape[-1] if spec.shape else 3
    return (
        spec.per_step
        and spec.kind == "image"
        and spec.leaf.startswith("observation/")
        and spec.dtype == "uint8"
        and channels in (1, 3, -1)
        and "depth" not in spec.leaf.lower()
    )


#: The list of parts in a feature's doc: "Robot action, consists of [7x joint velocities, ...]".
_DOC_PARTS = re.compile(r"\[([^\[\]]+)\]")
#: One part: how many dims, and what they are ("7x joint velocities", "1 x gripper position").
_DOC_PART = re.compile(r"^\s*(\d+)\s*x\s+(.+?)\s*$", re.IGNORECASE)


def doc_names(doc: str, width: int) -> list[str] | None:
    """Per-dim names from a feature's doc in the Open X-Embodiment builders' convention.

    The RLDS dataset-builder template documents a tensor as a bracketed list of parts, each a
    count and what it is: ``"Robot state, consists of [7x robot joint angles, 2x gripper
    position, 1x door opening angle]."`` -> ``robot_joint_angles_0`` ... ``gripper_position_1``,
    ``door_opening_angle``. None unless every part reads so and the counts add up to ``width``
    (prose, or a doc of another tensor, names nothing).
    """
    lists = _DOC_PARTS.findall(doc)
    if len(lists) != 1:
        return None
    names: list[str] = []
    for part in lists[0].split(","):
        match = _DOC_PART.match(part)
        if match is None:
            return None
        count, what = int(match.group(1)), re.sub(r"[^0-9a-z]+", "_", match.group(2).lower())
        what = what.strip("_") or "dim"
        names += [what] if count == 1 else [f"{what}_{i}" for i in range(count)]
    return names if len(names) == width and len(set(names)) == width else None


def _names(spec: FeatureSpec, prefix: str, width: int) -> list[str]:
    """Per-dim names: the feature doc's parts (:func:`doc_names`), else its leaf's.

    The leaf below ``prefix`` (``world_vector_0``); one dim keeps the leaf.
    """
    documented = doc_names(spec.doc, width)
    if documented is not None:
        return documented
    base = spec.leaf.removeprefix(prefix).strip("/") or prefix
    return [base] if width == 1 else [f"{base}_{i}" for i in range(width)]


class RldsSource(OptionedSource):
    """Reader of an RLDS dataset written by TFDS (Open X-Embodiment and its conversions)."""

    format = FORMAT

    def __init__(
        self,
        root: str | Path,
        instruction: str | None = None,
        fps: float | None = None,
        gripper_open: GripperOpen = "auto",
    ) -> None:
        """Open the dataset at ``root`` (a version directory, or a folder of them).

        Args:
            root: ``<name>/<version>`` as TFDS writes it, or ``<name>`` (newest version).
            instruction: Instruction of episodes whose steps carry none.
            fps: Frame rate (RLDS stores none).
            gripper_open: ``low``: observed gripper values shrink as it opens (negated on read).

        Raises:
            UnknownFormatError: No dataset there, or its shards are not TFRecord.
            EpisodeError: ``dataset_info.json`` / ``features.json`` unreadable.
        """
        found = dataset_dir(Path(root).resolve())
        if found is None:
            raise UnknownFormatError(str(root), f"no {INFO} and {FEATURES} (a TFDS dataset)")
        super().__init__(found, instruction, fps, gripper_open)
        self.info = self._json(INFO)
        file_format = str(self.info.get("fileFormat", "tfrecord"))
        if file_format != "tfrecord":
            raise UnknownFormatError(
                str(found / INFO), f"shards in {file_format!r} are not read, only TFRecord "
                "(TFDS writes TFRecord unless asked otherwise)",
            )  # fmt: skip
        self.specs = feature_specs(self._json(FEATURES))
        self.actions = [s for s in self.specs if _is_action(s)]
        self.states = [s for s in self.specs if _is_state(s)]
        self.cameras = [s for s in self.specs if _is_camera(s)]
        texts = [s for s in self.specs if s.kind == "text" and _INSTRUCTION.search(s.key)]
        self.texts = sorted(texts, key=lambda s: not s.per_step)  # a step's text first
        #: Instructions stored as integer code points (Language-Table's ``observation/
        #: instruction``: a zero-padded int32 vector), read where no text feature gives one.
        self.coded_texts = [
            s for s in self.specs
            if s.per_step and s.kind == "tensor" and s.dtype.startswith("int")
            and "instruction" in s.leaf.lower()
        ]  # fmt: skip
        if not self.actions:
            raise MissingFieldError(
                str(found / FEATURES), "no steps/action tensor in the feature tree (not RLDS?)"
            )

    def _json(self, name: str) -> dict[str, Any]:
        path = self.root / name
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise MissingFieldError(str(path), f"unreadable: {exc}", "BadMetadata") from exc
        if not isinstance(data, dict):
            raise MissingFieldError(str(path), "expected a JSON object", "BadMetadata")
        return data

    def _shards(self, split: str) -> list[Path]:
        return sorted(self.root.glob(f"*-{split}.tfrecord-*-of-*"))

    def list_episodes(self) -> tuple[list[EpisodeRef], list[EpisodeError]]:
        """One ref per record of every split's shards (reading only the records' headers)."""
        refs: list[EpisodeRef] = []
        errors: list[EpisodeError] = []
        for split in self.info.get("splits", []):
            name = str(split.get("name", "train"))
            shards = self._shards(name)
            stated = len(split.get("shardLengths", [])) or len(shards)
            if len(shards) < stated:
                errors.append(MissingFieldError(
                    str(self.root), f"split {name!r}: {stated} shards stated in {INFO}, "
                    f"{len(shards)} found", "MissingShard",
                ))  # fmt: skip
            for s, shard in enumerate(shards):
                spans: list[tfrecord.RecordSpan] = []
                try:  # the records before a shard's damage are kept; the rest is one line
                    spans.extend(tfrecord.record_offsets(shard))
                except tfrecord.RecordError as exc:
                    errors.append(CorruptVideoError(str(shard), str(exc).partition(": ")[2],
                                                    "BadShard"))  # fmt: skip
                refs += [
                    EpisodeRef(
                        self.uri,
                        FORMAT,
                        f"{name}_{s:05d}_{r:06d}",
                        (str(shard),),
                        {"split": name, "shard": str(shard), "offset": span.offset, "record": r},
                    )
                    for r, span in enumerate(spans)
                ]
        return refs, errors

    def read(self, ref: EpisodeRef) -> EpisodeRecord:
        """Read one episode's steps (signals now; frames lazily by camera URI)."""
        shard, offset = str(ref.locator["shard"]), int(ref.locator["offset"])  # type: ignore[call-overload]
        where = f"{shard} (record {ref.locator['record']})"
        wanted = {s.key for s in (*self.actions, *self.states, *self.texts, *self.coded_texts)}
        try:
            example = tfrecord.parse_example(
                tfrecord.read_record(shard, offset), want=wanted.__contains__
            )
        except (OSError, tfrecord.RecordError) as exc:
            raise CorruptVideoError(where, f"unreadable record: {exc}", "BadShard") from exc
        actions, action_names = _stack(example, self.actions, where, None, "action")
        steps = len(actions)
        if steps == 0:
            raise BadSignalError(where, "the episode has no steps", "EmptyEpisode")
        states, state_names = (
            _stack(example, self.states, where, steps, "observation")
            if self.states else (None, [])
        )  # fmt: skip
        grips = [i for i, n in enumerate(state_names) if "grip" in n.lower()]
        if self.fps is None:
            raise MissingFieldError(
                where, "an RLDS dataset stores no frame rate: pass --fps (the dataset's control "
                "rate)", "MissingFps",
            )  # fmt: skip
        return EpisodeRecord(
            ref=ref,
            fps=float(self.fps),
            instruction=self._instruction(example) or self.instruction,
            robot=None,
            actions_TA=actions,
            cameras=[
                CameraSpec(
                    s.leaf.removeprefix("observation/"),
                    tfrecord_frames_uri(shard, s.key, offset),
                )
                for s in self.cameras
            ],
            states_TS=states,
            gripper_TG=orient_gripper(
                states[:, grips] if states is not None and grips else None, self.gripper_open
            ),
            # one undocumented ``action`` tensor: no names (``action_0``... would say no more)
            action_names=None if self._bare_action(actions.shape[1]) else action_names,
            state_names=state_names or None,
        )

    def _bare_action(self, width: int) -> bool:
        """Whether the actions are one ``action`` tensor whose doc lists no parts."""
        (first, *more) = self.actions
        return not more and first.leaf == "action" and doc_names(first.doc, width) is None

    def _instruction(self, example: dict[str, tfrecord.Feature]) -> str | None:
        for spec in self.texts:
            values = example.get(spec.key)
            for value in values if isinstance(values, list) else []:
                text = value.decode("utf-8", errors="replace").strip()
                if text:
                    return text
        for spec in self.coded_texts:
            codes = example.get(spec.key)
            if isinstance(codes, np.ndarray) and spec.width > 0 and codes.size >= spec.width:
                first = codes[: spec.width]  # the first step's
                text = "".join(chr(c) for c in first if 0 < c < 0x110000).strip()
                if text:
                    return text
        return None


def _stack(
    example: dict[str, tfrecord.Feature], specs: list[FeatureSpec], where: str,
    steps: int | None, prefix: str,
) -> tuple[FloatArray, list[str]]:  # fmt: skip
    """The specs' values as one (steps, dims) float32 array, columns in spec order, named."""
    columns, names = [], []
    for spec in specs:
        values = _tensor_values(example.get(spec.key), spec, where)
        width = spec.width if spec.width > 0 else (values.size // steps if steps else 1)
        if width <= 0 or values.size % width:
            raise BadSignalError(
                where, f"{spec.key}: {values.size} values do not divide into steps of "
                f"{width}", "BadShape",
            )  # fmt: skip
        column = values.reshape(-1, width)
        if steps is not None and len(column) != steps:
            raise BadSignalError(
                where, f"{spec.key}: {len(column)} steps, the actions have {steps}",
                "FrameCountMismatch",
            )  # fmt: skip
        steps = len(column)
        columns.append(column)
        names += _names(spec, prefix, width)
    return np.concatenate(columns, axis=1).astype(np.float32), names


def _tensor_values(feature: tfrecord.Feature | None, spec: FeatureSpec, where: str) -> np.ndarray:
    """A tensor feature's values, flat, as float64 (per its encoding: lists, bytes or zlib)."""
    if feature is None:
        raise MissingFieldError(where, f"{spec.key}: missing from the record")
    if spec.encoding in ("bytes", "zlib") or isinstance(feature, list):
        if not isinstance(feature, list):
            raise BadSignalError(where, f"{spec.key}: expected bytes per step", "BadType")
        try:
            dtype = np.dtype(spec.dtype).newbyteorder("<")
            blobs = [zlib.decompress(b) if spec.encoding == "zlib" else b for b in feature]
            return np.concatenate([np.frombuffer(b, dtype=dtype) for b in blobs]).astype(
                np.float64
            ) if blobs else np.zeros(0)  # fmt: skip
        except (TypeError, ValueError, zlib.error) as exc:
            raise BadSignalError(where, f"{spec.key}: undecodable ({exc})", "BadType") from exc
    return np.asarray(feature, dtype=np.float64)  # non-finite values: named by validation


__all__ = [
    "FORMAT",
    "FeatureSpec",
    "RldsSource",
    "dataset_dir",
    "feature_specs",
    "looks_like",
]
