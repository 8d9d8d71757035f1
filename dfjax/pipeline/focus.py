"""Step (iii), spectral focusing, false-positive removal and deblending (Sec. 4.4 iii; Fig. 9 steps 8–9, Fig. 14).

Each candidate of step (ii) is *focused*: a ``focus.size`` window centred on its
box, summed over a line's emission range Δz
(:func:`~dfjax.input_pipeline.transforms.spectral_focus`). Two SNRs judge it:
the global SNR of the box (eq. 17,
:func:`~dfjax.input_pipeline.transforms.global_snr`) and the pixel SNR
(eq. 18, :func:`pixel_snr`). The logic of Fig. 14:

1. Condition 1: keep the candidate when its global SNR on the integrated
   dirty cube (the same window summed over every channel) is ≥ ``bright_snr``
   (6), or when focusing — on the union of its lines' ranges — raises it;
   otherwise it is a false detection (integrated over a noise spike).
2. The primary is the brightest line. Reference pixel p: the highest pixel
   SNR inside the box of the primary's focused image. For each secondary line,
   s: the same on its focused image. ``|s − p| > deblend_distance_px`` (3):
   another source — a region grown from s by friends of friends
   (:func:`grow_region`) gives its box; the new detection is flagged
   ``"deblended"``, and the primary, flagged ``"blended"``, gets the box of the
   region grown from p on its own focused image.
   Otherwise, overlapping the primary in frequency: dropped (condition 2);
   apart in frequency: merged into the primary's range when the focused global
   SNR over both rises, else dropped as a noise spike.
3. Final cut: detections with focused global SNR < ``min_snr`` (1) are removed.

Boxes are half-open ``(x0, y0, x1, y1)`` in field pixels; focused images are
``[y, x]`` with field pixel = window pixel + ``offset`` (x, y).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from dfjax.input_pipeline.transforms import (
    box_spectra,
    channel_range,
    global_snr,
    line_emission_image,
    pairwise_iou_2d,
    spectral_focus,
)
from dfjax.pipeline.config import PipelineConfig
from dfjax.pipeline.spectra import Candidate, Line, refit_line

__all__ = ["Detection", "drop_duplicates", "focus_candidate", "focus_candidates", "focus_lines", "focused_detection",
           "grow_region", "pixel_snr"]

_DEFAULTS = PipelineConfig()
BLENDED, DEBLENDED = "blended", "deblended"


@dataclasses.dataclass(frozen=True, eq=False)
class Detection:
    """A source after step (iii).

    ``box`` (x0, y0, x1, y1) half-open field pixels; ``z0, z1`` the emission
    range (channels, inclusive after rounding), ``z`` and ``fwhm_z`` its line;
    ``image`` (size, size) float32 the focused image (not normalised) and
    ``offset`` (2,) int64 the field (x, y) of its pixel (0, 0); ``snr`` the
    focused global SNR (eq. 17), ``line_snr`` refinement's once it ran; ``flags`` ⊆ {"blended", "deblended", "residual", "searched"}
    ("searched": found by the line search, :mod:`dfjax.pipeline.search`; "residual": by its
    second pass, with the first sources subtracted).
    """

    box: tuple[int, int, int, int]
    z0: float
    z1: float
    z: float
    fwhm_z: float
    image: np.ndarray
    offset: np.ndarray
    snr: float
    flags: frozenset[str] = frozenset()
    line_snr: float = float("nan")  # refinement's line SNR, the one its cut decided on (deblend.py)


def pixel_snr(image: np.ndarray, *, spread: str = "std") -> np.ndarray:
    """Pixel SNR (eq. 18): x_i / spread(X) over the whole image, (ny, nx) → (ny, nx) float64.

    ``spread`` is ``"std"`` (scale free) or ``"var"`` (eq. 18 as printed), as in
    :func:`~dfjax.input_pipeline.transforms.global_snr`. A flat image gives zeros.
    """
    image = np.nan_to_num(np.asarray(image, np.float64), nan=0.0)
    if spread not in ("std", "var"):
        raise ValueError(f"spread must be 'std' or 'var', got {spread!r}")
    s = image.std() if spread == "std" else image.var()
    return image / s if s > 0 else np.zeros_like(image)


def _window_box(box: Sequence[int], offset: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """Field box → window box, clipped to the window (at least one pixel)."""
    x0, x1 = np.clip([box[0] - offset[0], box[2] - offset[0]], 0, size)
    y0, y1 = np.clip([box[1] - offset[1], box[3] - offset[1]], 0, size)
    return int(x0), int(y0), int(max(x1, x0 + 1)), int(max(y1, y0 + 1))


def _brightest_pixel(snr: np.ndarray, wbox: tuple[int, int, int, int]) -> np.ndarray:
    """Window (x, y) of the highest pixel SNR inside window box ``wbox`` → (2,) int64."""
    x0, y0, x1, y1 = wbox
    iy, ix = np.unravel_index(np.argmax(snr[y0:y1, x0:x1]), (y1 - y0, x1 - x0))
    return np.array([x0 + ix, y0 + iy], np.int64)


def grow_region(image: np.ndarray, seed_xy: Sequence[int], config: PipelineConfig = _DEFAULTS
                ) -> tuple[int, int, int, int]:  # fmt: skip
    """Friends-of-friends region from ``seed_xy`` (x, y) on ``image`` (ny, nx) → its box (x0, y0, x1, y1).

    Each iteration links the 8-connected neighbours of the region whose pixel
    SNR (eq. 18) is ≥ ``focus.fof_min_pixel_snr``; the global SNR (eq. 17) of
    the region's bounding box is measured after each. Growth stops at the
    plateau — no new friends, or a relative change of the SNR within
    ``focus.fof_plateau`` — and the region's box is returned, half-open, in
    ``image`` pixels. (The SNR of a one-pixel box is that of a local maximum
    against its neighbours; it falls as the box grows, then levels off once
    the annulus reaches the noise.)
    """
    f = config.focus
    image = np.nan_to_num(np.asarray(image, np.float64), nan=0.0)
    friends = pixel_snr(image, spread=f.snr_spread) >= f.fof_min_pixel_snr
    region = np.zeros(image.shape, bool)
    region[int(seed_xy[1]), int(seed_xy[0])] = True

    def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    box = box_of(region)
    snr = global_snr(image, box, spread=f.snr_spread)
    for _ in range(f.fof_max_iterations):
        grown = region | (ndimage.binary_dilation(region, structure=np.ones((3, 3), bool)) & friends)
        if grown.sum() == region.sum():  # no new friends: saturated
            break
        region, previous = grown, snr
        box = box_of(region)
        snr = global_snr(image, box, spread=f.snr_spread)
        if abs(snr - previous) <= f.fof_plateau * abs(previous):  # plateau
            break
    return box


def _focus(cube: np.ndarray, box: Sequence[int], z_range: Sequence[float], config: PipelineConfig
           ) -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """(focused image, offset, focused global SNR of the box)."""
    image, offset = spectral_focus(cube, box, z_range, size=config.focus.size)
    wbox = _window_box(box, offset, config.focus.size)
    return image, offset, global_snr(image, wbox, spread=config.focus.snr_spread)


def _overlap(a: Line, b: Line, nz: int) -> bool:
    """Whether two lines' emission ranges share a channel (``channel_range``, inclusive)."""
    a0, a1 = channel_range((a.z0, a.z1), nz)
    b0, b1 = channel_range((b.z0, b.z1), nz)
    return a0 <= b1 and b0 <= a1


def focused_detection(cube: np.ndarray, box: Sequence[int], z0: float, z1: float, z: float, fwhm_z: float,
                      config: PipelineConfig = _DEFAULTS, flags: frozenset[str] = frozenset()) -> Detection:  # fmt: skip
    """The :class:`Detection` of a box and line: its image focused on z0..z1 and that image's global SNR."""
    image, offset, snr = _focus(cube, box, (z0, z1), config)
    return Detection(box=tuple(int(v) for v in box), z0=z0, z1=z1, z=z, fwhm_z=fwhm_z, image=image,
                     offset=offset, snr=snr, flags=flags)  # fmt: skip


def _focus_lines(cube: np.ndarray, box: Sequence[int], lines: Sequence[Line], config: PipelineConfig) -> float:
    """Focused global SNR of the box summed over the union of the lines' emission ranges."""
    nz, size = cube.shape[0], config.focus.size
    channels = np.zeros(nz, bool)
    for line in lines:
        lo, hi = channel_range((line.z0, line.z1), nz)
        channels[lo : hi + 1] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[0], channels.astype(np.int8), [0]])))
    image, offset = 0.0, None
    for lo, hi in zip(edges[::2], edges[1::2] - 1):  # one spectral_focus per contiguous run
        part, offset = spectral_focus(cube, box, (lo, hi), size=size)
        image = image + part
    return global_snr(image, _window_box(box, offset, size), spread=config.focus.snr_spread)


def _grown_box(image: np.ndarray, seed: np.ndarray, offset: np.ndarray, config: PipelineConfig
               ) -> tuple[int, int, int, int]:  # fmt: skip
    """Friends-of-friends box from window pixel ``seed`` → field pixels."""
    x0, y0, x1, y1 = grow_region(image, seed, config)
    return (int(x0 + offset[0]), int(y0 + offset[1]), int(x1 + offset[0]), int(y1 + offset[1]))


def focus_candidate(cube: np.ndarray, candidate: Candidate, config: PipelineConfig = _DEFAULTS) -> list[Detection]:
    """Fig. 14 for one candidate: cube (nz, ny, nx) → 0, 1 or more detections (primary first).

    Condition 1 judges the candidate as a whole: its global SNR on the
    integrated dirty cube against the one focused on all its lines (one line:
    that line's range). When a secondary is deblended, the primary too gets the
    box grown from p, so that neither box holds both sources.
    """
    f, nz = config.focus, cube.shape[0]
    box = candidate.box
    integrated, offset = spectral_focus(cube, box, (0, nz - 1), size=f.size)
    wbox = _window_box(box, offset, f.size)
    snr_integrated = global_snr(integrated, wbox, spread=f.snr_spread)
    if not (snr_integrated >= f.bright_snr or _focus_lines(cube, box, candidate.lines, config) > snr_integrated):
        return []  # condition 1: focusing does not help — integrated over a noise spike
    primary, *secondaries = candidate.lines
    image, _, primary_snr = _focus(cube, box, (primary.z0, primary.z1), config)
    p = _brightest_pixel(pixel_snr(image, spread=f.snr_spread), wbox)
    z0, z1, z, fwhm_z = primary.z0, primary.z1, primary.z, primary.fwhm_z
    deblended = []
    for line in secondaries:  # brightest first
        image_s, _, _ = _focus(cube, box, (line.z0, line.z1), config)
        s = _brightest_pixel(pixel_snr(image_s, spread=f.snr_spread), wbox)
        if np.hypot(*(s - p)) > f.deblend_distance_px:  # another source: friends of friends from s
            new_box = _grown_box(image_s, s, offset, config)
            deblended.append(focused_detection(cube, new_box, line.z0, line.z1, line.z, line.fwhm_z, config,
                                        frozenset({DEBLENDED})))  # fmt: skip
        elif not _overlap(primary, line, nz):  # same place, other channels: part of the source?
            m0, m1 = min(z0, line.z0), max(z1, line.z1)
            _, _, merged_snr = _focus(cube, box, (m0, m1), config)
            if merged_snr > primary_snr:
                k = config.spectra.emission_half_width_fwhm
                z0, z1, z, fwhm_z, primary_snr = m0, m1, 0.5 * (m0 + m1), (m1 - m0) / (2 * k), merged_snr
        # else: overlapping in frequency at the same pixel — condition 2, dropped
    deblended = [d for d in deblended if d.snr >= f.min_snr]  # final cut first: noise is no companion
    flags = frozenset()
    if deblended:
        image, _, _ = _focus(cube, box, (z0, z1), config)
        box, flags = _grown_box(image, p, offset, config), frozenset({BLENDED})
    detections = [focused_detection(cube, box, z0, z1, z, fwhm_z, config, flags), *deblended]
    return [d for d in detections if d.snr >= f.min_snr]  # final cut (Fig. 9 step 9)


def focus_lines(cube: np.ndarray, candidate: Candidate, config: PipelineConfig = _DEFAULTS) -> list[Detection]:
    """``focus.mode = "lines"`` for one candidate: one detection per line, brightest line first.

    Each line's focused image places its source: the region grown (friends of
    friends) from the highest pixel SNR inside the candidate's box — with
    ``focus.seed_on_line``, the highest of the continuum-subtracted line image
    (``line_emission_image``), so that another source's continuum in the box
    cannot take the seed. Lines whose
    focused global SNR is under ``focus.min_snr`` are noise. Unlike Fig. 14,
    lines at the same place but apart in frequency stay separate sources.
    """
    f = config.focus
    detections = []
    for line in candidate.lines:
        image, offset, _ = _focus(cube, candidate.box, (line.z0, line.z1), config)
        seed_image = line_emission_image(cube, candidate.box, (line.z0, line.z1), size=f.size)[0] \
            if f.seed_on_line else image  # fmt: skip
        seed = _brightest_pixel(pixel_snr(seed_image, spread=f.snr_spread),
                                _window_box(candidate.box, offset, f.size))  # fmt: skip
        box = _grown_box(image, seed, offset, config)
        if f.refit_lines:
            line = refit_line(box_spectra(cube, np.asarray([box]))[0], line, config)
        flags = frozenset({DEBLENDED}) if len(candidate.lines) > 1 else frozenset()
        detection = focused_detection(cube, box, line.z0, line.z1, line.z, line.fwhm_z, config, flags)
        if detection.snr >= f.min_snr:
            detections.append(detection)
    return detections


def _box_centre(box: Sequence[int]) -> np.ndarray:
    return np.array([(box[0] + box[2] - 1) / 2, (box[1] + box[3] - 1) / 2])


def _same_place(a: Sequence[int], b: Sequence[int], distance: float) -> bool:
    """Whether two boxes mark one place: centres within ``distance`` or 2-D IoU ≥ 0.5."""
    close = np.hypot(*(_box_centre(a) - _box_centre(b))) <= distance
    return bool(close or pairwise_iou_2d(np.asarray([a]), np.asarray([b]))[0, 0] >= 0.5)


def drop_duplicates(detections: Sequence[Detection], config: PipelineConfig = _DEFAULTS) -> list[Detection]:
    """Detections less any that repeats a higher-SNR one: the same place (box centres within
    ``focus.deblend_distance_px``, or boxes overlapping by IoU ≥ 0.5) and emission ranges sharing a
    channel — e.g. one source's line found again in an overlapping Blobs Finder box. Order kept."""
    kept: list[Detection] = []
    for d in sorted(detections, key=lambda d: -d.snr):
        if not any(_same_place(d.box, k.box, config.focus.deblend_distance_px) and d.z0 <= k.z1 and k.z0 <= d.z1
                   for k in kept):  # fmt: skip
            kept.append(d)
    return [d for d in detections if any(d is k for k in kept)]


def focus_candidates(cube: np.ndarray, candidates: Sequence[Candidate], config: PipelineConfig = _DEFAULTS
                     ) -> list[Detection]:  # fmt: skip
    """Step (iii) end to end: cube (nz, ny, nx), candidates of step (ii) → detections, in candidate order."""
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"expected a cube (nz, ny, nx), got shape {cube.shape}")
    if not np.isfinite(cube).all():
        cube = np.nan_to_num(np.asarray(cube, np.float32), nan=0.0)
    if config.focus.mode == "lines":
        return drop_duplicates([d for c in candidates for d in focus_lines(cube, c, config)], config)
    return [d for candidate in candidates for d in focus_candidate(cube, candidate, config)]
