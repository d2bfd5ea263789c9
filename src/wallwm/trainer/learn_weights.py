"""Learned cluster weights: group DRO over the event clusters (Re-Mix / DoReMi style).

``wallwm clusters learn-weights`` asks which clusters a model of this data finds hard *beyond*
what a reference model already fits:

1. a **reference** model is trained on the tag with the current curated weights (or given);
2. a **proxy** model of the same preset trains from scratch while a weight ``alpha_k`` per leaf
   cluster follows the clusters' *excess loss* -- the proxy's flow loss minus the reference's on
   the same samples (same frames, noise and flow time), clipped at 0 -- by exponentiated
   gradient: ``alpha <- normalise(alpha * exp(eta * excess))``, smoothed towards uniform; the
   proxy's loss is the ``alpha``-weighted mix of the clusters' losses (importance-weighted, as
   batches are drawn with the current weights);
3. the proposal is the average ``alpha`` over the proxy's steps, written as curated weights
   ``K * alpha_k`` (mean 1: under the ``uniform`` strategy a cluster's sampling mass follows its
   curated weight) in the ``clusters export`` format, with a diff against the current weights.

Nothing changes by itself: a human reviews the diff and applies it with ``clusters import``.
Cost: one reference run (skipped when ``reference`` is given) and one proxy run with one extra
forward pass of the reference per step -- about 2x one training run of the preset.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from wallwm.pipeline import schemas
from wallwm.pipeline.store import LanceStore
from wallwm.trainer.factory import ActionModel, model_from_checkpoint


class LearnWeightsConfig(BaseModel):
    """Options of ``wallwm clusters learn-weights``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    tag: str | None = None
    out: str = Field(description="The proposal (a `clusters export` file to review and import).")
    preset: str = "small"
    steps: int = Field(500, ge=1, description="Steps of the reference and of the proxy.")
    batch_size: int = Field(32, ge=1)
    size: int = Field(96, ge=16)
    eta: float = Field(1.0, gt=0, description="Step size of the weights' exponentiated update.")
    smoothing: float = Field(1e-3, ge=0, lt=1, description="Mixed-in share of uniform weights.")
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    reference: str | None = Field(None, description="A reference checkpoint (skip training it).")
    device: str = "auto"
    backbone: str | None = Field(
        None, description="Reference and proxy on this local VLM directory (LoRA, as trained)."
    )


@dataclasses.dataclass
class LearnedWeights:
    """A proposal: per leaf cluster its current and proposed weight and its mean excess loss."""

    path: str
    clusters: list[dict[str, Any]]
    steps: int


def dro_update(
    alpha_K: np.ndarray, excess_K: np.ndarray, present_K: np.ndarray, eta: float, smoothing: float
) -> np.ndarray:
    """One exponentiated-gradient step of the cluster weights, mixed with uniform weights.

    Clusters absent from the batch keep their share; ``smoothing`` is the uniform share.
    """
    logits = np.log(np.maximum(alpha_K, 1e-12)) + eta * np.where(present_K, excess_K, 0.0)
    alpha = np.exp(logits - logits.max())
    alpha /= alpha.sum()
    return np.asarray((1 - smoothing) * alpha + smoothing / len(alpha_K), np.float64)


def _train_config(cfg: LearnWeightsConfig, out: Path, steps: int) -> Any:
    from wallwm.trainer.train import TrainConfig

    return TrainConfig(
        dataset=cfg.dataset,
        tag=cfg.tag,
        size=cfg.size,
        preset=cfg.preset,
        steps=steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        out=str(out),
        device=cfg.device,  # type: ignore[arg-type]
        backbone=cfg.backbone,
        holdout=0.0,
        log_every=max(1, steps),
        checkpoint_every=max(1, steps),
    )


def _reference(cfg: LearnWeightsConfig, work: Path) -> ActionModel:
    """The reference model: the given checkpoint's EMA weights, else one trained on the tag."""
    from wallwm.trainer.serving.engine import load_checkpoint
    from wallwm.trainer.train import CHECKPOINT, Run

    path = Path(cfg.reference) if cfg.reference else None
    if path is None:
        run = Run(_train_config(cfg, work / "reference", cfg.steps))
        run.fit()
        path = work / "reference" / CHECKPOINT
    state = load_checkpoint(path)
    # the EMA weights, as the policy serves them
    return model_from_checkpoint(state, str(path)).eval()


def learn_weights(cfg: LearnWeightsConfig) -> LearnedWeights:
    """Train the proxy against the reference and write the proposed curated weights."""
    from wallwm.trainer.data import collate
    from wallwm.trainer.device import to_device
    from wallwm.trainer.train import Run

    store = LanceStore(cfg.dataset)
    if not store.exists(schemas.CLUSTERS):
        raise ValueError("no clusters yet: run `wallwm cluster` first")
    with tempfile.TemporaryDirectory(prefix="wallwm-dro-") as tmp:
        work = Path(tmp)
        reference = _reference(cfg, work)
        proxy = Run(_train_config(cfg, work / "proxy", cfg.steps))
        data, device = proxy.data, proxy.device
        reference.to(device)
        leaf_ids = sorted({e["cluster_id"] for e in data.events if e["cluster_id"]})
        if len(leaf_ids) < 2:
            raise ValueError("fewer than two clusters in the training view: nothing to weigh")
        index = {cid: k for k, cid in enumerate(leaf_ids)}
        cluster_E = np.array([index.get(e["cluster_id"], -1) for e in data.events])
        p_E = np.where(cluster_E >= 0, data.weights, 0.0)
        p_E = p_E / p_E.sum()
        p_K = np.bincount(cluster_E[cluster_E >= 0], p_E[cluster_E >= 0], len(leaf_ids))
        alpha_K, total_K, excess_sum_K, seen_K = (
            np.full(len(leaf_ids), 1 / len(leaf_ids)),
            np.zeros(len(leaf_ids)),
            np.zeros(len(leaf_ids)),
            np.zeros(len(leaf_ids)),
        )
        model = proxy.model
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
        rng = np.random.default_rng(cfg.seed)
        for step in range(cfg.steps):
            events_B = rng.choice(len(data.events), size=cfg.batch_size, p=p_E)
            items = [(int(e), step * cfg.batch_size + i) for i, e in enumerate(events_B)]
            batch = to_device(collate(data.__getitems__(items)), device)
            k_B = cluster_E[events_B]
            with torch.no_grad():
                ref_B = reference.sample_flow_losses(batch).cpu().numpy()
            losses_B = model.sample_flow_losses(batch)
            excess_B = np.maximum(losses_B.detach().cpu().numpy() - ref_B, 0.0)
            present_K = np.bincount(k_B, minlength=len(leaf_ids)) > 0
            excess_K = np.bincount(k_B, excess_B, len(leaf_ids)) / np.maximum(
                np.bincount(k_B, minlength=len(leaf_ids)), 1
            )
            alpha_K = dro_update(alpha_K, excess_K, present_K, cfg.eta, cfg.smoothing)
            total_K += alpha_K
            excess_sum_K += np.where(present_K, excess_K, 0.0)
            seen_K += present_K
            # the alpha-mix of the clusters' losses, batches drawn with p: weight alpha_k / p_k
            w_B = torch.as_tensor(alpha_K[k_B] / np.maximum(p_K[k_B], 1e-12), device=device)
            loss = (w_B * losses_B).sum() / w_B.sum()
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    return _write_proposal(store, cfg, leaf_ids, total_K / cfg.steps, excess_sum_K, seen_K)


def _write_proposal(
    store: LanceStore,
    cfg: LearnWeightsConfig,
    leaf_ids: list[str],
    mean_alpha_K: np.ndarray,
    excess_sum_K: np.ndarray,
    seen_K: np.ndarray,
) -> LearnedWeights:
    """The ``clusters export`` file with proposed weights (leaf clusters of the view)."""
    from wallwm.clustering.curation import list_clusters

    proposed = {
        cid: float(len(leaf_ids) * a) for cid, a in zip(leaf_ids, mean_alpha_K, strict=True)
    }
    rows = list_clusters(store, version=cfg.tag)
    clusters = []
    for r in rows:
        if r["cluster_id"] in proposed:
            k = leaf_ids.index(r["cluster_id"])
            clusters.append(
                {
                    **r,
                    "current_weight": r["weight"],
                    "weight": round(proposed[r["cluster_id"]], 4),
                    "mean_excess_loss": float(excess_sum_K[k] / max(seen_K[k], 1)),
                }
            )
        else:
            clusters.append(r)
    Path(cfg.out).write_text(
        json.dumps(
            {
                "dataset": store.root,
                "tag": cfg.tag,
                "method": "group DRO over leaf clusters (excess flow loss vs a reference)",
                "config": cfg.model_dump(),
                "clusters": clusters,
            },
            indent=1,
        )
    )
    leaves = [c for c in clusters if "current_weight" in c]
    return LearnedWeights(cfg.out, leaves, cfg.steps)
