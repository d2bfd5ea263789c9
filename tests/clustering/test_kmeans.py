"""Hierarchical k-means, dedup, weights, embeddings helpers (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from wallwm.clustering.embed import (
    HashingEmbedder,
    combine,
    normalise,
    resample,
    trajectory_features,
)
from wallwm.clustering.kmeans import (
    balanced_weights,
    hierarchical_kmeans,
    normalised_entropy,
    semantic_dedup,
)
from wallwm.clustering.stage import effective_ks


def blobs(sizes, dim=16, seed=0, spread=6.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(sizes), dim)) * spread
    x = np.concatenate([c + rng.normal(size=(n, dim)) for c, n in zip(centers, sizes, strict=True)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return x.astype(np.float32), truth


def test_hierarchy_shapes_and_parents():
    x, _ = blobs([400, 300, 200, 50, 50])
    levels = hierarchical_kmeans(x, [10, 3], seed=1)
    assert [len(lv.centroids) for lv in levels] == [10, 3]
    assert levels[0].labels.shape == (len(x),) and levels[1].labels.shape == (10,)
    assert set(levels[1].labels) <= {0, 1, 2}


def test_resampling_gives_rare_behaviours_their_own_clusters():
    x, truth = blobs([2000, 2000, 40, 40], seed=3)
    levels = hierarchical_kmeans(x, [8], seed=0)
    labels = levels[0].labels
    for rare in (2, 3):  # each rare blob is covered by a cluster it dominates
        clusters = set(labels[truth == rare])
        assert any((truth[labels == c] == rare).mean() > 0.9 for c in clusters)


def test_dedup_flags_exactly_one_of_each_planted_pair():
    x, _ = blobs([300, 300])
    rng = np.random.default_rng(1)
    copies = x[:100] + rng.normal(scale=1e-4, size=(100, x.shape[1]))
    data = np.concatenate([x, copies]).astype(np.float32)
    levels = hierarchical_kmeans(data, [4], seed=0)
    dup = semantic_dedup(data, levels[0].labels, levels[0].centroids, threshold=0.9999)
    pairs = dup[:100] ^ dup[600:]
    assert pairs.all() and dup.sum() == 100  # no false positives among the rest


def test_uniform_weights_balance_clusters_and_respect_curation():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    dup = np.zeros(100, bool)
    w = balanced_weights(labels, dup, {}, "uniform")
    assert w.sum() == pytest.approx(1.0)
    mass = np.bincount(labels, weights=w)
    assert mass == pytest.approx([1 / 3] * 3)
    w2 = balanced_weights(labels, dup, {0: 0.0, 1: 2.0}, "uniform")
    assert np.bincount(labels, weights=w2) == pytest.approx([0, 2 / 3, 1 / 3])
    dup[:45] = True
    w3 = balanced_weights(labels, dup, {}, "uniform")
    assert (w3[:45] == 0).all() and w3.sum() == pytest.approx(1)
    p = balanced_weights(labels, np.zeros(100, bool), {}, "power", alpha=1.0)
    assert p == pytest.approx(np.full(100, 0.01))  # alpha 1 == uniform over events
    with pytest.raises(ValueError, match="unknown weighting strategy"):
        balanced_weights(labels, dup, {}, "magic")


def test_entropy_of_balanced_sampling():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    rng = np.random.default_rng(0)
    w = balanced_weights(labels, np.zeros(1000, bool), {}, "uniform")
    sampled = labels[rng.choice(1000, 30000, p=w)]
    plain = labels[rng.integers(0, 1000, 30000)]
    assert normalised_entropy(np.bincount(sampled)) > 0.99 > normalised_entropy(np.bincount(plain))


def test_effective_ks_caps_small_datasets():
    assert effective_ks([64, 8], 10_000) == [64, 8]
    assert effective_ks([64, 8], 40) == [10, 5]
    assert effective_ks([64, 8], 3) == [1]


def test_embedding_helpers():
    emb = HashingEmbedder(32).embed(["grasp the puck", "grasp the puck", "open the drawer"])
    assert emb.shape == (3, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1)
    assert emb[0] @ emb[1] == pytest.approx(1) and emb[0] @ emb[2] < 0.9
    assert resample(np.arange(10.0).reshape(-1, 1), 4)[:, 0] == pytest.approx([0, 3, 6, 9])
    f = trajectory_features(np.ones((5, 2)), np.zeros(2), np.ones(2), 1.0, 4)
    assert f.shape == (9,) and f[-1] == pytest.approx(np.log(2))
    c = combine({"a": np.eye(2), "b": np.eye(2)[::-1]}, {"a": 1.0, "b": 0.0})
    assert c.shape == (2, 2) and np.allclose(c, np.eye(2))
    assert np.allclose(normalise(np.zeros((1, 3))), 0)
