"""Data-parallel training on Ray Train: ``wallwm train --num-workers W [--ray-address ADDR]``.

The driver joins (or starts) Ray, checks that the cluster has what the run asks for -- one GPU
per worker on ``--device cuda`` (and on ``auto`` when the cluster has GPUs), half a CPU per worker
otherwise -- and answers in one line when it has not (Ray would otherwise wait forever for the
resources). It builds the training view once (workers building it side by side would race on its
folder), then starts ``W`` ``TorchTrainer`` workers, each running :class:`Run` on its device with
DDP (gloo on CPUs, NCCL on GPUs).

Checkpoints: rank 0 writes ``<out>/checkpoint.pt`` and reports it to Ray from a staging folder
holding only that file (hard-linked), and Ray keeps one reported checkpoint, so the run folder
holds two copies at most however many checkpoints a run makes. On a multi-node cluster ``--out``
and the dataset must be on storage every node reaches (the same rule as Ray's ``storage_path``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from wallwm.trainer.train import CHECKPOINT, TrainConfig, local_batch_size, prepare_view

#: CPUs each worker reserves when it trains on the CPU: Ray Train workers that reserve whole
#: cores hang on 2-core machines (our notes), and the step itself uses every core anyway.
CPU_PER_WORKER = 0.5


def plan_resources(device: str, num_workers: int, cluster: dict[str, float]) -> bool:
    """Whether the workers train on GPUs, given the cluster's resources.

    Raises a one-line ValueError when the cluster cannot hold the workers.
    """
    if num_workers < 1:
        raise ValueError(f"--num-workers {num_workers}: at least one worker is needed")
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 0.0)
    use_gpu = device.startswith("cuda") or (device == "auto" and gpus >= 1)
    if use_gpu and gpus < num_workers:
        raise ValueError(
            f"--num-workers {num_workers} on --device {device} needs {num_workers} GPUs (one per "
            f"worker); the Ray cluster has {gpus:g} -- use fewer workers or --device cpu"
        )
    if not use_gpu and cpus < num_workers * CPU_PER_WORKER:
        raise ValueError(
            f"--num-workers {num_workers} needs {num_workers * CPU_PER_WORKER:g} CPUs; "
            f"the Ray cluster has {cpus:g}"
        )
    return use_gpu


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: a :class:`Run` on the device Ray assigned it."""
    import ray.train
    import ray.train.torch
    import torch

    from wallwm.trainer.train import Run

    cfg = TrainConfig(**config)
    device = torch.device("cpu") if cfg.device == "cpu" else ray.train.torch.get_device()
    run = Run(cfg, device=device)

    def report(metrics: dict[str, float], path: Path | None) -> None:
        # every rank reports (Ray synchronises on it); rank 0 attaches the checkpoint
        if path is None:
            ray.train.report(metrics)
            return
        staging = Path(tempfile.mkdtemp(prefix=".ray-report-", dir=path.parent))
        try:
            try:
                os.link(path, staging / CHECKPOINT)
            except OSError:  # another file system: copy
                shutil.copy2(path, staging / CHECKPOINT)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(staging))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    run.fit(report)


def _user_error(exc: BaseException) -> ValueError | None:
    """The ValueError a worker raised (a user's mistake, e.g. a refused resume), if any."""
    failures = getattr(exc, "worker_failures", None) or {}
    for failure in failures.values():
        cause = getattr(failure, "cause", failure)
        if isinstance(cause, ValueError):
            return ValueError(str(cause).strip().splitlines()[-1])
    return None


def train_ray(
    cfg: TrainConfig, num_workers: int = 1, ray_address: str | None = None
) -> dict[str, Any]:
    """Train with ``num_workers`` data-parallel Ray Train workers; the last reported metrics."""
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from wallwm.pipeline.runtime import ensure_ray

    local_batch_size(cfg.batch_size, num_workers)  # refused before anything starts
    ensure_ray(ray_address)
    use_gpu = plan_resources(cfg.device, num_workers, ray.cluster_resources())
    prepare_view(cfg)
    trainer = TorchTrainer(
        _worker,
        train_loop_config=cfg.model_dump(),
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker=None if use_gpu else {"CPU": CPU_PER_WORKER},
        ),
        run_config=RunConfig(
            storage_path=str(Path(cfg.out).resolve() / "ray"),
            name="train",
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:
        error = _user_error(exc)
        if error is not None:
            raise error from exc
        raise
    return dict(result.metrics or {})
