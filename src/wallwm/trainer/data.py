"""PyTorch data loading from a training view (see :mod:`wallwm.trainer.view`).

A sample is a frame ``t`` drawn inside an event, with (shapes per sample; batches add ``B``):

- ``images_NCHW`` uint8 (N, 3, S, S): every camera of the view at ``t``, ``end_images_NCHW``
  at the event's last frame (the world-model target), and ``state_S`` at ``t``;
- ``actions_HA`` from ``t`` to the end of the event, padded to ``h_max`` with ``action_mask_H``,
  and ``end_of_event`` (1 when the event ends inside the horizon: fewer than ``h_max`` steps
  remain);
- ``chunk_CA`` the fixed-length chunk baseline: ``chunk_len`` actions from ``t`` regardless of
  event boundaries (padded at the episode end, ``chunk_mask_C``);
- ``chunk_in_event_C``: which chunk steps are still inside the current event (the
  end-of-event target of ``chunk_text`` mode);
- ``caption``, ``next_caption`` (the following event's, or "" at the last event), ``instruction``.
  With probability ``caption_dropout`` the caption is blanked and ``next_caption`` becomes the
  current event's caption: the planner then learns "with no event given, the event to do now",
  which is how a policy picks its first event (and re-identifies one when lost);
- with a :class:`TextSpec` (what training passes), the three texts' token ids
  (``instruction_ids_L`` ...) and ``has_next``: every distinct text is tokenised once, when the
  view is opened, so the training step never runs the tokenizer;
- ``flow_noise_HA`` (``max(h_max, chunk_len)`` steps) and ``flow_tau``: the flow-matching noise
  and time of the sample, drawn from the sample's own seed, so a sample's loss does not depend on
  the process or the batch that computed it (data parallelism gives one process's losses).

The cluster-balanced sampler draws events with the curated weights of the view's tag. Samples
are deterministic functions of ``(seed, sample id)``, and the sampler's state is its epoch and
position in one global sample stream, so a resumed run sees exactly the samples an uninterrupted
run would have. With ``world_size`` ranks each takes its contiguous share of every global batch:
the ranks' samples are disjoint, their union is the one-process stream, and a run resumed with
another number of workers continues the same stream.
Lance is not fork-safe: the dataset opens its tables lazily in each worker, and
:func:`make_loader` uses ``spawn`` workers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from wallwm.pipeline.tables.arrays import from_vector_series


@dataclass(frozen=True)
class TextSpec:
    """How the model tokenises text (from its config): the loader then sends token ids."""

    vocab: int
    length: int


class EventFrameDataset(Dataset[dict[str, Any]]):
    """Samples of a training view; items are ``(event_index, sample_id)`` pairs."""

    def __init__(
        self,
        view: str | Path,
        h_max: int = 32,
        chunk_len: int = 16,
        seed: int = 0,
        caption_dropout: float = 0.0,
        text: TextSpec | None = None,
    ) -> None:
        """Load the view's event index and per-episode signals (frames stay on disk).

        With ``text``, every distinct text of the events is tokenised here, once.
        """
        import lance

        self.view = Path(view)
        self.meta = json.loads((self.view / "meta.json").read_text())
        self.size = int(self.meta["size"])
        self.num_cameras = len(self.meta.get("cameras") or [None])  # views before cameras: one
        self.h_max, self.chunk_len, self.seed = h_max, chunk_len, seed
        self.caption_dropout = caption_dropout
        events = lance.dataset(str(self.view / "events.lance")).to_table()
        self.events = events.to_pylist()
        episodes = lance.dataset(str(self.view / "episodes.lance")).to_table()
        self.actions = [
            from_vector_series(episodes.column("actions")[i]) for i in range(episodes.num_rows)
        ]
        self.states = [
            from_vector_series(episodes.column("states")[i]) for i in range(episodes.num_rows)
        ]
        self.weights = np.array([e["weight"] for e in self.events], dtype=np.float64)
        self.noise_len = max(h_max, chunk_len)
        self.text = text
        self._token_ids: dict[str, torch.Tensor] = {}
        if text is not None:
            from wallwm.trainer.model import tokenize

            texts = sorted(
                {
                    e[k] or ""
                    for e in self.events
                    for k in ("instruction", "caption", "next_caption")
                }
                | {""}
            )
            self._token_ids = dict(
                zip(texts, tokenize(texts, text.vocab, text.length).unbind(), strict=True)
            )
        self._frames: Any = None  # opened lazily, per process

    def __len__(self) -> int:
        """Number of events."""
        return len(self.events)

    def _frame_table(self) -> Any:
        if self._frames is None:
            import lance

            self._frames = lance.dataset(str(self.view / "frames.lance"))
        return self._frames

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_frames"] = None  # never ship an open Lance handle to another process
        return state

    def _plan(self, item: tuple[int, int]) -> _Plan:
        event_index, sample_id = item
        event = self.events[event_index]
        rng = np.random.default_rng([self.seed, sample_id])
        t = int(rng.integers(event["start_frame"], event["end_frame"]))
        drop = bool(rng.random() < self.caption_dropout)
        a_dim = self.actions[event["episode_row"]].shape[1]
        noise = rng.standard_normal((self.noise_len, a_dim)).astype(np.float32)
        return _Plan(event, sample_id, t, drop, noise, float(rng.beta(1.5, 1.0)))

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        """One sample (see the module docstring)."""
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """A batch of samples with one positional ``take`` for all their frames."""
        plans = [self._plan(tuple(i)) for i in items]  # type: ignore[arg-type]
        # the frame at t and the event's last frame (the world-model target), one take for all
        rows = [p.event["frame_row"] + p.t for p in plans] + [
            p.event["frame_row"] + p.event["end_frame"] - 1 for p in plans
        ]
        frames = self._frame_table().take(rows, columns=["frame"]).column("frame").to_pylist()
        n = len(plans)
        return [self._sample(p, frames[i], frames[n + i]) for i, p in enumerate(plans)]

    def _image(self, frame: bytes) -> torch.Tensor:
        images = np.frombuffer(frame, np.uint8).reshape(self.num_cameras, self.size, self.size, 3)
        return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())

    def _sample(self, plan: _Plan, frame: bytes, end_frame: bytes) -> dict[str, Any]:
        event, t = plan.event, plan.t
        actions = self.actions[event["episode_row"]]
        states = self.states[event["episode_row"]]
        a_dim = actions.shape[1]
        span = actions[t : min(event["end_frame"], t + self.h_max)]
        actions_HA = np.zeros((self.h_max, a_dim), np.float32)
        actions_HA[: len(span)] = span
        mask_H = np.zeros(self.h_max, bool)
        mask_H[: len(span)] = True
        chunk = actions[t : t + self.chunk_len]
        chunk_CA = np.zeros((self.chunk_len, a_dim), np.float32)
        chunk_CA[: len(chunk)] = chunk
        chunk_mask = np.zeros(self.chunk_len, bool)
        chunk_mask[: len(chunk)] = True
        in_event_C = np.arange(self.chunk_len) < min(event["end_frame"] - t, len(chunk))
        caption, next_caption = event["caption"] or "", event["next_caption"] or ""
        if plan.drop_caption:
            caption, next_caption = "", caption
        texts = {
            "instruction": event["instruction"],
            "caption": caption,
            "next_caption": next_caption,
        }
        ids = (
            {f"{k}_ids_L": self._token_ids[v or ""] for k, v in texts.items()} if self.text else {}
        )
        return {
            "images_NCHW": self._image(frame),
            "end_images_NCHW": self._image(end_frame),
            "state_S": torch.from_numpy(states[t].copy()),
            "actions_HA": torch.from_numpy(actions_HA),
            "action_mask_H": torch.from_numpy(mask_H),
            "end_of_event": torch.tensor(float(event["end_frame"] - t < self.h_max)),
            "chunk_CA": torch.from_numpy(chunk_CA),
            "chunk_mask_C": torch.from_numpy(chunk_mask),
            "chunk_in_event_C": torch.from_numpy(in_event_C),
            "flow_noise_HA": torch.from_numpy(plan.noise_HA),
            "flow_tau": torch.tensor(plan.tau),
            "has_next": torch.tensor(bool(next_caption)),
            **ids,
            "caption": caption,
            "next_caption": next_caption,
            "instruction": event["instruction"],
            "event_id": event["event_id"],
            "t": t,
            "sample_id": plan.sample_id,
        }


@dataclass(frozen=True)
class _Plan:
    """What a sample is, before its frames are read: a pure function of (seed, sample id)."""

    event: dict[str, Any]
    sample_id: int
    t: int
    drop_caption: bool
    noise_HA: np.ndarray
    tau: float


def holdout_mask(events: list[dict[str, Any]], fraction: float) -> np.ndarray:
    """Events of held-out episodes, chosen by a hash of the episode id.

    An episode is held out when its hash falls under ``fraction``: stable across runs and as
    the dataset grows. On small datasets the threshold can hold out none or all of them; then
    the episodes with the lowest hashes are taken instead, ``round(fraction * episodes)``
    clamped to [1, episodes - 1], so asking for a held-out split always gives one (given at
    least two episodes) and training always keeps data.
    """
    import zlib

    episodes = sorted({e["episode_id"] for e in events})
    key = {ep: zlib.crc32(ep.encode()) % 10_000 for ep in episodes}
    held = {ep for ep in episodes if key[ep] < round(fraction * 10_000)}
    if fraction > 0 and len(episodes) >= 2 and len(held) in (0, len(episodes)):
        k = min(max(round(fraction * len(episodes)), 1), len(episodes) - 1)
        held = set(sorted(episodes, key=lambda ep: (key[ep], ep))[:k])
    return np.array([e["episode_id"] in held for e in events], dtype=bool)


class ClusterBalancedSampler(Sampler[tuple[int, int]]):
    """Draws events with probability proportional to their curated weights, with replacement.

    Yields ``(event_index, sample_id)``; ``sample_id`` counts samples across epochs and seeds the
    frame drawn inside the event. ``state_dict``/``load_state_dict`` resume mid-epoch exactly.

    The stream is global: ``position`` counts the samples of every rank. With ``world_size`` > 1
    each global batch of ``batch_size`` samples is cut into ``world_size`` contiguous shares and
    rank ``r`` yields share ``r`` (see the module docstring).
    """

    def __init__(
        self,
        weights: np.ndarray,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int | None = None,
    ) -> None:
        """Sample ``samples_per_epoch`` (default: number of events) per epoch, globally.

        Several ranks need the global ``batch_size``, a multiple of ``world_size`` that divides
        ``samples_per_epoch``.
        """
        w = np.asarray(weights, dtype=np.float64)
        if w.sum() <= 0:  # nothing curated (or everything excluded): fall back to uniform
            w = np.ones_like(w)
        self.probs = torch.as_tensor(w / w.sum())
        self.samples_per_epoch = samples_per_epoch or len(w)
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self.rank, self.world_size = rank, world_size
        self.batch_size = batch_size or self.samples_per_epoch
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        if self.batch_size % world_size or self.samples_per_epoch % self.batch_size:
            raise ValueError(
                f"a global batch of {self.batch_size} samples cannot be shared by {world_size} "
                f"ranks over epochs of {self.samples_per_epoch} samples"
            )
        self.share = self.batch_size // world_size  # samples of each global batch per rank

    def __len__(self) -> int:
        """This rank's samples per epoch."""
        return self.samples_per_epoch // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """This rank's remaining samples of the current epoch, then moves to the next epoch."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        picks = torch.multinomial(
            self.probs, self.samples_per_epoch, replacement=True, generator=gen
        ).tolist()
        base = self.epoch * self.samples_per_epoch
        while self.position < self.samples_per_epoch:
            k = self.position
            self.position += 1
            if (k % self.batch_size) // self.share == self.rank:
                yield picks[k], base + k
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        """Where the global stream is (save with the checkpoint)."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position."""
        self.epoch, self.position, self.seed = state["epoch"], state["position"], state["seed"]


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors (adding the batch dim ``B``); keep strings as lists."""
    out: dict[str, Any] = {}
    for key, value in samples[0].items():
        values = [s[key] for s in samples]
        if not isinstance(value, torch.Tensor):
            out[key] = values
            continue
        prefix, _, shape = key.rpartition("_")
        # "actions_HA" -> "actions_BHA"; unsuffixed per-sample scalars keep their name, shape (B,)
        out[f"{prefix}_B{shape}" if prefix and shape.isupper() else key] = torch.stack(values)
    return out


def make_loader(
    dataset: EventFrameDataset,
    batch_size: int = 32,
    num_workers: int = 0,
    sampler: ClusterBalancedSampler | None = None,
    pin_memory: bool = False,
) -> DataLoader[dict[str, Any]]:
    """A DataLoader over the view.

    Cluster-balanced by default; spawn workers (Lance is not fork-safe); each batch is fetched
    with one ``take``. ``batch_size`` is per process (a rank's share of the global batch);
    ``pin_memory`` for runs on a GPU (page-locked batches copy to it asynchronously).
    """
    sampler = sampler or ClusterBalancedSampler(dataset.weights, seed=dataset.seed)
    return DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        sampler=sampler,  # type: ignore[arg-type]
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        multiprocessing_context="spawn" if num_workers else None,
        persistent_workers=num_workers > 0,
        # Each new iterator (every epoch) draws its workers' base seed from this generator; with
        # none it would draw from the global torch RNG, so a run resumed mid-epoch would see the
        # model's noise shifted by one draw against an uninterrupted run.
        generator=torch.Generator().manual_seed(sampler.seed),
    )
