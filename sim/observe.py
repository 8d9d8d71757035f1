"""The fast backend: a native interferometer in JAX that turns sky-model cubes into dirty cubes.

With an `Instrument` (sim.instrument) for the set-up, observing a cube is one jit-compiled FFT
convolution per channel plus correlated noise drawn in the uv domain:

    dirty_z = irfft2( W_z * rfft2( PB_z * sky_z ) )      (padded: no wrap-around)
    noise_z = irfft2( N_z ),  N_z ~ complex Gaussian on the sampled uv cells

Both share one inverse transform per channel. The peak that sets the noise level of the `snr`
and `paper` modes is a dot product of the sky with the PSF centred on the reference pixel,
computed first. The `paper` mode then adds uncorrelated white noise in the image domain (sec. 3):

    white_rms = sqrt(max(0, (peak / target_snr)^2 - thermal_rms^2))
On a CPU, channel chunks run in threads (XLA runs one FFT on about one core); noise keys are per
channel, so the result does not depend on the chunking.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sim.instrument import Instrument


def _forward(sky: jax.Array, primary_beam: jax.Array, weight_grid: jax.Array, n_pad: int) -> jax.Array:
    """W * rfft2(PB * sky) on the padded half-plane, (nz, n_pad, n_pad//2+1); zero rows of the
    padded sky are skipped by transforming x first."""
    spec = jnp.fft.rfft(sky * primary_beam, n=n_pad, axis=2)
    return jnp.fft.fft(spec, n=n_pad, axis=1) * weight_grid


def _inverse(spec: jax.Array, n_pad: int, size: int) -> jax.Array:
    """irfft2 of a half-plane spectrum, computing only the (size, size) corner that is kept."""
    rows = jnp.fft.ifft(spec, axis=1)[:, :size, :]
    return jnp.fft.irfft(rows, n=n_pad, axis=2)[:, :, :size]


def channel_keys(seed: int, channels: int) -> jax.Array:
    """One noise key per channel, so results do not depend on how channels are batched."""
    return jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(seed), jnp.arange(channels))


def _add_noise(spec, scale, keys, noise_index, noise_std, mirror_index, mirror_source):
    """spec + scale * (Hermitian thermal-noise spectrum), scattered in place on the sampled cells
    of the padded half-plane; also returns the noise's image-domain mean square at unit scale."""
    nz, n_pad, half = spec.shape
    k = noise_std.shape[1]
    g = jax.vmap(lambda key: jax.random.normal(key, (k, 2), dtype=jnp.float32))(keys)
    vals = (g[..., 0] + 1j * g[..., 1]) * noise_std
    flat = spec.reshape(nz, n_pad * half).at[:, noise_index].add(scale * vals)
    flat = flat.at[:, mirror_index].add(scale * jnp.conj(vals[:, mirror_source]))
    # Parseval: every independent cell has one conjugate partner in the full plane
    mean_square = 2.0 * jnp.sum(jnp.abs(vals) ** 2) / (nz * float(n_pad) ** 4)
    return flat.reshape(nz, n_pad, half), mean_square


@functools.partial(jax.jit, static_argnames=("n_pad", "size"))
def thermal_noise(keys: jax.Array, noise_index: jax.Array, noise_std: jax.Array, mirror_index: jax.Array,
                  mirror_source: jax.Array, *, n_pad: int, size: int) -> jax.Array:  # fmt: skip
    """Thermal noise alone (nz, size, size) in Jy/beam, correlated like the PSF; a key per channel."""
    empty = jnp.zeros((noise_std.shape[0], n_pad, n_pad // 2 + 1), jnp.complex64)
    grid, _ = _add_noise(empty, 1.0, keys, noise_index, noise_std, mirror_index, mirror_source)
    return _inverse(grid, n_pad, size)


def white_keys(keys: jax.Array) -> jax.Array:
    """The white-noise key of each channel, derived from its thermal-noise key."""
    return jax.vmap(jax.random.fold_in, (0, None))(keys, 1)


@functools.partial(jax.jit, static_argnames=("size",))
def white_noise(keys: jax.Array, *, size: int) -> jax.Array:
    """Unit-rms uncorrelated Gaussian noise (nz, size, size) from the channels' thermal keys."""
    return jax.vmap(lambda k: jax.random.normal(k, (size, size), dtype=jnp.float32))(white_keys(keys))


def white_rms(peak, target_snr, thermal_rms):
    """The paper mode's white-noise rms: what the total rms peak / target_snr leaves over thermal."""
    return jnp.sqrt(jnp.maximum(0.0, (peak / target_snr) ** 2 - thermal_rms**2))


def noise_args(ins: "Instrument", keys: jax.Array, channels: slice = slice(None)) -> tuple:
    """The noise inputs of `thermal_noise` for some channels of an instrument."""
    return keys[channels], ins.noise_index, ins.noise_std[channels], ins.mirror_index, ins.mirror_source


def channel_chunks(channels: int, threads: int | None = None) -> list[slice]:
    """Contiguous channel ranges, one per thread: on a CPU all cores by default (XLA runs one FFT
    on about one core, so independent channels go to threads), one range on an accelerator."""
    if threads is None:
        threads = (os.cpu_count() or 1) if jax.default_backend() == "cpu" else 1
    bounds = np.linspace(0, channels, max(1, min(threads, channels)) + 1).astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass
class Observation:
    dirty: np.ndarray  # (nz, n, n) float32, Jy/beam
    noise_rms: float  # rms of all the noise added (thermal over the padded field by Parseval), Jy/beam
    noise_scale: float  # factor applied to the thermal noise (1 for thermal and paper, >=1 for snr)
    signal_peak: float  # peak over channels of the noiseless dirty cube at the reference pixel
    white_rms: float = 0.0  # rms of the image-domain white noise (paper mode), Jy/beam


@jax.jit
def _peak(sky: jax.Array, pb: jax.Array, psf_at_ref: jax.Array) -> jax.Array:
    """Largest noiseless dirty value at the reference pixel over channels: sum_q sky PB PSF(ref - q)."""
    return jnp.max(jnp.einsum("zyx,zyx->z", sky * pb, psf_at_ref))


def _noise_scale(mode: str, peak, target_snr, expected_rms):
    return jnp.maximum(1.0, peak / (target_snr * expected_rms)) if mode == "snr" else jnp.float32(1.0)


@functools.partial(jax.jit, static_argnames=("n_pad", "with_noise", "channels"))
def _observe_chunk(sky, pb, weight_grid, scale, args, *, n_pad: int, with_noise: bool,
                   channels: tuple[int, int] | None = None):  # fmt: skip
    """Dirty channels (signal + scale * thermal noise) and the noise's mean square (unit scale);
    with `channels` = (start, stop), only those channels of the full-cube inputs."""
    if channels is not None:
        sky, pb, weight_grid = (x[channels[0] : channels[1]] for x in (sky, pb, weight_grid))
        keys, idx, std, m_idx, m_src = args
        args = (keys[channels[0] : channels[1]], idx, std[channels[0] : channels[1]], m_idx, m_src)
    spec = _forward(sky, pb, weight_grid, n_pad)
    if not with_noise:
        return _inverse(spec, n_pad, sky.shape[-1]), jnp.float32(0.0)
    spec, mean_square = _add_noise(spec, scale, *args)
    return _inverse(spec, n_pad, sky.shape[-1]), mean_square


@functools.partial(jax.jit, static_argnames=("n_pad", "mode"))
def _observe_fused(sky, keys, target_snr, psf_at_ref, pb, weight_grid, noise_index, noise_std, mirror_index,
                   mirror_source, expected_rms, *, n_pad: int, mode: str):  # fmt: skip
    """The whole observation of one cube in one XLA program (GPU path, and vmapped batches)."""
    peak = _peak(sky, pb, psf_at_ref)
    scale = _noise_scale(mode, peak, target_snr, expected_rms)
    args = (keys, noise_index, noise_std, mirror_index, mirror_source)
    dirty, mean_square = _observe_chunk(sky, pb, weight_grid, scale, args, n_pad=n_pad, with_noise=mode != "none")
    rms, white = scale * jnp.sqrt(mean_square), jnp.float32(0.0)
    if mode == "paper":
        white = white_rms(peak, target_snr, rms)
        dirty = dirty + white * white_noise(keys, size=sky.shape[-1])
        rms = jnp.sqrt(rms**2 + white**2)
    return dirty, rms, jnp.where(mode == "none", 0.0, scale), peak, white


def _check(sky: np.ndarray, ins: Instrument) -> None:
    nz, ny, nx = sky.shape
    if (ny, nx) != (ins.size, ins.size) or nz != ins.channels:
        raise ValueError(f"sky cube {sky.shape} does not match the instrument "
                         f"({ins.channels}, {ins.size}, {ins.size})")  # fmt: skip
    lo, hi = ins.support
    if (lo, hi) != (0, ins.size):
        footprint = np.abs(sky).max(axis=0) > 0
        rows, cols = np.flatnonzero(footprint.any(axis=1)), np.flatnonzero(footprint.any(axis=0))
        if rows.size and (min(rows[0], cols[0]) < lo or max(rows[-1], cols[-1]) >= hi):
            raise ValueError(f"the sky has emission outside the instrument's support [{lo}, {hi})")


def observe(
    sky_jy_per_px: np.ndarray | jax.Array,
    instrument: Instrument,
    *,
    noise: str = "thermal",
    seed: int = 0,
    target_snr: float | None = None,
    ref_pixel: tuple[int, int] | None = None,
    threads: int | None = None,
) -> Observation:
    """Observe a sky cube (nz, n, n) in Jy/pixel with the fast backend (numpy or JAX array;
    a JAX array avoids a host-to-device copy).

    noise: "none", "thermal", "snr" (thermal noise scaled up, never down, so that the
    peak at `ref_pixel` (y, x; default the field centre) over the noise rms is `target_snr`) or
    "paper" (thermal noise plus image-domain white noise for the same total rms; no white noise
    where the thermal noise alone is more).
    threads: on a CPU, channels are split over this many threads (default: all cores); the
    result does not depend on it.
    """
    if noise not in ("none", "thermal", "snr", "paper"):
        raise ValueError(f"noise must be none, thermal, snr or paper, got {noise!r}")
    if noise in ("snr", "paper") and (target_snr is None or target_snr <= 0):
        raise ValueError(f"noise={noise!r} needs a positive target_snr")
    if isinstance(sky_jy_per_px, jax.Array):
        sky_dev = sky_jy_per_px.astype(jnp.float32)
        sky = np.asarray(sky_dev)  # a view on a CPU
    else:
        sky = np.asarray(sky_jy_per_px, np.float32)
        sky_dev = jnp.asarray(sky)
    ins = instrument
    _check(sky, ins)
    psf_at_ref = ins.psf_at(ref_pixel if ref_pixel is not None else (ins.size // 2, ins.size // 2))
    keys = channel_keys(seed, ins.channels)
    snr, expected = jnp.float32(target_snr or 1.0), jnp.float32(ins.thermal_rms.mean())
    chunks = channel_chunks(ins.channels, threads)
    if len(chunks) == 1:
        dirty, rms, scale, peak, white = _observe_fused(
            sky_dev, keys, snr, psf_at_ref, ins.primary_beam, ins.weight_grid, ins.noise_index,
            ins.noise_std, ins.mirror_index, ins.mirror_source, expected, n_pad=ins.n_pad, mode=noise)  # fmt: skip
        return Observation(np.asarray(dirty), float(rms), float(scale), float(peak), float(white))

    # CPU: XLA runs one FFT on about one core, so independent channel chunks go to threads
    peak = float(_peak(sky_dev, ins.primary_beam, psf_at_ref))
    scale = jnp.float32(_noise_scale(noise, peak, snr, expected))

    dirty = np.empty(sky.shape, np.float32)

    def run(c: slice) -> float:
        part, mean_square = _observe_chunk(sky_dev, ins.primary_beam, ins.weight_grid, scale,
                                           noise_args(ins, keys), n_pad=ins.n_pad,
                                           with_noise=noise != "none", channels=(c.start, c.stop))  # fmt: skip
        dirty[c] = np.asarray(part)
        return float(mean_square) * (c.stop - c.start)

    with ThreadPoolExecutor(len(chunks)) as pool:
        parts = list(pool.map(run, chunks))
    if noise == "none":
        return Observation(dirty, 0.0, 0.0, peak)
    rms = float(scale) * np.sqrt(sum(parts) / ins.channels)
    white = 0.0
    if noise == "paper":
        white = float(white_rms(peak, snr, rms))
        dirty += white * np.asarray(white_noise(keys, size=ins.size))
        rms = float(np.sqrt(rms**2 + white**2))
    return Observation(dirty, float(rms), float(scale), peak, white)


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
    ins, b = instrument, skies.shape[0]
    snrs = jnp.ones(b, jnp.float32) if target_snrs is None else jnp.asarray(target_snrs, jnp.float32)
    keys = jnp.stack([channel_keys(int(s), ins.channels) for s in seeds])
    fn = jax.vmap(functools.partial(_observe_fused, n_pad=ins.n_pad, mode=noise),
                  in_axes=(0, 0, 0) + (None,) * 8)  # fmt: skip
    dirty, rms, _, _, _ = fn(jnp.asarray(skies, jnp.float32), keys, snrs, ins.centred_psf, ins.primary_beam, ins.weight_grid,
                          ins.noise_index, ins.noise_std, ins.mirror_index, ins.mirror_source,
                          jnp.float32(ins.thermal_rms.mean()))  # fmt: skip
    return dirty, rms
