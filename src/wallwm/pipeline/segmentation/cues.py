"""Auxiliary cues of a boundary: the end effector pausing or turning."""

from __future__ import annotations

import numpy as np

from wallwm.pipeline.segmentation.channels import noise_sigma
from wallwm.pipeline.segmentation.config import FloatArray, Signals


def _speed(s: Signals) -> FloatArray:
    if s.states_TS is not None and s.states_TS.size:
        x = np.asarray(s.states_TS, dtype=np.float64)
        v = np.diff(x, axis=0, prepend=x[:1]) / noise_sigma(x)
    else:
        v = np.asarray(s.actions_TA, dtype=np.float64)
        v = v / noise_sigma(v)
    return v


def _sliding(x: FloatArray, lo: int, hi: int, reduce: str) -> FloatArray:
    """Max or min of ``x[t+lo : t+hi]`` for every t (edge-padded, vectorised)."""
    fill = -np.inf if reduce == "max" else np.inf
    pad = np.concatenate([np.full(max(0, -lo), fill), x, np.full(max(0, hi), fill)])
    windows = np.lib.stride_tricks.sliding_window_view(pad, hi - lo)[: len(x)]
    out = windows.max(axis=1) if reduce == "max" else windows.min(axis=1)
    return np.asarray(out, dtype=np.float64)


def speed_min_cue(s: Signals, w: int, v_TD: FloatArray | None = None) -> FloatArray:
    """Pauses: the smoothed speed dips well below the speed on both sides (0..1).

    ``v_TD`` is the noise-scaled velocity if the caller has it already.
    """
    v = _speed(s) if v_TD is None else v_TD
    # A window longer than the episode sees no more than the episode; np.convolve's "same"
    # would also return the kernel's length, not the episode's.
    w = max(1, min(w, len(v)))
    kernel = np.ones(w) / w
    speed = np.convolve(np.linalg.norm(v, axis=1), kernel, mode="same")
    left = np.maximum(_sliding(speed, -2 * w, 0, "max"), 0.0)
    right = np.maximum(_sliding(speed, 1, 2 * w + 1, "max"), 0.0)
    lowest = _sliding(speed, -2 * w, 2 * w + 1, "min")
    side = np.minimum(left, right)
    out = np.where(speed <= lowest + 1e-12, (side - speed) / (side + 1e-9), 0.0)
    out[[0, -1]] = 0.0
    return np.clip(out, 0.0, 1.0)


def direction_cue(s: Signals, w: int, v_TD: FloatArray | None = None) -> FloatArray:
    """Sharp turns: (1 - cos angle)/2 between mean motion before and after ``t`` (0..1).

    ``v_TD`` is the noise-scaled velocity if the caller has it already.
    """
    v = _speed(s) if v_TD is None else v_TD
    t_len = len(v)
    csum = np.vstack([np.zeros((1, v.shape[1])), np.cumsum(v, axis=0)])
    t = np.arange(t_len)
    a, b = np.maximum(t - w, 0), np.minimum(t + w, t_len)
    before, after = csum[t] - csum[a], csum[b] - csum[t]
    norm = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
    dot = np.einsum("td,td->t", before, after)
    out = np.where(norm > 1e-9, (1.0 - dot / np.where(norm > 1e-9, norm, 1.0)) / 2.0, 0.0)
    out[[0, -1]] = 0.0
    return np.asarray(out, dtype=np.float64)
