"""A matched-filter line search over the whole cube (``search.enabled``; not in the paper).

Steps (i)–(iii) only look where Blobs Finder drew a box, and only at the lines Deep GRU found in
that box's summed spectrum: a faint source sharing a box with a brighter one, or one the
autoencoder left out, is never looked at. The search looks everywhere, for the sources Table 1
draws: a 2-D Gaussian seen through the dirty beam, times a Gaussian line.

1. The continuum of each pixel, a straight line fitted to its channels with the line's channels
   clipped (:func:`remove_continuum`), is removed.
2. The line cube is correlated with each template: a circular Gaussian of FWHM ``fwhm_px`` (unit
   norm, zero padded, not circular; the matched filter in noise whose autocorrelation is the
   beam, see :func:`_spatial_kernel`), then a Gaussian line of FWHM ``fwhm_chan``.
3. Each filtered cube is divided by its robust noise (MAD); per spatial template, the best line
   template is taken per voxel.
4. Local maxima within ± ``neighbourhood`` // 2 voxels that reach ``snr``, found at each spatial
   scale on its own (a wide template merges a close pair into one ridge, a narrow one does not),
   are the candidates: strongest first, one found at several scales kept once, with its
   template's sizes as the first guess.

The candidates are not sources yet: each is refined (:mod:`dfjax.pipeline.refine`) and must pass
the same line-SNR cut as every other detection, and one found twice is merged
(:func:`dfjax.pipeline.deblend.refine_detections`). Sidelobes of a bright source share its spectrum
and so pass a line search: they are the reason for the cut and the merging, and why candidates
come strongest first.

**The residual search** (``search.residual``): a faint source on a brighter one's flank, in
nearby channels, is no local maximum of the filtered cube — only a shoulder of the bright
source's peak — and no template separates them. Once the first sources are refined, their
models (each fitted Gaussian ⊛ the beam, times its fitted line; amplitudes by joint least
squares, :func:`source_line_model`) are subtracted from the line cube and the search is run
again on what is left (:func:`residual_search`), where the shoulder is a peak of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import fft, signal

from dfjax.maths import FWHM_PER_SIGMA, gaussian_1d, gaussian_2d, median, robust_std
from dfjax.pipeline.characterise import Morphology, model_box
from dfjax.pipeline.config import PipelineConfig
from dfjax.pipeline.focus import Detection, focused_detection

__all__ = ["RESIDUAL", "SEARCHED", "ContinuumClip", "SearchPeak", "channel_noise", "continuum_clip", "finite_cube",
           "line_cube", "line_search", "peak_detections", "remove_continuum", "residual_search", "search_peaks",
           "searched_detections", "source_line_model"]

_DEFAULTS = PipelineConfig()
SEARCHED = "searched"  # the flag of a source the line search found
RESIDUAL = "residual"  # ... and of one found on the cube with the first sources subtracted (beside SEARCHED)
NOISE_STRIDE = 2  # the noise is measured on every NOISE_STRIDE-th pixel along x and y (neighbours correlate)
SEARCH_NOISE_SAMPLES = 1 << 20  # ... and the filtered cubes' on about at most this many voxels
LINE_FILTER_BLOCK = 16  # output channels per band product of the line filter (at least its taps' width)


@dataclasses.dataclass(frozen=True)
class SearchPeak:
    """A candidate: voxel (x, y, z), the best template's FWHMs (pixels, channels), its matched-filter SNR."""

    x: int
    y: int
    z: int
    fwhm_px: float
    fwhm_chan: float
    snr: float


@dataclasses.dataclass(frozen=True)
class ContinuumClip:
    """The first pass of :func:`remove_continuum` on a cube (nz, ny, nx): the medians of each pixel's
    first and second halves of channels (``lo``, ``hi``: (ny, nx)) and the channels within the clip of
    the straight line through them (``keep``: (nz, ny, nx) bool). It does not depend on ``exclude``:
    make it once (:func:`continuum_clip`) for a cube whose continuum is fitted more than once."""

    lo: np.ndarray
    hi: np.ndarray
    keep: np.ndarray


def _minus_median_line(cube: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``cube`` (nz, ...) minus the straight line through (``lo``, ``hi``) (...) at the centres of its two
    halves of channels → a new float32 array."""
    nz = cube.shape[0]
    h = nz // 2
    z_lo, z_hi = (h - 1) / 2.0, h + (nz - h - 1) / 2.0
    z = np.arange(nz, dtype=np.float32).reshape((nz,) + (1,) * lo.ndim)
    out = (hi - lo) * (z - z_lo)  # the line, built in place: one cube-sized array in all
    out /= z_hi - z_lo
    out += lo
    return np.subtract(cube, out, out=out)


def continuum_clip(cube: np.ndarray, *, clip: float = 3.0) -> ContinuumClip:
    """The :class:`ContinuumClip` of a float32 cube (nz ≥ 4, ny, nx)."""
    h = cube.shape[0] // 2
    lo, hi = median(cube[:h], axis=0), median(cube[h:], axis=0)
    residual = _minus_median_line(cube, lo, hi)
    spread = robust_std(residual, axis=0)
    return ContinuumClip(lo=lo, hi=hi, keep=np.abs(residual, out=residual) <= clip * spread)


def remove_continuum(cube: np.ndarray, *, clip: float = 3.0, exclude: np.ndarray | None = None,
                     clipped: ContinuumClip | None = None) -> np.ndarray:  # fmt: skip
    """Cube (nz, ny, nx) minus each pixel's continuum → (nz, ny, nx) float32.

    The continuum is a straight line: first through the medians of the pixel's first and second
    halves of channels, then fitted by least squares to the channels within ``clip`` robust
    standard deviations of that first line, so that a line in the spectrum does not tilt it.
    ``exclude`` (nz, ny, nx) bool: voxels known to hold line emission, left out of the fit too.
    ``clipped``: the cube's :func:`continuum_clip` (with this ``clip``), when already made.
    """
    cube = np.asarray(cube, np.float32)
    nz = cube.shape[0]
    if nz < 4:
        return cube - median(cube, axis=0, keepdims=True)
    clipped = continuum_clip(cube, clip=clip) if clipped is None else clipped
    w = (clipped.keep if exclude is None else clipped.keep & ~exclude).astype(np.float32)
    powers = np.stack([np.ones(nz), np.arange(nz), np.arange(nz) ** 2]).astype(np.float32)  # Σz as one BLAS product
    s0, sz, szz = (powers @ w.reshape(nz, -1)).reshape(3, *cube.shape[1:])
    sy, szy = (powers[:2] @ np.multiply(w, cube, out=w).reshape(nz, -1)).reshape(2, *cube.shape[1:])
    det = s0 * szz - sz * sz
    ok = det > 0
    slope = np.where(ok, (s0 * szy - sz * sy) / np.where(ok, det, 1.0), 0.0)
    level = np.where(ok, (sy - slope * sz) / np.maximum(s0, 1.0), 0.0)
    out = np.multiply(slope, np.arange(nz, dtype=np.float32)[:, None, None], out=w)  # the fitted line, in place
    out += level
    np.subtract(cube, out, out=out)
    if not ok.all():  # too few channels kept: the first line's residual
        out[:, ~ok] = _minus_median_line(cube[:, ~ok], clipped.lo[~ok], clipped.hi[~ok])
    return out


def _spatial_kernel(fwhm_px: float) -> np.ndarray:
    """Unit-norm template: a unit-peak circular Gaussian of ``fwhm_px`` (odd square).

    Not ⊛ the beam: the noise of a dirty image has the beam as its autocorrelation, so the
    matched filter of a source G ⊛ beam in that noise is G itself (Ĝ·B̂ / B̂) — higher SNR, and
    sharper, than correlating with G ⊛ beam, which smears a faint neighbour into a bright
    source's flank."""
    gh = int(np.ceil(3.0 * fwhm_px / FWHM_PER_SIGMA))
    g = gaussian_2d((2 * gh + 1, 2 * gh + 1), gh, gh, fwhm_px, fwhm_px, 0.0)
    return g / np.sqrt((g * g).sum())


def _robust_sigma(values: np.ndarray) -> float:
    """The MAD noise of a filtered cube, on every NOISE_STRIDE-th pixel, or sparser where that leaves more than
    SEARCH_NOISE_SAMPLES voxels (a paper-size cube: every 4th; the MAD is then known to ~0.1% and costs a quarter)."""
    stride = max(NOISE_STRIDE, int(np.sqrt(values.size / SEARCH_NOISE_SAMPLES)))
    sample = values[:, ::stride, ::stride].ravel()
    return float(robust_std(sample))


def _line_filter(cube: np.ndarray, sigma: float, *, out: np.ndarray | None = None) -> np.ndarray:
    """``cube`` (nz, ny, nx) correlated along z with a unit-sum Gaussian of ``sigma`` channels, zero
    beyond the ends: scipy's ``gaussian_filter1d(mode="constant")`` (same truncation at 4σ) as band
    matrix products, which BLAS runs several times faster than the 1-D filter over every pixel. The
    band is applied in blocks of output channels, each reading only the input channels its taps
    reach (a 3-channel line touches 11 of 128). ``out``: a C-contiguous float32 array of the cube's
    shape to write into."""
    nz = cube.shape[0]
    radius = int(4.0 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    lag = np.arange(nz)[None, :] - np.arange(nz)[:, None]  # output z, input z'
    band = np.where(np.abs(lag) <= radius, taps[np.clip(lag + radius, 0, 2 * radius)], 0.0).astype(np.float32)
    flat = np.ascontiguousarray(cube).reshape(nz, -1)
    out = np.empty_like(flat) if out is None else out.reshape(nz, -1)
    block = max(LINE_FILTER_BLOCK, 2 * radius)
    for z0 in range(0, nz, block):
        z1 = min(z0 + block, nz)
        lo, hi = max(z0 - radius, 0), min(z1 + radius, nz)
        np.matmul(band[z0:z1, lo:hi], flat[lo:hi], out=out[z0:z1])
    return out.reshape(cube.shape)


def _local_maxima(values: np.ndarray, threshold: float, size: int) -> list[tuple[int, int, int]]:
    """The voxels (z, y, x) ≥ ``threshold`` that are the maximum of the ``size``³ cube around them
    (clipped at the edges): ``values == maximum_filter(values, size, mode="nearest")`` where it
    matters, checked only at the few voxels above the threshold, in C order."""
    points = np.argwhere(values >= threshold)
    if not len(points):
        return []
    lo = -(size // 2)
    upper = np.array(values.shape) - 1
    offsets = np.array(list(np.ndindex(size, size, size))) + lo
    offsets = offsets[np.argsort(np.abs(offsets).sum(axis=1), kind="stable")]  # nearest first: most fail there
    peak = values[tuple(points.T)]
    for offset in offsets:
        neighbour = np.clip(points + offset, 0, upper)
        keep = peak >= values[tuple(neighbour.T)]
        points, peak = points[keep], peak[keep]
    return [tuple(int(v) for v in p) for p in points]


def line_cube(cube: np.ndarray, *, exclude: np.ndarray | None = None, clipped: ContinuumClip | None = None
              ) -> np.ndarray:  # fmt: skip
    """The cube (nz, ny, nx), NaNs as 0, without its continuum (:func:`remove_continuum`) → float32.

    The search, its residual pass and :func:`channel_noise` all start from it: pass it to them
    (``line=``) to make it once per cube. ``exclude``: voxels of known line emission, left out of
    the continuum fit (:func:`remove_continuum`); ``clipped``: the :func:`continuum_clip` of the
    cube, NaNs as 0, when already made."""
    cube = finite_cube(cube)
    return remove_continuum(cube, exclude=exclude, clipped=clipped)


def finite_cube(cube: np.ndarray) -> np.ndarray:
    """A cube (nz, ny, nx) as float32 with NaNs as 0, as :func:`line_cube` fits it."""
    cube = np.nan_to_num(np.asarray(cube, np.float32))
    if cube.ndim != 3:
        raise ValueError(f"expected a cube (nz, ny, nx), got shape {cube.shape}")
    return cube


def channel_noise(cube: np.ndarray, *, line: np.ndarray | None = None) -> np.ndarray:
    """Each channel's pixel noise: the robust spread (MAD) of the continuum-removed cube (nz, ny, nx)
    → (nz,) float64; the sources, a small fraction of the pixels, barely move it. ``line``: the
    cube's :func:`line_cube`, when already made."""
    line = line_cube(cube) if line is None else line
    sample = line[:, ::NOISE_STRIDE, ::NOISE_STRIDE].reshape(line.shape[0], -1).astype(np.float64)
    return robust_std(sample, axis=1)


def line_search(cube: np.ndarray, config: PipelineConfig = _DEFAULTS, *, line: np.ndarray | None = None
                ) -> list[SearchPeak]:  # fmt: skip
    """Matched-filter candidates (module docstring) in a dirty cube (nz, ny, nx) → at most
    ``search.max_candidates`` peaks, strongest first. ``line``: the cube's :func:`line_cube`, when
    already made."""
    return search_peaks(line_cube(cube) if line is None else line, config)


def search_peaks(line: np.ndarray, config: PipelineConfig = _DEFAULTS) -> list[SearchPeak]:
    """Steps 2–4 of the module docstring on a continuum-free cube (nz, ny, nx), e.g. a
    :func:`line_cube` or one with a model subtracted → as :func:`line_search`."""
    s = config.search
    ny, nx = line.shape[1:]
    kernels = [_spatial_kernel(f) for f in s.fwhm_px]
    pad = max(k.shape[0] for k in kernels) // 2
    shape = (ny + 2 * pad, nx + 2 * pad)  # zero padded: a linear, not circular, correlation
    spectrum = fft.rfft2(line, s=shape, workers=-1)  # float32 in, complex64 out
    product = np.empty_like(spectrum)  # the cube-sized buffers, made once and reused at every scale
    spatial, filtered, best = (np.empty(line.shape, np.float32) for _ in range(3))
    which = np.empty(line.shape, np.int8)
    peaks = []  # (snr, z, y, x, spatial template, line template)
    for i, k in enumerate(kernels):
        h = k.shape[0] // 2
        flipped = np.zeros(shape)
        flipped[: k.shape[0], : k.shape[1]] = k[::-1, ::-1]
        flipped = np.roll(flipped, (-h, -h), axis=(0, 1))  # kernel centre at lag 0
        kernel = fft.rfft2(flipped.astype(np.float32))
        np.multiply(spectrum, kernel, out=product)
        np.copyto(spatial, fft.irfft2(product, s=shape, workers=-1, overwrite_x=True)[:, :ny, :nx])
        best.fill(-np.inf)  # this spatial scale's best line template
        which.fill(0)
        for j, fwhm_chan in enumerate(s.fwhm_chan):
            _line_filter(spatial, fwhm_chan / FWHM_PER_SIGMA, out=filtered)
            sigma = _robust_sigma(filtered)
            if not sigma > 0:
                continue
            filtered /= sigma
            which[filtered > best] = j
            np.maximum(best, filtered, out=best)
        # maxima per spatial scale: a wide template merges a close pair into one ridge, a narrow one does not
        for z, y, x in _local_maxima(best, s.snr, s.neighbourhood):
            peaks.append((float(best[z, y, x]), int(z), int(y), int(x), i, int(which[z, y, x])))
    peaks.sort(key=lambda p: -p[0])
    reach = s.neighbourhood // 2
    out: list[SearchPeak] = []
    for snr, z, y, x, i, j in peaks:  # strongest first; one found at several scales is kept once
        if len(out) == s.max_candidates:
            break
        if any(abs(o.z - z) <= reach and abs(o.y - y) <= reach and abs(o.x - x) <= reach for o in out):
            continue
        out.append(SearchPeak(x=x, y=y, z=z, fwhm_px=float(s.fwhm_px[i]), fwhm_chan=float(s.fwhm_chan[j]), snr=snr))
    return out


def source_line_model(line: np.ndarray, psf: np.ndarray, sources: Sequence[tuple[Detection, Morphology]]
                      ) -> np.ndarray:  # fmt: skip
    """The sources' line emission as a dirty cube shows it, fitted to ``line`` (nz, ny, nx; continuum
    removed) → (nz, ny, nx) float32.

    Each source is its shape's unit-peak Gaussian ⊛ ``psf`` (the beam, odd square, unit peak) times
    its line's unit-peak Gaussian (z, fwhm_z); their amplitudes are the joint least-squares fit
    over the cube, so that overlapping sources share the light they overlap in.
    """
    nz, ny, nx = line.shape
    if not sources:
        return np.zeros(line.shape, np.float32)
    images = [signal.fftconvolve(gaussian_2d((ny, nx), m.x, m.y, m.fwhm_x, m.fwhm_y, m.pa), psf, mode="same")
              for _, m in sources]  # fmt: skip
    lines = [gaussian_1d(nz, d.z, d.fwhm_z) for d, _ in sources]
    gram = np.array([[(la @ lb) * float((ia * ib).sum()) for lb, ib in zip(lines, images)]
                     for la, ia in zip(lines, images)])  # fmt: skip
    projections = np.array([la @ np.tensordot(line, ia, axes=([1, 2], [0, 1])) for la, ia in zip(lines, images)])
    amplitudes = np.linalg.lstsq(gram, projections, rcond=None)[0]
    model = np.zeros(line.shape, np.float64)
    for a, la, ia in zip(amplitudes, lines, images):
        model += a * la[:, None, None] * ia[None]
    return model.astype(np.float32)


def residual_search(cube: np.ndarray, psf: np.ndarray, sources: Sequence[tuple[Detection, Morphology]],
                    config: PipelineConfig = _DEFAULTS, *, line: np.ndarray | None = None
                    ) -> list[SearchPeak]:  # fmt: skip
    """:func:`line_search` on the cube (nz, ny, nx) with ``sources`` (refined detections and their
    shapes) subtracted (:func:`source_line_model`): candidates a brighter source's response hid.
    ``line``: the cube's :func:`line_cube`, when already made."""
    line = line_cube(cube) if line is None else line
    return search_peaks(line - source_line_model(line, psf, sources), config)


def peak_detections(cube: np.ndarray, peaks: Sequence[SearchPeak], config: PipelineConfig = _DEFAULTS, *,
                    flags: frozenset[str] = frozenset({SEARCHED})) -> tuple[list[Detection], list[Morphology]]:
    """Search peaks as detections flagged ``flags``, and their templates as first-guess shapes."""
    k = config.spectra.emission_half_width_fwhm
    detections, shapes = [], []
    for p in peaks:
        box = model_box(p.x, p.y, p.fwhm_px, p.fwhm_px, 0.0, level=config.characterise.box_level,
                        shape=cube.shape[1:])  # fmt: skip
        detections.append(focused_detection(cube, box, p.z - k * p.fwhm_chan, p.z + k * p.fwhm_chan, float(p.z),
                                            p.fwhm_chan, config, flags))  # fmt: skip
        shapes.append(Morphology(x=float(p.x), y=float(p.y), fwhm_x=p.fwhm_px, fwhm_y=p.fwhm_px, pa=0.0))
    return detections, shapes


def searched_detections(cube: np.ndarray, config: PipelineConfig = _DEFAULTS, *, line: np.ndarray | None = None
                        ) -> tuple[list[Detection], list[Morphology]]:  # fmt: skip
    """:func:`line_search`'s candidates as detections (flagged ``"searched"``) and first-guess shapes,
    ready for :func:`dfjax.pipeline.deblend.refine_detections`. ``line``: the cube's :func:`line_cube`,
    when already made."""
    return peak_detections(cube, line_search(cube, config, line=line), config)
