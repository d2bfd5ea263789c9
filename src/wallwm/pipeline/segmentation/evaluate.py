"""Boundary-quality metrics: precision, recall, F1 within a tolerance, and mean offset."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class BoundaryScore:
    """Matched counts for one or more episodes (add them up across episodes)."""

    true_positives: int
    predicted: int
    actual: int
    offset_sum: float

    @property
    def precision(self) -> float:
        """Matched predictions over all predictions (1.0 when nothing was predicted or due)."""
        return self.true_positives / self.predicted if self.predicted else float(self.actual == 0)

    @property
    def recall(self) -> float:
        """Matched ground-truth boundaries over all of them."""
        return self.true_positives / self.actual if self.actual else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def mean_offset(self) -> float:
        """Mean |predicted - true| frames over matched boundaries."""
        return self.offset_sum / self.true_positives if self.true_positives else float("nan")

    def __add__(self, other: BoundaryScore) -> BoundaryScore:
        return BoundaryScore(
            self.true_positives + other.true_positives,
            self.predicted + other.predicted,
            self.actual + other.actual,
            self.offset_sum + other.offset_sum,
        )

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready numbers (the mean offset None when nothing matched: JSON has no NaN)."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "mean_offset_frames": self.mean_offset if self.true_positives else None,
            "true_positives": self.true_positives,
            "predicted": self.predicted,
            "actual": self.actual,
        }


EMPTY = BoundaryScore(0, 0, 0, 0.0)


def scored_frames(num_frames: int, success_frame: int | None, until_success: bool) -> int:
    """Where an episode's score ends (cuts and boundaries from there on are not counted).

    Its end; with ``until_success``, the first frame its source marks successful where it
    marks one -- ground truth that stops at the task's success.
    """
    if until_success and success_frame is not None:
        return min(num_frames, success_frame)
    return num_frames


def match_boundaries(
    predicted: Iterable[int], actual: Iterable[int], num_frames: int, tolerance: int
) -> BoundaryScore:
    """Match predicted to ground-truth boundaries, each at most once, within ``tolerance`` frames.

    Episode start (frame 0) and end (``num_frames``) are not boundaries and are dropped from
    both sides. Pairs are matched closest first, so one prediction cannot claim two truths.
    """
    return matched_truths(predicted, actual, num_frames, tolerance)[0]


def matched_truths(
    predicted: Iterable[int], actual: Iterable[int], num_frames: int, tolerance: int
) -> tuple[BoundaryScore, set[int]]:
    """:func:`match_boundaries`, and which ground-truth boundaries (frames) were found."""
    pred = sorted({int(p) for p in predicted if 0 < int(p) < num_frames})
    true = sorted({int(a) for a in actual if 0 < int(a) < num_frames})
    pairs = sorted(
        (abs(p - a), i, j)
        for i, p in enumerate(pred)
        for j, a in enumerate(true)
        if abs(p - a) <= tolerance
    )
    used_p: set[int] = set()
    used_a: set[int] = set()
    offset = 0.0
    for dist, i, j in pairs:
        if i in used_p or j in used_a:
            continue
        used_p.add(i)
        used_a.add(j)
        offset += dist
    score = BoundaryScore(len(used_p), len(pred), len(true), offset)
    return score, {true[j] for j in used_a}
