"""Sky models drawn from the paper's Table 1 and their truth catalogue.

Pixel conventions, used everywhere in the project:
  * ``x`` is the column index along NAXIS1 (RA), ``y`` the row along NAXIS2 (Dec), ``z`` the
    channel along the spectral axis as stored in the FITS file; all 0-based pixels.
  * Arrays are indexed ``cube[z, y, x]``.
  * Boxes are half-open: a source occupies columns ``x0 <= x < x1`` and rows ``y0 <= y < y1``
    (numpy slices, scikit-image ``regionprops`` bbox order). ``z0, z1 = z -/+ fwhm_z``.

Each source is a 2-D Gaussian times a spectrum (paper eqs. 2-4, with the corrected rotation)::

    x' = dx cos(pa) - dy sin(pa),   y' = dx sin(pa) + dy cos(pa)
    g(x, y) = exp(-((x'/sx)^2 + (y'/sy)^2) / 2),   s = FWHM / 2.35482
    S(z) = a (nu_z / nu_c)^alpha [1 + l(z)],       l(z) = A_l exp(-(z - z_c)^2 / (2 s_z^2))

i.e. ``G = g + l*g`` (eq. 4): a continuum with spectral index plus an emission line whose peak
is ``A_l`` times the continuum. The whole cube is then rescaled so that its brightest pixel is
``peak_jy_per_px`` (simobserve's ``inbright``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sim.config import SkyConfig

FWHM_PER_SIGMA = 2.35482  # the simulator's 2√(2 ln 2), to 6 figures (as in the paper's generator)
FWHM_TO_SIGMA = 1.0 / FWHM_PER_SIGMA
SPEED_OF_LIGHT_KM_S = 299_792.458
BOX_THRESHOLD = 0.15  # 2-D box: extent of the integrated emission above 15% of its own peak
TRUNCATION = 1e-9  # profiles are zero below this fraction of their peak (6.4 sigma)

CATALOGUE_COLUMNS = (
    "cube", "id", "x", "y", "z", "fwhm_x", "fwhm_y", "pa", "fwhm_z",
    "line_amp", "cont_amp", "spectral_index", "line_flux", "peak_snr",
    "x0", "y0", "x1", "y1", "z0", "z1", "blendness",
    "ra", "dec", "freq",
)  # fmt: skip
"""Truth catalogue columns. Units: x, y, fwhm_x, fwhm_y, box in pixels; z, fwhm_z, z0, z1 in
channels; pa in degrees; line_amp (line peak above continuum at the source centre) and cont_amp
(continuum at the centre frequency) in Jy/pixel; line_flux (line-only, integrated) in Jy km/s
(radio velocity); peak_snr dimensionless; ra, dec in degrees; freq (line centre) in Hz."""


@dataclass(frozen=True)
class Source:
    """One model source, in raw (pre-rescaling) units."""

    x: float
    y: float
    z: float
    fwhm_x: float
    fwhm_y: float
    pa: float  # degrees
    fwhm_z: float
    amplitude: float
    line_amplitude: float  # line peak relative to the continuum (eq. 4)
    spectral_index: float


def channel_frequencies(centre_freq_hz: float, channel_width_hz: float, channels: int) -> np.ndarray:
    """Frequency of each channel: channel ``channels // 2`` sits at ``centre_freq_hz``."""
    return centre_freq_hz + (np.arange(channels) - channels // 2) * channel_width_hz


def _uniform(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _spectral_peak(src: Source, freqs_hz: np.ndarray) -> float:
    return float(spectrum(src, freqs_hz).max())


def draw_sources(rng: np.random.Generator, sky: SkyConfig, size: int, channels: int,
                 freqs_hz: np.ndarray) -> list[Source]:
    """A central source at the field centre plus 2-5 serendipitous ones no brighter than it.

    Serendipitous amplitudes are drawn from the conditional distribution "peak <= central
    peak" by rejection (up to 1000 tries, then scaled down), so all other ranges stay uniform.
    """

    def draw(x: float, y: float) -> Source:
        return Source(
            x=x, y=y,
            z=_uniform(rng, sky.line_centre_frac) * channels,
            fwhm_x=_uniform(rng, sky.fwhm_px),
            fwhm_y=_uniform(rng, sky.fwhm_px),
            pa=_uniform(rng, sky.pa_deg),
            fwhm_z=_uniform(rng, sky.line_fwhm_chan),
            amplitude=_uniform(rng, sky.amplitude),
            line_amplitude=_uniform(rng, sky.line_amplitude),
            spectral_index=_uniform(rng, sky.spectral_index),
        )  # fmt: skip

    centre = float(size // 2)
    central = draw(centre, centre)
    central_peak = _spectral_peak(central, freqs_hz)
    sources = [central]
    n_extra = int(rng.integers(sky.n_serendipitous[0], sky.n_serendipitous[1] + 1))
    lo, hi = (f * size for f in sky.position_frac)
    for _ in range(n_extra):
        src = draw(_uniform(rng, (lo, hi)), _uniform(rng, (lo, hi)))
        for _ in range(1000):
            if _spectral_peak(src, freqs_hz) <= central_peak:
                break
            src = _replace_brightness(src, rng, sky)
        peak = _spectral_peak(src, freqs_hz)
        if peak > central_peak:
            src = _scaled(src, central_peak / peak)
        sources.append(src)
    return sources


def _replace_brightness(src: Source, rng: np.random.Generator, sky: SkyConfig) -> Source:
    return Source(**{**src.__dict__,
                     "amplitude": _uniform(rng, sky.amplitude),
                     "line_amplitude": _uniform(rng, sky.line_amplitude),
                     "spectral_index": _uniform(rng, sky.spectral_index)})  # fmt: skip


def _scaled(src: Source, factor: float) -> Source:
    return Source(**{**src.__dict__, "amplitude": src.amplitude * factor})


def spatial_profile(src: Source, size: int) -> np.ndarray:
    """Unit-peak rotated 2-D Gaussian g(x, y) on the (size, size) grid, indexed [y, x]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - src.x, yy - src.y
    pa = np.deg2rad(src.pa)
    xr = dx * np.cos(pa) - dy * np.sin(pa)
    yr = dx * np.sin(pa) + dy * np.cos(pa)
    sx, sy = src.fwhm_x * FWHM_TO_SIGMA, src.fwhm_y * FWHM_TO_SIGMA
    g = np.exp(-0.5 * ((xr / sx) ** 2 + (yr / sy) ** 2))
    g[g < TRUNCATION] = 0.0  # compact support: the fast backend pads only as much as it needs
    return g


def support(sky: SkyConfig, size: int) -> tuple[int, int]:
    """Pixel range [lo, hi), both axes, that holds every source `draw_sources` can make."""
    reach = np.sqrt(2 * np.log(1 / TRUNCATION)) * sky.fwhm_px[1] * FWHM_TO_SIGMA
    centre = size // 2
    lo = np.floor(min(sky.position_frac[0] * size, centre) - reach)
    hi = np.ceil(max(sky.position_frac[1] * size, centre) + reach) + 1
    return int(max(lo, 0)), int(min(hi, size))


def line_profile(src: Source, channels: int) -> np.ndarray:
    """l(z) of eq. 2, relative to the continuum."""
    z = np.arange(channels, dtype=np.float64)
    return src.line_amplitude * np.exp(-0.5 * ((z - src.z) / (src.fwhm_z * FWHM_TO_SIGMA)) ** 2)


def continuum_profile(src: Source, freqs_hz: np.ndarray) -> np.ndarray:
    """a (nu / nu_c)^alpha with nu_c the centre channel's frequency."""
    ref = freqs_hz[len(freqs_hz) // 2]
    return src.amplitude * (freqs_hz / ref) ** src.spectral_index


def spectrum(src: Source, freqs_hz: np.ndarray) -> np.ndarray:
    """S(z) = continuum * (1 + line), eq. 4."""
    return continuum_profile(src, freqs_hz) * (1.0 + line_profile(src, len(freqs_hz)))


@dataclass
class SkyModel:
    """A rescaled sky-model cube (Jy/pixel) with the per-source pieces that made it."""

    device_cube: jax.Array  # (nz, ny, nx) float32, Jy/pixel, where the fast backend needs it
    cube: np.ndarray  # the same, as a read-only numpy view (no copy on a CPU)
    sources: list[Source]
    profiles: np.ndarray  # (n_src, ny, nx) unit-peak spatial profiles
    spectra: np.ndarray  # (n_src, nz) spectra in Jy/pixel (rescaled)
    scale: float  # Jy/pixel per raw unit


def build_sky(sources: list[Source], size: int, freqs_hz: np.ndarray, peak_jy_per_px: float) -> SkyModel:
    """Render the sources into a cube and rescale its brightest pixel to ``peak_jy_per_px``."""
    profiles = np.stack([spatial_profile(s, size) for s in sources])
    spectra = np.stack([spectrum(s, freqs_hz) for s in sources])
    flat = jnp.asarray(profiles.reshape(len(sources), -1), jnp.float32)
    cube = (jnp.asarray(spectra.T, jnp.float32) @ flat).reshape(len(freqs_hz), size, size)  # rank-1 terms
    scale = peak_jy_per_px / float(cube.max())
    cube = cube * jnp.float32(scale)
    return SkyModel(
        device_cube=cube,
        cube=np.asarray(cube),
        sources=sources,
        profiles=profiles,
        spectra=spectra * scale,
        scale=scale,
    )


def box_2d(profile: np.ndarray) -> tuple[int, int, int, int]:
    """Half-open (x0, y0, x1, y1) extent of a profile above BOX_THRESHOLD of its own peak."""
    mask = profile >= BOX_THRESHOLD * profile.max()
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def iou_2d(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two half-open boxes (x0, y0, x1, y1) — paper eq. 22."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def line_flux_jy_km_s(src: Source, model: SkyModel, index: int, freqs_hz: np.ndarray,
                      channel_width_hz: float) -> float:
    """Line-only flux integrated over the field and the band, in Jy km/s (radio velocity)."""
    line_only = continuum_profile(src, freqs_hz) * line_profile(src, len(freqs_hz)) * model.scale
    dv_km_s = SPEED_OF_LIGHT_KM_S * abs(channel_width_hz) / freqs_hz
    return float(model.profiles[index].sum() * np.sum(line_only * dv_km_s))
