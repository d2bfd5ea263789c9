"""Where and in which precision a run computes: device and precision made explicit.

``auto`` picks what the machine has: the GPU Ray Train assigned to this worker, else CUDA when
present (``LOCAL_RANK``'s GPU under ``torchrun``), else the CPU; bf16 autocast where the GPU
supports it, fp32 elsewhere. Batches are moved with ``non_blocking`` copies (from page-locked
memory when the loader pins it), so the copy of the next batch overlaps the current step.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Literal

import torch

DeviceName = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]


def resolve_device(name: str) -> torch.device:
    """The device named by ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if name.startswith("cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(
            f"--device {name}: no CUDA device is visible to this process (torch "
            f"{torch.__version__}, {build}); use --device cpu or auto"
        )
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name}: not a device (auto, cpu, cuda, cuda:N)") from exc


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--precision`` on ``device`` (None: plain fp32)."""
    if precision == "auto":
        on_gpu = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if on_gpu else None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return None
    raise ValueError(f"--precision {precision}: choose auto, fp32 or bf16")


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for the forward pass, or nothing for fp32."""
    if dtype is None or device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with every tensor on ``device`` (asynchronous copies; texts stay as they are)."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def to_cpu(tree: Any) -> Any:
    """A nested state dict with every tensor on the CPU: checkpoints load on any machine."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


@contextlib.contextmanager
def inference_mode(device: torch.device, precision: str) -> Iterator[None]:
    """No gradients and the run's autocast: how evaluation and serving call a model."""
    with torch.no_grad(), autocast(device, autocast_dtype(precision, device)):
        yield
