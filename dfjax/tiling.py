"""Run the fixed-size pipeline over a cube of any size: overlapping windows, offsets, de-duplication.

The models have fixed input sizes: Blobs Finder sees ``crop_size`` × ``crop_size`` images and
the Deep GRU spectra of ``spectrum_length`` (L) channels. :func:`run_tiled`

* **space**: a field larger than the crop along an axis is cut into windows of ``crop_size``
  pixels that overlap by at least ``overlap`` (25 %) of the crop, the last one flush with the
  field's edge; a field no larger than the crop is one window (the pipeline pads it);
* **frequency**: more than L channels → windows of L channels overlapping by ``overlap`` · L;
  between ⌈L/2⌉ (:func:`min_channels`) and L channels → zero padded at the end to L (sources
  found in the padding are dropped); fewer → :class:`ValueError` (too little spectrum);
* runs the pipeline once per window, shifts its sources to cube pixels/channels, and
  **de-duplicates** sources found by more than one window: greedy non-maximum suppression
  that keeps, of two sources from different windows whose spectral ranges overlap and whose
  boxes overlap (IoU ≥ ``iou_threshold``) or centres lie within ``match_radius_px``, the one
  farther from an interior window edge (the less truncated detection).

Sources from the same window are never merged here: the pipeline already deblended them.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["OVERLAP", "min_channels", "run_tiled", "windows"]

OVERLAP = 0.25
"""Default fraction of a window shared with its neighbour, in space and in frequency."""
IOU_THRESHOLD = 0.3
MATCH_RADIUS_PX = 2.0


def windows(n: int, size: int, overlap: float = OVERLAP) -> list[tuple[int, int]]:
    """Half-open windows ``[start, stop)`` of ``size`` covering ``range(n)``; ``[(0, n)]`` if ``n <= size``."""
    if n <= size:
        return [(0, n)]
    step = max(1, size - math.ceil(overlap * size))
    starts = list(range(0, n - size, step)) + [n - size]
    return [(s, s + size) for s in starts]


def min_channels(spectrum_length: int) -> int:
    """Fewest channels a cube may have: half the Deep GRU's spectrum length (the rest is zero padding)."""
    return math.ceil(spectrum_length / 2)


def run_tiled(
    cube: np.ndarray,
    runner: Callable[[np.ndarray], Sequence[Any]],
    *,
    crop_size: int,
    spectrum_length: int,
    overlap: float = OVERLAP,
    iou_threshold: float = IOU_THRESHOLD,
    match_radius_px: float = MATCH_RADIUS_PX,
    progress: bool = False,
) -> list[Any]:
    """Sources of ``cube`` (nz, ny, nx) in cube coordinates; ``runner(window) -> sources`` in window coordinates.

    Sources are dataclasses with the fields of :class:`dfjax.pipeline.source.Source`. With ``progress``,
    a progress bar on stderr counts the windows of a cube that has more than one.
    """
    from tqdm import tqdm

    nz, ny, nx = cube.shape
    if nz < min_channels(spectrum_length):
        raise ValueError(f"{nz} channels, fewer than the {min_channels(spectrum_length)} the pipeline can use "
                         f"(its spectra have {spectrum_length})")
    zw, yw, xw = windows(nz, spectrum_length, overlap), windows(ny, crop_size, overlap), windows(nx, crop_size, overlap)
    found: list[tuple[float, int, Any]] = []  # (margin, window index, source)
    boxes = [(z, y, x) for z in zw for y in yw for x in xw]
    bar = tqdm(boxes, unit="window", desc="windows", leave=False, disable=not progress or len(boxes) == 1,
               file=sys.stderr)  # fmt: skip
    for index, ((z0, z1), (y0, y1), (x0, x1)) in enumerate(bar):
        part = cube[z0:z1, y0:y1, x0:x1]
        if part.shape[0] < spectrum_length:
            part = np.concatenate([part, np.zeros((spectrum_length - part.shape[0], *part.shape[1:]), part.dtype)])
        for src in runner(part):
            src = _shift(src, x0, y0, z0)
            if not (0 <= src.z < nz):  # found in the zero padding
                continue
            margin = min(_margin(src.x, x0, x1, nx) / crop_size, _margin(src.y, y0, y1, ny) / crop_size,
                         _margin(src.z, z0, z1, nz) / spectrum_length)
            found.append((margin, index, src))
    if len(boxes) == 1:
        return [src for _, _, src in found]
    return _suppress(found, iou_threshold, match_radius_px)


def _shift(src: Any, dx: int, dy: int, dz: int) -> Any:
    return dataclasses.replace(
        src, x=src.x + dx, y=src.y + dy, z=src.z + dz, x0=src.x0 + dx, x1=src.x1 + dx,
        y0=src.y0 + dy, y1=src.y1 + dy, z0=src.z0 + dz, z1=src.z1 + dz)


def _margin(c: float, lo: int, hi: int, n: int) -> float:
    """Distance from ``c`` to the nearer window edge that is not also the cube's edge."""
    left = c - lo if lo > 0 else math.inf
    right = hi - c if hi < n else math.inf
    return min(left, right)


def _iou(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    area = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / area


def _same(a: Any, b: Any, iou_threshold: float, radius: float) -> bool:
    spectral = min(a.z1, b.z1) >= max(a.z0, b.z0) or abs(a.z - b.z) <= max(a.fwhm_z, b.fwhm_z, 1.0)
    if not spectral:
        return False
    close = math.hypot(a.x - b.x, a.y - b.y) <= radius
    return close or _iou(a, b) >= iou_threshold


def _suppress(found: list[tuple[float, int, Any]], iou_threshold: float, radius: float) -> list[Any]:
    """Greedy NMS across windows, best margin first; returns survivors in their original order."""
    order = sorted(range(len(found)), key=lambda i: -found[i][0])
    kept: list[int] = []
    for i in order:
        _, window, src = found[i]
        if not any(found[k][1] != window and _same(src, found[k][2], iou_threshold, radius) for k in kept):
            kept.append(i)
    return [found[i][2] for i in sorted(kept)]
