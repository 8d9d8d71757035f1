"""Step (i), 2-D source detection (Sec. 4.4 i; Fig. 9 steps 1–4).

Dirty cube → integrated dirty cube (normalised to [0, 1], summed over
frequency) → central crop, normalised to [0, 1] → Blobs Finder → 2-D
probabilistic map → threshold (0.15) → ``label`` + ``regionprops`` → boxes.

Conventions: cubes are ``[z, y, x]``, images ``[y, x]``; x is the column
(NAXIS1), y the row; boxes are half-open ``(x0, y0, x1, y1)`` in *field*
pixels, whatever the crop. The crop's top-left corner is at field pixel
``((ny - size) // 2, (nx - size) // 2)`` (negative when the field is smaller
than the crop, which is then zero padded), as in
:func:`~dfjax.input_pipeline.transforms.centre_crop`.
"""

from __future__ import annotations

import numpy as np
from skimage import measure

from dfjax.input_pipeline.transforms import minmax_normalise
from dfjax.pipeline._apply import Model, apply_batched
from dfjax.pipeline.config import PipelineConfig

__all__ = ["boxes_from_map", "crop_offset", "detect", "detection_map", "integrated_image"]

_DEFAULTS = PipelineConfig()


def integrated_image(cube: np.ndarray) -> np.ndarray:
    """Integrated dirty cube (step 1): cube (nz, ny, nx) → (ny, nx) float32.

    The cube is min-max normalised to [0, 1] and summed over channels. NaN
    (blanked) voxels count as a raw value of 0, as in
    :func:`~dfjax.input_pipeline.transforms.minmax_normalise`, so a blanked
    pixel sits at the noise level of the field, not at its minimum.
    """
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"expected a cube (nz, ny, nx), got shape {cube.shape}")
    return minmax_normalise(cube).sum(axis=0, dtype=np.float64).astype(np.float32)


def crop_offset(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Field pixel (y, x) of crop pixel (0, 0) for a central ``size`` crop of an (ny, nx) field."""
    return (shape[0] - size) // 2, (shape[1] - size) // 2


def _overlap(offset: int, size: int, n: int) -> tuple[slice, slice]:
    """Matching (field, crop) slices along one axis for a crop starting at field pixel ``offset``."""
    lo, hi = max(offset, 0), min(offset + size, n)
    return slice(lo, hi), slice(lo - offset, hi - offset)


def _tile_starts(n: int, size: int, overlap: float) -> list[int]:
    """Starts of windows of ``size`` covering ``range(n)`` with at least ``overlap`` (last flush)."""
    if n <= size:
        return [crop_offset((n, n), size)[0]]
    step = max(1, size - int(np.ceil(overlap * size)))
    return sorted(set(range(0, n - size, step)) | {n - size})


def detection_map(model: Model, images: np.ndarray, config: PipelineConfig = _DEFAULTS) -> np.ndarray:
    """Blobs Finder probability maps in field pixels (steps 2–3): (B, ny, nx) or (ny, nx) → same shape.

    Each image is cropped to the model's input side, its ``image_size`` (a stand-in that states
    none sees the whole field; zero padded where the field is smaller), the crop normalised to [0, 1], run through ``model`` ((B, size, size, 1) →
    (B, size, size, 1), jitted, ``config.detect.batch_size`` at a time) and put back at its
    field position. With ``detect.tile_overlap`` = 0 that is the paper's single centre crop
    (pixels outside it are 0); with > 0 overlapping crops tile the whole field and the map is
    their maximum where they overlap, so steps 2-6 then see every source once.
    """
    images = np.asarray(images, np.float32)
    single = images.ndim == 2
    if single:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"expected images (B, ny, nx) or (ny, nx), got shape {images.shape}")
    _, ny, nx = images.shape
    size = int(getattr(model, "image_size", None) or max(ny, nx))
    if config.detect.tile_overlap > 0:
        tiles = [(oy, ox) for oy in _tile_starts(ny, size, config.detect.tile_overlap)
                 for ox in _tile_starts(nx, size, config.detect.tile_overlap)]  # fmt: skip
    else:
        tiles = [crop_offset((ny, nx), size)]
    places = [(_overlap(oy, size, ny), _overlap(ox, size, nx)) for oy, ox in tiles]
    crops = np.zeros((len(images) * len(tiles), size, size, 1), np.float32)
    for i, image in enumerate(images):
        for j, ((fy, cy), (fx, cx)) in enumerate(places):
            crops[i * len(tiles) + j, cy, cx, 0] = minmax_normalise(image[fy, fx])
    predicted = apply_batched(model, crops, batch_size=config.detect.batch_size)
    if predicted.shape != crops.shape:
        raise ValueError(f"model returned {predicted.shape} for inputs {crops.shape}")
    maps = np.zeros(images.shape, np.float32)
    for i in range(len(images)):
        for j, ((fy, cy), (fx, cx)) in enumerate(places):
            maps[i, fy, fx] = np.maximum(maps[i, fy, fx], predicted[i * len(tiles) + j, cy, cx, 0])
    return maps[0] if single else maps


def boxes_from_map(
    prob_map: np.ndarray,
    *,
    threshold: float = _DEFAULTS.detect.threshold,
    min_area: int = _DEFAULTS.detect.min_area_px,
    connectivity: int = _DEFAULTS.detect.connectivity,
    box_level: float = _DEFAULTS.detect.box_level,
) -> np.ndarray:
    """Bounding boxes of the blobs of a probability map (step 4): (ny, nx) → (K, 4) int64.

    Pixels strictly above ``threshold`` are labelled into connected blobs
    (``skimage.measure.label``); blobs of at least ``min_area`` pixels give a
    half-open box ``(x0, y0, x1, y1)`` (regionprops' ``bbox`` is ``(min_row,
    min_col, max_row, max_col)``, max exclusive), in label order. With
    ``box_level`` > 0 each blob's box is instead the extent of the connected
    region around its peak where the map is ≥ ``box_level`` × that peak: for a
    map that reproduces the sky model, the truth catalogue's own box definition.
    """
    prob_map = np.asarray(prob_map)
    if prob_map.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {prob_map.shape}")
    clean = np.nan_to_num(prob_map, nan=0.0)
    labels = measure.label(clean > threshold, connectivity=connectivity)
    boxes = []
    for region in measure.regionprops(labels, intensity_image=clean):
        if region.area < min_area:
            continue
        r0, c0, r1, c1 = region.bbox
        if box_level > 0:
            coords = region.coords[np.argmax(clean[region.coords[:, 0], region.coords[:, 1]])]
            peak = clean[coords[0], coords[1]]
            grown = measure.label(clean >= box_level * peak, connectivity=connectivity)
            rows, cols = np.nonzero(grown == grown[coords[0], coords[1]])
            r0, c0, r1, c1 = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
        boxes.append((c0, r0, c1, r1))
    return np.asarray(boxes, np.int64).reshape(-1, 4)


def detect(model: Model, cube: np.ndarray, config: PipelineConfig = _DEFAULTS) -> np.ndarray:
    """Step (i) end to end: dirty cube (nz, ny, nx) → candidate boxes (K, 4) int64, field pixels."""
    prob_map = detection_map(model, integrated_image(cube), config)
    d = config.detect
    return boxes_from_map(prob_map, threshold=d.threshold, min_area=d.min_area_px, connectivity=d.connectivity,
                          box_level=d.box_level)  # fmt: skip
