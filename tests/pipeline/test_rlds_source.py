"""RLDS datasets (Open X-Embodiment's format), read without TensorFlow.

The datasets under ``tests/data/rlds`` were written by TensorFlow Datasets itself
(``tests/rlds_support/write_dataset.py``, tensorflow-datasets 4.9.10); beside each,
``expected.npz`` holds what ``tfds`` reads back. Damaged and odd records are written here with a
small ``Example`` encoder (the double of TFDS's writer), next to those real files.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.pipeline.ingest import IngestConfig, load_episode, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sources import tfrecord
from wallwm.pipeline.sources.base import EpisodeError
from wallwm.pipeline.sources.registry import detect_format, open_source
from wallwm.pipeline.sources.rlds import doc_names
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore
from wallwm.pipeline.video import read_frames

DATA = Path(__file__).resolve().parents[1] / "data" / "rlds"
OXE = DATA / "oxe_template" / "1.0.0"
RT1 = DATA / "rt1_style" / "0.1.0"


# --- a minimal tf.train.Example writer (the test double of TFDS's) ---------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _example(features: dict[str, object]) -> bytes:
    """``{key: list of bytes | float array | int array}`` as a serialized Example."""
    entries = b""
    for key, value in features.items():
        if isinstance(value, list):
            feature = _field(1, b"".join(_field(1, v) for v in value))
        elif np.asarray(value).dtype.kind == "f":
            feature = _field(2, _field(1, np.asarray(value, "<f4").tobytes()))
        else:
            feature = _field(3, _field(1, b"".join(_varint(int(v)) for v in np.ravel(value))))
        entries += _field(1, _field(1, key.encode()) + _field(2, feature))
    return _field(1, entries)


def _record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", tfrecord.masked_crc32c(length)) + data + b"\0\0\0\0"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("expected.npz"))
    return dst


def _shard(root: Path) -> Path:
    (shard,) = root.glob("*.tfrecord-*")
    return shard


# --- the real files ----------------------------------------------------------------------


@pytest.mark.parametrize("root", [OXE, RT1], ids=["oxe-template", "rt1-style"])
def test_tfds_written_rlds_reads_as_tfds_reads_it(root):
    """Signals bit for bit as ``tfds.as_numpy`` gives them; PNG frames pixel for pixel; JPEG
    frames as PIL decodes them (TensorFlow's own JPEG decoder differs from libjpeg-turbo's
    by a grey level on average)."""
    expected = np.load(root / "expected.npz")
    assert detect_format(root) == "rlds" and detect_format(root.parent) == "rlds"
    source = open_source(root.parent, fps=5)  # the folder of versions reads its newest
    refs, errors = source.list_episodes()
    assert errors == [] and [r.episode_key for r in refs] == [
        f"train_00000_{i:06d}" for i in range(3)
    ]
    for i, ref in enumerate(refs):
        rec = load_episode(source, ref, frame_tolerance=0)
        np.testing.assert_array_equal(rec.actions_TA, expected[f"{i}/action"])
        np.testing.assert_array_equal(rec.states_TS, expected[f"{i}/state"])
        assert rec.fps == 5 and all(c.num_frames == len(rec.actions_TA) for c in rec.probed)
        if i:
            continue
        shard = str(ref.locator["shard"])
        raw = tfrecord.parse_example(tfrecord.read_record(shard, int(ref.locator["offset"])))
        for cam in rec.probed:
            frames = np.stack(list(read_frames(cam))).astype(int)
            tf_frames = expected[f"0/{cam.name}"]
            assert frames.shape == tf_frames.shape
            if cam.codec == "png":
                np.testing.assert_array_equal(frames, tf_frames)
            else:
                pil = [Image.open(io.BytesIO(b)).convert("RGB")
                       for b in raw[f"steps/observation/{cam.name}"]]  # fmt: skip
                np.testing.assert_array_equal(frames, np.stack([np.asarray(p) for p in pil]))
                assert np.abs(frames - tf_frames).mean() < 2.0


def test_names_instruction_and_cameras_follow_the_feature_tree():
    text = CliRunner().invoke(app, ["inspect", str(OXE), "--fps", "5"])
    assert "robot: none named (--robot names it)" in " ".join(text.output.split())
    oxe = open_source(OXE, fps=5)
    rec = oxe.read(oxe.list_episodes()[0][0])
    # one action tensor has no names; the sentence embedding is not state
    assert rec.action_names is None and rec.state_names == [f"state_{i}" for i in range(4)]
    assert rec.instruction.startswith("put the block in bin")
    assert [c.name for c in rec.cameras] == ["image", "wrist_image"]
    rt1 = open_source(RT1, fps=3, instruction="unused: the steps carry one")
    rec = rt1.read(rt1.list_episodes()[0][0])
    # RT-1's action dict, concatenated in the tree's order, named; its int one-hot included
    assert rec.action_names[:2] == ["gripper_closedness_action", "rotation_delta_0"]
    assert rec.action_names[-3:] == ["world_vector_0", "world_vector_1", "world_vector_2"]
    assert rec.instruction == "pick the apple"  # from observation/natural_language_instruction
    # the zlib-encoded float64 tensor decodes; the gripper's observation is the opening's column
    assert rec.state_names[:2] == ["base_orientation_0", "base_orientation_1"]
    np.testing.assert_array_equal(rec.gripper_TG[:, 0], rec.states_TS[:, -1])


def test_doc_names_read_the_oxe_builders_lists():
    """The RLDS builder template's ``doc=`` convention, as Open X-Embodiment datasets carry it."""
    doc = (
        "Robot action, consists of [7x joint velocities, 2x gripper velocities, "
        "1x terminate episode]."
    )
    names = doc_names(doc, 10)
    assert names[:2] == ["joint_velocities_0", "joint_velocities_1"]
    assert names[7:] == ["gripper_velocities_0", "gripper_velocities_1", "terminate_episode"]
    state = (
        "Robot state, consists of [3x robot EEF position, 3x robot EEF orientation "
        "yaw/pitch/roll calibrated, 1x gripper position]."
    )
    assert doc_names(state, 7)[3:] == [
        "robot_eef_orientation_yaw_pitch_roll_calibrated_0",
        "robot_eef_orientation_yaw_pitch_roll_calibrated_1",
        "robot_eef_orientation_yaw_pitch_roll_calibrated_2",
        "gripper_position",
    ]
    assert doc_names(doc, 9) is None  # the counts must add up to the tensor's width
    assert doc_names("Robot action in the robot base frame.", 7) is None  # prose names nothing
    assert doc_names("consists of [3x position, orientation]", 4) is None  # a part without count
    assert doc_names("consists of [1x x, 1x x]", 2) is None  # two dims of one name say nothing


def test_a_documented_action_and_state_are_named_and_the_gripper_found(tmp_path):
    root = _copy(OXE, tmp_path / "oxe" / "1.0.0")
    features = json.loads((root / "features.json").read_text())
    steps = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]
    steps["features"]["action"]["description"] = (
        "Robot action, consists of [3x EEF delta, 1x gripper open/close]."
    )
    observation = steps["features"]["observation"]["featuresDict"]["features"]
    observation["state"]["description"] = (
        "Robot state, consists of [3x robot EEF position, 1x gripper position]."
    )
    (root / "features.json").write_text(json.dumps(features))
    source = open_source(root, fps=5)
    rec = source.read(source.list_episodes()[0][0])
    assert rec.action_names == ["eef_delta_0", "eef_delta_1", "eef_delta_2", "gripper_open_close"]
    assert rec.state_names[-1] == "gripper_position"
    # the opening is read from the state the doc names a gripper's (undocumented: none)
    np.testing.assert_array_equal(rec.gripper_TG[:, 0], rec.states_TS[:, 3])
    assert open_source(OXE, fps=5).read(source.list_episodes()[0][0]).gripper_TG is None
    # a doc whose parts do not add up to the tensor names nothing
    observation["state"]["description"] = "Robot state, consists of [7x joint angles]."
    (root / "features.json").write_text(json.dumps(features))
    source = open_source(root, fps=5)
    assert source.read(source.list_episodes()[0][0]).state_names == [f"state_{i}" for i in range(4)]


def test_rlds_runs_through_the_pipeline_and_reruns_unchanged(tmp_path):
    ds = tmp_path / "ds"
    cfg = IngestConfig(source=str(OXE), dataset=str(ds), executor="local", fps=10.0)
    report = run_ingest(cfg.model_copy(update={"segment": SegmentConfig()}))
    assert (report.written, report.failed) == (3, 0) and report.events >= 3
    rows = LanceStore(str(ds)).read(schemas.EPISODES).to_pylist()
    assert sorted(r["num_frames"] for r in rows) == [29, 32, 33]
    assert {c["codec"] for r in rows for c in r["cameras"]} == {"jpeg", "png"}
    again = run_ingest(cfg)
    assert (again.written, again.unchanged) == (0, 3)


# --- damage, and what RLDS does not store -------------------------------------------------


def test_a_truncated_shard_keeps_its_whole_records_and_names_itself(tmp_path):
    root = _copy(OXE, tmp_path / "oxe")
    shard = _shard(root)
    shard.write_bytes(shard.read_bytes()[:100_000])  # cuts the third record
    refs, errors = open_source(root, fps=5).list_episodes()
    assert len(refs) == 2 and len(errors) == 1
    assert errors[0].file == str(shard) and "truncated" in errors[0].problem
    report = run_ingest(IngestConfig(source=str(root), dataset=str(tmp_path / "ds"),
                                     executor="local", fps=5.0))  # fmt: skip
    assert (report.written, report.failed) == (2, 1)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("gzip", "GZIP-compressed TFRecords are not read"),
        ("garbage", "not a TFRecord record at byte 0"),
        ("missing", "2 shards stated in dataset_info.json, 1 found"),
    ],
)
def test_a_shard_that_is_not_read_is_one_line(tmp_path, damage, problem):
    import gzip

    root = _copy(OXE, tmp_path / "oxe")
    shard = _shard(root)
    if damage == "gzip":
        shard.write_bytes(gzip.compress(shard.read_bytes()))
    elif damage == "garbage":
        shard.write_bytes(b"PAR1" + b"\x07" * 64)
    else:
        info = json.loads((root / "dataset_info.json").read_text())
        info["splits"][0]["shardLengths"] = ["3", "2"]
        (root / "dataset_info.json").write_text(json.dumps(info))
    refs, errors = open_source(root, fps=5).list_episodes()
    assert len(refs) == (3 if damage == "missing" else 0)
    assert [problem in e.problem for e in errors] == [True]


def test_odd_records_fail_their_episode_only(tmp_path):
    """Steps that disagree across features, no steps, NaN actions: each its own line; the other
    episodes of the shard are written."""
    root = _copy(OXE, tmp_path / "oxe")
    shard = _shard(root)
    good = tfrecord.read_record(shard, 0)
    action = np.arange(12, dtype=np.float32)
    base = {
        "steps/action": action,
        "steps/observation/state": np.zeros(12, np.float32),
        "steps/observation/image": [],
        "steps/observation/wrist_image": [],
        "steps/language_instruction": [b"x"] * 3,
    }
    odd = [
        {**base, "steps/observation/state": np.zeros(8, np.float32)},  # 3 steps against 2
        {**base, "steps/action": np.zeros(0, np.float32)},  # no steps
        {**base, "steps/action": np.where(action == 5, np.nan, action)},
        {**base, "steps/action": np.zeros(10, np.float32)},  # 10 values, steps of 4
    ]
    shard.write_bytes(_record(good) + b"".join(_record(_example(f)) for f in odd))
    source = open_source(root, fps=5)
    refs, _ = source.list_episodes()
    report = run_ingest(IngestConfig(source=str(root), dataset=str(tmp_path / "ds"),
                                     executor="local", fps=5.0))  # fmt: skip
    assert (report.written, report.failed) == (1, 4)
    problems = []
    for ref in refs[1:]:
        with pytest.raises(EpisodeError) as err:
            load_episode(source, ref, frame_tolerance=0)
        problems.append((err.value.error_class, err.value.file))
    assert [p[0] for p in problems] == ["FrameCountMismatch", "EmptyEpisode", "NonFiniteValues",
                                        "BadShape"]  # fmt: skip
    assert problems[0][1] == f"{shard} (record 1)"


def test_what_rlds_does_not_store_is_asked_for_in_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(OXE)])
    assert result.exit_code == 0
    assert "an RLDS dataset stores no frame rate: pass --fps" in " ".join(result.output.split())
    root = _copy(OXE, tmp_path / "oxe")
    info = json.loads((root / "dataset_info.json").read_text())
    (root / "dataset_info.json").write_text(json.dumps({**info, "fileFormat": "array_record"}))
    result = runner.invoke(app, ["inspect", str(root)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "shards in 'array_record' are not read, only TFRecord" in " ".join(result.output.split())


def test_an_instruction_stored_as_code_points_is_read(tmp_path):
    """Language-Table keeps its instruction as a zero-padded int32 vector per step."""
    root = _copy(OXE, tmp_path / "lt")
    tree = json.loads((root / "features.json").read_text())
    step = tree["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]
    del step["features"]["language_instruction"]
    obs = step["features"]["observation"]["featuresDict"]["features"]
    obs["instruction"] = {
        "pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor",
        "tensor": {"dtype": "int32", "encoding": "none", "shape": {"dimensions": ["12"]}},
    }
    (root / "features.json").write_text(json.dumps(tree))
    codes = [ord(c) for c in "push red"] + [0] * 4  # zero-padded to the tensor's 12
    text = np.array(codes * 2)  # two steps
    steps = {
        "steps/action": np.zeros(8, np.float32),
        "steps/observation/state": np.zeros(8, np.float32),
        "steps/observation/image": [],
        "steps/observation/wrist_image": [],
        "steps/observation/instruction": text,
    }
    _shard(root).write_bytes(_record(_example(steps)))
    source = open_source(root, fps=5)
    rec = source.read(source.list_episodes()[0][0])
    assert rec.instruction == "push red" and rec.states_TS.shape == (2, 4)  # not a state


def test_a_folder_of_rlds_datasets_names_each(tmp_path):
    cache = tmp_path / "tensorflow_datasets"
    _copy(OXE, cache / "oxe_template" / "1.0.0")
    _copy(RT1, cache / "rt1_style" / "0.1.0")
    with pytest.raises(EpisodeError, match=r"folder of 2: oxe_template \(rlds\), rt1_style"):
        detect_format(cache)


# --- the record layer ---------------------------------------------------------------------


def test_the_example_decoder_reads_every_list_kind():
    data = _example(
        {"b": [b"", b"\xff" * 300], "f": np.array([1.5, -2.0]), "i": np.array([-3, 2**40])}
    )
    # unpacked ints (wire type 0, one field per value), as proto2 writers emit them
    entry = _field(1, b"u") + _field(2, _field(3, b"\x08\x07\x08\x09"))
    unpacked = _field(1, _field(1, entry))  # a second Features: protobuf merges the two
    parsed = tfrecord.parse_example(data + unpacked)
    assert parsed["b"] == [b"", b"\xff" * 300]
    np.testing.assert_array_equal(parsed["f"], [1.5, -2.0])
    np.testing.assert_array_equal(parsed["i"], [-3, 2**40])
    np.testing.assert_array_equal(parsed["u"], [7, 9])
    assert set(tfrecord.parse_example(data, want={"f"}.__contains__)) == {"f"}


def test_the_length_crc_is_crc32c_masked():
    crc = 0xE3069283  # CRC-32C of b"123456789", the standard check value
    assert (
        tfrecord.masked_crc32c(b"123456789")
        == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    )


def test_rlds_converts_to_lerobot_with_its_events(tmp_path):
    """OXE data to a LeRobot v3.0 dataset, events as subtasks: the export re-ingests to the same
    actions, every camera as video with every frame."""
    from wallwm.pipeline.export.lerobot import ExportConfig, export_lerobot

    ds, out = tmp_path / "ds", tmp_path / "lerobot"
    # RLDS names no robot: --robot does, for the rows and the export's robot_type
    cfg = IngestConfig(
        source=str(RT1), dataset=str(ds), executor="local", fps=3.0, robot="google_robot"
    )
    run_ingest(cfg.model_copy(update={"segment": SegmentConfig()}))
    rows = LanceStore(str(ds)).read(schemas.EPISODES, columns=["robot"]).column(0).to_pylist()
    assert rows == ["google_robot"] * 3
    summary = export_lerobot(ExportConfig(dataset=str(ds), out=str(out), trim=False))
    assert summary.episodes_out == 3 and detect_format(out) == "lerobot"
    assert json.loads((out / "meta" / "info.json").read_text())["robot_type"] == "google_robot"
    expected = np.load(RT1 / "expected.npz")
    source = open_source(out)
    exported = [load_episode(source, ref, frame_tolerance=0) for ref in source.list_episodes()[0]]
    for i in range(3):  # each RLDS episode is one exported episode, its actions bit for bit
        assert sum(np.array_equal(e.actions_TA, expected[f"{i}/action"]) for e in exported) == 1
    assert all(len(e.probed) == 1 and e.probed[0].num_frames == len(e.actions_TA)
               for e in exported)  # fmt: skip
    assert all(e.gt_events for e in exported)  # the events, as subtasks
