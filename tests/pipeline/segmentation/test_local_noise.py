"""Noise that rises and falls within an episode: read per frame, each segment weighed at its own."""

from __future__ import annotations

import numpy as np
import pytest

from wallwm.pipeline.segmentation import changepoints
from wallwm.pipeline.segmentation.changepoints import LocalNoiseCost, PolynomialCost
from wallwm.pipeline.segmentation.channels import local_noise_variance


def test_local_noise_cost_divides_each_segment_by_its_frames_mean_variance():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(80, 3)).cumsum(axis=0)
    variance = rng.uniform(1.0, 9.0, size=(80, 3))
    inner = PolynomialCost(y, 2)
    cost = LocalNoiseCost(inner, variance)
    a, b = np.array([0, 5, 30, 61]), np.array([20, 40, 80, 64])
    expected = inner.columns(a, b) / np.stack(
        [variance[i:j].mean(axis=0) for i, j in zip(a, b, strict=True)]
    )
    np.testing.assert_allclose(cost.columns(a, b), expected, rtol=1e-10)
    np.testing.assert_allclose(cost(a, b), expected.sum(axis=1), rtol=1e-10)
    m = cost.matrix(10, 50)
    assert m[3, 27] == pytest.approx(cost(np.array([13]), 37)[0])
    assert np.isinf(m[27, 3]) and np.isinf(m[5, 5])
    scale = np.array([2.0, 0.5, 1.0])
    np.testing.assert_allclose(
        cost.scaled(scale).columns(a, b), expected * scale**2, rtol=1e-10
    )  # the same frames' noise, the columns rescaled
    assert (cost.params, cost.dims) == (inner.params, inner.dims)


def test_the_dense_matrix_is_every_segments_cost_across_its_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The matrix is built from chunks of segments at a time: a chunk ending mid-diagonal
    (37 pairs per chunk here) changes no entry."""
    rng = np.random.default_rng(3)
    y = rng.normal(size=(60, 2)).cumsum(axis=0)
    cost = LocalNoiseCost(PolynomialCost(y, 3), rng.uniform(1.0, 4.0, size=(60, 2)))
    whole = cost.matrix(5, 45)
    monkeypatch.setattr(changepoints, "PAIRS_PER_CHUNK", 37)
    chunked = cost.matrix(5, 45)
    starts, ends = np.triu_indices(41, 1)
    np.testing.assert_allclose(chunked[starts, ends], cost(starts + 5, ends + 5), rtol=1e-12)
    np.testing.assert_array_equal(chunked, whole)
    assert np.isinf(chunked[np.tril_indices(41)]).all()


def test_the_local_noise_is_read_where_it_rises_and_nowhere_else():
    """Unit noise with a stretch at 5x: the stretch reads ~25 (variance), the rest 1."""
    rng = np.random.default_rng(1)
    t = np.arange(600) / 50.0
    y = np.stack([np.sin(t), np.cos(0.7 * t)], axis=1) * 50.0  # smooth motion, no noise...
    y += rng.normal(size=y.shape)  # ...in unit noise
    y[200:400] += 4.0 * rng.normal(size=(200, 2))  # a noisier stretch (sd sqrt(17))
    variance = local_noise_variance(y, 50.0, 6)
    assert variance is not None and variance.shape == y.shape and (variance >= 1.0).all()
    inside, outside = variance[230:370], np.concatenate([variance[:170], variance[430:]])
    assert 10.0 < np.median(inside) < 30.0
    assert np.median(outside) < 1.5 and np.quantile(outside, 0.95) < 2.5
