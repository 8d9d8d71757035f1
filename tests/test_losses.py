"""Losses: l1 (eq. 6), SSIM/DSSIM (eqs. 7–11) against scikit-image, eq. 20 schedule."""

from __future__ import annotations

import functools

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from skimage.metrics import structural_similarity

from dfjax import losses

RNG = np.random.default_rng(20221107)


def skimage_ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-image SSIM with the settings ``losses.ssim`` reproduces: (B, H, W[, C]) → (B,)."""
    channel_axis = -1 if x.ndim == 4 else None
    return np.array([
        structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                              data_range=1.0, channel_axis=channel_axis)
        for a, b in zip(x.astype(np.float64), y.astype(np.float64))])


def noisy_pair(shape):
    x = RNG.random(shape).astype(np.float32)
    y = np.clip(x + 0.3 * RNG.standard_normal(shape), 0, 1).astype(np.float32)
    return x, y


# ---------------------------------------------------------------- l1

def test_l1_matches_numpy_under_jit():
    x, y = noisy_pair((3, 8, 9))
    np.testing.assert_allclose(jax.jit(losses.l1)(x, y), np.mean(np.abs(x - y)), rtol=1e-6)
    assert float(losses.l1(x, x)) == 0.0


def test_l1_shape_mismatch_raises():
    with pytest.raises(ValueError):
        losses.l1(jnp.zeros((2, 4)), jnp.zeros((2, 5)))


# ---------------------------------------------------------------- SSIM / DSSIM

@pytest.mark.parametrize("shape", [(3, 32, 40), (2, 24, 24, 3)])
def test_ssim_matches_skimage_under_jit(shape):
    x, y = noisy_pair(shape)
    expected = skimage_ssim(x, y)
    assert np.all(expected < 0.9)  # the pair is far from identical
    np.testing.assert_allclose(jax.jit(losses.ssim)(x, y), expected, atol=1e-4)
    np.testing.assert_allclose(losses.ssim(jnp.asarray(x), jnp.asarray(y)), expected, atol=1e-4)


def test_ssim_other_window_matches_skimage():
    x, y = noisy_pair((2, 20, 20))
    # skimage's window for sigma = 1.0: 2·int(3.5·1.0 + 0.5) + 1 = 9 taps.
    expected = [structural_similarity(a, b, gaussian_weights=True, sigma=1.0, use_sample_covariance=False,
                                      data_range=1.0) for a, b in zip(x.astype(float), y.astype(float))]
    ours = jax.jit(functools.partial(losses.ssim, filter_size=9, filter_sigma=1.0))(x, y)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_ssim_of_identical_images_is_one():
    x = RNG.random((2, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(jax.jit(losses.ssim)(x, x), 1.0, atol=1e-6)
    np.testing.assert_allclose(losses.dssim(x, x), 0.0, atol=1e-6)


def test_ssim_of_constant_images_is_the_luminance_term():
    # Flat images: variances and covariance vanish, so eq. 8 reduces to
    # (2·μx·μy + c1) / (μx² + μy² + c1) with c1 = (0.01·1)² (eq. 9, L = 1).
    x = np.full((1, 12, 12), 0.2, np.float32)
    y = np.full((1, 12, 12), 0.6, np.float32)
    c1 = 1e-4
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    np.testing.assert_allclose(losses.ssim(x, y), [expected], rtol=1e-5)
    np.testing.assert_allclose(losses.dssim(x, y), [(1 - expected) / 2], rtol=1e-5)  # eq. 7


def test_dssim_is_half_one_minus_ssim():
    x, y = noisy_pair((2, 16, 16))
    np.testing.assert_allclose(jax.jit(losses.dssim)(x, y), (1 - skimage_ssim(x, y)) / 2, atol=1e-4)


@pytest.mark.parametrize("x_shape, y_shape", [
    ((2, 16, 16), (2, 16, 17)),   # mismatch
    ((16, 16), (16, 16)),         # no batch axis
    ((2, 8, 8), (2, 8, 8)),       # smaller than the 11-tap window
])
def test_ssim_rejects_bad_shapes(x_shape, y_shape):
    with pytest.raises(ValueError):
        losses.ssim(jnp.zeros(x_shape), jnp.zeros(y_shape))


def test_ssim_gradient_is_finite():
    x, y = noisy_pair((2, 16, 16))
    grad = jax.jit(jax.grad(lambda p: jnp.mean(losses.dssim(p, y))))(x)
    assert grad.shape == x.shape and bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.max(jnp.abs(grad))) > 0


# ---------------------------------------------------------------- eq. 20 schedule

def test_schedule_endpoints_and_linear_steps():
    num_epochs = 11
    weights = jax.jit(losses.blobs_finder_loss_weights, static_argnums=1)
    a0, b0 = weights(0, num_epochs)
    a_end, b_end = weights(num_epochs - 1, num_epochs)
    assert (float(a0), float(b0)) == (1.0, 0.0)
    assert (float(a_end), float(b_end)) == (0.0, 1.0)
    a = np.array([float(weights(t, num_epochs)[0]) for t in range(num_epochs)])
    np.testing.assert_allclose(a, np.linspace(1.0, 0.0, num_epochs), atol=1e-6)  # a falls by δ = 0.1
    b = np.array([float(weights(t, num_epochs)[1]) for t in range(num_epochs)])
    np.testing.assert_allclose(a + b, 1.0)


def test_schedule_with_short_transition_ends_on_dssim():
    a, b = losses.blobs_finder_loss_weights(jnp.arange(8), 8, transition_epochs=4)
    np.testing.assert_allclose(a, [1, 0.75, 0.5, 0.25, 0, 0, 0, 0])
    np.testing.assert_allclose(b, [0, 0.25, 0.5, 0.75, 1, 1, 1, 1])
    with pytest.raises(ValueError):
        losses.blobs_finder_loss_weights(0, 1)


def test_blobs_finder_loss_blends_l1_and_dssim():
    x, y = noisy_pair((2, 16, 16))
    l1 = np.mean(np.abs(x - y))
    dssim = np.mean((1 - skimage_ssim(x, y)) / 2)
    loss = jax.jit(losses.blobs_finder_loss, static_argnames="num_epochs")
    np.testing.assert_allclose(loss(x, y, epoch=0, num_epochs=5), l1, rtol=1e-5)
    np.testing.assert_allclose(loss(x, y, epoch=4, num_epochs=5), dssim, atol=1e-4)
    np.testing.assert_allclose(loss(x, y, epoch=1, num_epochs=5), 0.75 * l1 + 0.25 * dssim, atol=1e-4)
    with pytest.raises(ValueError):
        losses.blobs_finder_loss(jnp.zeros((2, 16, 16)), jnp.zeros((2, 16, 15)), epoch=0, num_epochs=5)
