"""Per-example transforms of Sec. 4.1–4.5: pure numpy functions, no training state.

The detection pipeline reuses :func:`box_spectra`, :func:`spectral_focus`,
:func:`line_emission_image` and :func:`global_snr` at inference time, so nothing
here knows about epochs, seeds or batches: randomness comes in as arguments.

Conventions (as in ``sim`` and ``dfjax.datasets.almasim.records``): arrays are
indexed ``[z, y, x]``; x is the column along NAXIS1, y the row, z the channel,
all 0-based. A 2-D box is ``(x0, y0, x1, y1)``, half-open; a channel range
``(z0, z1)`` is inclusive after rounding to the nearest channel. Cubes may
come as float16 (the dataset's storage type) and are cast to float32 here;
their unit only needs to be proportional to Jy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from dfjax.datasets.almasim.records import COLUMN
from dfjax.maths import FWHM_PER_SIGMA, continuum_trend, gaussian

__all__ = [
    "FWHM_PER_SIGMA", "box_spectra", "centre_crop", "channel_range", "focus_offset", "global_snr",
    "integrated_image_pair", "line_emission_image", "match_predictions", "minmax_normalise", "pairwise_iou_2d",
    "rotate_flip_crop", "spectral_focus", "spectrum_pair", "standardise", "truth_boxes",
]  # fmt: skip



def minmax_normalise(x: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] by the array's own min and max: any shape → same shape, float32.

    NaNs (blanked pixels outside the primary beam) become 0 first; a constant
    array maps to all zeros.
    """
    x = np.asarray(x, np.float32)
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = x.min(), x.max()
    if not hi > lo:
        return np.zeros_like(x)
    return (x - lo) * np.float32(1.0 / (float(hi) - float(lo)))


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation along the last axis: (..., L) → (..., L) float32."""
    xc = np.asarray(x, np.float64)
    xc = xc - xc.mean(axis=-1, keepdims=True)
    std = np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True))
    return (xc / np.where(std > 0, std, np.inf)).astype(np.float32)  # constant → zeros


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` × ``size`` window, top-left at ((n - size) // 2): (..., n, m) → (..., size, size)."""
    ny, nx = image.shape[-2:]
    if size > min(ny, nx) or size < 1:
        raise ValueError(f"crop size {size} does not fit in a {ny}x{nx} image")
    y, x = (ny - size) // 2, (nx - size) // 2
    return image[..., y : y + size, x : x + size]


def rotate_flip_crop(
    images: Sequence[np.ndarray], *, angle_deg: float, flip_x: bool, flip_y: bool, size: int
) -> list[np.ndarray]:
    """Flip, rotate about the crop centre and centre-crop each (n, m) image identically → (size, size) f32.

    One bilinear resampling per image (``scipy.ndimage.affine_transform``,
    order 1, zeros outside the field), so every image of the list sees exactly
    the same geometric map. With angle 0 and no flips this equals
    :func:`centre_crop`. Paper Sec. 4.5: θ ∈ [0°, 360°), flips along x and y.
    """
    ny, nx = images[0].shape[-2:]
    if size > min(ny, nx) or size < 1:
        raise ValueError(f"crop size {size} does not fit in a {ny}x{nx} image")
    theta = np.deg2rad(angle_deg)
    # (row, col) coordinates: output offset u from the crop centre → input offset R · F · u.
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    flip = np.diag([-1.0 if flip_y else 1.0, -1.0 if flip_x else 1.0])
    matrix = rot @ flip
    centre_out = np.full(2, (size - 1) / 2)
    centre_in = np.array([(ny - size) // 2, (nx - size) // 2]) + centre_out
    offset = centre_in - matrix @ centre_out
    out = []
    for image in images:
        if image.shape[-2:] != (ny, nx):
            raise ValueError(f"images differ in shape: {image.shape} vs {(ny, nx)}")
        image = np.nan_to_num(np.asarray(image, np.float32), nan=0.0)
        out.append(ndimage.affine_transform(image, matrix, offset, output_shape=(size, size), order=1,
                                            mode="constant", cval=0.0))  # fmt: skip
    return out


def integrated_image_pair(
    integrated_dirty: np.ndarray,
    integrated_sky: np.ndarray,
    *,
    size: int,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blobs Finder (input, target): (n, n) twice → (size, size) twice, each min-max normalised to [0, 1].

    Without ``rng``: centre crop (as at inference). With ``rng``: the training
    augmentation of Sec. 4.5 — a uniform rotation in [0°, 360°), a flip along
    x and one along y each with probability ½, then the centre crop — applied
    identically to both images, normalised after cropping.
    """
    if integrated_dirty.shape != integrated_sky.shape:
        raise ValueError(f"dirty {integrated_dirty.shape} and sky {integrated_sky.shape} images differ")
    if rng is None:
        pair = [centre_crop(np.asarray(a, np.float32), size) for a in (integrated_dirty, integrated_sky)]
    else:
        angle, flips = rng.uniform(0.0, 360.0), rng.random(2) < 0.5
        pair = rotate_flip_crop([integrated_dirty, integrated_sky], angle_deg=angle,
                                flip_x=bool(flips[0]), flip_y=bool(flips[1]), size=size)  # fmt: skip
    return minmax_normalise(pair[0]), minmax_normalise(pair[1])


def _as_boxes(boxes: np.ndarray, columns: int = 4) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] < columns:
        raise ValueError(f"expected boxes of shape (K, {columns}) or ({columns},), got {boxes.shape}")
    return boxes


def box_spectra(cube: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Spectra summed over each box (Sec. 4.4 ii): cube (nz, ny, nx), boxes (K, 4) → (K, nz) float32.

    Box corners are rounded to whole pixels and clipped to the field; a box
    left empty gives a zero spectrum. Extra columns (e.g. z0, z1) are ignored.
    """
    boxes = _as_boxes(boxes)
    nz, ny, nx = cube.shape
    out = np.zeros((len(boxes), nz), np.float32)
    for k, (x0, y0, x1, y1) in enumerate(np.rint(boxes[:, :4]).astype(np.int64)):
        x0, x1, y0, y1 = max(x0, 0), min(x1, nx), max(y0, 0), min(y1, ny)
        if x1 > x0 and y1 > y0:
            out[k] = cube[:, y0:y1, x0:x1].sum(axis=(1, 2), dtype=np.float64)
    return out


def spectrum_pair(dirty_cube: np.ndarray, sky_cube: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deep GRU (input, target) for one box: (L,) standardised dirty spectrum, (L,) sky spectrum in [0, 1]."""
    dirty = box_spectra(dirty_cube, box)[0]
    sky = box_spectra(sky_cube, box)[0]
    return standardise(dirty), minmax_normalise(sky)


def channel_range(z_range: Sequence[float], nz: int) -> tuple[int, int]:
    """(z0, z1) → inclusive channels (lo, hi): rounded, clipped to [0, nz - 1], at least one channel."""
    lo = int(np.clip(np.rint(z_range[0]), 0, nz - 1))
    hi = int(np.clip(np.rint(z_range[1]), lo, nz - 1))
    return lo, hi


def focus_offset(box: Sequence[float], size: int) -> np.ndarray:
    """Field pixel (x, y) of a focus window's pixel (0, 0): window centred on the box centre → (2,) int64."""
    cx = int(np.floor((box[0] + box[2]) / 2))
    cy = int(np.floor((box[1] + box[3]) / 2))
    return np.array([cx - size // 2, cy - size // 2], np.int64)


def _window(cube: np.ndarray, offset: np.ndarray, size: int) -> np.ndarray:
    """(nz, ny, nx) → (nz, size, size) float32 starting at field pixel ``offset`` (x, y), zeros off the field."""
    nz, ny, nx = cube.shape
    x_off, y_off = int(offset[0]), int(offset[1])
    out = np.zeros((nz, size, size), np.float32)
    ys = max(y_off, 0), min(y_off + size, ny)
    xs = max(x_off, 0), min(x_off + size, nx)
    if ys[1] > ys[0] and xs[1] > xs[0]:
        out[:, ys[0] - y_off : ys[1] - y_off, xs[0] - x_off : xs[1] - x_off] = cube[:, ys[0] : ys[1], xs[0] : xs[1]]
    return out


def spectral_focus(
    cube: np.ndarray, box: Sequence[float], z_range: Sequence[float], *, size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Spectrally focused image (Sec. 4.4 iii): cube (nz, ny, nx) → ((size, size) float32, offset (2,) int64).

    Sums channels ``channel_range(z_range)`` of a ``size`` × ``size`` window
    centred on the box centre (zero padded at the field edges). Field pixel
    (x, y) = window pixel (x, y) + ``offset``. Not normalised.
    """
    lo, hi = channel_range(z_range, cube.shape[0])
    offset = focus_offset(box, size)
    return _window(cube[lo : hi + 1], offset, size).sum(axis=0), offset


def line_emission_image(
    cube: np.ndarray, box: Sequence[float], z_range: Sequence[float], *, size: int = 64,
    profile: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Continuum-subtracted focused image (eq. 19, integrated over the line): → ((size, size) f32, offset).

    L = Σ_{z∈Δz} M_z − C · Σ_{z∈Δz} f(z), where M_z are the window's channels
    in the line range Δz = ``channel_range(z_range)``, C the per-pixel mean over
    the channels outside Δz (the continuum image) and f(z) the continuum
    model: a straight line fitted to the box's dirty spectrum outside Δz,
    scaled to mean 1 over those channels, so C·f(z) is the continuum expected
    at channel z. When that continuum is not detected (fitted level under 5
    standard errors) f ≡ 1. With no channel outside Δz, C = 0 and L = M.
    Deviation from the paper: Δz and the window stand in for the dilated 3-D
    segmentation mask of Sec. 4.4 (v–vi).

    ``profile`` (z, fwhm_z): each channel of Δz is weighted by that Gaussian line (unit peak),
    L = Σ_{z∈Δz} w_z (M_z − C·f(z)): the matched filter along frequency, whose image has a
    higher SNR than the plain sum (by about a fifth for Δz = z ∓ FWHM) for the shape fit.
    """
    nz = cube.shape[0]
    lo, hi = channel_range(z_range, nz)
    offset = focus_offset(box, size)
    window = _window(cube, offset, size)  # (nz, size, size)
    in_line = np.zeros(nz, bool)
    in_line[lo : hi + 1] = True
    z = np.arange(nz, dtype=np.float64)
    if profile is None:
        weights = None
        line = window[in_line].sum(axis=0, dtype=np.float64)
    else:
        centre, fwhm = profile
        if not fwhm > 0:
            raise ValueError(f"profile: the line FWHM must be positive, got {fwhm}")
        weights = gaussian(z[in_line], centre, fwhm)
        line = np.tensordot(weights, window[in_line].astype(np.float64), axes=(0, 0))
    if in_line.all():
        return line.astype(np.float32), offset
    continuum = window[~in_line].mean(axis=0, dtype=np.float64)  # C[x, y]
    spectrum = box_spectra(cube, np.asarray(box[:4], np.float64))[0].astype(np.float64)
    f = continuum_trend(z[~in_line], spectrum[~in_line], nz)
    expected = f[in_line].sum() if weights is None else (weights * f[in_line]).sum()  # Σ w·f over Δz
    return (line - continuum * expected).astype(np.float32), offset


def global_snr(image: np.ndarray, box: Sequence[float], *, spread: str = "std") -> float:
    """Global SNR (eq. 17) of the source in ``box`` (x0, y0, x1, y1) on ``image`` (ny, nx) → float.

    Source pixels x_s: within radius r of the box centre, r the radius of the
    circle the box is inscribed in (half its diagonal). Noise pixels x_n: the
    annulus r < d ≤ R = √2·r, which has the circle's area. Returns
    median(x_s) / spread(x_n) over the pixels that lie on the image.
    ``spread="std"`` (default) makes the ratio dimensionless and independent of
    the image's scale; ``spread="var"`` is eq. 17 as printed (its value then
    depends on the image units). Returns 0 when no noise pixel lies on the image
    or their spread is 0.
    """
    if spread not in ("std", "var"):
        raise ValueError(f"spread must be 'std' or 'var', got {spread!r}")
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    cx, cy = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2  # centre of the box's pixels
    r = 0.5 * np.hypot(max(x1 - x0, 1.0), max(y1 - y0, 1.0))
    ny, nx = image.shape
    pad = int(np.ceil(np.sqrt(2) * r)) + 1
    ys = slice(max(int(cy) - pad, 0), min(int(cy) + pad + 2, ny))
    xs = slice(max(int(cx) - pad, 0), min(int(cx) + pad + 2, nx))
    yy, xx = np.mgrid[ys, xs]
    d = np.hypot(xx - cx, yy - cy)
    values = np.asarray(image[ys, xs], np.float64)
    source = values[d <= r]
    noise = values[(d > r) & (d <= np.sqrt(2) * r)]
    if source.size == 0 or noise.size < 2:
        return 0.0
    s = noise.std() if spread == "std" else noise.var()
    return float(np.median(source) / s) if s > 0 else 0.0


def truth_boxes(catalogue: np.ndarray) -> np.ndarray:
    """3-D truth boxes of a record's catalogue: (S, 20) → (S, 6) float64 (x0, y0, x1, y1, z0, z1)."""
    cols = [COLUMN[c] for c in ("x0", "y0", "x1", "y1", "z0", "z1")]
    return np.asarray(catalogue, np.float64).reshape(-1, len(COLUMN))[:, cols]


def _iou_1d(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)
    union = (a1 - a0) + (b1 - b0) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def pairwise_iou_2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU (eq. 22) of half-open boxes: rows (x0, y0, x1, y1, ...) of ``a`` against ``b``."""
    a, b = np.asarray(a, np.float64)[:, None, :], np.asarray(b, np.float64)[None, :, :]
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
             - inter)  # fmt: skip
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_predictions(predicted: np.ndarray, catalogue: np.ndarray, *, min_iou: float = 0.1) -> np.ndarray:
    """Truth row for each predicted box: (K, 4) or (K, 6) and catalogue (S, 20) → (K,) int64, −1 if none.

    Score = 2-D IoU (eq. 22), times (1 + IoU of the channel ranges) / 2 when
    the prediction has z0, z1 (which separates spatially blended sources);
    the best-scoring truth with 2-D IoU ≥ ``min_iou`` wins.
    """
    pred = _as_boxes(predicted)
    truth = truth_boxes(catalogue)
    if len(pred) == 0 or len(truth) == 0:
        return np.full(len(pred), -1, np.int64)
    p, t = pred[:, None, :], truth[None, :, :]
    iou = pairwise_iou_2d(pred, truth)
    score = iou.copy()
    if pred.shape[1] >= 6:
        score *= 0.5 * (1.0 + _iou_1d(p[..., 4], p[..., 5], t[..., 4], t[..., 5]))
    best = np.argmax(score, axis=1)
    ok = iou[np.arange(len(pred)), best] >= min_iou
    return np.where(ok, best, -1).astype(np.int64)
