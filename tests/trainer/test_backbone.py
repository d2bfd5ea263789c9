"""The model on a pretrained VLM backbone: a tiny random-weight Qwen2-VL built here (no hub).

Forward/backward in every mode, the staircase gradient from actions into the language path,
what a checkpoint keeps, and the product path: train from a tag, resume, evaluate, serve.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.trainer.backbone.config import BackboneConfig, backbone_fingerprint
from wallwm.trainer.backbone.model import BackboneWorldActionModel, staircase_layers
from wallwm.trainer.backbone.vlm import Prompt, load_vlm
from wallwm.trainer.data import EventFrameDataset, make_loader
from wallwm.trainer.model import MODES, preset
from wallwm.trainer.view import materialize

ROOT = Path(__file__).resolve().parents[2]
BUILDER = ROOT / "tests" / "vllm_support" / "build_tiny_qwen2vl.py"


def _build(tmp_path_factory: pytest.TempPathFactory, family: str) -> Path:
    spec = importlib.util.spec_from_file_location("build_tiny_qwen2vl", BUILDER)
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    out = tmp_path_factory.mktemp(f"tiny-{family}")
    builder.build(out, family)
    return out


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "qwen2_vl")


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory, synth_dataset) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("backbone-data")
    dataset = synth_dataset(root, episodes=4, size=32, seed=3, caption=True, cluster_ks=[2])
    tagged = CliRunner().invoke(app, ["clusters", "tag", "curated-v1", "-d", str(dataset)])
    assert tagged.exit_code == 0, tagged.output
    return dataset, materialize(str(dataset), "curated-v1", size=32).path


def _batch(view_path: str, n: int = 3) -> dict:
    data = EventFrameDataset(view_path, h_max=6, chunk_len=4, caption_dropout=0.3)
    return next(iter(make_loader(data, batch_size=n)))


def _model(tiny_vlm: Path, mode: str, **overrides) -> BackboneWorldActionModel:
    cfg = preset("debug", image_size=32, action_dim=4, state_dim=4, h_max=6, chunk_len=4)
    backbone = BackboneConfig(str(tiny_vlm), backbone_fingerprint(tiny_vlm), **overrides)
    torch.manual_seed(0)
    return BackboneWorldActionModel(cfg, mode, None, backbone)  # type: ignore[arg-type]


def test_prompt_tokens_hold_the_images_and_the_answer(tiny_vlm):
    _, prompts = load_vlm(tiny_vlm, torch.float32)
    images = [torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8) for _ in range(2)]
    batch = [
        Prompt(images, "Task: stack the cubes", "grasp the red puck"),
        Prompt(images, "Task: open the drawer\nEvent: a much longer text here", "reach"),
    ]
    inputs, answer_BT = prompts(batch)
    tok = prompts.tokenizer
    for i, p in enumerate(batch):
        decoded = tok.decode(inputs["input_ids"][i][answer_BT[i]])
        assert decoded == p.answer + tok.eos_token
    # one placeholder run per camera, as long as the image processor's merged grid
    image_tokens = int((inputs["mm_token_type_ids"] == 1).sum())
    grid = inputs["image_grid_thw"]
    assert image_tokens == int(grid.prod(1).sum()) // 4 and grid.shape[0] == 4
    # left padding: both rows end with their answers
    assert inputs["attention_mask"][:, -1].all()


def test_text_embeddings_and_image_inputs_without_prompts(tiny_vlm):
    model = _model(tiny_vlm, "event", lora_rank=4)
    tok, table = model.prompts.tokenizer, model.vlm.get_input_embeddings()
    texts = ["grasp the red puck", "", "reach", "grasp the red puck"]
    calls = []
    cls = type(tok)
    original = cls.__call__

    def counting(self, text, *args, **kwargs):
        calls.append(text)
        return original(self, text, *args, **kwargs)

    cls.__call__ = counting
    try:
        got = model.embed_texts(texts)
        again = model.embed_texts(texts)
    finally:
        cls.__call__ = original
    assert sorted(calls) == ["grasp the red puck", "reach"]  # each distinct text once
    for i, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False)["input_ids"] if text else []
        want = table(torch.tensor(ids)).float().mean(0) if ids else torch.zeros(got.shape[1])
        assert torch.allclose(got[i], want, atol=1e-6)
    assert torch.equal(got, again)
    # the vision tower's inputs from images alone equal those of a prompt holding them
    images = [torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8) for _ in range(2)]
    alone = model.prompts.images(images)
    inputs, _ = model.prompts([Prompt(images, "Task: x")])
    assert torch.equal(alone["pixel_values"], inputs["pixel_values"])
    assert torch.equal(alone["image_grid_thw"], inputs["image_grid_thw"])


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_trains_and_acts(tiny_vlm, view, mode):
    model = _model(tiny_vlm, mode, lora_rank=4)
    batch = _batch(view[1])
    losses = model.losses(batch)
    assert {"flow", "planner", "world"} <= set(losses)
    assert ("lang" in losses) == (mode == "unified")
    assert ("end" in losses) == (mode in ("event", "chunk_text"))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    base = [p for n, p in model.vlm.named_parameters() if "lora_" not in n]
    assert lora and all(p.grad is not None for p in lora)
    assert all(not p.requires_grad and p.grad is None for p in base)
    assert model.expert.layers[0].linear1.weight.grad.abs().sum() > 0
    out = model.act(batch, steps=2)
    horizon = 6 if mode == "event" else 4
    assert out["actions_BHA"].shape == (3, horizon, 4)
    assert ("event_text_B" in out) == (mode == "unified")
    noise = torch.randn(3, horizon, 4)
    a = model.act(batch, steps=2, noise_BHA=noise)["actions_BHA"]
    assert torch.equal(a, model.act(batch, steps=2, noise_BHA=noise)["actions_BHA"])


def test_qwen2_5_vl_trains_and_decodes(tmp_path_factory, view):
    """The second family: windowed vision attention, another vision config -- same code."""
    model = _model(_build(tmp_path_factory, "qwen2_5_vl"), "unified", lora_rank=4)
    assert type(model.vlm).__name__ == "Qwen2_5_VLForConditionalGeneration"
    batch = _batch(view[1])
    losses = model.losses(batch)
    assert {"flow", "lang", "planner", "world"} == set(losses)
    sum(losses.values()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_B" in n)
    out = model.act(batch, steps=2)
    assert out["actions_BHA"].shape == (3, 4, 4) and len(out["event_text_B"]) == 3


def test_staircase_gradient_reaches_the_decoded_event_tokens(tiny_vlm, view):
    """Unified mode: the action loss alone reaches the language model through the decoded
    event's tokens (layer by layer), and through nothing else that is decoded."""
    assert staircase_layers(2, 2) == (1, 2) and staircase_layers(4, 2) == (0, 1, 2, 2)
    assert staircase_layers(3, 24) == (8, 16, 24)
    model = _model(tiny_vlm, "unified", lora_rank=4)
    batch = _batch(view[1])
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):  # the token embeddings as a leaf that takes grads
        leaf = output.detach().requires_grad_()
        captured.append(leaf)
        return leaf

    hook = model.vlm.get_input_embeddings().register_forward_hook(keep)
    terms = model(batch)
    hook.remove()
    terms["flow"].mean().backward()  # the action loss only
    answer_BT = model.prompts(model._prompts(batch, "images_BNCHW", list(batch["caption"])))[1]
    grad_BT = captured[0].grad.abs().sum(-1)
    assert (grad_BT[answer_BT] > 0).all()  # every decoded token carries the action gradient
    lora = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert sum(float(g.abs().sum()) for g in lora if g is not None) > 0


def test_checkpoint_state_is_what_trained(tiny_vlm, view):
    model = _model(tiny_vlm, "event", lora_rank=4)
    state = model.state_dict()
    assert any("lora_A" in k for k in state) and any(k.startswith("expert.") for k in state)
    assert not [k for k in state if k.startswith("vlm.") and "lora_" not in k]
    for p in model.parameters():  # move the trained weights away from their initial values
        if p.requires_grad:
            p.data += 0.01 * torch.randn_like(p)
    other = _model(tiny_vlm, "event", lora_rank=4)
    other.load_state_dict(model.state_dict())
    batch, noise = _batch(view[1]), torch.randn(3, 6, 4)
    model.eval()
    other.eval()
    assert torch.allclose(
        model.act(batch, 2, noise_BHA=noise)["actions_BHA"],
        other.act(batch, 2, noise_BHA=noise)["actions_BHA"],
    )
    with pytest.raises(RuntimeError, match="size mismatch"):
        _model(tiny_vlm, "event", lora_rank=8).load_state_dict(model.state_dict())


def test_full_fine_tuning_and_the_vision_tower(tiny_vlm, view):
    model = _model(tiny_vlm, "chunk", lora_rank=0, train_vision=True, gradient_checkpointing=True)
    trained = {n for n, p in model.vlm.named_parameters() if p.requires_grad}
    assert any("language_model" in n for n in trained) and any("visual" in n for n in trained)
    assert not any("lora_" in n for n in trained)
    model.train()
    sum(model.losses(_batch(view[1])).values()).backward()
    visual = [p.grad for n, p in model.vlm.named_parameters() if "visual" in n and p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in visual)


def test_train_resume_eval_and_serve_on_a_backbone(tiny_vlm, view, tmp_path):
    dataset, _ = view
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train", "--dataset", str(dataset), "--backbone", str(tiny_vlm), "--local"]
    args += ["--tag", "curated-v1"]
    args += ["--mode", "unified", "--preset", "debug", "--size", "32", "--batch-size", "4"]
    args += ["--lora-rank", "4", "--out", str(out), "--log-every", "1"]
    result = runner.invoke(app, [*args, "--steps", "4", "--stop-after", "2"])
    assert result.exit_code == 0, result.output
    assert "debug expert on" in result.output
    result = runner.invoke(app, [*args, "--steps", "4", "--resume"])
    assert result.exit_code == 0, result.output
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and state["backbone"]["fingerprint"] == backbone_fingerprint(tiny_vlm)
    assert state["backbone"]["lora_rank"] == 4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all("lang" in r for r in rows)

    checkpoint = str(out / "checkpoint.pt")
    result = runner.invoke(app, ["eval", "offline", "--checkpoint", checkpoint, "--json"])
    assert result.exit_code == 0, result.output

    from wallwm.trainer.policy import LocalPolicy, Observation
    from wallwm.trainer.serving.client import PolicyClient
    from wallwm.trainer.serving.engine import PolicyEngine
    from wallwm.trainer.serving.protocol import InferRequest
    from wallwm.trainer.serving.server import ServeConfig, start_in_thread

    handle = start_in_thread(ServeConfig(checkpoints=[checkpoint], port=0, flow_steps=2))
    try:
        client = PolicyClient(handle.url)
        meta = client.metadata()["models"]["unified"]
        assert meta["backbone"]["path"] == str(tiny_vlm.resolve())
        assert meta["backbone"]["fingerprint"] == backbone_fingerprint(tiny_vlm)
        image = np.zeros((32, 32, 3), np.uint8)
        served = client.infer(image, np.zeros(4, np.float32), "pick", seed=3)
        (local,) = PolicyEngine([checkpoint], flow_steps=2).infer(
            [InferRequest(image, np.zeros(4, np.float32), "pick", seed=3)]
        )
        np.testing.assert_allclose(served.actions_HA, local.actions_HA, atol=1e-5)
        assert served.event == local.event  # the event text the VLM decoded
    finally:
        handle.stop()
    policy = LocalPolicy(out / "checkpoint.pt", flow_steps=2)
    obs = Observation(np.zeros((32, 32, 3), np.uint8), np.zeros(4, np.float32), "pick")
    assert policy.act(obs).shape == (4,)

    # another backbone (one byte of its config changed) is refused: resume and load
    changed = tmp_path / "changed"
    shutil.copytree(tiny_vlm, changed)
    (changed / "config.json").write_text((changed / "config.json").read_text() + " ")
    other = [str(changed) if a == str(tiny_vlm) else a for a in args]
    result = runner.invoke(app, [*other, "--steps", "6", "--resume"])
    assert result.exit_code == 1 and "fingerprint" in result.output
    with pytest.raises(ValueError, match="fingerprint"):
        PolicyEngine([out / "checkpoint.pt"], backbone_path=str(changed))


def test_bad_backbone_options_are_one_line(tiny_vlm, view, tmp_path):
    dataset, _ = view
    runner = CliRunner()
    base = ["train", "--dataset", str(dataset), "--local", "--steps", "1", "--size", "32"]
    result = runner.invoke(app, [*base, "--backbone", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no Hugging Face model directory" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, [*base, "--backbone", str(tiny_vlm), "--lora-rank", "-1"])
    assert result.exit_code == 2 and "--lora-rank" in result.output
    not_vlm = tmp_path / "not-vlm"
    not_vlm.mkdir()
    (not_vlm / "config.json").write_text("{}")
    (not_vlm / "model.safetensors").write_bytes(b"")
    result = runner.invoke(app, [*base, "--backbone", str(not_vlm), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "not a vision-language model" in result.output


@pytest.mark.usefixtures("ray_local")
def test_two_ray_train_workers_train_the_backbone_run_of_one_process(tiny_vlm, view, tmp_path):
    """DDP on a backbone (LoRA adapters, a frozen base): two gloo workers train the losses of
    one process -- left padding depends on batch-mates, masked, so the losses agree."""
    from wallwm.trainer.launch import train_ray
    from wallwm.trainer.train import TrainConfig, train

    common = {
        "dataset": str(view[0]), "tag": "curated-v1", "size": 32, "preset": "debug",
        "batch_size": 4, "h_max": 6, "chunk_len": 4, "steps": 4, "log_every": 1,
        "device": "cpu", "mode": "unified",
        "backbone": str(tiny_vlm), "lora_rank": 4, "lr": 3e-3, "warmup_steps": 1,
    }  # fmt: skip
    one = [m["loss"] for m in train(TrainConfig(**common, out=str(tmp_path / "one")))]
    last = train_ray(TrainConfig(**common, out=str(tmp_path / "two")), num_workers=2)
    assert last["step"] == 4
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == pytest.approx(one, rel=2e-3)


def test_learn_weights_on_a_backbone(tiny_vlm, view, tmp_path):
    """Group DRO's reference and proxy train on the backbone too (per-sample flow losses)."""
    from wallwm.trainer.learn_weights import LearnWeightsConfig, learn_weights

    cfg = LearnWeightsConfig(
        dataset=str(view[0]), tag="curated-v1", out=str(tmp_path / "proposal.json"),
        preset="debug", steps=2, batch_size=4, size=32, backbone=str(tiny_vlm),
    )  # fmt: skip
    proposal = learn_weights(cfg)
    assert proposal.clusters and all(c["weight"] >= 0 for c in proposal.clusters)
    assert json.loads((tmp_path / "proposal.json").read_text())["clusters"]
