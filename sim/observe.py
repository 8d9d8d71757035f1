"""The fast backend: a native interferometer in JAX that turns sky-model cubes into dirty cubes.

Everything that depends only on the observing set-up lives in an `Instrument`, built once per
(configuration, field, channels) and cached: uv tracks at ALMA's latitude, per-channel uv
scaling with frequency, imaging weights gridded on a padded uv grid, the primary beam, the
thermal-noise spectrum and the fitted restoring beams. Observing a cube is then one jit-compiled
FFT convolution per channel plus correlated noise drawn in the uv domain:

    dirty_z = irfft2( W_z * rfft2( PB_z * sky_z ) )      (padded, so no wrap-around)
    noise_z = irfft2( N_z ),  N_z ~ complex Gaussian on the sampled uv cells

Sign convention: RA increases to the left (CDELT1 < 0), so a baseline's u is negated on the
grid; otherwise the PSF comes out mirrored.
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
    n_pad: int
    weight_grid: jax.Array  # (nz, n_pad, n_pad//2+1) float32; irfft2 of it is the PSF, peak 1
    noise_index: jax.Array  # (K,) int32 flat indices of sampled cells of the (size, size//2+1) grid
    noise_std: jax.Array  # (nz, K) float32, per-component std there, image units (Jy/beam)
    thermal_rms: np.ndarray  # (nz,) expected thermal-noise rms per channel, Jy/beam
    primary_beam: jax.Array  # (nz, size, size) float32
    beams: np.ndarray  # (nz, 3): bmaj, bmin (arcsec), bpa (deg, east of north)

    @property
    def channels(self) -> int:
        return len(self.freqs_hz)

    def psf(self) -> np.ndarray:
        """(nz, size, size) dirty beam, peak 1 at pixel (size//2, size//2)."""
        return np.asarray(_psf(self.weight_grid, self.n_pad, self.size))


@functools.partial(jax.jit, static_argnames=("n_pad", "size"))
def _psf(weight_grid: jax.Array, n_pad: int, size: int) -> jax.Array:
    psf = jnp.fft.irfft2(weight_grid, s=(n_pad, n_pad))
    c = size // 2
    psf = jnp.roll(psf, (c, c), axis=(1, 2))
    return psf[:, :size, :size]


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
    fwhm = 2.35482 * cell_arcsec
    return float(sig_maj * fwhm), float(sig_min * fwhm), float(bpa)


def build_instrument(obs: ObservationConfig, size: int, freqs_hz: np.ndarray) -> Instrument:
    """Grid the uv coverage of `obs` for a (size x size) field; cached per set-up."""
    return _build_instrument(obs, size, tuple(float(f) for f in freqs_hz))


@functools.lru_cache(maxsize=4)
def _build_instrument(obs: ObservationConfig, size: int, freqs: tuple[float, ...]) -> Instrument:
    freqs_hz = np.asarray(freqs)
    array = load_configuration(obs.antenna_config)
    uvw = uvw_tracks_m(array, dec_deg=obs.dec_deg, total_time_s=obs.total_time_s, integration_s=obs.integration_s)
    n_times, n_bl = uvw.shape[:2]
    u_m, v_m = uvw[..., 0].ravel(), uvw[..., 1].ravel()
    elev = np.repeat(elevation_deg(obs.dec_deg, hour_angles_rad(obs.total_time_s, obs.integration_s)), n_bl)
    dish = float(np.median(array.diameter_m))

    n_pad = _fast_size(int(np.ceil(obs.padding * size)))
    n_half = n_pad // 2 + 1
    c_half = size // 2 + 1
    nz = len(freqs_hz)
    weight_grid = np.empty((nz, n_pad, n_half), np.float32)
    noise_var = np.empty((nz, size, c_half))
    thermal_rms = np.empty(nz)
    cell_rad = obs.cell_arcsec * ARCSEC
    for z, freq in enumerate(freqs_hz):
        scale = freq / SPEED_OF_LIGHT_M_S
        sigma = visibility_sigma_jy(freq, pwv_mm=obs.pwv_mm, elevation_deg=elev,
                                    channel_width_hz=obs.channel_width_hz, integration_s=obs.integration_s,
                                    dish_diameter_m=dish) / np.sqrt(2.0)  # Stokes I of XX, YY  # fmt: skip
        # fine (padded) grid: nearest cell, u negated (RA increases to the left)
        kx = np.rint(-u_m * scale * n_pad * cell_rad).astype(np.int64) % n_pad
        ky = np.rint(v_m * scale * n_pad * cell_rad).astype(np.int64) % n_pad
        fine = ky * n_pad + kx
        counts = np.bincount(fine, minlength=n_pad * n_pad).reshape(n_pad, n_pad).astype(np.float64)
        counts_h = counts + _hermitian_flip(counts)
        w = _imaging_weights(counts_h.ravel(), fine, obs)
        sum_w = w.sum()
        grid = np.bincount(fine, weights=w, minlength=n_pad * n_pad).reshape(n_pad, n_pad)
        grid_h = grid + _hermitian_flip(grid)
        weight_grid[z] = (grid_h[:, :n_half] * n_pad**2 / (2.0 * sum_w)).astype(np.float32)
        # coarse (image-size) grid for the noise: s(k)^2 = sum of w^2 sigma^2 over the cell
        cx = np.rint(-u_m * scale * size * cell_rad).astype(np.int64) % size
        cy = np.rint(v_m * scale * size * cell_rad).astype(np.int64) % size
        s2 = np.bincount(cy * size + cx, weights=(w * sigma) ** 2, minlength=size * size).reshape(size, size)
        s2_flip = _hermitian_flip(s2)
        var_h = (s2 + s2_flip) / 4.0  # Hermitian part H(k) = (G(k) + conj G(-k)) / 2
        var_h[:, 0] = s2[:, 0]  # self-conjugate columns: draw G, symmetrise on the fly
        if size % 2 == 0:
            var_h[:, size // 2] = s2[:, size // 2]
        noise_var[z] = var_h[:, :c_half] * (size**2 / sum_w) ** 2
        thermal_rms[z] = np.sqrt(np.sum((w * sigma) ** 2)) / sum_w

    sampled = np.flatnonzero((noise_var > 0).any(axis=0).ravel())
    noise_std = np.sqrt(noise_var.reshape(nz, -1)[:, sampled]).astype(np.float32)
    instrument = Instrument(
        obs=obs,
        size=size,
        freqs_hz=freqs_hz,
        n_pad=n_pad,
        weight_grid=jnp.asarray(weight_grid),
        noise_index=jnp.asarray(sampled, dtype=jnp.int32),
        noise_std=jnp.asarray(noise_std),
        thermal_rms=thermal_rms,
        primary_beam=jnp.asarray(primary_beam(size, obs.cell_arcsec, freqs_hz, dish)),
        beams=np.zeros((nz, 3)),
    )
    psf = np.asarray(_psf(instrument.weight_grid, n_pad, size))
    c, h = size // 2, min(size // 2, 32)
    beams = np.array([fit_beam(p[c - h : c + h + 1, c - h : c + h + 1], obs.cell_arcsec) for p in psf])
    object.__setattr__(instrument, "beams", beams)
    return instrument


@functools.partial(jax.jit, static_argnames=("n_pad",))
def dirty_signal(sky: jax.Array, primary_beam: jax.Array, weight_grid: jax.Array, n_pad: int) -> jax.Array:
    """Noiseless dirty cube (nz, n, n) in Jy/beam from a sky cube (nz, n, n) in Jy/pixel.

    The padded grid (n_pad >= 2n - 1) makes the circular convolution equal the linear one.
    Zero rows of the padded sky are skipped by transforming x first, and only the n output rows
    are inverse-transformed along x.
    """
    n = sky.shape[-1]
    spec = jnp.fft.rfft(sky * primary_beam, n=n_pad, axis=2)
    spec = jnp.fft.fft(spec, n=n_pad, axis=1) * weight_grid
    rows = jnp.fft.ifft(spec, axis=1)[:, :n, :]
    return jnp.fft.irfft(rows, n=n_pad, axis=2)[:, :, :n]


@functools.partial(jax.jit, static_argnames=("size",))
def thermal_noise(key: jax.Array, noise_index: jax.Array, noise_std: jax.Array, size: int) -> jax.Array:
    """One realisation of the thermal noise cube (nz, size, size), Jy/beam, correlated like the PSF."""
    nz, k = noise_std.shape
    half = size // 2 + 1
    g = jax.random.normal(key, (nz, k, 2), dtype=jnp.float32)
    vals = (g[..., 0] + 1j * g[..., 1]) * noise_std
    grid = jnp.zeros((nz, size * half), jnp.complex64).at[:, noise_index].set(vals).reshape(nz, size, half)
    flip = lambda col: jnp.roll(col[:, ::-1], 1, axis=1)  # noqa: E731  col[-ky]
    cols = [0] + ([size // 2] if size % 2 == 0 else [])
    for col in cols:
        g_col = grid[:, :, col]
        grid = grid.at[:, :, col].set(0.5 * (g_col + jnp.conj(flip(g_col))))
    return jnp.fft.irfft2(grid, s=(size, size))


@dataclass
class Observation:
    dirty: np.ndarray  # (nz, n, n) float32, Jy/beam
    noise_rms: float  # rms of the noise actually added, Jy/beam (0 without noise)
    noise_scale: float  # factor applied to the thermal noise (1 for thermal, >=1 for snr)
    signal_peak: float  # peak of the noiseless dirty cube at the reference pixel, Jy/beam


@functools.partial(jax.jit, static_argnames=("n_pad", "mode"))
def _observe(sky, key, target_snr, ref_pixel, primary_beam, weight_grid, noise_index, noise_std,
             expected_rms, *, n_pad: int, mode: str):  # fmt: skip
    signal = dirty_signal(sky, primary_beam, weight_grid, n_pad)
    peak = jnp.max(signal[:, ref_pixel[0], ref_pixel[1]])
    if mode == "none":
        return signal, jnp.float32(0.0), jnp.float32(0.0), peak
    noise = thermal_noise(key, noise_index, noise_std, sky.shape[-1])
    scale = jnp.float32(1.0)
    if mode == "snr":
        scale = jnp.maximum(1.0, peak / (target_snr * expected_rms))
    noise = noise * scale
    return signal + noise, jnp.sqrt(jnp.mean(noise**2)), scale, peak


def observe(
    sky_jy_per_px: np.ndarray,
    instrument: Instrument,
    *,
    noise: str = "thermal",
    seed: int = 0,
    target_snr: float | None = None,
    ref_pixel: tuple[int, int] | None = None,
) -> Observation:
    """Observe a sky cube (nz, n, n) in Jy/pixel with the fast backend.

    noise: "none", "thermal", or "snr" (thermal noise scaled up, never down, so that the
    peak at `ref_pixel` (y, x; default the field centre) over the noise rms is `target_snr`).
    """
    nz, ny, nx = sky_jy_per_px.shape
    if (ny, nx) != (instrument.size, instrument.size) or nz != instrument.channels:
        raise ValueError(f"sky cube {sky_jy_per_px.shape} does not match the instrument "
                         f"({instrument.channels}, {instrument.size}, {instrument.size})")  # fmt: skip
    if noise not in ("none", "thermal", "snr"):
        raise ValueError(f"noise must be none, thermal or snr, got {noise!r}")
    if noise == "snr" and (target_snr is None or target_snr <= 0):
        raise ValueError("noise='snr' needs a positive target_snr")
    ref = ref_pixel if ref_pixel is not None else (instrument.size // 2, instrument.size // 2)
    dirty, rms, scale, peak = _observe(
        jnp.asarray(sky_jy_per_px, jnp.float32), jax.random.key(seed), jnp.float32(target_snr or 1.0),
        jnp.asarray(ref, jnp.int32), instrument.primary_beam, instrument.weight_grid,
        instrument.noise_index, instrument.noise_std, jnp.float32(instrument.thermal_rms.mean()),
        n_pad=instrument.n_pad, mode=noise,
    )  # fmt: skip
    return Observation(np.asarray(dirty), float(rms), float(scale), float(peak))


def observe_batch(
    skies: np.ndarray,
    instrument: Instrument,
    *,
    noise: str = "thermal",
    seeds: np.ndarray,
    target_snrs: np.ndarray | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Observe a batch of sky cubes (B, nz, n, n) in one vmapped call (for GPUs).

    Returns device arrays (dirty (B, nz, n, n), noise rms (B,)); reference pixel is the centre.
    """
    b = skies.shape[0]
    snrs = jnp.ones(b, jnp.float32) if target_snrs is None else jnp.asarray(target_snrs, jnp.float32)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    ref = jnp.asarray((instrument.size // 2, instrument.size // 2), jnp.int32)
    fn = jax.vmap(functools.partial(_observe, n_pad=instrument.n_pad, mode=noise),
                  in_axes=(0, 0, 0, None, None, None, None, None, None))  # fmt: skip
    dirty, rms, _, _ = fn(jnp.asarray(skies, jnp.float32), keys, snrs, ref, instrument.primary_beam,
                          instrument.weight_grid, instrument.noise_index, instrument.noise_std,
                          jnp.float32(instrument.thermal_rms.mean()))  # fmt: skip
    return dirty, rms
