"""Losses of Sec. 4.1 and 4.5: l1 (eq. 6), SSIM / DSSIM (eqs. 7–11) and the
Blobs Finder l1 → DSSIM schedule (eq. 20).

Images are batched as (B, H, W) or (B, H, W, C) and normalised to [0, 1].
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def _check_same_shape(x: jax.Array, y: jax.Array, name: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{name}: shapes differ, {x.shape} vs {y.shape}")


def l1(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error over all elements (eq. 6): any shape, both equal → scalar."""
    _check_same_shape(pred, target, "l1")
    return jnp.mean(jnp.abs(pred - target))


def _gaussian_window(filter_size: int, filter_sigma: float) -> np.ndarray:
    """Normalised 1D Gaussian taps at offsets -r..r, r = filter_size // 2: (filter_size,)."""
    offsets = np.arange(filter_size) - filter_size // 2
    taps = np.exp(-0.5 * (offsets / filter_sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def _filter_valid(images: jax.Array, window: np.ndarray) -> jax.Array:
    """Separable 'valid' Gaussian filter: (N, H, W, 1) → (N, H-K+1, W-K+1, 1)."""
    k = len(window)
    dims = ("NHWC", "HWIO", "NHWC")
    hi = jax.lax.Precision.HIGHEST
    out = jax.lax.conv_general_dilated(
        images, jnp.asarray(window).reshape(k, 1, 1, 1), (1, 1), "VALID",
        dimension_numbers=dims, precision=hi)
    return jax.lax.conv_general_dilated(
        out, jnp.asarray(window).reshape(1, k, 1, 1), (1, 1), "VALID",
        dimension_numbers=dims, precision=hi)


def ssim(
    x: jax.Array,
    y: jax.Array,
    *,
    max_val: float = 1.0,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    """Mean structural similarity per image (eqs. 8–11): (B, H, W[, C]) → (B,).

    Local statistics use a ``filter_size``² Gaussian window of width
    ``filter_sigma`` over the positions where it fits entirely ('valid'),
    population (not sample) covariances, c1 = (k1·L)², c2 = (k2·L)² with
    L = ``max_val`` (eqs. 9–10), and the map is averaged over pixels and
    channels. This equals ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=filter_sigma, use_sample_covariance=False,
    data_range=max_val)`` for ``filter_size = 2·int(3.5·sigma + 0.5) + 1``
    (11 for sigma = 1.5).
    """
    _check_same_shape(x, y, "ssim")
    if x.ndim not in (3, 4):
        raise ValueError(f"ssim expects (B, H, W) or (B, H, W, C), got {x.shape}")
    if filter_size < 1 or filter_size % 2 == 0:
        raise ValueError(f"filter_size must be a positive odd integer, got {filter_size}")
    if min(x.shape[1], x.shape[2]) < filter_size:
        raise ValueError(f"ssim: images {x.shape[1:3]} are smaller than filter_size={filter_size}")
    if x.ndim == 3:
        x, y = x[..., None], y[..., None]
    batch, height, width, channels = x.shape
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    x, y = x.astype(dtype), y.astype(dtype)

    # (Co)variances are shift invariant: centring each image on its mean first
    # keeps E[x²] − μ² from cancelling catastrophically in float32.
    x_mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    y_mean = jnp.mean(y, axis=(1, 2), keepdims=True)
    xc, yc = x - x_mean, y - y_mean
    # Filter x, y, x², y², xy in one call: channels fold into the batch.
    stack = jnp.stack([xc, yc, xc * xc, yc * yc, xc * yc])  # (5, B, H, W, C)
    stack = jnp.moveaxis(stack, -1, 2).reshape(5 * batch * channels, height, width, 1)
    filtered = _filter_valid(stack, _gaussian_window(filter_size, filter_sigma))
    mu_xc, mu_yc, e_xx, e_yy, e_xy = filtered.reshape(5, batch, channels, *filtered.shape[1:3])
    var_x = e_xx - mu_xc**2
    var_y = e_yy - mu_yc**2
    cov_xy = e_xy - mu_xc * mu_yc
    mu_x = mu_xc + jnp.moveaxis(x_mean, -1, 1)  # (B, C, 1, 1) broadcast
    mu_y = mu_yc + jnp.moveaxis(y_mean, -1, 1)

    c1 = (k1 * max_val) ** 2  # eq. 9
    c2 = (k2 * max_val) ** 2  # eq. 10
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))  # eq. 8
    return jnp.mean(ssim_map, axis=(1, 2, 3))


def dssim(x: jax.Array, y: jax.Array, **ssim_kwargs) -> jax.Array:
    """Structural dissimilarity (1 − SSIM) / 2 (eq. 7): (B, H, W[, C]) → (B,)."""
    return (1.0 - ssim(x, y, **ssim_kwargs)) / 2.0


def blobs_finder_loss_weights(
    epoch: ArrayLike, num_epochs: int, *, transition_epochs: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Weights (a, b) of eq. 20 at 0-based ``epoch``: two float32 scalars.

    a falls from a(0) = 1 by δ = 1 / ``transition_epochs`` per epoch and b = 1 − a
    rises from 0; both are clipped to [0, 1]. ``transition_epochs`` defaults to
    ``num_epochs − 1``, so the last epoch has a = 0, b = 1 (pure DSSIM); a
    smaller value trains the last epochs on DSSIM alone.
    """
    if transition_epochs is None:
        if num_epochs < 2:
            raise ValueError(f"num_epochs must be at least 2, got {num_epochs}")
        transition_epochs = num_epochs - 1
    if transition_epochs < 1:
        raise ValueError(f"transition_epochs must be at least 1, got {transition_epochs}")
    a = jnp.clip(1.0 - jnp.asarray(epoch, jnp.float32) / transition_epochs, 0.0, 1.0)
    return a, 1.0 - a


def blobs_finder_loss(
    pred: jax.Array,
    target: jax.Array,
    *,
    epoch: ArrayLike,
    num_epochs: int,
    transition_epochs: int | None = None,
) -> jax.Array:
    """a(t)·l1 + b(t)·DSSIM (eq. 20), batch-mean: (B, H, W[, C]) twice → scalar."""
    a, b = blobs_finder_loss_weights(epoch, num_epochs, transition_epochs=transition_epochs)
    return a * l1(pred, target) + b * jnp.mean(dssim(pred, target))
