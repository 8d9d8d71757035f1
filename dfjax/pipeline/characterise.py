"""Step (iv), morphological parameters (Sec. 4.4 iv; Fig. 9 steps 10–11).

Each focused image is min-max normalised to [0, 1] — exactly the input the
ResNets were trained on (:class:`~dfjax.input_pipeline.loaders.ResNetData`,
see :func:`morphology_input`) — and fed to three ResNets: FWHM_x and FWHM_y in
pixels, the position angle pa in degrees. The position (x, y) is the
pixel-weighted centre (photometric barycentre) of the focused image inside
the source's box, in field pixels — or, with ``characterise.centre_window_px`` > 0, inside a
small window around the box's brightest pixel, which does not inherit the box's offset.

With ``characterise.method: fit`` (not in the paper) position, FWHMs and pa come instead from a
2-D Gaussian, convolved with the cube's own dirty beam, fitted to the source's continuum-subtracted
line image (:mod:`dfjax.pipeline.gaussfit`); the ResNets' values remain where a fit fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dfjax.input_pipeline.transforms import (
    line_emission_image,
    minmax_normalise,
    spectral_focus,
)
from dfjax.maths import gaussian_box as model_box  # the characterised source's catalogue box
from dfjax.pipeline._apply import Model, apply_batched
from dfjax.pipeline.config import PipelineConfig
from dfjax.pipeline.focus import Detection
from dfjax.pipeline.gaussfit import fit_source, noise_psf

__all__ = ["Morphology", "beam_psf", "estimate_morphology", "fit_morphology", "model_box", "morphology_input", "peak_centre",
           "pixel_weighted_centre", "predict_scalar"]  # fmt: skip

_DEFAULTS = PipelineConfig()


@dataclasses.dataclass(frozen=True)
class Morphology:
    """Step (iv) for one detection: position (x, y) in field pixels, FWHMs in pixels, pa in degrees."""

    x: float
    y: float
    fwhm_x: float
    fwhm_y: float
    pa: float


def morphology_input(cube: np.ndarray, box: Sequence[float], z_range: Sequence[float], *, size: int = 64
                     ) -> np.ndarray:  # fmt: skip
    """The morphology ResNets' input, as in training: (size, size) float32 in [0, 1].

    ``minmax_normalise(spectral_focus(cube, box, z_range, size=size)[0])`` —
    the same calls, in the same order, as ``ResNetData.example`` for the
    ``fwhm_x``, ``fwhm_y`` and ``pa`` targets.
    """
    return minmax_normalise(spectral_focus(cube, box, z_range, size=size)[0])


def pixel_weighted_centre(image: np.ndarray, offset: Sequence[int], box: Sequence[int]) -> tuple[float, float]:
    """Photometric barycentre of ``image`` (ny, nx) inside field ``box`` → field (x, y).

    Weights are the pixel values clipped at 0 (negative noise pulls nowhere);
    field pixel = image pixel + ``offset`` (x, y). With no positive pixel in the
    box, the box centre.
    """
    image = np.nan_to_num(np.asarray(image, np.float64), nan=0.0)
    ny, nx = image.shape
    x0, x1 = max(int(box[0] - offset[0]), 0), min(int(box[2] - offset[0]), nx)
    y0, y1 = max(int(box[1] - offset[1]), 0), min(int(box[3] - offset[1]), ny)
    centre = (0.5 * (box[0] + box[2] - 1), 0.5 * (box[1] + box[3] - 1))
    if x1 <= x0 or y1 <= y0:
        return float(centre[0]), float(centre[1])
    w = np.clip(image[y0:y1, x0:x1], 0.0, None)
    total = w.sum()
    if not total > 0:
        return float(centre[0]), float(centre[1])
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return float((w * xx).sum() / total + offset[0]), float((w * yy).sum() / total + offset[1])


def peak_centre(image: np.ndarray, offset: Sequence[int], box: Sequence[int], *, window_px: int
                ) -> tuple[float, float]:  # fmt: skip
    """Barycentre of ``image`` in the (2·window_px + 1)² pixels around its brightest pixel inside
    field ``box`` → field (x, y): the source's position from the data, however far the box is off."""
    image = np.nan_to_num(np.asarray(image, np.float64), nan=0.0)
    ny, nx = image.shape
    x0, x1 = max(int(box[0] - offset[0]), 0), min(int(box[2] - offset[0]), nx)
    y0, y1 = max(int(box[1] - offset[1]), 0), min(int(box[3] - offset[1]), ny)
    if x1 <= x0 or y1 <= y0:
        return pixel_weighted_centre(image, offset, box)
    py, px = np.unravel_index(np.argmax(image[y0:y1, x0:x1]), (y1 - y0, x1 - x0))
    px, py = px + x0 + offset[0], py + y0 + offset[1]
    return pixel_weighted_centre(image, offset, (px - window_px, py - window_px, px + window_px + 1,
                                                 py + window_px + 1))  # fmt: skip


def predict_scalar(model: Model, images: np.ndarray, *, batch_size: int) -> np.ndarray:
    """A ResNet over images (N, size, size) → (N,) float64 (jitted, batched)."""
    images = np.asarray(images, np.float32)
    if images.ndim != 3:
        raise ValueError(f"expected images (N, size, size), got shape {images.shape}")
    if len(images) == 0:
        return np.zeros(0)
    out = apply_batched(model, images[..., None], batch_size=batch_size)
    out = np.asarray(out, np.float64).reshape(len(images), -1)
    if out.shape[1] != 1:
        raise ValueError(f"model returned {out.shape[1]} values per image, expected 1")
    return out[:, 0]


def estimate_morphology(
    resnet_fwhm_x: Model,
    resnet_fwhm_y: Model,
    resnet_pa: Model,
    detections: Sequence[Detection],
    config: PipelineConfig = _DEFAULTS,
    *,
    cube: np.ndarray | None = None,
) -> list[Morphology]:
    """Step (iv) end to end: detections → one :class:`Morphology` each, in order.

    ``characterise.method``: ``resnet`` (ResNets + barycentre), or ``fit``, which needs the
    ``cube`` the detections came from (:func:`fit_morphology`).
    """
    if not detections:
        return []
    if config.characterise.method == "fit":
        if cube is None:
            raise ValueError("characterise.method 'fit' needs the cube")
        first = estimate_morphology(resnet_fwhm_x, resnet_fwhm_y, resnet_pa, detections,
                                    config.replace(**{"characterise.method": "resnet", "characterise.refine_iterations": 0,
                                                      "characterise.neighbours": False, "search.enabled": False,
                                                      "search.residual": False}))  # fmt: skip
        if config.characterise.refine_iterations > 0:
            return first  # refinement (pipeline.refine) fits the shapes, from these
        return fit_morphology(cube, detections, first, config)
    images = np.stack([minmax_normalise(d.image) for d in detections])  # = morphology_input(...)
    b = config.characterise.batch_size
    fx, fy, pa = (predict_scalar(m, images, batch_size=b) for m in (resnet_fwhm_x, resnet_fwhm_y, resnet_pa))
    out = []
    for d, a, c, angle in zip(detections, fx, fy, pa):
        w = config.characterise.centre_window_px
        x, y = (peak_centre(d.image, d.offset, d.box, window_px=w) if w > 0
                else pixel_weighted_centre(d.image, d.offset, d.box))  # fmt: skip
        out.append(Morphology(x=x, y=y, fwhm_x=float(a), fwhm_y=float(c), pa=float(angle)))
    return out


def beam_psf(cube: np.ndarray, config: PipelineConfig = _DEFAULTS) -> np.ndarray | None:
    """The cube's dirty beam from its noise (:func:`~dfjax.pipeline.gaussfit.noise_psf`), ± ``beam_half_px``
    (less on a small field); None when the cube has no noise to measure it from."""
    try:
        return noise_psf(cube, half=min(config.characterise.beam_half_px, (min(cube.shape[1:]) - 1) // 2))
    except ValueError:
        return None


def fit_morphology(cube: np.ndarray, detections: Sequence[Detection], start: Sequence[Morphology],
                   config: PipelineConfig = _DEFAULTS) -> list[Morphology]:  # fmt: skip
    """``characterise.method: fit``: each detection's line image (continuum subtracted, its own
    channels) fitted with a Gaussian seen through the cube's dirty beam (:mod:`~dfjax.pipeline.gaussfit`),
    starting at ``start``'s position; where a fit fails — or the cube has no noise to measure the
    beam from — ``start`` is kept."""
    c = config.characterise
    psf = beam_psf(cube, config)
    if psf is None:
        return list(start)
    out = []
    for d, m in zip(detections, start):
        image, offset = line_emission_image(cube, d.box, (d.z0, d.z1), size=config.focus.size)
        fit = fit_source(image, psf, m.x - offset[0], m.y - offset[1], half=c.fit_half_px,
                         max_shift_px=c.fit_max_shift_px, background=c.fit_background)  # fmt: skip
        if fit is None:
            out.append(m)
            continue
        out.append(Morphology(x=fit.x + float(offset[0]), y=fit.y + float(offset[1]), fwhm_x=fit.fwhm_x,
                              fwhm_y=fit.fwhm_y, pa=fit.pa))  # fmt: skip
    return out
