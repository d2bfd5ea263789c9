"""Learned cluster weights: group DRO over the event clusters (Re-Mix / DoReMi style).

``wallwm clusters learn-weights`` asks which clusters a model of this data finds hard *beyond*
what a reference model already fits:

1. a **reference** model is trained on the tag with the current curated weights (or given);
2. a **proxy** model of the same preset trains from scratch while a weight ``alpha_k`` per leaf
   cluster follows the clusters' *excess loss* -- the proxy's flow loss minus the reference's,
   clipped at 0 -- by exponentiated gradient: ``alpha <- normalise(alpha * exp(eta *
   excess))``, smoothed towards uniform; the proxy's loss is the ``alpha``-weighted mix of the
   clusters' losses (importance-weighted, as batches are drawn with the current weights).
   The excess is measured ``probes`` times on a fixed probe set -- up to ``probe_events``
   events per cluster, each ``probe_repeats`` fixed samples (frame, flow noise, flow time) --
   the same samples for both models at every probe, every cluster at once (a common lag of
   the proxy cancels). Measured per training batch instead (one or two samples of a cluster, a
   random flow time each), two proxy seeds' proposals correlated 0.28 in log weight on the
   curation benchmark: mostly noise;
3. the learned weights are the average ``alpha`` over the updates, as curated weights
   ``K * alpha_k`` (mean 1). Each half of every cluster's probe events also drives weights of
   its own; the two halves' agreement (Pearson over clusters, log weights) gives the
   proposal's reliability by Spearman-Brown, and the **proposal** moves each log weight that
   share of the way from the current weight to the learned one (Kelley's shrinkage), so a
   ranking the data do not reproduce changes little. It is written in the ``clusters export``
   format with the current, learned and proposed weights and a reliability line.

Nothing changes by itself: a human reviews the proposal and applies it with ``clusters import``.
Cost: one reference run (skipped when ``reference`` is given), one proxy run, and the probes
(``probes x probe set`` forward passes of the proxy, one of the reference).
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

from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore
from wallwm.trainer.factory import ActionModel, model_from_checkpoint
from wallwm.trainer.view import MAX_VIEW_SIZE, MIN_VIEW_SIZE


class LearnWeightsConfig(BaseModel):
    """Options of ``wallwm clusters learn-weights``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    dataset: str
    tag: str | None = None
    out: str = Field(description="The proposal (a `clusters export` file to review and import).")
    preset: str = "small"
    steps: int = Field(500, ge=1, description="Steps of the reference and of the proxy.")
    batch_size: int = Field(32, ge=1)
    size: int = Field(96, ge=MIN_VIEW_SIZE, le=MAX_VIEW_SIZE)
    eta: float = Field(1.0, gt=0, description="Step size of the weights' exponentiated update.")
    smoothing: float = Field(1e-3, ge=0, lt=1, description="Mixed-in share of uniform weights.")
    probes: int = Field(5, ge=1, description="Weight updates: the excess is measured this often.")
    probe_events: int = Field(8, ge=1, description="Probe events per cluster (at most).")
    probe_repeats: int = Field(8, ge=1, description="Fixed samples (frame, noise, time) per event.")
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
    agreement: float | None = None
    """Split-half agreement: the correlation over clusters of the log proposals learned from
    two disjoint halves of each cluster's probe events (1: the ranking is the data's; near 0:
    the proposal is mostly sampling noise). None when under three clusters have two events."""
    reliability: float = 1.0
    """The share of the way from the current to the learned log weights the proposal moves."""


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


@dataclasses.dataclass(frozen=True)
class _Probe:
    """Fixed samples per cluster on which the excess loss is measured.

    Each item is an (event, sample seed) pair: the loader draws the sample's frame, flow noise
    and flow time from it, so the reference's and the proxy's losses are on the very same
    samples at every probe -- differences between clusters are then the models', not the
    batches' luck (2026-12-05: with per-batch excess, two proxy seeds' proposals correlated
    0.28 in log weight on the curation benchmark's 64 clusters).
    """

    items: list[tuple[int, int]]
    cluster_P: np.ndarray  # (P,) leaf index of each item
    half_P: np.ndarray  # (P,) 0/1: which split-half the item's event is in

    @classmethod
    def build(
        cls, cluster_E: np.ndarray, k: int, per_cluster: int, repeats: int, seed: int
    ) -> _Probe:
        rng = np.random.default_rng([seed, 7])
        items, cluster, half = [], [], []
        for kk in range(k):
            events = np.flatnonzero(cluster_E == kk)
            if len(events) > per_cluster:
                events = np.sort(rng.choice(events, per_cluster, replace=False))
            for j, e in enumerate(events):
                for r in range(repeats):
                    # sample ids far above the training stream's (step * batch + i)
                    items.append((int(e), 2**40 + int(e) * repeats + r))
                    cluster.append(kk)
                    half.append(j % 2)
        return cls(items, np.array(cluster), np.array(half))

    def losses(self, model: ActionModel, data: Any, device: torch.device, batch: int) -> np.ndarray:
        """Each probe item's flow loss under ``model`` (P,), in eval mode."""
        from wallwm.trainer.data import collate
        from wallwm.trainer.device import to_device

        was_training = model.training
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(self.items), batch):
                b = to_device(collate(data.__getitems__(self.items[i : i + batch])), device)
                out.append(model.sample_flow_losses(b).float().cpu().numpy())
        model.train(was_training)
        return np.concatenate(out)

    def excess(
        self, proxy_P: np.ndarray, ref_P: np.ndarray, k: int, half: int | None
    ) -> np.ndarray:
        """Each cluster's mean excess loss (K,), clipped at 0; ``half`` restricts the items."""
        keep = np.ones(len(proxy_P), bool) if half is None else self.half_P == half
        diff = np.bincount(self.cluster_P[keep], (proxy_P - ref_P)[keep], k)
        n = np.bincount(self.cluster_P[keep], minlength=k)
        return np.maximum(diff / np.maximum(n, 1), 0.0)


class _Weights:
    """The cluster weights' exponentiated-gradient state.

    One row for the whole probe set and one per split half (whose agreement says how much of
    the proposal is the data's).
    """

    def __init__(self, k: int, cfg: LearnWeightsConfig, probe: _Probe, ref_P: np.ndarray) -> None:
        self.k, self.cfg, self.probe, self.ref_P = k, cfg, probe, ref_P
        self.alpha_3K = np.full((3, k), 1 / k)
        self.total_3K = np.zeros((3, k))
        self.excess_sum_K = np.zeros(k)
        self.updates = 0

    @property
    def current(self) -> np.ndarray:
        """The weights the proxy trains with now (the whole probe set's)."""
        return np.asarray(self.alpha_3K[0])

    def update(self, proxy_P: np.ndarray) -> None:
        """One step on every cluster from the proxy's probe losses.

        Every cluster's excess is measured at every update, so a common lag of the proxy
        cancels in the normalisation.
        """
        every = np.ones(self.k, bool)
        for row, half in enumerate((None, 0, 1)):
            excess_K = self.probe.excess(proxy_P, self.ref_P, self.k, half)
            if half is None:
                self.excess_sum_K += excess_K
            self.alpha_3K[row] = dro_update(
                self.alpha_3K[row], excess_K, every, self.cfg.eta, self.cfg.smoothing
            )
        self.total_3K += self.alpha_3K
        self.updates += 1


def _split_half_agreement(alphas: np.ndarray, probe: _Probe, k: int) -> float | None:
    """Pearson correlation over clusters of the two halves' log proposals (None: too few)."""
    both = np.bincount(probe.cluster_P[probe.half_P == 1], minlength=k) > 0
    if both.sum() < 3:
        return None
    a, b = np.log(alphas[0][both]), np.log(alphas[1][both])
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


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
        k = len(leaf_ids)
        index = {cid: i for i, cid in enumerate(leaf_ids)}
        cluster_E = np.array([index.get(e["cluster_id"], -1) for e in data.events])
        probe = _Probe.build(cluster_E, k, cfg.probe_events, cfg.probe_repeats, cfg.seed)
        ref_P = probe.losses(reference, data, device, cfg.batch_size)
        p_E = np.where(cluster_E >= 0, data.weights, 0.0)
        p_E = p_E / p_E.sum()
        p_K = np.bincount(cluster_E[cluster_E >= 0], p_E[cluster_E >= 0], k)
        weights = _Weights(k, cfg, probe, ref_P)
        model = proxy.model
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
        rng = np.random.default_rng(cfg.seed)
        every = max(1, cfg.steps // cfg.probes)
        for step in range(cfg.steps):
            events_B = rng.choice(len(data.events), size=cfg.batch_size, p=p_E)
            items = [(int(e), step * cfg.batch_size + i) for i, e in enumerate(events_B)]
            batch = to_device(collate(data.__getitems__(items)), device)
            k_B = cluster_E[events_B]
            losses_B = model.sample_flow_losses(batch)
            # the alpha-mix of the clusters' losses, batches drawn with p: weight alpha_k / p_k
            w_B = torch.as_tensor(weights.current[k_B] / np.maximum(p_K[k_B], 1e-12), device=device)
            loss = (w_B * losses_B).sum() / w_B.sum()
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if (step + 1) % every == 0 or step + 1 == cfg.steps:
                weights.update(probe.losses(model, data, device, cfg.batch_size))
    mean_3K = weights.total_3K / weights.updates
    agreement = _split_half_agreement(mean_3K[1:], probe, k)
    mean_excess_K = weights.excess_sum_K / weights.updates
    return _write_proposal(
        store, cfg, leaf_ids, k * mean_3K[0], mean_excess_K, _Reliability.of(agreement)
    )


@dataclasses.dataclass(frozen=True)
class _Reliability:
    """How far the proposal may move the weights: Kelley's true-score shrinkage.

    The split-half agreement ``r`` (two disjoint halves of each cluster's probe events, each
    driving its own weights) gives the whole set's reliability by Spearman-Brown,
    ``2r / (1 + r)``; the proposal moves each log weight from the current one towards the
    learned one by that share, so a ranking that the data do not reproduce changes little.
    Unknown (too few clusters with two events) moves them all the way.
    """

    agreement: float | None
    share: float

    @classmethod
    def of(cls, agreement: float | None) -> _Reliability:
        if agreement is None:
            return cls(None, 1.0)
        r = max(agreement, 0.0)
        return cls(agreement, 2 * r / (1 + r))

    def shrink(self, learned_K: np.ndarray, current_K: np.ndarray) -> np.ndarray:
        """Weights ``share`` of the way from current to learned in log space, mean 1."""
        current_K = np.maximum(current_K, 1e-6)
        log_K = np.log(current_K) + self.share * (np.log(learned_K) - np.log(current_K))
        w = np.exp(log_K - log_K.max())
        return np.asarray(w / w.mean(), np.float64)


def _write_proposal(
    store: LanceStore,
    cfg: LearnWeightsConfig,
    leaf_ids: list[str],
    learned_K: np.ndarray,
    mean_excess_K: np.ndarray,
    reliability: _Reliability,
) -> LearnedWeights:
    """The ``clusters export`` file with proposed weights (leaf clusters of the view)."""
    from wallwm.clustering.curation import list_clusters

    rows = {r["cluster_id"]: r for r in list_clusters(store, version=cfg.tag)}
    current_K = np.array([rows[c]["weight"] if c in rows else 1.0 for c in leaf_ids], float)
    proposed_K = reliability.shrink(learned_K, current_K)
    index = {cid: k for k, cid in enumerate(leaf_ids)}
    clusters = []
    for r in rows.values():
        if r["cluster_id"] in index:
            k = index[r["cluster_id"]]
            clusters.append(
                {
                    **r,
                    "current_weight": r["weight"],
                    "weight": round(float(proposed_K[k]), 4),
                    "learned_weight": round(float(learned_K[k]), 4),
                    "mean_excess_loss": float(mean_excess_K[k]),
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
                "split_half_agreement": reliability.agreement,
                "reliability": reliability.share,
                "config": cfg.model_dump(),
                "clusters": clusters,
            },
            indent=1,
        )
    )
    leaves = [c for c in clusters if "current_weight" in c]
    return LearnedWeights(cfg.out, leaves, cfg.steps, reliability.agreement, reliability.share)
