"""The field's response, and a PB-corrected cube seen with the flat noise the models were trained on.

A dirty or cleaned image as tclean writes it (``.image``) is the sky times the primary beam, with
one noise level over the field. The archive's products are divided by the primary beam
(``.image.pbcor``): the sky itself, with noise rising as 1/PB towards the edge (3–5× at PB 0.2),
where a pipeline that assumes one noise level per cube finds false sources. So the pipeline
always runs on the flat-noise image and the measured fluxes are divided by the response ``w``
at each source (:func:`dfjax.catalogue_io.pb_corrected`):

* a PB given (``--pb``, or ``<cube stem>.pb.fits``), cube not PB-corrected: the image is run as
  it is, ``w`` = PB (the fluxes become the sky's);
* a PB given, cube PB-corrected (header ``PBCOR = T``, or its noise rises as 1/PB:
  :func:`noise_follows_pb`): the image times the PB is run, ``w`` = PB;
* no PB, the noise varies over the field by more than :data:`NOISE_VARIES` (a PB-corrected
  cube without its ``.pb``, a mosaic): the image times ``w`` = σ_min / σ(x, y) is run, σ the
  local noise (:func:`local_noise`), so ``w`` is the PB the noise implies (1 where quietest).

Either way the catalogue's fluxes are on the scale of the file given (the sky's when it was
PB-corrected), and its ``pb`` column holds ``w``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dfjax.maths import MAD_TO_STD

__all__ = ["BLOCK_PX", "NOISE_VARIES", "Response", "field_response", "local_noise", "noise_follows_pb"]

BLOCK_PX = 16  # the local noise is measured in blocks of this side (about two C-3 beams)
NOISE_VARIES = 1.5  # the noise varies when its 99th percentile over the field exceeds its 1st by this
FOLLOWS_PB = -0.5  # d log σ / d log PB below this: the noise rises as 1/PB (a PB-corrected cube)
MIN_SAMPLES = 200  # a block with fewer finite channel differences has no noise of its own
SMOOTH_BLOCKS = 0.5  # the block grid is smoothed by a Gaussian of this σ in blocks (a PB varies slower)


@dataclass(frozen=True)
class Response:
    """What the pipeline runs on and what the measured fluxes are divided by."""

    data: np.ndarray  # (nz, ny, nx) the flat-noise image the pipeline sees
    weight: np.ndarray  # (ny, nx) or (nz, ny, nx): the response w at each pixel (NaN where blank)
    kind: str  # "pb" (the file's primary beam) or "noise" (σ_min / σ of the local noise)
    pb_corrected: bool  # the file was divided by the response; the pipeline sees it multiplied back


def local_noise(data: np.ndarray, *, block: int = BLOCK_PX) -> np.ndarray:
    """The noise σ(x, y) of a cube (nz, ny, nx), (ny, nx), smooth over the field.

    In each ``block`` × ``block`` block, the robust spread (MAD) of adjacent-channel differences
    over every second pixel (neighbours correlate) and every channel pair: the continuum cancels
    and a line touches few of the samples. Blocks with fewer than :data:`MIN_SAMPLES` finite
    samples (blanked past pblimit) take their nearest block's value; the block grid is smoothed
    (:data:`SMOOTH_BLOCKS`, in log σ, measured blocks only) and interpolated linearly to every
    pixel. NaN where a pixel is blank in every channel.
    """
    data = np.asarray(data, np.float32)
    if data.ndim != 3 or data.shape[0] < 2:
        raise ValueError(f"expected a cube (nz ≥ 2, ny, nx), got shape {data.shape}")
    _, ny, nx = data.shape
    diff = np.abs(np.diff(data[:, ::2, ::2], axis=0)) / np.sqrt(2.0)
    half = max(1, block // 2)
    by, bx = -(-diff.shape[1] // half), -(-diff.shape[2] // half)
    padded = np.full((diff.shape[0], by * half, bx * half), np.nan, np.float32)
    padded[:, : diff.shape[1], : diff.shape[2]] = diff
    samples = padded.reshape(diff.shape[0], by, half, bx, half).transpose(1, 3, 0, 2, 4).reshape(by, bx, -1)
    count = np.isfinite(samples).sum(axis=-1)
    sigma = np.full((by, bx), np.nan)
    enough = count >= MIN_SAMPLES
    if not enough.any():
        raise ValueError("no block of the cube has enough finite channels to measure its noise")
    sigma[enough] = MAD_TO_STD * np.nanmedian(samples[enough], axis=-1)
    # smoothed in log σ (a Gaussian PB is a parabola there) over the measured blocks only
    log = np.where(enough, np.log(np.maximum(sigma, np.finfo(np.float32).tiny)), 0.0)
    weight = ndimage.gaussian_filter(enough.astype(float), SMOOTH_BLOCKS, mode="constant")
    log = ndimage.gaussian_filter(log, SMOOTH_BLOCKS, mode="constant") / np.maximum(weight, 1e-12)
    nearest = ndimage.distance_transform_edt(~enough, return_distances=False, return_indices=True)
    log = log[tuple(nearest)]
    # block centres sit at pixel (i + 0.5) · block − 0.5; interpolate to every pixel
    yy = (np.arange(ny) + 0.5) / (2 * half) - 0.5
    xx = (np.arange(nx) + 0.5) / (2 * half) - 0.5
    grid = np.meshgrid(np.clip(yy, 0, by - 1), np.clip(xx, 0, bx - 1), indexing="ij")
    noise = np.exp(ndimage.map_coordinates(log, grid, order=1, mode="nearest"))
    return np.where(np.isfinite(data).any(axis=0), noise, np.nan).astype(np.float32)


def noise_follows_pb(noise: np.ndarray, pb: np.ndarray) -> bool:
    """Whether the noise map (ny, nx) rises as 1/PB (``pb``: (ny, nx) or its cube): the slope of
    log σ against log PB over the unblanked pixels is below :data:`FOLLOWS_PB` (flat noise: 0,
    PB-corrected: −1). False when the PB spans too little of the field to tell (under 20%)."""
    plane = np.asarray(pb, np.float64)
    plane = plane[len(plane) // 2] if plane.ndim == 3 else plane
    good = np.isfinite(noise) & np.isfinite(plane) & (plane > 0) & (noise > 0)
    if good.sum() < 16 or np.nanmax(plane[good]) < 1.2 * np.nanmin(plane[good]):
        return False
    slope = np.polyfit(np.log(plane[good]), np.log(noise[good]), 1)[0]
    return bool(slope < FOLLOWS_PB)


def field_response(data: np.ndarray, pb: np.ndarray | None = None, *,
                   pb_corrected: bool | None = None) -> Response | None:  # fmt: skip
    """The flat-noise view of a cube (nz, ny, nx) and its response, or None when the noise is flat
    and no PB is given (nothing to do). ``pb``: the primary beam on the cube's grid (peak 1).
    ``pb_corrected``: what the header says (``PBCOR``), None when it says nothing: then measured."""
    data = np.asarray(data, np.float32)
    if pb is not None:
        pb = np.asarray(pb, np.float32)
        if pb_corrected is None:
            pb_corrected = noise_follows_pb(local_noise(data), pb)
        if not pb_corrected:
            return Response(data=data, weight=pb, kind="pb", pb_corrected=False)
        blank = ~(np.isfinite(pb) & (pb > 0))
        return Response(data=np.where(blank, np.nan, data * pb), weight=np.where(blank, np.nan, pb), kind="pb",
                        pb_corrected=True)  # fmt: skip
    noise = local_noise(data)
    quiet, loud = np.nanpercentile(noise, [1, 99])
    if not loud > NOISE_VARIES * quiet:
        return None
    weight = np.minimum(quiet / noise, 1.0).astype(np.float32)
    return Response(data=data * weight, weight=weight, kind="noise", pb_corrected=True)
