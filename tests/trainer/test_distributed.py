"""Data-parallel training: rank-shared sample stream, Ray Train workers, resources, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.trainer.data import ClusterBalancedSampler
from wallwm.trainer.launch import plan_resources
from wallwm.trainer.train import CHECKPOINT, TrainConfig, local_batch_size, train

WEIGHTS = np.array([1.0, 0.0, 3.0, 2.0, 0.5, 1.0, 4.0])


def _stream(world: int, steps: int, batch: int = 8, start_step: int = 0) -> list[list]:
    """Per step, the global batch the ``world`` ranks draw together (rank 0's share first)."""
    ranks = []
    for rank in range(world):
        sampler = ClusterBalancedSampler(WEIGHTS, 24, seed=3, rank=rank, world_size=world,
                                         batch_size=batch)  # fmt: skip
        consumed = start_step * batch
        sampler.load_state_dict({"epoch": consumed // 24, "position": consumed % 24, "seed": 3})
        items, it = [], iter(sampler)
        while len(items) < steps * batch // world:
            items += list(it) or []
            it = iter(sampler)
        ranks.append(items)
    share = batch // world
    return [
        [x for r in range(world) for x in ranks[r][s * share : (s + 1) * share]]
        for s in range(steps)
    ]


def test_ranks_share_one_global_stream():
    one = _stream(1, 7)  # 7 steps of 8 over epochs of 24: crosses two epoch boundaries
    for world in (2, 4, 8):
        assert _stream(world, 7) == one  # the union is the one-process stream, in order
        shares = [_stream(world, 7)[s] for s in range(7)]
        ids = [sid for batch in shares for _, sid in batch]
        assert len(ids) == len(set(ids))  # disjoint
    # a run resumed with another number of workers continues the same stream
    assert _stream(4, 4, start_step=3) == one[3:]
    assert _stream(1, 3, start_step=4) == _stream(2, 7)[4:]


def test_shares_must_divide_evenly():
    with pytest.raises(ValueError, match="cannot be shared by 3 ranks"):
        ClusterBalancedSampler(WEIGHTS, 24, rank=0, world_size=3, batch_size=8)
    with pytest.raises(ValueError, match="--batch-size 10 cannot be shared evenly by 4 workers"):
        local_batch_size(10, 4)
    assert local_batch_size(32, 4) == 8


def test_resources_are_checked_before_ray_waits_for_them():
    assert plan_resources("auto", 2, {"CPU": 2.0}) is False
    assert plan_resources("auto", 2, {"CPU": 16.0, "GPU": 2.0}) is True
    assert plan_resources("cpu", 2, {"CPU": 16.0, "GPU": 2.0}) is False
    with pytest.raises(ValueError, match=r"needs 4 GPUs .* the Ray cluster has 1 "):
        plan_resources("cuda", 4, {"CPU": 16.0, "GPU": 1.0})
    with pytest.raises(ValueError, match=r"needs 2 GPUs .* the Ray cluster has 0"):
        plan_resources("cuda", 2, {"CPU": 16.0})
    with pytest.raises(ValueError, match="needs 3 CPUs; the Ray cluster has 2"):
        plan_resources("cpu", 6, {"CPU": 2.0})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, synth_dataset):
    return synth_dataset(tmp_path_factory.mktemp("ddp"), episodes=6, size=32, seed=5)


def _common(dataset, **kw):
    return {
        "dataset": str(dataset),
        "size": 32,
        "preset": "debug",
        "batch_size": 8,
        "h_max": 8,
        "chunk_len": 4,
        "warmup_steps": 2,
        "lr": 3e-3,
        "log_every": 1,
        "steps": 20,
        "device": "cpu",
        **kw,
    }


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))  # each step logged once
    return [r["loss"] for r in rows]


@pytest.mark.usefixtures("ray_local")
def test_two_ray_train_workers_train_the_one_process_run(dataset, tmp_path):
    from wallwm.trainer.launch import train_ray

    one = [m["loss"] for m in train(TrainConfig(**_common(dataset), out=str(tmp_path / "one")))]
    two = tmp_path / "two"
    # 10 of 20 steps on two gloo workers, a checkpoint (and a report to Ray) every 2: 5 reports
    last = train_ray(
        TrainConfig(**_common(dataset), out=str(two), stop_after=10, checkpoint_every=2),
        num_workers=2,
    )
    assert last["step"] == 10
    assert _losses(two) == pytest.approx(one[:10], rel=2e-3)
    # rank 0 alone wrote: one checkpoint, one metrics log, one TensorBoard run
    assert sorted(p.name for p in two.iterdir()) == [
        CHECKPOINT, "metrics.jsonl", "ray", "tensorboard"
    ]  # fmt: skip
    assert len(list((two / "tensorboard").iterdir())) == 1
    # Ray keeps one reported checkpoint holding the checkpoint file alone: the run folder does
    # not grow with the number of reports
    reported = [p for p in (two / "ray").rglob("checkpoint_*") if p.is_dir()]
    assert len(reported) == 1
    assert [p.name for p in reported[0].iterdir()] == [CHECKPOINT]
    assert (reported[0] / CHECKPOINT).stat().st_size == (two / CHECKPOINT).stat().st_size
    state = torch.load(two / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["step"] == 10 and state["trained_on"]["workers"] == 2
    assert all(t.device.type == "cpu" for t in state["model"].values())
    # the two-worker checkpoint resumes in one process on the same sample stream
    resumed = train(TrainConfig(**_common(dataset), out=str(two), resume=True))
    assert [m["loss"] for m in resumed] == pytest.approx(one[10:], rel=2e-3)
    assert _losses(two) == pytest.approx(one, rel=2e-3)


@pytest.mark.usefixtures("ray_local")
def test_cli_reaches_every_training_option_and_refuses_what_cannot_run(dataset, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", "--dataset", str(dataset), "--size", "32", "--preset", "debug"]
    ok = runner.invoke(
        app,
        [
            *args, "--local", "--steps", "3", "--batch-size", "4", "--h-max", "6",
            "--chunk-len", "3", "--warmup-steps", "1", "--weight-decay", "0.05",
            "--grad-clip", "0.5", "--ema-decay", "0.99", "--caption-dropout", "0.3",
            "--log-every", "1", "--checkpoint-every", "2", "--loader-workers", "0",
            "--device", "cpu", "--precision", "bf16", "--out", str(out),
        ],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    saved = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)["config"]
    assert (saved["h_max"], saved["chunk_len"], saved["precision"]) == (6, 3, "bf16")
    assert (saved["grad_clip"], saved["ema_decay"], saved["caption_dropout"]) == (0.5, 0.99, 0.3)
    defaults = TrainConfig(dataset="d")
    assert (defaults.h_max, defaults.chunk_len) == (8, 8)  # the measured best horizons
    cases = {
        ("--num-workers", "3", "--batch-size", "8"): "cannot be shared evenly by 3 workers",
        ("--num-workers", "4", "--device", "cuda"): "needs 4 GPUs",
        ("--local", "--device", "cuda"): "--device cuda: no CUDA device",
        ("--local", "--precision", "fp16"): "--precision",
        ("--local", "--steps", "0"): "--steps",
    }
    for extra, message in cases.items():
        if "cuda" in extra and torch.cuda.is_available():
            continue
        bad = runner.invoke(app, [*args, *extra, "--out", str(tmp_path / "bad")])
        assert bad.exit_code in (1, 2), (extra, bad.output)
        assert message in " ".join(bad.output.split()), (extra, bad.output)
        assert "Traceback" not in bad.output
