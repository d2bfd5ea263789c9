"""Fault injection: a Ray worker SIGKILLed mid-ingest, the driver SIGKILLed mid-write.

Either the stage completes through Ray's retries or a rerun completes exactly the rest; no row is
duplicated, lost or put on the wrong episode, and every table stays readable at its last version.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lance
import psutil
import pytest

from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.segmentation.stage import SegmentStageConfig, run_segment
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore

EPISODES = 40


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "src"
    record_synthetic(root, SynthConfig(episodes=EPISODES, size=64, seed=5))
    return root


def content(ds: Path) -> tuple[dict[str, str], list[tuple[str, int, int]]]:
    """Episodes (id -> content hash) and events (episode, start, end) of a dataset."""
    store = LanceStore(str(ds))
    episodes = {
        r["episode_id"]: r["content_hash"]
        for r in store.read(schemas.EPISODES, columns=["episode_id", "content_hash"]).to_pylist()
    }
    events = [
        (r["episode_id"], r["start_frame"], r["end_frame"])
        for r in store.read(
            schemas.EVENTS, columns=["episode_id", "start_frame", "end_frame"]
        ).to_pylist()
    ]
    return episodes, sorted(events)


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> tuple[dict[str, str], list[tuple[str, int, int]]]:
    """The same source ingested without faults, in this process."""
    ds = tmp_path_factory.mktemp("reference") / "ds"
    cfg = IngestConfig(source=str(source), dataset=str(ds), executor="local")
    run_ingest(cfg.model_copy(update={"segment": SegmentConfig()}))
    return content(ds)


def kill_first_worker(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first Ray worker process seen running a Ray Data map task."""
    while not stop.is_set():
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if cmdline.startswith("ray::") and "MapBatches" in cmdline:
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
                return
        time.sleep(0.02)


@pytest.mark.usefixtures("ray_local")
def test_a_worker_killed_mid_ingest_loses_and_duplicates_nothing(source, reference, tmp_path):
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=kill_first_worker, args=(stop, killed))
    killer.start()
    try:
        ds = tmp_path / "ds"
        summary = run_ingest(
            IngestConfig(source=str(source), dataset=str(ds), segment=SegmentConfig())
        )
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was running a map task to kill"
    # Ray Data retried the dead worker's task: the stage completed in this very run
    assert summary.written == EPISODES and summary.failed == 0
    assert content(ds) == reference
    ids = LanceStore(str(ds)).read(schemas.EVENTS, columns=["event_id"]).column(0).to_pylist()
    assert len(ids) == len(set(ids))


def test_the_driver_killed_mid_write_leaves_readable_tables_and_a_rerun_does_the_rest(
    source, reference, tmp_path
):
    ds = tmp_path / "ds"
    cmd = [sys.executable, "-m", "wallwm.cli.main", "ingest", str(source), "-d", str(ds)]
    cmd += ["--batch-episodes", "4"]
    driver = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    versions = ds / f"{schemas.EPISODES}.lance" / "_versions"
    deadline = time.time() + 240
    while time.time() < deadline and driver.poll() is None:
        if versions.is_dir() and len(list(versions.iterdir())) >= 2:  # mid-way: some commits
            break
        time.sleep(0.01)
    assert driver.poll() is None, "the ingest finished before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its embedded Ray, no clean-up
    driver.wait()

    written = {}
    for table in ds.glob("*.lance"):  # every table opens and reads at its last version
        data = lance.dataset(str(table))
        assert data.to_table().num_rows == data.count_rows()
        written[table.stem] = data.count_rows()
    assert 0 < written[schemas.EPISODES] < EPISODES

    # what `wallwm run` does next: ingest (and segment) the rest, then segment what lacks events
    rerun = run_ingest(
        IngestConfig(source=str(source), dataset=str(ds), executor="local", segment=SegmentConfig())
    )
    assert rerun.unchanged == written[schemas.EPISODES]
    assert rerun.written == EPISODES - written[schemas.EPISODES] and rerun.failed == 0
    caught_up = run_segment(SegmentStageConfig(dataset=str(ds), executor="local"))
    assert caught_up.segmented == written[schemas.EPISODES] and caught_up.failed == 0
    assert content(ds) == reference
