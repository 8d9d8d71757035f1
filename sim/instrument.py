"""The observing set-up of the fast backend: everything that does not depend on the sky.

An `Instrument` is built once per (configuration, field, channels, sky support) and cached:
uv tracks at ALMA's latitude, per-channel uv scaling with frequency, imaging weights gridded on
a padded uv grid, the primary beam, the thermal-noise spectrum and the fitted restoring beams.
`sim.observe` then turns sky cubes into dirty cubes with it.

Sign convention: RA increases to the left (CDELT1 < 0), so a baseline's u is negated on the
grid; otherwise the PSF comes out mirrored.

The padded grid is as small as avoiding wrap-around allows: if the sky's emission lies in
pixels [lo, hi) along both axes, every pixel offset between emission and image is below
max(hi - 1, size - 1 - lo), and a grid of twice that (plus one) holds the PSF out to it. A
generic sky (lo=0, hi=size) gets the classic 2x padding. The PSF itself is gridded on a uv grid
twice finer and truncated to those offsets, which halves the nearest-cell phase error.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize, special

from sim.array import SPEED_OF_LIGHT_M_S, elevation_deg, hour_angles_rad, load_configuration, uvw_tracks_m
from sim.config import ObservationConfig
from sim.noise import visibility_sigma_jy
from sim.sky import FWHM_PER_SIGMA

ARCSEC = np.pi / 180.0 / 3600.0
PB_DISH_M = 10.7  # CASA's 12 m primary beam is close to an Airy disk of 10.7 m ...
PB_BLOCKAGE_M = 0.75  # ... with a 0.75 m central blockage


def _fast_size(n: int) -> int:
    """Smallest integer >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


@dataclass(frozen=True, eq=False)
class Instrument:
    """Everything about an observation that does not depend on the sky."""

    obs: ObservationConfig
    size: int
    freqs_hz: np.ndarray  # (nz,)
    support: tuple[int, int]  # emission must lie in pixels [lo, hi) along both axes
    n_pad: int
    weight_grid: jax.Array  # (nz, n_pad, n_pad//2+1) float32; irfft2 of it is the PSF, peak 1
    noise_index: jax.Array  # (K,) int32 flat indices of independent sampled cells of the padded half-plane
    noise_std: jax.Array  # (nz, K) float32, per-component std there (image units after irfft2)
    mirror_index: jax.Array  # (M,) cells of the self-conjugate columns that mirror ...
    mirror_source: jax.Array  # (M,) ... the independent cell at this position: H(-k) = conj H(k)
    thermal_rms: np.ndarray  # (nz,) expected thermal-noise rms per channel, Jy/beam
    primary_beam: jax.Array  # (nz, size, size) float32
    centred_psf: jax.Array  # (nz, size, size) float32, peak 1 at (size//2, size//2)
    beams: np.ndarray  # (nz, 3): bmaj, bmin (arcsec), bpa (deg, east of north)

    @property
    def channels(self) -> int:
        return len(self.freqs_hz)

    def psf(self) -> np.ndarray:
        """(nz, size, size) dirty beam, peak 1 at pixel (size//2, size//2)."""
        return np.asarray(self.centred_psf)

    def psf_at(self, ref: tuple[int, int]) -> jax.Array:
        """PSF(ref - q) for every pixel q: the response at pixel ref = (y, x) to each sky pixel."""
        if tuple(ref) == (self.size // 2, self.size // 2):
            return self.centred_psf
        return _psf(self.weight_grid, self.n_pad, self.size, tuple(int(r) for r in ref))


@functools.partial(jax.jit, static_argnames=("n_pad", "size", "centre"))
def _psf(weight_grid: jax.Array, n_pad: int, size: int, centre: tuple[int, int]) -> jax.Array:
    """The padded PSF rolled so its peak sits at `centre`; being point-symmetric, this is also
    PSF(centre - q) over the pixels q of the image."""
    psf = jnp.fft.irfft2(weight_grid, s=(n_pad, n_pad))
    return jnp.roll(psf, centre, axis=(1, 2))[:, :size, :size]


def primary_beam(size: int, cell_arcsec: float, freqs_hz: np.ndarray, dish_m: float = 12.0) -> np.ndarray:
    """Airy pattern of a 10.7 m aperture with a 0.75 m blockage (scaled for other dishes)."""
    d = PB_DISH_M * dish_m / 12.0
    eps = PB_BLOCKAGE_M / PB_DISH_M
    c = size // 2
    yy, xx = np.mgrid[0:size, 0:size]
    theta = np.hypot(xx - c, yy - c) * cell_arcsec * ARCSEC
    x = np.pi * d * theta[None] * freqs_hz[:, None, None] / SPEED_OF_LIGHT_M_S
    x = np.where(x == 0, 1e-12, x)
    amp = (2 * special.j1(x) / x - eps**2 * 2 * special.j1(eps * x) / (eps * x)) / (1 - eps**2)
    return (amp**2).astype(np.float32)


def _imaging_weights(counts_h: np.ndarray, cell: np.ndarray, obs: ObservationConfig) -> np.ndarray:
    """Per-visibility imaging weights from the Hermitian cell counts (natural/uniform/Briggs)."""
    c = counts_h[cell]
    if obs.weighting == "natural":
        return np.ones_like(c)
    if obs.weighting == "uniform":
        return 1.0 / c
    f2 = (5.0 * 10.0 ** (-obs.robust)) ** 2 / ((counts_h**2).sum() / counts_h.sum())
    return 1.0 / (1.0 + c * f2)


def _hermitian_flip(grid: np.ndarray) -> np.ndarray:
    """grid[-ky, -kx] (indices modulo the grid size) for a full (n, n) grid."""
    return np.roll(grid[::-1, ::-1], (1, 1), axis=(0, 1))


def fit_beam(psf: np.ndarray, cell_arcsec: float, threshold: float = 0.35) -> tuple[float, float, float]:
    """Least-squares Gaussian fit to the PSF main lobe (pixels above `threshold` connected to the
    peak). Returns (bmaj_arcsec, bmin_arcsec, bpa_deg east of north, in (-90, 90])."""
    from scipy import ndimage

    c = psf.shape[0] // 2
    labels, _ = ndimage.label(psf >= threshold)
    yy, xx = np.nonzero(labels == labels[c, c])
    vals = psf[yy, xx]
    dx, dy = xx - c, yy - c

    def resid(p):
        a, b, cc = p
        return np.exp(-0.5 * (a * dx**2 + 2 * b * dx * dy + cc * dy**2)) - vals

    var = max(float(np.sum(vals * dx**2) / vals.sum()), 0.5)
    p = optimize.least_squares(resid, x0=[1 / var, 0.0, 1 / var]).x
    evals, evecs = np.linalg.eigh(np.array([[p[0], p[1]], [p[1], p[2]]]))
    sig_maj, sig_min = 1 / np.sqrt(evals[0]), 1 / np.sqrt(evals[1])
    vx, vy = evecs[:, 0]  # major axis in pixel coordinates (x to the west, y to the north)
    bpa = np.rad2deg(np.arctan2(-vx, vy))  # east of north
    bpa = (bpa + 90.0) % 180.0 - 90.0
    if bpa == -90.0:
        bpa = 90.0
    fwhm = FWHM_PER_SIGMA * cell_arcsec
    return float(sig_maj * fwhm), float(sig_min * fwhm), float(bpa)


def beam_image(bmaj_arcsec: float, bmin_arcsec: float, bpa_deg: float, cell_arcsec: float, n: int) -> np.ndarray:
    """Unit-peak Gaussian beam on an (n, n) grid centred at (n//2, n//2): what `fit_beam` returns
    drawn back (its major axis bpa east of north; x to the west, y to the north)."""
    c = n // 2
    yy, xx = np.mgrid[0:n, 0:n] - c
    pa = np.deg2rad(bpa_deg)
    along = -xx * np.sin(pa) + yy * np.cos(pa)  # on the major axis (x grows to the west)
    across = xx * np.cos(pa) + yy * np.sin(pa)
    sig_maj, sig_min = (b / cell_arcsec / FWHM_PER_SIGMA for b in (bmaj_arcsec, bmin_arcsec))
    return np.exp(-0.5 * ((along / sig_maj) ** 2 + (across / sig_min) ** 2)).astype(np.float32)


def pad_size(size: int, support: tuple[int, int]) -> int:
    """Smallest fast FFT size that convolves emission in [lo, hi) onto a size-pixel image without wrap."""
    lo, hi = support
    reach = max(hi - 1, size - 1 - lo)  # largest pixel offset between emission and image
    return _fast_size(max(size, 2 * reach + 1))


def build_instrument(obs: ObservationConfig, size: int, freqs_hz: np.ndarray,
                     support: tuple[int, int] | None = None) -> Instrument:  # fmt: skip
    """Grid the uv coverage of `obs` for a (size x size) field; cached per set-up.

    support: pixel range [lo, hi) (both axes) outside which the sky is zero; default the field.
    """
    lo, hi = support if support is not None else (0, size)
    if not 0 <= lo < hi <= size:
        raise ValueError(f"support [{lo}, {hi}) is not inside a field of {size} pixels")
    return _build_instrument(obs, size, tuple(float(f) for f in freqs_hz), (int(lo), int(hi)))


def _grid_index(u_m: np.ndarray, v_m: np.ndarray, scale: float, n: int, cell_rad: float) -> np.ndarray:
    """Flat index of each visibility's nearest cell on an (n, n) grid; u negated (RA to the left)."""
    kx = np.rint(-u_m * scale * n * cell_rad).astype(np.int64) % n
    ky = np.rint(v_m * scale * n * cell_rad).astype(np.int64) % n
    return ky * n + kx


PSF_OVERSAMPLE = 2  # the PSF is gridded on a uv grid this much finer than the convolution's


def _weight_grid(u_m, v_m, w, scale: float, n_pad: int, cell_rad: float) -> np.ndarray:
    """Half-plane weights (n_pad, n_pad//2+1) whose irfft2 is the PSF (peak 1) at offsets below n_pad/2.

    The PSF is gridded (nearest cell) on a grid PSF_OVERSAMPLE times larger, whose finer uv cells
    move each visibility less, and truncated to the offsets the padded convolution uses: the
    same FFT cost per cube, half the gridding phase error at every offset.
    """
    big = _fast_size(PSF_OVERSAMPLE * n_pad)
    idx = _grid_index(u_m, v_m, scale, big, cell_rad)
    grid = np.bincount(idx, weights=w, minlength=big * big).reshape(big, big)
    half = (grid + _hermitian_flip(grid))[:, : big // 2 + 1] * (big**2 / (2.0 * w.sum()))
    psf = np.fft.irfft2(half, s=(big, big))
    offsets = np.arange(n_pad)
    offsets = np.where(offsets < (n_pad + 1) // 2, offsets, offsets - n_pad) % big  # signed, circular
    return np.fft.rfft2(psf[np.ix_(offsets, offsets)]).real.astype(np.float32)


def _noise_layout(var_h: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent cells of an rfft half-plane (size, size//2+1), and the cells of the
    self-conjugate columns (kx = 0, size/2) that are the conjugates of others:
    H(0, -ky) = conj H(0, ky). Self-conjugate cells (never sampled in practice) stay empty."""
    half = size // 2 + 1
    sampled = (var_h > 0).any(axis=0)  # (size, half)
    mirror_of = {}
    for col in [0] + ([size // 2] if size % 2 == 0 else []):
        for ky in range(size):
            partner = (-ky) % size
            if partner == ky:
                sampled[ky, col] = False  # self-conjugate: never sampled in practice
            elif ky > partner:
                if sampled[ky, col] or sampled[partner, col]:
                    mirror_of[ky * half + col] = partner * half + col
                    sampled[partner, col] = True
                sampled[ky, col] = False
    independent = np.flatnonzero(sampled.ravel())
    position = {cell: i for i, cell in enumerate(independent)}
    mirror = np.array(sorted(mirror_of), dtype=np.int64)
    source = np.array([position[mirror_of[m]] for m in mirror], dtype=np.int64)
    return independent, mirror, source


@functools.lru_cache(maxsize=4)
def _build_instrument(obs: ObservationConfig, size: int, freqs: tuple[float, ...],
                      support: tuple[int, int]) -> Instrument:  # fmt: skip
    freqs_hz = np.asarray(freqs)
    array = load_configuration(obs.antenna_config)
    uvw = uvw_tracks_m(array, dec_deg=obs.dec_deg, total_time_s=obs.total_time_s, integration_s=obs.integration_s)
    n_bl = uvw.shape[1]
    u_m, v_m = uvw[..., 0].ravel(), uvw[..., 1].ravel()
    elev = np.repeat(elevation_deg(obs.dec_deg, hour_angles_rad(obs.total_time_s, obs.integration_s)), n_bl)
    dish = float(np.median(array.diameter_m))

    n_pad = pad_size(size, support)
    n_half = n_pad // 2 + 1
    nz = len(freqs_hz)
    weight_grid = np.empty((nz, n_pad, n_half), np.float32)
    var_h = np.empty((nz, n_pad, n_half))
    thermal_rms = np.empty(nz)
    cell_rad = obs.cell_arcsec * ARCSEC
    for z, freq in enumerate(freqs_hz):
        scale = freq / SPEED_OF_LIGHT_M_S
        sigma = visibility_sigma_jy(freq, pwv_mm=obs.pwv_mm, elevation_deg=elev,
                                    channel_width_hz=obs.channel_width_hz, integration_s=obs.integration_s,
                                    dish_diameter_m=dish) / np.sqrt(2.0)  # Stokes I of XX, YY  # fmt: skip
        # weighting density on the image-size grid (as tclean), so weights do not depend on n_pad
        coarse = _grid_index(u_m, v_m, scale, size, cell_rad)
        counts = np.bincount(coarse, minlength=size * size).reshape(size, size).astype(np.float64)
        w = _imaging_weights((counts + _hermitian_flip(counts)).ravel(), coarse, obs)
        sum_w = w.sum()
        weight_grid[z] = _weight_grid(u_m, v_m, w, scale, n_pad, cell_rad)
        fine = _grid_index(u_m, v_m, scale, n_pad, cell_rad)
        # noise: G(k) = sum of w n over a cell, var s(k)^2 = sum w^2 sigma^2; the image is the
        # irfft2 of the Hermitian part H(k) = (G(k) + conj G(-k)) / 2 times n_pad^2 / sum_w
        s2 = np.bincount(fine, weights=(w * sigma) ** 2, minlength=n_pad * n_pad).reshape(n_pad, n_pad)
        var_h[z] = ((s2 + _hermitian_flip(s2)) / 4.0)[:, :n_half] * (n_pad**2 / sum_w) ** 2
        thermal_rms[z] = np.sqrt(np.sum((w * sigma) ** 2)) / sum_w

    independent, mirror, source = _noise_layout(var_h, n_pad)
    noise_std = np.sqrt(var_h.reshape(nz, -1)[:, independent]).astype(np.float32)
    instrument = Instrument(
        obs=obs,
        size=size,
        freqs_hz=freqs_hz,
        support=support,
        n_pad=n_pad,
        weight_grid=jnp.asarray(weight_grid),
        noise_index=jnp.asarray(independent, dtype=jnp.int32),
        noise_std=jnp.asarray(noise_std),
        mirror_index=jnp.asarray(mirror, dtype=jnp.int32),
        mirror_source=jnp.asarray(source, dtype=jnp.int32),
        thermal_rms=thermal_rms,
        primary_beam=jnp.asarray(primary_beam(size, obs.cell_arcsec, freqs_hz, dish)),
        centred_psf=_psf(jnp.asarray(weight_grid), n_pad, size, (size // 2, size // 2)),
        beams=np.zeros((nz, 3)),
    )
    psf = instrument.psf()
    c, h = size // 2, min(size // 2, 32)
    beams = np.array([fit_beam(p[c - h : c + h + 1, c - h : c + h + 1], obs.cell_arcsec) for p in psf])
    object.__setattr__(instrument, "beams", beams)
    return instrument
