"""Training throughput and memory of the World Action Model on a VLM backbone (issue #27).

Times warm optimisation steps of :class:`wallwm.trainer.step.TrainStep` on
:class:`wallwm.trainer.backbone.model.BackboneWorldActionModel` with a **random-weight**
Qwen2-VL built from a configuration (no weights are needed to measure speed): ``2b`` has
Qwen2-VL-2B's shapes (28 layers of width 1536, a 32-block vision tower, vocabulary 151,936),
``tiny`` the test model's. For every (LoRA rank, batch) row: ms/step, samples/s, peak device
memory, FLOPs per sample (forward + backward, counted once by ``torch.utils.flop_counter`` at
batch 1 on this device) and model FLOPs utilisation against the device's dense peak (the
table of ``train_throughput.py``; ``--peak-tflops`` otherwise).

Baseline of the same run: the compact ``base`` preset at the same batch (the model a GPU user
trains without a backbone), and the ratio to it.

    PYTHONPATH=src python benchmarks/backbone_throughput.py --size 2b --lora-ranks 16,0 \\
        --batch-sizes 16,64 --precision bf16 --json out.json

The tokenizer and image processor are the tiny test model's (built here; the 2B shapes only
change the network): prompt lengths match a real run's -- one image per camera at
``--image-size`` px (224: 64 merged image tokens each), an instruction and an event text.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from wallwm.trainer.backbone.config import BackboneConfig
from wallwm.trainer.backbone.model import BackboneWorldActionModel
from wallwm.trainer.backbone.vlm import GridPrompts
from wallwm.trainer.device import autocast_dtype, resolve_device
from wallwm.trainer.model import WorldActionModel, preset
from wallwm.trainer.step import TrainStep

ROOT = Path(__file__).resolve().parents[1]
STATE_DIM, ACTION_DIM, HORIZON = 39, 4, 8
#: Qwen2-VL-2B's shapes (its config.json): the language model and the vision tower.
SHAPES: dict[str, dict[str, dict[str, Any]]] = {
    "2b": {
        "text": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                 "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                 "mrope_section": [16, 24, 24]},
        "vision": {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16,
                   "mlp_ratio": 4},
    },
    "tiny": {
        "text": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                 "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 400,
                 "mrope_section": [8, 12, 12]},
        "vision": {"depth": 1, "embed_dim": 64, "hidden_size": 128, "num_heads": 2,
                   "mlp_ratio": 2},
    },
}  # fmt: skip
TEXTS = ("pick up the puck and place it at the goal", "close the gripper around the puck")


def _tiny_dir() -> Path:
    """The test model's directory (tokenizer, image processor), built in a temp folder."""
    spec = importlib.util.spec_from_file_location(
        "build_tiny_qwen2vl", ROOT / "tests" / "vllm_support" / "build_tiny_qwen2vl.py"
    )
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    out = Path(tempfile.mkdtemp(prefix="wallwm-bench-vlm-"))
    builder.build(out)
    return out


def random_vlm(
    size: str, tiny: Path, image_px: int, device: torch.device, dtype: torch.dtype
) -> tuple[Any, GridPrompts]:
    """A random-weight Qwen2-VL of ``size`` on ``device`` and a prompt encoder for it."""
    import transformers

    shapes = SHAPES[size]
    text: dict[str, Any] = dict(shapes["text"])
    section = text.pop("mrope_section")
    tiny_config = json.loads((tiny / "config.json").read_text())
    ids = {k: tiny_config[k] for k in ("image_token_id", "video_token_id")}
    config = transformers.Qwen2VLConfig(
        text_config={
            **text,
            "max_position_embeddings": 32768,
            "rope_theta": 1_000_000.0,
            "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": section},
            "tie_word_embeddings": True,
            **{k: tiny_config["text_config"][k] for k in ("bos_token_id", "eos_token_id")},
            "pad_token_id": tiny_config["text_config"]["pad_token_id"],
        },
        vision_config={
            **shapes["vision"],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        vision_start_token_id=tiny_config["vision_start_token_id"],
        vision_end_token_id=tiny_config["vision_end_token_id"],
        **ids,
    )
    with torch.device(device):
        model: Any = transformers.Qwen2VLForConditionalGeneration(config)
    model = model.to(dtype)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny)
    image_processor = transformers.AutoImageProcessor.from_pretrained(
        tiny, min_pixels=image_px * image_px, max_pixels=image_px * image_px
    )
    return model, GridPrompts(tokenizer, image_processor, ids["image_token_id"])


def batch_of(n: int, image_px: int, cameras: int, device: torch.device) -> dict[str, Any]:
    """A synthetic training batch shaped like the view's (see ``wallwm.trainer.data``)."""
    g = torch.Generator().manual_seed(0)

    def images() -> torch.Tensor:
        shape = (n, cameras, 3, image_px, image_px)
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)

    batch: dict[str, Any] = {
        "images_BNCHW": images(),
        "end_images_BNCHW": images(),
        "state_BS": torch.randn(n, STATE_DIM, generator=g),
        "actions_BHA": torch.randn(n, HORIZON, ACTION_DIM, generator=g),
        "action_mask_BH": torch.ones(n, HORIZON, dtype=torch.bool),
        "chunk_BCA": torch.randn(n, HORIZON, ACTION_DIM, generator=g),
        "chunk_mask_BC": torch.ones(n, HORIZON, dtype=torch.bool),
        "chunk_in_event_BC": torch.ones(n, HORIZON, dtype=torch.bool),
        "flow_noise_BHA": torch.randn(n, HORIZON, ACTION_DIM, generator=g),
        "flow_tau": torch.rand(n, generator=g),
        "instruction": [TEXTS[0]] * n,
        "caption": [TEXTS[i % 2] for i in range(n)],
        "next_caption": [TEXTS[(i + 1) % 2] for i in range(n)],
        "has_next": torch.ones(n, dtype=torch.bool),
    }
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: TrainStep, batch: dict[str, Any], args: argparse.Namespace) -> float:
    """Seconds per warm step."""
    for _ in range(args.warmup):
        step(batch, 1e-4)
    _sync(step.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step(batch, 1e-4)
    _sync(step.device)
    return (time.perf_counter() - start) / int(args.steps)


def flops_per_sample(model: torch.nn.Module, batch: dict[str, Any], dtype: Any) -> float:
    """Forward + backward FLOPs of one sample (counted on the device, batch of one)."""
    from torch.utils.flop_counter import FlopCounterMode

    from wallwm.trainer.device import autocast

    one = {k: v[:1] if hasattr(v, "__getitem__") else v for k, v in batch.items()}
    counter = FlopCounterMode(display=False)
    device = next(model.parameters()).device
    with counter, autocast(device, dtype):
        terms = model(one)
        sum(t.mean() for t in terms.values()).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def row(args: argparse.Namespace, rank: int, n: int, device: torch.device) -> dict[str, Any]:
    """One (LoRA rank, batch) row, with the compact ``base`` baseline at the same batch."""
    dtype = autocast_dtype(args.precision, device)
    frozen = dtype if (rank and dtype is not None) else torch.float32
    cfg = preset(args.expert, image_size=args.image_size, action_dim=ACTION_DIM,
                 state_dim=STATE_DIM, h_max=HORIZON, chunk_len=HORIZON,
                 num_cameras=args.cameras)  # fmt: skip
    loaded = random_vlm(args.size, args.tiny, args.image_size, device, frozen)
    backbone = BackboneConfig(str(args.tiny), "random", lora_rank=rank,
                              gradient_checkpointing=args.gradient_checkpointing)  # fmt: skip
    model = BackboneWorldActionModel(cfg, args.mode, None, backbone, frozen, loaded=loaded)
    batch = batch_of(n, args.image_size, args.cameras, device)
    flops = flops_per_sample(model.to(device), batch, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = TrainStep(model, device, args.precision)
    seconds = time_steps(step, batch, args)
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    del step, model, loaded
    gc.collect()
    baseline = TrainStep(WorldActionModel(cfg, "event"), device, args.precision)
    base_seconds = time_steps(baseline, batch, args)
    del baseline
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    peak = args.peak_tflops or _peak(device, dtype)
    return {
        "size": args.size, "lora_rank": rank, "batch": n, "precision": args.precision,
        "params_total_M": round(total / 1e6, 1), "params_trained_M": round(trained / 1e6, 2),
        "ms_per_step": round(seconds * 1000, 1), "samples_per_s": round(n / seconds, 2),
        "gflop_per_sample": round(flops / 1e9, 2),
        "mfu": round(flops * n / seconds / (peak * 1e12), 4) if peak else None,
        "peak_mem_gib": round(peak_gib, 2) if peak_gib is not None else None,
        "baseline_compact_samples_per_s": round(n / base_seconds, 2),
        "ratio_to_compact": round(base_seconds / seconds, 3),
    }  # fmt: skip


def _peak(device: torch.device, dtype: Any) -> float | None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from train_throughput import peak_tflops

    value, _ = peak_tflops(device, dtype, None)
    return float(value) if value == value else None  # NaN: unknown device


def main() -> None:
    """Parse the options, run every row, print (and optionally write) the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--lora-ranks", default="16,0", help="0: full fine-tuning")
    parser.add_argument("--batch-sizes", default="4")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mode", default="event")
    parser.add_argument("--expert", default="base", help="preset sizing the action expert")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    args.tiny = _tiny_dir()
    rows = []
    for rank in [int(r) for r in args.lora_ranks.split(",")]:
        for n in [int(b) for b in args.batch_sizes.split(",")]:
            try:
                rows.append(row(args, rank, n, device))
            except torch.OutOfMemoryError:
                rows.append({"size": args.size, "lora_rank": rank, "batch": n, "oom": True})
                gc.collect()
                torch.cuda.empty_cache()
            print(json.dumps(rows[-1]), flush=True)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
