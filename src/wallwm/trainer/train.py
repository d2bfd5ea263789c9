"""The training run: a short loop of named steps over a curated training view.

Reads like nanoGPT (one loop, named steps), composed like torchtitan (every stateful piece has
``state_dict``/``load_state_dict``; a checkpoint is their union). Runs in-process (``--local``)
or as one of the data-parallel workers of Ray Train's ``TorchTrainer``
(:mod:`wallwm.trainer.launch`); the step itself is :class:`~wallwm.trainer.step.TrainStep`, on
the run's device and precision.

Data parallelism: ``batch_size`` is the global batch; rank ``r`` of ``W`` trains on its share of
every global batch of one sample stream (:class:`~wallwm.trainer.data.ClusterBalancedSampler`)
and the losses are normalised over the global batch, so ``W`` workers train the losses of one
process (tested), and a run resumed with another number of workers continues the same stream.
Rank 0 alone writes the checkpoint, ``metrics.jsonl`` and TensorBoard.

A checkpoint holds the model, the optimisers, the EMA weights, the sampler position, the RNG
states, the config, the dataset URI with the tag and Lance versions of the view, and the
normalisation statistics, every tensor on the CPU (a GPU-trained checkpoint loads on a CPU
machine and the other way round). ``--resume`` continues exactly: the data order follows from the
number of samples consumed and each sample's noise from its id, so the losses after resuming
equal those of an uninterrupted run (tested).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from wallwm.trainer.checkpoint import read_checkpoint
from wallwm.trainer.data import (
    ClusterBalancedSampler,
    EventFrameDataset,
    TextSpec,
    holdout_mask,
    make_loader,
)
from wallwm.trainer.device import DeviceName, Precision, autocast_dtype, resolve_device, to_cpu
from wallwm.trainer.distributed import World, current_world
from wallwm.trainer.durations import duration_table
from wallwm.trainer.factory import ActionModel, checked_backbone, new_model
from wallwm.trainer.logs import RunLog
from wallwm.trainer.model import TEXT_CONDITIONED, ModelConfig, preset
from wallwm.trainer.optim import warmup_cosine
from wallwm.trainer.step import MetricLog, StepResult, TrainStep
from wallwm.trainer.view import (
    MAX_VIEW_SIZE,
    MIN_VIEW_SIZE,
    ViewSummary,
    materialize,
    same_view_inputs,
    source_versions,
)

if TYPE_CHECKING:
    from wallwm.trainer.backbone.config import BackboneConfig

CHECKPOINT = "checkpoint.pt"

#: Called at every checkpoint step on every rank: the step's metrics and, on rank 0, the
#: checkpoint just written (None on the other ranks).
Reporter = Callable[[dict[str, float], Path | None], None]


class TrainConfig(BaseModel):
    """Options of ``wallwm train`` (defaults: the best settings measured in BENCHMARKS.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    dataset: str
    tag: str | None = None
    size: int = Field(96, ge=MIN_VIEW_SIZE, le=MAX_VIEW_SIZE)
    cameras: list[str] | None = Field(
        None, description="Camera streams the model sees (None: every camera of the dataset)."
    )
    trim: bool = Field(True, description="Leave out each episode's idle start and end.")
    exclude_flags: list[str] = Field(
        default_factory=list, description="Leave out episodes with these quality flags."
    )
    mode: Literal["event", "unified", "chunk", "chunk_text"] = "event"
    preset: str = "small"
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1, description="Global batch: samples per step, all workers.")
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    # 8-step horizons: the best of 8/16/32 on MT10 (BENCHMARKS.md "Events vs chunks"; 32/16
    # lost 10-18 points)
    h_max: int = Field(8, ge=1, description="Event mode: longest action horizon, steps.")
    chunk_len: int = Field(8, ge=1, description="Chunk/unified modes: chunk length, steps.")
    caption_dropout: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Share of samples whose event text is blanked (the planner then names the "
        "current event: how a policy picks its first event).",
    )
    seed: int = 0
    loader_workers: int = Field(0, ge=0, description="DataLoader processes per worker.")
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
    device: DeviceName = Field(
        "auto", description="auto: the GPU Ray Train assigns, else CUDA if present, else CPU."
    )
    precision: Precision = Field("auto", description="auto: bf16 autocast on GPUs, else fp32.")
    compile: bool = Field(False, description="torch.compile every transformer block.")
    backbone: str | None = Field(
        None,
        description="A local Hugging Face vision-language model directory (Qwen2-VL, "
        "Qwen2.5-VL) the model runs on; None: the compact model of --preset (whose width, "
        "heads and expert depth then size the action expert).",
    )
    lora_rank: int = Field(16, ge=0, description="Backbone: LoRA rank (0: full fine-tuning).")
    train_vision: bool = Field(False, description="Backbone: also train the vision tower.")
    gradient_checkpointing: bool = Field(
        False, description="Backbone: recompute activations in the backward (less memory)."
    )
    backbone_lr_scale: float = Field(
        0.1, gt=0, description="Backbone: its learning rate relative to --lr."
    )

    @field_validator("backbone")
    @classmethod
    def _backbone_dir(cls, path: str | None) -> str | None:
        """A model directory that exists (checked before any worker starts)."""
        if path is not None and not (Path(path) / "config.json").is_file():
            raise ValueError(
                f"--backbone {path}: no Hugging Face model directory (no config.json) there"
            )
        return path

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        """A preset that exists (checked before any worker starts: did-you-mean on a typo)."""
        preset(name)
        return name


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


def rng_state() -> dict[str, Any]:
    """Every random generator's state, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def load_resume_state(checkpoint: Path) -> dict[str, Any]:
    """A run's checkpoint for ``--resume`` (on the CPU), with a clear error when unreadable.

    Loaded with ``weights_only=True``: a checkpoint file can hold tensors and plain data, never
    code that unpickling would run.
    """
    state = read_checkpoint(checkpoint)
    if "step" not in state or "dataset" not in state:
        raise ValueError(f"{checkpoint}: not a wallwm training checkpoint")
    return state


def prepare_view(cfg: TrainConfig) -> tuple[ViewSummary, dict[str, Any] | None]:
    """The run's training view (built or rebuilt if needed) and the checkpoint it resumes, if any.

    The checkpoint is checked against the tables before a rebuild can start.
    """
    checkpoint, resumed, same_as = Path(cfg.out) / CHECKPOINT, None, None
    if cfg.resume and checkpoint.exists():
        resumed = load_resume_state(checkpoint)
        _check_same_data(checkpoint, resumed, cfg.dataset, source_versions(cfg.dataset, cfg.tag))
        same_as = resumed["dataset"]["versions"]  # checked: the view need not compare them again
    view = materialize(
        cfg.dataset,
        cfg.tag,
        cfg.size,
        cameras=cfg.cameras,
        same_as=same_as,
        trim=cfg.trim,
        exclude_flags=cfg.exclude_flags,
    )
    return view, resumed


def run_backbone(
    cfg: TrainConfig, resumed: dict[str, Any] | None, checkpoint: Path
) -> BackboneConfig | None:
    """The run's backbone (fingerprinted), refusing to resume on another one."""
    if cfg.backbone is None:
        if resumed is not None and resumed.get("backbone"):
            raise ValueError(
                f"{checkpoint}: the run trained on the backbone {resumed['backbone']['path']}; "
                "resume it with --backbone"
            )
        return None
    from wallwm.trainer.backbone.config import BackboneConfig, backbone_fingerprint

    if resumed is not None:
        if not resumed.get("backbone"):
            raise ValueError(f"{checkpoint}: the run trained the compact model, not a backbone")
        return checked_backbone(resumed["backbone"], str(checkpoint), cfg.backbone)
    return BackboneConfig(
        path=str(Path(cfg.backbone).resolve()),
        fingerprint=backbone_fingerprint(cfg.backbone),
        lora_rank=cfg.lora_rank,
        train_vision=cfg.train_vision,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )


def local_batch_size(batch_size: int, world_size: int) -> int:
    """Each worker's share of the global batch (which the workers must share evenly)."""
    if batch_size % world_size:
        raise ValueError(
            f"--batch-size {batch_size} cannot be shared evenly by {world_size} workers "
            f"(a multiple of {world_size} is needed)"
        )
    return batch_size // world_size


class Run:
    """Everything stateful in one training run (one rank's part of it)."""

    def __init__(
        self, cfg: TrainConfig, device: torch.device | None = None, world: World | None = None
    ) -> None:
        """Build view, data, model, optimiser, EMA (restoring them from a checkpoint if asked).

        ``device``: where to train (default: ``cfg.device`` resolved on this machine);
        ``world``: this rank (default: the initialised process group, or one process).
        """
        self.cfg = cfg
        self.world = world or current_world()
        self.device = device or resolve_device(cfg.device)
        self.local_batch = local_batch_size(cfg.batch_size, self.world.size)
        self.out = Path(cfg.out)
        if self.world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        view, resumed = prepare_view(cfg)
        meta = json.loads((Path(view.path) / "meta.json").read_text())
        self.model_cfg: ModelConfig = preset(
            cfg.preset,
            image_size=cfg.size,
            action_dim=meta["action_dim"],
            state_dim=max(1, meta["state_dim"]),
            h_max=cfg.h_max,
            chunk_len=cfg.chunk_len,
            num_cameras=len(meta.get("cameras") or [None]),
        )
        self.backbone = run_backbone(cfg, resumed, Path(cfg.out) / CHECKPOINT)
        self.data = EventFrameDataset(
            view.path,
            cfg.h_max,
            cfg.chunk_len,
            cfg.seed,
            cfg.caption_dropout if cfg.mode in TEXT_CONDITIONED else 0.0,
            # a backbone tokenises with its own tokenizer, in the model
            text=None if self.backbone else TextSpec(self.model_cfg.vocab, self.model_cfg.text_len),
        )
        torch.manual_seed(cfg.seed)
        self.trainer = TrainStep(
            self._new_model(meta["stats"]),
            self.device,
            cfg.precision,
            self.world,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            grad_clip=cfg.grad_clip,
            ema_decay=cfg.ema_decay,
            compile_layers=cfg.compile,
            backbone_lr_scale=cfg.backbone_lr_scale,
        )
        self.held_out = holdout_mask(self.data.events, cfg.holdout)
        if self.held_out.all():  # a single episode: train on it rather than on nothing
            self.held_out[:] = False
        # how long the training events ran (the plan follower's per-event timeout): fixed by
        # the data, so computed once, not at every checkpoint
        self.event_durations = duration_table(
            e for e, h in zip(self.data.events, self.held_out, strict=True) if not h
        )
        # whole global batches per epoch, so "samples consumed = step x batch" holds across
        # epochs and every rank gets its share of each
        per_epoch = cfg.batch_size * max(1, -(-len(self.data) // cfg.batch_size))
        self.sampler = ClusterBalancedSampler(
            np.where(self.held_out, 0.0, self.data.weights),
            per_epoch,
            seed=cfg.seed,
            rank=self.world.rank,
            world_size=self.world.size,
            batch_size=cfg.batch_size,
        )
        self.step = 0
        self.train_seconds = 0.0  # wall time spent in fit(), summed over resumed processes
        if resumed is not None:
            self.load_state_dict(resumed, Path(cfg.out) / CHECKPOINT)

    def _new_model(self, stats: dict[str, Any]) -> ActionModel:
        """The run's model, initialised from the run's seed."""
        lora = self.backbone is not None and self.backbone.lora_rank > 0
        # a LoRA run keeps the frozen base in the autocast dtype (bf16 on GPUs: half the memory)
        frozen_dtype = autocast_dtype(self.cfg.precision, self.device) if lora else None
        return new_model(
            self.model_cfg, self.cfg.mode, stats, self.backbone, frozen_dtype or torch.float32
        )

    @property
    def model(self) -> ActionModel:
        """The model itself (never its data-parallel wrapper)."""
        return self.trainer.model

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: every stateful piece plus provenance."""
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            **self.trainer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(),
            "config": self.cfg.model_dump(),
            "model_config": asdict(self.model_cfg),
            "mode": self.cfg.mode,
            # the VLM the model runs on: its path and content fingerprint (None: compact)
            "backbone": asdict(self.backbone) if self.backbone else None,
            "trained_on": {
                "device": str(self.device),
                "precision": self.cfg.precision,
                "workers": self.world.size,
            },
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

    def load_state_dict(self, state: dict[str, Any], source: Path | str = "checkpoint") -> None:
        """Continue from a checkpoint (saved on any device, by any number of workers)."""
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))  # older checkpoints: unknown
        try:
            self.trainer.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ValueError(
                f"{source}: its model or optimiser state does not fit this run "
                f"({str(exc).splitlines()[0][:200]}); train into a new --out"
            ) from exc
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])

    def save(self) -> Path:
        """Write the checkpoint atomically (temp file, then rename), tensors on the CPU."""
        tmp = self.out / (CHECKPOINT + ".tmp")
        torch.save(to_cpu(self.state_dict()), tmp)
        tmp.replace(self.out / CHECKPOINT)
        return self.out / CHECKPOINT

    # ------------------------------------------------------------------ the loop

    def _position_sampler(self) -> None:
        """Data order depends only on samples consumed (exact resume, any number of workers)."""
        consumed = self.step * self.cfg.batch_size
        per_epoch = self.sampler.samples_per_epoch
        self.sampler.load_state_dict(
            {
                "epoch": consumed // per_epoch,
                "position": consumed % per_epoch,
                "seed": self.cfg.seed,
            }
        )

    def lr(self) -> float:
        """The learning rate of the next step (linear warm-up, cosine decay)."""
        cfg = self.cfg
        return cfg.lr * warmup_cosine(self.step, cfg.warmup_steps, cfg.steps)

    def train_step(self, batch: dict[str, Any]) -> StepResult:
        """One optimisation step at the scheduled learning rate (metrics stay on the device)."""
        result = self.trainer(batch, self.lr())
        self.step += 1
        return result

    def batches(self) -> Iterator[dict[str, Any]]:
        """This rank's batches from the current step on, across epochs."""
        self._position_sampler()
        loader = make_loader(
            self.data,
            self.local_batch,
            self.cfg.loader_workers,
            self.sampler,
            pin_memory=self.device.type == "cuda",
        )
        while True:  # the sampler moves to its next epoch each time it is exhausted
            yield from loader

    def fit(self, report: Reporter | None = None) -> list[dict[str, float]]:
        """Train to ``cfg.steps``; returns every step's metrics.

        Logs every ``log_every`` steps, checkpoints every ``checkpoint_every`` and at the end.
        """
        cfg, history = self.cfg, []
        last = cfg.steps if cfg.stop_after is None else min(cfg.steps, self.step + cfg.stop_after)
        metrics = MetricLog(self.world)
        batches = self.batches()
        # "seconds" is the run's training time so far: a resumed run continues its own clock
        t0 = time.perf_counter() - self.train_seconds
        with RunLog(self.out, self.step, enabled=self.world.is_main) as log:
            while self.step < last:
                lr = self.lr()
                result = self.train_step(next(batches))
                self.train_seconds = time.perf_counter() - t0
                metrics.add(self.step, self.train_seconds, lr, result)
                logged = self.step % cfg.log_every == 0 or self.step == last
                saved = self.step % cfg.checkpoint_every == 0 or self.step == last
                if logged or saved:  # the only points where the host waits for the device
                    rows = list(metrics.flush())
                    history += rows
                    log.write(
                        [r for r in rows if r["step"] % cfg.log_every == 0 or r["step"] == last]
                    )
                if saved:
                    path = self.save() if self.world.is_main else None
                    if report is not None:
                        report(history[-1], path)
        return history


def train(cfg: TrainConfig) -> list[dict[str, float]]:
    """Run training in this process."""
    return Run(cfg).fit()
