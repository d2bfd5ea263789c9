"""A dataset on S3-compatible storage, end to end: run (ingest, segment, caption, embed, cluster)
-> tag -> materialize -> train, against a local S3 server (moto's server mode) the test starts.

Lance reaches the store through ``s3://`` with the endpoint and credentials from the environment,
exactly as a user configures it; every command runs as its own process (its embedded Ray's workers
inherit the environment, as a cluster's nodes would hold their own credentials).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic

pytestmark = pytest.mark.slow
BUCKET = "wallwm-data"


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "WALLWM_VIEW_CACHE": str(tmp_path_factory.mktemp("view-cache")),
        "RAY_AUTH_MODE": "disabled",
    }
    try:
        import boto3

        deadline = time.time() + 60
        while True:
            try:
                boto3.client(
                    "s3",
                    endpoint_url=endpoint,
                    region_name="us-east-1",
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                ).create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield env
    finally:
        server.kill()
        server.wait()


def wallwm(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "wallwm.cli.main", *args]
    return subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=400, check=False
    )


def test_a_dataset_on_s3_from_ingest_to_training(s3_env, tmp_path):
    src = tmp_path / "src"
    record_synthetic(src, SynthConfig(episodes=6, size=32, seed=1))
    ds = f"s3://{BUCKET}/robots/ds"

    first = wallwm(s3_env, tmp_path, "run", str(src), "-d", ds)
    assert first.returncode == 0, first.stderr[-3000:]
    status = json.loads(wallwm(s3_env, tmp_path, "status", "-d", ds, "--json").stdout)
    rows = {t["table"]: t["rows"] for t in status["tables"]}
    assert rows["episodes"] == 6 and rows["events"] > 6 and rows["clusters"] > 0

    # idempotent on the object store too: a rerun writes nothing
    again = wallwm(s3_env, tmp_path, "run", str(src), "-d", ds)
    assert again.returncode == 0 and "0 written, 6 unchanged" in " ".join(again.stdout.split())

    assert wallwm(s3_env, tmp_path, "clusters", "tag", "v1", "-d", ds).returncode == 0
    view = wallwm(s3_env, tmp_path, "materialize", "-d", ds, "--tag", "v1", "--size", "32")
    assert view.returncode == 0, view.stderr[-3000:]
    run = tmp_path / "run"
    train = wallwm(
        s3_env, tmp_path, "train", "-d", ds, "--tag", "v1", "--local", "--preset", "debug",
        "--steps", "3", "--batch-size", "4", "--size", "32", "--out", str(run),
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    assert (run / "checkpoint.pt").exists()
    # the view lives in the local cache, nothing was written to a local "s3:" folder
    assert any(Path(s3_env["WALLWM_VIEW_CACHE"]).rglob("meta.json"))
    assert not (tmp_path / "s3:").exists()

    typo = wallwm(s3_env, tmp_path, "status", "-d", f"s3://{BUCKET}/robots/typo")
    assert typo.returncode == 2 and "not a wallwm dataset" in typo.stderr
    assert "Traceback" not in typo.stderr


def test_writers_creating_one_new_table_on_s3_all_land(s3_env):
    """Six writers upserting into one new table on S3 at once: every row lands.

    Lance's create is not atomic (lance-format/lance#4451) and an object store has no lock:
    with each writer's rows in its create, one writer's rows were lost in 6 of 6 rounds
    against this server. The store creates the table empty and merges every writer's rows."""
    import multiprocessing as mp

    from wallwm.pipeline.tables.store import LanceStore

    ctx = mp.get_context("spawn")
    aws = {k: v for k, v in s3_env.items() if k.startswith("AWS_")}
    for round_ in range(2):
        root = f"s3://{BUCKET}/race{round_}"
        together = ctx.Barrier(6)
        procs = [ctx.Process(target=_upsert_one, args=(root, k, together, aws)) for k in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * 6
        with pytest.MonkeyPatch.context() as env:
            for k, v in aws.items():
                env.setenv(k, v)
            assert LanceStore(root).count("t") == 6 * 20


def _upsert_one(root: str, k: int, together: object, aws: dict[str, str]) -> None:
    import pyarrow as pa

    from wallwm.pipeline.tables.store import LanceStore

    os.environ.update(aws)
    store = LanceStore(root)
    together.wait()  # type: ignore[attr-defined]  # every writer finds no table, all create it
    ids = [f"{k}-{i:02d}" for i in range(20)]
    store.upsert("t", pa.table({"id": ids, "value": list(range(20))}), "id")
