"""The training run: a short loop of named steps over a curated training view.

Reads like nanoGPT (one loop, named steps), composed like torchtitan (every stateful piece has
``state_dict``/``load_state_dict``; a checkpoint is their union). Runs in-process or inside a Ray
Train ``TorchTrainer`` worker (DDP over ``--num-workers``; one by default).

A checkpoint holds the model, the optimisers, the EMA weights, the sampler position, the RNG
states, the config, the dataset URI with the tag and Lance versions of the view, and the
normalisation statistics. ``--resume`` continues exactly: the data order follows from the number
of samples consumed, the RNG states are restored, so the losses after resuming equal those of an
uninterrupted run (tested).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from wallwm.trainer.data import ClusterBalancedSampler, EventFrameDataset, holdout_mask, make_loader
from wallwm.trainer.durations import duration_table
from wallwm.trainer.model import TEXT_CONDITIONED, ModelConfig, WorldActionModel, preset
from wallwm.trainer.optim import EMA, MuonAdamW, warmup_cosine
from wallwm.trainer.view import ViewSummary, materialize, same_view_inputs, source_versions

CHECKPOINT = "checkpoint.pt"


class TrainConfig(BaseModel):
    """Options of ``wallwm train``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    tag: str | None = None
    size: int = Field(96, ge=16)
    cameras: list[str] | None = Field(
        None, description="Camera streams the model sees (None: every camera of the dataset)."
    )
    mode: Literal["event", "unified", "chunk", "chunk_text"] = "event"
    preset: str = "small"
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    h_max: int = 32
    chunk_len: int = 16
    caption_dropout: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Share of samples whose event text is blanked (the planner then names the "
        "current event: how a policy picks its first event).",
    )
    seed: int = 0
    loader_workers: int = 0
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    out: str = "runs/latest"
    resume: bool = False
    holdout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of episodes held out of training "
        "(by a hash of their id) for offline evaluation.",
    )
    stop_after: int | None = Field(
        None,
        ge=1,
        description="Stop (with a checkpoint) after this many steps of this run: "
        "time-boxed jobs; --resume continues on the same schedule.",
    )


def _check_same_data(
    checkpoint: Path, state: dict[str, Any], dataset: str, now: dict[str, int]
) -> None:
    """Refuse to resume a run on tables that changed since it started.

    Resuming continues the run exactly only on the data it trained on; a recaptioned or
    re-segmented dataset would silently switch it half-way. New versions that rewrote the rows
    unchanged are the same data.
    """
    then = state["dataset"]["versions"]
    if then != now and not same_view_inputs(dataset, then, now):
        changed = ", ".join(
            f"{t} v{then.get(t)} -> v{now.get(t)}" for t in now if then.get(t) != now[t]
        )
        raise ValueError(
            f"{checkpoint}: the run trained on other table versions than the dataset has now "
            f"({changed}); resuming would switch its data half-way -- train into a new --out, "
            "or pin the data with a tag (`wallwm clusters tag`) and --tag"
        )


def prepare_view(cfg: TrainConfig) -> tuple[ViewSummary, dict[str, Any] | None]:
    """The run's training view (built or rebuilt if needed) and the checkpoint it resumes, if any.

    The checkpoint is checked against the tables before a rebuild can start.
    """
    checkpoint, resumed, same_as = Path(cfg.out) / CHECKPOINT, None, None
    if cfg.resume and checkpoint.exists():
        resumed = torch.load(checkpoint, weights_only=False)
        _check_same_data(checkpoint, resumed, cfg.dataset, source_versions(cfg.dataset, cfg.tag))
        same_as = resumed["dataset"]["versions"]  # checked: the view need not compare them again
    view = materialize(cfg.dataset, cfg.tag, cfg.size, cameras=cfg.cameras, same_as=same_as)
    return view, resumed


class Run:
    """Everything stateful in one training run."""

    def __init__(self, cfg: TrainConfig) -> None:
        """Build view, data, model, optimiser, EMA (restoring them from a checkpoint if asked)."""
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        view, resumed = prepare_view(cfg)
        self.data = EventFrameDataset(
            view.path,
            cfg.h_max,
            cfg.chunk_len,
            cfg.seed,
            cfg.caption_dropout if cfg.mode in TEXT_CONDITIONED else 0.0,
        )
        meta = self.data.meta
        self.model_cfg: ModelConfig = preset(
            cfg.preset,
            image_size=cfg.size,
            action_dim=meta["action_dim"],
            state_dim=max(1, meta["state_dim"]),
            h_max=cfg.h_max,
            chunk_len=cfg.chunk_len,
            num_cameras=self.data.num_cameras,
        )
        torch.manual_seed(cfg.seed)
        self.model = WorldActionModel(self.model_cfg, cfg.mode, meta["stats"])
        self.optimizer = MuonAdamW(self.model, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ema = EMA(self.model, cfg.ema_decay)
        # whole batches per epoch, so "samples consumed = step x batch" holds across epochs
        per_epoch = cfg.batch_size * max(1, -(-len(self.data) // cfg.batch_size))
        self.held_out = holdout_mask(self.data.events, cfg.holdout)
        if self.held_out.all():  # a single episode: train on it rather than on nothing
            self.held_out[:] = False
        # how long the training events ran (the plan follower's per-event timeout): fixed by
        # the data, so computed once, not at every checkpoint
        self.event_durations = duration_table(
            e for e, h in zip(self.data.events, self.held_out, strict=True) if not h
        )
        weights = np.where(self.held_out, 0.0, self.data.weights)
        self.sampler = ClusterBalancedSampler(weights, per_epoch, seed=cfg.seed)
        self.step = 0
        self.train_seconds = 0.0  # wall time spent in fit(), summed over resumed processes
        if resumed is not None:
            self.load_state_dict(resumed)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: every stateful piece plus provenance."""
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            "config": self.cfg.model_dump(),
            "model_config": asdict(self.model_cfg),
            "mode": self.cfg.mode,
            "dataset": {
                "uri": self.data.meta["dataset"],
                "tag": self.data.meta["tag"],
                "versions": self.data.meta["versions"],
                "view": str(self.data.view),
            },
            # the camera streams, in the order the model reads them (what a client must send)
            "cameras": self.data.meta.get("cameras") or [],
            "stats": self.data.meta["stats"],
            # what event mode may condition on at test time: the training captions per task
            "held_out_events": [
                e["event_id"] for e, h in zip(self.data.events, self.held_out, strict=True) if h
            ],
            "caption_bank": sorted(
                {(e["instruction"], e["caption"]) for e in self.data.events if e["caption"]}
            ),
            "event_durations": self.event_durations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint."""
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))  # older checkpoints: unknown
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])

    def save(self) -> Path:
        """Write the checkpoint atomically (temp file, then rename)."""
        tmp = self.out / (CHECKPOINT + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(self.out / CHECKPOINT)
        return self.out / CHECKPOINT

    # ------------------------------------------------------------------ the loop

    def _position_sampler(self) -> None:
        """Data order depends only on samples consumed (exact resume, prefetching or not)."""
        consumed = self.step * self.cfg.batch_size
        per_epoch = self.sampler.samples_per_epoch
        self.sampler.load_state_dict(
            {
                "epoch": consumed // per_epoch,
                "position": consumed % per_epoch,
                "seed": self.cfg.seed,
            }
        )

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """Schedule, forward, backward, clip, update, EMA -- one optimisation step."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * warmup_cosine(
                self.step, self.cfg.warmup_steps, self.cfg.steps
            )
        losses = self.model.losses(batch)
        total = sum(losses.values())
        self.optimizer.zero_grad()
        total.backward()  # type: ignore[union-attr]
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        return {
            "loss": float(total.detach()),  # type: ignore[union-attr]
            **{k: float(v.detach()) for k, v in losses.items()},
            "grad_norm": float(grad_norm),
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    def fit(self, report: Any = None) -> list[dict[str, float]]:
        """Train to ``cfg.steps``; JSONL + TensorBoard logs; checkpoints periodically and at end."""
        from torch.utils.tensorboard import SummaryWriter

        self._position_sampler()
        loader = make_loader(self.data, self.cfg.batch_size, self.cfg.loader_workers, self.sampler)
        # A run stopped between checkpoints logged steps it will now train again: drop them from
        # both logs, so a resumed run's curves hold each step once.
        _drop_logged_after(self.out / "metrics.jsonl", self.step)
        writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step + 1)
        history = []
        # "seconds" is the run's training time so far: a resumed run continues its own clock
        t0 = time.perf_counter() - self.train_seconds
        with (self.out / "metrics.jsonl").open("a") as log:
            batches = _endless(loader)
            last = self.cfg.steps
            if self.cfg.stop_after is not None:
                last = min(last, self.step + self.cfg.stop_after)
            while self.step < last:
                metrics = self.train_step(next(batches))
                metrics["step"] = self.step
                metrics["seconds"] = self.train_seconds = time.perf_counter() - t0
                history.append(metrics)
                if self.step % self.cfg.log_every == 0 or self.step == last:
                    log.write(json.dumps(metrics) + "\n")
                    log.flush()
                    for key, value in metrics.items():
                        writer.add_scalar(f"train/{key}", value, self.step)
                if self.step % self.cfg.checkpoint_every == 0 or self.step == last:
                    path = self.save()
                    if report is not None:
                        report(metrics, path)
        writer.close()
        return history


def _drop_logged_after(log_path: Path, step: int) -> None:
    """Keep only the JSONL metric rows up to ``step`` (the checkpoint a run resumes from)."""
    if not log_path.exists():
        return
    lines = log_path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):  # atomically, like the checkpoint: a crash keeps the old log
        tmp = log_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(log_path)


def _endless(loader: Any) -> Any:
    """Batches across epochs (the sampler moves to its next epoch each time it is exhausted)."""
    while True:
        yield from loader


def train(cfg: TrainConfig) -> list[dict[str, float]]:
    """Run training in this process."""
    return Run(cfg).fit()


def train_ray(cfg: TrainConfig, num_workers: int = 1, use_gpu: bool = False) -> dict[str, Any]:
    """Run training in Ray Train's ``TorchTrainer`` (DDP across ``num_workers``)."""
    from ray.train import Checkpoint, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from wallwm.pipeline.runtime import ensure_ray

    ensure_ray()
    # Built here, once: workers building one view side by side would race on its folder.
    prepare_view(cfg)

    def loop(config: dict[str, Any]) -> None:
        import ray.train

        run = Run(TrainConfig(**config))
        if ray.train.get_context().get_world_size() > 1:
            run.model = ray.train.torch.prepare_model(run.model)  # type: ignore[assignment]

        def report(metrics: dict[str, float], path: Path) -> None:
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(path.parent)))

        run.fit(report)

    trainer = TorchTrainer(
        loop,
        train_loop_config=cfg.model_dump(),
        # half a CPU per worker: Ray Train workers that reserve whole cores hang on 2-core boxes
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": 0.5} if not use_gpu else None,
        ),
        run_config=RunConfig(storage_path=str(Path(cfg.out).resolve() / "ray"), name="train"),
    )
    result = trainer.fit()
    return dict(result.metrics or {})


def plot_run(run_dir: str | Path, out: str | Path) -> Path:
    """Loss curves of a run (from its metrics.jsonl) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wallwm.pipeline.inspect import save_figure

    rows = [
        json.loads(line)
        for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
        if line
    ]
    if not rows:
        raise ValueError(f"{run_dir}: metrics.jsonl is empty")
    keys = [k for k in rows[0] if k not in ("step", "seconds", "lr", "grad_norm")]
    fig, ax = plt.subplots(figsize=(8, 4))
    steps = [r["step"] for r in rows]
    for key in keys:
        ax.plot(steps, [r[key] for r in rows], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(str(run_dir))
    return save_figure(fig, out, dpi=100, bbox_inches="tight")
