"""One optimisation step on one device, the hot path of training (torch and the model only).

:class:`TrainStep` owns the model, its data-parallel wrapper, the optimisers and the EMA, and
runs: batch to the device, forward under autocast, losses normalised by the *global* batch,
backward (DDP all-reduces the gradients), clip, update, EMA. It never waits for the GPU: the
metrics it returns stay on the device until the run logs them (:class:`MetricLog`), so the host
queues the next step while the GPU computes this one. It imports neither Lance nor Ray, so
``benchmarks/train_throughput.py`` runs it on a machine that has only torch.

Why the global normalisation: a loss is a mean over what the batch holds (masked action steps,
samples with a next event); each rank holds part of the batch, and DDP averages gradients, so
rank ``r`` minimises ``world_size * sum_k total_k,r / count_k`` with ``count_k`` summed over
the ranks. The averaged gradient is then exactly the one-process gradient of the global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from wallwm.trainer.device import autocast, autocast_dtype, to_device
from wallwm.trainer.distributed import World, all_reduce_sum, data_parallel
from wallwm.trainer.factory import ActionModel
from wallwm.trainer.optim import EMA, MuonAdamW


@dataclass(frozen=True)
class StepResult:
    """A step's metrics, still on the device.

    ``terms_K``: each loss's share of the global loss held by this rank (summed over the ranks
    it is the loss); ``grad_norm``: the (global) gradient norm.
    """

    names: tuple[str, ...]
    terms_K: torch.Tensor
    grad_norm: torch.Tensor


class TrainStep:
    """Model, optimisers and EMA on one device (see the module docstring)."""

    def __init__(
        self,
        model: ActionModel,
        device: torch.device,
        precision: str = "auto",
        world: World | None = None,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        grad_clip: float = 1.0,
        ema_decay: float = 0.999,
        compile_layers: bool = False,
        backbone_lr_scale: float = 0.1,
    ) -> None:
        """Move ``model`` to ``device`` and build what trains it there."""
        self.device, self.world = device, world or World()
        self.dtype = autocast_dtype(precision, device)
        self.grad_clip = grad_clip
        self.model = model.to(device)
        if compile_layers:
            self.model.compile_layers()
        self.net = data_parallel(self.model, device, self.world)  # what forward passes call
        self.optimizer = MuonAdamW(
            self.model, lr=lr, weight_decay=weight_decay, backbone_lr_scale=backbone_lr_scale
        )
        self.ema = EMA(self.model, ema_decay)

    def __call__(self, batch: dict[str, Any], lr: float) -> StepResult:
        """One step at learning rate ``lr`` (the schedule is the caller's)."""
        batch = to_device(batch, self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with autocast(self.device, self.dtype):
            terms = self.net(batch)
        counts_K = all_reduce_sum(torch.stack([t.n for t in terms.values()]), self.world)
        terms_K = torch.stack([t.total for t in terms.values()]) / counts_K.clamp(min=1)
        self.optimizer.zero_grad()
        (terms_K.sum() * self.world.size).backward()  # type: ignore[no-untyped-call]
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        return StepResult(tuple(terms), terms_K.detach(), grad_norm.detach())

    def state_dict(self) -> dict[str, Any]:
        """Model, optimisers and EMA (tensors on the device; the run moves them to the CPU)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint saved on any device."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])


@dataclass
class MetricLog:
    """Steps' device-side metrics, turned into numbers only when the run logs them.

    ``flush`` sums each step's loss shares over the ranks (one collective per flush, not per
    step) and waits for the device once.
    """

    world: World
    pending: list[tuple[int, float, float, StepResult]] = field(default_factory=list)

    def add(self, step: int, seconds: float, lr: float, result: StepResult) -> None:
        """Keep a finished step's metrics (no device synchronisation)."""
        self.pending.append((step, seconds, lr, result))

    def flush(self) -> Iterator[dict[str, float]]:
        """Every kept step's metrics as numbers, oldest first."""
        if not self.pending:
            return
        terms_NK = torch.stack([r.terms_K for *_, r in self.pending])
        norms_N = torch.stack([r.grad_norm for *_, r in self.pending])
        values = all_reduce_sum(terms_NK, self.world).tolist()
        norms = norms_N.tolist()
        for (step, seconds, lr, result), terms, norm in zip(
            self.pending, values, norms, strict=True
        ):
            yield {
                "loss": sum(terms),
                **dict(zip(result.names, terms, strict=True)),
                "grad_norm": norm,
                "lr": lr,
                "step": step,
                "seconds": seconds,
            }
        self.pending.clear()
