"""Training throughput: does the model or the data limit training, per preset x precision x batch?

For every (preset, precision, batch) it times warm optimisation steps of
:class:`wallwm.trainer.step.TrainStep` (event mode, one camera at ``--size`` px, a 39-D state and
4-D actions as in the MetaWorld benchmarks, 8-step horizons) and reports:

- ms/step and samples/s (the device synchronised once per timed window);
- ``host share``: on a GPU, the share of the step the GPU sits idle waiting for the host
  (1 - kernel time per step / wall time per step; kernel time from ``torch.profiler``); on a CPU
  the host *is* the device, so none is given;
- FLOPs per sample (forward + backward, counted by ``torch.utils.flop_counter`` on the meta
  device) and model FLOPs utilisation against the device's peak (the vendor's dense bf16 / fp32
  figure for known GPUs, ``--peak-tflops`` otherwise; on a CPU the rate of a large fp32 matmul
  measured here);
- the same-run baseline: the step as it was before texts were tokenised by the loader (strings
  in the batch, tokenised in the step by the main process), and the ratio to it.

Batches are synthetic by default: nothing but torch and the model code is needed, so the script
runs on a rented GPU box where only torch is installed (``PYTHONPATH=src``). With ``--view DIR``
(a dataset root with a training view, ``wallwm materialize``) it also measures the training
view's loader on this machine (samples/s with 0 and ``--loader-workers`` workers, and per core),
so one table says whether the model or the data limits training.

    PYTHONPATH=src python benchmarks/train_throughput.py --presets small,base \\
        --precisions fp32,bf16 --batch-sizes 32,256 [--compile] [--view ds/ --tag curated-v1]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from wallwm.trainer.device import autocast_dtype, resolve_device
from wallwm.trainer.model import WorldActionModel, preset, tokenize
from wallwm.trainer.step import TrainStep

STATE_DIM, ACTION_DIM, HORIZON = 39, 4, 8
#: Dense peak TFLOP/s by GPU name fragment: (bf16 tensor cores, fp32 without TF32).
PEAK_TFLOPS = {
    "H200": (989.4, 66.9),
    "H100": (989.4, 66.9),
    "A100": (312.0, 19.5),
    "L40S": (362.1, 91.6),
    "A10G": (70.0, 31.2),
}
TEXTS = (
    "pick up the puck and place it at the goal",
    "reach toward the puck",
    "close the gripper around the puck",
    "carry the puck to the goal",
    "",
)


def synthetic_batch(
    batch: int, size: int, cfg: Any, tokenised: bool, seed: int = 0
) -> dict[str, Any]:
    """A batch shaped like the training view's (see ``wallwm.trainer.data``), on the CPU."""
    g = torch.Generator().manual_seed(seed)
    texts = {
        k: [TEXTS[(i + j) % len(TEXTS)] for i in range(batch)]
        for j, k in enumerate(("instruction", "caption", "next_caption"))
    }
    out: dict[str, Any] = {
        "images_BNCHW": torch.randint(
            0, 256, (batch, 1, 3, size, size), dtype=torch.uint8, generator=g
        ),
        "end_images_BNCHW": torch.randint(
            0, 256, (batch, 1, 3, size, size), dtype=torch.uint8, generator=g
        ),
        "state_BS": torch.randn(batch, STATE_DIM, generator=g),
        "actions_BHA": torch.randn(batch, HORIZON, ACTION_DIM, generator=g),
        "action_mask_BH": torch.rand(batch, HORIZON, generator=g) < 0.9,
        "chunk_BCA": torch.randn(batch, HORIZON, ACTION_DIM, generator=g),
        "chunk_mask_BC": torch.ones(batch, HORIZON, dtype=torch.bool),
        "chunk_in_event_BC": torch.rand(batch, HORIZON, generator=g) < 0.8,
        "flow_noise_BHA": torch.randn(batch, HORIZON, ACTION_DIM, generator=g),
        "flow_tau": torch.rand(batch, generator=g),
        **texts,
    }
    if tokenised:  # what the loader sends: ids, tokenised once outside the step
        for key, values in texts.items():
            out[f"{key}_ids_BL"] = tokenize(values, cfg.vocab, cfg.text_len)
        out["has_next"] = torch.tensor([bool(t) for t in texts["next_caption"]])
    if torch.cuda.is_available():
        out = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
    return out


def flops_per_sample(name: str, size: int) -> float:
    """Forward + backward FLOPs of one training sample (counted on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = preset(
        name,
        image_size=size,
        action_dim=ACTION_DIM,
        state_dim=STATE_DIM,
        h_max=HORIZON,
        chunk_len=HORIZON,
    )
    with torch.device("meta"):
        model = WorldActionModel(cfg, "event")
    batch = synthetic_batch(2, size, cfg, tokenised=True)
    batch = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    counter = FlopCounterMode(display=False)
    with counter:
        terms = model(batch)
        sum(t.total for t in terms.values()).backward()
    return counter.get_total_flops() / 2


def peak_tflops(
    device: torch.device, dtype: torch.dtype | None, override: float | None
) -> tuple[float, str]:
    """The device's peak for this precision, and where the figure comes from."""
    if override:
        return override, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (bf16, fp32) in PEAK_TFLOPS.items():
            if key in name:
                return (bf16 if dtype == torch.bfloat16 else fp32), f"{name} spec sheet"
        return float("nan"), f"{name}: unknown peak (pass --peak-tflops)"
    n = 2048  # a large matmul in the row's precision: what this CPU reaches at best
    a, b = (torch.randn(n, n, dtype=dtype or torch.float32) for _ in range(2))
    a @ b
    t = time.perf_counter()
    for _ in range(5):
        a @ b
    kind = "bf16" if dtype == torch.bfloat16 else "fp32"
    return 5 * 2 * n**3 / (time.perf_counter() - t) / 1e12, f"{kind} matmul measured here"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: TrainStep, batches: list[dict[str, Any]], steps: int, warmup: int) -> float:
    """Mean seconds per step over ``steps`` warm steps (device synchronised at both ends)."""
    for i in range(warmup):
        step(batches[i % len(batches)], 1e-4)
    _sync(step.device)
    t = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)], 1e-4)
    _sync(step.device)
    return (time.perf_counter() - t) / steps


def gpu_busy_seconds(step: TrainStep, batches: list[dict[str, Any]], steps: int) -> float | None:
    """Kernel time per step on the GPU (None on a CPU or when the profiler sees no kernels)."""
    if step.device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(steps):
            step(batches[i % len(batches)], 1e-4)
        _sync(step.device)
    busy_us = sum(e.self_device_time_total for e in prof.key_averages())
    return busy_us / 1e6 / steps if busy_us > 0 else None


def measure(
    args: argparse.Namespace, name: str, precision: str, batch: int, device: torch.device
) -> dict[str, Any]:
    """One row of the table (and its baseline)."""
    cfg = preset(
        name,
        image_size=args.size,
        action_dim=ACTION_DIM,
        state_dim=STATE_DIM,
        h_max=HORIZON,
        chunk_len=HORIZON,
    )
    row: dict[str, Any] = {"preset": name, "precision": precision, "batch": batch}
    for tokenised in (False, True):
        torch.manual_seed(0)
        step = TrainStep(
            WorldActionModel(cfg, "event"), device, precision, compile_layers=args.compile
        )
        batches = [synthetic_batch(batch, args.size, cfg, tokenised, seed=s) for s in range(4)]
        try:
            seconds = time_steps(step, batches, args.steps, args.warmup)
        except torch.OutOfMemoryError:
            row["oom"] = True
            return row
        if tokenised:
            row["ms_per_step"] = seconds * 1e3
            row["samples_per_s"] = batch / seconds
            busy = gpu_busy_seconds(step, batches, min(args.steps, 5))
            row["host_share"] = None if busy is None else max(0.0, 1 - busy / seconds)
            if device.type == "cuda":
                row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                torch.cuda.reset_peak_memory_stats(device)
        else:
            row["baseline_samples_per_s"] = batch / seconds
        del step, batches
        if device.type == "cuda":
            torch.cuda.empty_cache()
    row["vs_baseline"] = row["samples_per_s"] / row["baseline_samples_per_s"]
    return row


def loader_rates(
    view_root: str, tag: str | None, size: int, workers: int, batch: int, batches: int
) -> list[dict[str, Any]]:
    """The training view's loader on this machine (needs Lance: the full install)."""
    from wallwm.trainer.data import ClusterBalancedSampler, EventFrameDataset, TextSpec, make_loader
    from wallwm.trainer.view import materialize

    view = materialize(view_root, tag, size)
    cfg = preset("small")
    data = EventFrameDataset(view.path, HORIZON, HORIZON, text=TextSpec(cfg.vocab, cfg.text_len))
    rows = []
    for n in sorted({0, workers}):
        sampler = ClusterBalancedSampler(data.weights, samples_per_epoch=10**7, seed=0)
        loader = make_loader(data, batch, n, sampler)
        it = iter(loader)
        next(it)  # worker start-up excluded
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        rate = batch * batches / (time.perf_counter() - t)
        rows.append({"workers": n, "samples_per_s": rate, "per_core": rate / max(1, n)})
        del it, loader  # stop the workers now, not at interpreter exit
        gc.collect()
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def report(rows: list[dict[str, Any]], loader: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """The table as Markdown (BENCHMARKS.md takes it as printed)."""
    print(
        f"\n{meta['device']} ({meta['machine']}), torch {meta['torch']}; {meta['steps']} timed "
        f"steps after {meta['warmup']} warm-up, {meta['size']} px, compile={meta['compile']}"
    )
    head = (
        "preset",
        "params",
        "precision",
        "batch",
        "ms/step",
        "samples/s",
        "host share",
        "GFLOP/sample",
        "MFU",
        "peak TFLOP/s",
        "baseline samples/s",
        "vs baseline",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        if r.get("oom"):
            print(f"| {r['preset']} | | {r['precision']} | {r['batch']} | out of memory |")
            continue
        mfu = r["samples_per_s"] * r["flops_per_sample"] / (r["peak"] * 1e12)
        cells = [
            r["preset"],
            f"{r['params_m']:.1f} M",
            r["precision"],
            str(r["batch"]),
            f"{r['ms_per_step']:.1f}",
            f"{r['samples_per_s']:,.0f}",
            _fmt(r["host_share"], ".0%"),
            f"{r['flops_per_sample'] / 1e9:.2f}",
            f"{mfu:.1%}",
            f"{r['peak']:.1f}",
            f"{r['baseline_samples_per_s']:,.0f}",
            f"**{r['vs_baseline']:.2f}x**",
        ]
        print("| " + " | ".join(cells) + " |")
    print(f"\npeaks: {meta['peak_sources']}")
    for r in loader:
        print(
            f"view loader, {r['workers']} workers: {r['samples_per_s']:,.0f} samples/s "
            f"({r['per_core']:,.0f} per core)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="small,base")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile every block")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--view", default=None, help="dataset root: also time the view loader")
    parser.add_argument("--tag", default=None)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    peaks: dict[str, tuple[float, str]] = {}
    for name in args.presets.split(","):
        flops = flops_per_sample(name, args.size)
        with torch.device("meta"):
            params = sum(p.numel() for p in WorldActionModel(preset(name), "event").parameters())
        for precision in args.precisions.split(","):
            dtype = autocast_dtype(precision, device)
            key = str(dtype)
            if key not in peaks:
                peaks[key] = peak_tflops(device, dtype, args.peak_tflops)
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                row = measure(args, name, precision, batch, device)
                row.update(params_m=params / 1e6, flops_per_sample=flops, peak=peaks[key][0])
                rows.append(row)
                print(json.dumps(row), flush=True)
    loader = []
    if args.view:
        loader = loader_rates(args.view, args.tag, args.size, args.loader_workers, 32, 40)
    meta = {
        "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else device),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup": args.warmup,
        "size": args.size,
        "compile": args.compile,
        "peak_sources": {k: f"{v[0]:.2f} TFLOP/s ({v[1]})" for k, v in peaks.items()},
    }
    report(rows, loader, meta)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"meta": meta, "rows": rows, "loader": loader}, indent=1)
        )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
