"""Policy serving latency and throughput: served ``infer`` next to the in-process call.

A ``small``-preset event-mode checkpoint (96 px images, 4-D state/actions, a 60-caption bank;
untrained weights: latency does not depend on them) is served by ``wallwm serve`` in its own
process (as a robot would use it) and, optionally, by a one-replica Ray Serve deployment. Rows:

- in-process: ``PolicyEngine.infer`` on one request (the baseline) and on 8 at once;
- served, one client, msgpack and JSON bodies: p50/p99 latency, ratio to in-process;
- served, 8 concurrent clients (threads, one kept-alive connection each): p50/p99 latency,
  requests/s, errors, and the mean micro-batch size the server reports.

Usage: ``python benchmarks/serve.py [--requests 300] [--ray-serve]``
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from wallwm.trainer.model import WorldActionModel, preset
from wallwm.trainer.serving.client import PolicyClient, ServerError
from wallwm.trainer.serving.engine import PolicyEngine
from wallwm.trainer.serving.protocol import InferRequest

SIZE = 96
INSTRUCTION = "pick up the puck and place it at the goal"


def write_checkpoint(path: Path) -> Path:
    cfg = preset("small", image_size=SIZE, action_dim=4, state_dim=4)
    model = WorldActionModel(cfg, "event")
    from dataclasses import asdict

    captions = [(INSTRUCTION, f"move the gripper toward target {i}") for i in range(60)]
    torch.save(
        {
            "mode": "event",
            "model_config": asdict(cfg),
            "stats": None,
            "ema": {"shadow": model.state_dict()},
            "caption_bank": captions,
            "dataset": {"uri": "benchmark", "tag": None, "versions": {}},
            "step": 0,
        },
        path,
    )
    return path


def request(i: int) -> InferRequest:
    rng = np.random.default_rng(i)
    return InferRequest(
        rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
        rng.normal(size=4).astype(np.float32),
        INSTRUCTION,
        event="move the gripper toward target 3",
        seed=i,
    )


def percentiles(latencies_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(latencies_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def timed(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(client: PolicyClient, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            client.health()
            return
        except (OSError, ServerError):  # not listening yet, or not deployed yet
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def concurrent_load(url: str, clients: int, per_client: int) -> dict[str, float]:
    def run(c: int) -> tuple[list[float], int]:
        errors, latencies = 0, []
        with PolicyClient(url) as client:
            for i in range(per_client):
                req = request(c * 10_000 + i)
                t = time.perf_counter()
                try:
                    client.infer_request(req)
                except Exception:  # noqa: BLE001 -- counted, the load goes on
                    errors += 1
                latencies.append(time.perf_counter() - t)
        return latencies, errors

    before = PolicyClient(url).health()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(run, range(clients)))
    wall = time.perf_counter() - start
    after = PolicyClient(url).health()
    latencies = [x for lat, _ in results for x in lat]
    p50, p99 = percentiles(latencies)
    batches = after["batches"] - before["batches"]
    return {
        "p50": p50,
        "p99": p99,
        "rps": len(latencies) / wall,
        "errors": sum(e for _, e in results),
        "batch": len(latencies) / batches if batches else float("nan"),
    }


def serve_process(checkpoint: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "wallwm.cli.main", "serve"),
            *("--checkpoint", str(checkpoint), "--port", str(port)),
        ],
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--ray-serve", action="store_true")
    args = parser.parse_args()
    n = args.requests
    rows: list[tuple[str, float, float, float, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(Path(tmp) / "small.pt")
        engine = PolicyEngine([ckpt])
        timed(lambda i: engine.infer([request(i)]), 20)  # warm-up
        p50_local, p99_local = percentiles(timed(lambda i: engine.infer([request(i)]), n))
        rows.append(("in-process, 1 request", p50_local, p99_local, 1000 / p50_local, "-", "-"))
        batch8 = [request(i) for i in range(8)]
        p50_b, p99_b = percentiles(timed(lambda _i: engine.infer(batch8), max(20, n // 8)))
        rows.append(("in-process, batch of 8", p50_b, p99_b, 8000 / p50_b, "-", "8"))

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = serve_process(ckpt, port)
        try:
            client = PolicyClient(url)
            wait_healthy(client)
            for binary, name in ((True, "msgpack"), (False, "JSON")):
                client.binary = binary
                timed(lambda i: client.infer_request(request(i)), 20)
                p50, p99 = percentiles(timed(lambda i: client.infer_request(request(i)), n))
                rows.append((f"served, 1 client, {name}", p50, p99, 1000 / p50, "0", "1"))
            load = concurrent_load(url, args.clients, max(10, n // args.clients))
            rows.append(
                (
                    f"served, {args.clients} clients, msgpack",
                    load["p50"],
                    load["p99"],
                    load["rps"],
                    str(int(load["errors"])),
                    f"{load['batch']:.1f}",
                )
            )
        finally:
            proc.terminate()
            proc.wait(30)
        if args.ray_serve:
            rows += ray_serve_rows(ckpt, n, args.clients)

    table = Table(title=f"policy serving, small preset ({SIZE} px, event mode), CPU")
    for col in ("path", "p50 ms", "p99 ms", "req/s", "errors", "batch", "p50 vs in-process"):
        table.add_column(col, justify="right")
    for name, p50, p99, rps, errors, batch in rows:
        table.add_row(
            name,
            f"{p50:.2f}",
            f"{p99:.2f}",
            f"{rps:.0f}",
            errors,
            batch,
            f"{p50 / p50_local:.2f}x",
        )
    Console(width=140).print(table)


def ray_serve_rows(
    ckpt: Path, n: int, clients: int
) -> list[tuple[str, float, float, float, str, str]]:
    from ray import serve

    from wallwm.trainer.serving.server import ServeConfig, run_ray_serve

    port = free_port()
    url = run_ray_serve(
        ServeConfig(checkpoints=[str(ckpt)], port=port, replicas=1, cpus_per_replica=2),
        block=False,
    )
    try:
        client = PolicyClient(url)
        wait_healthy(client)
        timed(lambda i: client.infer_request(request(i)), 20)
        p50, p99 = percentiles(timed(lambda i: client.infer_request(request(i)), n))
        load = concurrent_load(url, clients, max(10, n // clients))
    finally:
        serve.shutdown()
    return [
        ("Ray Serve (1 replica), 1 client", p50, p99, 1000 / p50, "0", "-"),
        (
            f"Ray Serve (1 replica), {clients} clients",
            load["p50"],
            load["p99"],
            load["rps"],
            str(int(load["errors"])),
            "-",
        ),
    ]


if __name__ == "__main__":
    main()
