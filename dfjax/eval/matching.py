"""The paper's detection criterion (Sec. 5.1): predicted and true sources matched one to one.

A prediction matches a true source when the 2-D IoU (eq. 22) of their boxes is ≥ 0.6, the
distance between the box centres is < 3 px and, with ``spectral=True``, the 1-D IoU of their
emission ranges [z0, z1] is ≥ 0.6. Among admissible pairs the assignment maximises the summed
IoU (Hungarian algorithm), so a prediction is never counted for two sources.

Boxes are rows ``(x0, y0, x1, y1, z0, z1)``: half-open field pixels along x (NAXIS1) and y
(NAXIS2) as in ``sim.sky.box_2d``, and the emission range in channels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment

from dfjax.input_pipeline.transforms import pairwise_iou_2d

__all__ = ["MatchCriteria", "Matching", "box_centres", "iou_1d", "iou_2d", "match", "match_centres"]


@dataclasses.dataclass(frozen=True)
class MatchCriteria:
    """Thresholds of the match; the defaults are the paper's."""

    min_iou_2d: float = 0.6
    max_distance_px: float = 3.0  # box centres strictly closer than this
    min_iou_1d: float = 0.6
    spectral: bool = True  # False: 2-D criteria only (the paper's for Blobs Finder and BLOBCAT)


@dataclasses.dataclass(frozen=True)
class Matching:
    """Result of :func:`match`: ``pairs`` (K, 2) rows (prediction index, truth index)."""

    pairs: np.ndarray
    iou_2d: np.ndarray  # (K,) of the matched pairs
    iou_1d: np.ndarray  # (K,)
    distance_px: np.ndarray  # (K,) between box centres
    unmatched_predictions: np.ndarray  # false positives, indices into the predictions
    unmatched_truth: np.ndarray  # false negatives, indices into the truth

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fp(self) -> int:
        return len(self.unmatched_predictions)

    @property
    def fn(self) -> int:
        return len(self.unmatched_truth)


def _boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 6)
    if boxes.ndim != 2 or boxes.shape[1] != 6:
        raise ValueError(f"{name}: expected (N, 6) rows (x0, y0, x1, y1, z0, z1), got shape {boxes.shape}")
    return boxes


def iou_2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of half-open boxes (x0, y0, x1, y1, ...) — eq. 22, vectorised ``sim.sky.iou_2d``."""
    return pairwise_iou_2d(a, b)


def iou_1d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of closed intervals [z0, z1] (columns 4, 5 of the box rows)."""
    a, b = a[:, None, :], b[None, :, :]
    inter = np.clip(np.minimum(a[..., 5], b[..., 5]) - np.maximum(a[..., 4], b[..., 4]), 0, None)
    union = (a[..., 5] - a[..., 4]) + (b[..., 5] - b[..., 4]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """(N, 2) centres (x, y) in pixel coordinates of half-open boxes: ((x0 + x1 - 1) / 2, ...)."""
    boxes = _boxes(boxes, "boxes")
    return np.stack([(boxes[:, 0] + boxes[:, 2] - 1) / 2, (boxes[:, 1] + boxes[:, 3] - 1) / 2], axis=1)


def match(predicted: np.ndarray, truth: np.ndarray, criteria: MatchCriteria = MatchCriteria()) -> Matching:
    """Match predicted boxes (N, 6) to true boxes (M, 6) of one cube under ``criteria``."""
    predicted, truth = _boxes(predicted, "predicted"), _boxes(truth, "truth")
    n, m = len(predicted), len(truth)
    empty = np.zeros(0)
    if n == 0 or m == 0:
        return Matching(np.zeros((0, 2), np.int64), empty, empty, empty, np.arange(n), np.arange(m))
    overlap = iou_2d(predicted, truth)
    spectral = iou_1d(predicted, truth)
    distance = np.linalg.norm(box_centres(predicted)[:, None, :] - box_centres(truth)[None, :, :], axis=-1)
    admissible = (overlap >= criteria.min_iou_2d) & (distance < criteria.max_distance_px)
    if criteria.spectral:
        admissible &= spectral >= criteria.min_iou_1d
    score = np.where(admissible, overlap + (spectral if criteria.spectral else 0.0), -1e6)
    rows, cols = linear_sum_assignment(score, maximize=True)
    keep = admissible[rows, cols]
    rows, cols = rows[keep], cols[keep]
    return Matching(
        pairs=np.stack([rows, cols], axis=1).astype(np.int64),
        iou_2d=overlap[rows, cols],
        iou_1d=spectral[rows, cols],
        distance_px=distance[rows, cols],
        unmatched_predictions=np.setdiff1d(np.arange(n), rows),
        unmatched_truth=np.setdiff1d(np.arange(m), cols),
    )


CENTRE_RADIUS_PX = 3.0  # match_centres: centres strictly closer than this ...
MIN_CHANNELS = 2.0  # ... and line centres within max(this, FWHM_z / 2) channels


def match_centres(predicted: np.ndarray, truth: np.ndarray) -> Matching:
    """Match by centre alone: predictions (N, 3) rows (x, y, z) to true sources (M, 4) rows
    (x, y, z, fwhm_z), one to one, nearest first (Hungarian on the distance), a pair admissible
    when the centres are < ``CENTRE_RADIUS_PX`` apart and the line centres within
    max(``MIN_CHANNELS``, FWHM_z / 2) channels. The looser criterion of catalogue comparisons:
    it counts a source found where it is, whatever its fitted size."""
    predicted = np.asarray(predicted, np.float64).reshape(-1, 3)
    truth = np.asarray(truth, np.float64).reshape(-1, 4)
    n, m = len(predicted), len(truth)
    empty = np.zeros(0)
    if n == 0 or m == 0:
        return Matching(np.zeros((0, 2), np.int64), empty, empty, empty, np.arange(n), np.arange(m))
    distance = np.hypot(predicted[:, None, 0] - truth[None, :, 0], predicted[:, None, 1] - truth[None, :, 1])
    reach = np.maximum(MIN_CHANNELS, truth[:, 3] / 2.0)
    admissible = (distance < CENTRE_RADIUS_PX) & (np.abs(predicted[:, None, 2] - truth[None, :, 2]) <= reach[None])
    rows, cols = linear_sum_assignment(np.where(admissible, distance, 1e6))
    keep = admissible[rows, cols]
    rows, cols = rows[keep], cols[keep]
    return Matching(pairs=np.stack([rows, cols], axis=1).astype(np.int64), iou_2d=np.ones(len(rows)),
                    iou_1d=np.ones(len(rows)), distance_px=distance[rows, cols],
                    unmatched_predictions=np.setdiff1d(np.arange(n), rows),
                    unmatched_truth=np.setdiff1d(np.arange(m), cols))  # fmt: skip
