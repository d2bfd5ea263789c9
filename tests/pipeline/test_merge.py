"""Merging sources of one embodiment (different formats and camera names) into one dataset; a
different embodiment or a camera-map typo refused in one line, before anything is read."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic
from wallwm.pipeline.sources.merge import parse_camera_map
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore


def ingest(source, ds, **kw):
    cfg = IngestConfig(source=str(source), dataset=str(ds), executor="local", **kw)
    return run_ingest(cfg.model_copy(update={"segment": SegmentConfig()}))


def cameras(store):
    rows = store.read(schemas.EPISODES, columns=["source_format", "cameras"]).to_pylist()
    return {(r["source_format"], tuple(sorted(c["name"] for c in r["cameras"]))) for r in rows}


@pytest.mark.usefixtures("ray_local")
def test_two_formats_one_robot_one_set_of_camera_names(folder_source, lerobot_v3, tmp_path):
    from wallwm.trainer.view import materialize

    ds = tmp_path / "ds"
    assert ingest(folder_source(3, cameras=("top",)), ds).written == 3
    root, _ = lerobot_v3(2, cameras=("top",))
    merged = ingest(root, ds, camera_map={"observation.images.top": "top"})
    assert merged.written == 2 and merged.failed == 0
    store = LanceStore(str(ds))
    assert cameras(store) == {("folder", ("top",)), ("lerobot", ("top",))}
    view = materialize(str(ds), size=32)
    assert view.episodes == 5  # every episode shares the camera the model sees

    # without the map the LeRobot episodes keep their own name, and the view leaves them out
    plain = tmp_path / "plain"
    ingest(folder_source(3, cameras=("top",), name="again"), plain)
    ingest(root, plain)
    assert materialize(str(plain), size=32).episodes == 3


def test_another_embodiment_is_refused_in_one_line(folder_source, tmp_path):
    ds = tmp_path / "ds"
    ingest(folder_source(2, cameras=("top",)), ds)
    other = tmp_path / "seven"
    record_synthetic(other, SynthConfig(episodes=3, size=32, seed=9, cameras=("top",)))
    for ep in other.iterdir():
        steps = pq.read_table(ep / "steps.parquet").to_pylist()
        for r in steps:
            r["action"] = [*r["action"], 0.0, 0.0, 0.0]
        pq.write_table(pa.Table.from_pylist(steps), ep / "steps.parquet")
    summary = ingest(other, ds)
    assert summary.failed == 1 and summary.written == 0  # one source-level failure, not three
    [error] = summary.failures
    assert error.error_class == "OtherEmbodiment" and "7-D actions" in error.problem
    assert "4-D" in error.problem and LanceStore(str(ds)).count(schemas.EPISODES) == 2


def test_camera_map_typos_and_malformed_items(folder_source, tmp_path):
    src = folder_source(2, cameras=("top",))
    summary = ingest(src, tmp_path / "ds", camera_map={"tpo": "front"})
    [error] = summary.failures
    assert error.error_class == "UnknownCamera" and "['tpo']" in error.problem
    assert "cameras: ['top']" in error.problem and summary.written == 0
    runner = CliRunner()
    bad = runner.invoke(app, ["ingest", str(src), "-d", str(tmp_path / "x"), "--camera-map", "top"])
    assert bad.exit_code == 2 and "expected OLD=NEW" in bad.output
    assert "Traceback" not in bad.output
    with pytest.raises(ValueError, match="mapped twice"):
        parse_camera_map(["a=b", "a=c"])
    assert parse_camera_map(["cam_high = top", "wrist=hand"]) == {
        "cam_high": "top",
        "wrist": "hand",
    }


def test_robot_names_the_episodes_whose_source_names_none(folder_source, tmp_path):
    import json

    src, ds = folder_source(3, cameras=("top",)), tmp_path / "ds"
    first = sorted(p for p in src.iterdir() if p.is_dir())[0]
    meta = json.loads((first / "meta.json").read_text())
    del meta["robot"]  # this episode's files name no robot; the others name theirs
    (first / "meta.json").write_text(json.dumps(meta))
    args = ["ingest", str(src), "-d", str(ds), "--robot", "ur5e", "--local"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = LanceStore(str(ds)).read(schemas.EPISODES, columns=["episode_key", "robot"])
    robots = dict(zip(*(rows.column(c).to_pylist() for c in ("episode_key", "robot")), strict=True))
    assert robots.pop(first.name) == "ur5e"
    assert set(robots.values()) == {"wallwm-synthetic-gripper"}  # a stored name stays
    # a rerun under another name reads the unchanged files again, so the name reaches them
    # (the skip compares the options' hash too), and a rerun after that reads nothing
    again = CliRunner().invoke(app, [*args[:-2], "other", "--local"])
    assert again.exit_code == 0, again.output
    rows = LanceStore(str(ds)).read(schemas.EPISODES, columns=["episode_key", "robot"])
    robots = dict(zip(*(rows.column(c).to_pylist() for c in ("episode_key", "robot")), strict=True))
    assert robots.pop(first.name) == "other"
    assert set(robots.values()) == {"wallwm-synthetic-gripper"}
    cfg = IngestConfig(source=str(src), dataset=str(ds), executor="local", robot="other")
    assert run_ingest(cfg).unchanged == 3
