"""A real multi-node Ray cluster on this machine: a head and two worker nodes, each its own
``ray start`` (own raylet, own resources). ``wallwm run`` and a two-worker ``wallwm train`` join
it with ``--ray-address``; then one worker node is SIGKILLed mid-ingest and the stage completes on
the node that is left (or a rerun completes exactly the rest).

Every process of the cluster is found by the cluster's own temp dir and the raylet's node-manager
port, so the test never touches another Ray on the machine (the session's embedded one).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.runtime import START_BANNER
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """Head + worker nodes started with ``ray start``; killed node by node, or all at once."""

    def __init__(self) -> None:
        # short: Ray's socket paths live under it and Unix sockets are limited to ~107 bytes
        self.temp_dir = tempfile.mkdtemp(prefix="wr", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, int] = {}  # name -> node-manager port (finds its raylet)

    def _start(self, name: str, args: list[str]) -> None:
        node_port = free_port()
        common = ["--node-manager-port", str(node_port), "--object-store-memory", str(300 << 20)]
        common += ["--temp-dir", self.temp_dir, "--disable-usage-stats"]
        subprocess.run(
            [RAY, "start", *args, *common], env=ENV, check=True, capture_output=True, timeout=120
        )
        self.nodes[name] = node_port

    def start(self, workers: int, cpus: int) -> None:
        """The head schedules nothing (0 CPUs): all work lands on the worker nodes."""
        head = ["--head", "--port", str(self.port), "--num-cpus", "0", "--include-dashboard=false"]
        head += ["--ray-client-server-port", str(free_port())]
        self._start("head", head)
        for i in range(workers):
            self._start(f"worker{i}", ["--address", self.address, "--num-cpus", str(cpus)])

    def raylet(self, name: str) -> psutil.Process:
        flag = f"--node_manager_port={self.nodes[name]}"
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if cmdline and cmdline[0].endswith("raylet") and flag in cmdline:
                return proc
        raise LookupError(f"no raylet for node {name}")

    def node_processes(self, name: str) -> list[psutil.Process]:
        raylet = self.raylet(name)
        return [raylet, *raylet.children(recursive=True)]

    def kill_node(self, name: str) -> None:
        """SIGKILL a node's raylet and every process under it (its workers): the node is lost."""
        for proc in self.node_processes(name):
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:  # exited between listing and killing
                continue

    def stop(self) -> None:
        procs = [
            p
            for p in psutil.process_iter(["cmdline"])
            if any(self.temp_dir in arg for arg in p.info["cmdline"] or [])
        ]
        for proc in [c for p in procs for c in p.children(recursive=True)] + procs:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster()
    try:
        c.start(workers=2, cpus=2)
        yield c
    finally:
        c.stop()


def wallwm(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "wallwm.cli.main", *args]
    return subprocess.run(
        cmd, check=False, env=ENV, capture_output=True, text=True, timeout=timeout
    )


# Two CLI runs of up to 400 s each: a hung one must fail this test on its own timeout, not end
# the session at pytest's 600 s (a whole CI run was lost that way on a loaded machine).
@pytest.mark.timeout(900)
def test_run_and_two_worker_training_on_a_three_node_cluster(cluster, tmp_path):
    src, ds = tmp_path / "src", tmp_path / "ds"
    record_synthetic(src, SynthConfig(episodes=8, size=32, seed=2))
    out = wallwm("run", str(src), "-d", str(ds), "--ray-address", cluster.address)
    assert out.returncode == 0, out.stderr[-3000:]
    assert START_BANNER not in out.stderr  # Ray's INFO line at start, whatever the log level
    store = LanceStore(str(ds))
    assert store.count(schemas.EPISODES) == 8 and store.count(schemas.EVENTS) > 8
    assert store.count(schemas.EVENTS, "embedding IS NULL OR cluster_id IS NULL") == 0
    assert store.count(schemas.CLUSTERS) > 0

    run = tmp_path / "train"
    args = ["-d", str(ds), "--ray-address", cluster.address, "--num-workers", "2"]
    args += ["--preset", "debug", "--steps", "3", "--batch-size", "4", "--size", "32"]
    out = wallwm("train", *args, "--out", str(run))
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run / "checkpoint.pt").exists() and "step 3" in out.stdout
    [row] = store.read(schemas.RUNS, where="stage = 'train'").to_pylist()
    assert json.loads(row["config_json"])["workers"] == 2


def test_a_node_lost_mid_ingest_loses_and_duplicates_nothing(cluster, tmp_path):
    src, ds, ref = tmp_path / "src", tmp_path / "ds", tmp_path / "ref"
    episodes = 40
    record_synthetic(src, SynthConfig(episodes=episodes, size=64, seed=4))
    run_ingest(IngestConfig(source=str(src), dataset=str(ref), executor="local"))
    cmd = [sys.executable, "-m", "wallwm.cli.main", "ingest", str(src), "-d", str(ds)]
    driver = subprocess.Popen(
        [*cmd, "--ray-address", cluster.address, "--batch-episodes", "4"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim, deadline = None, time.time() + 240
    while victim is None and time.time() < deadline and driver.poll() is None:
        for proc in cluster.node_processes("worker1")[1:]:
            try:
                command = " ".join(proc.cmdline())
            except psutil.Error:  # a worker that exited (or is a zombie) while we looked
                continue
            if "MapBatches" in command:
                victim = proc
                break
        time.sleep(0.02)
    assert victim is not None, "the ingest never ran a map task on worker1"
    cluster.kill_node("worker1")
    stdout, stderr = driver.communicate(timeout=400)

    store = LanceStore(str(ds))
    if driver.returncode != 0:  # the stage could not finish: a rerun does exactly the rest
        done = store.count(schemas.EPISODES)
        rerun = wallwm("ingest", str(src), "-d", str(ds), "--ray-address", cluster.address)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert f"{episodes - done} written, {done} unchanged" in rerun.stdout, rerun.stdout
    else:  # Ray rescheduled the lost node's tasks on the other one: done in this run
        assert f"{episodes} written, 0 unchanged" in stdout, (stdout, stderr[-3000:])
    rows = store.read(schemas.EPISODES, columns=["episode_id", "content_hash"]).to_pylist()
    expected = LanceStore(str(ref)).read(schemas.EPISODES, columns=["episode_id", "content_hash"])
    assert sorted((r["episode_id"], r["content_hash"]) for r in rows) == sorted(
        (r["episode_id"], r["content_hash"]) for r in expected.to_pylist()
    )
    assert store.count(schemas.FAILURES) == 0
