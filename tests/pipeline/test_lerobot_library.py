"""Datasets written by the `lerobot` library itself (not by our fixtures) ingest exactly.

The writer runs in ``.venv-lerobot`` (built by ``make test`` with scripts/build_lerobot_env.sh);
the test skips, saying why, only where that environment could not be built.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from wallwm.pipeline.ingest import IngestConfig, load_episode, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sources.registry import open_source
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.arrays import from_vector_series
from wallwm.pipeline.tables.store import LanceStore
from wallwm.pipeline.video import read_frames

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-lerobot"
READY = VENV / ".wallwm-lerobot-ready"
WRITER = ROOT / "tests" / "lerobot_support" / "write_dataset.py"


@pytest.fixture(
    scope="module",
    params=[("v3.0", "so100"), ("v3.0", "aloha"), ("v2.1", "aloha"), ("v3.0", "so100-images")],
    ids=str,
)
def written(request, tmp_path_factory) -> tuple[Path, dict]:
    """Single-arm SO-100 and bimanual ALOHA (14-D, two grippers, 3 cameras) datasets, written
    by lerobot 0.4 (format v3.0) and lerobot 0.3 (format v2.1); and SO-100 with its cameras as
    ``image`` features (frames in the data parquet)."""
    if not READY.exists():
        pytest.skip(f"{VENV} could not be built (see scripts/build_lerobot_env.sh in `make test`)")
    version, robot = request.param
    out = tmp_path_factory.mktemp(f"lerobot-{version}-{robot}")
    manifest = out / "manifest.json"
    env = {**os.environ, "PYTHONPATH": str(VENV / "lerobot-0.3")} if version == "v2.1" else None
    subprocess.run(
        [str(VENV / "bin" / "python"), str(WRITER), str(out / "ds"), str(manifest), robot],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out / "ds", {**json.loads(manifest.read_text()), "version": version}


def test_lerobot_written_dataset_reads_exactly(written):
    root, manifest = written
    source = open_source(root)
    assert source.version == manifest["version"]
    refs, errors = source.list_episodes()
    assert errors == [] and len(refs) == len(manifest["episodes"])
    for ref, ep in zip(refs, manifest["episodes"], strict=True):
        rec = load_episode(source, ref, frame_tolerance=0)
        np.testing.assert_allclose(rec.actions_TA, np.asarray(ep["actions"]), rtol=1e-6)
        assert rec.instruction == ep["task"] and rec.fps == manifest["fps"]
        assert {c.name: (c.num_frames, c.width, c.height) for c in rec.probed} == {
            f"observation.images.{cam}": (ep["length"], w, h)
            for cam, (h, w) in manifest["cameras"].items()
        }
        grippers = [n for n in manifest["names"] if "gripper" in n]
        assert rec.gripper_TG is not None and rec.gripper_TG.shape[1] == len(grippers)
        if manifest["images"]:  # PNG in the parquet: the writer's pictures, pixel for pixel
            for k, (cam, (h, w)) in enumerate(manifest["cameras"].items()):
                (info,) = [c for c in rec.probed if c.name == f"observation.images.{cam}"]
                assert info.codec == "png"
                for t, got in enumerate(read_frames(info)):
                    want = np.full((h, w, 3), (t * 7 + 40 * k) % 255, np.uint8)
                    want[10:20, t % (w - 4) : t % (w - 4) + 4] = 255
                    np.testing.assert_array_equal(got, want)
    # the writer's grippers start at 0 and close to 1: the vote finds the low end open
    assert source.gripper_signs == [-1] * len(grippers)


def test_lerobot_written_dataset_runs_through_the_pipeline(written, tmp_path):
    root, manifest = written
    ds = tmp_path / "ds"
    report = run_ingest(
        IngestConfig(source=str(root), dataset=str(ds), executor="local", segment=SegmentConfig())
    )
    assert report.failed == 0 and report.written == len(manifest["episodes"])
    store = LanceStore(ds)
    episodes = store.read(schemas.EPISODES).to_pylist()
    assert sorted(e["num_frames"] for e in episodes) == sorted(
        e["length"] for e in manifest["episodes"]
    )
    events = store.read(schemas.EVENTS).to_pylist()
    closes = {"left": 1 / 3, "right": 2 / 3}  # when each gripper closes (see the writer)
    grippers = [n for n in manifest["names"] if "gripper" in n]
    for e in episodes:
        mine = sorted(
            (v for v in events if v["episode_id"] == e["episode_id"]),
            key=lambda v: v["start_frame"],
        )
        assert mine[0]["start_frame"] == 0 and mine[-1]["end_frame"] == e["num_frames"]
        starts = [v["start_frame"] for v in mine]
        for name in grippers:  # every gripper closing starts an event
            at = int(e["num_frames"] * closes.get(name.split("_")[0], 1 / 2)) + 1
            assert any(abs(s - at) <= 1 for s in starts), (name, at, starts)
    table = store.read(schemas.EPISODES)
    assert from_vector_series(table.column("actions")[0]).shape[1] == len(manifest["names"])
    # the captioner's notes call a bimanual robot's grippers by their action names
    from wallwm.captioner.stage import _load

    want = ["gripper"] if len(grippers) == 1 else [g.replace("_", " ") for g in grippers]
    assert {tuple(ep.gripper_names or []) for ep in _load(store)} == {tuple(want)}
