"""The Ray Data fan-out and the Ray task map: every item once, really processed in parallel."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from wallwm.pipeline.chain import fan_out, map_items, work_dataset


def _overlap_probe(item: dict[str, Any], root: str, wait_s: float = 2.0) -> dict[str, Any]:
    """Hold a 'running' marker for a while and report the most markers seen at once."""
    mine = Path(root) / f"running-{item['i']}"
    mine.touch()
    most, deadline = 1, time.monotonic() + wait_s
    while time.monotonic() < deadline and most < 2:
        most = max(most, len(list(Path(root).glob("running-*"))))
        time.sleep(0.01)
    mine.unlink()
    return {"i": item["i"], "most": most, "pid": os.getpid()}


@pytest.mark.usefixtures("ray_local")
def test_fan_out_runs_items_on_every_cpu(tmp_path: Path) -> None:
    import ray

    if ray.cluster_resources().get("CPU", 1) < 2:
        pytest.skip("needs a Ray cluster with two CPUs")
    rows = list(fan_out([{"i": i} for i in range(8)], _overlap_probe, {"root": str(tmp_path)}))
    assert sorted(r["i"] for r in rows) == list(range(8))
    # With Ray Data's per-operator CPU reservation on, one of two CPUs stayed idle: the items
    # ran one at a time and no probe ever saw a second marker.
    assert max(r["most"] for r in rows) >= 2


def test_fan_out_local_executor_keeps_every_item(tmp_path: Path) -> None:
    rows = list(
        fan_out(
            [{"i": i} for i in range(3)],
            _overlap_probe,
            {"root": str(tmp_path), "wait_s": 0.1},
            "local",
        )
    )
    assert [r["i"] for r in rows] == [0, 1, 2]
    assert all(r["most"] == 1 for r in rows)


@pytest.mark.usefixtures("ray_local")
def test_work_dataset_turns_off_cpu_reservation_for_itself_only() -> None:
    import ray.data

    ds = work_dataset([{"i": 0}], _overlap_probe, {"root": "unused"}, cpus=2)
    # The reservation kept one of two CPUs idle in this one-step chain (see work_dataset).
    assert ds.context.op_resource_reservation_enabled is False
    # Other Ray Data pipelines of the process (the captioner's actor pools) keep the default.
    assert ray.data.DataContext.get_current().op_resource_reservation_enabled is True


def _square_or_fail(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative item {x}")
    return x * x


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_map_items_keeps_the_order_and_raises_what_fn_raises(executor: str, request) -> None:
    if executor == "ray":
        request.getfixturevalue("ray_local")
    items = [5, 3, 0, 7, 1, 2]
    assert map_items(_square_or_fail, items, executor) == [25, 9, 0, 49, 1, 4]
    assert map_items(_square_or_fail, [], executor) == []
    with pytest.raises(ValueError, match="negative item -2"):
        map_items(_square_or_fail, [1, -2, 3], executor)


def _pid_after_a_while(_item: int) -> int:
    time.sleep(0.5)
    return os.getpid()


@pytest.mark.usefixtures("ray_local")
def test_map_items_spreads_the_items_over_the_cpus() -> None:
    import ray

    if ray.cluster_resources().get("CPU", 1) < 2:
        pytest.skip("needs a Ray cluster with two CPUs")
    pids = map_items(_pid_after_a_while, list(range(4)))
    assert os.getpid() not in pids and len(set(pids)) >= 2
