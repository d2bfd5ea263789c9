"""The experiment script's bookkeeping: pooling seeds, refusing mismatched runs, its results file.

The training and evaluation it drives are tested in ``tests/trainer``; what is tested here is
what keeps hours of seeds from being lost or silently mixed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture(scope="module")
def evc(benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    return benchmark_script("event_vs_chunk")


def _args(**over: Any) -> dict[str, Any]:
    base = {
        "tasks": ["reach-v3", "push-v3"], "demos": 50, "steps": 2500, "batch_size": 32,
        "preset": "small", "size": 96, "camera": None, "episodes": 10, "max_steps": 500,
        "action_labels": "expert", "action_noise": 0.3, "state": "observation",
        "noise_scale": 1.0, "replan_every": 8, "chunk_lens": [8], "seeds": [0],
        "arms": ["chunk"], "root": "r", "results": None, "report_only": False, "replace": False,
    }  # fmt: skip
    return {**base, **over}


def _seed(reach: int, push: int, seconds: float = 100.0) -> dict[str, Any]:
    return {
        "per_task": {"reach-v3": [reach, 10], "push-v3": [push, 10]},
        "steps_to_success": {"reach-v3": [50] * reach, "push-v3": []},
        "train_seconds": seconds,
    }


def _entry(evc: ModuleType, per_seed: dict[str, Any], **args: Any) -> dict[str, Any]:
    return {
        "mode": "chunk",
        "horizon": 8,
        **evc._pooled(per_seed),
        "per_seed": per_seed,
        "args": _args(**args),
        "data": "d0",
    }


def test_pooled_sums_successes_over_seeds_and_tasks(evc: ModuleType) -> None:
    pooled = evc._pooled({"0": _seed(2, 9, 100.0), "1": _seed(4, 7, 300.0)})
    assert (pooled["successes"], pooled["trials"]) == (22, 40)
    assert pooled["rate"] == pytest.approx(0.55)
    assert pooled["per_task"] == {"push-v3": pytest.approx(0.8), "reach-v3": pytest.approx(0.3)}
    assert pooled["seed_rates"] == {"0": pytest.approx(0.55), "1": pytest.approx(0.55)}
    assert len(pooled["steps_to_success"]["reach-v3"]) == 6
    low, high = pooled["ci95"]
    assert low < 0.55 < high
    assert pooled["train_seconds_per_seed"] == pytest.approx(200.0)


def test_a_new_seed_joins_an_arm_run_the_same_way(evc: ModuleType) -> None:
    old = _entry(evc, {"0": _seed(2, 9)}, seeds=[0])
    new = _entry(evc, {"1": _seed(4, 7)}, seeds=[1])
    merged = evc._merge_seeds(old, new)
    assert sorted(merged["per_seed"]) == ["0", "1"]
    assert merged["successes"] == 22
    # a seed rerun replaces its own earlier entry, not the others
    rerun = evc._merge_seeds(merged, _entry(evc, {"0": _seed(0, 0)}, seeds=[0]))
    assert rerun["per_seed"]["0"]["per_task"]["push-v3"] == [0, 10]
    assert rerun["successes"] == 11


def test_a_run_with_other_settings_or_data_does_not_pool(evc: ModuleType) -> None:
    old = _entry(evc, {"0": _seed(2, 9)})
    new = _entry(evc, {"1": _seed(4, 7)}, steps=1000)
    assert evc._merge_seeds(old, new)["per_seed"].keys() == {"1"}
    recaptioned = {**_entry(evc, {"1": _seed(4, 7)}), "data": "d1"}
    assert evc._merge_seeds(old, recaptioned)["per_seed"].keys() == {"1"}


def test_mismatched_run_is_refused_naming_file_arm_and_setting(
    evc: ModuleType, tmp_path: Path
) -> None:
    saved = tmp_path / "results.json"
    results = {"chunk H=8": _entry(evc, {"0": _seed(2, 9)})}
    args = argparse.Namespace(**_args(steps=1000, seeds=[1]))
    with pytest.raises(SystemExit) as refused:
        evc._check_poolable(args, saved, results, [("chunk H=8", "d0")])
    message = str(refused.value)
    assert str(saved) in message and "chunk H=8" in message and "steps=2500" in message
    same = argparse.Namespace(**_args(seeds=[1]))
    with pytest.raises(SystemExit, match="data d0 \\(now d1\\)"):  # other events or captions
        evc._check_poolable(same, saved, results, [("chunk H=8", "d1")])
    # the same settings and data, another arm, or --replace: no refusal
    evc._check_poolable(same, saved, results, [("chunk H=8", "d0")])
    evc._check_poolable(args, saved, results, [("chunk H=16", "d0")])
    replace = argparse.Namespace(**_args(steps=1000, replace=True))
    evc._check_poolable(replace, saved, results, [("chunk H=8", "d1")])


def test_arm_stored_beside_another_invocation_keeps_its_seeds_or_is_kept_aside(
    evc: ModuleType, tmp_path: Path
) -> None:
    """What the file holds when an arm finishes wins over what it held when the run began."""
    saved = tmp_path / "results.json"
    args = argparse.Namespace(**_args(results=str(saved), seeds=[1]))
    # another invocation stored seed 0 of this arm, and another arm, after this one began
    evc._report(args, tmp_path, saved, {"chunk H=8": _entry(evc, {"0": _seed(2, 9)})})
    evc._store_arm(args, tmp_path, saved, "chunk H=16", _entry(evc, {"0": _seed(1, 1)}))
    evc._store_arm(args, tmp_path, saved, "chunk H=8", _entry(evc, {"1": _seed(4, 7)}, seeds=[1]))
    stored = evc._load_results(saved)
    assert sorted(stored) == ["chunk H=16", "chunk H=8"]
    assert sorted(stored["chunk H=8"]["per_seed"]) == ["0", "1"]
    # one that stored this arm with other settings meanwhile is neither replaced nor mixed
    other = argparse.Namespace(**_args(results=str(saved), steps=1000, seeds=[2]))
    before = saved.read_text()
    with pytest.raises(SystemExit, match=r"kept in .*chunk-H-8\.refused\.json"):
        evc._store_arm(other, tmp_path, saved, "chunk H=8", _entry(evc, {"2": _seed(0, 0)}))
    assert saved.read_text() == before
    aside = json.loads((tmp_path / "results.chunk-H-8.refused.json").read_text())
    assert list(aside["results"]["chunk H=8"]["per_seed"]) == ["2"]


def test_arms_that_read_captions_are_named_by_their_captioner(evc: ModuleType) -> None:
    names = {mode: name for name, mode, _ in evc._arms([8], "signals-v2")}
    assert names == {
        "chunk": "chunk H=8",
        "chunk_text": "chunk H=8 + subtask text (signals-v2)",
        "event": "event h_max=8 (signals-v2)",
        "unified": "unified H=8 (signals-v2)",
    }


def test_data_fingerprint_follows_events_and_only_then_captions(
    evc: ModuleType, tmp_path: Path
) -> None:
    import pyarrow as pa

    from wallwm.pipeline.tables.store import LanceStore

    def dataset(name: str, ids: list[str], captions: list[str]) -> Path:
        store = LanceStore(str(tmp_path / name))
        models = ["signals-v2"] * len(ids)
        rows = pa.table({"event_id": ids, "caption": captions, "caption_model": models})
        store.upsert("events", rows, key="event_id")
        return tmp_path / name

    base = dataset("a", ["e1", "e2"], ["grasp the puck", "carry the puck"])
    shuffled = dataset("b", ["e2", "e1"], ["carry the puck", "grasp the puck"])
    recaptioned = dataset("c", ["e1", "e2"], ["grasp the puck", "grasp the puck"])
    resegmented = dataset("d", ["e1", "e3"], ["grasp the puck", "carry the puck"])
    fp = evc.data_fingerprint
    assert fp(base, True) == fp(shuffled, True)  # row order does not matter
    assert fp(base, False) == fp(recaptioned, False) != fp(resegmented, False)
    assert fp(base, True) != fp(recaptioned, True)
    assert evc._captioner(base) == "signals-v2"


def test_median_step_seconds_ignores_a_pause(evc: ModuleType, tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    seconds = [float(s) for s in range(10)] + [s + 600.0 for s in range(10, 20)]
    rows = [json.dumps({"step": step, "seconds": t}) for step, t in enumerate(seconds)]
    log.write_text("\n".join(rows) + "\n")
    assert evc._median_step_seconds(log) == pytest.approx(1.0)
    assert evc._median_step_seconds(tmp_path / "missing.jsonl") is None


def test_report_writes_the_results_file_and_plot_where_asked(
    evc: ModuleType, tmp_path: Path
) -> None:
    saved = tmp_path / "kept" / "results.json"
    stored = {**_seed(2, 9), "step_seconds": 1.25}
    results = {
        "chunk H=8": _entry(evc, {"0": stored, "1": _seed(4, 7)}),
        "event": {**_entry(evc, {"0": _seed(1, 1)}), "mode": "event", "horizon": 16},
    }
    args = argparse.Namespace(**_args(results=str(saved)))
    evc._report(args, tmp_path / "root", saved, results)
    assert saved.with_suffix(".png").stat().st_size > 0
    assert not saved.with_suffix(".partial").exists()
    data = json.loads(saved.read_text())
    assert data["best_chunk"] == "chunk H=8"
    # the legacy name of an arm stored before names carried the horizon is renamed on load
    assert set(evc._load_results(saved)) == {"chunk H=8", "event h_max=16"}
    # a seed's stored median s/step is used; the seed without one has no log under root
    assert evc._step_seconds(tmp_path / "root", results["chunk H=8"]) == "1.25"
    assert evc._step_seconds(tmp_path / "root", results["event"]) == "-"
    # a report-only run plots the stored results and leaves the file as it was
    before = saved.read_text()
    evc._report(argparse.Namespace(**_args(report_only=True, steps=1)), tmp_path, saved, results)
    assert saved.read_text() == before


def test_a_finished_run_is_recognised(evc: ModuleType, tmp_path: Path) -> None:
    import torch

    checkpoint = tmp_path / "checkpoint.pt"
    assert evc._finished_seconds(checkpoint, 10) is None
    torch.save({"step": 7, "train_seconds": 3.0}, checkpoint)
    assert evc._finished_seconds(checkpoint, 10) is None
    assert evc._finished_seconds(checkpoint, 7) == 3.0
    torch.save({"step": 7}, checkpoint)  # written before checkpoints kept the training time
    assert evc._finished_seconds(checkpoint, 7) == 0.0
