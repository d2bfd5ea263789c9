"""Hierarchical k-means with resampling, semantic dedup, cluster-balanced weights (pure numpy).

Hierarchical k-means follows Vo et al. 2024 ("Automatic Data Curation for Self-Supervised
Learning: A Clustering-Based Approach"): level 1 clusters the points; level ``l + 1`` clusters the
centroids of level ``l``. Every level uses *resampling* steps: after ordinary k-means, each
centroid is re-estimated from only the ``r`` members closest to it, which pulls centroids away
from dense regions toward a more uniform cover of the data's support -- dense behaviours (reach,
grasp) no longer claim most of the clusters.

Dedup runs inside each finest cluster, from the most central event outwards: by default an event
whose action/state trajectory repeats a kept one's within a small RMS (the same motion recorded
twice) is a duplicate; SemDeDup-style, an event whose embedding's cosine similarity to a kept one
exceeds a threshold. For demonstrations the second marks the repeats of a task, which are the
training signal (measured: ``benchmarks/curation.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def _assign(
    x: np.ndarray, centroids: np.ndarray, chunk: int = 65536
) -> tuple[IntArray, np.ndarray]:
    """Nearest centroid (squared Euclidean) for every row, in memory-bounded chunks."""
    c_sq = (centroids**2).sum(axis=1)
    labels = np.empty(len(x), dtype=np.int64)
    dists = np.empty(len(x), dtype=np.float32)
    for i in range(0, len(x), chunk):
        block = x[i : i + chunk]
        d = c_sq[None, :] - 2.0 * block @ centroids.T + (block**2).sum(axis=1)[:, None]
        labels[i : i + chunk] = np.argmin(d, axis=1)
        dists[i : i + chunk] = np.maximum(d[np.arange(len(block)), labels[i : i + chunk]], 0.0)
    return labels, dists


def kmeans_resampled(
    x: np.ndarray, k: int, resample_r: int | None, seed: int, resampling_steps: int = 3
) -> tuple[FloatArray, IntArray]:
    """k-means (MiniBatch for large inputs) followed by resampling steps.

    Args:
        x: (N, D) points.
        k: Clusters (capped at N).
        resample_r: Members closest to each centroid used to re-estimate it (None: no
            resampling, plain k-means).
        seed: Random seed.
        resampling_steps: How many re-estimate/re-assign rounds.

    Returns:
        (k, D) centroids and (N,) labels.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k = max(1, min(k, len(x)))
    if len(x) > 20_000:
        km = MiniBatchKMeans(
            n_clusters=k, random_state=seed, batch_size=4096, n_init=1, max_iter=50
        )
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=2)
    km.fit(x)
    centroids = np.asarray(km.cluster_centers_, dtype=np.float32)
    labels, dists = _assign(x, centroids)
    for _ in range(resampling_steps if resample_r else 0):
        for c in range(k):
            members = np.flatnonzero(labels == c)
            if len(members) == 0:
                continue
            nearest = members[np.argsort(dists[members])[:resample_r]]
            centroids[c] = x[nearest].mean(axis=0)
        labels, dists = _assign(x, centroids)
    return centroids, labels


@dataclass(frozen=True)
class Level:
    """One level of the hierarchy."""

    centroids: FloatArray
    #: For level 1: the cluster of every point; above: the parent of every lower centroid.
    labels: IntArray


def hierarchical_kmeans(
    x: np.ndarray, ks: list[int], seed: int = 0, resample_r: int | None = None
) -> list[Level]:
    """Levels of clusters, finest first (``ks`` like ``[64, 8]``).

    ``resample_r`` defaults to a quarter of the mean cluster size at each level (at least 2).
    """
    levels: list[Level] = []
    points = x
    for i, k in enumerate(ks):
        r = resample_r or max(2, len(points) // max(1, min(k, len(points))) // 4)
        centroids, labels = kmeans_resampled(points, k, r, seed + i)
        levels.append(Level(centroids, labels))
        points = centroids
    return levels


Near = Callable[[np.ndarray, np.ndarray], npt.NDArray[np.bool_]]


def _greedy_dedup(
    x: np.ndarray,
    labels: IntArray,
    centroids: np.ndarray,
    vectors: np.ndarray,
    near: Near,
    block: int,
) -> npt.NDArray[np.bool_]:
    """Duplicates inside each cluster, visited greedily from the most central member (by ``x``).

    A member whose ``vectors`` row is ``near`` one kept earlier is a duplicate; blocks keep the
    memory bounded.
    """
    dup = np.zeros(len(x), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = members[np.argsort(((x[members] - centroids[c]) ** 2).sum(axis=1))]
        kept = np.zeros((0, vectors.shape[1]), dtype=vectors.dtype)
        for start in range(0, len(order), block):
            chunk = order[start : start + block]
            vecs = vectors[chunk]
            # against everything kept in earlier blocks: one matrix product
            blocked = np.zeros(len(chunk), dtype=bool)
            if len(kept):
                blocked = np.asarray(near(vecs, kept).any(axis=1))
            pairs = near(vecs, vecs)
            keep = np.zeros(len(chunk), dtype=bool)
            for j in range(len(chunk)):  # within the block, greedily in centrality order
                keep[j] = not blocked[j] and not pairs[j, :j][keep[:j]].any()
            dup[chunk[~keep]] = True
            kept = np.concatenate([kept, vecs[keep]])
    return dup


def semantic_dedup(
    x: np.ndarray, labels: IntArray, centroids: np.ndarray, threshold: float, block: int = 2048
) -> npt.NDArray[np.bool_]:
    """Mark near-duplicates inside each cluster (True = duplicate, dropped from sampling).

    Members are visited from the most central outwards; a member whose cosine similarity to a
    member kept earlier exceeds ``threshold`` is a duplicate. Similarities are computed in
    blocks, so memory stays bounded for large clusters.
    """
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def near(a: np.ndarray, b: np.ndarray) -> npt.NDArray[np.bool_]:
        return np.asarray(a @ b.T > threshold)

    return _greedy_dedup(x, labels, centroids, xn, near, block)


def trajectory_dedup(
    x: np.ndarray,
    labels: IntArray,
    centroids: np.ndarray,
    traj: np.ndarray,
    rms: float,
    block: int = 2048,
) -> npt.NDArray[np.bool_]:
    """Mark repeated *recordings* inside each cluster (True = duplicate).

    Demonstrations that look alike are the training signal; only the same motion twice is waste.

    ``traj`` holds each event's trajectory vector (actions and states resampled to a fixed
    length, z-scored with dataset-wide statistics: ``traj_embedding``). A member is a duplicate
    when the root-mean-square difference of its vector from one kept earlier (visited from the
    most central by ``x``, as :func:`semantic_dedup`) is below ``rms`` dataset standard
    deviations.
    """
    t = np.asarray(traj, dtype=np.float64)
    limit = rms * rms * t.shape[1]  # squared Euclidean distance of that RMS

    def near(a: np.ndarray, b: np.ndarray) -> npt.NDArray[np.bool_]:
        d2 = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * a @ b.T
        return np.asarray(d2 < limit)

    return _greedy_dedup(x, labels, centroids, t, near, block)


def balanced_weights(
    labels: IntArray,
    duplicates: npt.NDArray[np.bool_],
    cluster_weight: dict[int, float],
    strategy: str = "uniform",
    alpha: float = 0.5,
) -> npt.NDArray[np.float64]:
    """Per-event sampling probabilities from cluster masses.

    Args:
        labels: Finest cluster of every event.
        duplicates: Near-duplicates get probability 0.
        cluster_weight: Curated multiplier per cluster (0 excludes it; default 1).
        strategy: ``uniform`` -- every cluster gets equal mass; ``power`` -- mass proportional
            to (non-duplicate size) ** ``alpha`` (alpha 1 reproduces uniform-over-events,
            0 equals ``uniform``).
        alpha: Exponent of ``power``.

    Returns:
        Probabilities summing to 1 (all zeros if every event is excluded).
    """
    if strategy not in ("uniform", "power"):
        raise ValueError(f"unknown weighting strategy {strategy!r} (uniform | power)")
    probs = np.zeros(len(labels), dtype=np.float64)
    for c in np.unique(labels):
        members = np.flatnonzero((labels == c) & ~duplicates)
        if len(members) == 0:
            continue
        mass = 1.0 if strategy == "uniform" else float(len(members)) ** alpha
        probs[members] = mass * cluster_weight.get(int(c), 1.0) / len(members)
    total = probs.sum()
    return probs / total if total > 0 else probs


def normalised_entropy(counts: np.ndarray) -> float:
    """Entropy of a distribution over clusters divided by log(number of clusters)."""
    p = np.asarray(counts, dtype=np.float64)
    p = p[p > 0] / p.sum()
    if len(counts) <= 1:
        return 1.0
    return float(-(p * np.log(p)).sum() / np.log(len(counts)))
