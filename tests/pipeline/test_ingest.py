"""Ingest through the real Ray Data chain into real Lance tables."""

from __future__ import annotations

import json
import os
import shutil

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.arrays import from_vector_series
from wallwm.pipeline.tables.ids import episode_id
from wallwm.pipeline.tables.store import LanceStore

pytestmark = pytest.mark.usefixtures("ray_local")


def _ingest(source, dataset, **kw):
    return run_ingest(IngestConfig(source=str(source), dataset=str(dataset), **kw))


def test_lerobot_v3_ingest_then_rerun_is_a_noop(lerobot_v3, tmp_path):
    root, eps = lerobot_v3(4)
    ds = tmp_path / "ds"
    first = _ingest(root, ds)
    assert (first.written, first.failed, first.listed) == (4, 0, 4)
    assert first.frames == sum(len(e["actions"]) for e in eps)
    store = LanceStore(str(ds))
    versions = {t: store.version(t) for t in (schemas.EPISODES, schemas.FAILURES)}
    again = _ingest(root, ds)
    assert (again.written, again.unchanged, again.failed) == (0, 4, 0)
    assert {t: store.version(t) for t in versions} == versions
    forced = _ingest(root, ds, force=True)  # re-reads everything, still writes nothing
    assert forced.written == 0 and store.version(schemas.EPISODES) == versions[schemas.EPISODES]
    # other options re-read the unchanged files once: the rows take the new config hash even
    # where their content came out the same (the skip compares it), then a rerun reads nothing
    other = _ingest(root, ds, frame_tolerance=2)
    assert (other.unchanged, other.written) == (0, 4)
    assert _ingest(root, ds, frame_tolerance=2).unchanged == 4
    assert _ingest(root, ds).written == 4  # and back

    rows = store.read(schemas.EPISODES).to_pylist()
    row = next(r for r in rows if r["episode_key"] == "episode_000002")
    assert row["episode_id"] == episode_id(str(root.resolve()), "episode_000002")
    assert row["source_format"] == "lerobot" and row["fps"] == 20.0
    assert (
        row["num_frames"] == len(eps[2]["actions"]) and row["instruction"] == eps[2]["instruction"]
    )
    assert {c["name"] for c in row["cameras"]} == {
        "observation.images.top",
        "observation.images.side",
    }
    top = next(c for c in row["cameras"] if c["name"] == "observation.images.top")
    assert top["from_timestamp_s"] > 0 and top["byte_length"] == os.path.getsize(top["uri"])
    assert [e["start_frame"] for e in row["gt_events"]] == [
        e["start_frame"] for e in eps[2]["events"]
    ]
    table = store.read(schemas.EPISODES, where="episode_key = 'episode_000002'")
    np.testing.assert_allclose(
        from_vector_series(table.column("actions")[0]), eps[2]["actions"], rtol=1e-6
    )
    assert table.schema.field("actions").type == schemas.vector_series(4)
    # lineage: one runs row per ingest run with versions and config hash
    runs = store.read(schemas.RUNS).to_pylist()
    assert len(runs) == 6 and all(r["stage"] == "ingest" for r in runs)
    assert sorted(r["rows_written"] for r in runs) == [0, 0, 0, 4, 4, 4]
    assert sum(r["config_hash"] == row["config_hash"] for r in runs) == 4


def test_incremental_append(tmp_path):
    src, ds = tmp_path / "src", tmp_path / "ds"
    record_synthetic(src, SynthConfig(episodes=3, size=48, seed=1))
    assert _ingest(src, ds).written == 3
    record_synthetic(src, SynthConfig(episodes=5, size=48, seed=2))  # 5 new keys (seed in key)
    second = _ingest(src, ds)
    assert (second.written, second.unchanged) == (5, 3)
    assert LanceStore(str(ds)).count(schemas.EPISODES) == 8


def test_changed_episode_is_updated_in_place(folder_source, tmp_path):
    src, ds = folder_source(3), tmp_path / "ds"
    _ingest(src, ds)
    ep = sorted(p for p in src.iterdir())[0]
    meta = json.loads((ep / "meta.json").read_text())
    meta["instruction"] = "a corrected instruction"
    (ep / "meta.json").write_text(json.dumps(meta))
    again = _ingest(src, ds)
    assert (again.written, again.unchanged) == (1, 2)
    store = LanceStore(str(ds))
    assert store.count(schemas.EPISODES) == 3
    assert store.count(schemas.EPISODES, "instruction = 'a corrected instruction'") == 1


def _break(src):
    """Break six episodes of a ten-episode folder source, one problem each."""
    eps = sorted(p for p in src.iterdir())
    broken = {}
    # 1. truncated video
    data = (eps[0] / "top.mp4").read_bytes()
    (eps[0] / "top.mp4").write_bytes(data[: len(data) // 2])
    broken[eps[0].name] = ("CorruptVideoError", "top.mp4", "corrupt or truncated")
    # 2. video with zero frames (a container with no frames in it)
    with av.open(str(eps[1] / "side.mp4"), "w") as out:
        st = out.add_stream("libx264", rate=20)
        st.width = st.height = 64
        out.start_encoding()
    broken[eps[1].name] = ("EmptyVideo", "side.mp4", "zero frames")
    # 3. more action rows than video frames
    steps = pq.read_table(eps[2] / "steps.parquet")
    extra = steps.slice(0, 5).to_pylist()
    end_s = steps.column("timestamp")[-1].as_py()
    for i, row in enumerate(extra, 1):  # the recording goes on: its clock too
        row.update(timestamp=end_s + i / 20, frame_index=len(steps) + i - 1)
    longer = pa.concat_tables([steps, pa.Table.from_pylist(extra, steps.schema)])
    pq.write_table(longer, eps[2] / "steps.parquet")
    broken[eps[2].name] = ("FrameCountError", ".mp4", "action rows (tolerance 1)")
    # 4. NaN actions
    rows = steps.to_pylist()
    rows[7]["action"][2] = float("nan")
    pq.write_table(pa.Table.from_pylist(rows, steps.schema), eps[3] / "steps.parquet")
    broken[eps[3].name] = ("NonFiniteValues", "steps.parquet", "frame 7, dimension 2")
    # 5. missing instruction
    meta = json.loads((eps[4] / "meta.json").read_text())
    del meta["instruction"]
    (eps[4] / "meta.json").write_text(json.dumps(meta))
    broken[eps[4].name] = ("MissingInstruction", "steps.parquet", "missing instruction")
    # 6. unreadable parquet
    (eps[5] / "steps.parquet").write_bytes(b"this is not parquet")
    broken[eps[5].name] = ("BadParquet", "steps.parquet", "unreadable parquet")
    # 7. a camera missing in one episode
    (eps[6] / "side.mp4").unlink()
    broken[eps[6].name] = ("MissingCamera", "side.mp4", "camera 'side' is missing")
    return broken


def test_bad_inputs_are_recorded_and_nothing_else_is_lost(folder_source, tmp_path):
    src, ds = folder_source(10), tmp_path / "ds"
    broken = _break(src)
    summary = _ingest(src, ds)
    assert summary.failed == len(broken) and summary.written == 10 - len(broken)
    assert summary.exit_code(strict=False) == 0 and summary.exit_code(strict=True) == 1
    store = LanceStore(str(ds))
    failures = {r["episode_key"]: r for r in store.read(schemas.FAILURES).to_pylist()}
    assert set(failures) == set(broken)
    for key, (err, file_part, msg) in broken.items():
        f = failures[key]
        assert f["error_class"] == err, (key, f)
        assert file_part in f["file"] and key in f["file"], (key, f)
        assert msg in f["message"], (key, f)
        assert f["stage"] == "ingest" and not f["resolved"]
    good = {
        r["episode_key"] for r in store.read(schemas.EPISODES, columns=["episode_key"]).to_pylist()
    }
    assert good.isdisjoint(broken) and len(good) == 10 - len(broken)

    # re-running does not duplicate failures nor grow any table
    versions = {t: store.version(t) for t in (schemas.EPISODES, schemas.FAILURES)}
    again = _ingest(src, ds)
    assert again.failed == len(broken) and again.written == 0
    assert {t: store.version(t) for t in versions} == versions
    assert store.count(schemas.FAILURES) == len(broken)

    # fixing an episode ingests it and resolves its failure
    name = next(k for k, v in broken.items() if v[0] == "MissingCamera")
    shutil.copy(src / name / "top.mp4", src / name / "side.mp4")
    fixed = _ingest(src, ds)
    assert fixed.written == 1
    assert store.count(schemas.FAILURES, "resolved = true") == 1


def test_unknown_format_and_empty_source(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "readme.txt").write_text("not robot data")
    summary = _ingest(junk, tmp_path / "ds")
    assert summary.failed == 1 and summary.written == 0 and summary.exit_code(False) == 1
    row = LanceStore(str(tmp_path / "ds")).read(schemas.FAILURES).to_pylist()[0]
    assert row["error_class"] == "UnknownFormatError" and "unknown source format" in row["message"]
    assert row["file"] == str(junk)

    # the folder gets episodes: the source opens, and its source-level failure is resolved
    record_synthetic(junk, SynthConfig(episodes=2, size=32, seed=3))
    fixed = _ingest(junk, tmp_path / "ds")
    assert fixed.written == 2 and fixed.failed == 0
    rows = LanceStore(str(tmp_path / "ds")).read(schemas.FAILURES).to_pylist()
    assert [r["resolved"] for r in rows] == [True]


def test_dimension_mismatch_is_a_failure(folder_source, tmp_path):
    ds = tmp_path / "ds"
    _ingest(folder_source(2), ds)  # 4-d actions, 4-d states
    src = tmp_path / "seven"
    record_synthetic(src, SynthConfig(episodes=2, size=48, seed=9))
    ep = sorted(src.iterdir())[0]  # listed first: the source as a whole still fits ...
    steps = pq.read_table(ep / "steps.parquet").to_pylist()
    for r in steps:
        r["action"] = [*r["action"], 0.0, 0.0, 0.0]
    pq.write_table(pa.Table.from_pylist(steps), ep / "steps.parquet")
    summary = _ingest(src, ds)  # ... this one does not: it alone fails (was: the whole source)
    assert summary.written == 1 and summary.failed == 1
    assert summary.failures[0].error_class == "DimensionMismatch"
    assert "(7, 4) differ from the dataset's (4, 4)" in summary.failures[0].problem


def test_a_stateless_episode_in_a_dataset_with_states_says_0_state_dims(folder_source, tmp_path):
    """The message reads the row's state_dim, not the column's placeholder width (it said
    "(4, 1)" for an episode with no states)."""
    ds = tmp_path / "ds"
    _ingest(folder_source(2), ds)  # 4-d actions, 4-d states
    src = tmp_path / "bare"
    record_synthetic(src, SynthConfig(episodes=2, size=48, seed=9))
    ep = sorted(src.iterdir())[1]
    steps = pq.read_table(ep / "steps.parquet").drop_columns(["state"])
    pq.write_table(steps, ep / "steps.parquet")
    summary = _ingest(src, ds)
    assert (summary.written, summary.failed) == (1, 1)
    assert "(4, 0) differ from the dataset's (4, 4)" in summary.failures[0].problem


def test_hdf5_ingest_needs_an_instruction(hdf5_source, tmp_path):
    root, _ = hdf5_source(with_instruction=False)
    summary = _ingest(root, tmp_path / "ds")
    assert summary.failed == 4 and {f.error_class for f in summary.failures} == {
        "MissingInstruction"
    }
    summary = _ingest(root, tmp_path / "ds", instruction="fold the towel")
    assert summary.written == 4
    rows = LanceStore(str(tmp_path / "ds")).read(schemas.EPISODES).to_pylist()
    assert {r["instruction"] for r in rows} == {"fold the towel"}
    assert {c["codec"] for r in rows for c in r["cameras"]} == {"raw-rgb24", "jpeg"}


def test_a_fused_run_leaves_an_episode_with_bad_signals_to_its_own_failure(folder_source, tmp_path):
    """``wallwm run`` chooses the segmentation model on a sample of the source, and each worker
    cuts its episode, before the validation decode: an episode whose fps or actions are
    unusable (NaN) is left out of the choice and fails alone with its one clear line -- the run
    goes on (the choice raised, and a worker's cut failed as an "unexpected error")."""
    src, ds = folder_source(4, cameras=("top",)), tmp_path / "ds"
    eps = sorted(p for p in src.iterdir() if p.is_dir())
    meta = json.loads((eps[0] / "meta.json").read_text())
    meta["fps"] = float("nan")
    (eps[0] / "meta.json").write_text(json.dumps(meta))
    steps = pq.read_table(eps[1] / "steps.parquet").to_pylist()
    steps[3]["action"][0] = float("nan")
    pq.write_table(pa.Table.from_pylist(steps), eps[1] / "steps.parquet")
    summary = _ingest(src, ds, segment=SegmentConfig(), executor="local")
    assert summary.written == 2 and summary.failed == 2 and summary.events > 0
    classes = {f.error_class for f in summary.failures}
    assert classes == {"BadFps", "NonFiniteValues"}
    bad_fps = next(f for f in summary.failures if f.error_class == "BadFps")
    assert "must be a positive number, got nan" in bad_fps.problem
    assert bad_fps.file.endswith("meta.json")  # the file that holds it


def test_states_of_no_dims_are_ingested_as_no_states(folder_source, tmp_path):
    """A recorder that writes an empty state list every step: the episodes are stored without
    states and cut from their actions (each failed as "unexpected error: list_size needs to be
    a strict positive integer" -- Arrow has no list column of size 0)."""
    src, ds = folder_source(3, cameras=("top",)), tmp_path / "ds"
    for ep in sorted(p for p in src.iterdir() if p.is_dir()):
        steps = pq.read_table(ep / "steps.parquet").to_pylist()
        for row in steps:
            row["state"] = []
        pq.write_table(pa.Table.from_pylist(steps), ep / "steps.parquet")
    summary = _ingest(src, ds, segment=SegmentConfig(), executor="local")
    assert (summary.written, summary.failed) == (3, 0) and summary.events >= 3
    rows = LanceStore(str(ds)).read(schemas.EPISODES).to_pylist()
    assert all(not r["states"] for r in rows)


def test_a_fused_run_of_mixed_embodiments_keeps_the_common_one(folder_source, tmp_path):
    """One episode of another embodiment (7-d actions), listed first: ``wallwm run`` chooses
    its model on the source's common dims and that episode alone fails as a dims mismatch,
    before it is cut or decoded (the choice raised an IndexError out of the whole run; and the
    odd episode, written first, would have made every other one the mismatch)."""
    src, ds = folder_source(4, cameras=("top",)), tmp_path / "ds"
    odd = sorted(p for p in src.iterdir() if p.is_dir())[0]
    steps = pq.read_table(odd / "steps.parquet").to_pylist()
    for r in steps:
        r["action"] = [*r["action"], 0.0, 0.0, 0.0]
    pq.write_table(pa.Table.from_pylist(steps), odd / "steps.parquet")
    summary = _ingest(src, ds, segment=SegmentConfig(), executor="local")
    assert (summary.written, summary.failed) == (3, 1) and summary.events >= 3
    failure = summary.failures[0]
    assert failure.error_class == "DimensionMismatch" and failure.file.startswith(str(odd))
    assert "(7, 4) differ from the dataset's (4, 4)" in failure.problem
    stored = LanceStore(str(ds)).read(schemas.EPISODES, columns=["action_dim"])
    assert stored.column(0).to_pylist() == [4, 4, 4]


def test_a_source_read_that_breaks_unexpectedly_fails_only_its_episode(
    folder_source, tmp_path, monkeypatch
):
    """A reader bug (any exception, not a named bad input) on one episode: the fused run's
    model choice skips it and its worker records it; the others are ingested and cut."""
    from wallwm.pipeline.sources.folder import FolderSource

    src, ds = folder_source(4, cameras=("top",)), tmp_path / "ds"
    bad = sorted(p.name for p in src.iterdir() if p.is_dir())[2]
    read = FolderSource.read

    def flaky(self, ref):
        if ref.episode_key == bad:
            raise RuntimeError("reader bug")
        return read(self, ref)

    monkeypatch.setattr(FolderSource, "read", flaky)
    summary = _ingest(src, ds, segment=SegmentConfig(), executor="local")
    assert (summary.written, summary.failed) == (3, 1) and summary.events >= 3
    assert summary.failures[0].problem == "unexpected error: reader bug"
