"""Training, evaluation and serving on a CUDA GPU, and checkpoints moving between GPU and CPU.

Marked ``gpu``: they run wherever CUDA exists (the lent H200 in a session that has one) and skip
elsewhere, CI included (its machines have no GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wallwm.trainer.model import WorldActionModel, preset
from wallwm.trainer.serving.protocol import InferRequest
from wallwm.trainer.step import TrainStep

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda")


def _batch(n: int = 16) -> dict:
    g = torch.Generator().manual_seed(0)
    texts = ["reach the puck", "grasp the puck", ""] * n
    return {
        "images_BNCHW": torch.randint(0, 255, (n, 1, 3, 32, 32), dtype=torch.uint8, generator=g),
        "end_images_BNCHW": torch.randint(0, 255, (n, 1, 3, 32, 32), dtype=torch.uint8),
        "state_BS": torch.randn(n, 4, generator=g),
        "actions_BHA": torch.randn(n, 8, 4, generator=g),
        "action_mask_BH": torch.ones(n, 8, dtype=torch.bool),
        "chunk_BCA": torch.randn(n, 4, 4, generator=g),
        "chunk_mask_BC": torch.ones(n, 4, dtype=torch.bool),
        "chunk_in_event_BC": torch.ones(n, 4, dtype=torch.bool),
        "flow_noise_BHA": torch.randn(n, 8, 4, generator=g),
        "flow_tau": torch.rand(n, generator=g),
        "instruction": texts[:n],
        "caption": texts[1 : n + 1],
        "next_caption": texts[2 : n + 2],
    }


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_step_trains_on_the_gpu(precision):
    cfg = preset("debug", image_size=32, action_dim=4, state_dim=4, h_max=8, chunk_len=4)
    torch.manual_seed(0)
    step = TrainStep(WorldActionModel(cfg, "event"), CUDA, precision)
    assert {p.device.type for p in step.model.parameters()} == {"cuda"}
    first = step(_batch(), 3e-3)
    for _ in range(20):
        last = step(_batch(), 3e-3)
    assert last.terms_K.device.type == "cuda"
    assert torch.isfinite(last.terms_K).all() and last.terms_K.sum() < first.terms_K.sum()


def test_gpu_checkpoints_serve_on_the_cpu_and_back(tmp_path, synth_dataset):
    from wallwm.trainer.evaluate import evaluate_offline
    from wallwm.trainer.serving.engine import PolicyEngine
    from wallwm.trainer.train import TrainConfig, train

    ds = synth_dataset(tmp_path, episodes=4, size=32, seed=3, caption=True)
    common = {"dataset": str(ds), "size": 32, "preset": "debug", "steps": 4, "batch_size": 8}
    train(TrainConfig(**common, device="cuda", out=str(tmp_path / "gpu")))
    train(TrainConfig(**common, device="cpu", out=str(tmp_path / "cpu")))
    state = torch.load(tmp_path / "gpu" / "checkpoint.pt", weights_only=True)
    assert state["trained_on"]["device"].startswith("cuda")
    assert all(t.device.type == "cpu" for t in state["model"].values())  # saved for any machine
    request = InferRequest(
        np.zeros((32, 32, 3), np.uint8), np.zeros(4, np.float32), "task", seed=5, event="reach"
    )
    for run in ("gpu", "cpu"):
        ckpt = tmp_path / run / "checkpoint.pt"
        on_cpu = PolicyEngine([ckpt], device="cpu").infer([request])[0]
        on_gpu = PolicyEngine([ckpt], device="cuda", precision="fp32").infer([request])[0]
        np.testing.assert_allclose(on_cpu.actions_HA, on_gpu.actions_HA, atol=1e-3)
        for device in ("cpu", "cuda"):
            result = evaluate_offline(str(ckpt), 1, 4, device=device)
            assert np.isfinite(list(result["metrics"].values())).all()


def test_cli_trains_on_the_gpu(tmp_path, synth_dataset):
    from typer.testing import CliRunner

    from wallwm.cli.main import app

    ds = synth_dataset(tmp_path, episodes=4, size=32, seed=4)
    out = tmp_path / "run"
    args = ["train", "-d", str(ds), "--size", "32", "--preset", "debug", "--steps", "3"]
    result = CliRunner().invoke(app, [*args, "--local", "--device", "cuda", "--out", str(out)])
    assert result.exit_code == 0, result.output
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["trained_on"]["device"].startswith("cuda")
    assert state["trained_on"]["precision"] == "auto"
