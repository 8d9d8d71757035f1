"""Step (ii), frequency denoising and line detection (Sec. 4.4 ii; Fig. 9 steps 5–7).

Boxes → dirty spectra (summed over each box) → standardised → Deep GRU →
denoised spectra in [0, 1] → ``scipy.signal.find_peaks`` (height 0.1) → one
``astropy`` Gaussian1D fit per peak → lines ``z``, ``FWHM_z`` and the emission
range Δz = 2·FWHM_z, i.e. ``z0, z1 = z ∓ FWHM_z`` (the catalogue's convention).
Candidates without a peak are dropped; several peaks flag the candidate for
deblending. A straight line (``models.Linear1D``) fitted to the dirty spectrum
outside the emission ranges models the continuum trend.

Channels z are 0-based indices along the cube's first axis, as stored.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
from astropy.modeling import fitting, models
from scipy import signal

from dfjax.input_pipeline.transforms import (
    box_spectra,
    channel_range,
    standardise,
)
from dfjax.maths import FWHM_PER_SIGMA, line_free_continuum
from dfjax.pipeline._apply import Model, apply_batched
from dfjax.pipeline.config import PipelineConfig

__all__ = ["Candidate", "Line", "characterise_spectra", "denoise_spectra", "find_lines", "fit_continuum",
           "refit_line"]

_DEFAULTS = PipelineConfig()
# astropy.modeling's LevMarLSQFitter defaults (optimizers.DEFAULT_*) and Gaussian1D's stddev bound (FLOAT_EPSILON)
LEVMAR_MAXFEV, LEVMAR_ACC, LEVMAR_EPS = 100, 1e-7, float(np.sqrt(np.finfo(float).eps))
_STDDEV_FLOOR = float(np.finfo(np.float32).tiny)


@dataclasses.dataclass(frozen=True)
class Line:
    """One emission peak of a denoised spectrum; channels, 0-based."""

    z: float  # fitted centre
    fwhm_z: float  # fitted FWHM
    z0: float  # emission range Δz: z - k·fwhm_z ...
    z1: float  # ... to z + k·fwhm_z (k = spectra.emission_half_width_fwhm, paper 1)
    amplitude: float  # fitted peak of the denoised spectrum, in [0, 1] units


@dataclasses.dataclass(frozen=True, eq=False)
class Candidate:
    """A source candidate after step (ii).

    ``box``: (x0, y0, x1, y1) half-open, field pixels. ``lines``: by decreasing
    amplitude, the primary first. Continuum of the dirty spectrum (box sum, the
    cube's units per channel): ``continuum_slope * z + continuum_intercept``.
    ``spectrum`` (L,) the dirty spectrum, ``denoised`` (L,) Deep GRU's output.
    """

    box: tuple[int, int, int, int]
    lines: tuple[Line, ...]
    continuum_slope: float
    continuum_intercept: float
    needs_deblending: bool
    spectrum: np.ndarray
    denoised: np.ndarray

    @property
    def primary(self) -> Line:
        """The brightest line."""
        return self.lines[0]


def denoise_spectra(model: Model, spectra: np.ndarray, config: PipelineConfig = _DEFAULTS) -> np.ndarray:
    """Deep GRU over standardised dirty spectra (steps 5–6): (K, L) → (K, L) float32 in [0, 1]."""
    spectra = np.asarray(spectra)
    if spectra.ndim != 2:
        raise ValueError(f"expected spectra (K, L), got shape {spectra.shape}")
    denoised = apply_batched(model, standardise(spectra), batch_size=config.spectra.batch_size)
    if denoised.shape != spectra.shape:
        raise ValueError(f"model returned {denoised.shape} for spectra {spectra.shape}")
    return denoised


def _fitter(name: str) -> fitting.Fitter:
    return fitting.TRFLSQFitter() if name == "trf" else fitting.LevMarLSQFitter()


def _levmar(z: np.ndarray, y: np.ndarray, start: np.ndarray) -> np.ndarray:
    """(amplitude, mean, stddev) of astropy's ``LevMarLSQFitter()(Gaussian1D(*start), z, y)``, made by the
    call it makes (MINPACK's lmder through ``scipy.optimize.leastsq``: the same residuals, analytic
    Jacobian, stddev's lower bound, maxfev, xtol and step) without the model machinery around it —
    the same numbers at a tenth of the time, for the many lines of a paper-size cube."""
    from scipy import optimize

    def residual(p: np.ndarray) -> np.ndarray:
        a, m, s = p[0], p[1], np.fmax(p[2], _STDDEV_FLOOR)
        return a * np.exp(-0.5 * (z - m) ** 2 / s**2) - y

    def jacobian(p: np.ndarray) -> np.ndarray:  # Gaussian1D.fit_deriv, at the unbounded parameters as astropy's
        a, m, s = p
        e = np.exp(-0.5 / s**2 * (z - m) ** 2)
        return np.array([e, a * e * (z - m) / s**2, a * e * (z - m) ** 2 / s**3])

    fitted, _ = optimize.leastsq(residual, start, Dfun=jacobian, col_deriv=True, maxfev=LEVMAR_MAXFEV,
                                 epsfcn=LEVMAR_EPS**2, xtol=LEVMAR_ACC)  # fmt: skip
    return np.array([fitted[0], fitted[1], np.fmax(fitted[2], _STDDEV_FLOOR)])


def _fit_gaussian(z: np.ndarray, y: np.ndarray, guess: tuple[float, float, float], fitter: str
                  ) -> tuple[float, float, float] | None:  # fmt: skip
    """Gaussian1D least squares → (amplitude, mean, fwhm), or None when the fit is unusable."""
    amplitude, mean, fwhm = guess
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fit may be unsuccessful": judged below instead
        try:
            if fitter == "levmar":
                a, m, s = _levmar(np.asarray(z, np.float64), np.asarray(y, np.float64),
                                  np.array([amplitude, mean, fwhm / FWHM_PER_SIGMA], np.float64))  # fmt: skip
            else:
                model = models.Gaussian1D(amplitude=amplitude, mean=mean, stddev=fwhm / FWHM_PER_SIGMA)
                fit = _fitter(fitter)(model, z, y)
                a, m, s = float(fit.amplitude.value), float(fit.mean.value), float(fit.stddev.value)
        except (ValueError, RuntimeError, np.linalg.LinAlgError):
            return None
    a, m, s = float(a), float(m), abs(float(s))
    if not (np.isfinite([a, m, s]).all() and a > 0 and s > 0 and z[0] <= m <= z[-1]):
        return None
    return a, m, s * FWHM_PER_SIGMA


def find_lines(denoised: np.ndarray, config: PipelineConfig = _DEFAULTS) -> list[Line]:
    """Emission lines of one denoised spectrum (step 7): (L,) in [0, 1] → lines, brightest first.

    Peaks: ``find_peaks`` with ``height = spectra.peak_height``. Each is fitted
    with a Gaussian1D (initial mean and amplitude: the peak's channel and
    value; initial FWHM: ``peak_widths`` at half height) on the channels within
    ``fit_half_window_fwhm`` widths of the peak (at least
    ``min_fit_half_window_chan``), cut at the spectrum's minimum between
    neighbouring peaks. An unusable fit falls back to the initial values.
    """
    s = config.spectra
    y = np.nan_to_num(np.asarray(denoised, np.float64), nan=0.0)
    if y.ndim != 1:
        raise ValueError(f"expected one spectrum (L,), got shape {y.shape}")
    peaks, _ = signal.find_peaks(y, height=s.peak_height)
    if len(peaks) == 0:
        return []
    widths = signal.peak_widths(y, peaks, rel_height=0.5)[0]
    z = np.arange(len(y), dtype=np.float64)
    lines = []
    for i, (peak, width) in enumerate(zip(peaks, widths)):
        left = peaks[i - 1] + int(np.argmin(y[peaks[i - 1] : peak + 1])) if i > 0 else 0
        right = peak + int(np.argmin(y[peak : peaks[i + 1] + 1])) if i + 1 < len(peaks) else len(y) - 1
        half = max(s.fit_half_window_fwhm * width, s.min_fit_half_window_chan)
        lo, hi = max(left, int(np.floor(peak - half))), min(right, int(np.ceil(peak + half)))
        guess = (float(y[peak]), float(peak), float(max(width, 1.0)))
        amplitude, centre, fwhm = _fit_gaussian(z[lo : hi + 1], y[lo : hi + 1], guess, s.fitter) or guess
        k = s.emission_half_width_fwhm
        lines.append(Line(z=centre, fwhm_z=fwhm, z0=centre - k * fwhm, z1=centre + k * fwhm, amplitude=amplitude))
    return sorted(lines, key=lambda line: -line.amplitude)


def refit_line(spectrum: np.ndarray, line: Line, config: PipelineConfig = _DEFAULTS) -> Line:
    """``line`` refitted on a dirty spectrum (L,) of its own source: a straight continuum from the
    channels beyond ± 3 FWHM, then a Gaussian over ± max(2.5 FWHM, 5) channels started from the
    line. A fit that moves the centre by more than one FWHM, or changes the width by more than
    ×/÷ 2.5, is not trusted: the line comes back unchanged."""
    y = np.asarray(spectrum, np.float64)
    z = np.arange(len(y), dtype=np.float64)
    continuum = line_free_continuum(y, line.z, line.fwhm_z, min_channels=config.spectra.min_continuum_channels)
    if continuum is not None:
        y = y - continuum
    half = max(2.5 * line.fwhm_z, 5.0)
    window = np.abs(z - line.z) <= half
    if window.sum() < 4:
        return line
    guess = (float(max(y[int(np.clip(np.rint(line.z), 0, len(y) - 1))], 1e-12)), line.z, line.fwhm_z)
    fit = _fit_gaussian(z[window], y[window], guess, config.spectra.fitter)
    if fit is None:
        return line
    _, centre, fwhm = fit
    if abs(centre - line.z) > line.fwhm_z or not line.fwhm_z / 2.5 <= fwhm <= 2.5 * line.fwhm_z:
        return line
    k = config.spectra.emission_half_width_fwhm
    return dataclasses.replace(line, z=centre, fwhm_z=fwhm, z0=centre - k * fwhm, z1=centre + k * fwhm)


def fit_continuum(spectrum: np.ndarray, lines: Sequence[Line], config: PipelineConfig = _DEFAULTS
                  ) -> tuple[float, float]:  # fmt: skip
    """Continuum trend of a dirty spectrum (L,) → (slope per channel, intercept at z = 0).

    A ``models.Linear1D`` least-squares fit over the channels outside every
    line's emission range (``channel_range(z0, z1)``, inclusive). With fewer
    than ``spectra.min_continuum_channels`` such channels returns (0, 0).
    """
    y = np.asarray(spectrum, np.float64)
    if y.ndim != 1:
        raise ValueError(f"expected one spectrum (L,), got shape {y.shape}")
    outside = np.isfinite(y)
    for line in lines:
        lo, hi = channel_range((line.z0, line.z1), len(y))
        outside[lo : hi + 1] = False
    if outside.sum() < config.spectra.min_continuum_channels:
        return 0.0, 0.0
    z = np.arange(len(y), dtype=np.float64)
    fit = fitting.LinearLSQFitter()(models.Linear1D(), z[outside], y[outside])
    return float(fit.slope.value), float(fit.intercept.value)


def characterise_spectra(
    model: Model, cube: np.ndarray, boxes: np.ndarray, config: PipelineConfig = _DEFAULTS
) -> list[Candidate]:
    """Step (ii) end to end: cube (nz, ny, nx), boxes (K, 4) → candidates with ≥ 1 line, in box order.

    ``model`` is Deep GRU (or a stand-in): (B, nz) standardised → (B, nz) in
    [0, 1]. Blanked (NaN) voxels count as 0 in the spectra.
    """
    boxes = np.asarray(boxes)
    if boxes.size == 0:
        return []
    boxes = np.atleast_2d(boxes)
    if boxes.ndim != 2 or boxes.shape[1] < 4:
        raise ValueError(f"expected boxes (K, 4), got shape {boxes.shape}")
    boxes = boxes[:, :4]
    spectra = box_spectra(cube, boxes)
    if not np.isfinite(spectra).all():
        spectra = box_spectra(np.nan_to_num(np.asarray(cube, np.float32), nan=0.0), boxes)
    denoised = denoise_spectra(model, spectra, config)
    candidates = []
    for box, spectrum, clean in zip(boxes, spectra, denoised):
        lines = find_lines(clean, config)
        if not lines:  # no meaningful peak: a Blobs Finder false positive
            continue
        slope, intercept = fit_continuum(spectrum, lines, config)
        candidates.append(Candidate(
            box=tuple(int(v) for v in np.rint(box)), lines=tuple(lines), continuum_slope=slope,
            continuum_intercept=intercept, needs_deblending=len(lines) > 1, spectrum=spectrum,
            denoised=clean))  # fmt: skip
    return candidates
