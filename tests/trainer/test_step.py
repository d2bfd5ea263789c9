"""The training step on the run's device: placement, global-batch losses, precision, compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wallwm.trainer.data import EventFrameDataset, TextSpec, make_loader
from wallwm.trainer.device import resolve_device, to_device
from wallwm.trainer.model import MODES, WorldActionModel, preset
from wallwm.trainer.serving.protocol import InferRequest
from wallwm.trainer.step import MetricLog, TrainStep
from wallwm.trainer.view import materialize

META = torch.device("meta")


@pytest.fixture(scope="module")
def view(tmp_path_factory, synth_dataset):
    ds = synth_dataset(tmp_path_factory.mktemp("step"), episodes=4, size=32, seed=9, caption=True)
    return materialize(str(ds), None, size=32)


def _cfg():
    return preset("debug", image_size=32, action_dim=4, state_dim=4, h_max=8, chunk_len=4)


def _batch(view, n=8, seed=0):
    cfg = _cfg()
    data = EventFrameDataset(view.path, 8, 4, seed, 0.2, text=TextSpec(cfg.vocab, cfg.text_len))
    return next(iter(make_loader(data, n))), data


@pytest.mark.parametrize("mode", MODES)
def test_every_tensor_of_a_step_is_on_the_run_device(view, mode):
    """On the meta device any tensor left on (or created on) the CPU fails the step."""
    batch, _ = _batch(view)
    step = TrainStep(WorldActionModel(_cfg(), mode), META, "fp32")
    assert {p.device for p in step.model.parameters()} == {META}
    assert {t.device for t in step.ema.shadow.values()} == {META}
    result = step(batch, 1e-3)  # batch moved, forward, backward, clip, both optimisers, EMA
    assert result.terms_K.device == META and result.grad_norm.device == META
    state = step.optimizer.state_dict()["muon"]["state"]
    assert state and all(s["momentum_buffer"].device == META for s in state.values())
    out = step.model.act(to_device(batch, META), steps=2)
    assert {v.device for v in out.values()} == {META}


def test_the_step_fails_when_a_batch_tensor_stays_behind(view):
    """The meta check above can fail: a model on meta given a CPU batch does."""
    batch, _ = _batch(view)
    model = WorldActionModel(_cfg(), "event").to(META)
    with pytest.raises((RuntimeError, NotImplementedError), match="device"):
        model(batch)


def test_serving_and_offline_eval_run_on_the_engine_device(view, tmp_path):
    """Everything before the answers are copied to the host runs on the engine's device."""
    from wallwm.trainer.serving.engine import PolicyEngine
    from wallwm.trainer.train import Run, TrainConfig

    run = Run(
        TrainConfig(
            dataset=view.path.rsplit("/train/", 1)[0],
            size=32,
            preset="debug",
            steps=1,
            batch_size=4,
            h_max=8,
            chunk_len=4,
            out=str(tmp_path / "run"),
            device="cpu",
        )
    )
    run.fit()
    engine = PolicyEngine([tmp_path / "run" / "checkpoint.pt"], flow_steps=2)
    engine.device = META  # what the engine moves requests to
    engine.models["event"].model.to(META)
    request = InferRequest(
        np.zeros((32, 32, 3), np.uint8), np.zeros(4, np.float32), "task", event="reach"
    )
    # the only failure left is the final copy of the answers out of the meta device
    with pytest.raises((NotImplementedError, RuntimeError), match="meta tensor"):
        engine.infer([request])
    from wallwm.trainer.evaluate import evaluate_offline

    with pytest.raises((NotImplementedError, RuntimeError), match="meta tensor"):  # after forward
        evaluate_offline(str(tmp_path / "run" / "checkpoint.pt"), 1, 4, device="meta")


def test_global_batch_losses_are_sums_of_the_shares(view):
    """Each sample's noise comes from its id: half batches sum to the whole batch's terms."""
    batch, _ = _batch(view, n=8)
    torch.manual_seed(0)
    model = WorldActionModel(_cfg(), "event")
    whole = model(batch)

    def half(part: slice) -> dict:
        return {k: v[part] for k, v in batch.items()}

    first, second = model(half(slice(0, 3))), model(half(slice(3, 8)))
    for name, term in whole.items():
        assert torch.allclose(term.total, first[name].total + second[name].total, atol=1e-5)
        assert torch.equal(term.n, first[name].n + second[name].n)
    # the loss of a rank is its share of the global batch: shares add up to the batch's mean
    shares = sum(first[k].total / whole[k].n + second[k].total / whole[k].n for k in whole)
    assert torch.allclose(shares, sum(t.mean() for t in whole.values()), atol=1e-5)


def test_metric_log_keeps_every_step_until_flushed(view):
    from wallwm.trainer.distributed import World

    batch, _ = _batch(view)
    step = TrainStep(WorldActionModel(_cfg(), "chunk"), torch.device("cpu"), "fp32")
    log = MetricLog(World())
    for i in range(3):
        log.add(i + 1, 0.1 * (i + 1), 1e-3, step(batch, 1e-3))
    rows = list(log.flush())
    assert [r["step"] for r in rows] == [1, 2, 3] and not list(log.flush())
    assert all(r["loss"] == pytest.approx(r["flow"] + r["planner"] + r["world"]) for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"] * 1.5 and all(r["grad_norm"] > 0 for r in rows)


def test_bf16_autocast_trains_on_the_cpu(view):
    batch, _ = _batch(view)
    torch.manual_seed(0)
    step = TrainStep(WorldActionModel(_cfg(), "unified"), torch.device("cpu"), "bf16")
    assert step.dtype == torch.bfloat16
    results = [step(batch, 3e-3) for _ in range(3)]
    assert all(torch.isfinite(r.terms_K).all() for r in results)
    assert all(p.dtype == torch.float32 for p in step.model.parameters())  # master weights


def test_devices_and_precisions_are_checked():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="--device cuda: no CUDA device is visible"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="--device tpu"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="--precision fp8"):
        TrainStep(WorldActionModel(_cfg(), "event"), torch.device("cpu"), "fp8")


@pytest.mark.slow
def test_compiled_blocks_train_like_eager_ones(view):
    """--compile: the same losses, the same state dict names (checkpoints load either way)."""
    batch, _ = _batch(view)
    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        step = TrainStep(
            WorldActionModel(_cfg(), "event"), torch.device("cpu"), "fp32", compile_layers=compiled
        )
        runs[compiled] = ([step(batch, 3e-3).terms_K for _ in range(2)], step.model.state_dict())
    (eager, eager_state), (comp, comp_state) = runs[False], runs[True]
    assert list(eager_state) == list(comp_state)
    for a, b in zip(eager, comp, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)
