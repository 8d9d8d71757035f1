"""Sizes measured on the data: a Gaussian seen through the cube's own dirty beam.

An alternative to the morphology ResNets (``characterise.method: fit``). The dirty beam comes
from the cube itself: for natural weighting the noise of a dirty image is the visibility noise
seen through the sampling function, so its autocorrelation *is* the dirty beam
(:func:`noise_psf`; differences of adjacent channels cancel the continuum). Each source is then
fitted, on its continuum-subtracted line image, with an elliptical 2-D Gaussian convolved with
that beam (:func:`fit_source`): the fitted Gaussian is the intrinsic (sky-model) source, which
is what the truth catalogue's boxes describe. Parameters follow ``sim.sky``'s convention:
``x' = dx·cos pa − dy·sin pa``, ``y' = dx·sin pa + dy·cos pa``, pa in [0°, 90°).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy.optimize import least_squares

from dfjax.maths import FWHM_PER_SIGMA, unit_gaussian_2d

__all__ = ["GaussianFit", "Neighbour", "canonical", "fit_source", "noise_psf"]

MIN_SIGMA_PX = 0.5  # fitted widths are bounded to [this, MAX_SIGMA_PX]
MAX_SIGMA_PX = 20.0
BOUND_MARGIN = 0.01  # log-width this close to a bound counts as on it


def noise_psf(cube: np.ndarray, *, half: int = 16, pairs: int = 64) -> np.ndarray:
    """The dirty beam, (2·half + 1)² with unit peak at the centre, from the noise autocorrelation.

    Up to ``pairs`` differences of adjacent channels (continuum cancelled) are each
    autocorrelated, normalised by the number of overlapping pixels at each lag and by the zero
    lag; the beam is the median over the quieter half of the pairs (a line adds power).
    """
    nz, ny, nx = cube.shape
    if nz < 2:
        raise ValueError(f"need at least 2 channels to measure the beam from the noise, got {nz}")
    if min(ny, nx) < 2 * half + 1:
        raise ValueError(f"a {ny}x{nx} field is too small for a {2 * half + 1}-pixel beam")
    starts = np.unique(np.linspace(0, nz - 2, min(pairs, nz - 1)).astype(int))
    diff = np.nan_to_num(cube[starts + 1].astype(np.float64) - cube[starts])
    diff -= diff.mean(axis=(1, 2), keepdims=True)
    shape = (2 * ny, 2 * nx)  # zero padded: a linear, not circular, autocorrelation
    acf = np.fft.irfft2(np.abs(np.fft.rfft2(diff, s=shape)) ** 2, s=shape)
    acf = np.fft.fftshift(acf, axes=(1, 2))[:, ny - half : ny + half + 1, nx - half : nx + half + 1]
    lags = np.arange(-half, half + 1)
    overlap = (ny - np.abs(lags))[:, None] * (nx - np.abs(lags))[None, :]
    acf = acf / overlap
    power = acf[:, half, half]
    if not (power > 0).any():
        raise ValueError("the cube has no noise to measure the beam from")
    keep = (power > 0) & (power <= np.median(power[power > 0]))  # a line adds power: the quieter half
    psf = np.median(acf[keep] / power[keep, None, None], axis=0)
    return psf.astype(np.float64)


@dataclasses.dataclass(frozen=True)
class GaussianFit:
    """The intrinsic source: centre in the image's pixels, FWHMs in pixels, pa in degrees [0, 90)."""

    x: float
    y: float
    fwhm_x: float
    fwhm_y: float
    pa: float
    amplitude: float


def canonical(sx: float, sy: float, pa_deg: float) -> tuple[float, float, float]:
    """(sx, sy, pa) with pa folded into [0, 90): (sx, sy, pa) ≡ (sx, sy, pa + 180) ≡ (sy, sx, pa + 90)."""
    pa = pa_deg % 180.0
    if pa >= 90.0:
        sx, sy, pa = sy, sx, pa - 90.0
    return sx, sy, pa


@dataclasses.dataclass(frozen=True)
class Neighbour:
    """Another source whose light reaches the fitted window: centre in the image's pixels, FWHMs, pa."""

    x: float
    y: float
    fwhm_x: float
    fwhm_y: float
    pa: float


def fit_source(image: np.ndarray, psf: np.ndarray, x: float, y: float, *, half: int = 16,
               max_shift_px: float = 4.0, neighbours: Sequence[Neighbour] = (), background: bool = True
               ) -> GaussianFit | None:  # fmt: skip
    """Fit ``amplitude · (G ⊛ psf) + Σ aⱼ · (Gⱼ ⊛ psf) + background`` to ``image`` (ny, nx) within
    ± ``half`` px of (x, y).

    G is a unit-peak elliptical Gaussian whose centre may move at most ``max_shift_px`` from
    (x, y). Each of ``neighbours`` is a fixed shape Gⱼ with a free amplitude aⱼ ≥ 0: a brighter
    source's flank inside the window is then modelled, not taken for this source's wing. With
    ``background`` False the background is held at 0: on a continuum-subtracted line image it
    is, and a free one trades against the wings (a negative background under a wider Gaussian
    fits a noise dip around the source). Pixels outside the image are ignored. Returns None when
    the fit fails, finds no positive source, or too few pixels are on the image.
    """
    image = np.asarray(image, np.float64)
    ny, nx = image.shape
    ix, iy = round(x), round(y)
    ys, xs = np.arange(iy - half, iy + half + 1), np.arange(ix - half, ix + half + 1)
    on_y, on_x = (ys >= 0) & (ys < ny), (xs >= 0) & (xs < nx)
    if on_y.sum() < half or on_x.sum() < half:
        return None
    data = np.full((len(ys), len(xs)), np.nan)
    data[np.ix_(on_y, on_x)] = image[np.ix_(ys[on_y], xs[on_x])]
    valid = np.isfinite(data)
    ph = psf.shape[0] // 2
    n = 2 * (half + ph) + 1  # the Gaussian's grid: every pixel whose beam reaches the window
    grid = np.arange(n) - (half + ph)
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    kernel = np.zeros((n, n))
    kernel[:psf.shape[0], :psf.shape[1]] = psf
    kernel = np.roll(kernel, (-ph, -ph), axis=(0, 1))  # centre at (0, 0): a pure convolution
    kernel_f = np.fft.rfft2(kernel)
    inner = slice(ph, ph + 2 * half + 1)

    def seen(g: np.ndarray) -> np.ndarray:
        return np.fft.irfft2(np.fft.rfft2(g) * kernel_f, s=(n, n))[inner, inner]

    others = [seen(unit_gaussian_2d(gx - (o.x - ix), gy - (o.y - iy), max(o.fwhm_x, 1e-3) / FWHM_PER_SIGMA,
                                    max(o.fwhm_y, 1e-3) / FWHM_PER_SIGMA, np.deg2rad(o.pa)))
              for o in neighbours]  # fmt: skip
    others = [o for o in others if np.abs(o).max() > 1e-3]  # only those whose light reaches the window

    def model(p: np.ndarray) -> np.ndarray:
        amp, cx, cy, lsx, lsy, pa, bg = p[:7]
        out = amp * seen(unit_gaussian_2d(gx - (cx - ix), gy - (cy - iy), np.exp(lsx), np.exp(lsy), pa)) + bg
        for a, o in zip(p[7:], others):
            out = out + a * o
        return out

    def residual(p: np.ndarray) -> np.ndarray:
        return (model(p) - data)[valid]

    start = np.array([1.0, x, y, np.log(3.0), np.log(3.0), 0.0, 0.0] + [0.0] * len(others))
    peak = float(np.nanmax(data[half - 2 : half + 3, half - 2 : half + 3]))
    unit = float(model(start)[half, half])
    if not peak > 0 or not unit > 0:
        return None
    start[0] = peak / unit
    for i, o in enumerate(others):  # each neighbour starts at the amplitude of the window's light on it
        start[7 + i] = max(float(np.nansum(np.where(valid, data, 0.0) * o) / (o * o).sum()), 0.0)
    lo = [0.0, x - max_shift_px, y - max_shift_px, np.log(MIN_SIGMA_PX), np.log(MIN_SIGMA_PX), -np.pi, -np.inf]
    hi = [np.inf, x + max_shift_px, y + max_shift_px, np.log(MAX_SIGMA_PX), np.log(MAX_SIGMA_PX), np.pi, np.inf]
    lo, hi = lo + [0.0] * len(others), hi + [np.inf] * len(others)
    if not background:
        lo[6], hi[6] = -1e-12, 1e-12
    start = np.clip(start, np.array(lo), np.array(hi))
    try:
        result = least_squares(residual, start, bounds=(lo, hi), x_scale="jac", max_nfev=400)
    except (ValueError, np.linalg.LinAlgError):
        return None
    amp, cx, cy, lsx, lsy, pa = result.x[:6]
    if not result.success or amp <= 0 or not np.all(np.isfinite(result.x)):
        return None
    if not all(np.log(MIN_SIGMA_PX) + BOUND_MARGIN < v < np.log(MAX_SIGMA_PX) - BOUND_MARGIN for v in (lsx, lsy)):
        return None  # a width on its bound: the fit found no source of a measurable size
    sx, sy, pa_deg = canonical(float(np.exp(lsx)), float(np.exp(lsy)), float(np.rad2deg(pa)))
    return GaussianFit(x=float(cx), y=float(cy), fwhm_x=FWHM_PER_SIGMA * sx, fwhm_y=FWHM_PER_SIGMA * sy,
                       pa=pa_deg, amplitude=float(amp))  # fmt: skip
