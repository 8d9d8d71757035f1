"""Step (vi), flux estimation (Sec. 4.4 vi; Fig. 9 step 13).

Two estimates of each source's line flux:

* the flux ResNet's, on the line emission image (eq. 19) exactly as in
  training: ``line_emission_image(cube, box, (z0, z1))``, unscaled as the training
  images are (:func:`flux_input`; see ``ResNetData.example``) — in the units of the
  training targets (Jy km/s for the almasim records);
* a direct measurement (:func:`measure_flux`) through the dilated 3-D mask of
  step (v): the continuum image C[y, x] is the mean of the cube over the
  channels the mask does not touch (the inverse mask), f(z) the 1-D continuum
  trend, and the line flux Σ_{mask} (cube − f(z)·C) (eq. 19 summed over the
  mask). It is returned in cube-units · channels · pixels / beam area
  (``beam_area_px``, pixels per beam; 1 leaves the plain voxel sum): for a cube
  in Jy/beam that is Jy · channels, which the caller multiplies by the channel
  width in km/s to get Jy km/s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dfjax.input_pipeline.transforms import line_emission_image
from dfjax.maths import continuum_trend
from dfjax.pipeline._apply import Model
from dfjax.pipeline.characterise import predict_scalar
from dfjax.pipeline.config import PipelineConfig
from dfjax.pipeline.focus import Detection

__all__ = ["FluxMeasurement", "continuum_model", "estimate_line_flux", "flux_input", "measure_flux"]

_DEFAULTS = PipelineConfig()


@dataclasses.dataclass(frozen=True)
class FluxMeasurement:
    """Direct measurements through a 3-D mask (units: see the module docstring)."""

    line_flux: float  # Σ_mask (cube − f·C) / beam_area_px: cube-units · channels · pixels / beam area
    peak_flux: float  # max of the cube within the mask, cube units
    continuum: float  # C·f at the source's pixel, averaged over the mask's channels, cube units


def flux_input(cube: np.ndarray, box: Sequence[float], z_range: Sequence[float], *, size: int = 64,
               scale: float = 1.0) -> np.ndarray:  # fmt: skip
    """The flux ResNet's input, as in training: (size, size) float32 (eq. 19, not normalised).

    ``line_emission_image(cube, box, z_range, size=size)[0] * scale`` — the same
    calls as ``ResNetData.example`` for the ``line_flux`` target.
    """
    image, _ = line_emission_image(cube, box, z_range, size=size)
    return (image * scale).astype(np.float32)


def continuum_model(cube: np.ndarray, mask: np.ndarray, config: PipelineConfig = _DEFAULTS
                    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Continuum image C (ny, nx) and 1-D model f (nz,) of eq. 19 from the channels outside ``mask``.

    Continuum channels: those where ``mask`` (nz, ny, nx) has no voxel. C is
    their mean. f(z) is a straight line fitted to the spectrum summed over the
    mask's footprint on those channels, scaled to mean 1 there — but only when
    its level exceeds ``flux.continuum_trend_sigma`` standard errors; else
    f ≡ 1. Fewer than ``flux.min_continuum_channels`` channels: C = 0, f ≡ 1.
    """
    nz = cube.shape[0]
    off = ~mask.any(axis=(1, 2))
    f = np.ones(nz)
    if off.sum() < config.flux.min_continuum_channels:
        return np.zeros(cube.shape[1:]), f
    c_image = cube[off].mean(axis=0, dtype=np.float64)
    footprint = mask.any(axis=0)
    if footprint.any():
        spectrum = cube[:, footprint].sum(axis=1, dtype=np.float64)[off]
        f = continuum_trend(np.arange(nz, dtype=np.float64)[off], spectrum, nz,
                            min_sigma=config.flux.continuum_trend_sigma)  # fmt: skip
    return c_image, f


def measure_flux(cube: np.ndarray, mask: np.ndarray, *, x: float, y: float, beam_area_px: float = 1.0,
                 config: PipelineConfig = _DEFAULTS) -> FluxMeasurement:  # fmt: skip
    """Direct line flux, peak flux and continuum of the source in ``mask`` (nz, ny, nx) bool; (x, y) its centre."""
    if mask.shape != np.shape(cube):
        raise ValueError(f"mask {mask.shape} and cube {np.shape(cube)} differ in shape")
    if beam_area_px <= 0:
        raise ValueError(f"beam_area_px must be positive, got {beam_area_px}")
    footprint = mask.any(axis=0)
    if not footprint.any():
        return FluxMeasurement(line_flux=0.0, peak_flux=0.0, continuum=0.0)
    # only the footprint and the centre pixel are read: work on their bounding box, not the cube
    ny, nx = footprint.shape
    rows, cols = np.nonzero(footprint)
    py, px = int(np.clip(np.rint(y), 0, ny - 1)), int(np.clip(np.rint(x), 0, nx - 1))
    y0, y1 = min(rows.min(), py), max(rows.max(), py) + 1
    x0, x1 = min(cols.min(), px), max(cols.max(), px) + 1
    cube = np.nan_to_num(np.asarray(cube[:, y0:y1, x0:x1], np.float32), nan=0.0)
    mask = mask[:, y0:y1, x0:x1]
    x, y = x - x0, y - y0
    c_image, f = continuum_model(cube, mask, config)
    iz, iy, ix = np.nonzero(mask)
    line = cube[iz, iy, ix].astype(np.float64) - f[iz] * c_image[iy, ix]  # eq. 19, voxel by voxel
    ny, nx = cube.shape[1:]
    py, px = int(np.clip(np.rint(y), 0, ny - 1)), int(np.clip(np.rint(x), 0, nx - 1))
    channels = np.unique(iz)
    return FluxMeasurement(line_flux=float(line.sum() / beam_area_px), peak_flux=float(cube[iz, iy, ix].max()),
                           continuum=float(c_image[py, px] * f[channels].mean()))  # fmt: skip


def estimate_line_flux(resnet_flux: Model, cube: np.ndarray, detections: Sequence[Detection],
                       config: PipelineConfig = _DEFAULTS) -> np.ndarray:  # fmt: skip
    """The flux ResNet over the detections' line emission images → (N,) float64, training-target units."""
    if not detections:
        return np.zeros(0)
    images = np.stack([flux_input(cube, d.box, (d.z0, d.z1), size=config.focus.size) for d in detections])
    return predict_scalar(resnet_flux, images, batch_size=config.characterise.batch_size)
