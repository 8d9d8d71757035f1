"""The fast backend's cleaned and primary-beam-corrected products: what ``tclean`` makes with
``niter > 0`` and ``pbcor``, from a dirty cube of `sim.observe`.

Cleaning is Hogbom's (as the casa backend's ``deconvolver='hogbom'``), one channel at a time in
JAX: find the largest |residual| where the cube is imaged (PB >= pblimit with pbcor, as tclean
masks), subtract `gain` times it times the dirty beam centred there, until it falls below
``max(threshold_jy, nsigma x the residual's robust rms)`` or ``niter`` components. The dirty beam
is the instrument's own convolution kernel, the exact one the dirty cube went through, so every
minor cycle is what tclean's major cycle would make of it; the robust rms (1.4826 MAD, as
tclean's nsigma) is measured again on the residual at each of `MAJOR_CYCLES` cycles. The
components are then restored with the channel's restoring beam (`Instrument.beams`, the
Gaussian fitted to the PSF's main lobe, as tclean fits it) and the residual added back:

    image_z = components_z (*) restoring beam_z + residual_z         (Jy/beam)

With pbcor the image is divided by the primary beam and NaN where it is below pblimit.
Validated against CASA on the same sky by ``benchmarks/fidelity_vs_casa.py --product clean``.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sim.config import ObservationConfig
from sim.instrument import Instrument, beam_image
from sim.observe import channel_chunks

GAIN = 0.1  # tclean's default loop gain
MAJOR_CYCLES = 3  # the robust rms of nsigma is measured again on the residual this many times
MAD_TO_SIGMA = 1.4826
RMS_STRIDE = 3  # the robust rms samples one pixel in 9: ~14 000 of a 360 x 360 channel


class Product(NamedTuple):
    """What `make_product` returns."""

    image: np.ndarray  # (nz, n, n) float32 Jy/beam: cleaned and/or PB-corrected, NaN below pblimit
    pb: np.ndarray | None  # (nz, n, n) float32 primary beam, NaN below pblimit; with pbcor
    components: int  # CLEAN components over all channels


def dirty_beams(ins: Instrument) -> jax.Array:
    """(nz, 2n, 2n) dirty beam at every offset between two pixels of the field, peak 1 at (n, n):
    entry [n + dy, n + dx] is the kernel of the padded convolution at offset (dy, dx)."""
    n, n_pad = ins.size, ins.n_pad
    kernel = jnp.fft.irfft2(ins.weight_grid, s=(n_pad, n_pad))
    offsets = (np.arange(2 * n) - n) % n_pad  # circular, as the convolution is
    return kernel[:, offsets][:, :, offsets]


def _robust_rms(res: jax.Array, mask: jax.Array) -> jax.Array:
    """1.4826 MAD of the residual inside the mask, on every RMS_STRIDE-th pixel along both axes
    (a sort of the whole image, three times a channel, would cost more than the cleaning)."""
    values = jnp.where(mask, res, jnp.nan)[::RMS_STRIDE, ::RMS_STRIDE]
    median = jnp.nanmedian(values)
    return MAD_TO_SIGMA * jnp.nanmedian(jnp.abs(values - median))


def _hogbom_channel(dirty: jax.Array, beam: jax.Array, mask: jax.Array, threshold: jax.Array,
                    nsigma: jax.Array, *, gain: float, niter: int) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    """(components, residual, count) of one channel."""
    n = dirty.shape[-1]

    def peak(res):
        """Where |res| is largest inside the mask: the row of the largest row maximum, then its
        column (two short argmaxes: XLA's argmax over a whole image is several times slower)."""
        a = jnp.where(mask, jnp.abs(res), -1.0)
        y = jnp.argmax(jnp.max(a, axis=1))
        return y, jnp.argmax(a[y])

    def minor(state):
        res, model, count, y, x, _ = state
        value = gain * res[y, x]
        res = res - value * jax.lax.dynamic_slice(beam, (n - y, n - x), (n, n))
        model = model.at[y, x].add(value)
        y, x = peak(res)
        return res, model, count + 1, y, x, jnp.abs(res[y, x])

    def major(carry, _):
        res, model, count = carry
        stop = jnp.maximum(threshold, nsigma * _robust_rms(res, mask))
        y, x = peak(res)
        state = (res, model, count, y, x, jnp.abs(res[y, x]))
        state = jax.lax.while_loop(lambda s: (s[5] > stop) & (s[2] < niter), minor, state)
        return state[:3], None

    start = (dirty, jnp.zeros_like(dirty), jnp.int32(0))
    (res, model, count), _ = jax.lax.scan(major, start, None, length=MAJOR_CYCLES)
    return model, res, count


@functools.partial(jax.jit, static_argnames=("gain", "niter"))
def hogbom(dirty: jax.Array, beams: jax.Array, mask: jax.Array, threshold: float, nsigma: float, *,
           gain: float = GAIN, niter: int) -> tuple[jax.Array, jax.Array, jax.Array]:  # fmt: skip
    """Hogbom CLEAN of each channel of `dirty` (nz, n, n) with its dirty beam (`dirty_beams`),
    only where `mask` (nz, n, n) is true; returns (components Jy/pixel, residual, count per channel)."""
    one = functools.partial(_hogbom_channel, gain=gain, niter=niter)
    return jax.lax.map(lambda a: one(*a, jnp.float32(threshold), jnp.float32(nsigma)), (dirty, beams, mask))


@functools.partial(jax.jit, static_argnames=("size",))
def restore(components: jax.Array, restoring: jax.Array, *, size: int) -> jax.Array:
    """components (nz, n, n) convolved with unit-peak restoring beams (nz, 2n, 2n) centred at (n, n)."""
    s = (2 * size, 2 * size)
    kernel = jnp.fft.ifftshift(restoring, axes=(1, 2))  # peak to (0, 0): circular offsets
    out = jnp.fft.irfft2(jnp.fft.rfft2(components, s=s) * jnp.fft.rfft2(kernel, s=s), s=s)
    return out[:, :size, :size]


def make_product(dirty: np.ndarray, ins: Instrument, obs: ObservationConfig, *,
                 threads: int | None = None) -> Product:  # fmt: skip
    """The product `obs` asks for (``niter``, ``threshold_jy``, ``nsigma``, ``pbcor``, ``pblimit``)
    from a dirty cube observed with `ins`. On a CPU, channel chunks run in threads."""
    image, count = np.array(dirty, np.float32), 0
    pb = np.asarray(ins.primary_beam)
    imaged = pb >= obs.pblimit if obs.pbcor else np.ones(pb.shape, bool)
    if obs.niter > 0:
        beams = dirty_beams(ins)
        size = ins.size
        restoring = jnp.asarray(np.stack([beam_image(*b, obs.cell_arcsec, 2 * size) for b in ins.beams]))
        def run(chunk: slice) -> int:
            a, b = chunk.start, chunk.stop
            comps, res, n = hogbom(jnp.asarray(image[a:b]), beams[a:b], jnp.asarray(imaged[a:b]),
                                   obs.threshold_jy, obs.nsigma, niter=obs.niter)  # fmt: skip
            image[a:b] = np.asarray(restore(comps, restoring[a:b], size=size) + res)
            return int(n.sum())

        chunks = channel_chunks(ins.channels, threads)
        with ThreadPoolExecutor(len(chunks)) as pool:
            count = sum(pool.map(run, chunks))
    if not obs.pbcor:
        return Product(image, None, count)
    blanked = np.where(imaged, pb, np.nan).astype(np.float32)
    return Product((image / blanked).astype(np.float32), blanked, count)
