"""The beam a cube's sources are seen through, and the correlation of its noise.

The scene model (:mod:`dfjax.pipeline.scene`) needs the point-spread function over the whole
field — a bright source's far sidelobes land everywhere — and the noise model needs the pixels'
noise correlation. They are not the same thing. In order of preference (``scene.psf``):

``file``
    A PSF image (tclean writes ``<image>.psf`` beside every image; exported to FITS). The peak
    is found, the image normalised to it and centred there; a PSF cube gives its median channel.
``beam``
    The header's restoring beam (BMAJ/BMIN/BPA or the BEAMS table's median) as an elliptical
    Gaussian: right for a CLEANed cube, where the sources are convolved with it and have no
    sidelobes left.
``noise``
    From the data: a dirty cube's thermal noise is the visibility noise seen through the
    sampling function, so its autocorrelation is the dirty beam. White noise added in the image
    (the paper's Sec. 3) adds a spike at zero lag, σ_w²·δ, on top of σ_t²·B: the beam's own zero
    lag is extrapolated from the lags around it (a Gaussian through the 24 nearest lags, which the
    beam's smooth main lobe follows and the spike does not touch), and the spike removed.

``auto`` takes ``file`` when a PSF is given, else ``noise``: the models were trained on dirty
cubes. The noise correlation (:func:`noise_correlation`) is always measured on the data, spike
included, so a white, beam-correlated or mixed noise is modelled as it is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from astropy.io import fits

from dfjax.maths import gaussian_2d, median
from dfjax.pipeline.config import PSF_KINDS

__all__ = ["PSF_KINDS", "NoiseModel", "beam_psf_image", "centred", "noise_acf", "noise_model", "psf_from_file"]

SPIKE_RADIUS = 2  # the beam's zero lag is extrapolated from the lags 0 < |Δx|, |Δy| ≤ this


@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """What the cube's noise is: the beam it shows (unit peak, odd square (2h+1)²), the pixels'
    noise correlation (unit zero lag, same shape), and the white share of the noise variance."""

    beam: np.ndarray
    correlation: np.ndarray
    white_fraction: float


def noise_acf(cube: np.ndarray, *, half: int, pairs: int = 64) -> np.ndarray:
    """The noise autocorrelation, (2·half + 1)² lags, not normalised (zero lag: the variance of a
    channel difference / 2).

    Up to ``pairs`` differences of adjacent channels (the continuum cancels) are autocorrelated
    (zero padded: a linear, not circular, correlation) and normalised by the number of
    overlapping pixels at each lag; the median over the quieter half of the pairs is taken (a
    line adds power to the pairs it is in).
    """
    nz, ny, nx = cube.shape
    if nz < 2:
        raise ValueError(f"need at least 2 channels to measure the noise correlation, got {nz}")
    half = min(half, (min(ny, nx) - 1) // 2)
    starts = np.unique(np.linspace(0, nz - 2, min(pairs, nz - 1)).astype(int))
    diff = np.nan_to_num(cube[starts + 1].astype(np.float64) - cube[starts])
    diff -= diff.mean(axis=(1, 2), keepdims=True)
    shape = (2 * ny, 2 * nx)
    acf = np.fft.irfft2(np.abs(np.fft.rfft2(diff, s=shape)) ** 2, s=shape)
    acf = np.fft.fftshift(acf, axes=(1, 2))[:, ny - half : ny + half + 1, nx - half : nx + half + 1]
    lags = np.arange(-half, half + 1)
    acf /= (ny - np.abs(lags))[:, None] * (nx - np.abs(lags))[None, :]
    power = acf[:, half, half]
    if not (power > 0).any():
        raise ValueError("the cube has no noise to measure")
    keep = (power > 0) & (power <= np.median(power[power > 0]))
    return np.median(acf[keep], axis=0) / 2.0


def _beam_zero_lag(acf: np.ndarray) -> float:
    """The smooth part's value at zero lag: a 2-D Gaussian (log-quadratic) fitted through the lags
    0 < max(|Δx|, |Δy|) ≤ ``SPIKE_RADIUS``, evaluated at 0; ``acf[0]`` itself where that fails."""
    h = acf.shape[0] // 2
    r = SPIKE_RADIUS
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    values = acf[h - r : h + r + 1, h - r : h + r + 1]
    use = ((dx != 0) | (dy != 0)) & (values > 0)
    if use.sum() < 6:
        return float(acf[h, h])
    a = np.stack([np.ones(use.sum()), dx[use], dy[use], dx[use] ** 2, dx[use] * dy[use], dy[use] ** 2], axis=1)
    coef, *_ = np.linalg.lstsq(a, np.log(values[use]), rcond=None)
    zero = float(np.exp(coef[0]))
    return min(zero, float(acf[h, h])) if np.isfinite(zero) else float(acf[h, h])


def noise_model(cube: np.ndarray, *, half: int, pairs: int = 64) -> NoiseModel:
    """The beam and noise correlation measured on a cube (nz, ny, nx) out to ± ``half`` px (module docstring)."""
    acf = noise_acf(cube, half=half, pairs=pairs)
    h = acf.shape[0] // 2
    total = float(acf[h, h])
    smooth = _beam_zero_lag(acf)
    beam = acf / smooth
    beam[h, h] = 1.0
    return NoiseModel(beam=beam, correlation=acf / total, white_fraction=float(np.clip(1.0 - smooth / total, 0, 1)))


def psf_from_file(path: str | Path, *, half: int | None = None) -> np.ndarray:
    """A PSF image (2-D, or a cube: its median over channels) → (2·half + 1)², unit peak at the centre;
    ``half`` None: the whole image's reach (its larger side), which :func:`centred` cuts to any other.

    ``ValueError`` with a one-line reason when the file is not a PSF (no positive peak, wrong shape).
    """
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            data = next((h.data for h in hdul if getattr(h, "data", None) is not None and h.data.ndim >= 2), None)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable FITS PSF ({' '.join(str(exc).split())})") from None
    if data is None:
        raise ValueError(f"{path}: no image in the file")
    data = np.squeeze(np.asarray(data, np.float32))
    if data.ndim == 3:  # a flagged (NaN) channel is left out of its pixel's median
        data = np.nanmedian(data, axis=0) if np.isnan(data).any() else median(data, axis=0)
    if data.ndim != 2:
        raise ValueError(f"{path}: a PSF must be a 2-D image or a cube, got shape {data.shape}")
    data = np.nan_to_num(data.astype(np.float64))
    iy, ix = np.unravel_index(np.argmax(data), data.shape)
    peak = data[iy, ix]
    if not peak > 0:
        raise ValueError(f"{path}: the PSF has no positive peak")
    half = max(data.shape) if half is None else half
    out = np.zeros((2 * half + 1, 2 * half + 1))
    ny, nx = data.shape
    y0, y1 = max(iy - half, 0), min(iy + half + 1, ny)
    x0, x1 = max(ix - half, 0), min(ix + half + 1, nx)
    out[y0 - iy + half : y1 - iy + half, x0 - ix + half : x1 - ix + half] = data[y0:y1, x0:x1] / peak
    return out


def centred(psf: np.ndarray, half: int) -> np.ndarray:
    """A centred odd-square PSF cut (or zero padded) to (2·half + 1)²."""
    out = np.zeros((2 * half + 1, 2 * half + 1))
    h0, h1 = psf.shape[0] // 2, psf.shape[1] // 2
    r0, r1 = min(h0, half), min(h1, half)
    out[half - r0 : half + r0 + 1, half - r1 : half + r1 + 1] = psf[h0 - r0 : h0 + r0 + 1, h1 - r1 : h1 + r1 + 1]
    return out


def beam_psf_image(major_px: float, minor_px: float, pa_px_deg: float, *, half: int) -> np.ndarray:
    """A restoring beam as a unit-peak Gaussian image (2·half + 1)²: FWHMs in pixels, ``pa_px_deg``
    the sim.sky angle of its major axis (:func:`dfjax.maths.gaussian_2d`)."""
    n = 2 * half + 1
    return gaussian_2d((n, n), half, half, major_px, minor_px, pa_px_deg)
