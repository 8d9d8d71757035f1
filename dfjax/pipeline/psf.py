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
    sampling function, so its power spectrum is the uv coverage's (the dirty beam's transform,
    zero where no baseline reaches) and its autocorrelation the dirty beam. White noise added in
    the image (the paper's Sec. 3) adds a flat floor, σ_w², to that spectrum — a spike at zero
    lag. The floor is the median of the spectrum (most of the uv plane holds no baseline). Near
    the centre every cell's excess over it is the beam, the zero lag extrapolated from the lags
    around it (a floor wrong by a thousandth moves only that lag, by up to 5% at 98% white); far
    out only the cells clearly above it are the beam's, the rest, the estimate's own noise, is
    zeroed (:func:`beam_spectrum`). On fast-simulator 360² cubes with the paper's noise (95–99%
    white) the main lobe comes out 8.1–8.5 px wide for the PSF's 8.1, its volume within 16 px
    3–15% high (the clear cells alone, everywhere: 8.4–10.0 px and +6 to +36%), the far
    sidelobes within ~0.4–0.8× their rms. What is left high is the lines' own change between
    channels, which adds to the beam's wings: measured on the pairs without lines it goes, so the
    shapes are fitted through that beam (``scene.shape_beam``); the amplitudes keep the one of all
    pairs, without which the fit trusts the far field more than it should. Sizes read ~0.5 px
    small. Give the PSF where it exists.

``auto`` takes ``file`` when a PSF is given, else ``noise``: the models were trained on dirty
cubes. The noise correlation (:func:`noise_correlation`) is always measured on the data, spike
included, so a white, beam-correlated or mixed noise is modelled as it is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from astropy.io import fits

from dfjax.maths import gaussian_2d, median, robust_std
from dfjax.pipeline.config import PSF_KINDS

__all__ = ["PSF_KINDS", "NoiseModel", "beam_psf_image", "beam_spectrum", "centred", "noise_acf", "noise_correlation",
           "noise_model", "psf_from_file", "spectrum_acf"]

BEAM_CORE_PX = 16.0  # within this lag every cell of the noise's spectrum makes the beam; past twice it, the clear ones
BEAM_CELL_SIGMA = 3.0  # a cell of the noise spectrum is the beam's where it exceeds the white floor by this many spreads
LINE_FREE_SIGMA = 2.0  # a channel pair whose power over the beam's cells is this many spreads high holds a line
ACF_BLOCK = 16  # channel differences transformed at once


@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """What the cube's noise is: the beam it shows (unit peak, odd square (2h+1)²), the pixels'
    noise correlation (unit zero lag, same shape), the white share of the noise variance, the
    autocorrelation of the beam estimate's own error (same shape, in the beam's units²), and the
    beam of the line-free channel pairs alone where asked for (same shape, unit peak; else None)."""

    beam: np.ndarray
    correlation: np.ndarray
    white_fraction: float
    beam_error: np.ndarray
    line_free_beam: np.ndarray | None = None


def noise_acf(cube: np.ndarray, *, half: int, pairs: int = 64) -> np.ndarray:
    """The noise autocorrelation, (2·half + 1)² lags, not normalised (zero lag: the variance of a
    channel difference / 2).

    Up to ``pairs`` differences of adjacent channels (the continuum cancels) are autocorrelated
    (zero padded: a linear, not circular, correlation) and normalised by the number of
    overlapping pixels at each lag; the median over the quieter half of the pairs is taken (a
    line adds power to the pairs it is in).
    """
    nz, ny, nx = cube.shape
    half = min(half, (min(ny, nx) - 1) // 2)
    starts = _pair_starts(nz, pairs)
    diff = np.nan_to_num(cube[starts + 1].astype(np.float64) - cube[starts])
    diff -= diff.mean(axis=(1, 2), keepdims=True)
    shape = (2 * ny, 2 * nx)
    acf = _lags(np.fft.irfft2(np.abs(np.fft.rfft2(diff, s=shape)) ** 2, s=shape), ny, nx, half)
    power = acf[:, half, half]
    if not (power > 0).any():
        raise ValueError("the cube has no noise to measure")
    keep = (power > 0) & (power <= np.median(power[power > 0]))
    return np.median(acf[keep], axis=0) / 2.0


def _pair_starts(nz: int, pairs: int) -> np.ndarray:
    """The first channels of up to ``pairs`` adjacent-channel pairs, spread evenly over ``nz`` channels."""
    if nz < 2:
        raise ValueError(f"need at least 2 channels to measure the noise correlation, got {nz}")
    return np.unique(np.linspace(0, nz - 2, min(pairs, nz - 1)).astype(int))


def _lags(lagged: np.ndarray, ny: int, nx: int, half: int) -> np.ndarray:
    """A zero-padded (2ny, 2nx) autocorrelation (or a stack of them) → its lags ± ``half``, centred and
    divided by the number of overlapping pixels at each lag (an unbiased linear autocorrelation)."""
    lags = np.arange(-half, half + 1)
    overlap = (ny - np.abs(lags))[:, None] * (nx - np.abs(lags))[None, :]
    centred = np.fft.fftshift(lagged, axes=(-2, -1))[..., ny - half : ny + half + 1, nx - half : nx + half + 1]
    return centred / overlap


def spectrum_acf(cube: np.ndarray, *, half: int, pairs: int, line_free: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:  # fmt: skip
    """The noise autocorrelation for the beam, (2·half + 1)² lags, not normalised (zero lag: the
    variance of a channel difference / 2), those of the lower and the upper half of the pairs
    alone, which share no channel (how much the estimate itself is noise: :func:`beam_spectrum`),
    and with ``line_free`` that of the line-free pairs (else None): those whose power over the
    beam's cells (the median spectrum ``BEAM_CELL_SIGMA`` spreads above its floor) is within
    ``LINE_FREE_SIGMA`` robust spreads of the pairs' median (a line adds its image's power to the
    pairs it is in).

    Up to ``pairs`` differences of adjacent channels (the continuum cancels), zero padded (a
    linear, not circular, correlation): each one's power spectrum, their median over the pairs
    per cell / ln 2 (the mean of an exponential variate; a line adds power to the few pairs it
    is in, not to the median), back to lags and normalised by the number of overlapping pixels
    at each lag.
    """
    from scipy import fft

    nz, ny, nx = cube.shape
    half = min(half, (min(ny, nx) - 1) // 2)
    starts = _pair_starts(nz, pairs)
    if len(starts) < 2:
        raise ValueError(f"need at least 3 channels to measure the noise correlation's error, got {nz}")
    shape = (2 * ny, 2 * nx)
    power = np.empty((len(starts), shape[0], shape[1] // 2 + 1), np.float32)
    for i in range(0, len(starts), ACF_BLOCK):
        block = starts[i : i + ACF_BLOCK]
        diff = np.nan_to_num(cube[block + 1].astype(np.float32) - cube[block])
        diff -= diff.mean(axis=(1, 2), keepdims=True)
        spectrum = fft.rfft2(diff, s=shape, workers=-1)
        power[i : i + len(block)] = spectrum.real**2 + spectrum.imag**2
    if not (power.sum(axis=(1, 2)) > 0).any():
        raise ValueError("the cube has no noise to measure")

    def acf(typical: np.ndarray) -> np.ndarray:  # the pairs' median power spectrum → lags
        return _lags(fft.irfft2(typical.astype(np.float64) / np.log(2.0), s=shape), ny, nx, half) / 2.0

    middle = len(starts) // 2  # the lower and the upper channels: halves that share no channel
    typical = median(power, axis=0)
    quiet = None
    if line_free:
        cells = typical > np.median(typical) + BEAM_CELL_SIGMA * float(robust_std(typical.ravel()))
        in_beam = power[:, cells].sum(axis=1)
        quiet = acf(median(power[in_beam <= np.median(in_beam) + LINE_FREE_SIGMA * float(robust_std(in_beam))], axis=0))
    return acf(typical), acf(median(power[:middle], axis=0)), acf(median(power[middle:], axis=0)), quiet


def beam_spectrum(acf: np.ndarray, halves: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, float, np.ndarray]:  # fmt: skip
    """An autocorrelation (odd square) → (the beam's part of it, same shape, unit zero lag; the white
    floor's share of the zero lag; the autocorrelation of the beam's error, same shape, zero
    without ``halves``).

    The spectrum's median is the white floor, a constant: taken off every cell it leaves the
    beam's spectrum and the estimate's noise, and moves only the zero lag (a floor wrong by a
    thousandth of itself is, at 98% white noise, a beam peak wrong by 5%). So near the centre
    (within ``BEAM_CORE_PX``, tapering out by twice that) the beam is every cell's excess over the
    floor, its zero lag extrapolated from the lags around it (:func:`_peak`); farther out, where it
    is weak, only the cells above the floor by more than ``BEAM_CELL_SIGMA`` robust spreads count
    (the others, the estimate's own noise, are zeroed): a cut there would leave out the uv plane's
    sparse outer cells and broaden the main lobe, no cut here would fill the far field with noise.
    ``halves``: the same autocorrelation measured on two disjoint halves of the data
    (:func:`spectrum_acf`); half their beams' difference is the estimate's error, whose
    autocorrelation lets the fit count what it does not know of the beam as noise
    (:func:`~dfjax.pipeline.forward.error_power`)."""
    h = acf.shape[0] // 2
    r = np.hypot(*np.mgrid[-h : h + 1, -h : h + 1])
    near = np.clip(2.0 - r / BEAM_CORE_PX, 0.0, 1.0)
    near = np.where(near < 1.0, 0.5 - 0.5 * np.cos(np.pi * near), 1.0)  # 1 within the core, 0 past twice it

    def beam_of(a: np.ndarray, kept: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        spectrum = np.fft.fft2(np.fft.ifftshift(a)).real
        excess = spectrum - median(spectrum.ravel())
        if kept is None:
            kept = excess > BEAM_CELL_SIGMA * float(robust_std(spectrum.ravel()))
        far = np.fft.fftshift(np.fft.ifft2(np.where(kept, excess, 0.0)).real)
        every = np.fft.fftshift(np.fft.ifft2(excess).real)
        peak = _peak(every, r)
        if peak is None:  # no main lobe around the zero lag: keep the cut cells' own
            return far, kept
        every[h, h] = peak
        return near * every + (1.0 - near) * far, kept

    beam, kept = beam_of(acf)
    if not kept.any() or not beam[h, h] > 0:  # no cell above the floor: white noise, no beam to be seen in it
        beam = np.zeros_like(acf)
        beam[h, h] = 1.0
        return beam, 1.0, np.zeros_like(acf)
    error = np.zeros_like(acf)
    if halves is not None:
        wrong = (beam_of(halves[0], kept)[0] - beam_of(halves[1], kept)[0]) / (2.0 * beam[h, h])
        error = np.fft.fftshift(np.fft.ifft2(np.abs(np.fft.fft2(wrong)) ** 2).real) / wrong.size
    return beam / beam[h, h], float(np.clip(1.0 - beam[h, h] / acf[h, h], 0.0, 1.0)), error


def _peak(beam: np.ndarray, r: np.ndarray) -> float | None:
    """The zero lag of a main lobe from the lags around it (0 < r ≤ √5: 20 lags), a Gaussian in r
    fitted to their logs; None where any of them is not positive (no lobe to extrapolate)."""
    h = beam.shape[0] // 2
    ring = (r > 0) & (r <= np.sqrt(5.0) + 1e-6)
    values = beam[ring]
    if h < 3 or not (values > 0).all():
        return None
    slope, offset = np.polyfit(r[ring] ** 2, np.log(values), 1)
    return float(np.exp(offset)) if slope < 0 else None


def noise_correlation(cube: np.ndarray, *, half: int, pairs: int = 64) -> np.ndarray:
    """The pixels' noise correlation, spike and beam, unit zero lag, ± ``half`` px, from a few channel
    pairs (:func:`noise_acf`): what the scene fit needs of the noise when the beam is given."""
    acf = noise_acf(cube, half=half, pairs=pairs)
    return acf / acf[acf.shape[0] // 2, acf.shape[1] // 2]


def noise_model(cube: np.ndarray, *, half: int, pairs: int | None = None, line_free: bool = False) -> NoiseModel:
    """The beam, its error and the noise correlation of a cube (nz, ny, nx), out to ± ``half`` px, all
    from one :func:`spectrum_acf` of ``pairs`` channel pairs (all by default; module docstring); with
    ``line_free`` the beam of the pairs without a line too."""
    acf, lower, upper, quiet = spectrum_acf(cube, half=half, pairs=pairs or cube.shape[0] - 1, line_free=line_free)
    beam, white, error = beam_spectrum(acf, (lower, upper))
    h = acf.shape[0] // 2
    return NoiseModel(beam=beam, correlation=acf / acf[h, h], white_fraction=white, beam_error=error,
                      line_free_beam=None if quiet is None else beam_spectrum(quiet)[0])  # fmt: skip


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
