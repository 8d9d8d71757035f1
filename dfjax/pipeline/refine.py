"""Spectral refinement and the line-significance cut (``characterise.refine_iterations`` > 0; not in the paper).

Steps (ii)–(iv) measure a source's line on the spectrum summed over a box and its shape on the
image summed over that line's channels, each from the other's first guess. Refinement closes
the loop on the data, ``refine_iterations`` times:

1. the **matched spectrum**: the cube weighted by the source's profile as the dirty beam shows
   it (the fitted Gaussian ⊛ the beam), s(z) = Σ w·cube[z] / Σ w², the least-squares amplitude
   of that profile in each channel — the highest-SNR spectrum of a source of that shape;
2. its continuum, a straight line fitted to the channels beyond ± 3 FWHM of the line, removed;
3. the line refitted there: a Gaussian whose centre may move by one FWHM (at least 2 channels)
   and whose FWHM may take any value in [1, ``refine_max_fwhm_chan``] channels;
4. the shape refitted (:func:`~dfjax.pipeline.gaussfit.fit_source`) on the line image over the
   new emission range.

Then the **line SNR**: the continuum-subtracted matched spectrum summed over the emission range,
over its noise (the robust spread of the off-line channels × √channels). A source with
``line_snr`` < ``characterise.min_line_snr`` is dropped: what steps (ii)–(iii) took for a line was
continuum or noise. Finally two sources that now sit at the same place and channels are one.

With ``characterise.matched_line`` the fitted line profile weights the channels, as the matched
filter along frequency does: the line image of step 4 is Σ w_z·(channel − continuum), and the
line SNR Σ w_z·s(z) / (σ·√Σ w_z²) over z ∓ 1.5 FWHM. A Gaussian line's SNR is then about a fifth
higher than on the plain sum over z ∓ FWHM, in the image that fixes the shape and in the cut.

With ``characterise.line_noise: beam`` the line SNR's noise is not measured on the spectrum's
own off-line channels — where the lines of other sources at the same place, in other channels,
inflate it — but propagated from the cube's per-channel pixel noise through the matched filter
(:func:`matched_noise_gain`): the noise of a dirty image is correlated like the beam, and the
least-squares amplitude's variance follows from it, neighbours fitted alongside included.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import signal
from scipy.optimize import least_squares

from dfjax.input_pipeline.transforms import line_emission_image
from dfjax.maths import FWHM_PER_SIGMA, gaussian, gaussian_2d, line_free_continuum, robust_std
from dfjax.pipeline.config import PipelineConfig
from dfjax.pipeline.gaussfit import Neighbour, fit_source

__all__ = ["Refined", "RefinedLine", "fit_line", "line_snr", "matched_noise_gain", "matched_spectrum", "refine"]

_DEFAULTS = PipelineConfig()
PRECUT = 0.5  # a line under this fraction of min_line_snr on the first matched spectrum is not refitted


@dataclasses.dataclass(frozen=True)
class RefinedLine:
    """A line measured on the matched spectrum: centre and FWHM in channels, its SNR."""

    z: float
    fwhm_z: float
    snr: float


def matched_spectrum(cube: np.ndarray, psf: np.ndarray, *, x: float, y: float, fwhm_x: float, fwhm_y: float,
                     pa: float, half: int, neighbours: Sequence[Neighbour] = ()) -> np.ndarray:  # fmt: skip
    """Least-squares amplitude, per channel, of the source's profile as the beam shows it → (nz,) float64.

    The profile: the unit-peak Gaussian (sim.sky convention) convolved with ``psf``, over the
    ± ``half`` pixels around (x, y) that lie on the field. ``neighbours`` (field pixels): other
    sources whose profiles are fitted alongside in each channel, so that their light is not
    counted as this source's.
    """
    nz = cube.shape[0]
    window_profiles = _profiles(cube.shape[1:], psf, Neighbour(x=x, y=y, fwhm_x=fwhm_x, fwhm_y=fwhm_y, pa=pa),
                                neighbours, half)  # fmt: skip
    if window_profiles is None:
        return np.zeros(nz)
    (y0, y1, x0, x1), w, others = window_profiles
    norm = float((w * w).sum())
    window = np.nan_to_num(np.asarray(cube[:, y0:y1, x0:x1], np.float64))
    if not others:
        return np.tensordot(window, w, axes=([1, 2], [0, 1])) / norm
    a = np.stack([w, *others]).reshape(len(others) + 1, -1).T  # (pixels, 1 + K)
    amplitudes, *_ = np.linalg.lstsq(a, window.reshape(nz, -1).T, rcond=None)
    return amplitudes[0]


def _profiles(field: tuple[int, int], psf: np.ndarray, source: Neighbour, neighbours: Sequence[Neighbour], half: int
              ) -> tuple[tuple[int, int, int, int], np.ndarray, list[np.ndarray]] | None:  # fmt: skip
    """The window (y0, y1, x0, x1) of ± ``half`` px around ``source`` on a (ny, nx) field, and the
    source's and the ``neighbours``' profiles there (Gaussian ⊛ ``psf``; only neighbours whose
    light reaches the window); None when the window is off the field or the profile is 0."""
    ny, nx = field
    ix, iy = round(source.x), round(source.y)
    x0, x1, y0, y1 = max(ix - half, 0), min(ix + half + 1, nx), max(iy - half, 0), min(iy + half + 1, ny)
    if x1 <= x0 or y1 <= y0:
        return None
    n = 2 * half + 1
    crop = (slice(y0 - iy + half, y1 - iy + half), slice(x0 - ix + half, x1 - ix + half))
    profiles = [signal.fftconvolve(gaussian_2d((n, n), s.x - ix + half, s.y - iy + half, s.fwhm_x, s.fwhm_y, s.pa),
                                   psf, mode="same")[crop]
                for s in [source, *neighbours]]  # fmt: skip
    if not (profiles[0] ** 2).sum() > 0:
        return None
    return (y0, y1, x0, x1), profiles[0], [o for o in profiles[1:] if np.abs(o).max() > 1e-3]


def matched_noise_gain(field: tuple[int, int], psf: np.ndarray, *, x: float, y: float, fwhm_x: float,
                       fwhm_y: float, pa: float, half: int, neighbours: Sequence[Neighbour] = ()) -> float:
    """The noise of :func:`matched_spectrum` (same arguments, the (ny, nx) field for the cube) over
    the pixel noise: √[(AᵀA)⁻¹ Aᵀ R A (AᵀA)⁻¹]₀₀, A the profiles, R the pixels' noise correlation.

    A dirty image's noise is correlated like its beam, so R·a is a profile ⊛ ``psf`` (the beam,
    unit peak) on the window; 0 where the matched spectrum is 0.
    """
    window_profiles = _profiles(field, psf, Neighbour(x=x, y=y, fwhm_x=fwhm_x, fwhm_y=fwhm_y, pa=pa), neighbours,
                                half)  # fmt: skip
    if window_profiles is None:
        return 0.0
    _, w, others = window_profiles
    a = np.stack([p.ravel() for p in (w, *others)], axis=1)
    ra = np.stack([signal.fftconvolve(p, psf, mode="same").ravel() for p in (w, *others)], axis=1)
    inverse = np.linalg.pinv(a.T @ a)
    return float(np.sqrt(max((inverse @ (a.T @ ra) @ inverse)[0, 0], 0.0)))


def _continuum_subtracted(spectrum: np.ndarray, z_line: float, fwhm_z: float, min_channels: int) -> np.ndarray:
    continuum = line_free_continuum(spectrum, z_line, fwhm_z, min_channels=max(min_channels, 3))
    return spectrum - (np.median(spectrum) if continuum is None else continuum)


def _noise(line_free: np.ndarray) -> float:
    """Robust standard deviation (MAD) of line-free channels; 0 with fewer than 3."""
    if len(line_free) < 3:
        return 0.0
    return float(robust_std(line_free))


def fit_line(spectrum: np.ndarray, z: float, fwhm_z: float, *, max_fwhm_chan: float, min_channels: int = 3
             ) -> RefinedLine | None:  # fmt: skip
    """The line near (z, fwhm_z) of a spectrum (nz,), continuum removed, fitted by a Gaussian → RefinedLine.

    None when the fit fails or finds no positive line.
    """
    y = _continuum_subtracted(np.asarray(spectrum, np.float64), z, fwhm_z, min_channels)
    zz = np.arange(len(y), dtype=np.float64)
    window = np.abs(zz - z) <= max(3.0 * fwhm_z, 8.0)
    if window.sum() < 4:
        return None
    sigma0 = np.clip(fwhm_z, 1.0, max_fwhm_chan) / FWHM_PER_SIGMA
    shift = max(fwhm_z, 2.0)
    amp0 = float(max(y[int(np.clip(np.rint(z), 0, len(y) - 1))], 1e-12))
    scale = max(float(np.abs(y[window]).max()), 1e-30)

    def residual(p: np.ndarray) -> np.ndarray:
        a, m, s = p
        return (a * np.exp(-0.5 * ((zz[window] - m) / s) ** 2) - y[window]) / scale

    lo = [0.0, z - shift, 1.0 / FWHM_PER_SIGMA]
    hi = [np.inf, z + shift, max_fwhm_chan / FWHM_PER_SIGMA]
    start = np.clip([amp0, z, sigma0], np.array(lo) + 1e-9, np.array(hi) - 1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = least_squares(residual, start, bounds=(lo, hi), x_scale="jac", max_nfev=200)
        except (ValueError, np.linalg.LinAlgError):
            return None
    a, m, s = result.x
    if not (result.success and a > 0 and np.isfinite(result.x).all()):
        return None
    fwhm = float(s * FWHM_PER_SIGMA)
    return RefinedLine(z=float(m), fwhm_z=fwhm, snr=line_snr(y, float(m), fwhm))


MATCHED_REACH_FWHM = 1.5  # the matched line SNR weighs the channels within this many FWHMs of the line


def line_snr(line_spectrum: np.ndarray, z: float, fwhm_z: float, *, matched: bool = False,
             noise: np.ndarray | None = None) -> float:  # fmt: skip
    """SNR of a continuum-subtracted spectrum's line at (z, fwhm_z) against its noise σ, the robust
    spread of the channels beyond ± 3 FWHM: the sum over z ∓ fwhm_z over σ·√(channels summed), or
    with ``matched`` the channels within ± ``MATCHED_REACH_FWHM`` weighted by the line's Gaussian
    profile w, Σ w·s / (σ·√Σ w²). ``noise`` (nz,): each channel's σ, known, instead."""
    zz = np.arange(len(line_spectrum), dtype=np.float64)
    width = max(fwhm_z, 0.5)
    inside = np.abs(zz - z) <= (MATCHED_REACH_FWHM if matched else 1.0) * width
    if noise is None:
        sigma = np.full(len(zz), _noise(line_spectrum[np.abs(zz - z) > 3.0 * fwhm_z]))
    else:
        sigma = np.asarray(noise, np.float64)
    if not inside.any() or not np.all(sigma[inside] > 0):
        return 0.0
    w = gaussian(zz[inside], z, width) if matched else np.ones(inside.sum())
    return float((w * line_spectrum[inside]).sum() / np.sqrt((w * w * sigma[inside] ** 2).sum()))


@dataclasses.dataclass(frozen=True)
class Refined:
    """A source after refinement: position and shape (field pixels, degrees), its line, line SNR."""

    x: float
    y: float
    fwhm_x: float
    fwhm_y: float
    pa: float
    z: float
    fwhm_z: float
    line_snr: float


def refine(cube: np.ndarray, psf: np.ndarray, *, x: float, y: float, fwhm_x: float, fwhm_y: float, pa: float,
           z: float, fwhm_z: float, config: PipelineConfig = _DEFAULTS, neighbours: Sequence[Neighbour] = (),
           channel_noise: np.ndarray | None = None) -> Refined:  # fmt: skip
    """``characterise.refine_iterations`` rounds of line refit on the matched spectrum then shape
    refit on the new line image (module docstring). Steps that fail keep the values they had;
    the line SNR is measured on the final matched spectrum. ``neighbours`` (field pixels): other
    sources in these channels, fitted alongside with their shapes fixed, in the matched spectrum
    and in the shape fit (``fit_source``). ``channel_noise`` (nz,): the cube's pixel noise per
    channel (:func:`dfjax.pipeline.search.channel_noise`), needed by ``line_noise: beam``."""
    c = config.characterise
    if c.line_noise == "beam" and channel_noise is None:
        raise ValueError("characterise.line_noise 'beam' needs the cube's channel_noise")
    k = config.spectra.emission_half_width_fwhm
    half = c.fit_half_px
    state = {"x": x, "y": y, "fwhm_x": fwhm_x, "fwhm_y": fwhm_y, "pa": pa, "z": z, "fwhm_z": fwhm_z}
    for _ in range(c.refine_iterations):
        shape = {key: state[key] for key in ("x", "y", "fwhm_x", "fwhm_y", "pa")}
        spectrum = matched_spectrum(cube, psf, **shape, half=half, neighbours=neighbours)
        line = fit_line(spectrum, state["z"], state["fwhm_z"], max_fwhm_chan=c.refine_max_fwhm_chan,
                        min_channels=config.spectra.min_continuum_channels)  # fmt: skip
        snr = 0.0 if line is None else line.snr
        if line is not None:
            state.update(z=line.z, fwhm_z=line.fwhm_z)
        if snr < PRECUT * c.min_line_snr:  # hopeless: spare the shape fits
            return Refined(**state, line_snr=snr)
        z0, z1 = state["z"] - k * state["fwhm_z"], state["z"] + k * state["fwhm_z"]
        box = (round(state["x"]), round(state["y"]), round(state["x"]) + 1, round(state["y"]) + 1)
        profile = (state["z"], state["fwhm_z"]) if c.matched_line else None
        image, offset = line_emission_image(cube, box, (z0, z1), size=config.focus.size, profile=profile)
        local = [dataclasses.replace(o, x=o.x - float(offset[0]), y=o.y - float(offset[1])) for o in neighbours]
        fit = fit_source(image, psf, state["x"] - offset[0], state["y"] - offset[1], half=half,
                         max_shift_px=c.fit_max_shift_px, neighbours=local,
                         background=c.fit_background)  # fmt: skip
        if fit is not None:
            state.update(x=fit.x + float(offset[0]), y=fit.y + float(offset[1]), fwhm_x=fit.fwhm_x,
                         fwhm_y=fit.fwhm_y, pa=fit.pa)  # fmt: skip
    shape = {key: state[key] for key in ("x", "y", "fwhm_x", "fwhm_y", "pa")}
    spectrum = matched_spectrum(cube, psf, **shape, half=half, neighbours=neighbours)
    y_line = _continuum_subtracted(spectrum, state["z"], state["fwhm_z"], config.spectra.min_continuum_channels)
    noise = None
    if c.line_noise == "beam":
        noise = channel_noise * matched_noise_gain(cube.shape[1:], psf, **shape, half=half, neighbours=neighbours)
    snr = line_snr(y_line, state["z"], state["fwhm_z"], matched=c.matched_line, noise=noise)
    return Refined(**state, line_snr=snr)
