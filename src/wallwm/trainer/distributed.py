"""Data parallelism: which rank this process is, DDP, and the collectives a step needs.

The process group is whoever started it: Ray Train's ``TorchTrainer`` (gloo on CPUs, NCCL on
GPUs) or ``torchrun``. Without one, the world is this process alone and every collective is a
no-op, so the same training code runs in one process or many.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints and logs."""
        return self.rank == 0


def current_world() -> World:
    """The initialised process group's rank and size (one process when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place (nothing to do for one process)."""
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def data_parallel(model: nn.Module, device: torch.device, world: World) -> nn.Module:
    """``model`` wrapped in DDP when there are several ranks, else itself.

    Training calls the wrapper (its ``forward`` runs DDP's gradient hooks); the optimiser, the
    EMA and checkpoints hold the module itself.
    """
    if world.size == 1:
        return model
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
