"""Shared maths, written once: Gaussian widths, unit-peak Gaussians, robust noise.

Conventions (sim.sky's): a 2-D Gaussian at (x, y) with FWHMs (fwhm_x, fwhm_y) along its own
axes x' = dx·cos pa − dy·sin pa, y' = dx·sin pa + dy·cos pa (pa in degrees), x the column,
y the row, 0-based; arrays indexed [y, x] (and [z, y, x] for cubes).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FWHM_PER_SIGMA", "MAD_TO_STD", "SIGMA_PER_FWHM", "gaussian_1d", "gaussian_2d", "robust_std"]

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))  # eq. 2's 2.35482
SIGMA_PER_FWHM = 1.0 / FWHM_PER_SIGMA
MAD_TO_STD = 1.4826  # the standard deviation of a Gaussian over its median absolute deviation


def gaussian_2d(shape: tuple[int, int], x: float, y: float, fwhm_x: float, fwhm_y: float, pa_deg: float
                ) -> np.ndarray:  # fmt: skip
    """Unit-peak rotated 2-D Gaussian on an (ny, nx) grid, indexed [y, x] → (ny, nx) float64."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dx, dy = xx - x, yy - y
    pa = np.deg2rad(pa_deg)
    xr = dx * np.cos(pa) - dy * np.sin(pa)
    yr = dx * np.sin(pa) + dy * np.cos(pa)
    sx, sy = fwhm_x * SIGMA_PER_FWHM, fwhm_y * SIGMA_PER_FWHM
    return np.exp(-0.5 * ((xr / sx) ** 2 + (yr / sy) ** 2))


def gaussian_1d(nz: int, z: float, fwhm_z: float) -> np.ndarray:
    """Unit-peak 1-D Gaussian over channels 0..nz-1 → (nz,) float64."""
    zz = np.arange(nz, dtype=np.float64)
    return np.exp(-0.5 * ((zz - z) / (fwhm_z * SIGMA_PER_FWHM)) ** 2)


def robust_std(values: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray | float:
    """The standard deviation from the median absolute deviation (MAD × 1.4826), NaNs ignored."""
    values = np.asarray(values, np.float64)
    median = np.nanmedian(values, axis=axis, keepdims=True)
    spread = MAD_TO_STD * np.nanmedian(np.abs(values - median), axis=axis)
    return float(spread) if np.ndim(spread) == 0 else spread
